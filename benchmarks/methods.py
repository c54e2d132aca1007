"""
The method table: how each algorithm of a study is found, configured and built.

* Gradient methods (``rpo``, ``shac``, ``sapo``) take the entry of ``hyperparams/<algo>.yml`` for the task's
  differentiable id (what ``python -m sb3_rpo.zoo train`` reads) and train on ``make_diff_vec_env``; the
  observation normalization is in their policy (``normalize`` -> ``policy_kwargs["normalize_obs"]``).
* Model-free methods (``ppo``, ``sac``, ``tqc``, ``crossq``) take rl-zoo3's tuned entry from rl-zoo3's own
  ``hyperparams/<algo>.yml`` and train as rl-zoo3 trains them: ``make_vec_env`` (Monitor + DummyVecEnv) of the
  task's gymnasium id, VecNormalize when the entry says ``normalize``.

The classes are :data:`CLASSES` (sb3-contrib provides TQC and CrossQ). A method whose class is missing is reported
by :func:`unavailable` and its runs are skipped.
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import importlib.util
import inspect
from pathlib import Path
from typing import Any

import torch as th
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

import sb3_rpo  # noqa: F401  (registers the differentiable ids and their gymnasium faces)
from benchmarks.batched_faces import faces_vec_env
from benchmarks.study import EVAL_SEED_OFFSET, Method, Task
from sb3_rpo.common.schedules import parse_schedule

REPO_ROOT = Path(__file__).resolve().parents[1]
# rl-zoo3 keys that the runner does not reproduce: an entry that has one is refused rather than run differently.
UNSUPPORTED_ZOO_KEYS = {"frame_stack", "env_wrapper", "callback", "vec_env_wrapper", "env_kwargs"}
SCHEDULE_KEYS = ("learning_rate", "critic_learning_rate", "ent_coef_learning_rate", "clip_range", "clip_range_vf")


# Where each algorithm's class lives (rl-zoo3's registry has the same ones, but importing it costs a second per run).
CLASSES = {
    "rpo": "sb3_rpo:RPO",
    "shac": "sb3_rpo:SHAC",
    "sapo": "sb3_rpo:SAPO",
    "ppo": "stable_baselines3:PPO",
    "sac": "stable_baselines3:SAC",
    "tqc": "sb3_contrib:TQC",
    "crossq": "sb3_contrib:CrossQ",
}


def algo_class(algo: str) -> type[BaseAlgorithm]:
    """The class of ``algo``; raises ImportError (saying what to install) when it is missing."""
    if algo not in CLASSES:
        raise ValueError(f"Unknown algorithm {algo!r}: the method table has {', '.join(CLASSES)}")
    module_name, name = CLASSES[algo].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(f'{algo} needs {module_name}, which is missing: pip install "sb3-rpo[benchmark]"') from error
    if not hasattr(module, name):
        raise ImportError(f"{module_name}.{name} does not exist in the installed {module_name}")
    return getattr(module, name)


def unavailable(method: Method) -> str | None:
    """Why ``method`` cannot run here, or None."""
    try:
        algo_class(method.algo)
    except ImportError as error:
        return str(error)
    return None


# ---------------------------------------------------------------------------- hyperparameters
class ZooLinearSchedule:
    """rl-zoo3's ``lin_<x>`` of a model-free entry: ``progress_remaining * x``, decaying to 0, computed as rl-zoo3
    computes it; its repr is the entry's text, so that result files record it and compare equal across processes."""

    def __init__(self, initial_value: float):
        self.initial_value = initial_value

    def __call__(self, progress_remaining: float) -> float:
        return progress_remaining * self.initial_value

    def __repr__(self) -> str:
        return f"lin_{self.initial_value}"


def yml_entry(path: Path, env_id: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    with open(path) as file:
        entry = (yaml.safe_load(file) or {}).get(env_id)
    return None if entry is None else dict(entry)


def preprocess(entry: dict[str, Any], gradient: bool) -> dict[str, Any]:
    """
    The zoo's conversions: ``lin_<x>`` schedules (for a gradient method as ``python -m sb3_rpo.zoo`` reads them,
    decaying to 1e-5; for a model-free one as rl-zoo3 does, to 0) and policy_kwargs given as a Python string.
    """
    kwargs = dict(entry)
    for key in SCHEDULE_KEYS:
        if isinstance(kwargs.get(key), str) and kwargs[key].startswith("lin_"):
            kwargs[key] = parse_schedule(kwargs[key]) if gradient else ZooLinearSchedule(float(kwargs[key].split("_")[1]))
    if isinstance(kwargs.get("policy_kwargs"), str):
        # rl-zoo3 evaluates it where torch.nn is imported as nn (activation_fn=nn.ReLU)
        kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"], {"nn": th.nn, "th": th})
    return kwargs


def gradient_entry(algo: str, entry_id: str) -> tuple[dict[str, Any], str]:
    """
    Constructor arguments of a gradient method (with ``n_envs``, without env, seed and device) from the ``entry_id``
    entry of ``hyperparams/<algo>.yml`` (what ``python -m sb3_rpo.zoo train`` reads), else that file's ``default``
    entry, and where they come from.
    """
    path = REPO_ROOT / "hyperparams" / f"{algo}.yml"
    entry = yml_entry(path, entry_id)
    source = f"hyperparams/{algo}.yml[{entry_id}]"
    if entry is None:
        entry, source = yml_entry(path, "default"), f"hyperparams/{algo}.yml[default] (no {entry_id} entry)"
        if entry is None:
            raise ValueError(f"{path} has neither a {entry_id} nor a default entry")
    kwargs = preprocess(entry, gradient=True)
    kwargs.pop("n_timesteps", None)  # the study's budgets apply
    kwargs.pop("policy", None)
    policy_kwargs = dict(kwargs.pop("policy_kwargs", None) or {})
    if "net_arch" in kwargs:
        policy_kwargs["net_arch"] = kwargs.pop("net_arch")
    if "normalize" in kwargs:  # RPO normalizes observations inside the graph, never with a VecNormalize
        policy_kwargs["normalize_obs"] = bool(kwargs.pop("normalize"))
    kwargs["policy_kwargs"] = policy_kwargs
    return kwargs, source


def gradient_hyperparams(task: Task, method: Method) -> tuple[dict[str, Any], str]:
    """A gradient method's :func:`gradient_entry` for ``task`` (``diff_hyperparams_id``, default ``diff_env_id``)."""
    kwargs, source = gradient_entry(method.algo, task.diff_hyperparams_id or task.diff_env_id)
    return _apply(kwargs, task, method), source


def zoo_hyperparams(task: Task, method: Method) -> tuple[dict[str, Any], str]:
    """rl-zoo3's tuned entry of a model-free method (with ``n_envs`` and ``normalize``) and its source."""
    spec = importlib.util.find_spec("rl_zoo3")  # not imported: its import takes a second
    assert spec is not None and spec.origin is not None, 'the model-free methods need rl-zoo3: pip install "sb3-rpo[zoo]"'
    path = Path(spec.origin).parent / "hyperparams" / f"{method.algo}.yml"
    zoo_id = task.zoo_ids.get(method.algo, task.gym_env_id)
    entry = yml_entry(path, zoo_id)
    source = f"rl_zoo3 {importlib.metadata.version('rl_zoo3')} hyperparams/{method.algo}.yml[{zoo_id}]"
    if entry is None:
        entry, source = yml_entry(path, "default"), f"{source.rsplit('[', 1)[0]}[default] (no {zoo_id} entry)"
        assert entry is not None, f"rl-zoo3 has neither a {zoo_id} nor a default entry in {path}"
    unsupported = UNSUPPORTED_ZOO_KEYS & entry.keys()
    if unsupported:
        raise ValueError(f"{source}: rl-zoo3 keys {sorted(unsupported)} are not reproduced by the runner; pick another entry")
    kwargs = preprocess(entry, gradient=False)
    kwargs.pop("n_timesteps", None)
    kwargs.setdefault("n_envs", 1)
    kwargs.setdefault("normalize", False)
    if zoo_id != task.gym_env_id:
        source += f" applied to {task.gym_env_id}"
    return _apply(kwargs, task, method), source


def _apply(kwargs: dict[str, Any], task: Task, method: Method) -> dict[str, Any]:
    return {**kwargs, **method.overrides, **task.hyperparams.get(method.name, {})}


def hyperparams(task: Task, method: Method) -> tuple[dict[str, Any], str]:
    return gradient_hyperparams(task, method) if method.gradient else zoo_hyperparams(task, method)


def jsonable(value: Any) -> Any:
    """``value`` with what JSON cannot hold (schedules, classes such as nn.ReLU) as its repr."""
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)


# ---------------------------------------------------------------------------- models and envs
def rpo_default(name: str) -> Any:
    """The default of RPO's constructor argument ``name`` (SHAC's and SAPO's too, unless their defaults set it)."""
    from sb3_rpo import RPO

    return inspect.signature(RPO).parameters[name].default


def run_protocol(task: Task, method: Method, kwargs: dict[str, Any]) -> dict[str, Any]:
    """
    The protocol that a run of ``method`` with constructor arguments ``kwargs`` on ``task`` trains and is evaluated
    under, as its result file records it. A gradient method evaluates between iterations, so every whole number of
    iterations (``n_steps * n_envs`` env steps, :func:`rpo_default` where ``kwargs`` leave them) nearest
    ``task.eval_every``.
    """
    every = task.eval_every
    if method.gradient:
        steps_per_iteration = kwargs.get("n_steps", rpo_default("n_steps")) * kwargs.get("n_envs", rpo_default("n_envs"))
        every = max(1, round(every / steps_per_iteration)) * steps_per_iteration
    return dict(
        budget=task.budget_of(method.name),
        train_env_id=task.train_id(method),
        eval_env_id=task.eval_id,
        eval_every=every,
        n_eval_episodes=task.n_eval_episodes,
        threshold=task.threshold,
    )


def make_eval_env(task: Task, seed: int) -> VecEnv:
    """
    The one eval env of the protocol: ``make_vec_env(task.eval_id, n_envs=task.n_eval_episodes, seed=1000 + seed)``,
    one deterministic episode per env (of an embedded task, computed as one batch: :func:`faces_vec_env`).
    """
    return faces_vec_env(task.eval_id, n_envs=task.n_eval_episodes, seed=EVAL_SEED_OFFSET + seed)


def build(task: Task, method: Method, seed: int, kwargs: dict[str, Any]) -> tuple[BaseAlgorithm, VecEnv]:
    """The model of one run (on its training env) and its eval env (in the run's VecNormalize when it has one)."""
    from sb3_rpo import make_diff_vec_env

    cls = algo_class(method.algo)
    # A copy: SB3's off-policy algorithms write use_sde into the policy_kwargs they are given, which would change the
    # run's record and, through dicts shared with the study files, every later run's hyperparameters in this process.
    kwargs = copy.deepcopy(kwargs)
    eval_env = make_eval_env(task, seed)
    if method.gradient:
        n_envs = kwargs.pop("n_envs", rpo_default("n_envs"))
        env = make_diff_vec_env(task.diff_env_id, n_envs=n_envs, seed=seed, device="cpu", **task.train_env_kwargs(method))
        return cls("MlpPolicy", env, **kwargs, seed=seed, device="cpu"), eval_env
    n_envs, normalize = kwargs.pop("n_envs"), kwargs.pop("normalize")
    policy = kwargs.pop("policy", "MlpPolicy")
    # As rl-zoo3: make_vec_env (Monitor + DummyVecEnv) of the gymnasium id (of an embedded task, the same computed as
    # one batch) or, where the task says so, its DiffVecEnv; VecNormalize when the entry says so.
    if task.model_free_on_diff_env:
        env = make_diff_vec_env(task.gym_env_id, n_envs=n_envs, seed=seed, device="cpu", **task.train_env_kwargs(method))
    else:
        env = faces_vec_env(task.gym_env_id, n_envs=n_envs, seed=seed)
    if normalize:
        norm_kwargs = eval(normalize) if isinstance(normalize, str) else dict(normalize) if isinstance(normalize, dict) else {}
        if "gamma" in kwargs:  # rl-zoo3 gives VecNormalize the algorithm's discount
            norm_kwargs["gamma"] = kwargs["gamma"]
        env = VecNormalize(env, **norm_kwargs)
        eval_env = VecNormalize(eval_env, **{**norm_kwargs, "training": False, "norm_reward": False})
    return cls(policy, env, **kwargs, seed=seed, device="cpu"), eval_env
