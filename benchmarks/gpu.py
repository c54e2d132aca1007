"""One script for a GPU machine (GitHub issue 14), meant to finish in under 8 minutes: see docs/gpu.md.

    python benchmarks/gpu.py                                   # on cuda: tests, throughput, RPO/SHAC iterations
    python benchmarks/gpu.py --device cpu --n-envs 64 128 --quick   # the same on a CPU at tiny sizes (a dry run)

1. the test suite's CUDA tests (``pytest -k cuda``), and tests/test_speed.py (fused critics) on the device's default;
2. every embedded task at each ``--n-envs`` (default 1024, 4096, 16384): env-steps/s of a gradient window of
   ``--window`` steps without a graph, forward and forward+backward (benchmarks/env_throughput.py's window);
3. RPO and SHAC iterations at each ``--n-envs`` on DiffPendulum-v0 and DiffQuadrotor-v0: wall-clock per iteration and
   RPO's logged split, and the host syncs per window (``aten._local_scalar_dense`` calls counted by a
   TorchDispatchMode: ``.item()``, ``bool(tensor)``);
4. the rewarped and MJX adapters on the device, if their extras are installed (benchmarks/sim_throughput_*.py).

Each part has a time budget (``--budget-s``); a part that fails is recorded with its error and the script goes on.
Results: benchmarks/results/gpu.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch as th
from torch.utils._python_dispatch import TorchDispatchMode

from sb3_rpo import RPO, SHAC, make_diff_vec_env
from sb3_rpo.envs import EMBEDDED_ENV_IDS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from env_throughput import measure as throughput  # noqa: E402


class CountScalarReads(TorchDispatchMode):
    """Counts device-to-host scalar reads (``.item()``, ``bool(tensor)``, ``int(tensor)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is th.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        th.cuda.synchronize()


def run_tests(device: str, quick: bool) -> dict[str, Any]:
    selection = ["tests/test_speed.py"] if quick else ["tests/test_diff_vec_env.py", "tests/test_speed.py"]
    command = [sys.executable, "-m", "pytest", "-q", "-x", *selection, *([] if quick else ["-k", "cuda or speed or fused"])]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    return dict(command=" ".join(command[1:]), returncode=done.returncode, tail=done.stdout[-2000:])


def iteration_split(env_id: str, n_envs: int, device: str, iterations: int, n_steps: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, algo in (("rpo", RPO), ("shac", SHAC)):
        env = make_diff_vec_env(env_id, n_envs=n_envs, seed=0, device=device)
        model = algo("MlpPolicy", env, n_steps=n_steps, seed=0, device=device)
        model.learn(n_steps * n_envs)  # warm-up iteration
        with CountScalarReads() as reads:
            model.rollout_window(env)
            synchronize(device)
        times = []
        for _ in range(iterations):
            synchronize(device)
            start = time.perf_counter()
            model.learn(n_steps * n_envs, reset_num_timesteps=False)
            synchronize(device)
            times.append(time.perf_counter() - start)
        logged = model.logger.name_to_value
        results[name] = dict(
            iteration_s=sorted(times)[len(times) // 2],
            split_s={key: logged.get(f"time/{key}_s") for key in ("forward", "backward", "policy_epochs", "critic")},
            scalar_reads_per_window=reads.count,
            env_steps_per_s=n_steps * n_envs / sorted(times)[len(times) // 2],
        )
        env.close()
    results["ratio_rpo_shac"] = results["rpo"]["iteration_s"] / results["shac"]["iteration_s"]
    return results


def adapter_throughput(script: str, device: str, quick: bool, out: Path) -> dict[str, Any]:
    """benchmarks/sim_throughput_<adapter>.py in a subprocess (MJX runs where JAX puts it: its GPU when jax[cuda] is there)."""
    n_envs, repeats = ("64", "1") if quick else ("1024", "3")
    args = ["--n-envs", n_envs, "--repeats", repeats, "--out", str(out)]
    if script == "sim_throughput_rewarped.py":
        args += ["--device", device, "--tasks", "RewarpedDFlexCartpole-v0", "RewarpedDFlexAnt-v0"]
    command = [sys.executable, str(HERE / script), *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150)
    return dict(command=" ".join(command[1:]), returncode=done.returncode, tail=(done.stdout + done.stderr)[-3000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n-envs", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="few repeats, small adapters' runs (a dry run)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="parts are skipped once this much time has passed")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gpu.json")
    args = parser.parse_args()
    th.set_num_threads(1)
    begin = time.perf_counter()
    results: dict[str, Any] = dict(
        command="python benchmarks/gpu.py " + " ".join(sys.argv[1:]),
        torch=th.__version__,
        cuda=th.version.cuda,
        device_name=th.cuda.get_device_name()
        if args.device.startswith("cuda") and th.cuda.is_available()
        else platform.processor(),
        parts={},
    )
    repeats = 2 if args.quick else 5
    parts = {
        "tests": lambda: run_tests(args.device, args.quick),
        **{
            f"throughput {env_id} n_envs={n}": (
                lambda env_id=env_id, n=n: throughput(env_id, n, args.window, repeats, args.device)
            )
            for n in args.n_envs
            for env_id in EMBEDDED_ENV_IDS
        },
        **{
            f"iteration {env_id} n_envs={n}": (
                lambda env_id=env_id, n=n: iteration_split(env_id, n, args.device, repeats, args.window)
            )
            for n in args.n_envs
            for env_id in ("DiffPendulum-v0", "DiffQuadrotor-v0")
        },
        "rewarped": lambda: adapter_throughput(
            "sim_throughput_rewarped.py", args.device, args.quick, args.out.with_name("gpu_rewarped.json")
        ),
        "mjx": lambda: adapter_throughput(
            "sim_throughput_mjx.py", args.device, args.quick, args.out.with_name("gpu_mjx.json")
        ),
    }
    for name, part in parts.items():
        if time.perf_counter() - begin > args.budget_s:
            results["parts"][name] = {"skipped": "time budget spent"}
            continue
        start = time.perf_counter()
        try:
            results["parts"][name] = part()
        except Exception as error:  # record it and go on: one broken part must not lose the others
            results["parts"][name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-1500:]}
        results["parts"][name]["seconds"] = time.perf_counter() - start
        print(f"{name}: {json.dumps(results['parts'][name], default=str)[:300]}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1, default=str))
    print(f"total {time.perf_counter() - begin:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
