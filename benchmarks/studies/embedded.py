from benchmarks.studies._methods import ALL
from benchmarks.studies._tasks import EMBEDDED
from benchmarks.study import Study

STUDY = Study(
    name="embedded",
    title="Embedded tasks: RPO, SHAC, SAPO vs PPO, SAC, TQC, CrossQ",
    description="""\
The five tasks embedded in sb3-rpo, 10 seeds per method. RPO, SHAC and SAPO train on the DiffVecEnv with the entries
of `hyperparams/{rpo,shac,sapo}.yml`; PPO, SAC, TQC and CrossQ on the gymnasium env that the DiffVecEnv mirrors
(gymnasium's own `Pendulum-v1`, else the gymnasium registration of the differentiable id) with rl-zoo3's tuned entry,
or the nearest one where rl-zoo3 has none (listed per task). Replaces `benchmarks/pendulum.py` and
`benchmarks/learning_all_tasks.py`.""",
    tasks=EMBEDDED,
    methods=ALL,
    seeds=tuple(range(10)),
)
