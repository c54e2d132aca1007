"""Opt-in ``torch.compile`` of a torch task's step functions (GitHub issue 14)."""

from __future__ import annotations

from typing import Any

import torch as th

from sb3_rpo.common.diff_vec_env import DiffTaskVecEnv
from sb3_rpo.common.jacobian_env import JacobianVecEnv

STEP_FUNCTIONS = ("dynamics", "reward", "observation", "terminated")


def compile_task(env: DiffTaskVecEnv, **compile_kwargs: Any) -> DiffTaskVecEnv:
    """
    Replace, on this instance, the functions a :class:`DiffTaskVecEnv` calls at every step (``dynamics``, ``reward``,
    ``observation``, ``terminated``) by their ``torch.compile``; the env's bookkeeping (resets, non-finite guards,
    episode statistics) stays eager.

    Opt-in: it pays off on tasks whose step is many small elementwise operations, and costs seconds (warm cache) to
    a minute (cold) of compilation on first use, and a C++ compiler. ``benchmarks/compile_task.py`` measured a gradient
    window of 16 envs x 32 steps on one CPU thread at 2.3x for DiffAcrobot-v0 (RK4) and 1.5x for DiffReacher-v0, with
    float64 gradients equal to the eager ones to 2e-15, but 0.7-1.0x for DiffPendulum-v0 and DiffCartPoleSwingUp-v0;
    DiffQuadrotor-v0 does not compile (docs/performance.md).
    A :class:`JacobianVecEnv`'s ``dynamics`` runs in its simulator and is left as it is.

    :param env: The environment (its class's functions are untouched: other instances stay eager)
    :param compile_kwargs: Arguments of ``torch.compile`` (default ``dynamic=False``: one graph per batch size)
    :return: The same env
    """
    if not isinstance(env, DiffTaskVecEnv):
        raise TypeError(f"compile_task needs a DiffTaskVecEnv (a torch task), got {type(env).__name__}")
    compile_kwargs = {"dynamic": False, **compile_kwargs}
    for name in STEP_FUNCTIONS:
        if name == "dynamics" and isinstance(env, JacobianVecEnv):
            continue
        setattr(env, name, th.compile(getattr(env, name), **compile_kwargs))
    return env
