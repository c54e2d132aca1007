import os

import torch as th

# pytest-xdist runs one worker per core: one torch thread each avoids oversubscribing the CPU.
th.set_num_threads(1)
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
# Headless MuJoCo rendering. mujoco reads MUJOCO_GL when first imported, which may be by any test module
# (brax for MJX imports it too): set it before all of them.
os.environ.setdefault("MUJOCO_GL", "egl")
