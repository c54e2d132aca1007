"""
Running a study: every (task, method, seed) is its own process (``python -m benchmarks one ...``, one torch
thread) that writes its own result file when it ends, atomically; ``--jobs N`` runs N at a time. A run whose
result file exists is skipped, so a stopped study resumes where it stopped and several machines can share one
study (commit the result files as they come). A result file whose hyperparameters or protocol are no longer what
the study resolves for its run (an entry of ``hyperparams/``, a method's overrides or the task's protocol changed
since) is *stale*: it is trained again, and the report leaves it out.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from benchmarks.study import Method, Study, Task, load_study

RESULTS_DIR = Path(__file__).parent / "results" / "runs"
TUNING_DIR = RESULTS_DIR.parent / "tuning"  # the search studies' Optuna journals (benchmarks/tuning.py)
LOGS_DIR = Path(__file__).resolve().parents[1] / "logs" / "benchmarks"


@dataclass(frozen=True)
class Run:
    """One run of a study: a training run, or a task's timing (``method`` and ``seed`` None)."""

    study: str
    task: str
    method: str | None = None
    seed: int | None = None

    def path(self, results: Path = RESULTS_DIR) -> Path:
        if self.method is None:
            return results / self.study / self.task / "timing.json"
        return results / self.study / self.task / self.method / f"seed{self.seed}.json"

    def log(self, logs: Path = LOGS_DIR) -> Path:
        name = "timing" if self.method is None else f"{self.method}_seed{self.seed}"
        return logs / self.study / self.task / f"{name}.log"

    def __str__(self) -> str:
        return f"{self.study}/{self.task}" + ("/timing" if self.method is None else f"/{self.method}/seed{self.seed}")


def write_json(path: Path, content: dict) -> None:
    """Write ``path`` atomically (a half-written result file would look finished)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, indent=1))
    os.replace(tmp, path)


def planned_runs(
    study: Study, seeds: list[int] | None = None, tasks: list[str] | None = None, methods: list[str] | None = None
) -> list[Run]:
    """Every run of ``study`` (restricted to ``seeds``, ``tasks``, ``methods`` when given), seed-major order."""
    for names, known, what in (
        (tasks, [t.name for t in study.tasks], "task"),
        (methods, [m.name for m in study.methods], "method"),
    ):
        unknown = sorted(set(names or ()) - set(known))
        if unknown:
            raise SystemExit(f"study {study.name!r} has no {what} {unknown}; its {what}s: {', '.join(known)}")
    task_names = [task.name for task in study.tasks if tasks is None or task.name in tasks]
    if study.kind == "timing":
        return [Run(study.name, task) for task in task_names]
    method_names = [method.name for method in study.methods if methods is None or method.name in methods]
    # Seed-major: a study stopped half-way has every method on its first seeds, not some methods on all seeds.
    return [
        Run(study.name, task, method, seed)
        for seed in (study.seeds if seeds is None else seeds)
        for task in task_names
        for method in method_names
    ]


def run_one(study: Study, run: Run, results: Path = RESULTS_DIR, reuse: bool = True) -> Path:
    """Execute ``run`` in this process and write its result file (``reuse``: copy an :func:`identical_run` if any)."""
    from benchmarks.protocol import time_iterations, train_run

    task = study.task(run.task)
    if run.method is None:
        content = time_iterations(study, task)
    else:
        method = study.method(run.method)
        content = identical_run(study, task, method, run.seed, results) if reuse else None
        content = content or train_run(study, task, method, run.seed)
        print(
            f"{run}: final {content['final_return']:.1f} after {content['final_steps']} steps, "
            f"threshold at {content['steps_to_threshold']} steps, {content['train_seconds']:.0f} s of training",
            flush=True,
        )
    path = run.path(results)
    write_json(path, content)
    return path


def effective_hyperparams(algo: str, kwargs: dict) -> dict:
    """``kwargs`` as a result file holds them (JSON), without the arguments set to ``algo``'s defaults: an argument
    set to its default is the same run as one left out."""
    from benchmarks.methods import algo_class, jsonable

    defaults = {
        name: jsonable(parameter.default)
        for name, parameter in inspect.signature(algo_class(algo)).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    return {key: value for key, value in kwargs.items() if key not in defaults or defaults[key] != value}


def resolved_run(task: Task, method: Method) -> tuple[dict, dict]:
    """What a run of ``method`` on ``task`` trains with today (as :func:`effective_hyperparams`) and the protocol it
    runs under (:func:`benchmarks.methods.run_protocol`), as its result file would record them."""
    from benchmarks.methods import hyperparams, jsonable, run_protocol

    kwargs = hyperparams(task, method)[0]
    return effective_hyperparams(method.algo, jsonable(kwargs)), run_protocol(task, method, kwargs)


def protocol_changes(content: dict, protocol: dict) -> list[str]:
    """The fields of ``protocol`` that the result file ``content`` recorded otherwise."""
    return [key for key, value in protocol.items() if content.get(key) != value]


def stale_runs(study: Study, runs: list[Run], results: Path = RESULTS_DIR) -> dict[Run, list[str]]:
    """
    The finished ``runs`` whose result file no longer holds what the study would run, with what differs: the names
    of the hyperparameters (an entry of ``hyperparams/``, rl-zoo3's entry or the method's overrides changed since;
    ``<method>.<name>`` in a timing, which holds several methods) and of the protocol's fields (:func:`run_protocol`:
    the task's budget, training or eval env, evaluation period, episodes or threshold changed since). A result that
    did not record its hyperparameters (timings of before they did) cannot be checked: stale. Methods whose class is
    missing here are not checked.
    """
    from benchmarks.methods import unavailable

    today: dict[tuple[str, str], tuple[dict, dict]] = {}

    def resolved(task_name: str, method: Method) -> tuple[dict, dict]:
        if (task_name, method.name) not in today:
            today[task_name, method.name] = resolved_run(study.task(task_name), method)
        return today[task_name, method.name]

    def changed(task_name: str, method: Method, kwargs: dict) -> list[str]:
        now, recorded = resolved(task_name, method)[0], effective_hyperparams(method.algo, kwargs)
        return sorted(key for key in now.keys() | recorded.keys() if now.get(key) != recorded.get(key))

    stale = {}
    for run in runs:
        path = run.path(results)
        if not path.exists():
            continue
        content = json.loads(path.read_text())
        recorded = content.get("hyperparams", {})
        if not recorded:  # a run of before results recorded their hyperparameters: what it ran cannot be checked
            keys = ["not recorded"]
        else:
            by_method = recorded.items() if run.method is None else [(run.method, recorded)]
            keys = [
                key if run.method else f"{name}.{key}"
                for name, kwargs in by_method
                if not unavailable(method := study.method(name))
                for key in changed(run.task, method, kwargs)
            ]
        if run.method and not unavailable(method := study.method(run.method)):
            keys += protocol_changes(content, resolved(run.task, method)[1])
        if keys:
            stale[run] = keys
    return stale


def finished_runs(study: Study, runs: list[Run], results: Path = RESULTS_DIR) -> list[Run]:
    """The ``runs`` whose result file exists and is not stale."""
    stale = stale_runs(study, runs, results)
    return [run for run in runs if run.path(results).exists() and run not in stale]


def identical_run(study: Study, task: Task, method: Method, seed: int, results: Path = RESULTS_DIR) -> dict | None:
    """
    The result of a finished run of another study that is this run (same algorithm, hyperparameters, seed, protocol
    and training env options), as this study's run; None if there is none. A run is deterministic given these (the
    smoke test checks it), so e.g. the ablations' and the sweeps' shipped RPO reuse the embedded study's runs instead
    of repeating them.
    """
    wanted, protocol = resolved_run(task, method)
    for path in sorted(results.glob(f"*/*/*/seed{seed}.json")):
        if path.parts[-4] == study.name:
            continue
        content = json.loads(path.read_text())
        try:
            other = load_study(content["study"])
            other_task, other_method = other.task(content["task"]), other.method(content["method"])
        except (SystemExit, StopIteration, KeyError):  # a study, task or method that no longer exists
            continue
        if (
            other_method.algo != method.algo
            or protocol_changes(content, protocol)
            or other_task.train_env_kwargs(other_method) != task.train_env_kwargs(method)
        ):
            continue
        if effective_hyperparams(method.algo, content["hyperparams"]) == wanted and "reused_from" not in content:
            source = path.relative_to(results).as_posix()
            print(f"{study.name}/{task.name}/{method.name}/seed{seed}: the same run as {source}, reused", flush=True)
            return {**content, "study": study.name, "task": task.name, "method": method.name, "reused_from": source}
    return None


def _run_here(study: Study, run: Run, results: Path, reuse: bool) -> bool:
    """``run_one`` in this process; a failure is reported (with its traceback) and counted, as a process's would be."""
    try:
        run_one(study, run, results, reuse)
    except Exception:
        print(f"FAILED {run}:\n{traceback.format_exc()}", flush=True)
        return False
    print(f"done   {run}", flush=True)
    return True


def run_study(
    study: Study,
    runs: list[Run],
    jobs: int = 1,
    results: Path = RESULTS_DIR,
    logs: Path = LOGS_DIR,
    dry_run: bool = False,
    reuse: bool = True,
) -> int:
    """
    Run the pending ``runs`` of ``study``, ``jobs`` processes at a time (``jobs=0``: one after the other in this
    process, for debugging and for studies so small that starting a process costs more than the run); finished runs
    (result file present) and runs of methods that cannot run here are skipped; with ``reuse``, a run that another
    study has made is copied (:func:`identical_run`), not trained. Returns the number of runs that failed.
    """
    from benchmarks.methods import unavailable

    requested = {run.method for run in runs}
    skipped = {method.name: why for method in study.methods if method.name in requested and (why := unavailable(method))}
    for name, why in skipped.items():
        print(f"skipping method {name}: {why}", flush=True)
    stale = stale_runs(study, runs, results)
    for run, changed in stale.items():
        print(
            f"stale  {run}: its hyperparameters or protocol are not what the study runs now ({', '.join(changed)}): "
            "trained again",
            flush=True,
        )
    done = [run for run in runs if run.path(results).exists() and run not in stale]
    pending = [run for run in runs if run not in done and run.method not in skipped]
    at_a_time = f"{jobs} at a time" if jobs else "in this process"
    print(f"study {study.name}: {len(runs)} runs, {len(done)} finished, {len(pending)} to run, {at_a_time}", flush=True)
    if dry_run:
        for run in pending:
            print(f"  {run}")
        return 0
    if jobs == 0:
        return sum(not _run_here(study, run, results, reuse) for run in pending)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    repo = Path(__file__).resolve().parents[1]
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), environment.get("PYTHONPATH")]))
    running: list[tuple[Run, subprocess.Popen, float]] = []
    failed = 0
    queue = list(pending)
    while queue or running:
        while queue and len(running) < jobs:
            run = queue.pop(0)
            command = [sys.executable, "-m", "benchmarks", "--results", str(results), "one", "--study", study.name]
            command += [] if reuse else ["--no-reuse"]
            command += ["--task", run.task] + ([] if run.method is None else ["--method", run.method, "--seed", str(run.seed)])
            run.log(logs).parent.mkdir(parents=True, exist_ok=True)
            with open(run.log(logs), "w") as log:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=repo)
            running.append((run, process, time.perf_counter()))
        time.sleep(0.2)
        for entry in list(running):
            run, process, begin = entry
            if process.poll() is None:
                continue
            running.remove(entry)
            seconds = time.perf_counter() - begin
            if process.returncode == 0 and run.path(results).exists():
                print(f"done   {run} ({seconds:.0f} s)", flush=True)
            else:
                failed += 1
                tail = run.log(logs).read_text().strip().splitlines()[-3:]
                print(f"FAILED {run} (exit {process.returncode}, log {run.log(logs)}): {' | '.join(tail)}", flush=True)
    return failed
