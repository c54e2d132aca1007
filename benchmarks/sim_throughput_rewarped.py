"""Throughput of the rewarped tasks through RewarpedVecEnv: env-steps/s of a gradient window.

    python benchmarks/sim_throughput_rewarped.py                        # CPU, 16 envs, window 32, 1 thread
    python benchmarks/sim_throughput_rewarped.py --n-envs 64 --tasks RewarpedDFlexAnt-v0
    python benchmarks/sim_throughput_rewarped.py --device cuda --n-envs 1024

With benchmarks/env_throughput.py's window: ``--window`` steps are simulated from the current state with the graph
recorded (actions are tanh of leaf tensors, as RPO squashes its Gaussian samples), then the summed reward plus the
last observations is backpropagated to every action. "forward" times the window alone, "forward+backward" the
window and the backward pass; both are env-steps/s (n_envs * window / seconds), median over ``--repeats`` windows
after one warm-up window. The tasks that take seconds per step on a CPU (the hands, the material point method) or
too much memory (the soft Walker) run with the ``--heavy-*`` settings instead. "build" is the construction and
first reset, which includes compiling warp's kernels when they are not cached yet (~/.cache/warp). Results go to
benchmarks/results/sim_throughput_rewarped.json, merged with the tasks of an earlier run that were not measured
again; "load" is the machine's 1-minute load average at the end of the task's measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings

import torch as th
from env_throughput import action_map, window

from sb3_rpo import make_diff_vec_env
from sb3_rpo.sims.rewarped import TASKS

# Tenths of a second to seconds per step on a CPU, or gigabytes of graph for a 32-step window of 16 envs (the
# Walker took 11 GB): run them with the --heavy-* settings.
HEAVY = {
    "RewarpedSoftWalker-v0",
    "RewarpedAllegroHand-v0",
    "RewarpedShadowHand-v0",
    "RewarpedRollingFlat-v0",
    "RewarpedHandFlip-v0",
    "RewarpedFluidMove-v0",
}


def measure(env_id: str, n_envs: int, horizon: int, repeats: int, device: str) -> dict[str, float]:
    start = time.perf_counter()
    env = make_diff_vec_env(env_id, n_envs=n_envs, seed=0, device=device)
    env.diff_reset()
    results: dict[str, float] = {"n_envs": n_envs, "window": horizon, "build_s": time.perf_counter() - start}
    act_dim = env.action_space.shape[0]
    generator = th.Generator().manual_seed(0)
    scale, shift = action_map(env)
    for mode, backward in (("forward", False), ("forward+backward", True)):
        times = []
        for rep in range(repeats + 1):  # the first window warms up (and compiles the backward kernels)
            actions = [
                (0.5 * th.randn(n_envs, act_dim, generator=generator)).to(env.device).requires_grad_(True)
                for _ in range(horizon)
            ]
            t0 = time.perf_counter()
            window(env, actions, scale, shift, backward)
            if rep > 0:
                times.append(time.perf_counter() - t0)
        results[mode] = n_envs * horizon / statistics.median(times)
    results["nonfinite_resets"] = env.nonfinite_count
    results["load_average_1min"] = os.getloadavg()[0]  # other jobs on the machine slow every number down
    env.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", default=[row[0] for row in TASKS], help="ids (default: every registered one)")
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--heavy-n-envs", type=int, default=2)
    parser.add_argument("--heavy-window", type=int, default=4)
    parser.add_argument("--heavy-repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "sim_throughput_rewarped.json"))
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    import rewarped
    import warp

    meta = {
        "torch": th.__version__,
        "warp": warp.__version__,
        "rewarped": getattr(rewarped, "__version__", "1.3.3"),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "device": args.device,
        "command": "python benchmarks/sim_throughput_rewarped.py " + " ".join(f"{k}={v}" for k, v in vars(args).items()),
    }
    print(f"torch {meta['torch']}, warp {meta['warp']}, {meta['processor']}, {args.threads} thread(s), device {args.device}")
    print(f"median of the windows after a warm-up one; heavy tasks: {args.heavy_n_envs} envs, window {args.heavy_window}\n")
    print("| task | n_envs | window | forward (env-steps/s) | forward+backward (env-steps/s) | build (s) | load |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    results = {}
    if os.path.exists(args.out):  # keep the other tasks' results of an earlier run (--tasks runs a subset)
        with open(args.out) as file:
            results = json.load(file).get("results", {})
    for env_id in args.tasks:
        heavy = env_id in HEAVY and args.device == "cpu"
        n_envs, horizon, repeats = (
            (args.heavy_n_envs, args.heavy_window, args.heavy_repeats) if heavy else (args.n_envs, args.window, args.repeats)
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # non-finite resets are counted in the results
                r = measure(env_id, n_envs, horizon, repeats, args.device)
        except Exception as error:  # a task that cannot run here: report it and go on
            results[env_id] = {"error": f"{type(error).__name__}: {error}"}
            print(f"| {env_id} | failed: {type(error).__name__}: {error} |", flush=True)
            continue
        results[env_id] = r
        print(
            f"| {env_id} | {n_envs} | {horizon} | {r['forward']:,.1f} | {r['forward+backward']:,.1f} | {r['build_s']:.1f} "
            f"| {r['load_average_1min']:.1f} |",
            flush=True,
        )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as file:
        json.dump({"meta": meta, "results": results}, file, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
