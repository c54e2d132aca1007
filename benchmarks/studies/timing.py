from benchmarks.studies._methods import RPO, SAPO, SHAC
from benchmarks.studies._tasks import EMBEDDED, MJX, MUJOCO, REWARPED
from benchmarks.study import Study

STUDY = Study(
    name="timing",
    title="Time per iteration: RPO, SHAC, SAPO",
    description="""\
RPO, SHAC and SAPO with their entries, on one task at a time, in one process: 5 warm-up iterations each, then rounds
of alternating blocks of 5 iterations (the order rotated every round), so that machine noise hits all alike.
Medians of the whole iteration (rollout start to the next, SB3's bookkeeping included) and of RPO's logged parts.""",
    tasks=(*EMBEDDED, MUJOCO[0], REWARPED[0], MJX[0]),
    methods=(RPO, SHAC, SAPO),
    kind="timing",
)
