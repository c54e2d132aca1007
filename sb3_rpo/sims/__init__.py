"""
Adapters to real differentiable simulators, each an optional extra.

Importing this package registers every adapter's ids (``make_diff_vec_env``, ``RPO("MlpPolicy", id)`` and the zoo
accept them) without importing any simulator: the simulator is imported when an env is built, and a missing extra
is reported with the ``pip install`` line that adds it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from sb3_rpo.common.registry import register_diff_env


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` of the optional extra ``extra``, or raise an ImportError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"This environment needs the Python package {module!r}, which is missing ({error}). "
            f'Install it with: pip install "sb3-rpo[{extra}]"'
        ) from error


def _register_all() -> None:
    # Imported here, after require() exists: the adapter modules import nothing heavy at module level.
    from sb3_rpo.sims import mjx, mujoco_fd, rewarped

    for module in (mujoco_fd, rewarped, mjx):
        for env_id, entry_point, max_episode_steps, kwargs in module.TASKS:
            register_diff_env(env_id, entry_point, max_episode_steps=max_episode_steps, **kwargs)


_register_all()
