"""
What a study is: tasks x methods x seeds, each task with its budget, its evaluation period, its threshold and its
normalization constants, all fixed in a study file (``benchmarks/studies/<name>.py``, which defines ``STUDY``)
before any run.

One evaluation protocol for every run of every study (:mod:`benchmarks.protocol`): ``n_eval_episodes``
deterministic episodes on a separate eval env, ``make_vec_env(task.eval_env_id, n_envs=n_eval_episodes,
seed=EVAL_SEED_OFFSET + seed)`` (one episode per env), every ``eval_every`` env steps and once at the end.
Training seeds are 0, 1, ...; evaluation seeds 1000 + seed; tuning (Optuna) uses seeds from 100 on, so the
three never overlap while a study has fewer than 100 seeds.
"""

from __future__ import annotations

import importlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STUDIES_DIR = Path(__file__).parent / "studies"
EVAL_SEED_OFFSET = 1000
TUNING_SEED_OFFSET = 100
# Methods that backpropagate through the simulator (they train on the task's DiffVecEnv); every other algorithm
# is model-free and trains on the task's gymnasium env.
GRADIENT_ALGOS = ("rpo", "shac", "sapo")


@dataclass(frozen=True)
class Task:
    """
    One task of a study.

    :param name: Short name, the folder of its result files (``<study>/<name>/<method>/seed<k>.json``)
    :param diff_env_id: Differentiable env id on which the gradient methods train (``make_diff_vec_env``), and key
        of their entries in ``hyperparams/<algo>.yml``
    :param gym_env_id: Gymnasium id on which the model-free methods train: the env the DiffVecEnv mirrors (gymnasium's
        own Pendulum-v1 or Hopper-v5, or the gymnasium registration of ``diff_env_id`` when it has no official twin)
    :param eval_env_id: Gymnasium id on which every method is evaluated (default: ``gym_env_id``)
    :param budget: Env steps of every method (a gradient method stops at the first whole iteration past it)
    :param eval_every: Evaluation period in env steps (a gradient method evaluates between iterations, every whole
        number of iterations nearest it; a model-free one at the env step that crosses each multiple of it, as SB3's
        EvalCallback)
    :param threshold: Mean eval return that counts as solved (None: the task reports returns only)
    :param random_score: Mean return of uniform random actions, the 0 of the normalized score (None: not normalized)
    :param reference_score: The 1 of the normalized score
    :param normalization_source: Where ``random_score`` and ``reference_score`` come from
    :param diff_hyperparams_id: Entry of ``hyperparams/<algo>.yml`` for the gradient methods (default:
        ``diff_env_id``; the yml's ``default`` entry if that is missing too)
    :param zoo_ids: rl-zoo3 entry (of its own ``hyperparams/<algo>.yml``) per model-free algorithm, when it is not
        ``gym_env_id``: the nearest tuned entry, and :attr:`zoo_notes` says why
    :param zoo_notes: Why these entries are the nearest ones
    :param diff_env_kwargs: Options of ``make_diff_vec_env`` for the DiffVecEnv that the gradient methods (and, with
        ``model_free_on_diff_env``, the model-free ones) train on
    :param model_free_on_diff_env: The model-free methods train on the DiffVecEnv of ``gym_env_id`` as an SB3 VecEnv
        (its numpy face: every env in one simulator call) instead of ``make_vec_env`` of the id's gymnasium
        registration, which runs one simulator per env (rewarped, MJX: a warp or jax call per env per step)
    :param n_eval_episodes: Deterministic episodes per evaluation
    :param budgets: Per-method budgets that differ from ``budget`` (by method name)
    :param hyperparams: Constructor arguments per method name that override the yml entries in this task only
    """

    name: str
    diff_env_id: str
    gym_env_id: str
    budget: int
    eval_every: int
    threshold: float | None
    random_score: float | None = None
    reference_score: float | None = None
    normalization_source: str = ""
    eval_env_id: str | None = None
    diff_hyperparams_id: str | None = None
    zoo_ids: dict[str, str] = field(default_factory=dict)
    zoo_notes: str = ""
    diff_env_kwargs: dict[str, Any] = field(default_factory=dict)
    model_free_on_diff_env: bool = False
    n_eval_episodes: int = 10
    budgets: dict[str, int] = field(default_factory=dict)
    hyperparams: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def eval_id(self) -> str:
        return self.eval_env_id or self.gym_env_id

    def train_id(self, method: Method) -> str:
        """The env ``method`` trains on, as its results record it."""
        if method.gradient:
            return self.diff_env_id
        return f"{self.gym_env_id} (DiffVecEnv)" if self.model_free_on_diff_env else self.gym_env_id

    def train_env_kwargs(self, method: Method) -> dict[str, Any]:
        """The ``make_diff_vec_env`` options of the env ``method`` trains on (none on a gymnasium registration)."""
        return self.diff_env_kwargs if method.gradient or self.model_free_on_diff_env else {}

    @property
    def normalized(self) -> bool:
        return self.random_score is not None and self.reference_score is not None

    def budget_of(self, method: str) -> int:
        return self.budgets.get(method, self.budget)

    def normalize(self, score: float) -> float:
        assert self.random_score is not None and self.reference_score is not None, f"{self.name} has no normalization"
        return (score - self.random_score) / (self.reference_score - self.random_score)


@dataclass(frozen=True)
class Method:
    """
    One method of a study: an algorithm with its hyperparameters, possibly changed (ablations, sweeps).

    :param name: Key of its result files and its label's default (``rpo``, ``rpo_no_kl``, ...)
    :param algo: ``rpo``, ``shac``, ``sapo``, ``ppo``, ``sac``, ``tqc`` or ``crossq`` (:data:`benchmarks.methods.CLASSES`)
    :param overrides: Constructor arguments set on top of the hyperparameter entry (every task)
    :param label: Name in tables and figures (default: ``name``)
    :param grid: The swept values, for heat maps (e.g. ``{"clip_low": 0.2, "clip_high": 0.5}``)
    """

    name: str
    algo: str
    overrides: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    grid: dict[str, float] = field(default_factory=dict)

    @property
    def display(self) -> str:
        return self.label or self.name

    @property
    def gradient(self) -> bool:
        return self.algo in GRADIENT_ALGOS


@dataclass(frozen=True)
class Heatmap:
    """A sweep figure: methods laid out by two swept arguments (their :attr:`Method.grid`)."""

    x: str
    y: str


@dataclass(frozen=True)
class Study:
    """
    A benchmark study.

    :param name: Its name (``python -m benchmarks run --study <name>``), the module's name
    :param title: Section title in docs/benchmarks.md
    :param description: What the study asks and how (markdown; printed in the report above its results)
    :param tasks: The tasks
    :param methods: The methods (every method on every task)
    :param seeds: Training seeds (evaluation seeds are ``1000 + seed``): below 100, or from 100 on when ``tuning``
    :param kind: ``comparison`` (learning runs), ``timing`` (time per iteration, gradient methods interleaved in one
        process: one result file per task), ``probe`` (short learning runs that only measure cost: the report uses
        them for its estimates and shows no returns) or ``search`` (equal-budget Optuna search per task and method,
        ``python -m benchmarks tune``: :mod:`benchmarks.tuning`)
    :param reference_method: The method the aggregate compares every other against (probability of improvement)
    :param heatmaps: Sweep figures (for a sweep study)
    :param timing_rounds: Rounds of alternating blocks of iterations (timing studies)
    :param tuning: A study that chooses hyperparameters: its seeds are tuning seeds (from 100 on), disjoint from the
        seeds of the studies that evaluate what it chose (a search study always is one)
    :param n_trials: Trials per task and method of a search study, each of ``len(seeds)`` runs: the equal budget
    """

    name: str
    title: str
    description: str
    tasks: tuple[Task, ...]
    methods: tuple[Method, ...]
    seeds: tuple[int, ...] = tuple(range(10))
    kind: str = "comparison"
    reference_method: str = "rpo"
    heatmaps: tuple[Heatmap, ...] = ()
    timing_rounds: int = 10
    tuning: bool = False
    n_trials: int = 0

    def __post_init__(self) -> None:
        for names, what in (([t.name for t in self.tasks], "task"), ([m.name for m in self.methods], "method")):
            duplicates = {name for name in names if names.count(name) > 1}
            if duplicates:
                raise ValueError(f"study {self.name!r}: duplicate {what} names {sorted(duplicates)}")
        if self.kind not in ("comparison", "timing", "probe", "search"):
            raise ValueError(f"study {self.name!r}: kind must be comparison, timing, probe or search, got {self.kind!r}")
        if self.kind == "search" and not (self.tuning and self.n_trials > 0):
            raise ValueError(f"search study {self.name!r} needs tuning=True and n_trials > 0")
        if self.kind == "search" and any(method.algo not in GRADIENT_ALGOS for method in self.methods):
            raise ValueError(f"search study {self.name!r}: the search spaces are those of {', '.join(GRADIENT_ALGOS)}")
        if self.tuning and any(seed < TUNING_SEED_OFFSET for seed in self.seeds):
            raise ValueError(f"tuning study {self.name!r}: seeds must be >= {TUNING_SEED_OFFSET} (evaluation seeds are below)")
        if not self.tuning and any(seed >= TUNING_SEED_OFFSET for seed in self.seeds):
            raise ValueError(f"study {self.name!r}: training seeds must be < {TUNING_SEED_OFFSET} (tuning seeds start there)")

    def task(self, name: str) -> Task:
        return next(task for task in self.tasks if task.name == name)

    def method(self, name: str) -> Method:
        return next(method for method in self.methods if method.name == name)


def sweep(base: Method, prefix: str, **axes: tuple[float, ...]) -> tuple[Method, ...]:
    """
    The methods of a grid over ``axes`` (argument -> values), each ``base`` with those arguments set, named
    ``<prefix>_<value>_<value>`` (e.g. ``clip_0.8_1``).
    """
    methods = []
    for values in itertools.product(*axes.values()):
        grid = dict(zip(axes, values, strict=True))
        methods.append(
            Method(
                name="_".join([prefix, *(f"{value:g}" for value in values)]),
                algo=base.algo,
                overrides={**base.overrides, **grid},
                label=", ".join(f"{key}={value:g}" for key, value in grid.items()),
                grid=grid,
            )
        )
    return tuple(methods)


def study_names() -> list[str]:
    return sorted(path.stem for path in STUDIES_DIR.glob("*.py") if not path.stem.startswith("_"))


def load_study(name: str) -> Study:
    """The ``STUDY`` of ``benchmarks/studies/<name>.py``."""
    if name not in study_names():
        raise SystemExit(f"No study {name!r}: the studies are {', '.join(study_names())} (files in {STUDIES_DIR}).")
    study = importlib.import_module(f"benchmarks.studies.{name}").STUDY
    assert study.name == name, f"benchmarks/studies/{name}.py defines a study named {study.name!r}"
    return study
