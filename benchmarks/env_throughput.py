"""Throughput of every registered differentiable task: env-steps/s of a gradient window.

    python benchmarks/env_throughput.py                      # n_envs 64, window 32, CPU, 1 thread
    python benchmarks/env_throughput.py --device cuda --n-envs 4096
    python benchmarks/env_throughput.py --env-ids MujocoFDHopper-v5 --env-kwargs n_threads=2 --repeats 3

For each task, a window of ``--window`` steps is simulated from the current state with the graph
recorded (actions are tanh of leaf tensors, as RPO squashes its Gaussian samples), then the summed reward
plus the last observations (where RPO's critic bootstraps) is backpropagated to every action. "forward" times
the window alone, "forward+backward" the window and the backward pass, "no graph" the window with actions that
do not require grad (a simulator with its own derivatives skips them); all are reported as env-steps/s
(n_envs * window / seconds), median over repeats.
"""

from __future__ import annotations

import argparse
import ast
import platform
import statistics
import time

import torch as th

from sb3_rpo import make_diff_vec_env
from sb3_rpo.envs import EMBEDDED_ENV_IDS


def action_map(env) -> tuple[th.Tensor, th.Tensor]:
    """``scale, shift`` such that ``tanh(a) * scale + shift`` covers the env's action Box."""
    low = th.as_tensor(env.action_space.low, device=env.device)
    high = th.as_tensor(env.action_space.high, device=env.device)
    return (high - low) / 2, (high + low) / 2


def window(env, actions: list[th.Tensor], scale: th.Tensor, shift: th.Tensor, backward: bool) -> None:
    env.detach_state()
    total = 0.0
    for a in actions:
        obs, rewards, _, _, _ = env.diff_step(th.tanh(a) * scale + shift)
        total = total + rewards.sum()
    if backward:
        (total + obs.sum()).backward()  # the last observation stands for the critic's bootstrap (some rewards are constant)
    if env.device.type == "cuda":
        th.cuda.synchronize()


def measure(env_id: str, n_envs: int, horizon: int, repeats: int, device: str, **env_kwargs) -> dict[str, float]:
    env = make_diff_vec_env(env_id, n_envs=n_envs, seed=0, device=device, **env_kwargs)
    scale, shift = action_map(env)
    env.diff_reset()
    act_dim = env.action_space.shape[0]
    results = {}
    for mode, record, backward in (("no graph", False, False), ("forward", True, False), ("forward+backward", True, True)):
        times = []
        for rep in range(repeats + 1):  # the first window warms up
            actions = [(0.5 * th.randn(n_envs, act_dim, device=env.device)).requires_grad_(record) for _ in range(horizon)]
            start = time.perf_counter()
            window(env, actions, scale, shift, backward)
            if rep > 0:
                times.append(time.perf_counter() - start)
        results[mode] = n_envs * horizon / statistics.median(times)
    env.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-envs", type=int, default=64)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--env-ids", nargs="+", default=list(EMBEDDED_ENV_IDS), help="default: the embedded tasks")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE", help="env options (Python literals)")
    args = parser.parse_args()
    env_kwargs = {key: ast.literal_eval(value) for key, value in (item.split("=", 1) for item in args.env_kwargs)}
    th.set_num_threads(args.threads)
    print(
        f"torch {th.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s), device {args.device}"
    )
    print(f"n_envs {args.n_envs}, window {args.window}, median of {args.repeats} windows, env options {env_kwargs}\n")
    print("| task | simulation only, no graph | forward (env-steps/s) | forward+backward (env-steps/s) |")
    print("|---|---:|---:|---:|")
    for env_id in args.env_ids:
        r = measure(env_id, args.n_envs, args.window, args.repeats, args.device, **env_kwargs)
        print(f"| {env_id} | {r['no graph']:,.0f} | {r['forward']:,.0f} | {r['forward+backward']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
