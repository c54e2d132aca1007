from benchmarks.studies._methods import ALL
from benchmarks.studies._tasks import REWARPED
from benchmarks.study import Study

STUDY = Study(
    name="rewarped",
    title="rewarped DFlex Cartpole and Hopper",
    description="""\
DiffRL's DFlex tasks through rewarped (warp on the CPU). Every method trains on the batched DiffVecEnv (the
model-free methods on its numpy face, an SB3 VecEnv: the gymnasium registration steps one warp simulation per env:
PPO's cost probe trained 16,384 env steps in 79 s there, in 8.9 s on the DiffVecEnv) and is evaluated on the
gymnasium registration (one env per episode). DFlex Cartpole has its threshold and normalization (fixed before any
run, `benchmarks/studies/_tasks.py`), DFlex Hopper none yet: final returns and curves only. 5 seeds. No search ran
on these tasks: on DFlex Cartpole, SAPO runs the authors' settings (hyperparams/sapo.yml, 64 envs x 32 steps), RPO
and SHAC their `default` entries (16 envs x 32 steps), as a user starting on a new task would.""",
    tasks=REWARPED,
    methods=ALL,
    seeds=tuple(range(5)),
)
