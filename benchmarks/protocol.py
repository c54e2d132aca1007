"""
The evaluation protocol and the two kinds of run: one training run (:func:`train_run`) and the interleaved time
per iteration of the gradient methods (:func:`time_iterations`).

Every method is evaluated the same way: every ~``task.eval_every`` env steps and once at the end,
``task.n_eval_episodes`` deterministic episodes on the eval env of :func:`benchmarks.methods.make_eval_env`
(``task.eval_id``, seeded ``1000 + seed``) with SB3's ``evaluate_policy``. A gradient method evaluates between
iterations (after the update of the iteration that crossed the period), a model-free method at the env step that
crosses it, as SB3's EvalCallback (and rl-zoo3) does. A run reaches the threshold at its first evaluation whose mean
return is at least the threshold; its time to the threshold is the training wall-clock up to that evaluation,
evaluations excluded.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, sync_envs_normalization

import sb3_rpo  # noqa: F401  (registers the differentiable ids, and their gymnasium faces)
from benchmarks.methods import REPO_ROOT, build, hyperparams, jsonable, run_protocol, unavailable
from benchmarks.study import EVAL_SEED_OFFSET, Method, Study, Task

TIME_KEYS = ("forward", "backward", "policy_epochs", "critic")


class PeriodicEval(BaseCallback):
    """
    Evaluates the policy every ``every`` env steps and once at the end of training, and keeps the
    training wall-clock time (evaluations excluded) at each evaluation.

    :param eval_env: The evaluation env
    :param every: Evaluation period in env steps
    :param between_iterations: Evaluate only between iterations (after the update of the iteration
        that crossed the period), as for RPO/SHAC; otherwise at the env step that crosses it, as
        SB3's EvalCallback (and rl-zoo3) does
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
        self.eval_cpu_seconds = 0.0
        self.start = 0.0
        self.cpu_start = 0.0

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()

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
        begin, cpu_begin = time.perf_counter(), time.process_time()
        if isinstance(self.eval_env, VecNormalize):
            sync_envs_normalization(self.training_env, self.eval_env)
        returns, _ = evaluate_policy(
            self.model, self.eval_env, n_eval_episodes=self.n_eval_episodes, deterministic=True, return_episode_rewards=True
        )
        self.records.append(
            dict(
                steps=int(self.num_timesteps),
                train_seconds=begin - self.start - self.eval_seconds,
                # CPU time of this process: the cost in core-seconds, whatever else shares the machine
                train_cpu_seconds=cpu_begin - self.cpu_start - self.eval_cpu_seconds,
                mean_return=float(np.mean(returns)),
                std_return=float(np.std(returns)),
            )
        )
        self.eval_seconds += time.perf_counter() - begin
        self.eval_cpu_seconds += time.process_time() - cpu_begin


def commit() -> str:
    """The checkout's commit, with ``+dirty`` when tracked files differ from it."""
    git = ["git", "-C", str(REPO_ROOT)]
    revision = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    return (revision or "unknown") + ("+dirty" if dirty.strip() else "")


def machine() -> dict[str, Any]:
    return dict(
        platform=platform.platform(),
        processor=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        load_average=list(os.getloadavg()),
        python=platform.python_version(),
        torch=th.__version__,
        torch_threads=th.get_num_threads(),
    )


def train_run(study: Study, task: Task, method: Method, seed: int) -> dict[str, Any]:
    """One run: train ``method`` on ``task`` with ``seed`` under the protocol; the content of its result file."""
    th.set_num_threads(1)
    kwargs, source = hyperparams(task, method)
    model, eval_env = build(task, method, seed, kwargs)
    protocol = run_protocol(task, method, kwargs)
    # run_protocol takes RPO's n_steps and n_envs where the entry leaves them out: a method with other defaults would
    # evaluate off its iterations
    assert not method.gradient or protocol["eval_every"] % (model.n_steps * model.n_envs) == 0, protocol
    callback = PeriodicEval(eval_env, protocol["eval_every"], method.gradient, task.n_eval_episodes)
    revision = commit()  # the code that trains, read before a checkout can move on during a long run
    started = time.time()
    begin = time.perf_counter()
    model.learn(protocol["budget"], callback=callback)
    wall = time.perf_counter() - begin
    evals = callback.records
    reached = None
    if task.threshold is not None:
        reached = next((record for record in evals if record["mean_return"] >= task.threshold), None)
    return dict(
        study=study.name,
        task=task.name,
        method=method.name,
        algo=method.algo,
        seed=seed,
        eval_seed=EVAL_SEED_OFFSET + seed,
        **protocol,
        hyperparams_source=source,
        hyperparams=jsonable(kwargs),
        evals=evals,
        final_steps=evals[-1]["steps"],
        final_return=evals[-1]["mean_return"],
        best_return=max(record["mean_return"] for record in evals),
        steps_to_threshold=reached["steps"] if reached else None,
        seconds_to_threshold=reached["train_seconds"] if reached else None,
        train_seconds=evals[-1]["train_seconds"],
        eval_seconds=callback.eval_seconds,
        train_cpu_seconds=evals[-1]["train_cpu_seconds"],
        eval_cpu_seconds=callback.eval_cpu_seconds,
        wall_seconds=wall,
        started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        commit=revision,
        command=" ".join([os.path.basename(sys.executable), *sys.argv]),
        machine=machine(),
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
                dict(
                    iteration=time.perf_counter() - self.begin, **{key: logged.get(f"time/{key}_s", 0.0) for key in TIME_KEYS}
                )
            )
        self.begin = None

    def _on_rollout_start(self) -> None:
        self._close_iteration()
        self.begin = time.perf_counter()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self._close_iteration()


def time_iterations(study: Study, task: Task, block: int = 5, warmup: int = 5) -> dict[str, Any]:
    """
    The gradient methods of ``study`` that exist here, on ``task``, in one process: alternating blocks of ``block``
    iterations (the order rotated every round) after ``warmup`` iterations each, so that machine noise hits all alike.
    """
    th.set_num_threads(1)
    revision = commit()
    methods = [method for method in study.methods if method.gradient and unavailable(method) is None]
    models, sources, recorded = {}, {}, {}
    for method in methods:
        kwargs, sources[method.name] = hyperparams(task, method)
        recorded[method.name] = jsonable(kwargs)
        models[method.name] = build(task, method, 0, kwargs)[0]
    timers = {name: IterationTimer() for name in models}
    for model in models.values():
        model.learn(warmup * model.n_steps * model.n_envs)
    names = list(models)
    for round_ in range(study.timing_rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            model = models[name]
            model.learn(block * model.n_steps * model.n_envs, callback=timers[name], reset_num_timesteps=False)
    medians = {
        name: {key: float(np.median([record[key] for record in timer.records])) for key in ("iteration", *TIME_KEYS)}
        for name, timer in timers.items()
    }
    return dict(
        study=study.name,
        task=task.name,
        kind="timing",
        rounds=study.timing_rounds,
        block=block,
        warmup=warmup,
        n_iterations={name: len(timer.records) for name, timer in timers.items()},
        steps_per_iteration={name: model.n_steps * model.n_envs for name, model in models.items()},
        hyperparams_source=sources,
        hyperparams=recorded,
        median_seconds=medians,
        raw_seconds={name: timer.records for name, timer in timers.items()},
        commit=revision,
        command=" ".join([os.path.basename(sys.executable), *sys.argv]),
        machine=machine(),
    )
