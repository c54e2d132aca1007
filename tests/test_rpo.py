"""RPO and SHAC with Stable-Baselines3's API: learn, callbacks, logging, predict, save/load, seeds, bad input."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecNormalize

from sb3_rpo import RPO, SHAC, make_diff_vec_env, register_diff_env
from sb3_rpo.envs.pendulum import DiffPendulum

SMALL = dict(n_envs=4, n_steps=8, policy_kwargs=dict(net_arch=[16]), n_critic_iterations=2, device="cpu")


def params_equal(a: th.nn.Module, b: th.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(th.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("algo", [RPO, SHAC])
def test_learn_with_callbacks_logger_and_progress_bar(tmp_path, algo):
    seen = {}

    class Spy(BaseCallback):
        def _on_step(self) -> bool:
            for key in ("infos", "dones", "new_obs", "rewards"):
                seen.setdefault(key, self.locals[key])
            if self.locals["dones"].any():
                seen["episode"] = next(info["episode"] for info in self.locals["infos"] if "episode" in info)
            return True

    eval_env = make_diff_vec_env("DiffPendulum-v0", n_envs=2, seed=5)
    callbacks = [
        Spy(),
        EvalCallback(eval_env, eval_freq=40, n_eval_episodes=2, best_model_save_path=str(tmp_path / "best")),
        CheckpointCallback(save_freq=40, save_path=str(tmp_path / "ckpt")),
    ]
    model = algo("MlpPolicy", "DiffPendulum-v0", seed=0, tensorboard_log=str(tmp_path / "tb"), **SMALL)
    model.learn(4 * 8 * 30, callback=callbacks, progress_bar=True)
    assert model.num_timesteps == 4 * 8 * 30
    assert len(seen["infos"]) == 4 and seen["new_obs"].shape == (4, 3) and seen["dones"].shape == (4,)
    assert seen["episode"]["l"] == 200
    assert len(model.ep_info_buffer) >= 4
    assert (tmp_path / "best" / "best_model.zip").exists()
    assert any((tmp_path / "ckpt").iterdir())
    assert any((tmp_path / "tb").rglob("events.out.tfevents*"))


def test_diagnostics_are_logged(tmp_path):
    model = RPO("MlpPolicy", "DiffPendulum-v0", seed=0, **SMALL)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(4 * 8 * 30)
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    for key in ("rollout/ep_rew_mean", "rollout/ep_len_mean", "train/effective_sample_ratio", "train/kl", "train/max_ratio",
                "train/entropy", "train/actor_loss", "train/critic_loss", "train/action_grad_norm", "train/actor_grad_norm",
                "train/skipped_updates", "train/learning_rate", "train/critic_learning_rate", "train/ent_coef",
                "time/forward_s", "time/backward_s", "time/policy_epochs_s", "time/critic_s"):  # fmt: skip
        assert key in header, key


def test_ep_rew_mean_matches_episodes():
    """rollout/ep_rew_mean is the mean of finished episodes' undiscounted returns, as VecMonitor reports it."""
    env = make_diff_vec_env("DiffPendulum-v0", n_envs=2, seed=0, max_episode_steps=20)
    model = RPO("MlpPolicy", env, seed=0, **{**SMALL, "n_envs": 2})
    returns = []

    class Collect(BaseCallback):
        def _on_step(self) -> bool:
            returns.extend(float(r) for r, d in zip(self.locals["rewards"], self.locals["dones"], strict=True) for _ in [0])
            return True

    model.learn(2 * 8 * 5, callback=Collect())
    per_env = np.array(returns).reshape(-1, 2)
    expected = [per_env[20 * i : 20 * (i + 1), e].sum() for i in range(2) for e in range(2)]
    got = [info["r"] for info in model.ep_info_buffer]
    np.testing.assert_allclose(sorted(got), sorted(expected), rtol=1e-5)
    assert all(info["l"] == 20 for info in model.ep_info_buffer)


def test_predict_and_evaluate_policy():
    model = RPO("MlpPolicy", "DiffPendulum-v0", seed=0, **SMALL)
    single = model.predict(np.array([1.0, 0.0, 0.0], dtype=np.float32), deterministic=True)[0]
    assert single.shape == (1,) and -2.0 <= single[0] <= 2.0
    batch, _ = model.predict(np.zeros((5, 3), dtype=np.float32))
    assert batch.shape == (5, 1) and np.all(np.abs(batch) <= 2.0)
    mean, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=4)
    assert np.isfinite(mean) and -16.3 * 200 <= mean <= 0
    # The single gymnasium env works too.
    mean_gym, _ = evaluate_policy(model, Monitor(gym.make("DiffPendulum-v0")), n_eval_episodes=1)
    assert np.isfinite(mean_gym)


@pytest.mark.parametrize("ent_coef", [0.01, "auto_0.2"])
def test_save_load_round_trip(tmp_path, ent_coef):
    model = RPO("MlpPolicy", "DiffPendulum-v0", seed=0, ent_coef=ent_coef, **SMALL).learn(4 * 8 * 4)
    model.save(tmp_path / "model")
    loaded = RPO.load(tmp_path / "model", env=make_diff_vec_env("DiffPendulum-v0", n_envs=4, seed=1), device="cpu")
    assert params_equal(model.policy, loaded.policy)  # actor, critics, target critics, observation statistics
    assert model.policy.obs_normalizer.count.item() > 1
    for name in ("actor", "critic"):
        a, b = getattr(model.policy, name).optimizer.state_dict(), getattr(loaded.policy, name).optimizer.state_dict()
        assert all(th.equal(a["state"][k]["exp_avg"], b["state"][k]["exp_avg"]) for k in a["state"])
    if ent_coef == "auto_0.2":
        assert th.equal(model.log_ent_coef, loaded.log_ent_coef)
        assert model.log_ent_coef.item() != pytest.approx(np.log(0.2))  # it was learned
    obs = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    loaded.learn(4 * 8 * 2, reset_num_timesteps=False)
    assert loaded.num_timesteps == model.num_timesteps + 4 * 8 * 2
    assert not params_equal(model.policy, loaded.policy)


def test_set_env_and_load_without_env(tmp_path):
    model = RPO("MlpPolicy", "DiffPendulum-v0", seed=0, **SMALL).learn(64)
    model.save(tmp_path / "m")
    loaded = RPO.load(tmp_path / "m", device="cpu")
    assert loaded.get_env() is None
    loaded.set_env(make_diff_vec_env("DiffPendulum-v0", n_envs=4))
    loaded.learn(64)
    with pytest.raises(TypeError, match="differentiable environment"):
        loaded.set_env(make_vec_env("Pendulum-v1", n_envs=1))


def test_seed_reproducibility():
    def run(seed):
        model = RPO("MlpPolicy", "DiffPendulum-v0", seed=seed, **SMALL).learn(4 * 8 * 6)
        return model, [info["r"] for info in model.ep_info_buffer]

    (m1, r1), (m2, r2), (m3, _) = run(3), run(3), run(4)
    assert params_equal(m1.policy, m2.policy) and r1 == r2
    assert not params_equal(m1.policy, m3.policy)


def test_minibatches_and_state_dependent_std():
    model = RPO(
        "MlpPolicy",
        "DiffPendulum-v0",
        seed=0,
        batch_size=8,
        **{**SMALL, "policy_kwargs": dict(net_arch=dict(pi=[16], vf=[32]), state_dependent_std=True, layer_norm=False)},
    )
    model.learn(4 * 8 * 3)
    assert model.policy.actor.state_dependent_std and model._n_updates == 3


def test_single_critic():
    model = RPO("MlpPolicy", "DiffPendulum-v0", seed=0, **{**SMALL, "policy_kwargs": dict(net_arch=[16], n_critics=1)})
    model.learn(4 * 8 * 2)
    assert model.policy.critic.n_critics == model.policy.critic_target.n_critics == 1
    assert model.policy.values(th.zeros(3, 3)).shape == (1, 3)


def test_auto_entropy_moves_temperature_towards_target():
    model = RPO("MlpPolicy", "DiffPendulum-v0", seed=0, ent_coef="auto_0.5", target_entropy=-5.0, **SMALL)
    rewards = []

    class Collect(BaseCallback):
        def _on_step(self) -> bool:
            rewards.append(self.locals["rewards"].copy())
            return True

    model.learn(4 * 8 * 5, callback=Collect())
    assert np.max(rewards) <= 0.0  # callbacks see Pendulum's own rewards, not the entropy-augmented ones
    # The squashed actions' entropy (about 1.36 at mu 0, log_std 0 on [-2, 2]) is far above the target: alpha decreases.
    assert model.ent_coef_value.item() < 0.5
    assert model.target_entropy == -5.0


# ---------------------------------------------------------------------------------------- bad input
class DiscretePendulum(DiffPendulum):
    def __init__(self, num_envs=1, action_space=None, **kwargs):
        super().__init__(num_envs, **kwargs)
        self.action_space = action_space


@pytest.mark.parametrize("space", [spaces.Discrete(3), spaces.MultiDiscrete([3, 3])])
def test_discrete_action_space_is_refused(space):
    with pytest.raises(TypeError, match="continuous Box action space.*PPO"):
        RPO("MlpPolicy", DiscretePendulum(2, action_space=space))


def test_dict_observation_space_is_refused():
    env = DiffPendulum(2)
    env.observation_space = spaces.Dict({"x": spaces.Box(-1, 1, (3,))})
    with pytest.raises(TypeError, match="flat Box observation space"):
        RPO("MlpPolicy", env)


@pytest.mark.parametrize(
    "make_env",
    [lambda: make_vec_env("Pendulum-v1", n_envs=2), lambda: gym.make("Pendulum-v1"), lambda: gym.make("DiffPendulum-v0")],
    ids=["dummy-vec-env", "gym-env", "diff-env-as-gym-env"],
)
def test_non_differentiable_env_is_refused(make_env):
    with pytest.raises(TypeError, match="needs a differentiable environment.*make_diff_vec_env"):
        RPO("MlpPolicy", make_env())


def test_unregistered_id_and_vec_normalize_are_refused():
    with pytest.raises(ValueError, match="not a registered differentiable environment.*PPO or SAC"):
        RPO("MlpPolicy", "Pendulum-v1")
    with pytest.raises(ValueError, match="VecNormalize would cut the gradient path.*normalize_obs"):
        RPO("MlpPolicy", VecNormalize(make_diff_vec_env("DiffPendulum-v0", n_envs=2)))


# ---------------------------------------------------------------------------------------- non-finite values
class NaNStatePendulum(DiffPendulum):
    """Injects a NaN into env 0's state on the 5th step of every 40."""

    def dynamics(self, state, action):
        next_state = super().dynamics(state, action)
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls % 40 == 5:
            next_state = th.where(th.arange(self.num_envs).unsqueeze(-1) == 0, th.nan, next_state)
        return next_state


class NaNGradPendulum(DiffPendulum):
    """Every 3rd step, adds sqrt(0 * a): a value of 0 whose derivative is NaN."""

    def dynamics(self, state, action):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls % 3 == 0:
            action = action + th.sqrt(action * 0.0)
        return super().dynamics(state, action)


register_diff_env("NaNStatePendulum-v0", NaNStatePendulum, register_gym=False)
register_diff_env("NaNGradPendulum-v0", NaNGradPendulum, register_gym=False)


def test_nan_state_is_reset_and_training_goes_on():
    model = RPO("MlpPolicy", "NaNStatePendulum-v0", seed=0, **SMALL)
    with pytest.warns(UserWarning, match="non-finite state"):
        model.learn(4 * 8 * 10)
    assert model.get_env().nonfinite_count == 2  # steps 5 and 45 of 80
    assert model._n_updates == 10
    assert model.skipped_updates == 0  # the env zeroes that env's gradient: the other envs' update stands
    assert all(th.isfinite(p).all() for p in model.policy.state_dict().values())


def test_nan_gradient_skips_update_and_training_goes_on():
    model = RPO("MlpPolicy", "NaNGradPendulum-v0", seed=0, **SMALL)
    before = {k: v.clone() for k, v in model.policy.actor.state_dict().items()}
    model.learn(4 * 8 * 10)
    assert model.skipped_updates == 10  # every window holds a NaN action-gradient
    assert model._n_updates == 10
    assert all(th.equal(before[k], v) for k, v in model.policy.actor.state_dict().items())  # never poisoned
    assert all(th.isfinite(p).all() for p in model.policy.state_dict().values())


def test_ppo_still_trains_on_the_numpy_face():
    """A DiffVecEnv is an ordinary VecEnv for model-free SB3 algorithms."""
    model = PPO("MlpPolicy", make_diff_vec_env("DiffPendulum-v0", n_envs=2), n_steps=32, batch_size=32, n_epochs=1)
    model.learn(64)
    assert model.num_timesteps == 64
