from dataclasses import replace

from benchmarks.studies._methods import ALL
from benchmarks.studies._tasks import PENDULUM, REACHER_TASK
from benchmarks.study import Study

# Small enough for the test suite: the model-free methods start learning early, PPO collects short rollouts.
OFF_POLICY = dict(learning_starts=192, batch_size=64, policy_kwargs=dict(net_arch=[64, 64]))
SMALL = dict(ppo=dict(n_steps=64, batch_size=64, n_epochs=2), sac=OFF_POLICY, tqc=OFF_POLICY, crossq=OFF_POLICY)
MODEL_FREE_BUDGETS = dict.fromkeys(("ppo", "sac", "tqc", "crossq"), 256)

STUDY = Study(
    name="smoke",
    title="Smoke study",
    description="Tiny budgets, every method, two tasks: checks the machinery (tests/test_benchmarks.py), not the methods.",
    tasks=(
        replace(PENDULUM, budget=1024, eval_every=512, n_eval_episodes=2, budgets=MODEL_FREE_BUDGETS, hyperparams=SMALL),
        replace(REACHER_TASK, budget=1024, eval_every=1024, n_eval_episodes=2, budgets=MODEL_FREE_BUDGETS, hyperparams=SMALL),
    ),
    methods=ALL,
    seeds=(0, 1),
    timing_rounds=1,
)
