"""
Saving and loading for algorithms that train on a DiffVecEnv: atomic saves, and files that hold what an exact
resume needs (generator states, the last observations, the environment's state).
"""

from __future__ import annotations

import base64
import io
import json
import os
import pathlib
import random
import warnings
import zipfile
from typing import Any, TypeVar

import cloudpickle
import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.type_aliases import GymEnv

from sb3_rpo.common.diff_vec_env import DiffVecEnv

SelfExactResume = TypeVar("SelfExactResume", bound="ExactResumeMixin")


def _fsync(path: pathlib.Path, directory: bool = False) -> None:
    """Flush ``path`` (a file, or a folder's entries) to the disk; folders cannot be opened everywhere (Windows)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_saved_data(path: str | pathlib.Path | io.BufferedIOBase) -> dict[str, Any] | None:
    """The JSON ``data`` entry of an SB3 zip file, or None when it cannot be read (SB3's load then reports why)."""
    try:
        if isinstance(path, (str, pathlib.Path)):
            candidate = pathlib.Path(path)
            if not candidate.exists():
                candidate = pathlib.Path(f"{path}.zip")
            with zipfile.ZipFile(candidate) as archive:
                return json.loads(archive.read("data"))
        start = path.tell()
        try:
            with zipfile.ZipFile(path) as archive:  # type: ignore[arg-type]
                return json.loads(archive.read("data"))
        finally:
            path.seek(start)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, AttributeError):
        return None


def _saved_policy_class(data: dict[str, Any]) -> type | None:
    try:
        return cloudpickle.loads(base64.b64decode(data["policy_class"][":serialized:"]))
    except Exception:  # a class that does not unpickle here: SB3's load reports it
        return None


def _sb3_algorithm_of(policy_name: str, data: dict[str, Any]) -> str:
    """The SB3 algorithm that saves a policy of this class (SB3's files do not name their algorithm)."""
    if "ActorCritic" in policy_name:
        return "PPO" if "clip_range" in data else "A2C"
    for prefix, algorithm in (("SAC", "SAC"), ("TD3", "TD3"), ("DQN", "DQN"), ("QNetwork", "DQN")):
        if policy_name.startswith(prefix):
            return algorithm
    return "another algorithm's"


class ExactResumeMixin(BaseAlgorithm):
    """
    SB3's ``save``/``load``, atomic and exact: mixed in before SB3's algorithm class (``class RPO(ExactResumeMixin,
    OnPolicyAlgorithm)``) by an algorithm whose ``env`` is a :class:`DiffVecEnv` and whose torch face keeps its last
    observations in ``_last_obs_t``.
    """

    _last_obs_t: th.Tensor | None

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: list[str] | None = None,
        include: list[str] | None = None,
    ) -> None:
        """
        SB3's ``save``, atomic and with what an exact resume needs.

        A path is written beside (``.<name>.<pid>.tmp`` in the same folder), flushed to disk, then renamed over the
        target (``os.replace``): a crash or a kill during a save leaves the previous file whole. Besides SB3's
        contents (parameters, optimizers, observation statistics, counters), the file holds the state of torch's,
        numpy's and Python's global generators, the last observations and the environment's own state
        (:meth:`DiffVecEnv.get_state`, when the env provides it); :meth:`load` restores them.

        :param path: Path of the file (``.zip`` is added when it has no suffix) or a file-like object
        :param exclude: Names of parameters that should be excluded in addition to the default ones
        :param include: Names of parameters that might be excluded but should be included anyway
        """
        self._resume_state = self._get_resume_state()
        try:
            if not isinstance(path, (str, pathlib.Path)):
                super().save(path, exclude, include)
                return
            final = pathlib.Path(path)
            if final.suffix == "":  # SB3's rule
                final = final.with_name(f"{final.name}.zip")
            final.parent.mkdir(parents=True, exist_ok=True)
            partial = final.with_name(f".{final.name}.{os.getpid()}.tmp")
            try:
                super().save(partial, exclude, include)
                _fsync(partial)
                os.replace(partial, final)
                _fsync(final.parent, directory=True)  # the rename itself
            finally:
                partial.unlink(missing_ok=True)  # only left when the save failed
        finally:
            del self._resume_state

    def _get_resume_state(self) -> dict[str, Any]:
        """What :meth:`load` needs, besides SB3's contents, to continue training exactly as if it had never stopped."""
        return {
            "algorithm": type(self).__name__,
            "torch_rng": th.get_rng_state(),
            "cuda_rng": th.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
            "last_obs": self._last_obs,
            "last_episode_starts": self._last_episode_starts,
            "last_obs_t": None if self._last_obs_t is None else self._last_obs_t.detach().cpu(),
            "env": self.env.get_state() if isinstance(self.env, DiffVecEnv) else None,
        }

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfExactResume],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfExactResume:
        """
        SB3's ``load``, which refuses another algorithm's file (naming it) and restores what :meth:`save` kept for
        an exact resume: the global generators' states (after SB3's reseeding, not overwritten by it) and, when
        ``env`` is the same kind of env (class, ``n_envs``, dtype) and the file holds its state, the environment's
        state and the last observations. Then ``learn(..., reset_num_timesteps=False)`` continues the episodes where
        they were (``force_reset`` has nothing left to reset) and equals an uninterrupted run on the CPU.
        The arguments are SB3's (see ``BaseAlgorithm.load``).
        """
        cls._check_saved_algorithm(path)
        model = super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
        resume = model.__dict__.pop("_resume_state", None)
        if resume is not None:
            model._restore_resume_state(resume)
        return model

    def _restore_resume_state(self, resume: dict[str, Any]) -> None:
        th.set_rng_state(resume["torch_rng"])
        if resume["cuda_rng"] is not None and self.device.type == "cuda":
            th.cuda.set_rng_state_all(resume["cuda_rng"])
        np.random.set_state(resume["numpy_rng"])
        random.setstate(resume["python_rng"])
        if not isinstance(self.env, DiffVecEnv) or resume["env"] is None:
            return
        try:
            self.env.set_state(resume["env"])
        except (ValueError, NotImplementedError) as error:
            warnings.warn(
                f"{type(self).__name__}.load: the environment's saved state was not restored ({error}); "
                "learn() starts new episodes.",
                stacklevel=3,
            )
            return
        self._last_obs, self._last_episode_starts = resume["last_obs"], resume["last_episode_starts"]
        if resume["last_obs_t"] is not None:
            self._last_obs_t = resume["last_obs_t"].to(self.env.device)

    @classmethod
    def _check_saved_algorithm(cls, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """Raise an error naming the algorithm of the file at ``path`` if it is not ``cls``'s (other files: SB3 decides)."""
        data = _read_saved_data(path)
        if data is None:
            return
        found = (data.get("_resume_state") or {}).get("algorithm")
        policy = _saved_policy_class(data)
        if found is None and policy is not None and not policy.__module__.startswith("sb3_rpo"):
            found = _sb3_algorithm_of(policy.__name__, data)
            how = f"load it with {found}.load()" if found.isupper() else "load it with the algorithm that saved it"
            where = f"its policy is {policy.__module__}.{policy.__name__}"
            raise ValueError(f"{path} holds a {found} model ({where}), not a {cls.__name__} model: {how}.")
        if found is not None and found != cls.__name__:
            raise ValueError(f"{path} holds a {found} model, not a {cls.__name__} model: load it with {found}.load().")
