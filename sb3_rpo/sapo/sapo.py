"""Soft Analytic Policy Optimization (SAPO), Xing et al. 2025: RPO's shared update with one epoch and a learned temperature."""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.type_aliases import MaybeCallback
from torch import nn

from sb3_rpo.common.diff_vec_env import DiffVecEnv
from sb3_rpo.common.schedules import linear_schedule
from sb3_rpo.rpo.policies import RPOPolicy
from sb3_rpo.rpo.rpo import RPO
from sb3_rpo.shac.shac import SHAC_SETTINGS, configuration

# What makes the shared update SAPO's: SHAC's single whole-batch epoch, and SAPO's normalized entropy in the return.
SAPO_SETTINGS: dict[str, Any] = dict(**SHAC_SETTINGS, normalize_entropy=True)
# The authors' public code (etaoxing/mineral, cfgs/agent/DFlexAntSAPO.yaml over DFlexAntSHAC2.yaml), see docs/sapo.md.
SAPO_DEFAULTS: dict[str, Any] = dict(
    learning_rate=linear_schedule(2e-3),  # actor 2e-3, linear to 1e-5
    critic_learning_rate=linear_schedule(5e-4),  # critic 5e-4, linear to 1e-5
    ent_coef="auto",  # alpha learned from init 1
    target_entropy="auto",  # -dim(A) / 2 for actions in (-1, 1)
    ent_coef_learning_rate=5e-3,  # constant
    tau=1.0,  # no target network: the target is the online critic after each fit
    max_grad_norm=0.5,
    n_steps=32,
    gamma=0.99,
    gae_lambda=0.95,
    n_critic_iterations=16,
    n_critic_batches=4,
)
SAPO_POLICY_KWARGS: dict[str, Any] = dict(
    net_arch=dict(pi=[128, 64, 32], vf=[64, 64]),
    activation_fn=nn.SiLU,
    layer_norm=True,
    state_dependent_std=True,  # a log-std head on the trunk
    log_std_init=0.0,  # the log-std head's bias (mineral: zero)
    n_critics=2,
    ortho_init=True,
    ortho_gains=dict(hidden=1.0, actor_output=1.0, critic_output=1.0),  # orthogonal gain 1 on every layer
    optimizer_class=th.optim.AdamW,
    optimizer_kwargs=dict(betas=(0.7, 0.95), weight_decay=0.0, fused=True),
)


class SAPO(RPO):
    """
    Soft Analytic Policy Optimization (Xing et al., ICLR 2025, https://arxiv.org/abs/2412.12089).

    SAPO maximizes the soft window return sum_k gamma^k (r_k + alpha * E_k) + gamma^H V(s_H) by
    backpropagation through the simulator, with E_k = (H_k - target) / (2 |target|) the normalized
    one-sample estimate of the entropy of the env's action distribution at s_k (the tanh-squashed
    Gaussian; :func:`sb3_rpo.rpo.policies.squashed_entropy_estimate`), and a temperature alpha learned
    towards the target entropy -dim(A) / 2. It is a configuration of RPO's shared update, not a copy:
    one policy step per window on the whole batch (``n_epochs=1``, no clip band, ``kl_coef=0``), so
    that the step is exactly BPTT of the soft return (tested in float64), ``ent_coef="auto"`` with
    ``normalize_entropy=True``, and the defaults of the authors' public code (``docs/sapo.md``):

    * actor [128, 64, 32], critics 2 x [64, 64], LayerNorm + SiLU, orthogonal init with gain 1 on every
      layer, a state-dependent log-std head bounded in [-5, 2];
    * AdamW with betas (0.7, 0.95); actor lr 2e-3 and critic lr 5e-4, both decaying linearly to 1e-5;
      temperature: init 1, lr 5e-3 constant; gradient-norm clip 0.5 (not on the temperature);
    * H = 32, gamma 0.99, TD(lambda 0.95) targets from the minimum of the critics, the window bootstrap
      from their mean; 16 critic passes x 4 minibatches; no target network (``tau=1``).

    The window bootstrap is the paper's V(s_{k+1}); the published code uses V(s_k) there (an
    off-by-one). The deviations forced by sb3-rpo's structure (no weight decay, the log-std's soft
    clamp, shuffled critic minibatches, the observation statistics' prior, the temperature's Adam) are
    listed in ``docs/sapo.md``. ``policy_kwargs`` are merged over the policy defaults above; every other
    parameter is RPO's (see its docstring), with the defaults above.

    :param policy: The policy model to use (``"MlpPolicy"`` or a subclass of :class:`RPOPolicy`)
    :param env: A :class:`sb3_rpo.DiffVecEnv` or the id of a registered differentiable env
    :param kwargs: RPO's other parameters (``learning_rate``, ``ent_coef``, ``target_entropy``, ``tau``, ...)
    """

    def __init__(self, policy: str | type[RPOPolicy], env: DiffVecEnv | str | None, **kwargs: Any):
        super().__init__(policy, env, **configuration("SAPO", kwargs, SAPO_SETTINGS, SAPO_DEFAULTS, SAPO_POLICY_KWARGS))

    def learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "SAPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SAPO:
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)
