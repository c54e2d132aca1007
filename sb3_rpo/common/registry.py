"""Registry of differentiable environments: ``make_diff_vec_env`` and ``list_diff_envs``.

Each registered id is also registered with gymnasium as a single (numpy) environment, so that
``gymnasium.make("DiffPendulum-v0")`` works and SB3's ``check_env`` passes on it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch as th

from sb3_rpo.common.diff_vec_env import DiffVecEnv


@dataclass
class DiffEnvSpec:
    """How to build one registered differentiable env: ``entry_point`` is ``"module:Class"`` or a callable."""

    id: str
    entry_point: Any
    kwargs: dict[str, Any] = field(default_factory=dict)
    max_episode_steps: int | None = None

    def load(self) -> Any:
        if callable(self.entry_point):
            return self.entry_point
        module, name = self.entry_point.split(":")
        return getattr(importlib.import_module(module), name)


_REGISTRY: dict[str, DiffEnvSpec] = {}


def register_diff_env(
    id: str, entry_point: Any, max_episode_steps: int | None = None, register_gym: bool = True, **kwargs: Any
) -> None:
    """
    Register a differentiable env class under ``id``.

    :param id: Environment id, e.g. ``"DiffPendulum-v0"``
    :param entry_point: A :class:`DiffVecEnv` subclass or ``"module:Class"``; it is called as
        ``cls(num_envs=..., device=..., dtype=..., seed=..., **kwargs)``
    :param max_episode_steps: Episode length of both faces: passed to the env class as ``max_episode_steps``
        (``make_diff_vec_env(id, max_episode_steps=K)`` overrides it) and registered with gymnasium, whose ``TimeLimit``
        then ends the gymnasium face's episodes (``gymnasium.make(id, max_episode_steps=M)`` overrides it there).
        None keeps the class's own length on both faces (``gymnasium.make(id, max_episode_steps=M)`` can then only
        shorten it)
    :param register_gym: Also register a single-env gymnasium version of it
    :param kwargs: Default keyword arguments of the env class
    """
    _REGISTRY[id] = DiffEnvSpec(id, entry_point, dict(kwargs), max_episode_steps)
    if register_gym and id not in gym.registry:
        gym.register(
            id=id,
            entry_point="sb3_rpo.common.gym_env:DiffGymEnv",
            kwargs={"diff_env_id": id, "gymnasium_time_limit": max_episode_steps is not None},
            max_episode_steps=max_episode_steps,
            disable_env_checker=True,
        )


def diff_env_render_modes(env_id: str) -> tuple[str, ...]:
    """The render modes of a registered id's env class (:attr:`DiffVecEnv.render_modes`; a factory: ``rgb_array``)."""
    return tuple(getattr(_REGISTRY[env_id].load(), "render_modes", ("rgb_array",)))


def list_diff_envs() -> list[str]:
    """Ids of every registered differentiable environment."""
    return sorted(_REGISTRY)


def is_diff_env_id(env_id: Any) -> bool:
    return isinstance(env_id, str) and env_id in _REGISTRY


def make_diff_vec_env(
    env_id: str,
    n_envs: int = 1,
    seed: int | None = None,
    device: th.device | str = "cpu",
    dtype: th.dtype = th.float32,
    **kwargs: Any,
) -> DiffVecEnv:
    """
    Build ``n_envs`` copies of a registered differentiable environment as one :class:`DiffVecEnv`.

    :param env_id: A registered id (see :func:`list_diff_envs`)
    :param n_envs: Number of environments simulated in one batch
    :param seed: Seed of the environment's random generator
    :param device: Device of the simulation (``"cpu"``, ``"cuda"``, ...)
    :param dtype: ``torch.float32`` or ``torch.float64``
    :param kwargs: Task options, overriding the registered defaults (e.g. ``max_episode_steps``, which overrides the
        registered episode length)
    """
    if env_id not in _REGISTRY:
        raise gym.error.UnregisteredEnv(
            f"No differentiable environment with id {env_id!r}. Registered ids: {', '.join(list_diff_envs())}. "
            "Register your own with sb3_rpo.register_diff_env()."
        )
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    spec = _REGISTRY[env_id]
    kwargs = {**spec.kwargs, **kwargs}
    if spec.max_episode_steps is not None:
        kwargs.setdefault("max_episode_steps", spec.max_episode_steps)  # the registered length; the caller's wins
    env = spec.load()(num_envs=n_envs, device=device, dtype=dtype, seed=seed, **kwargs)
    env.spec_id = env_id
    return env
