"""RPO learns: it solves DiffPendulum-v0 (Pendulum-v1's dynamics and reward) within a small budget."""

from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold

from sb3_rpo import RPO, make_diff_vec_env

BUDGET = 30_000  # env steps; rl-zoo3's tuned PPO needs 22.5k-25k on Pendulum-v1 (docs/benchmarks.md)


def test_rpo_solves_pendulum_within_budget():
    eval_env = make_diff_vec_env("DiffPendulum-v0", n_envs=10, seed=1000)
    stop = StopTrainingOnRewardThreshold(reward_threshold=-200, verbose=0)
    # Evaluate every 5 iterations (2560 env steps) on 10 deterministic episodes, stop at the threshold.
    eval_callback = EvalCallback(eval_env, callback_on_new_best=stop, eval_freq=5 * 32, n_eval_episodes=10, verbose=0)
    model = RPO(
        "MlpPolicy",
        "DiffPendulum-v0",
        n_envs=16,
        n_epochs=10,
        learning_rate=3e-3,
        policy_kwargs=dict(log_std_init=-0.5),
        seed=0,
        device="cpu",
    )
    model.learn(BUDGET, callback=eval_callback)
    assert eval_callback.best_mean_reward >= -200, f"best mean return {eval_callback.best_mean_reward:.1f}"
    assert model.num_timesteps < BUDGET, "the threshold must be reached before the budget runs out"
