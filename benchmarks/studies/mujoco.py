from benchmarks.studies._methods import ALL
from benchmarks.studies._tasks import MUJOCO
from benchmarks.study import Study

STUDY = Study(
    name="mujoco",
    title="MuJoCo Hopper, Walker2d, HalfCheetah (v5)",
    description="""\
RPO, SHAC and SAPO train on `MujocoFD<Task>-v5` (gymnasium's model and reward, MuJoCo's Euler integrator,
finite-difference Jacobians from `mjd_transitionFD`), the model-free methods on gymnasium's `<Task>-v5`; every method
is evaluated on gymnasium's official `<Task>-v5` (RK4), so the gradient methods are scored on the real env, not on
the one they trained on. 300k env steps, 5 seeds. Replaces `benchmarks/mujoco_hopper.py`.""",
    tasks=MUJOCO,
    methods=ALL,
    seeds=tuple(range(5)),
)
