"""Throughput of the MJX adapter, and what one solver iteration (the differentiable setting) changes.

    python benchmarks/sim_throughput_mjx.py                    # throughput: hopper and ant, 64 envs, 32-step window
    python benchmarks/sim_throughput_mjx.py --solver-drift     # iterations=1 vs brax's default vs converged solver

**Throughput.** For each task, a window of ``--window`` steps from the current states, timed two ways:

* per step (what RPO and SHAC do): benchmarks/env_throughput.py's window, ``MJXVecEnv.diff_step`` from torch,
  one jitted MJX step per call, actions ``tanh`` of leaf tensors; the backward pass (of the summed reward plus the
  last observations) calls one jitted ``jax.vjp`` per step;
* whole window in JAX: one jitted ``lax.scan`` of the same flat step over the window with the actions known in
  advance (open loop, no policy in between, no resets), and ``jax.grad`` of its summed reward.

"forward" is the window alone, "forward+backward" adds the gradient with respect to every action; env-steps/s =
n_envs * window / seconds, median over ``--repeats`` windows after one warm-up (the compilation times are reported
apart). ``cpu/wall`` is the process CPU time over wall time of the timed windows (how many cores JAX used).

**Solver drift** (``--solver-drift``). From the same brax reset states and the same uniform random actions, each
task is rolled out for ``--episode`` steps (no resets) with ``opt.iterations = 1``, with brax's default solver, and
with a converged solver (100 iterations, the reference). Reported: the one-step error (from each reference state,
one step of the tested solver vs the reference's next state: max |qvel| difference), the drift of the trajectory
(max |qpos| difference at given steps), the episode return and length under brax's termination, and the contact
penetration (mean of max(0, -contact distance) over the contacts that touch).

Results go to ``benchmarks/results/sim_throughput_mjx.json`` (``--out``), a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from env_throughput import action_map
from env_throughput import window as gradient_window

from sb3_rpo.sims.mjx import BraxMJXFunctions, MJXVecEnv, import_brax

RESULTS = Path(__file__).resolve().parent / "results" / "sim_throughput_mjx.json"


def timed(fn: Any, repeats: int) -> tuple[float, float, float]:
    """(seconds of the first call, median seconds of the next ``repeats``, CPU time / wall time of those)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times, cpu0, wall0 = [], time.process_time(), time.perf_counter()
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), (time.process_time() - cpu0) / (time.perf_counter() - wall0)


def throughput(env_name: str, n_envs: int, window: int, repeats: int, ls_iterations: int | None) -> dict[str, Any]:
    jax, _ = import_brax()
    jnp = jax.numpy
    start = time.perf_counter()
    env = MJXVecEnv(num_envs=n_envs, env_name=env_name, seed=0, ls_iterations=ls_iterations)
    env.diff_reset()
    build = time.perf_counter() - start
    sim, act_dim = env.sim, env.action_space.shape[0]
    gen = th.Generator().manual_seed(0)
    results: dict[str, Any] = {
        "build_s": build,
        "state_dim": env.state_dim,
        "ls_iterations": int(sim.brax_env.sys.opt.ls_iterations),
        "load_average_before": os.getloadavg()[0],
    }

    scale, shift = action_map(env)

    def per_step(backward: bool) -> None:
        actions = [(0.5 * th.randn(n_envs, act_dim, generator=gen)).requires_grad_(True) for _ in range(window)]
        gradient_window(env, actions, scale, shift, backward)

    def window_return(x0: Any, actions: Any) -> Any:
        def body(x: Any, a: Any) -> tuple[Any, Any]:
            x = sim.step_fn(x, jnp.tanh(a))
            return x, x[:, sim.reward_index].sum()

        return jax.lax.scan(body, x0, actions)[1].sum()

    forward_window, grad_window = jax.jit(window_return), jax.jit(jax.grad(window_return, argnums=1))
    x0 = env.to_jax(env.state)
    rng = np.random.default_rng(0)

    def whole(backward: bool) -> None:
        actions = jnp.asarray(0.5 * rng.standard_normal((window, n_envs, act_dim)), dtype=jnp.float32)
        jax.block_until_ready((grad_window if backward else forward_window)(x0, actions))

    for mode, fn in (("per_step", per_step), ("whole_window", whole)):
        for label, backward in (("forward", False), ("forward+backward", True)):
            first, median, cpu = timed(lambda fn=fn, backward=backward: fn(backward), repeats)
            results[f"{mode} {label}"] = {
                "env_steps_per_s": n_envs * window / median,
                "first_call_s": first,
                "cpu_per_wall": cpu,
            }
            print(
                f"  {env_name} ls={results['ls_iterations']} {mode} {label}: {n_envs * window / median:,.0f} env-steps/s",
                flush=True,
            )
    results["load_average_after"] = os.getloadavg()[0]
    return results


def rollout(sim: BraxMJXFunctions, x0: Any, actions: Any) -> dict[str, np.ndarray]:
    """Roll the flat state through ``actions`` (T, n, A), recording qpos, qvel, reward, done and contact penetration."""
    jax = sim.jax
    jnp = jax.numpy
    env = sim.brax_env

    def one(x: Any, a: Any) -> tuple[Any, dict[str, Any]]:
        state = env.step(sim.unflatten(x), a)
        contact = state.pipeline_state.contact
        penetration = jnp.maximum(0.0, -contact.dist) if contact is not None else jnp.zeros(1)
        return sim.flatten(state), {
            "penetration": penetration,
            "touching": contact.dist < 0 if contact is not None else penetration > 0,
        }

    def body(x: Any, a: Any) -> tuple[Any, dict[str, Any]]:
        x2, extra = jax.vmap(one)(x, a)
        return x2, {"x": x2, **extra}

    _, out = jax.jit(lambda x, acts: jax.lax.scan(body, x, acts))(x0, actions)
    return {k: np.asarray(v) for k, v in out.items()}


def solver_drift(env_name: str, n_envs: int, episode: int, checkpoints: list[int]) -> dict[str, Any]:
    jax, envs = import_brax()
    default_iterations = int(envs.get_environment(env_name, backend="mjx").sys.opt.iterations)
    # (iterations, ls_iterations): the adapter's default, brax's default solver, a converged one (the reference).
    configs = {
        "iterations=1": (1, 4),
        f"brax default ({default_iterations})": (default_iterations, None),
        "converged (100)": (100, None),
    }
    if default_iterations == 1:  # ant: brax already uses 1 (and 4 line-search steps) on MJX; show 4 iterations for comparison
        configs = {"iterations=1 (brax default)": (1, 4), "iterations=4": (4, None), "converged (100)": (100, None)}
    sims = {label: BraxMJXFunctions.get(env_name, {}, it, ls, False) for label, (it, ls) in configs.items()}
    ref = sims["converged (100)"]
    keys = np.random.default_rng(0).integers(0, 2**32, size=(n_envs, 2), dtype=np.uint32)
    x0 = ref.reset(jax.numpy.asarray(keys))
    actions = jax.numpy.asarray(
        np.random.default_rng(1).uniform(-1, 1, (episode, n_envs, ref.action_size)), dtype=jax.numpy.float32
    )
    qpos, qvel = ref.slices["pipeline_state.qpos"], ref.slices["pipeline_state.qvel"]
    runs = {label: rollout(sim, x0, actions) for label, sim in sims.items()}
    ref_run = runs["converged (100)"]
    # One-step error: from each reference state (and its warm start), one step of each solver.
    ref_states = np.concatenate([np.asarray(x0)[None], ref_run["x"][:-1]])
    results: dict[str, Any] = {}
    for label, sim in sims.items():
        run = runs[label]
        next_states = np.stack([np.asarray(sim.step(jax.numpy.asarray(ref_states[t]), actions[t])) for t in range(episode)])
        one_step = np.abs(next_states[..., qvel] - ref_run["x"][..., qvel]).max(-1)  # (T, n)
        velocity_change = np.abs(ref_run["x"][..., qvel] - ref_states[..., qvel]).max(-1)
        drift = np.abs(run["x"][..., qpos] - ref_run["x"][..., qpos]).max(-1)  # (T, n)
        drift = np.where(np.isfinite(drift), drift, np.inf)
        done = run["x"][..., sim.done_index] > 0.5
        length = np.where(done.any(0), done.argmax(0) + 1, episode)  # brax's termination
        blown = ~np.isfinite(run["x"]).all(-1) | (np.abs(run["x"][..., qvel]).max(-1) > 1e3)  # (T, n)
        first_blown = np.where(blown.any(0), blown.argmax(0), episode)
        valid = first_blown >= length  # envs whose episode ended before any blow-up
        rewards = run["x"][..., sim.reward_index]
        returns = np.array([rewards[: length[i], i].sum() for i in range(n_envs)])
        sane = ~np.cumsum(blown, axis=0).astype(bool)  # steps before an env's blow-up
        touching = run["touching"] & sane[..., None]
        results[label] = {
            "iterations": configs[label][0],
            "ls_iterations": int(sim.brax_env.sys.opt.ls_iterations),
            "envs_blown_up": int(blown.any(0).sum()),
            "envs_blown_up_before_termination": int((~valid).sum()),
            "first_blow_up_steps": sorted(int(t) + 1 for t in first_blown if t < episode),
            "one_step_qvel_error_median": float(np.median(one_step)),
            "one_step_qvel_error_p99": float(np.percentile(one_step, 99)),
            "one_step_velocity_change_median": float(np.median(velocity_change)),
            "qpos_drift_median": {str(t): float(np.median(drift[t - 1])) for t in checkpoints if t <= episode},
            "episode_return_mean": float(returns[valid].mean()),  # over the envs that did not blow up
            "episode_length_mean": float(length.mean()),
            "penetration_mm_mean": float(1000 * run["penetration"][touching].mean()) if touching.any() else 0.0,
        }
        r = results[label]
        print(
            f"  {env_name} {label}: one-step |dqvel| median {r['one_step_qvel_error_median']:.2e} (p99 "
            f"{r['one_step_qvel_error_p99']:.2e}; step's velocity change {r['one_step_velocity_change_median']:.2e}), "
            f"qpos drift {r['qpos_drift_median']}, return {r['episode_return_mean']:.1f}, "
            f"length {r['episode_length_mean']:.1f}, penetration {r['penetration_mm_mean']:.2f} mm, blown up: "
            f"{r['envs_blown_up']} envs ({r['envs_blown_up_before_termination']} before termination)",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tasks", nargs="+", default=None, help="brax env names (default: hopper ant; drift: + walker2d halfcheetah)"
    )
    parser.add_argument("--n-envs", type=int, default=64)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--ls-iterations",
        type=int,
        nargs="+",
        default=[4],
        help="line-search steps to time (4: the adapter's default; 0: brax's)",
    )
    parser.add_argument(
        "--solver-drift", action="store_true", help="measure iterations=1 against the default and converged solver"
    )
    parser.add_argument("--episode", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    th.set_num_threads(1)
    jax, _ = import_brax()
    machine = {
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": th.__version__,
        "jax": jax.__version__,
        "jax_device": str(jax.devices()[0]),
        "torch_threads": 1,
    }
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["machine"] = machine
    if args.solver_drift:
        tasks = args.tasks or ["hopper", "walker2d", "halfcheetah", "ant"]
        section = results.setdefault("solver_drift", {"n_envs": args.n_envs, "episode": args.episode, "tasks": {}})
        for name in tasks:
            section["tasks"][name] = solver_drift(name, args.n_envs, args.episode, [1, 10, 100, args.episode])
    else:
        tasks = args.tasks or ["hopper", "ant"]
        section = results.setdefault("throughput", {"n_envs": args.n_envs, "window": args.window, "tasks": {}})
        section.update(n_envs=args.n_envs, window=args.window, repeats=args.repeats)
        for name in tasks:
            for ls in args.ls_iterations:
                r = throughput(name, args.n_envs, args.window, args.repeats, None if ls == 0 else ls)
                section["tasks"][f"{name} (ls_iterations={r['ls_iterations']})"] = r
        print(f"\nn_envs {args.n_envs}, window {args.window}, CPU, env-steps/s (median of {args.repeats} windows)\n")
        print("| task | per step: forward | per step: fwd+bwd | whole window: forward | whole window: fwd+bwd |")
        print("|---|---:|---:|---:|---:|")
        for key, r in section["tasks"].items():
            cells = [f"{r[m]['env_steps_per_s']:,.0f}" for m in ("per_step forward", "per_step forward+backward")]
            cells += [f"{r[m]['env_steps_per_s']:,.0f}" for m in ("whole_window forward", "whole_window forward+backward")]
            print(f"| {key} | " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
