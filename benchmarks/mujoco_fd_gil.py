"""Does ``mujoco.mjd_transitionFD`` release the GIL? (GitHub issue 14; MujocoFDVecEnv's threads rely on it.)

    python benchmarks/mujoco_fd_gil.py

Two measurements on Hopper's model (Euler, as the adapter loads it):

* a pure-Python counting thread runs while the main thread calls ``mjd_transitionFD`` in a loop, then while the
  main thread sleeps for as long: if the call held the GIL, the counter could only advance between calls (a few
  microseconds out of each call's hundreds), so its progress ratio would be near 0; near 1 means the GIL is free
  during the call (on a loaded machine the ratio is lower for lack of a free core, not of the GIL);
* two threads, each with its own ``mjData``, against the same calls in series: about 2x on two free cores.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import mujoco
import numpy as np

from sb3_rpo.sims.mujoco_fd.base import gymnasium_asset


def main() -> None:
    model = mujoco.MjModel.from_xml_path(gymnasium_asset("hopper.xml"))
    model.opt.integrator = mujoco.mjtIntegrator.mjINT_EULER
    datas = [mujoco.MjData(model) for _ in range(2)]
    n = 400

    def fd_loop(data: mujoco.MjData) -> None:
        a, b = np.zeros((2 * model.nv, 2 * model.nv)), np.zeros((2 * model.nv, model.nu))
        for _ in range(n):
            mujoco.mjd_transitionFD(model, data, 1e-6, True, a, b, None, None)

    count, stop = [0], [False]

    def spin() -> None:
        while not stop[0]:
            count[0] += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    start = time.perf_counter()
    fd_loop(datas[0])
    busy = time.perf_counter() - start
    during_fd, count[0] = count[0], 0
    time.sleep(busy)
    during_sleep = count[0]
    stop[0] = True
    spinner.join()

    start = time.perf_counter()
    for data in datas:
        fd_loop(data)
    serial = time.perf_counter() - start
    threads = [threading.Thread(target=fd_loop, args=(data,)) for data in datas]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    threaded = time.perf_counter() - start

    result = dict(
        mujoco=mujoco.__version__,
        calls=n,
        python_thread_progress_during_fd_vs_sleep=during_fd / during_sleep,
        serial_s=serial,
        two_threads_s=threaded,
        two_thread_speedup=serial / threaded,
        cores=len(os.sched_getaffinity(0)),
        load_average_1min=os.getloadavg()[0],
    )
    print(json.dumps(result, indent=1))
    out = Path(__file__).resolve().parent / "results" / "mujoco_fd_gil.json"
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
