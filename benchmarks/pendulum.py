"""
Pendulum benchmark (GitHub issue 3): RPO vs SHAC vs rl-zoo3's tuned PPO on (Diff)Pendulum.

Every method is evaluated with the same protocol: every ~2500 env steps (a whole number of iterations
for RPO/SHAC), 10 deterministic episodes on a separate eval env; a run "reaches the threshold" at its
first evaluation with mean return >= -200. RPO and SHAC train on DiffPendulum-v0 (exactly Pendulum-v1's
dynamics, reward and 200-step episodes), PPO on gymnasium's Pendulum-v1 with rl-zoo3's tuned
hyperparameters. A second part times RPO and SHAC iterations in one process, interleaved.

    python benchmarks/pendulum.py                        # 3 seeds, all methods, ~30 min on 2 cores
    python benchmarks/pendulum.py --methods ppo &        # or split over two processes ...
    python benchmarks/pendulum.py --methods rpo,shac     # ... (results are merged into one JSON)
    python benchmarks/pendulum.py --report-only          # table and plot from the saved JSON
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import subprocess
import sys
import time
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

from sb3_rpo import RPO, SHAC, make_diff_vec_env

REPO_ROOT = Path(__file__).resolve().parents[1]
DIFF_ENV_ID, GYM_ENV_ID = "DiffPendulum-v0", "Pendulum-v1"
THRESHOLD = -200.0
N_EVAL_EPISODES = 10
EVAL_EVERY = 2500
METHODS = ("rpo", "shac", "ppo")
LABELS = {"rpo": "RPO", "shac": "SHAC", "ppo": "PPO (rl-zoo3, gSDE)"}
BUDGETS = {"rpo": 60_000, "shac": 100_000, "ppo": 60_000}
QUICK_BUDGETS = {"rpo": 10_000, "shac": 10_000, "ppo": 8_192}
# The lead's tuned values, used when hyperparams/rpo.yml has no DiffPendulum-v0 entry.
RPO_FALLBACK: dict[str, Any] = dict(
    n_envs=16, n_steps=32, n_epochs=10, learning_rate=3e-3, policy_kwargs=dict(log_std_init=-0.5)
)
TIME_KEYS = ("forward", "backward", "policy_epochs", "critic")


# ---------------------------------------------------------------------------- hyperparameters
def linear_schedule(initial_value: float):
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
        kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"])
    return kwargs


def rpo_hyperparams() -> tuple[dict[str, Any], str]:
    """RPO's constructor kwargs (without env, seed and device) and where they come from."""
    path = REPO_ROOT / "hyperparams" / "rpo.yml"
    entry = zoo_entry(path, DIFF_ENV_ID)
    if entry is None:
        return dict(RPO_FALLBACK), "built-in fallback (no DiffPendulum-v0 entry in hyperparams/rpo.yml)"
    kwargs = _preprocess(entry, ("learning_rate", "critic_learning_rate"))
    kwargs.pop("n_timesteps", None)  # the benchmark's budgets apply
    kwargs.pop("policy", None)
    policy_kwargs = dict(kwargs.pop("policy_kwargs", None) or {})
    if "net_arch" in kwargs:
        policy_kwargs["net_arch"] = kwargs.pop("net_arch")
    if "normalize" in kwargs:  # RPO normalizes observations inside the graph, never with a VecNormalize
        policy_kwargs["normalize_obs"] = bool(kwargs.pop("normalize"))
    kwargs["policy_kwargs"] = policy_kwargs
    return kwargs, f"hyperparams/rpo.yml[{DIFF_ENV_ID}]"


def shac_hyperparams(rpo_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The ablation: RPO's settings with one epoch on the whole window, no clip band and no KL."""
    dropped = ("n_epochs", "batch_size", "kl_coef", "clip_low", "clip_high")
    return {key: value for key, value in rpo_kwargs.items() if key not in dropped}


def ppo_hyperparams() -> tuple[dict[str, Any], int, Any, str]:
    """rl-zoo3's tuned PPO for Pendulum-v1: (constructor kwargs, n_envs, normalize setting, source)."""
    import rl_zoo3

    path = Path(rl_zoo3.__file__).parent / "hyperparams" / "ppo.yml"
    entry = zoo_entry(path, GYM_ENV_ID)
    assert entry is not None, f"rl-zoo3 has no {GYM_ENV_ID} entry in {path}"
    unsupported = {"frame_stack", "env_wrapper", "callback", "vec_env_wrapper", "env_kwargs"} & entry.keys()
    assert not unsupported, f"rl-zoo3 keys not replicated here: {unsupported}"
    kwargs = _preprocess(entry, ("learning_rate", "clip_range", "clip_range_vf"))
    n_envs = kwargs.pop("n_envs", 1)
    normalize = kwargs.pop("normalize", False)
    kwargs.pop("n_timesteps")
    return kwargs, n_envs, normalize, f"rl_zoo3 {rl_zoo3.__version__} hyperparams/ppo.yml[{GYM_ENV_ID}]"


def jsonable(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value if isinstance(value, (int, float, str, bool, dict, list, type(None))) else repr(value)
        for key, value in kwargs.items()
    }


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
    """

    def __init__(self, eval_env: VecEnv, every: int, between_iterations: bool):
        super().__init__()
        self.eval_env = eval_env
        self.every = every
        self.between_iterations = between_iterations
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
            self.model, self.eval_env, n_eval_episodes=N_EVAL_EPISODES, deterministic=True, return_episode_rewards=True
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


def build(method: str, seed: int, hyperparams: dict[str, Any]) -> tuple[BaseAlgorithm, VecEnv, int, bool]:
    """The model, its eval env, its evaluation period and whether it evaluates between iterations."""
    if method in ("rpo", "shac"):
        algo = RPO if method == "rpo" else SHAC
        model = algo("MlpPolicy", DIFF_ENV_ID, **hyperparams[method], seed=seed, device="cpu")
        eval_env = make_diff_vec_env(DIFF_ENV_ID, n_envs=N_EVAL_EPISODES, seed=1000 + seed)
        steps_per_iteration = model.n_steps * model.n_envs
        return model, eval_env, max(1, round(EVAL_EVERY / steps_per_iteration)) * steps_per_iteration, True
    kwargs, n_envs, normalize, _ = ppo_hyperparams()
    # As rl-zoo3: make_vec_env (Monitor + DummyVecEnv), VecNormalize if normalize, a 1-env eval env.
    env, eval_env = make_vec_env(GYM_ENV_ID, n_envs=n_envs, seed=seed), make_vec_env(GYM_ENV_ID, n_envs=1, seed=1000 + seed)
    if normalize:
        norm_kwargs = eval(normalize) if isinstance(normalize, str) else {}
        env = VecNormalize(env, **norm_kwargs)
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False, **norm_kwargs)
    return PPO(env=env, **kwargs, seed=seed, device="cpu"), eval_env, EVAL_EVERY, False


def train_run(method: str, seed: int, budget: int, hyperparams: dict[str, Any]) -> dict[str, Any]:
    model, eval_env, every, between_iterations = build(method, seed, hyperparams)
    callback = PeriodicEval(eval_env, every, between_iterations)
    begin = time.perf_counter()
    model.learn(budget, callback=callback)
    wall = time.perf_counter() - begin
    reached = next((record for record in callback.records if record["mean_return"] >= THRESHOLD), None)
    final = callback.records[-1]
    print(
        f"{method} seed {seed}: threshold at {reached['steps'] if reached else None} steps, final {final['mean_return']:.1f} "
        f"after {final['steps']} steps, {wall:.0f} s ({callback.eval_seconds:.0f} s of evaluations)",
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


def time_iterations(hyperparams: dict[str, Any], rounds: int, block: int = 5, warmup: int = 5) -> dict[str, Any]:
    """
    RPO and SHAC in one process, alternating blocks of ``block`` iterations (the order swapped every
    round) after ``warmup`` iterations each, so that machine noise hits both alike.
    """
    models = {
        name: algo("MlpPolicy", DIFF_ENV_ID, **hyperparams[name], seed=0, device="cpu")
        for name, algo in (("rpo", RPO), ("shac", SHAC))
    }
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
    )


def markdown_tables(results: dict[str, Any]) -> str:
    lines = [
        "| Method | Budget (env steps) | Env steps to -200, per seed | Mean env steps to -200 | Mean wall-clock to -200 (s) "
        "| Final return (mean ± std over seeds) |",
        "|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        if method not in results["methods"]:
            continue
        entry = results["methods"][method]
        runs, summary = entry["runs"], summarize(entry["runs"])
        per_seed = ", ".join("never" if run["steps_to_threshold"] is None else str(run["steps_to_threshold"]) for run in runs)
        reached = "" if summary["reached"] == len(runs) else f" ({summary['reached']}/{len(runs)} seeds)"
        mean_steps = "—" if summary["mean_steps"] is None else f"{summary['mean_steps']:,.0f}{reached}"
        mean_time = "—" if summary["mean_time_s"] is None else f"{summary['mean_time_s']:.1f}{reached}"
        lines.append(
            f"| {LABELS[method]} | {runs[0]['final_steps']:,} | {per_seed} | {mean_steps} | {mean_time} "
            f"| {summary['final_mean']:.1f} ± {summary['final_std']:.1f} |"
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


def plot(results: dict[str, Any], path: Path) -> None:
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
        ax.plot(steps, mean, color=colors[method], label=f"{LABELS[method]} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
        ax.fill_between(steps, mean - std, mean + std, color=colors[method], alpha=0.2)
    ax.axhline(THRESHOLD, color="gray", linestyle="--", linewidth=1, label="threshold -200")
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"eval return ({N_EVAL_EPISODES} deterministic episodes)")
    ax.set_title("Pendulum-v1 (DiffPendulum-v0 for RPO/SHAC): mean ± std over seeds")
    ax.set_ylim(bottom=-1700, top=0)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds per method (0, 1, ...)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of rpo,shac,ppo")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results", help="folder of pendulum.json")
    parser.add_argument("--plot", type=Path, default=REPO_ROOT / "docs" / "images" / "pendulum_curves.png")
    parser.add_argument("--timing-rounds", type=int, default=10, help="rounds of the RPO/SHAC timing (0 skips it)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, small budgets, 2 timing rounds")
    parser.add_argument("--report-only", action="store_true", help="only print the table and plot from the saved JSON")
    args = parser.parse_args()
    th.set_num_threads(1)  # every run, and the timing, on one thread
    results_path = args.out / "pendulum.json"

    if not args.report_only:
        methods = [method.strip() for method in args.methods.split(",") if method.strip()]
        assert set(methods) <= set(METHODS), f"--methods takes a subset of {METHODS}, got {methods}"
        seeds, budgets, rounds = (
            (1, QUICK_BUDGETS, min(args.timing_rounds, 2)) if args.quick else (args.seeds, BUDGETS, args.timing_rounds)
        )
        rpo_kwargs, source = rpo_hyperparams()
        hyperparams = {"rpo": rpo_kwargs, "shac": shac_hyperparams(rpo_kwargs)}
        ppo_kwargs, ppo_n_envs, ppo_normalize, ppo_source = ppo_hyperparams()
        print(f"RPO hyperparameters from {source}: {rpo_kwargs}")
        print(f"SHAC hyperparameters (RPO's without n_epochs): {hyperparams['shac']}")
        print(f"PPO hyperparameters from {ppo_source}: n_envs={ppo_n_envs}, normalize={ppo_normalize}, {ppo_kwargs}")
        sources = {"rpo": source, "shac": f"{source} without n_epochs", "ppo": ppo_source}
        hyperparams["ppo"] = dict(n_envs=ppo_n_envs, normalize=ppo_normalize, **ppo_kwargs)

        command = "python " + " ".join(sys.argv)
        update: dict[str, Any] = {"methods": {}}
        for method in methods:
            runs = [train_run(method, seed, budgets[method], hyperparams) for seed in range(seeds)]
            update["methods"][method] = dict(
                command=command,
                budget=budgets[method],
                hyperparams_source=sources[method],
                hyperparams=jsonable(hyperparams[method]),
                runs=runs,
            )
        if {"rpo", "shac"} <= set(methods) and rounds > 0:
            update["timing"] = dict(command=command, **time_iterations(hyperparams, rounds))
        update["protocol"] = dict(
            threshold=THRESHOLD, n_eval_episodes=N_EVAL_EPISODES, eval_every=EVAL_EVERY, deterministic=True, quick=args.quick
        )
        update["machine"] = machine()
        results = merge_results(results_path, update)
    else:
        results = json.loads(results_path.read_text())
    print(markdown_tables(results))
    plot(results, args.plot)
    print(f"results: {results_path}, plot: {args.plot}")


if __name__ == "__main__":
    main()
