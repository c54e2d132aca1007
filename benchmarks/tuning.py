"""
Equal-budget hyperparameter search of the gradient methods (GitHub issue 11): Optuna over the zoo's search spaces
(``sb3_rpo.zoo.hyperparams_opt``), every trial trained under the benchmark protocol on the study's tuning seeds.

    python -m benchmarks tune --study tuning --task CartPoleSwingUp --method rpo              # until n_trials are done
    python -m benchmarks tune --study tuning --task CartPoleSwingUp --method rpo --trials 2   # at most 2 more here
    python -m benchmarks adopt --study tuning --task CartPoleSwingUp --method rpo   # the best trial into hyperparams/

A search study (``kind="search"``) fixes, before any trial, the tasks, the methods, the tuning seeds (from 100 on,
disjoint from every evaluation study's seeds) and ``n_trials``: every method gets the same number of trials, each of
``len(seeds)`` runs of the task's budget, so the budget is equal by construction. A trial's score on one seed is its
normalized area under the learning curve (the mean over its evaluations of the task's normalized score, the raw
return on a task without normalization): fast, stable learning scores high, and a run that never reaches the
threshold still ranks. Its objective is the lower quartile of the seeds' scores (maximized), so that a setting that
fails on one seed in four loses against one that works on all. After each seed the objective so far goes to Optuna's
median pruner.

Trials live in an Optuna journal per (task, method), ``benchmarks/results/tuning/<study>/<task>/<method>.log``:
commit it as it grows, and any machine continues the search (a trial whose process died is marked failed when
its host starts the next one; failed trials do not count towards ``n_trials``). Each trial's user attributes hold
the hyperparameters it trained with and a summary of each seed's run. A process seeds its sampler with the study's
first seed plus the number of trials already in the journal, so that a resumed search draws new settings (one seed
for every process drew the same first trials again); a trial that repeats the parameters of an earlier finished
trial does not count towards ``n_trials``.

Before its first trial, a search scores the shipped entry (``hyperparams/<algo>.yml``, no override) the same way on
the same seeds and keeps the result in the journal (the study's ``shipped`` user attribute): a trial is worth adopting
only if it beats that. ``adopt`` writes the best trial of a finished search into ``hyperparams/<algo>.yml`` (refused
where it does not beat the shipped entry), with a comment naming the study and the trial; the evaluation studies'
runs of the entry it replaces become stale, and ``python -m benchmarks run`` measures the new one on their seeds.
"""

from __future__ import annotations

import os
import socket
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.methods import gradient_hyperparams, jsonable
from benchmarks.runner import TUNING_DIR
from benchmarks.study import Method, Study, Task

# Numerical failures of a trial's settings: the trial fails (and is resampled), the search goes on; anything else is a bug.
TRIAL_ERRORS = (ArithmeticError, ValueError, AssertionError)


def journal_path(study: Study, task: Task, method: Method, tuning_dir: Path = TUNING_DIR) -> Path:
    return tuning_dir / study.name / task.name / f"{method.name}.log"


def run_score(task: Task, run: dict[str, Any]) -> float:
    """A run's normalized area under its learning curve: the mean normalized eval return over its evaluations."""
    returns = [record["mean_return"] for record in run["evals"]]
    return float(np.mean([task.normalize(value) for value in returns] if task.normalized else returns))


def objective_value(scores: list[float]) -> float:
    """The lower quartile of the seeds' scores."""
    return float(np.percentile(scores, 25))


def trial_method(task: Task, method: Method, sampled: dict[str, Any]) -> Method:
    """``method`` with a sampler's hyperparameters: ``net_arch`` joins the entry's ``policy_kwargs`` (as in the zoo)."""
    sampled = dict(sampled)
    overrides: dict[str, Any] = {**method.overrides, **sampled}
    if "net_arch" in sampled:
        entry, _ = gradient_hyperparams(task, method)
        overrides.pop("net_arch")
        overrides["policy_kwargs"] = {**entry["policy_kwargs"], "net_arch": sampled["net_arch"]}
    return Method(method.name, method.algo, overrides=overrides, label=method.label)


def _sampler(algo: str) -> Any:
    from sb3_rpo.zoo import hyperparams_opt

    return getattr(hyperparams_opt, f"sample_{algo}_params")


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _fail_dead_trials(search: Any, storage: Any) -> None:
    """Mark failed the running trials of this host whose process is gone (a journal has no heartbeat)."""
    from optuna.trial import TrialState

    host, study_id = socket.gethostname(), storage.get_study_id_from_name(search.study_name)
    for trial in search.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if worker_host == host and pid.isdigit() and not _alive(int(pid)):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_search(
    study: Study, task: Task, method: Method, tuning_dir: Path = TUNING_DIR, create: bool = False
) -> tuple[Any, Any]:
    """The Optuna study of (``task``, ``method``) and its storage, or (None, None) when it has no journal and
    ``create`` is False."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = journal_path(study, task, method, tuning_dir)
    if not path.exists() and not create:
        return None, None
    path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(path)))
    name, pruner = f"{study.name}-{task.name}-{method.name}", optuna.pruners.MedianPruner(n_startup_trials=5)
    try:  # loading writes nothing (create_study(load_if_exists=True) appended a record to the journal at every read)
        return optuna.load_study(study_name=name, storage=storage, pruner=pruner), storage
    except KeyError:
        return optuna.create_study(study_name=name, storage=storage, direction="maximize", pruner=pruner), storage


def finished_trials(search: Any) -> list[Any]:
    """The completed and pruned trials that count towards ``n_trials``: a repeat of an earlier one's parameters does not."""
    from optuna.trial import TrialState

    counted, seen = [], []
    for trial in search.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if trial.params not in seen:
            seen.append(trial.params)
            counted.append(trial)
    return counted


def seed_runs(study: Study, task: Task, method: Method) -> Any:
    """Train ``method`` on each of the study's seeds under the protocol; yields (seed, run summary with its score)."""
    from benchmarks.protocol import train_run

    for seed in study.seeds:
        run = train_run(study, task, method, seed)
        keys = ("final_return", "best_return", "steps_to_threshold", "train_seconds", "wall_seconds")
        summary = {key: run[key] for key in keys}
        yield seed, {**summary, "score": run_score(task, run)}


def score_shipped(study: Study, task: Task, method: Method, search: Any) -> dict[str, Any]:
    """The shipped entry's objective on the study's seeds, computed once and kept in the journal."""
    if "shipped" not in search.user_attrs:
        _, source = gradient_hyperparams(task, method)
        seeds = {f"seed{seed}": summary for seed, summary in seed_runs(study, task, method)}
        objective = objective_value([summary["score"] for summary in seeds.values()])
        search.set_user_attr("shipped", dict(source=source, objective=objective, **seeds))
        print(f"{study.name}/{task.name}/{method.name}: the shipped entry ({source}) scores {objective:.3f}", flush=True)
    return search.user_attrs["shipped"]


def tune(study: Study, task: Task, method: Method, max_trials: int | None = None, tuning_dir: Path = TUNING_DIR) -> Any:
    """Run trials of (``task``, ``method``) until ``study.n_trials`` are finished (at most ``max_trials`` here)."""
    import optuna

    search, storage = load_search(study, task, method, tuning_dir, create=True)
    _fail_dead_trials(search, storage)
    search.sampler = optuna.samplers.TPESampler(seed=study.seeds[0] + len(search.trials))
    score_shipped(study, task, method, search)
    sampler = _sampler(method.algo)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", _worker())
        sampled = sampler(trial, 0, 0, {})
        candidate = trial_method(task, method, sampled)
        trial.set_user_attr("hyperparams", jsonable(candidate.overrides))
        scores = []
        for step, (seed, summary) in enumerate(seed_runs(study, task, candidate)):
            scores.append(summary["score"])
            trial.set_user_attr(f"seed{seed}", summary)
            final = summary["final_return"]
            print(f"  trial {trial.number}, seed {seed}: score {scores[-1]:.3f}, final {final:.1f}", flush=True)
            trial.report(objective_value(scores), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return objective_value(scores)

    def say(_: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:  # this process's trial, not the journal's last
        print(f"{study.name}/{task.name}/{method.name}: trial {trial.number} {trial.state.name} {trial.value}", flush=True)

    ran = 0
    while len(finished_trials(search)) < study.n_trials and (max_trials is None or ran < max_trials):
        search.optimize(objective, n_trials=1, catch=TRIAL_ERRORS, callbacks=[say])
        ran += 1
    return search


def search_seconds(study: Study, tuning_dir: Path = TUNING_DIR) -> tuple[float, int]:
    """The core-seconds a search study's training runs took (every trial's seeds, failed trials' too, and the shipped
    entries'; a run's training time where its journal predates wall-clock records) and how many runs."""
    seconds, count = 0.0, 0
    for task in study.tasks:
        for method in study.methods:
            search, _ = load_search(study, task, method, tuning_dir)
            if search is None:
                continue
            for attrs in (search.user_attrs.get("shipped", {}), *(trial.user_attrs for trial in search.trials)):
                for summary in (value for key, value in attrs.items() if key.startswith("seed")):
                    seconds += summary.get("wall_seconds", summary["train_seconds"])
                    count += 1
    return seconds, count


def _short(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def search_rows(study: Study, tuning_dir: Path = TUNING_DIR) -> list[str]:
    """The report's table of a search study: per task and method, the trials finished and the best one."""
    lines = [
        "| task | method | trials finished | objective of the entry shipped when the search began | best objective (lower "
        "quartile of the seeds' scores) | best trial's parameters (the search space's names) | command |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for task in study.tasks:
        for method in study.methods:
            search, _ = load_search(study, task, method, tuning_dir)
            trials = [] if search is None else finished_trials(search)
            best = None if search is None else best_trial(search)
            shipped = None if search is None else search.user_attrs.get("shipped")
            command = f"python -m benchmarks tune --study {study.name} --task {task.name} --method {method.name}"
            value = f"{best.value:.3f} (trial {best.number})" if best else ""
            params = ", ".join(f"`{key}={_short(x)}`" for key, x in best.params.items()) if best else ""
            cells = [task.name, method.display, f"{len(trials)}/{study.n_trials}", shipped and f"{shipped['objective']:.3f}"]
            lines.append("| " + " | ".join(cell or "" for cell in cells) + f" | {value} | {params} | `{command}` |")
    return lines


# ---------------------------------------------------------------------------- adopting a trial
def best_trial(search: Any) -> Any:
    """The completed trial with the highest objective, or None."""
    completed = [trial for trial in finished_trials(search) if trial.state.name == "COMPLETE" and trial.value is not None]
    return max(completed, key=lambda trial: trial.value) if completed else None


def _policy_kwargs_text(policy_kwargs: dict[str, Any]) -> str:
    """``policy_kwargs`` as the yml files write them: a Python expression that rl-zoo3 evaluates with ``nn`` imported."""
    import torch as th

    def text(value: Any) -> str:
        is_module = isinstance(value, type) and issubclass(value, th.nn.Module)
        return f"nn.{value.__name__}" if is_module else repr(value)

    return "dict(" + ", ".join(f"{key}={text(value)}" for key, value in policy_kwargs.items()) + ")"


def _yml_value(value: Any) -> Any:
    """A sampled value as the yml files write it: a decaying learning rate as ``lin_<x>`` (``lin_<x>_<floor>``)."""
    from stable_baselines3.common.utils import LinearSchedule

    from sb3_rpo.common.schedules import LR_FLOOR

    if isinstance(value, LinearSchedule):
        return f"lin_{value.start!r}" + ("" if value.end == LR_FLOOR else f"_{value.end!r}")
    return value


def trial_entry(task: Task, method: Method, sampled: dict[str, Any]) -> dict[str, Any]:
    """
    The yml entry that trains as a trial with the sampler's output ``sampled`` trained: the task's current entry of
    ``hyperparams/<algo>.yml`` with the sampled values, the network in ``policy_kwargs`` (next to the entry's other
    policy arguments, as the trial had them).
    """
    from benchmarks.methods import REPO_ROOT, preprocess, yml_entry

    entry_id = task.diff_hyperparams_id or task.diff_env_id
    entry = yml_entry(REPO_ROOT / "hyperparams" / f"{method.algo}.yml", entry_id)
    if entry is None:
        raise SystemExit(f"hyperparams/{method.algo}.yml has no {entry_id} entry to replace: add one first")
    values = {key: _yml_value(value) for key, value in sampled.items()}
    if "net_arch" in values:
        policy_kwargs = preprocess({"policy_kwargs": entry.get("policy_kwargs") or "dict()"}, gradient=True)["policy_kwargs"]
        policy_kwargs["net_arch"] = values.pop("net_arch")
        values["policy_kwargs"] = _policy_kwargs_text(policy_kwargs)
    return {**entry, **values}


def replace_entry(path: Path, entry_id: str, entry: dict[str, Any], comment: str) -> None:
    """Replace the ``entry_id`` block of a yml file (with the comment lines right above it) by ``entry``, leaving the
    rest of the file as it is."""
    import yaml

    lines = path.read_text().splitlines()
    start = lines.index(f"{entry_id}:")
    end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith(" ")), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    while start > 0 and lines[start - 1].startswith("#"):
        start -= 1
    block = [f"# {line}" for line in comment.splitlines()]
    block += yaml.safe_dump({entry_id: entry}, sort_keys=False, default_flow_style=False, width=200).splitlines()
    path.write_text("\n".join(lines[:start] + block + lines[end:]) + "\n")


def adopt(study: Study, task: Task, method: Method, tuning_dir: Path = TUNING_DIR) -> Path:
    """
    Make the best trial of a finished search the shipped entry of ``hyperparams/<algo>.yml`` for ``task``, with a
    comment naming the study, the trial and both objectives; refused while the search has trials left, or when the
    best trial does not beat the shipped entry. The evaluation studies' runs of the old entry then become stale.
    """
    from benchmarks.methods import REPO_ROOT, gradient_hyperparams, jsonable

    search, _ = load_search(study, task, method, tuning_dir)
    command = f"python -m benchmarks tune --study {study.name} --task {task.name} --method {method.name}"
    if search is None or len(finished_trials(search)) < study.n_trials:
        done = 0 if search is None else len(finished_trials(search))
        raise SystemExit(f"the search has {done} of its {study.n_trials} trials: finish it first ({command})")
    best, shipped = best_trial(search), search.user_attrs.get("shipped")
    if shipped is None or best is None or best.value <= shipped["objective"]:
        found = "no completed trial" if best is None else f"its best trial scores {best.value:.3f}"
        against = "an unscored shipped entry" if shipped is None else f"the shipped entry's {shipped['objective']:.3f}"
        raise SystemExit(f"nothing to adopt: {found}, against {against}")
    sampled = _sampler(method.algo)(best, 0, 0, {})  # a finished trial answers the sampler with its parameters
    trained = jsonable(gradient_hyperparams(task, trial_method(task, method, sampled))[0])
    entry_id = task.diff_hyperparams_id or task.diff_env_id
    path = REPO_ROOT / "hyperparams" / f"{method.algo}.yml"
    before = path.read_text()
    seeds = f"{study.seeds[0]}-{study.seeds[-1]}"
    outcome = (
        f"objective {best.value:.3f} on tuning seeds {seeds} against {shipped['objective']:.3f} for the entry it "
        f"replaced ({shipped['source']})."
    )
    comment = "\n".join(
        [
            f"Adopted from the `{study.name}` study (benchmarks/studies/{study.name}.py, docs/benchmarks.md): trial "
            f"{best.number} of",
            f"`{command}`:",
            *textwrap.wrap(outcome, width=110),
        ]
    )
    replace_entry(path, entry_id, trial_entry(task, method, sampled), comment)
    if jsonable(gradient_hyperparams(task, method)[0]) != trained:  # the file must read back as the trial trained
        path.write_text(before)
        raise AssertionError(f"the written {entry_id} entry does not read back as trial {best.number}'s settings")
    print(f"{path}: {entry_id} is trial {best.number} of {study.name}/{task.name}/{method.name}", flush=True)
    return path
