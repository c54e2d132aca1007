"""
Soak test: 1,000 RPO iterations per task, watching for leaks and poisoned parameters.

Every ``--every`` iterations (at the start of a window, after the previous update) it records the process's
resident memory (VmRSS) and the number of live ``torch.Tensor`` objects (after a full ``gc.collect()``), and
checks that every parameter and buffer of the policy is finite. Two tasks: ``DiffPendulum-v0`` as it is, and the
same pendulum with injected faults (a NaN state in one env every 40 steps, an infinite observation from a finite
state every 40 steps, 20 steps apart), which the env's guards must reset without ever stopping the run.

Flat means, after a warm-up (``--warmup`` iterations: the allocator, SB3's logger and the episode buffer filling):

* live tensors: the same count at every later record (a leak of one tensor per iteration would add ``--every``);
* RSS: within ``--rss-tolerance-mb`` (default 20 MB) of the first record after the warm-up. Freed memory is not
  always returned to the OS, so the RSS wanders by a few MB; a leak of a window's buffer (about 0.1 MB with the
  defaults) per iteration would grow it by ~100 MB over the run.

    python benchmarks/soak.py                       # 1,000 iterations per task, results/soak.json
    python benchmarks/soak.py --iterations 100      # a quick look

One torch thread, as everywhere in the benchmarks.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import time
import warnings

import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from sb3_rpo import RPO, make_diff_vec_env, register_diff_env
from sb3_rpo.envs.pendulum import DiffPendulum


class FaultyPendulum(DiffPendulum):
    """DiffPendulum with injected faults: env 0's state becomes NaN at step 5 of every 40, env 1 observes +inf (from a
    finite state) at step 25 of every 40."""

    def dynamics(self, state: th.Tensor, action: th.Tensor) -> th.Tensor:
        next_state = super().dynamics(state, action)
        self.calls = getattr(self, "calls", 0) + 1
        self.inf_obs_pending = self.calls % 40 == 25
        if self.calls % 40 == 5:
            next_state = th.where(th.arange(self.num_envs).unsqueeze(-1) == 0, th.nan, next_state)
        return next_state

    def observation(self, state: th.Tensor) -> th.Tensor:
        obs = super().observation(state)
        if getattr(self, "inf_obs_pending", False):  # the observation of the state reached, once
            self.inf_obs_pending = False
            obs = th.where(th.arange(obs.shape[0]).unsqueeze(-1) == 1, th.inf, obs)
        return obs


register_diff_env("SoakFaultyPendulum-v0", FaultyPendulum, max_episode_steps=200, register_gym=False)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def live_tensors() -> int:
    gc.collect()
    count = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # isinstance on torch's deprecated module attributes
        for obj in gc.get_objects():
            with contextlib.suppress(ReferenceError):  # dead weak proxies
                count += isinstance(obj, th.Tensor)
    return count


class Recorder(BaseCallback):
    """Records RSS, live tensors and the finiteness of the policy every ``every`` iterations."""

    def __init__(self, every: int):
        super().__init__()
        self.every, self.iteration, self.records = every, 0, []

    def _on_rollout_start(self) -> None:
        if self.iteration % self.every == 0:
            finite = all(bool(th.isfinite(v).all()) for v in self.model.policy.state_dict().values())
            self.records.append(dict(iteration=self.iteration, rss_mb=rss_mb(), live_tensors=live_tensors(), finite=finite))
        self.iteration += 1

    def _on_step(self) -> bool:
        return True


def soak(env_id: str, args: argparse.Namespace) -> dict:
    env = make_diff_vec_env(env_id, n_envs=args.n_envs, seed=0)
    model = RPO("MlpPolicy", env, n_steps=args.n_steps, seed=0, device="cpu")
    recorder = Recorder(args.every)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the faulty task warns every window it resets an env
        model.learn(args.iterations * args.n_steps * args.n_envs, callback=recorder)
    seconds = time.perf_counter() - start
    recorder._on_rollout_start()  # the state after the last update
    records = recorder.records
    after = [r for r in records if r["iteration"] >= args.warmup]
    base = after[0]
    tensors_flat = all(r["live_tensors"] == base["live_tensors"] for r in after)
    rss_growth = max(r["rss_mb"] for r in after) - base["rss_mb"]
    params_finite = all(r["finite"] for r in records) and all(
        bool(th.isfinite(v).all()) for v in model.policy.state_dict().values()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env.report_nonfinite()  # the last window's counts
    return dict(
        env_id=env_id,
        iterations=model._n_updates,
        seconds=seconds,
        records=records,
        live_tensors_after_warmup=sorted({r["live_tensors"] for r in after}),
        rss_mb_after_warmup=[base["rss_mb"], max(r["rss_mb"] for r in after)],
        rss_growth_mb=rss_growth,
        live_tensors_flat=tensors_flat,
        rss_flat=rss_growth <= args.rss_tolerance_mb,
        params_finite=params_finite,
        skipped_updates=model.skipped_updates,
        nonfinite_totals=dict(env.nonfinite_totals),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument("--n-steps", type=int, default=16)
    parser.add_argument("--rss-tolerance-mb", type=float, default=20.0)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "soak.json"))
    args = parser.parse_args()
    th.set_num_threads(1)
    results = dict(
        command="python benchmarks/soak.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        machine=dict(
            python=platform.python_version(), torch=th.__version__, processor=platform.processor() or platform.machine()
        ),
        runs=[soak(env_id, args) for env_id in ("DiffPendulum-v0", "SoakFaultyPendulum-v0")],
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as file:
        json.dump(results, file, indent=1)
    print(
        "| task | iterations | time (s) | live tensors after warm-up | RSS after warm-up (MB) | RSS growth (MB) "
        "| params finite | envs reset (state / obs) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for run in results["runs"]:
        tensors = "/".join(map(str, run["live_tensors_after_warmup"]))
        rss = "{:.1f} -> {:.1f}".format(*run["rss_mb_after_warmup"])
        resets = f"{run['nonfinite_totals'].get('state', 0)} / {run['nonfinite_totals'].get('observation', 0)}"
        print(
            f"| {run['env_id']} | {run['iterations']} | {run['seconds']:.0f} | {tensors} | {rss} | {run['rss_growth_mb']:.1f} "
            f"| {run['params_finite']} | {resets} |"
        )
    failed = [
        run["env_id"] for run in results["runs"] if not (run["live_tensors_flat"] and run["rss_flat"] and run["params_finite"])
    ]
    if failed:
        raise SystemExit(f"not flat or not finite: {failed} (see {args.out})")


if __name__ == "__main__":
    main()
