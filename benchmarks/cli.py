"""
Command line of the benchmark runner: ``python -m benchmarks <command>``.

    python -m benchmarks list                                   # the studies, their tasks, methods and seeds
    python -m benchmarks run --study embedded --jobs 2          # every pending run of a study, two at a time
    python -m benchmarks run --study embedded --tasks Pendulum --methods rpo shac --seeds 0-4
    python -m benchmarks run --study embedded --dry-run         # what would run
    python -m benchmarks report                                 # runs.csv, docs/benchmarks.md and its figures
    python -m benchmarks estimate                               # core-hours of what is left, from measured runs
    python -m benchmarks tune --study tuning --task CartPoleSwingUp --method rpo   # equal-budget Optuna search
    python -m benchmarks adopt --study tuning --task CartPoleSwingUp --method rpo  # its best trial into hyperparams/
    python -m benchmarks random --study mujoco                  # return of uniform random actions per task
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.runner import LOGS_DIR, RESULTS_DIR, TUNING_DIR, Run, planned_runs, run_one, run_study, stale_runs
from benchmarks.study import Study, load_study, study_names


def parse_seeds(values: list[str] | None) -> list[int] | None:
    """``["0-4", "7"]`` -> ``[0, 1, 2, 3, 4, 7]``."""
    if not values:
        return None
    seeds: list[int] = []
    for value in values:
        for part in value.split(","):
            low, _, high = part.partition("-")
            seeds += list(range(int(low), int(high or low) + 1))
    return seeds


def _list(args: argparse.Namespace) -> None:
    for name in study_names():
        study = load_study(name)
        if study.kind == "search":
            print(f"{name} (search): {study.n_trials} trials per task and method, each on seeds {list(study.seeds)}")
            print(f"  tasks: {', '.join(t.name for t in study.tasks)}; methods: {', '.join(m.name for m in study.methods)}")
            continue
        runs = planned_runs(study)
        stale = stale_runs(study, runs, args.results)
        done = sum(run.path(args.results).exists() and run not in stale for run in runs)
        stale_note = f" ({len(stale)} more stale: hyperparameters changed since they ran)" if stale else ""
        print(f"{name} ({study.kind}): {done}/{len(runs)} runs finished{stale_note}; seeds {list(study.seeds)}")
        print(f"  tasks: {', '.join(f'{task.name} ({task.budget:,} steps)' for task in study.tasks)}")
        print(f"  methods: {', '.join(method.name for method in study.methods)}")


def _run(args: argparse.Namespace) -> None:
    study = load_study(args.study)
    if study.kind == "search":
        raise SystemExit(f"{study.name} is a search study: python -m benchmarks tune --study {study.name} --task T --method M")
    runs = planned_runs(study, parse_seeds(args.seeds), args.tasks, args.methods)
    failed = run_study(study, runs, args.jobs, args.results, args.logs, dry_run=args.dry_run, reuse=not args.no_reuse)
    sys.exit(1 if failed else 0)


def _one(args: argparse.Namespace) -> None:
    study = load_study(args.study)
    run_one(study, Run(study.name, args.task, args.method, args.seed), results=args.results, reuse=not args.no_reuse)


def _tune(args: argparse.Namespace) -> None:
    from benchmarks.tuning import tune

    study = _search_study(args.study)
    tune(study, study.task(args.task), study.method(args.method), max_trials=args.trials, tuning_dir=args.tuning)


def _adopt(args: argparse.Namespace) -> None:
    from benchmarks.tuning import adopt

    study = _search_study(args.study)
    adopt(study, study.task(args.task), study.method(args.method), tuning_dir=args.tuning)


def _search_study(name: str) -> Study:
    study = load_study(name)
    if study.kind != "search":
        raise SystemExit(f"{study.name} is not a search study; search studies: {', '.join(search_study_names())}")
    return study


def search_study_names() -> list[str]:
    return [name for name in study_names() if load_study(name).kind == "search"]


def _report(args: argparse.Namespace) -> None:
    from benchmarks.report import build_report

    build_report(args.results, args.out, args.images, args.csv, reps=args.reps, tuning=args.tuning)


def _estimate(args: argparse.Namespace) -> None:
    from benchmarks.report import estimate_table

    print(estimate_table(args.results, [args.study] if args.study else study_names(), args.tuning))


def _random(args: argparse.Namespace) -> None:
    from benchmarks.report import random_returns

    for task, value in random_returns(load_study(args.study), args.episodes).items():
        print(f"{task}: {value:.6g}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of the result files (default: %(default)s)")
    parser.add_argument(
        "--tuning", type=Path, default=TUNING_DIR, help="folder of the search studies' journals (default: %(default)s)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("list", help="the studies, their tasks, methods, seeds and how many runs are finished")

    run = commands.add_parser("run", help="run the pending runs of a study (finished runs are skipped)")
    run.add_argument("--study", required=True, choices=study_names())
    run.add_argument("--seeds", nargs="+", help="seeds to run, e.g. 0-4 7 (default: the study's)")
    run.add_argument("--tasks", nargs="+", help="task names (default: all)")
    run.add_argument("--methods", nargs="+", help="method names (default: all)")
    run.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at a time, one process and one torch thread each (0: one after the other in this process)",
    )
    run.add_argument("--logs", type=Path, default=LOGS_DIR, help="folder of the runs' logs (default: %(default)s)")
    run.add_argument("--dry-run", action="store_true", help="only list the pending runs")
    no_reuse = "train every run, even one that another study has already made (by default its result is copied)"
    run.add_argument("--no-reuse", action="store_true", help=no_reuse)

    one = commands.add_parser("one", help="one run in this process (what `run` starts)")
    one.add_argument("--study", required=True, choices=study_names())
    one.add_argument("--task", required=True)
    one.add_argument("--method", help="method name (none: the task's timing, for a timing study)")
    one.add_argument("--seed", type=int)
    one.add_argument("--no-reuse", action="store_true", help=no_reuse)

    report = commands.add_parser("report", help="rebuild runs.csv, docs/benchmarks.md and its figures from the result files")
    root = Path(__file__).resolve().parents[1]
    report.add_argument("--out", type=Path, default=root / "docs" / "benchmarks.md")
    report.add_argument("--images", type=Path, default=root / "docs" / "images" / "benchmarks")
    report.add_argument("--csv", type=Path, default=root / "benchmarks" / "results" / "runs.csv")
    report.add_argument("--reps", type=int, default=2000, help="bootstrap replications of the confidence intervals")

    estimate = commands.add_parser("estimate", help="core-hours of the pending runs, from the timings of finished runs")
    estimate.add_argument("--study", choices=study_names())

    tune_parser = commands.add_parser("tune", help="trials of a search study for one task and method (benchmarks/tuning.py)")
    tune_parser.add_argument("--study", required=True, choices=study_names())
    tune_parser.add_argument("--task", required=True)
    tune_parser.add_argument("--method", required=True)
    tune_parser.add_argument("--trials", type=int, help="at most this many trials in this process (default: until n_trials)")

    adopt_parser = commands.add_parser(
        "adopt", help="write the best trial of a finished search into hyperparams/<algo>.yml (benchmarks/tuning.py)"
    )
    adopt_parser.add_argument("--study", required=True, choices=study_names())
    adopt_parser.add_argument("--task", required=True)
    adopt_parser.add_argument("--method", required=True)

    random = commands.add_parser("random", help="mean return of uniform random actions on each task's eval env")
    random.add_argument("--study", required=True, choices=study_names())
    random.add_argument("--episodes", type=int, default=10)

    args = parser.parse_args(argv)
    handlers = dict(
        list=_list, run=_run, one=_one, report=_report, estimate=_estimate, tune=_tune, adopt=_adopt, random=_random
    )
    handlers[args.command](args)
