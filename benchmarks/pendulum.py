"""
Pendulum benchmark (GitHub issue 3): RPO vs SHAC vs rl-zoo3's tuned PPO on (Diff)Pendulum.

Every method is evaluated with the same protocol: every ~2500 env steps (a whole number of iterations
for RPO/SHAC), 10 deterministic episodes on a separate eval env; a run "reaches the threshold" at its
first evaluation with mean return >= -200. RPO and SHAC train on DiffPendulum-v0 (exactly Pendulum-v1's
dynamics, reward and 200-step episodes), PPO on gymnasium's Pendulum-v1 with rl-zoo3's tuned
hyperparameters. A second part times RPO and SHAC iterations in one process, interleaved.
The machinery is benchmarks/comparison.py's.

    python benchmarks/pendulum.py                        # 3 seeds, all methods, ~30 min on 2 cores
    python benchmarks/pendulum.py --methods ppo &        # or split over two processes ...
    python benchmarks/pendulum.py --methods rpo,shac     # ... (results are merged into one JSON)
    python benchmarks/pendulum.py --report-only          # table and plot from the saved JSON
"""

from __future__ import annotations

from comparison import Task, main

from sb3_rpo import make_diff_vec_env

PENDULUM = Task(
    name="pendulum",
    diff_env_id="DiffPendulum-v0",
    gym_env_id="Pendulum-v1",
    # One of the 10 eval episodes per env, all at once (the pre-refactor script's eval env)
    make_eval_env=lambda seed: make_diff_vec_env("DiffPendulum-v0", n_envs=10, seed=1000 + seed),
    budgets={"rpo": 60_000, "shac": 100_000, "ppo": 60_000},
    quick_budgets={"rpo": 10_000, "shac": 10_000, "ppo": 8_192},
    eval_every=2500,
    threshold=-200.0,
    plot_title="Pendulum-v1 (DiffPendulum-v0 for RPO/SHAC): mean ± std over seeds",
    plot_ylim=(-1700, 0),
    # The lead's tuned values, used when hyperparams/rpo.yml has no DiffPendulum-v0 entry.
    rpo_fallback=dict(n_envs=16, n_steps=32, n_epochs=10, learning_rate=3e-3, policy_kwargs=dict(log_std_init=-0.5)),
    shac_from_rpo=True,  # the ablation of RPO's epochs, whatever hyperparams/shac.yml says
    ppo_label="PPO (rl-zoo3, gSDE)",
)

if __name__ == "__main__":
    main(PENDULUM, __doc__)
