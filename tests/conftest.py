import os

import torch as th

# pytest-xdist runs one worker per core: one torch thread each avoids oversubscribing the CPU.
th.set_num_threads(1)
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
# Headless MuJoCo rendering. mujoco reads MUJOCO_GL when first imported, which may be by any test module
# (brax for MJX imports it too): set it before all of them.
os.environ.setdefault("MUJOCO_GL", "egl")

# The longest files (XLA compiles MJX's programs, warp its kernels, the smoke study trains 14 runs) go first: with
# the README's `--dist loadfile`, a worker that started one of them last would finish minutes after the other.
FIRST = ("test_sim_mjx.py", "test_benchmarks.py", "test_sim_rewarped.py", "test_zoo.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: FIRST.index(item.path.name) if item.path.name in FIRST else len(FIRST))
