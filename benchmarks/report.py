"""
The report: ``benchmarks/results/runs.csv`` and docs/benchmarks.md with its figures, rebuilt from the result files
alone (``python -m benchmarks report``).

Statistics follow Agarwal et al. (NeurIPS 2021) with their ``rliable`` package: per task, mean +- std, median and
min of the final return over seeds; across tasks, the interquartile mean (IQM) of normalized final scores with 95%
stratified-bootstrap confidence intervals, the probability of improvement of the study's reference method over each
other method, performance profiles; learning curves with 95% bootstrap bands of the mean over seeds. Every bootstrap
is seeded, so the page is the same for the same result files.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.docs_tables import write_between
from benchmarks.runner import RESULTS_DIR, Run, finished_runs, planned_runs, stale_runs
from benchmarks.study import Method, Study, Task, load_study, study_names

CSV_COLUMNS = (
    "study",
    "task",
    "method",
    "algo",
    "seed",
    "budget",
    "final_steps",
    "final_return",
    "best_return",
    "threshold",
    "steps_to_threshold",
    "seconds_to_threshold",
    "train_seconds",
    "train_cpu_seconds",
    "wall_seconds",
    "hyperparams_source",
    "commit",
)
MODEL_FREE = ("ppo", "sac", "tqc", "crossq")
ALGORITHM_PAGES = ("rpo", "shac", "sapo")  # docs/<algo>.md with a generated block of the shipped entry's results
COMMAND = "python -m benchmarks report"
SUMMARY_STUDY = "embedded"  # the study of README.md's generated table
ORDER = ("embedded", "mujoco", "rewarped", "mjx", "ablations", "sweeps", "tuning", "cartpole_screen", "timing", "probe")


# ---------------------------------------------------------------------------- result files
def load_results(results: Path = RESULTS_DIR) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every training run's and every timing's result file under ``results``."""
    runs, timings = [], []
    for path in sorted(results.glob("*/*/**/*.json")):
        content = json.loads(path.read_text())
        (timings if content.get("kind") == "timing" else runs).append(content)
    return runs, timings


def write_csv(runs: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(runs, key=lambda run: (run["study"], run["task"], run["method"], run["seed"]))
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for run in rows:
            writer.writerow({key: "" if run.get(key) is None else run[key] for key in CSV_COLUMNS})


# ---------------------------------------------------------------------------- statistics
def bootstrap(score_dict: dict[str, Any], func: Any, reps: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable's stratified-bootstrap interval estimates, seeded (rliable draws from numpy's global generator)."""
    from rliable import library as rly

    np.random.seed(0)
    return rly.get_interval_estimates(score_dict, func, reps=reps)


def steps_or_inf(run: dict[str, Any]) -> float:
    return math.inf if run["steps_to_threshold"] is None else run["steps_to_threshold"]


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "never"
    return f"{value:,.{digits}f}"


def median_steps(runs: list[dict[str, Any]]) -> float:
    """Median env steps to the threshold, a run that never reached it counting as infinitely many."""
    return float(np.median([steps_or_inf(run) for run in runs]))


def median_seconds(runs: list[dict[str, Any]]) -> float:
    """Median training seconds to the threshold, a run that never reached it counting as infinitely many."""
    return float(np.median([math.inf if r["seconds_to_threshold"] is None else r["seconds_to_threshold"] for r in runs]))


def common_seeds(by_task: dict[str, list[dict[str, Any]]]) -> list[int]:
    """Seeds that every task has (rliable's arrays are runs x tasks)."""
    sets = [{run["seed"] for run in runs} for runs in by_task.values()]
    return sorted(set.intersection(*sets)) if sets else []


# ---------------------------------------------------------------------------- figures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves_figure(
    task: Task, by_method: dict[str, list[dict[str, Any]]], labels: dict[str, str], path: Path, reps: int
) -> None:
    """Eval return against env steps per method: mean over seeds with a 95% bootstrap band (rliable)."""
    from rliable import metrics

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    frames, points, intervals = {}, {}, {}
    for method, runs in by_method.items():
        end = min(run["evals"][-1]["steps"] for run in runs)
        grid = np.arange(task.eval_every, end + 1, task.eval_every, dtype=float)
        if len(grid) == 0:
            continue
        # Each run's returns on a common grid (the methods' evaluation steps differ by less than one period).
        scores = np.array(
            [np.interp(grid, [e["steps"] for e in run["evals"]], [e["mean_return"] for e in run["evals"]]) for run in runs]
        )[:, None, :]
        point, interval = bootstrap(
            {method: scores},
            lambda s: np.array([metrics.aggregate_mean(s[..., i]) for i in range(s.shape[-1])]),
            reps,
        )
        frames[method], points[method], intervals[method] = grid, point[method], interval[method]
    for index, method in enumerate(frames):
        color = f"C{index}"
        ax.plot(frames[method], points[method], color=color, label=f"{labels[method]} ({len(by_method[method])} seeds)")
        ax.fill_between(frames[method], intervals[method][0], intervals[method][1], color=color, alpha=0.2, linewidth=0)
    if task.threshold is not None:
        ax.axhline(task.threshold, color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"eval return ({task.n_eval_episodes} deterministic episodes)")
    ax.set_title(f"{task.name}: mean over seeds, 95% bootstrap CI (rliable)", fontsize="medium")
    ax.grid(alpha=0.3)
    if frames:
        ax.legend(fontsize="small", loc="best")
    _save(fig, path)


def _save(fig: Any, path: Path, tight: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:  # rliable's interval plot lays itself out
        fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    _pyplot().close(fig)


# ---------------------------------------------------------------------------- page sections
def protocol_table(study: Study) -> list[str]:
    lines = [
        "| task | gradient methods train on | model-free methods train on | everyone evaluated on | budget (env steps) "
        "| eval every | episodes | threshold | random | reference | normalization from | rl-zoo3 entries |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for task in study.tasks:
        budgets = f"{task.budget:,}" + "".join(f", {name} {value:,}" for name, value in task.budgets.items())
        zoo = ", ".join(f"{algo}: `{entry}`" for algo, entry in task.zoo_ids.items()) or f"`{task.gym_env_id}`"
        if task.zoo_notes:
            zoo += f" ({task.zoo_notes})"
        lines.append(
            f"| {task.name} | `{task.diff_env_id}` | `{task.gym_env_id}` | `{task.eval_id}` | {budgets} | {task.eval_every:,} "
            f"| {task.n_eval_episodes} | {fmt(task.threshold)} | {fmt(task.random_score)} | {fmt(task.reference_score)} "
            f"| {task.normalization_source or '—'} | {zoo} |"
        )
    return lines


def relapse_fraction(runs: list[dict[str, Any]], threshold: float) -> float | None:
    """Of the evaluations after a run first reached the threshold, the fraction below it again (pooled over the runs
    that reached it; None when none did): how well a method keeps what it learned."""
    later = []
    for run in runs:
        returns = [record["mean_return"] for record in run["evals"]]
        first = next((i for i, value in enumerate(returns) if value >= threshold), None)
        if first is not None:
            later += [value < threshold for value in returns[first + 1 :]]
    return float(np.mean(later)) if later else None


def summary_header(first: str, task: Task) -> list[str]:
    """The header of a table of :func:`summary_cells` rows, headed ``first``."""
    reach = task.threshold is not None
    header = f"| {first} | seeds | final return: mean ± std | median | min | best eval (mean) "
    header += "| reached | env steps to threshold: median (min-max) | train s to threshold (median) " if reach else ""
    header += "| later evals below threshold " if reach else ""
    header += "| train s (mean) | hyperparameters |"
    return [header, "|---|---:|---:|---:|---:|---:|" + ("---:|---:|---:|---:|" if reach else "") + "---:|---|"]


def summary_cells(task: Task, method: Method, runs: list[dict[str, Any]]) -> str:
    """One method's runs on one task as the cells of a table row after its first: the per-task statistics, and the
    entry the study resolves today (which the runs ran with, else they would be stale; runs of a method that cannot
    run here are not checked) with the names the runs recorded where they differ (a tuned entry took the name of the
    one it replaced)."""
    from benchmarks.methods import hyperparams

    finals = np.array([run["final_return"] for run in runs])
    row = (
        f"| {len(runs)} | {finals.mean():.1f} ± {finals.std():.1f} | {np.median(finals):.1f} "
        f"| {finals.min():.1f} | {np.mean([run['best_return'] for run in runs]):.1f} "
    )
    if task.threshold is not None:
        steps = [steps_or_inf(run) for run in runs]
        reached = [run for run in runs if run["steps_to_threshold"] is not None]
        span = f" ({fmt(min(steps), 0)}-{fmt(max(steps), 0)})" if reached else ""
        seconds = [run["seconds_to_threshold"] if run["seconds_to_threshold"] is not None else math.inf for run in runs]
        row += f"| {len(reached)}/{len(runs)} | {fmt(median_steps(runs), 0)}{span} | {fmt(float(np.median(seconds)))} "
        relapse = relapse_fraction(runs, task.threshold)
        row += f"| {'—' if relapse is None else f'{relapse:.0%}'} "
    source = hyperparams(task, method)[1]
    renamed = sorted({run["hyperparams_source"] for run in runs} - {source})
    source += f" (recorded as {'; '.join(renamed)})" if renamed else ""
    return row + f"| {np.mean([run['train_seconds'] for run in runs]):.0f} | {source} |"


def task_table(task: Task, study: Study, by_method: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = summary_header("method", task)
    for method in study.methods:
        runs = by_method.get(method.name)
        if runs:
            lines.append(f"| {method.display} " + summary_cells(task, method, runs))
    return lines


def aggregate_section(
    study: Study, results: dict[str, dict[str, list[dict[str, Any]]]], images: Path, page_dir: Path, reps: int
) -> list[str]:
    """IQM with CIs, probability of improvement and performance profiles over the normalized tasks."""
    from rliable import library as rly
    from rliable import metrics, plot_utils

    tasks = [task for task in study.tasks if task.normalized and task.name in results]
    methods = [m for m in study.methods if all(results[t.name].get(m.name) for t in tasks)]
    if not tasks or len(methods) < 2:
        return ["*Aggregate: needs at least two methods with runs on the same normalized tasks.*", ""]
    scores, seeds_used = {}, {}
    for method in methods:
        by_task = {task.name: results[task.name][method.name] for task in tasks}
        seeds = common_seeds(by_task)
        if not seeds:
            continue
        seeds_used[method.name] = len(seeds)
        scores[method.name] = np.array(
            [
                [task.normalize(next(r for r in by_task[task.name] if r["seed"] == s)["final_return"]) for task in tasks]
                for s in seeds
            ]
        )
    labels = {m.name: m.display for m in methods if m.name in scores}
    lines = [
        f"Normalized final return `(score - random) / (reference - random)` over {len(tasks)} task(s) "
        f"({', '.join(task.name for task in tasks)}), seeds common to every task; 95% stratified-bootstrap CIs, {reps} "
        "replications (rliable).",
        "",
        "| method | runs per task | IQM [95% CI] | mean [95% CI] | median [95% CI] |",
        "|---|---:|---:|---:|---:|",
    ]
    funcs = dict(
        iqm=lambda s: np.array([metrics.aggregate_iqm(s)]),
        mean=lambda s: np.array([metrics.aggregate_mean(s)]),
        median=lambda s: np.array([metrics.aggregate_median(s)]),
    )
    estimates = {name: bootstrap(scores, func, reps) for name, func in funcs.items()}
    for method in scores:
        cells = []
        for name in funcs:
            point, interval = estimates[name][0][method][0], estimates[name][1][method][:, 0]
            cells.append(f"{point:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]")
        lines.append(f"| {labels[method]} | {seeds_used[method]} | {' | '.join(cells)} |")
    lines.append("")

    # Interval plot (IQM, mean, median)
    joint = (
        {labels[m]: np.array([estimates[n][0][m][0] for n in funcs]) for m in scores},
        {labels[m]: np.stack([estimates[n][1][m][:, 0] for n in funcs], axis=1) for m in scores},
    )
    fig, _ = plot_utils.plot_interval_estimates(
        joint[0], joint[1], metric_names=["IQM", "Mean", "Median"], algorithms=list(joint[0]), xlabel="normalized score"
    )
    _save(fig, images / f"{study.name}_aggregate.png", tight=False)
    lines += [f"![aggregate]({_rel(images / f'{study.name}_aggregate.png', page_dir)})", ""]

    reference = study.reference_method
    if reference in scores:
        pairs = {f"{reference},{m}": (scores[reference], scores[m]) for m in scores if m != reference}
        if pairs:
            point, interval = bootstrap(pairs, metrics.probability_of_improvement, reps)
            lines += [
                f"Probability of improvement of {labels[reference]} over each method (P(X > Y), Mann-Whitney per task, "
                "averaged over tasks; 95% CI):",
                "",
                "| over | P(improvement) [95% CI] |",
                "|---|---:|",
            ]
            for key in pairs:
                low, high = np.ravel(interval[key])
                lines.append(f"| {labels[key.split(',')[1]]} | {float(point[key]):.2f} [{low:.2f}, {high:.2f}] |")
            lines.append("")

    taus = np.linspace(-0.25, 1.5, 71)
    np.random.seed(0)
    profiles, profile_cis = rly.create_performance_profile(
        {labels[m]: s for m, s in scores.items()}, taus, reps=max(reps // 10, 10)
    )
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    plot_utils.plot_performance_profiles(
        profiles, taus, performance_profile_cis=profile_cis, ax=ax, xlabel=r"normalized score $\tau$", labelsize="medium"
    )
    ax.legend(list(profiles), fontsize="small", loc="upper right")
    _save(fig, images / f"{study.name}_profiles.png")
    lines += [
        "Performance profiles (fraction of runs whose normalized final score exceeds τ, 95% CIs):",
        "",
        f"![performance profiles]({_rel(images / f'{study.name}_profiles.png', page_dir)})",
        "",
    ]
    return lines


def algorithm_results(algo: str, studies: list[Study], grouped: dict[str, Any], page: Path) -> list[str]:
    """The shipped entry's results in every comparison study, a row per task (evaluation seeds; a run reused from
    another study is shown where it was made): the generated block of ``docs/<algo>.md``."""
    lines = []
    for study in studies:
        method = next((m for m in study.methods if m.algo == algo and not m.overrides), None)
        if study.kind != "comparison" or study.tuning or method is None:
            continue
        rows: list[str] = []
        reach = None
        for task in study.tasks:
            by_method = grouped.get(study.name, {}).get(task.name, {})
            runs = [run for run in by_method.get(method.name, []) if "reused_from" not in run]
            if not runs:
                continue
            if reach != (task.threshold is not None):  # a new header where the threshold columns come or go
                reach = task.threshold is not None
                rows += ([""] if rows else []) + summary_header("task", task)
            rows.append(f"| {task.name} " + summary_cells(task, method, runs))
        if rows:
            command = f"python -m benchmarks run --study {study.name} --methods {method.name}"
            lines += [f"**{study.title}** ([{page.name}#{study.name}]({page.name}#{study.name}), `{command}`):", "", *rows, ""]
    return lines or ["*No run of the shipped entry has finished yet.*"]


def summary_table(study: Study, results: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    """README.md's table: per task and method, the median env steps and training seconds to the threshold and the
    seeds that reached it."""
    methods = [m for m in study.methods if any(results.get(task.name, {}).get(m.name) for task in study.tasks)]
    lines = ["| task (threshold) | " + " | ".join(m.display for m in methods) + " |", "|---|" + "---:|" * len(methods)]
    for task in study.tasks:
        by_method = results.get(task.name, {})
        if task.threshold is None or not by_method:
            continue
        cells = []
        for method in methods:
            runs = by_method.get(method.name, [])
            if not runs:
                cells.append("—")
                continue
            reached = sum(run["steps_to_threshold"] is not None for run in runs)
            steps = median_steps(runs)  # never reached by the median run: nor in seconds, the same runs being infinite
            median = "never" if math.isinf(steps) else f"{fmt(steps, 0)} steps, {fmt(median_seconds(runs))} s"
            cells.append(f"{median} ({reached}/{len(runs)})")
        lines.append(f"| {task.name} ({fmt(task.threshold, 0)}) | " + " | ".join(cells) + " |")
    return lines


def seeds_text(count: int) -> str:
    return f"{count} seed" + ("" if count == 1 else "s")


def verdict(rpo: float, other: float, periods: tuple[int, int] | None = None) -> str:
    """
    Whether RPO needs less (of env steps, seconds) than ``other``; infinite is never reached.

    :param periods: The evaluation periods in env steps of RPO's runs and of the other's (a gradient method's is a
        whole number of iterations, the one nearest the task's period): two medians at the same evaluation (the
        k-th of each run) are a tie, not a verdict
    """
    if math.isinf(rpo) and math.isinf(other):
        return "neither reached it"
    if periods and not math.isinf(rpo + other) and (k := rpo // periods[0]) == other // periods[1]:
        return f"tied, the same evaluation (number {int(k)}, every {periods[1]:,} env steps)"
    return "met" if rpo < other else "missed"


def seeds_verdict(rpo: list[dict[str, Any]], study: Study) -> str:
    """The >= 90%-of-seeds aim: missed once too many runs failed, met only when every planned seed has run."""
    planned = len(study.seeds)
    failed = sum(run["steps_to_threshold"] is None for run in rpo)
    if failed > planned - math.ceil(0.9 * planned):
        return "missed"
    return "met" if len(rpo) >= planned else f"open ({len(rpo)} of {planned} seeds run)"


def aims_section(study: Study, results: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    """The issue's aims, per task, measured on what has run."""
    lines = [
        "| task | RPO / SHAC median env steps to threshold (aim ≤ 0.25) | RPO vs best model-free, median env steps "
        "| RPO vs best model-free, median train s to threshold | RPO seeds reaching threshold (aim ≥ 9/10) |",
        "|---|---:|---:|---:|---:|",
    ]
    for task in study.tasks:
        by_method = results.get(task.name, {})
        rpo = by_method.get("rpo")
        if task.threshold is None or not rpo:
            continue
        rpo_steps = median_steps(rpo)
        shac = by_method.get("shac")
        ratio = "—"
        if shac:
            shac_steps = median_steps(shac)
            if math.isinf(shac_steps):
                ratio = "neither reached it" if math.isinf(rpo_steps) else f"SHAC never ({fmt(rpo_steps, 0)} / never)"
            else:
                ratio = f"{fmt(rpo_steps / shac_steps, 2)} ({fmt(rpo_steps, 0)} / {fmt(shac_steps, 0)}): "
                ratio += "met" if rpo_steps / shac_steps <= 0.25 else "missed"
        model_free = {m: by_method[m] for m in MODEL_FREE if by_method.get(m)}
        steps_cell = seconds_cell = "no model-free runs yet"
        if model_free:
            best = min(model_free, key=lambda m: median_steps(model_free[m]))
            best_steps = median_steps(model_free[best])
            steps_verdict = verdict(rpo_steps, best_steps, (rpo[0]["eval_every"], model_free[best][0]["eval_every"]))
            steps_cell = (
                f"{fmt(rpo_steps, 0)} vs {best} {fmt(best_steps, 0)} ({seeds_text(len(model_free[best]))}): {steps_verdict}"
            )

            fastest = min(model_free, key=lambda m: median_seconds(model_free[m]))
            rpo_s, best_s = median_seconds(rpo), median_seconds(model_free[fastest])
            seconds_cell = f"{fmt(rpo_s)} vs {fastest} {fmt(best_s)} ({seeds_text(len(model_free[fastest]))}): "
            seconds_cell += verdict(rpo_s, best_s)
            if len(model_free) < len(MODEL_FREE):
                missing = ", ".join(m for m in MODEL_FREE if m not in model_free)
                steps_cell += f"; not yet run: {missing}"
                seconds_cell += f"; not yet run: {missing}"
        seeds_cell = f"{sum(run['steps_to_threshold'] is not None for run in rpo)}/{len(rpo)} " + seeds_verdict(rpo, study)
        lines.append(f"| {task.name} | {ratio} | {steps_cell} | {seconds_cell} | {seeds_cell} |")
    return lines if len(lines) > 2 else []


def heatmap_section(
    study: Study, results: dict[str, dict[str, list[dict[str, Any]]]], images: Path, page_dir: Path
) -> list[str]:
    plt = _pyplot()
    lines = []
    for heatmap in study.heatmaps:
        methods = [m for m in study.methods if set(m.grid) == {heatmap.x, heatmap.y}]
        xs = sorted({m.grid[heatmap.x] for m in methods})
        ys = sorted({m.grid[heatmap.y] for m in methods})
        for task in study.tasks:
            by_method = results.get(task.name, {})
            if not any(by_method.get(m.name) for m in methods):
                continue
            panels = {
                "median env steps to threshold": np.full((len(ys), len(xs)), np.nan),
                "mean final return": np.full((len(ys), len(xs)), np.nan),
            }
            for m in methods:
                runs = by_method.get(m.name)
                if runs:
                    i, j = ys.index(m.grid[heatmap.y]), xs.index(m.grid[heatmap.x])
                    panels["median env steps to threshold"][i, j] = (
                        median_steps(runs) if task.threshold is not None else np.nan
                    )
                    panels["mean final return"][i, j] = np.mean([r["final_return"] for r in runs])
            fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
            for ax, (title, values) in zip(axes, panels.items(), strict=True):
                shown = np.where(np.isinf(values), np.nan, values)
                image = ax.imshow(shown, origin="lower", cmap="viridis_r" if "steps" in title else "viridis", aspect="auto")
                # returns of a few units (Reacher's) as the tables show them, not rounded to one value
                digits = 0 if "steps" in title or np.nanmax(np.abs(shown), initial=0.0) >= 100 else 1
                for (i, j), value in np.ndenumerate(values):
                    # black on the colormap's light end and on the cells not drawn ("never", missing), else white
                    red, green, blue, _ = image.cmap(image.norm(value)) if np.isfinite(value) else (1.0, 1.0, 1.0, 1.0)
                    color = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
                    ax.text(j, i, fmt(value, digits), ha="center", va="center", fontsize="small", color=color)
                ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
                ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
                ax.set_xlabel(heatmap.x)
                ax.set_ylabel(heatmap.y)
                ax.set_title(f"{task.name}: {title}", fontsize="medium")
                fig.colorbar(image, ax=ax)
            name = f"{study.name}_{task.name}_{heatmap.x}_{heatmap.y}.png"
            _save(fig, images / name)
            lines += [f"![{heatmap.x} x {heatmap.y} on {task.name}]({_rel(images / name, page_dir)})", ""]
    return lines


def timing_section(study: Study, timings: list[dict[str, Any]]) -> list[str]:
    keys = ("iteration", "forward", "backward", "policy_epochs", "critic")
    lines = []
    for task in study.tasks:
        timing = next((t for t in timings if t["task"] == task.name), None)
        if timing is None:
            continue
        medians = timing["median_seconds"]
        base = medians.get("rpo", next(iter(medians.values())))["iteration"]
        lines += [
            f"**{task.name}** ({timing['rounds']} rounds of blocks of {timing['block']} iterations after {timing['warmup']} "
            f"warm-up ones; commit `{timing['commit']}`; median ms):",
            "",
            "| method | env steps per iteration | " + " | ".join(k.replace("_", " ") for k in keys) + " | iteration / RPO's |",
            "|---|---:|" + "---:|" * len(keys) + "---:|",
        ]
        for name, values in medians.items():
            cells = " | ".join(f"{1e3 * values[k]:.1f}" for k in keys)
            lines.append(f"| {name} | {timing['steps_per_iteration'][name]} | {cells} | {values['iteration'] / base:.2f} |")
        lines.append("")
    return lines


def _rel(path: Path, page_dir: Path) -> str:
    return Path(os.path.relpath(path.resolve(), page_dir.resolve())).as_posix()


# ---------------------------------------------------------------------------- cost
def seconds_per_run(run: dict[str, Any], budget: int, eval_every: int) -> float:
    """
    Predicted core-seconds of a run of ``budget`` env steps from a finished run of the same method and env: its CPU
    time per env step in the second half of its evaluations (the steady state, after learning_starts and the first
    iterations) plus its CPU time per evaluation (wall-clock for result files without CPU times).
    """
    evals = run["evals"]
    key, eval_key = (
        ("train_cpu_seconds", "eval_cpu_seconds") if "eval_cpu_seconds" in run else ("train_seconds", "eval_seconds")
    )
    half = evals[len(evals) // 2] if len(evals) > 2 else evals[0]
    last = evals[-1]
    if last["steps"] > half["steps"]:
        rate = (last[key] - half[key]) / (last["steps"] - half["steps"])
    else:
        rate = last[key] / last["steps"]
    return rate * budget + run[eval_key] / len(evals) * (budget / eval_every + 1)


def estimate_rows(
    results: Path, finished: list[dict[str, Any]], names: list[str], per_method: dict[tuple[str, str], float] | None = None
) -> list[tuple[str, int, int, float, float, float, int]]:
    """
    Per study: (name, runs, finished, core-hours its finished runs took (those it made, not those it reused),
    core-hours of the unfinished runs measured on their own training env, core-hours of those measured only on
    another task of the study (same algorithm), unfinished runs with no measurement).
    SAPO, until it exists, is costed as SHAC (the same update plus an entropy term). ``per_method`` receives the
    core-hours (measured or by analogy) per (study, algorithm).

    :param finished: The finished runs' result files under ``results`` (:func:`load_results`)
    """
    from benchmarks.methods import hyperparams, unavailable

    measured: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    # the cost per env step depends on the entry (n_envs, n_steps, epochs, widths): its own runs predict it best
    measured_entry: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    spent: dict[str, float] = defaultdict(float)
    sources: dict[tuple[str, str], str | None] = {}  # the entry of each pending (task, method), read once
    for run in finished:
        measured[(run["train_env_id"], run["algo"])].append(run)
        measured_entry[(run["train_env_id"], run["algo"], run["hyperparams_source"])].append(run)
        if "reused_from" not in run:
            spent[run["study"]] += run["wall_seconds"] / 3600
    rows = []
    for name in names:
        study = load_study(name)
        if study.kind != "comparison" or name == "smoke":
            continue
        runs = planned_runs(study)
        done = finished_runs(study, runs, results)
        pending = [run for run in runs if run not in done]
        seconds, analogy, unmeasured = 0.0, 0.0, 0
        for run in pending:
            task, method = study.task(run.task), study.method(run.method)
            algo = "shac" if method.algo == "sapo" and unavailable(method) else method.algo
            budget = task.budget_of(method.name)
            if (task.name, method.name) not in sources:
                sources[task.name, method.name] = hyperparams(task, method)[1] if algo == method.algo else None
            source = sources[task.name, method.name]
            samples = measured_entry.get((task.train_id(method), algo, source)) or measured.get((task.train_id(method), algo))
            siblings = [sample for other in study.tasks for sample in measured.get((other.train_id(method), algo), [])]
            if not (samples or siblings):
                unmeasured += 1
                continue
            cost = float(np.median([seconds_per_run(sample, budget, task.eval_every) for sample in samples or siblings]))
            if samples:
                seconds += cost
            else:
                analogy += cost
            if per_method is not None:
                per_method[(name, method.algo)] = per_method.get((name, method.algo), 0.0) + cost / 3600
        rows.append((name, len(runs), len(runs) - len(pending), spent[name], seconds / 3600, analogy / 3600, unmeasured))
    return rows


def estimate_table(results: Path, names: list[str], tuning: Path | None = None) -> str:
    """The cost table of the comparison studies, and the core-hours spent in all, the search studies' trials (their
    journals in ``tuning``, by default next to ``results``) included."""
    from benchmarks.tuning import search_seconds

    lines = [
        "| study | runs | finished | core-hours spent | core-hours left: measured on the task | by analogy (same "
        "algorithm, another task of the study) | unfinished runs without a measurement |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    per_method: dict[tuple[str, str], float] = {}
    finished, _ = load_results(results)
    rows = estimate_rows(results, finished, names, per_method)
    for name, total, done, spent, hours, analogy, unmeasured in rows:
        lines.append(f"| {name} | {total} | {done} | {spent:.1f} | {hours:.1f} | {analogy:.1f} | {unmeasured} |")
    made = [run for run in finished if "reused_from" not in run]
    spent = sum(run["wall_seconds"] for run in made) / 3600
    searches = [study for study in map(load_study, names) if study.kind == "search"]
    tuned = [search_seconds(study, tuning or results.parent / "tuning") for study in searches]
    tuning_hours, tuning_runs = sum(seconds for seconds, _ in tuned) / 3600, sum(count for _, count in tuned)
    lines += [
        "",
        f"Spent in all: {spent + tuning_hours:.1f} core-hours: the {len(made)} runs made so far (every study, the probes "
        f"too), {spent:.1f}, and the {tuning_runs} training runs of the search studies (their trials' and shipped "
        f"entries', read from the journals; older records hold training time only), {tuning_hours:.1f}. A lower bound: "
        "a run made again (after its entry was adopted or changed) replaced its result file, and the run it replaced is "
        "not counted.",
    ]
    algos = [algo for algo in ("rpo", "shac", "sapo", *MODEL_FREE) if any(key[1] == algo for key in per_method)]
    lines += ["", "The same (measured and by analogy), per algorithm:", "", "| study | " + " | ".join(algos) + " |"]
    lines.append("|---|" + "---:|" * len(algos))
    for row in rows:
        lines.append(f"| {row[0]} | " + " | ".join(f"{per_method.get((row[0], algo), 0.0):.1f}" for algo in algos) + " |")
    return "\n".join(lines)


def rate_table(results: Path) -> str:
    """Measured cost of each algorithm on each training env: core-minutes per 100k env steps, evaluations excluded."""
    runs, _ = load_results(results)
    rates: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        without_evals = {**run, "eval_cpu_seconds" if "eval_cpu_seconds" in run else "eval_seconds": 0.0}
        rates[run["train_env_id"]][run["algo"]].append(seconds_per_run(without_evals, 100_000, 10**12))
    algos = [algo for algo in ("rpo", "shac", "sapo", *MODEL_FREE) if any(algo in by_algo for by_algo in rates.values())]
    lines = ["| training env | " + " | ".join(algos) + " |", "|---|" + "---:|" * len(algos)]
    for env_id in sorted(rates):
        cells = [fmt(float(np.median(rates[env_id][a])) / 60, 1) if rates[env_id].get(a) else "—" for a in algos]
        lines.append(f"| `{env_id}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def random_returns(study: Study, episodes: int) -> dict[str, float]:
    """Mean return of uniform random actions over ``episodes`` episodes of each task's eval env (seed 0)."""
    from stable_baselines3.common.evaluation import evaluate_policy

    from benchmarks.methods import make_eval_env

    class UniformRandom:
        def __init__(self, space: Any):
            self.space = space

        def predict(self, observation: np.ndarray, *args: Any, **kwargs: Any) -> tuple[np.ndarray, None]:
            return np.stack([self.space.sample() for _ in range(len(observation))]), None

    values = {}
    for task in study.tasks:
        env = make_eval_env(task, seed=0)
        env.action_space.seed(0)
        mean, _ = evaluate_policy(UniformRandom(env.action_space), env, n_eval_episodes=episodes)  # type: ignore[arg-type]
        values[task.name] = float(mean)
    return values


# ---------------------------------------------------------------------------- the page
def build_report(
    results: Path = RESULTS_DIR,
    page: Path | None = None,
    images: Path | None = None,
    csv_path: Path | None = None,
    reps: int = 2000,
    tuning: Path | None = None,
) -> str:
    """Write runs.csv, the page and its figures from the result files (and the search studies' journals, in
    ``tuning``, by default next to ``results``); returns the page."""
    root = Path(__file__).resolve().parents[1]
    page = page or root / "docs" / "benchmarks.md"
    images = images or page.parent / "images" / "benchmarks"
    csv_path = csv_path or root / "benchmarks" / "results" / "runs.csv"
    runs, timings = load_results(results)
    write_csv(runs, csv_path)
    grouped: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    page_dir = page.parent
    names = [name for name in ORDER if name in study_names()] + [name for name in study_names() if name not in ORDER]
    studies = [load_study(name) for name in names]
    # Stale runs (their hyperparameters are no longer the study's) stay in runs.csv but out of the page's statistics.
    stale = {study.name: stale_runs(study, planned_runs(study), results) for study in studies if study.kind != "search"}
    for run in runs:
        if Run(run["study"], run["task"], run["method"], run["seed"]) not in stale.get(run["study"], {}):
            grouped[run["study"]][run["task"]][run["method"]].append(run)
    for study_runs in grouped.values():
        for by_method in study_runs.values():
            for method_runs in by_method.values():
                method_runs.sort(key=lambda run: run["seed"])
    # The smoke study appears only where it has results (the test's temporary folder), never on the committed page.
    studies = [s for s in studies if s.name != "smoke" or s.name in grouped]

    lines = [
        f"<!-- Generated by `{COMMAND}` from the result files under benchmarks/results/runs/. Do not edit by hand. -->",
        "",
        "# Benchmarks",
        "",
        f"This page is generated: `{COMMAND}` rebuilds it, its figures and "
        f"[`benchmarks/results/runs.csv`]({_rel(csv_path, page_dir)}) (a row per finished run) from the result files "
        "alone; `python -m benchmarks run --study <name>` produces them (one JSON per run under "
        "`benchmarks/results/runs/<study>/<task>/<method>/seed<k>.json`, with every evaluation, the hyperparameters, "
        "the timings and the commit). How to run and extend the studies: "
        f"[benchmarks/README.md]({_rel(root / 'benchmarks' / 'README.md', page_dir)}).",
        "",
        "**Protocol, every study.** Training seeds 0, 1, ...; each run is evaluated every `eval every` env steps and "
        "at the end on `episodes` deterministic episodes of a separate eval env, `make_vec_env(<eval id>, "
        "n_envs=episodes, seed=1000 + seed)` (one episode per env; on the embedded tasks computed as one batch, "
        "bit for bit the same: `benchmarks/batched_faces.py`; Optuna tuning uses seeds from 100 on). A gradient "
        "method evaluates between iterations, every whole number of iterations nearest the period (39 iterations of "
        "128 env steps for 5,000), a model-free one at the env step that crosses each multiple of it (SB3's "
        "EvalCallback); the aims tables call two medians at the same evaluation (the k-th of each) a tie. A run "
        "reaches the threshold at its first evaluation with a mean return at or above it; seconds to the threshold are "
        "training wall-clock, evaluations excluded. Medians of env steps "
        'to the threshold count a run that never reached it as infinitely many ("never" when half or more did not). '
        '"Later evals below threshold": of the evaluations after a run first reached the threshold, the share below '
        "it again (pooled over the runs that reached it). Each run is its own process with one torch thread; runs "
        "share the machine, so wall-clock columns are noisy (the `timing` study measures time per iteration "
        "interleaved in one process).",
        "",
        "## Studies",
        "",
        "| study | what | runs finished | command |",
        "|---|---|---:|---|",
    ]
    for study in studies:
        if study.kind == "search":
            lines.append(f"| [{study.name}](#{study.name}) | {study.title} | trials below | `python -m benchmarks tune` |")
            continue
        planned = planned_runs(study)
        done = sum(run.path(results).exists() and run not in stale[study.name] for run in planned)
        command = f"python -m benchmarks run --study {study.name} --jobs 2"
        stale_note = f" ({len(stale[study.name])} stale)" if stale[study.name] else ""
        lines.append(f"| [{study.name}](#{study.name}) | {study.title} | {done}/{len(planned)}{stale_note} | `{command}` |")
    lines += [
        "",
        "Cost (`python -m benchmarks estimate`), in core-hours (a run is one process on one core): what the runs made so "
        "far took (their wall-clock; a run reused from another study counts where it was made), and an estimate of what "
        "is left: each unfinished run's predicted CPU time, the median over finished runs of the same algorithm on the "
        "same training env (those of the same hyperparameter entry where there are any; any study, the `probe` study's "
        "short runs included) of their CPU time per env step in the "
        "second half of the run plus their CPU time per evaluation, scaled to the run's budget. Runs with no such "
        "measurement are counted apart. Evaluations of a trained policy last longer than a probe's (longer episodes), so "
        "these are lower bounds where episodes end early.",
        "",
        estimate_table(results, [s.name for s in studies], tuning),
        "",
    ]
    lines += [
        "Measured cost, core-minutes of training per 100k env steps (steady state, evaluations excluded; median over "
        "the finished runs of each algorithm on each training env, on this 2-core machine shared with other jobs):",
        "",
        rate_table(results),
        "",
    ]
    plan = Path(__file__).parent / "studies" / "PLAN.md"  # the plan of the runs, kept next to the study files
    if plan.exists():
        lines += [plan.read_text().strip(), ""]
    for study in studies:
        lines += [f'<a id="{study.name}"></a>', "", f"## {study.title}", "", study.description, ""]
        study_file = _rel(root / "benchmarks" / "studies" / f"{study.name}.py", page_dir)
        methods = ", ".join(f"{m.display} (`{m.name}`)" for m in study.methods)
        lines += [
            f"Study file: [`benchmarks/studies/{study.name}.py`]({study_file}); methods: {methods}; "
            f"seeds {list(study.seeds)}.",
            "",
        ]
        lines += [*protocol_table(study), ""]
        if stale.get(study.name):
            changed = sorted({key for keys in stale[study.name].values() for key in keys})
            lines += [
                f"Stale, left out of this study's tables: {len(stale[study.name])} finished runs that ran with other "
                f"hyperparameters or protocol than the study's today (`{'`, `'.join(changed)}` changed since); "
                f"`python -m benchmarks run --study {study.name}` trains them again: "
                + ", ".join(f"`{str(run).split('/', 1)[1]}`" for run in stale[study.name])
                + ".",
                "",
            ]
        if study.kind == "search":
            from benchmarks.tuning import search_rows

            lines += [*search_rows(study, tuning or results.parent / "tuning"), ""]
            continue
        if study.kind == "timing":
            current = [t for t in timings if t["study"] == study.name and Run(study.name, t["task"]) not in stale[study.name]]
            section = timing_section(study, current)
            lines += section or ["*No timing has run yet.*", ""]
            continue
        study_results = grouped.get(study.name, {})
        if study.kind == "probe":
            count = sum(len(runs) for by_method in study_results.values() for runs in by_method.values())
            lines += [f"{count} probe runs finished; their costs are in the tables at the top of this page.", ""]
            continue
        if not study_results:
            lines += ["*No run has finished yet.*", ""]
            continue
        for task in study.tasks:
            by_method = study_results.get(task.name)
            if not by_method:
                continue
            lines += [f"### {task.name}", ""]
            lines += [*task_table(task, study, by_method), ""]
            figure = images / f"{study.name}_{task.name}_curves.png"
            curves_figure(task, by_method, {m.name: m.display for m in study.methods}, figure, reps=max(reps // 4, 10))
            lines += [f"![{task.name} learning curves]({_rel(figure, page_dir)})", ""]
        if study.heatmaps:
            lines += heatmap_section(study, study_results, images, page_dir)
        lines += [f"### {study.title}: aggregate", ""]
        lines += aggregate_section(study, study_results, images, page_dir, reps)
        # The aims compare RPO with SHAC and the model-free methods, on evaluation seeds: not in ablations or screens.
        compared = any(m.algo in ("shac", *MODEL_FREE) for m in study.methods)
        aims = aims_section(study, study_results) if compared and not study.tuning else []
        if aims:
            lines += ["### The aims, as measured so far", "", *aims, ""]
    lines += [
        "## Legacy results",
        "",
        "The per-task scripts that the runner replaced left their results in "
        f"[`benchmarks/results/legacy/`]({_rel(root / 'benchmarks' / 'results' / 'legacy' / 'README.md', page_dir)}) "
        "(3 seeds, an older protocol); they are not mixed with the runner's.",
        "",
    ]
    text = "\n".join(lines)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    for algo in ALGORITHM_PAGES:  # each algorithm's page, where it lies next to this one, gets its rows
        if (algorithm_page := page_dir / f"{algo}.md").exists():
            write_between(algorithm_page, "benchmark results", "\n".join(algorithm_results(algo, studies, grouped, page)))
    readme = page_dir.parent / "README.md"  # the repository's front page, where this page lies in docs/
    summary = next((study for study in studies if study.name == SUMMARY_STUDY), None)
    if summary is not None and readme.exists() and "<!-- benchmark summary: generated -->" in readme.read_text():
        write_between(readme, "benchmark summary", "\n".join(summary_table(summary, grouped.get(summary.name, {}))))
    print(f"wrote {page}, {csv_path} ({len(runs)} runs) and figures under {images}")
    return text
