from dataclasses import replace

from benchmarks.studies._methods import ALL
from benchmarks.studies._tasks import EMBEDDED, MJX, MUJOCO, REWARPED
from benchmarks.study import Study

# Short runs that reach each method's steady state (off-policy methods start learning after a quarter of the budget),
# evaluated as the real studies are: `python -m benchmarks estimate` scales their cost per env step to the budgets.
OFF_POLICY = dict(learning_starts=1_000)
PROBE = dict(sac=OFF_POLICY, tqc=OFF_POLICY, crossq=OFF_POLICY)

STUDY = Study(
    name="probe",
    title="Cost probes",
    description="""\
One short run per method and task (4,096 env steps, seed 0, the off-policy methods learning from step 1,000 on), to
estimate the cost of the real studies: their time per env step in the second half of the run and their time per
evaluation, scaled to each study's budgets by `python -m benchmarks estimate`. Their returns mean nothing.""",
    tasks=tuple(
        replace(task, budget=4_096, eval_every=2_048, budgets={}, hyperparams=PROBE)
        for task in (*EMBEDDED[1:], *MUJOCO, *REWARPED, *MJX)
    ),
    methods=ALL,
    seeds=(0,),
    kind="probe",
)
