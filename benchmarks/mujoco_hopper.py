"""
MuJoCo Hopper benchmark: RPO and SHAC trained through MuJoCo's finite-difference Jacobians vs rl-zoo3's tuned PPO.

RPO and SHAC train on MujocoFDHopper-v5 (sb3_rpo's MuJoCo adapter: gymnasium's Hopper-v5 model and task,
stepped with MuJoCo's Euler integrator, differentiated with mjd_transitionFD, see sb3_rpo/sims/mujoco_fd/),
PPO on gymnasium's Hopper-v5 with the hyperparameters of rl-zoo3's tuned Hopper-v4 entry (rl-zoo3 has no
Hopper-v5 entry; v4 and v5 share the model and the reward). Every method is evaluated on gymnasium's official
Hopper-v5 (RK4 integrator), so RPO and SHAC are scored on the real env, not on the one they trained on:
every ~20k env steps (a whole number of iterations for RPO/SHAC), 10 deterministic episodes on a 1-env
make_vec_env("Hopper-v5") seeded 1000 + seed. All methods get the same env-step budget (--budget, default
200k). No threshold: a return of 1000 is within reach of standing still for the whole episode (healthy
reward 1 per step), so the table reports final returns and the plot the return against env steps.
RPO's and SHAC's hyperparameters are the MujocoFDHopper-v5 entries of hyperparams/rpo.yml and
hyperparams/shac.yml (a built-in fallback, announced on stderr and in the JSON, while an entry is missing).
The machinery is benchmarks/comparison.py's.

    python benchmarks/mujoco_hopper.py --methods ppo &       # the two halves side by side (~1-1.2 h) ...
    python benchmarks/mujoco_hopper.py --methods rpo,shac    # ... (~1.5 h on 2 shared cores), one JSON
    python benchmarks/mujoco_hopper.py --quick --out /tmp    # smoke run: 1 seed, 5k env steps
    python benchmarks/mujoco_hopper.py --report-only         # table and plot from the saved JSON
"""

from __future__ import annotations

from comparison import Task, main
from stable_baselines3.common.env_util import make_vec_env

BUDGET = 200_000
# Until hyperparams/{rpo,shac}.yml have a MujocoFDHopper-v5 entry
FALLBACK = dict(n_envs=32, n_steps=8, learning_rate=3e-4)

HOPPER = Task(
    name="mujoco_hopper",
    diff_env_id="MujocoFDHopper-v5",
    gym_env_id="Hopper-v5",
    ppo_zoo_id="Hopper-v4",
    # The official env (RK4), as rl-zoo3 builds PPO's eval env; RPO's observation normalization is in its policy
    make_eval_env=lambda seed: make_vec_env("Hopper-v5", n_envs=1, seed=1000 + seed),
    # One thread per simulation batch: the two processes of a split run share the cores
    diff_env_kwargs=dict(n_threads=1),
    budgets=dict.fromkeys(("rpo", "shac", "ppo"), BUDGET),
    quick_budgets=dict.fromkeys(("rpo", "shac", "ppo"), 5_120),
    eval_every=20_000,
    quick_eval_every=2_560,
    threshold=None,
    plot_title="Hopper-v5 (RPO/SHAC trained on MujocoFDHopper-v5): mean ± std",
    rpo_fallback=FALLBACK,
    shac_fallback=FALLBACK,
    protocol_notes=dict(
        train_envs=dict(rpo="MujocoFDHopper-v5 (n_threads=1)", shac="MujocoFDHopper-v5 (n_threads=1)", ppo="Hopper-v5"),
        eval_env="gymnasium Hopper-v5 for every method: make_vec_env('Hopper-v5', n_envs=1, seed=1000 + seed)"
        ", in PPO's VecNormalize (training=False, norm_reward=False)",
    ),
)

if __name__ == "__main__":
    main(HOPPER, __doc__)
