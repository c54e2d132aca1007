from benchmarks.studies._methods import ALL
from benchmarks.studies._tasks import MJX
from benchmarks.study import Study

STUDY = Study(
    name="mjx",
    title="MJX Hopper (brax)",
    description="""\
brax's MJX hopper through `jax.vjp`. The model-free methods train on the batched DiffVecEnv's numpy face (an SB3
VecEnv; the gymnasium registration runs one jax simulation per env); every method is evaluated on the registration.
Threshold and normalization as MuJoCo's Hopper-v5 (D4RL's constants): brax's hopper has gymnasium's model, reward
and termination. 5 seeds. The gradient methods run their MJXHopper-v0 entries: MujocoFDHopper-v5's (8-step windows),
not tuned for MJX.""",
    tasks=MJX,
    methods=ALL,
    seeds=tuple(range(5)),
)
