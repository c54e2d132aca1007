"""
Method comparison on one task: RPO and SHAC on a differentiable env vs rl-zoo3's tuned PPO on its gymnasium
counterpart, under one evaluation protocol.

A task script (``pendulum.py``, ``mujoco_hopper.py``) describes what differs per task with a :class:`Task`
and calls :func:`main`. Every method is evaluated the same way: every ~``eval_every`` env steps (a whole
number of iterations for RPO/SHAC, after that iteration's update; at the env step that crosses the period for
PPO, as SB3's EvalCallback) and once at the end, ``n_eval_episodes`` deterministic episodes on a separate eval
env seeded ``1000 + seed``. With a threshold, a run "reaches" it at its first evaluation whose mean return
is at least the threshold. A second part times RPO and SHAC iterations in one process, interleaved.
"""

from __future__ import annotations

import argparse
import fcntl
import inspect
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, sync_envs_normalization

from sb3_rpo import RPO, SHAC, RPOPolicy, make_diff_vec_env
from sb3_rpo.shac.shac import SHAC_DEFAULTS, SHAC_POLICY_KWARGS

REPO_ROOT = Path(__file__).resolve().parents[1]
METHODS = ("rpo", "shac", "ppo")
TIME_KEYS = ("forward", "backward", "policy_epochs", "critic")


@dataclass(frozen=True)
class Task:
    """
    What differs from one comparison to another.

    :param name: Stem of the results file (``benchmarks/results/<name>.json``) and of the default plot
        (``docs/images/<name>_curves.png``)
    :param diff_env_id: Differentiable env id on which RPO and SHAC train, and key of their entries in
        ``hyperparams/rpo.yml`` and ``hyperparams/shac.yml``
    :param gym_env_id: Gymnasium env id on which PPO trains and is evaluated
    :param make_eval_env: ``seed -> VecEnv``: the eval env of RPO and SHAC for the run of that seed
    :param budgets: Env steps per method (``rpo``, ``shac``, ``ppo``)
    :param quick_budgets: Budgets of a ``--quick`` smoke run
    :param eval_every: Evaluation period in env steps
    :param plot_title: Title of the learning-curve plot
    :param rpo_fallback: RPO's hyperparameters when ``hyperparams/rpo.yml`` has no ``diff_env_id`` entry
    :param ppo_zoo_id: Entry of rl-zoo3's ``ppo.yml`` that PPO's hyperparameters come from (default:
        ``gym_env_id``), e.g. an older version of the same env when rl-zoo3 has no entry for ``gym_env_id``
    :param ppo_label: Name of PPO in the table and the plot
    :param shac_from_rpo: SHAC takes RPO's hyperparameters without the epochs (the ablation of RPO's epochs)
        instead of its own entry of ``hyperparams/shac.yml``
    :param shac_fallback: SHAC's hyperparameters when ``hyperparams/shac.yml`` has no ``diff_env_id`` entry
        (default: ``rpo_fallback``)
    :param diff_env_kwargs: Options of :func:`sb3_rpo.make_diff_vec_env` for the training envs of RPO/SHAC
    :param threshold: Return that counts as solved (None: no threshold; report final returns and curves)
    :param n_eval_episodes: Deterministic episodes per evaluation
    :param quick_eval_every: Evaluation period of a ``--quick`` run (default: ``eval_every``)
    :param plot_ylim: ``(bottom, top)`` of the plot's return axis (None: automatic)
    :param protocol_notes: Extra entries of the JSON's ``protocol``
    """

    name: str
    diff_env_id: str
    gym_env_id: str
    make_eval_env: Callable[[int], VecEnv]
    budgets: dict[str, int]
    quick_budgets: dict[str, int]
    eval_every: int
    plot_title: str
    rpo_fallback: dict[str, Any]
    ppo_zoo_id: str | None = None
    ppo_label: str = "PPO (rl-zoo3)"
    shac_from_rpo: bool = False
    shac_fallback: dict[str, Any] | None = None
    diff_env_kwargs: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    n_eval_episodes: int = 10
    quick_eval_every: int | None = None
    plot_ylim: tuple[float | None, float | None] | None = None
    protocol_notes: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> dict[str, str]:
        return {"rpo": "RPO", "shac": "SHAC", "ppo": self.ppo_label}


# ---------------------------------------------------------------------------- hyperparameters
def linear_schedule(initial_value: float) -> Callable[[float], float]:
    return lambda progress_remaining: progress_remaining * initial_value


def zoo_entry(path: Path, env_id: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    with open(path) as file:
        return (yaml.safe_load(file) or {}).get(env_id)


def _preprocess(entry: dict[str, Any], schedule_keys: tuple[str, ...]) -> dict[str, Any]:
    """rl-zoo3's conversions: ``lin_<x>`` schedules and policy_kwargs given as a Python string."""
    kwargs = dict(entry)
    for key in schedule_keys:
        if isinstance(kwargs.get(key), str) and kwargs[key].startswith("lin_"):
            kwargs[key] = linear_schedule(float(kwargs[key].split("_")[1]))
    if isinstance(kwargs.get("policy_kwargs"), str):
        # rl-zoo3 evaluates it where torch.nn is imported as nn (activation_fn=nn.ReLU)
        kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"], {"nn": th.nn, "th": th})
    return kwargs


def diff_hyperparams(task: Task, algo: str, fallback: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """
    RPO's or SHAC's constructor kwargs (without env, seed and device) from the ``task.diff_env_id`` entry of
    ``hyperparams/<algo>.yml``, and where they come from.
    """
    path = REPO_ROOT / "hyperparams" / f"{algo}.yml"
    entry = zoo_entry(path, task.diff_env_id)
    if entry is None:
        return dict(fallback), f"built-in fallback (no {task.diff_env_id} entry in hyperparams/{algo}.yml)"
    kwargs = _preprocess(entry, ("learning_rate", "critic_learning_rate"))
    kwargs.pop("n_timesteps", None)  # the benchmark's budgets apply
    kwargs.pop("policy", None)
    policy_kwargs = dict(kwargs.pop("policy_kwargs", None) or {})
    if "net_arch" in kwargs:
        policy_kwargs["net_arch"] = kwargs.pop("net_arch")
    if "normalize" in kwargs:  # RPO normalizes observations inside the graph, never with a VecNormalize
        policy_kwargs["normalize_obs"] = bool(kwargs.pop("normalize"))
    kwargs["policy_kwargs"] = policy_kwargs
    return kwargs, f"hyperparams/{algo}.yml[{task.diff_env_id}]"


def shac_ablation(rpo_kwargs: dict[str, Any]) -> dict[str, Any]:
    """
    The ablation: RPO's settings with one epoch on the whole window, no clip band and no KL. RPO's defaults are
    pinned where SHAC's (DiffRL's) differ, so that only the epochs change.
    """
    dropped = ("n_epochs", "batch_size", "kl_coef", "clip_low", "clip_high")
    kwargs = {key: value for key, value in rpo_kwargs.items() if key not in dropped}
    rpo_defaults, policy_defaults = inspect.signature(RPO).parameters, inspect.signature(RPOPolicy).parameters
    for key in SHAC_DEFAULTS:
        kwargs.setdefault(key, rpo_defaults[key].default)
    kwargs["policy_kwargs"] = {
        **{key: policy_defaults[key].default for key in SHAC_POLICY_KWARGS},
        **(kwargs.get("policy_kwargs") or {}),
    }
    return kwargs


def ppo_hyperparams(task: Task) -> tuple[dict[str, Any], int, Any, str]:
    """rl-zoo3's tuned PPO: (constructor kwargs, n_envs, normalize setting, source)."""
    import rl_zoo3

    path = Path(rl_zoo3.__file__).parent / "hyperparams" / "ppo.yml"
    zoo_id = task.ppo_zoo_id or task.gym_env_id
    entry = zoo_entry(path, zoo_id)
    assert entry is not None, f"rl-zoo3 has no {zoo_id} entry in {path}"
    unsupported = {"frame_stack", "env_wrapper", "callback", "vec_env_wrapper", "env_kwargs"} & entry.keys()
    assert not unsupported, f"rl-zoo3 keys not replicated here: {unsupported}"
    kwargs = _preprocess(entry, ("learning_rate", "clip_range", "clip_range_vf"))
    n_envs = kwargs.pop("n_envs", 1)
    normalize = kwargs.pop("normalize", False)
    kwargs.pop("n_timesteps")
    source = f"rl_zoo3 {rl_zoo3.__version__} hyperparams/ppo.yml[{zoo_id}]"
    if zoo_id != task.gym_env_id:
        own = "has no" if zoo_entry(path, task.gym_env_id) is None else "has its own, unused,"
        source += f" applied to {task.gym_env_id} (rl-zoo3 {own} {task.gym_env_id} entry)"
    return kwargs, n_envs, normalize, source


def jsonable(value: Any) -> Any:
    """``value`` with what JSON cannot hold (schedules, classes such as nn.ReLU) as its repr."""
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)


# ---------------------------------------------------------------------------- evaluation protocol
class PeriodicEval(BaseCallback):
    """
    Evaluates the policy every ``every`` env steps and once at the end of training, and keeps the
    training wall-clock time (evaluations excluded) at each evaluation.

    :param eval_env: The evaluation env
    :param every: Evaluation period in env steps
    :param between_iterations: Evaluate only between iterations (after the update of the iteration
        that crossed the period), as for RPO/SHAC; otherwise at the env step that crosses it, as
        SB3's EvalCallback (and rl-zoo3) does for PPO
    :param n_eval_episodes: Deterministic episodes per evaluation
    """

    def __init__(self, eval_env: VecEnv, every: int, between_iterations: bool, n_eval_episodes: int):
        super().__init__()
        self.eval_env = eval_env
        self.every = every
        self.between_iterations = between_iterations
        self.n_eval_episodes = n_eval_episodes
        self.records: list[dict[str, float]] = []
        self.eval_seconds = 0.0
        self.start = 0.0

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()

    def _maybe_evaluate(self) -> None:
        if self.num_timesteps >= (len(self.records) + 1) * self.every:
            self._evaluate()

    def _on_step(self) -> bool:
        if not self.between_iterations:
            self._maybe_evaluate()
        return True

    def _on_rollout_start(self) -> None:
        if self.between_iterations:
            self._maybe_evaluate()

    def _on_training_end(self) -> None:
        if not self.records or self.records[-1]["steps"] != self.num_timesteps:
            self._evaluate()

    def _evaluate(self) -> None:
        begin = time.perf_counter()
        if isinstance(self.eval_env, VecNormalize):
            sync_envs_normalization(self.training_env, self.eval_env)
        returns, _ = evaluate_policy(
            self.model, self.eval_env, n_eval_episodes=self.n_eval_episodes, deterministic=True, return_episode_rewards=True
        )
        self.records.append(
            dict(
                steps=int(self.num_timesteps),
                train_time_s=begin - self.start - self.eval_seconds,
                mean_return=float(np.mean(returns)),
                std_return=float(np.std(returns)),
            )
        )
        self.eval_seconds += time.perf_counter() - begin


def make_diff_model(task: Task, method: str, seed: int, hyperparams: dict[str, Any]) -> RPO:
    """RPO or SHAC on ``n_envs`` copies of the task's differentiable env, built with ``task.diff_env_kwargs``."""
    kwargs = dict(hyperparams[method])
    # RPO builds an env from an id without extra options (MuJoCo's n_threads): build it here, as RPO would
    n_envs = kwargs.pop("n_envs", inspect.signature(RPO).parameters["n_envs"].default)
    env = make_diff_vec_env(task.diff_env_id, n_envs=n_envs, seed=seed, device="cpu", **task.diff_env_kwargs)
    return (RPO if method == "rpo" else SHAC)("MlpPolicy", env, **kwargs, seed=seed, device="cpu")


def build(
    task: Task, method: str, seed: int, hyperparams: dict[str, Any], eval_every: int
) -> tuple[BaseAlgorithm, VecEnv, int, bool]:
    """The model, its eval env, its evaluation period and whether it evaluates between iterations."""
    if method in ("rpo", "shac"):
        model = make_diff_model(task, method, seed, hyperparams)
        steps_per_iteration = model.n_steps * model.n_envs
        period = max(1, round(eval_every / steps_per_iteration)) * steps_per_iteration
        return model, task.make_eval_env(seed), period, True
    kwargs, n_envs, normalize, _ = ppo_hyperparams(task)
    # As rl-zoo3: make_vec_env (Monitor + DummyVecEnv), VecNormalize if normalize, a 1-env eval env.
    env = make_vec_env(task.gym_env_id, n_envs=n_envs, seed=seed)
    eval_env = make_vec_env(task.gym_env_id, n_envs=1, seed=1000 + seed)
    if normalize:
        norm_kwargs = eval(normalize) if isinstance(normalize, str) else dict(normalize) if isinstance(normalize, dict) else {}
        if "gamma" in kwargs:  # rl-zoo3 gives VecNormalize the algorithm's discount
            norm_kwargs["gamma"] = kwargs["gamma"]
        env = VecNormalize(env, **norm_kwargs)
        eval_env = VecNormalize(eval_env, **{**norm_kwargs, "training": False, "norm_reward": False})
    return PPO(env=env, **kwargs, seed=seed, device="cpu"), eval_env, eval_every, False


def train_run(task: Task, method: str, seed: int, budget: int, hyperparams: dict[str, Any], eval_every: int) -> dict[str, Any]:
    model, eval_env, every, between_iterations = build(task, method, seed, hyperparams, eval_every)
    callback = PeriodicEval(eval_env, every, between_iterations, task.n_eval_episodes)
    begin = time.perf_counter()
    model.learn(budget, callback=callback)
    wall = time.perf_counter() - begin
    reached = None
    if task.threshold is not None:
        reached = next((record for record in callback.records if record["mean_return"] >= task.threshold), None)
    final = callback.records[-1]
    at_threshold = "" if task.threshold is None else f"threshold at {reached['steps'] if reached else None} steps, "
    print(
        f"{method} seed {seed}: {at_threshold}final {final['mean_return']:.1f} after {final['steps']} steps, "
        f"{wall:.0f} s ({callback.eval_seconds:.0f} s of evaluations)",
        flush=True,
    )
    return dict(
        seed=seed,
        steps_to_threshold=reached["steps"] if reached else None,
        time_to_threshold_s=reached["train_time_s"] if reached else None,
        final_return=final["mean_return"],
        final_steps=final["steps"],
        train_time_s=final["train_time_s"],
        evals=callback.records,
    )


# ---------------------------------------------------------------------------- time per iteration
class IterationTimer(BaseCallback):
    """Wall-clock time of each iteration (rollout start to the next) with RPO's logged time split."""

    def __init__(self):
        super().__init__()
        self.records: list[dict[str, float]] = []
        self.begin: float | None = None

    def _close_iteration(self) -> None:
        if self.begin is not None:
            # The values that train() logged stay in the logger until the next iteration dumps them.
            logged = self.model.logger.name_to_value
            self.records.append(
                dict(iteration=time.perf_counter() - self.begin, **{key: logged[f"time/{key}_s"] for key in TIME_KEYS})
            )
        self.begin = None

    def _on_rollout_start(self) -> None:
        self._close_iteration()
        self.begin = time.perf_counter()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self._close_iteration()


def time_iterations(task: Task, hyperparams: dict[str, Any], rounds: int, block: int = 5, warmup: int = 5) -> dict[str, Any]:
    """
    RPO and SHAC in one process, alternating blocks of ``block`` iterations (the order swapped every
    round) after ``warmup`` iterations each, so that machine noise hits both alike.
    """
    models = {name: make_diff_model(task, name, 0, hyperparams) for name in ("rpo", "shac")}
    timers = {name: IterationTimer() for name in models}
    for model in models.values():
        model.learn(warmup * model.n_steps * model.n_envs)
    for round_ in range(rounds):
        for name in ("rpo", "shac") if round_ % 2 == 0 else ("shac", "rpo"):
            model = models[name]
            model.learn(block * model.n_steps * model.n_envs, callback=timers[name], reset_num_timesteps=False)
    medians = {
        name: {key: float(np.median([record[key] for record in timer.records])) for key in ("iteration", *TIME_KEYS)}
        for name, timer in timers.items()
    }
    return dict(
        rounds=rounds,
        block=block,
        warmup=warmup,
        n_iterations=len(timers["rpo"].records),
        median_s=medians,
        ratio_rpo_shac=medians["rpo"]["iteration"] / medians["shac"]["iteration"],
        raw_s={name: timer.records for name, timer in timers.items()},
    )


# ---------------------------------------------------------------------------- report
def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    steps = [run["steps_to_threshold"] for run in runs if run["steps_to_threshold"] is not None]
    times = [run["time_to_threshold_s"] for run in runs if run["time_to_threshold_s"] is not None]
    finals = [run["final_return"] for run in runs]
    return dict(
        reached=len(steps),
        mean_steps=float(np.mean(steps)) if steps else None,
        mean_time_s=float(np.mean(times)) if times else None,
        final_mean=float(np.mean(finals)),
        final_std=float(np.std(finals)),
        mean_train_time_s=float(np.mean([run["train_time_s"] for run in runs])),
    )


def markdown_tables(task: Task, results: dict[str, Any]) -> str:
    if task.threshold is not None:
        threshold = f"{task.threshold:g}"
        lines = [
            f"| Method | Budget (env steps) | Env steps to {threshold}, per seed | Mean env steps to {threshold} "
            f"| Mean wall-clock to {threshold} (s) | Final return (mean ± std over seeds) |",
            "|---|---|---|---|---|---|",
        ]
    else:
        lines = [
            "| Method | Budget (env steps) | Final return, per seed | Final return (mean ± std over seeds) "
            "| Mean training wall-clock (s) |",
            "|---|---|---|---|---|",
        ]
    for method in METHODS:
        if method not in results["methods"]:
            continue
        entry = results["methods"][method]
        runs, summary = entry["runs"], summarize(entry["runs"])
        final = f"{summary['final_mean']:.1f} ± {summary['final_std']:.1f}"
        if task.threshold is None:
            per_seed = ", ".join(f"{run['final_return']:.1f}" for run in runs)
            lines.append(
                f"| {task.labels[method]} | {runs[0]['final_steps']:,} | {per_seed} | {final} "
                f"| {summary['mean_train_time_s']:.0f} |"
            )
            continue
        per_seed = ", ".join("never" if run["steps_to_threshold"] is None else str(run["steps_to_threshold"]) for run in runs)
        reached = "" if summary["reached"] == len(runs) else f" ({summary['reached']}/{len(runs)} seeds)"
        mean_steps = "—" if summary["mean_steps"] is None else f"{summary['mean_steps']:,.0f}{reached}"
        mean_time = "—" if summary["mean_time_s"] is None else f"{summary['mean_time_s']:.1f}{reached}"
        lines.append(
            f"| {task.labels[method]} | {runs[0]['final_steps']:,} | {per_seed} | {mean_steps} | {mean_time} | {final} |"
        )
    timing = results.get("timing")
    if timing:
        rpo, shac = timing["median_s"]["rpo"], timing["median_s"]["shac"]
        lines += [
            "",
            f"Median time per iteration ({timing['n_iterations']} iterations each, interleaved in one process):",
            "",
            "| | RPO (ms) | SHAC (ms) | RPO / SHAC |",
            "|---|---|---|---|",
        ]
        for key in ("iteration", *TIME_KEYS):
            name = "whole iteration" if key == "iteration" else key.replace("_", " ")
            ratio = rpo[key] / shac[key] if shac[key] > 0 else float("nan")
            lines.append(f"| {name} | {1e3 * rpo[key]:.1f} | {1e3 * shac[key]:.1f} | {ratio:.2f} |")
    return "\n".join(lines)


def plot(task: Task, results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=130)
    colors = {"rpo": "tab:blue", "shac": "tab:orange", "ppo": "tab:green"}
    for method in METHODS:
        if method not in results["methods"]:
            continue
        runs = results["methods"][method]["runs"]
        n_evals = min(len(run["evals"]) for run in runs)  # every seed of a method shares one grid
        steps = np.array([record["steps"] for record in runs[0]["evals"][:n_evals]])
        returns = np.array([[record["mean_return"] for record in run["evals"][:n_evals]] for run in runs])
        mean, std = returns.mean(0), returns.std(0)
        label = f"{task.labels[method]} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
        ax.plot(steps, mean, color=colors[method], label=label)
        ax.fill_between(steps, mean - std, mean + std, color=colors[method], alpha=0.2)
    if task.threshold is not None:
        ax.axhline(task.threshold, color="gray", linestyle="--", linewidth=1, label=f"threshold {task.threshold:g}")
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"eval return ({task.n_eval_episodes} deterministic episodes)")
    ax.set_title(task.plot_title)
    if task.plot_ylim is not None:
        ax.set_ylim(bottom=task.plot_ylim[0], top=task.plot_ylim[1])
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def merge_results(path: Path, update: dict[str, Any]) -> dict[str, Any]:
    """Merge this process's methods (and timing) into the JSON, under a lock: two processes may share it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text()) if path.exists() else {"methods": {}}
        results["methods"].update(update.pop("methods"))
        results.update(update)
        path.write_text(json.dumps(results, indent=1))
    path.with_suffix(".lock").unlink(missing_ok=True)
    return results


def machine() -> dict[str, Any]:
    git = ["git", "-C", str(REPO_ROOT)]
    revision = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    return dict(
        git_revision=revision + ("+uncommitted changes" if dirty.strip() else ""),
        platform=platform.platform(),
        processor=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        python=platform.python_version(),
        torch=th.__version__,
        torch_threads=th.get_num_threads(),
    )


# ---------------------------------------------------------------------------- command line
def main(task: Task, description: str | None = None) -> None:
    """The command line of a task script: train, merge into the task's JSON, print the tables, draw the plot."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds per method (0, 1, ...)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of rpo,shac,ppo")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results", help=f"folder of {task.name}.json")
    parser.add_argument("--plot", type=Path, default=REPO_ROOT / "docs" / "images" / f"{task.name}_curves.png")
    parser.add_argument(
        "--budget",
        type=int,
        default=None,
        help=f"env steps for every method (default: {task.budgets}; --quick: {task.quick_budgets})",
    )
    parser.add_argument("--timing-rounds", type=int, default=10, help="rounds of the RPO/SHAC timing (0 skips it)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, small budgets, 2 timing rounds")
    parser.add_argument("--report-only", action="store_true", help="only print the table and plot from the saved JSON")
    args = parser.parse_args()
    th.set_num_threads(1)  # every run, and the timing, on one thread
    results_path = args.out / f"{task.name}.json"

    if not args.report_only:
        methods = [method.strip() for method in args.methods.split(",") if method.strip()]
        assert set(methods) <= set(METHODS), f"--methods takes a subset of {METHODS}, got {methods}"
        seeds, budgets, rounds = (
            (1, task.quick_budgets, min(args.timing_rounds, 2))
            if args.quick
            else (args.seeds, task.budgets, args.timing_rounds)
        )
        if args.budget is not None:
            budgets = dict.fromkeys(METHODS, args.budget)
        eval_every = (task.quick_eval_every or task.eval_every) if args.quick else task.eval_every

        rpo_kwargs, rpo_source = diff_hyperparams(task, "rpo", task.rpo_fallback)
        if task.shac_from_rpo:
            shac_kwargs, shac_source = shac_ablation(rpo_kwargs), f"{rpo_source} without n_epochs"
        else:
            shac_kwargs, shac_source = diff_hyperparams(task, "shac", task.shac_fallback or task.rpo_fallback)
        ppo_kwargs, ppo_n_envs, ppo_normalize, ppo_source = ppo_hyperparams(task)
        hyperparams = {
            "rpo": rpo_kwargs,
            "shac": shac_kwargs,
            "ppo": dict(n_envs=ppo_n_envs, normalize=ppo_normalize, **ppo_kwargs),
        }
        sources = {"rpo": rpo_source, "shac": shac_source, "ppo": ppo_source}
        for method in METHODS:
            if sources[method].startswith("built-in fallback"):
                print(f"WARNING: {task.labels[method]} uses the {sources[method]}", file=sys.stderr)
            print(f"{task.labels[method]} hyperparameters from {sources[method]}: {hyperparams[method]}")

        command = "python " + " ".join(sys.argv)
        update: dict[str, Any] = {"methods": {}}
        for method in methods:
            runs = [train_run(task, method, seed, budgets[method], hyperparams, eval_every) for seed in range(seeds)]
            update["methods"][method] = dict(
                command=command,
                budget=budgets[method],
                hyperparams_source=sources[method],
                hyperparams=jsonable(hyperparams[method]),
                runs=runs,
            )
        if {"rpo", "shac"} <= set(methods) and rounds > 0:
            update["timing"] = dict(command=command, **time_iterations(task, hyperparams, rounds))
        update["protocol"] = dict(
            threshold=task.threshold,
            n_eval_episodes=task.n_eval_episodes,
            eval_every=eval_every,
            deterministic=True,
            quick=args.quick,
            **task.protocol_notes,
        )
        update["machine"] = machine()
        results = merge_results(results_path, update)
    else:
        results = json.loads(results_path.read_text())
    print(markdown_tables(task, results))
    plot(task, results, args.plot)
    print(f"results: {results_path}, plot: {args.plot}")
