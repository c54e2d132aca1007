"""rl-zoo3's ExperimentManager, taught to build differentiable environments for RPO, SHAC and SAPO."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from pprint import pprint
from typing import Any

import numpy as np
import optuna
import torch as th
from rl_zoo3.callbacks import TrialEvalCallback
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER
from rl_zoo3.utils import ALGOS, get_callback_list
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from stable_baselines3.common.monitor import ResultsWriter
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecEnv

from sb3_rpo.common.callbacks import CheckpointAfterUpdateCallback
from sb3_rpo.common.registry import is_diff_env_id, list_diff_envs, make_diff_vec_env
from sb3_rpo.common.schedules import parse_schedule

HYPERPARAMS_DIR = Path(__file__).parent / "hyperparams"
# Algorithms that backpropagate through the simulator: they need a DiffVecEnv.
DIFF_ALGOS = ("rpo", "shac", "sapo")
# Schedules of a differentiable algorithm's yml: "lin_<x>" decays linearly from x to the floor (rl-zoo3's to 0, which
# would run the last iteration at learning rate 0); "lin_<x>_<floor>" names the floor.
SCHEDULE_KEYS = ("learning_rate", "critic_learning_rate", "ent_coef_learning_rate")

_NUMERICAL_MESSAGE = re.compile(r"\b(nan|inf|infinity|non-?finite|not finite|singular|overflow|positive[- ]definite)\b", re.I)


def is_numerical_failure(error: BaseException) -> bool:
    """Whether ``error`` says that the numbers blew up (then a trial is pruned, not the study aborted)."""
    if isinstance(error, (ArithmeticError, th.linalg.LinAlgError)):
        return True
    return isinstance(error, RuntimeError) and bool(_NUMERICAL_MESSAGE.search(str(error)))


class EpisodeMonitorCallback(BaseCallback):
    """
    Write the episodes of a DiffVecEnv to ``<folder>/0.monitor.csv``, as SB3's Monitor does for the other
    algorithms (``plot_train`` reads these files); a DiffVecEnv cannot be wrapped in a Monitor.

    :param folder: The run's log folder
    :param env_id: Environment id, written in the file's header
    """

    def __init__(self, folder: str, env_id: str):
        super().__init__()
        self.folder = folder
        self.env_id = env_id
        self.writer: ResultsWriter | None = None

    def _init_callback(self) -> None:
        self.writer = ResultsWriter(os.path.join(self.folder, "0"), header={"t_start": time.time(), "env_id": self.env_id})

    def _on_step(self) -> bool:
        assert self.writer is not None
        for info in self.locals["infos"]:
            if "episode" in info:
                self.writer.write_row(info["episode"])
        return True

    def _on_training_end(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class ZooExperimentManager(ExperimentManager):
    """
    rl-zoo3's experiment manager for a differentiable environment id and ``--algo rpo``, ``shac`` or ``sapo``.

    * Environments (training, ``--eval-freq`` evaluation, Optuna trials) are one
      :func:`sb3_rpo.make_diff_vec_env` of the configured ``n_envs`` on the run's device, never
      Monitor + DummyVecEnv, and episodes are still written to ``monitor.csv`` for the plots.
    * ``normalize: true/false`` sets RPO's in-graph observation normalization
      (``policy_kwargs["normalize_obs"]``) instead of a VecNormalize, which would cut the gradient path.
    * A top-level ``net_arch`` (written by the Optuna samplers) is merged into ``policy_kwargs``.
    * ``learning_rate``, ``critic_learning_rate`` and ``ent_coef_learning_rate`` take a float or ``lin_<x>``, a
      linear decay from x to 1e-5 (SHAC's and SAPO's floor; rl-zoo3's ``lin_`` ends at 0), or ``lin_<x>_<floor>``.
    * A trial samples its own ``n_envs``; a trial that fails numerically is pruned.
    * ``--save-freq`` checkpoints are saved after the update of the window they are named after
      (:class:`CheckpointAfterUpdateCallback`), atomically (``RPO.save``).

    Any other algorithm goes through rl-zoo3 unchanged (e.g. PPO on a ``Diff*`` id uses its gymnasium face);
    rpo, shac and sapo refuse an id that is not differentiable. Without ``-conf`` they read the package's
    ``hyperparams/<algo>.yml``.
    The arguments are rl-zoo3's (see ``rl_zoo3.exp_manager.ExperimentManager``).
    """

    def __init__(self, args: Any, algo: str, env_id: str, *rest: Any, config: str | None = None, **kwargs: Any):
        if config is None and algo in DIFF_ALGOS:
            config = str(HYPERPARAMS_DIR / f"{algo}.yml")
        if algo in DIFF_ALGOS and not is_diff_env_id(env_id):
            raise ValueError(
                f"{algo} backpropagates through the simulator: {env_id!r} is not a registered differentiable environment "
                f"({', '.join(list_diff_envs())}). Train a model-free algorithm (ppo, sac...) on it instead."
            )
        self.differentiable = algo in DIFF_ALGOS
        super().__init__(args, algo, env_id, *rest, config=config, **kwargs)

    # ------------------------------------------------------------------ hyperparameters
    def read_hyperparameters(self) -> tuple[dict[str, Any], dict[str, Any]]:
        # rl-zoo3 tests `if self.trial_id:`, which silently ignores trial 0, the first trial of every study.
        if self.trial_id == 0 and self.storage and self.study_name:
            print("Loading from Optuna study...")
            trial_params = self.load_trial(self.storage, self.study_name, 0)
            self.custom_hyperparams = {**trial_params, **(self.custom_hyperparams or {})}
        return super().read_hyperparameters()

    def _preprocess_schedules(self, hyperparams: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        if not self.differentiable:
            return ExperimentManager._preprocess_schedules(hyperparams)
        hyperparams = dict(hyperparams)
        for key in SCHEDULE_KEYS:
            value = hyperparams.get(key)
            if isinstance(value, str):
                try:
                    hyperparams[key] = parse_schedule(value)
                except ValueError as error:
                    raise ValueError(f"{key}: {error}") from None
            elif isinstance(value, (float, int)):
                hyperparams[key] = float(value)  # constant
        return hyperparams

    def _preprocess_hyperparams(
        self, hyperparams: dict[str, Any]
    ) -> tuple[dict[str, Any], Callable | None, list[BaseCallback], Callable | None]:
        if not self.differentiable:
            return super()._preprocess_hyperparams(hyperparams)
        has_normalize = "normalize" in hyperparams
        net_arch = hyperparams.pop("net_arch", None)
        hyperparams, env_wrapper, callbacks, vec_env_wrapper = super()._preprocess_hyperparams(hyperparams)
        if env_wrapper is not None or vec_env_wrapper is not None or self.frame_stack is not None:
            raise ValueError(
                f"{self.algo} backpropagates through the simulator: env_wrapper, vec_env_wrapper and frame_stack "
                "are not supported with a differentiable environment (write the change into the task instead)."
            )
        policy_kwargs = dict(hyperparams.get("policy_kwargs") or {})
        if net_arch is not None:
            policy_kwargs["net_arch"] = net_arch
        if has_normalize:
            # In-graph running normalization of the observations; rewards are never normalized (RPO
            # differentiates the true return).
            policy_kwargs["normalize_obs"] = bool(self.normalize) and bool(self.normalize_kwargs.get("norm_obs", True))
            self.normalize = False  # no VecNormalize, nothing to save next to the model
        hyperparams["policy_kwargs"] = policy_kwargs
        return hyperparams, None, callbacks, None

    # ------------------------------------------------------------------ environments and callbacks
    def create_envs(self, n_envs: int, eval_env: bool = False, no_log: bool = False) -> VecEnv:
        if not self.differentiable:
            return super().create_envs(n_envs, eval_env=eval_env, no_log=no_log)
        env_kwargs = self.eval_env_kwargs if eval_env else self.env_kwargs
        device = get_device(self.device)
        return make_diff_vec_env(self.env_name.gym_id, n_envs=n_envs, seed=self.seed, device=device, **env_kwargs)

    def create_callbacks(self) -> None:
        super().create_callbacks()
        if self.differentiable:  # checkpoints that hold the update of the window they are named after
            self.callbacks = [
                CheckpointAfterUpdateCallback(c.save_freq, c.save_path, c.name_prefix, verbose=c.verbose)
                if type(c) is CheckpointCallback
                else c
                for c in self.callbacks
            ]
        if self.differentiable and not self.optimize_hyperparameters:
            self.callbacks.append(EpisodeMonitorCallback(self.save_path, self.env_name.gym_id))

    # ------------------------------------------------------------------ Optuna
    def objective(self, trial: optuna.Trial) -> float:
        # Which machine and process ran the trial: distributed studies share one storage.
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:
            return self._diff_objective(trial) if self.differentiable else super().objective(trial)
        except Exception as error:
            if not is_numerical_failure(error):
                raise
            print(f"Trial {trial.number} failed numerically, pruned: {error!r}")
            raise optuna.TrialPruned(f"numerical failure: {error}") from error

    def _diff_objective(self, trial: optuna.Trial) -> float:
        """rl-zoo3's objective, with the trial's own ``n_envs`` and ``net_arch`` and a DiffVecEnv."""
        sampled = HYPERPARAMS_SAMPLER[self.algo](trial, self.n_actions, self.n_envs, {})
        kwargs = {**self._hyperparams, **sampled}
        n_envs = kwargs.pop("n_envs", self.n_envs)
        policy_kwargs = dict(kwargs.get("policy_kwargs") or {})
        if "net_arch" in kwargs:
            policy_kwargs["net_arch"] = kwargs.pop("net_arch")
        kwargs["policy_kwargs"] = policy_kwargs

        env = self.create_envs(n_envs, no_log=True)
        eval_env = self.create_envs(self.n_eval_envs, eval_env=True)
        path = None
        if self.optimization_log_path is not None:
            path = os.path.join(self.optimization_log_path, f"trial_{trial.number}")
        eval_callback = TrialEvalCallback(
            eval_env,
            trial,
            best_model_save_path=path,
            log_path=path,
            n_eval_episodes=self.n_eval_episodes,
            eval_freq=max(self.n_timesteps // self.n_evaluations // n_envs, 1),
            deterministic=self.deterministic_eval,
        )
        callbacks = [*get_callback_list({"callback": self.specified_callbacks}), eval_callback]
        model = ALGOS[self.algo](
            env=env,
            tensorboard_log=None,
            seed=None,
            verbose=self.verbose if self.verbose >= 2 else 0,
            device=self.device,
            **kwargs,
        )
        try:
            model.learn(self.n_timesteps, callback=callbacks)
        except (AssertionError, ValueError) as error:  # rl-zoo3's convention: invalid or NaN-producing samples
            print(error)
            print("============\nSampled hyperparams:")
            pprint(sampled)
            raise optuna.TrialPruned() from error
        finally:
            env.close()
            eval_env.close()
        trial.set_user_attr("skipped_updates", model.skipped_updates)
        reward = eval_callback.last_mean_reward
        if eval_callback.is_pruned:
            raise optuna.TrialPruned()
        if not np.isfinite(reward):
            raise optuna.TrialPruned(f"non-finite evaluation return {reward}")
        return float(reward)
