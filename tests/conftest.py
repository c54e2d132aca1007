import os

import torch as th

# pytest-xdist runs one worker per core: one torch thread each avoids oversubscribing the CPU.
th.set_num_threads(1)
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
