"""torch.compile on the embedded tasks' step functions: speed of a gradient window and exactness (GitHub issue 14).

    python benchmarks/compile_task.py                                  # the embedded tasks, 16 envs, window 32
    python benchmarks/compile_task.py --env-ids DiffQuadrotor-v0 --rounds 20

For each task, the functions a :class:`~sb3_rpo.DiffTaskVecEnv` calls every step (``dynamics``, ``reward``,
``observation``, ``terminated``) are replaced on one instance by their ``torch.compile`` (``dynamic=False``, default
mode; :func:`sb3_rpo.common.compile.compile_task`), the env's bookkeeping staying eager. Timed in one process,
alternating: benchmarks/env_throughput.py's forward+backward window on the eager env and on the compiled one (same
seed, same actions), median over the rounds after a warm-up window (which compiles). Exactness: in float64, the
gradient of the window's summed rewards and last observations with respect to every action, eager against compiled
(max relative difference). Results: benchmarks/results/compile_task.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch as th
from docs_tables import write_between
from env_throughput import action_map

from sb3_rpo import make_diff_vec_env
from sb3_rpo.common.compile import compile_task
from sb3_rpo.envs import EMBEDDED_ENV_IDS


def make(env_id: str, n_envs: int, dtype: th.dtype, compiled: bool):
    env = make_diff_vec_env(env_id, n_envs=n_envs, seed=0, dtype=dtype)
    if compiled:
        compile_task(env)
    env.diff_reset()
    return env


def gradient_window(env, actions: list[th.Tensor]) -> tuple[th.Tensor, ...]:
    """The window of env_throughput.py from the env's current state; the gradient with respect to every action."""
    scale, shift = action_map(env)
    env.detach_state()
    total = 0.0
    leaves = [a.clone().requires_grad_(True) for a in actions]
    for a in leaves:
        obs, rewards, *_ = env.diff_step(th.tanh(a) * scale + shift)
        total = total + rewards.sum()
    return th.autograd.grad(total + obs.sum(), leaves)


def measure(env_id: str, n_envs: int, horizon: int, rounds: int) -> dict[str, float]:
    act_dim = make_diff_vec_env(env_id, n_envs=1).action_space.shape[0]
    generator = th.Generator().manual_seed(0)

    def actions(dtype: th.dtype) -> list[th.Tensor]:
        return [0.5 * th.randn(n_envs, act_dim, generator=generator, dtype=dtype) for _ in range(horizon)]

    # Exactness in float64: same start, same actions.
    eager64, compiled64 = (make(env_id, n_envs, th.float64, compiled) for compiled in (False, True))
    window64 = actions(th.float64)
    start = time.perf_counter()
    compiled_grads = gradient_window(compiled64, window64)
    compile_s = time.perf_counter() - start
    eager_grads = gradient_window(eager64, window64)
    rel = max(
        ((c - e).abs().max() / e.abs().max().clamp_min(1e-300)).item()
        for c, e in zip(compiled_grads, eager_grads, strict=True)
    )

    envs = {name: make(env_id, n_envs, th.float32, name == "compiled") for name in ("eager", "compiled")}
    for env in envs.values():  # warm-up (compiles the float32 graphs)
        gradient_window(env, actions(th.float32))
    times: dict[str, list[float]] = {name: [] for name in envs}
    for round_ in range(rounds):
        window = actions(th.float32)
        for name in ("eager", "compiled") if round_ % 2 == 0 else ("compiled", "eager"):
            start = time.perf_counter()
            gradient_window(envs[name], window)
            times[name].append(time.perf_counter() - start)
    eager, compiled = (statistics.median(times[name]) for name in ("eager", "compiled"))
    return dict(
        eager_ms=1e3 * eager,
        compiled_ms=1e3 * compiled,
        speedup=eager / compiled,
        max_rel_gradient_difference_float64=rel,
        first_compile_s=compile_s,
        load_average_1min=os.getloadavg()[0],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-ids", nargs="+", default=list(EMBEDDED_ENV_IDS))
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--docs", action="store_true", help="write the table into docs/performance.md")
    parser.add_argument("--report-only", action="store_true", help="the table from the saved JSON")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "compile_task.json")
    args = parser.parse_args()
    th.set_num_threads(1)
    if not args.report_only:
        results = {}
        for env_id in args.env_ids:
            try:
                results[env_id] = measure(env_id, args.n_envs, args.window, args.rounds)
            except Exception as error:  # a task that torch.compile cannot trace: recorded, not fatal
                results[env_id] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
            print(env_id, results[env_id], flush=True)
        command = "python benchmarks/compile_task.py " + " ".join(sys.argv[1:])
        args.out.write_text(json.dumps(dict(command=command.strip(), torch=th.__version__, results=results), indent=1))
    saved = json.loads(args.out.read_text())
    lines = [
        f"`{saved['command']}` (torch {saved['torch']}):",
        "",
        "| task | eager fwd+bwd (ms) | compiled (ms) | speedup | max rel. gradient difference (float64) | first compile (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for env_id, r in saved["results"].items():
        if "error" in r:
            lines.append(f"| {env_id} | | | fails to compile: `{r['error'][:160]}` | | |")
            continue
        lines.append(
            f"| {env_id} | {r['eager_ms']:.1f} | {r['compiled_ms']:.1f} | {r['speedup']:.2f} "
            f"| {r['max_rel_gradient_difference_float64']:.1e} | {r['first_compile_s']:.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.docs:
        write_between("performance.md", "compile table", table)


if __name__ == "__main__":
    main()
