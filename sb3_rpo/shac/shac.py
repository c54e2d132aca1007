"""Short-Horizon Actor-Critic (SHAC), Xu et al. 2022: RPO with a single epoch, and DiffRL's defaults."""

from __future__ import annotations

import math
from typing import Any

import torch as th
from stable_baselines3.common.type_aliases import MaybeCallback
from torch import nn

from sb3_rpo.common.diff_vec_env import DiffVecEnv
from sb3_rpo.common.schedules import linear_schedule
from sb3_rpo.rpo.policies import RPOPolicy
from sb3_rpo.rpo.rpo import RPO

# What makes RPO's update SHAC's: one policy step per window on the whole batch, no clip band, no KL.
SHAC_SETTINGS: dict[str, Any] = dict(n_epochs=1, batch_size=None, kl_coef=0.0, clip_low=None, clip_high=None)
# DiffRL's SHAC (github.com/NVlabs/DiffRL, examples/cfg/shac/*.yaml and models/): overridable defaults.
SHAC_DEFAULTS: dict[str, Any] = dict(
    learning_rate=linear_schedule(2e-3),  # actor 2e-3, linear to 1e-5 (lr_schedule: linear)
    critic_learning_rate=linear_schedule(2e-4),  # Hopper's critic_learning_rate
    tau=0.8,  # target_critic_alpha 0.2
    max_grad_norm=1.0,
)
SHAC_POLICY_KWARGS: dict[str, Any] = dict(
    net_arch=dict(pi=[128, 64, 32], vf=[64, 64]),
    activation_fn=nn.ELU,
    layer_norm=True,
    log_std_init=-1.0,  # a state-independent log-std parameter initialized to -1
    state_dependent_std=False,
    n_critics=1,  # one critic and its target copy
    ortho_init=True,
    ortho_gains=dict(hidden=math.sqrt(2), actor_output=math.sqrt(2), critic_output=math.sqrt(2)),  # every layer sqrt(2)
    optimizer_class=th.optim.Adam,
    optimizer_kwargs=dict(betas=(0.7, 0.95), fused=True),
)


def configuration(
    name: str, kwargs: dict[str, Any], settings: dict[str, Any], defaults: dict[str, Any], policy_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """
    RPO's arguments of a configuration: its fixed ``settings`` (refused if given), its ``defaults`` under the
    user's ``kwargs``, and its policy defaults under the user's ``policy_kwargs``.
    """
    fixed = sorted(set(kwargs) & set(settings))
    if fixed:
        raise TypeError(f"{name} fixes {', '.join(fixed)} ({name}'s update); use RPO to set them.")
    user_policy_kwargs = kwargs.pop("policy_kwargs", None) or {}
    return {**settings, **defaults, **kwargs, "policy_kwargs": {**policy_kwargs, **user_policy_kwargs}}


class SHAC(RPO):
    """
    Short-Horizon Actor-Critic (Xu et al., ICLR 2022, https://arxiv.org/abs/2204.07137).

    SHAC is RPO with one policy step per window on the whole batch: the importance weight is then
    exactly 1 and the KL exactly 0, so the update is the plain backpropagation-through-time gradient
    of the window return. This class is :class:`RPO` with ``n_epochs=1``, ``batch_size=None``, no clip
    band and ``kl_coef=0``, and the defaults of DiffRL's SHAC (``docs/shac.md``, ``docs/defaults.md``):
    actor learning rate 2e-3 and critic 2e-4, both decaying linearly to 1e-5; Adam with betas
    (0.7, 0.95) and no weight decay; one critic and a target copy (tau 0.8); gradient-norm clip 1;
    actor [128, 64, 32] and critic [64, 64] with LayerNorm and ELU, orthogonal init with gain sqrt(2)
    on every layer, a state-independent log-std initialized to -1. ``policy_kwargs`` are merged over
    these policy defaults; every other parameter is RPO's (see its docstring).

    :param policy: The policy model to use (``"MlpPolicy"`` or a subclass of :class:`RPOPolicy`)
    :param env: A :class:`sb3_rpo.DiffVecEnv` or the id of a registered differentiable env
    :param kwargs: RPO's other parameters (``learning_rate``, ``n_steps``, ``gamma``, ``tau``, ...)
    """

    def __init__(self, policy: str | type[RPOPolicy], env: DiffVecEnv | str | None, **kwargs: Any):
        super().__init__(policy, env, **configuration("SHAC", kwargs, SHAC_SETTINGS, SHAC_DEFAULTS, SHAC_POLICY_KWARGS))

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
