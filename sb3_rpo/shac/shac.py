"""Short-Horizon Actor-Critic (SHAC), Xu et al. 2022: RPO with a single epoch."""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.type_aliases import Schedule

from sb3_rpo.common.diff_vec_env import DiffVecEnv
from sb3_rpo.rpo.policies import RPOPolicy
from sb3_rpo.rpo.rpo import RPO


class SHAC(RPO):
    """
    Short-Horizon Actor-Critic (Xu et al., ICLR 2022, https://arxiv.org/abs/2204.07137).

    SHAC is RPO with one policy step per window on the whole batch: the importance weight is then
    exactly 1 and the KL exactly 0, so the update is the plain backpropagation-through-time gradient
    of the window return. This class is :class:`RPO` with ``n_epochs=1``, ``batch_size=None``, no clip
    band and ``kl_coef=0``; every other parameter is RPO's (see its docstring).
    """

    def __init__(
        self,
        policy: str | type[RPOPolicy],
        env: DiffVecEnv | str | None,
        learning_rate: float | Schedule = 5e-4,
        critic_learning_rate: float | Schedule | None = None,
        n_steps: int = 32,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        ent_coef: float | str = 0.0,
        target_entropy: float | str = "auto",
        tau: float = 0.8,
        n_critic_iterations: int = 16,
        n_critic_batches: int = 4,
        max_grad_norm: float = 1.0,
        n_envs: int = 64,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            critic_learning_rate=critic_learning_rate,
            n_steps=n_steps,
            n_epochs=1,
            batch_size=None,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            target_entropy=target_entropy,
            kl_coef=0.0,
            clip_low=None,
            clip_high=None,
            tau=tau,
            n_critic_iterations=n_critic_iterations,
            n_critic_batches=n_critic_batches,
            max_grad_norm=max_grad_norm,
            n_envs=n_envs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def learn(
        self,
        total_timesteps: int,
        callback=None,
        log_interval: int = 1,
        tb_log_name: str = "SHAC",  # type: ignore[no-untyped-def]
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ):
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)
