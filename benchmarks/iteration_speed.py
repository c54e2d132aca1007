"""Where an RPO iteration's time goes, task by task, against the simulator alone (GitHub issue 14).

    python -m benchmarks.iteration_speed                               # every task below, 10 rounds
    python -m benchmarks.iteration_speed --tasks DiffPendulum-v0 --rounds 4
    python -m benchmarks.iteration_speed --report-only                 # tables from the saved JSON

Each task runs at its ``hyperparams/rpo.yml`` entry (``--tasks`` ids; overrides below) on one torch thread and, for
MuJoCo, one simulation thread: every number is per core. One process times, in rounds whose order is rotated
(so that the load of a shared machine hits every measurement alike), ``--block`` repetitions of:

* the simulator over the same window as RPO (``n_envs`` x ``n_steps``, actions tanh of leaf tensors, the window
  of benchmarks/env_throughput.py): without a graph ("simulation"), with the graph recorded ("forward"), and with
  the backward pass of the summed rewards plus the last observations ("forward+backward");
* an RPO iteration and a SHAC iteration (RPO with ``sb3_rpo.shac.SHAC_SETTINGS``: the same hyperparameters
  without RPO's epochs), wall-clock from one rollout start to the next, with RPO's logged split (forward,
  backward, policy epochs, critic);
* at DiffPendulum-v0: the critic fit of the fused ensemble (``RPO.fit_critics``) against the looped ensemble of
  before issue 14 (``LoopedCriticEnsemble`` below: one nn.Sequential per critic, one gather per minibatch), on the
  same window's samples;
* at RewarpedDFlexCartpole-v0: rewarped's own differentiable step in a plain per-step loop (``task.step``, as its
  examples do) over the same window, forward+backward, beside the adapter's.

Medians over the ``rounds * block`` repetitions. Results: benchmarks/results/iteration_speed.json; tables on stdout
and, with ``--docs``, in docs/performance.md between its generated-table markers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch as th
from torch import nn

from benchmarks.docs_tables import write_between
from benchmarks.env_throughput import action_map, window
from benchmarks.methods import gradient_entry
from benchmarks.protocol import IterationTimer, machine
from sb3_rpo import RPO, make_diff_vec_env
from sb3_rpo.rpo.policies import _mlp
from sb3_rpo.shac.shac import SHAC_SETTINGS

BEFORE_FD = "forward+backward before issue 14 (centered differences, first step's dx'/dx too)"
RESULTS = Path(__file__).resolve().parent / "results" / "iteration_speed.json"

# Per task (a label): the env id, RPO kwargs over its zoo entry and env options. One simulation thread: per-core numbers.
TASKS: dict[str, dict[str, Any]] = {
    "DiffPendulum-v0": dict(env_id="DiffPendulum-v0", overrides={}, env_kwargs={}),
    "DiffCartPoleSwingUp-v0": dict(env_id="DiffCartPoleSwingUp-v0", overrides={}, env_kwargs={}),
    "MujocoFDHopper-v5": dict(env_id="MujocoFDHopper-v5", overrides={}, env_kwargs=dict(n_threads=1)),
    "MujocoFDHopper-v5, forward differences": dict(
        env_id="MujocoFDHopper-v5", overrides={}, env_kwargs=dict(n_threads=1, fd_centered=False)
    ),
    "RewarpedDFlexCartpole-v0": dict(env_id="RewarpedDFlexCartpole-v0", overrides=dict(n_envs=64, n_steps=32), env_kwargs={}),
}


class LoopedCriticEnsemble(nn.Module):
    """The critic ensemble as it was before issue 14 (the reference): one SB3 MLP per critic, evaluated in a loop."""

    def __init__(self, obs_dim: int, net_arch: list[int], activation_fn: type[nn.Module], layer_norm: bool, n_critics: int):
        super().__init__()
        self.members = nn.ModuleList(_mlp(obs_dim, 1, net_arch, activation_fn, layer_norm) for _ in range(n_critics))

    def forward(self, norm_obs: th.Tensor) -> th.Tensor:
        return th.stack([member(norm_obs).squeeze(-1) for member in self.members])


def looped_critic_fit(model: RPO, critic: LoopedCriticEnsemble, optimizer: th.optim.Optimizer, buffer: Any) -> None:
    """RPO's critic fit before issue 14: a randperm per pass, a gather per minibatch, the critics in a loop."""
    params = list(critic.parameters())
    size, batch_size = buffer.size, -(-buffer.size // model.n_critic_batches)
    observations, returns = buffer.observations.reshape(size, -1), buffer.returns.reshape(size)
    for _ in range(model.n_critic_iterations):
        indices = th.randperm(size)
        for start in range(0, size, batch_size):
            idx = indices[start : start + batch_size]
            batch_obs, batch_returns = observations[idx], returns[idx]
            loss = ((critic(batch_obs) - batch_returns.unsqueeze(0)) ** 2).mean(-1).sum()
            model._finite_step(loss, optimizer, params)


def rewarped_plain_loop(env_id: str, n_envs: int, horizon: int) -> Callable[[], None]:
    """A gradient window over rewarped's own API: ``task.step`` per step (its autograd function), one backward."""
    from sb3_rpo.sims.rewarped import TASKS as REWARPED_TASKS
    from sb3_rpo.sims.rewarped import _resolve_task

    task_path = next(row[3]["task"] for row in REWARPED_TASKS if row[0] == env_id)
    with contextlib.redirect_stdout(io.StringIO()):
        task = _resolve_task(task_path)(num_envs=n_envs, device="cpu", no_grad=False, render=False)
        task.reset()
    act_dim = task.num_actions

    def run() -> None:
        actions = [(0.5 * th.randn(n_envs, act_dim)).requires_grad_(True) for _ in range(horizon)]
        task.clear_grad()  # rewarped's initialize_trajectory: the window starts here
        total = 0.0
        for a in actions:
            obs, rewards, _, _ = task.step(th.tanh(a))
            total = total + rewards.sum()
        (total + obs.sum()).backward()

    return run


def measure_task(label: str, rounds: int, block: int) -> dict[str, Any]:
    spec = TASKS.get(label, dict(env_id=label, overrides={}, env_kwargs={}))
    env_id = spec["env_id"]
    rpo_kwargs, source = gradient_entry("rpo", env_id)
    rpo_kwargs.update(spec["overrides"])
    n_envs = rpo_kwargs.pop("n_envs", 16)
    configs = {"rpo": rpo_kwargs, "shac": {**rpo_kwargs, **SHAC_SETTINGS}}  # SHAC's update, RPO's other settings
    env_kwargs = spec["env_kwargs"]

    def env() -> Any:
        return make_diff_vec_env(env_id, n_envs=n_envs, seed=0, device="cpu", **env_kwargs)

    models = {name: RPO("MlpPolicy", env(), seed=0, device="cpu", **kw) for name, kw in configs.items()}
    n_steps = models["rpo"].n_steps
    timers = {name: IterationTimer() for name in models}
    for model in models.values():  # warm-up iterations
        model.learn(2 * n_steps * n_envs)

    sim_env = env()
    sim_env.diff_reset()
    scale, shift = action_map(sim_env)
    act_dim = sim_env.action_space.shape[0]

    def sim_window(record: bool, backward: bool, on: Any = sim_env, state_requires_grad: bool = False) -> Callable[[], None]:
        def run() -> None:
            actions = [(0.5 * th.randn(n_envs, act_dim)).requires_grad_(record) for _ in range(n_steps)]
            if state_requires_grad:  # the first step differentiated in its state too, as every step was before issue 14
                on.detach_state()
                on.state = on.state.requires_grad_(True)
                on.detach_state = lambda: None
            try:
                window(on, actions, scale, shift, backward)
            finally:
                on.__dict__.pop("detach_state", None)

        return run

    measures: dict[str, Callable[[], None]] = {
        "simulation": sim_window(False, False),
        "forward": sim_window(True, False),
        "forward+backward": sim_window(True, True),
    }
    if env_id == "DiffPendulum-v0":  # the critic fit, fused against the looped reference, on one window's samples
        rpo = models["rpo"]
        buffer, _ = rpo.rollout_window(rpo.env)
        policy = rpo.policy
        looped = LoopedCriticEnsemble(
            policy.observation_space.shape[0], policy.net_arch, policy.activation_fn, policy.layer_norm, policy.n_critics
        )
        looped_optimizer = policy.optimizer_class(
            looped.parameters(), lr=policy.critic.optimizer.param_groups[0]["lr"], **policy.optimizer_kwargs
        )
        measures["critic fit, looped (before)"] = lambda: looped_critic_fit(rpo, looped, looped_optimizer, buffer)
        measures["critic fit, fused"] = lambda: rpo.fit_critics(buffer)
    if env_id.startswith("MujocoFD"):  # before issue 14: the default differences, every step's whole Jacobian
        before_env = make_diff_vec_env(env_id, n_envs=n_envs, seed=0, device="cpu", n_threads=1)
        before_env.diff_reset()
        measures[BEFORE_FD] = sim_window(True, True, on=before_env, state_requires_grad=True)
    if env_id.startswith("Rewarped"):
        measures["rewarped plain loop, forward+backward"] = rewarped_plain_loop(env_id, n_envs, n_steps)
        for run in (measures["rewarped plain loop, forward+backward"], measures["forward+backward"]):
            run()  # compiles or loads the backward kernels

    times: dict[str, list[float]] = {name: [] for name in measures}
    names = [*measures, "rpo", "shac"]
    for round_ in range(rounds):
        shift_by = round_ % len(names)
        for name in names[shift_by:] + names[:shift_by]:
            if name in models:
                model = models[name]
                model.learn(block * n_steps * n_envs, callback=timers[name], reset_num_timesteps=False)
                continue
            for _ in range(block):
                start = time.perf_counter()
                measures[name]()
                times[name].append(time.perf_counter() - start)
        print(f"  {label}: round {round_ + 1}/{rounds}", file=sys.stderr, flush=True)

    median = {name: statistics.median(values) for name, values in times.items()}
    for name, timer in timers.items():
        median[f"{name} iteration"] = statistics.median(record["iteration"] for record in timer.records)
        for key in ("forward", "backward", "policy_epochs", "critic"):
            median[f"{name} {key}"] = statistics.median(record[key] for record in timer.records)
    for model in models.values():
        model.env.close()
    sim_env.close()
    if env_id.startswith("MujocoFD"):
        before_env.close()
    steps = n_envs * n_steps
    ratios = {
        "RPO iteration / SHAC iteration": median["rpo iteration"] / median["shac iteration"],
        "RPO iteration / simulator forward+backward": median["rpo iteration"] / median["forward+backward"],
    }
    if "critic fit, fused" in median:
        ratios["critic fit: fused / looped (before)"] = median["critic fit, fused"] / median["critic fit, looped (before)"]
    if BEFORE_FD in median:
        ratios["forward+backward speed / before"] = median[BEFORE_FD] / median["forward+backward"]
    if "rewarped plain loop, forward+backward" in median:
        ratios["adapter forward+backward speed / plain loop's"] = (
            median["rewarped plain loop, forward+backward"] / median["forward+backward"]
        )
    return dict(
        env_id=env_id,
        n_envs=n_envs,
        n_steps=n_steps,
        hyperparams=source,
        overrides=spec["overrides"],
        env_kwargs=env_kwargs,
        repetitions=rounds * block,
        median_s=median,
        env_steps_per_s={
            "simulation": steps / median["simulation"],
            "forward": steps / median["forward"],
            "forward+backward": steps / median["forward+backward"],
            "RPO end to end": steps / median["rpo iteration"],
            "SHAC end to end": steps / median["shac iteration"],
        },
        ratios=ratios,
        load_average_1min=os.getloadavg()[0],
        raw_s=times,
    )


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for label, r in results["tasks"].items():
        m, rate = r["median_s"], r["env_steps_per_s"]
        lines += [
            f"### {label}: {r['n_envs']} envs x {r['n_steps']} steps ({r['hyperparams']}, {r['repetitions']} repetitions)",
            "",
            "| | ms | env-steps/s |",
            "|---|---:|---:|",
        ]
        for name in ("simulation", "forward", "forward+backward"):
            lines.append(f"| simulator, {name} | {1e3 * m[name]:.1f} | {rate[name]:,.0f} |")
        for name in (
            BEFORE_FD,
            "rewarped plain loop, forward+backward",
            "critic fit, looped (before)",
            "critic fit, fused",
        ):
            if name in m:
                lines.append(f"| {name} | {1e3 * m[name]:.1f} | |")
        for algo in ("rpo", "shac"):
            name = algo.upper()
            lines.append(f"| {name} iteration | {1e3 * m[f'{algo} iteration']:.1f} | {rate[f'{name} end to end']:,.0f} |")
            split = ", ".join(
                f"{key} {1e3 * m[f'{algo} {key}']:.1f}" for key in ("forward", "backward", "policy_epochs", "critic")
            )
            lines.append(f"| {algo.upper()} split (ms) | {split} | |")
        lines += ["", "| ratio | value |", "|---|---:|"]
        lines += [f"| {name} | {value:.2f} |" for name, value in r["ratios"].items()]
        lines += [
            "",
            f"Load average at the end: {r['load_average_1min']:.1f} (2 cores, shared). Command: `{r['command']}`",
            "",
        ]
    return "\n".join(lines)


def aims(results: dict[str, Any]) -> str:
    """Issue 14's aims against this run's ratios (a task missing from the run is left out)."""
    tasks = results["tasks"]
    rows = []

    def row(aim: str, value: float, met: bool) -> None:
        rows.append(f"| {aim} | {value:.2f} | {'yes' if met else 'no'} |")

    if "DiffPendulum-v0" in tasks:
        value = tasks["DiffPendulum-v0"]["ratios"]["critic fit: fused / looped (before)"]
        row("DiffPendulum-v0: critic fit, fused / before <= 0.5", value, value <= 0.5)
    for label, r in tasks.items():
        value = r["ratios"]["RPO iteration / SHAC iteration"]
        row(f"{label}: RPO iteration / SHAC iteration <= 1.2", value, value <= 1.2)
    for label, r in tasks.items():
        if r["env_id"] == "MujocoFDHopper-v5":
            value = r["ratios"]["RPO iteration / simulator forward+backward"]
            row(f"{label}: RPO iteration / simulator forward+backward <= 1.3", value, value <= 1.3)
            value = r["ratios"]["forward+backward speed / before"]
            row(f"{label}: forward+backward env-steps/s per core / before >= 1.5", value, value >= 1.5)
        if "adapter forward+backward speed / plain loop's" in r["ratios"]:
            value = r["ratios"]["adapter forward+backward speed / plain loop's"]
            row(f"{label}: adapter forward+backward speed / rewarped's plain loop >= 1.3", value, value >= 1.3)
    return "\n".join(["| aim | measured | met |", "|---|---:|---|", *rows, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=2, help="repetitions of each measurement per round")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true", help="tables from the saved JSON")
    parser.add_argument("--docs", action="store_true", help="write the tables into docs/performance.md")
    args = parser.parse_args()
    th.set_num_threads(1)
    if args.report_only:
        results = json.loads(args.out.read_text())
    else:
        command = "python -m benchmarks.iteration_speed " + " ".join(sys.argv[1:])
        results = dict(command=command.strip(), machine=machine(), tasks={})
        if args.out.exists():  # keep the tasks of an earlier run that are not measured again
            results["tasks"] = json.loads(args.out.read_text()).get("tasks", {})
        for label in args.tasks:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                results["tasks"][label] = dict(command=command.strip(), **measure_task(label, args.rounds, args.block))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))
    tables = "### Aims of issue 14\n\n" + aims(results) + "\n" + markdown(results)
    print(tables)
    if args.docs:
        commands = "\n".join(dict.fromkeys(r["command"] for r in results["tasks"].values()))
        write_between("performance.md", "iteration_speed tables", f"```bash\n{commands}\n```\n\n{tables}")


if __name__ == "__main__":
    main()
