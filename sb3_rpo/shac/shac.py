"""Short-Horizon Actor-Critic (SHAC), Xu et al. 2022: RPO with a single epoch."""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.type_aliases import MaybeCallback

from sb3_rpo.common.diff_vec_env import DiffVecEnv
from sb3_rpo.rpo.policies import RPOPolicy
from sb3_rpo.rpo.rpo import RPO

# What makes RPO's update SHAC's: one policy step per window on the whole batch, no clip band, no KL.
SHAC_SETTINGS: dict[str, Any] = dict(n_epochs=1, batch_size=None, kl_coef=0.0, clip_low=None, clip_high=None)


class SHAC(RPO):
    """
    Short-Horizon Actor-Critic (Xu et al., ICLR 2022, https://arxiv.org/abs/2204.07137).

    SHAC is RPO with one policy step per window on the whole batch: the importance weight is then
    exactly 1 and the KL exactly 0, so the update is the plain backpropagation-through-time gradient
    of the window return. This class is :class:`RPO` with ``n_epochs=1``, ``batch_size=None``, no clip
    band and ``kl_coef=0``; every other parameter, and its default, is RPO's (see its docstring).

    :param policy: The policy model to use (``"MlpPolicy"`` or a subclass of :class:`RPOPolicy`)
    :param env: A :class:`sb3_rpo.DiffVecEnv` or the id of a registered differentiable env
    :param kwargs: RPO's other parameters (``learning_rate``, ``n_steps``, ``gamma``, ``tau``, ...)
    """

    def __init__(self, policy: str | type[RPOPolicy], env: DiffVecEnv | str | None, **kwargs: Any):
        fixed = sorted(set(kwargs) & set(SHAC_SETTINGS))
        if fixed:
            raise TypeError(f"SHAC fixes {', '.join(fixed)} (one epoch, no clip band, no KL); use RPO to set them.")
        super().__init__(policy, env, **SHAC_SETTINGS, **kwargs)

    def learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "SHAC",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SHAC:
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)
