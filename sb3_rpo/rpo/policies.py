"""Policy of RPO, SHAC and SAPO: a Gaussian actor, an ensemble of critics with target copies, and an
observation normalizer, all of them inside the differentiable graph."""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.common.utils import get_device
from torch import nn
from torch.nn import functional as F

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
# The log-std is bounded by a soft clamp c + s * tanh((z - c) / s) of a free value z: slope 1 at the centre c, inside
# (LOG_STD_MIN, LOG_STD_MAX) everywhere, and a gradient everywhere (a hard clamp has none outside its bounds).
_LOG_STD_CENTRE, _LOG_STD_HALF_WIDTH = (LOG_STD_MAX + LOG_STD_MIN) / 2, (LOG_STD_MAX - LOG_STD_MIN) / 2
# SB3's ortho_init gains (ActorCriticPolicy): sqrt(2) on hidden layers, 0.01 on the action head, 1 on the value head.
SB3_ORTHO_GAINS = {"hidden": math.sqrt(2), "actor_output": 0.01, "critic_output": 1.0}


def bound_log_std(raw: th.Tensor) -> th.Tensor:
    """Soft clamp of a raw log-std into (LOG_STD_MIN, LOG_STD_MAX), with a non-zero gradient everywhere."""
    return _LOG_STD_CENTRE + _LOG_STD_HALF_WIDTH * th.tanh((raw - _LOG_STD_CENTRE) / _LOG_STD_HALF_WIDTH)


def unbound_log_std(log_std: float) -> float:
    """The raw value whose bounded log-std is ``log_std``, clipped to 1% of the range inside the bounds."""
    limit = 0.99 * _LOG_STD_HALF_WIDTH
    return _LOG_STD_CENTRE + _LOG_STD_HALF_WIDTH * math.atanh(
        max(-limit, min(limit, log_std - _LOG_STD_CENTRE)) / _LOG_STD_HALF_WIDTH
    )


def orthogonal_init_(layers: list[nn.Linear], hidden_gain: float, output_gain: float) -> None:
    """Orthogonal weights (``hidden_gain`` on every layer but the last, ``output_gain`` on it) and zero biases."""
    for i, layer in enumerate(layers):
        nn.init.orthogonal_(layer.weight, gain=output_gain if i == len(layers) - 1 else hidden_gain)
        nn.init.zeros_(layer.bias)


class RunningObsNormalizer(nn.Module):
    """
    Running mean and variance of observations, applied as a fixed affine map inside the graph.

    The statistics are buffers (saved with the policy) and change only when ``update()`` is called,
    which RPO does between iterations, so backpropagation through a window sees one fixed map.

    :param shape: Shape of one observation
    :param enabled: When False, ``forward`` is the identity
    :param epsilon: Added to the variance before the square root (1e-5, as DiffRL's SHAC and SAPO)
    :param clip: When not None, normalized observations are clipped to [-clip, clip] (off by default, as the
        references; a clipped entry passes no gradient)
    """

    def __init__(self, shape: tuple[int, ...], enabled: bool = True, epsilon: float = 1e-5, clip: float | None = None):
        super().__init__()
        self.enabled = enabled
        self.epsilon = epsilon
        self.clip = clip
        self.register_buffer("mean", th.zeros(shape))
        self.register_buffer("var", th.ones(shape))
        self.register_buffer("count", th.tensor(1e-4))

    def forward(self, obs: th.Tensor) -> th.Tensor:
        if not self.enabled:
            return obs
        norm_obs = (obs - self.mean) / th.sqrt(self.var + self.epsilon)
        return norm_obs if self.clip is None else norm_obs.clamp(-self.clip, self.clip)

    @th.no_grad()
    def update(self, batch: th.Tensor) -> None:
        """Merge the moments of ``batch`` (B, *shape) into the running statistics (Chan et al.)."""
        if not self.enabled:
            return
        batch = batch.reshape(-1, *self.mean.shape).to(self.mean.dtype)
        batch_mean, batch_var, batch_count = batch.mean(0), batch.var(0, unbiased=False), batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.mean += delta * batch_count / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)


def _mlp(
    input_dim: int, output_dim: int, net_arch: list[int], activation_fn: type[nn.Module], layer_norm: bool
) -> nn.Sequential:
    return nn.Sequential(
        *create_mlp(input_dim, output_dim, net_arch, activation_fn, post_linear_modules=[nn.LayerNorm] if layer_norm else None)
    )


class GaussianActor(nn.Module):
    """
    Diagonal Gaussian a = mu(s) + sigma(s) * eps over the pre-squash action.

    The log-std (a free vector, or a head on the trunk when ``state_dependent_std``) goes through a soft
    clamp into (LOG_STD_MIN, LOG_STD_MAX) = (-5, 2) (:func:`bound_log_std`), which keeps a gradient at every
    value; ``log_std_init`` is the initial log-std (clipped 1% inside the bounds).

    :param obs_dim: Size of the (normalized) observation
    :param action_dim: Size of the action
    :param net_arch: Hidden layer sizes
    :param activation_fn: Activation after each hidden layer
    :param layer_norm: LayerNorm after each hidden linear layer
    :param log_std_init: Initial log standard deviation
    :param state_dependent_std: Predict log-std from the state instead of a free parameter vector
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        net_arch: list[int],
        activation_fn: type[nn.Module],
        layer_norm: bool,
        log_std_init: float,
        state_dependent_std: bool,
    ):
        super().__init__()
        self.latent = _mlp(obs_dim, -1, net_arch, activation_fn, layer_norm)
        last = net_arch[-1] if net_arch else obs_dim
        self.mu = nn.Linear(last, action_dim)
        self.state_dependent_std = state_dependent_std
        self.raw_log_std_init = unbound_log_std(float(log_std_init))
        if state_dependent_std:
            self.log_std_head = nn.Linear(last, action_dim)
            nn.init.zeros_(self.log_std_head.weight)
            nn.init.constant_(self.log_std_head.bias, self.raw_log_std_init)
        else:
            self.log_std = nn.Parameter(th.full((action_dim,), self.raw_log_std_init))

    def orthogonal_init_(self, hidden_gain: float, output_gain: float) -> None:
        """Orthogonal init of the trunk (``hidden_gain``) and of the heads (``output_gain``), zero biases; the
        log-std head's bias stays at the raw ``log_std_init``."""
        trunk = [m for m in self.latent if isinstance(m, nn.Linear)]
        orthogonal_init_([*trunk, self.mu], hidden_gain, output_gain)
        if self.state_dependent_std:
            orthogonal_init_([self.log_std_head], output_gain, output_gain)
            nn.init.constant_(self.log_std_head.bias, self.raw_log_std_init)

    def forward(self, norm_obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Mean and standard deviation of the Gaussian at ``norm_obs``."""
        latent = self.latent(norm_obs)
        log_std = self.log_std_head(latent) if self.state_dependent_std else self.log_std.expand(latent.shape[0], -1)
        return self.mu(latent), bound_log_std(log_std).exp()


class CriticEnsemble(nn.Module):
    """
    ``n_critics`` independent state-value networks computed as one batched network.

    Each layer holds the weights of every member stacked, ``(n_critics, out, in)``, and runs as one batched
    matrix product (``torch.baddbmm``), followed by a LayerNorm per member (its own gain and bias) and the
    activation: one pass, one backward and one optimizer step for the whole ensemble instead of a loop over
    its members. Member ``i`` is the MLP ``Linear -> [LayerNorm] -> activation -> ... -> Linear(1)`` with the
    weights ``weights[l][i]``, ``biases[l][i]`` (and ``norm_weights[l][i]``, ``norm_biases[l][i]``).

    :param obs_dim: Size of the (normalized) observation
    :param net_arch: Hidden layer sizes
    :param activation_fn: Activation after each hidden layer
    :param layer_norm: LayerNorm after each hidden linear layer
    :param n_critics: Number of members of the ensemble
    """

    layer_norm_eps = 1e-5  # nn.LayerNorm's default

    def __init__(self, obs_dim: int, net_arch: list[int], activation_fn: type[nn.Module], layer_norm: bool, n_critics: int):
        super().__init__()
        if n_critics < 1:
            raise ValueError(f"n_critics must be >= 1, got {n_critics}")
        self.n_critics, self.layer_norm = n_critics, layer_norm
        dims = [obs_dim, *net_arch, 1]
        self.weights = nn.ParameterList(nn.Parameter(th.empty(n_critics, out, inp)) for inp, out in itertools.pairwise(dims))
        self.biases = nn.ParameterList(nn.Parameter(th.empty(n_critics, 1, out)) for out in dims[1:])
        if layer_norm:
            self.norm_weights = nn.ParameterList(nn.Parameter(th.ones(n_critics, 1, width)) for width in net_arch)
            self.norm_biases = nn.ParameterList(nn.Parameter(th.zeros(n_critics, 1, width)) for width in net_arch)
        self.activation = activation_fn()
        self.reset_parameters()

    @th.no_grad()
    def reset_parameters(self) -> None:
        """nn.Linear's default initialization per member and layer (and in the same order as a loop of nn.Linear)."""
        for i in range(self.n_critics):
            for weight, bias in zip(self.weights, self.biases, strict=True):
                nn.init.kaiming_uniform_(weight[i], a=math.sqrt(5))
                bound = 1 / math.sqrt(weight.shape[2])
                nn.init.uniform_(bias[i], -bound, bound)

    @th.no_grad()
    def orthogonal_init_(self, hidden_gain: float, output_gain: float) -> None:
        """Orthogonal weights per member and layer (``output_gain`` for the last layer), zero biases."""
        for layer, weight in enumerate(self.weights):
            gain = output_gain if layer == len(self.weights) - 1 else hidden_gain
            for member in weight:
                nn.init.orthogonal_(member, gain=gain)
        for bias in self.biases:
            nn.init.zeros_(bias)

    def forward(self, norm_obs: th.Tensor) -> th.Tensor:
        """Values of every member at ``norm_obs`` (batch, obs_dim): shape (n_critics, batch)."""
        # The lists' parameter dicts, read directly: indexing a ParameterList costs more than the layer's work here.
        weights, biases = self.weights._parameters.values(), self.biases._parameters.values()
        norms = None
        if self.layer_norm:
            norms = zip(self.norm_weights._parameters.values(), self.norm_biases._parameters.values(), strict=True)
        hidden = norm_obs.unsqueeze(0).expand(self.n_critics, *norm_obs.shape)
        for layer, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
            if layer:  # after a hidden layer: LayerNorm with each member's gain and bias, then the activation
                if norms is not None:
                    gain, shift = next(norms)
                    hidden = th.addcmul(shift, F.layer_norm(hidden, hidden.shape[-1:], eps=self.layer_norm_eps), gain)
                hidden = self.activation(hidden)
            hidden = th.baddbmm(bias, hidden, weight.transpose(1, 2))
        return hidden.squeeze(-1)


def gaussian_log_prob(actions: th.Tensor, mean: th.Tensor, std: th.Tensor) -> th.Tensor:
    """Joint log-density of a diagonal Gaussian, summed over action dimensions."""
    return (-((actions - mean) ** 2) / (2 * std**2) - th.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)


def squashed_entropy_estimate(mean: th.Tensor, std: th.Tensor, noise: th.Tensor, log_scale: th.Tensor) -> th.Tensor:
    """
    One-sample estimate of the entropy of the action the env receives, low + (tanh(x) + 1) (high - low) / 2
    with x ~ N(mean, std^2): -log p of that action at x = mean + std * noise (a fresh noise, independent of the
    executed action's), as SAPO estimates it. Differentiable in ``mean`` and ``std``; summed over action dimensions.

    :param log_scale: sum(log((high - low) / 2)), the affine map's contribution
    """
    x = mean + std * noise
    # log(1 - tanh(x)^2) in a stable form: 2 (log 2 - x - softplus(-2x))
    log_det_tanh = 2.0 * (math.log(2.0) - x - th.nn.functional.softplus(-2.0 * x))
    return (th.log(std) + 0.5 * math.log(2 * math.pi) + 0.5 * noise**2 + log_det_tanh).sum(-1) + log_scale


def gaussian_kl(mean_old: th.Tensor, std_old: th.Tensor, mean: th.Tensor, std: th.Tensor) -> th.Tensor:
    """KL(old || new) of diagonal Gaussians, summed over action dimensions."""
    return (th.log(std / std_old) + (std_old**2 + (mean_old - mean) ** 2) / (2 * std**2) - 0.5).sum(-1)


class RPOPolicy(BasePolicy):
    """
    Policy of RPO, SHAC and SAPO.

    The Gaussian sample ``a`` is unbounded; ``to_env_action`` squashes it into the Box inside the
    graph (tanh, then affine to the bounds), so the gradient reaches ``a`` from the simulator.
    A Box of any shape works: the Gaussian is over the flattened action, reshaped to the Box's shape
    for the environment (``to_env_action``) and in ``predict()``.

    :param observation_space: Observation space (a flat Box)
    :param action_space: Action space (a Box with finite bounds)
    :param lr_schedule: Learning-rate schedule of the actor
    :param critic_lr_schedule: Learning-rate schedule of the critics (default: the actor's)
    :param net_arch: Hidden layers, a list shared by actor and critic or ``dict(pi=[...], vf=[...])``
    :param activation_fn: Activation function (SiLU by default)
    :param layer_norm: Whether to add LayerNorm after each hidden linear layer
    :param log_std_init: Initial log standard deviation of the Gaussian
    :param state_dependent_std: Whether the log-std is a function of the state
    :param n_critics: Number of critics in the ensemble
    :param normalize_obs: Whether to normalize observations with running statistics inside the graph
    :param normalize_obs_kwargs: Keyword arguments of :class:`RunningObsNormalizer` (``epsilon``, ``clip``)
    :param ortho_init: Whether to initialize the linear layers orthogonally with zero biases (SB3's ``ortho_init``);
        when False they keep torch's default initialization
    :param ortho_gains: The gains of ``ortho_init``: keys ``hidden`` (every hidden layer), ``actor_output`` (the
        mean and log-std heads) and ``critic_output`` (the value layer); default SB3's, sqrt(2) / 0.01 / 1
    :param optimizer_class: Optimizer of the actor and of the critics
    :param optimizer_kwargs: Its keyword arguments (default ``betas=(0.7, 0.95)``, and ``fused=True`` for Adam/AdamW).
        ``weight_decay`` is 0 unless given (torch's AdamW would apply 0.01, pulling log-std and LayerNorm gains to 0)
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        critic_lr_schedule: Schedule | None = None,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.SiLU,
        layer_norm: bool = True,
        log_std_init: float = 0.0,
        state_dependent_std: bool = False,
        n_critics: int = 2,
        normalize_obs: bool = True,
        normalize_obs_kwargs: dict[str, Any] | None = None,
        ortho_init: bool = False,
        ortho_gains: dict[str, float] | None = None,
        optimizer_class: type[th.optim.Optimizer] = th.optim.AdamW,
        optimizer_kwargs: dict[str, Any] | None = None,
    ):
        if optimizer_kwargs is None:
            # SHAC's betas; the fused kernel makes the many small critic steps about 20% cheaper on CPU.
            optimizer_kwargs = {"betas": (0.7, 0.95), "fused": optimizer_class in (th.optim.Adam, th.optim.AdamW)}
        optimizer_kwargs = {"weight_decay": 0.0, **optimizer_kwargs}  # no silent weight decay
        super().__init__(
            observation_space,
            action_space,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            squash_output=True,
        )
        if net_arch is None:
            net_arch = [64, 64]
        pi_arch, vf_arch = (net_arch["pi"], net_arch["vf"]) if isinstance(net_arch, dict) else (net_arch, net_arch)
        self.net_arch = net_arch
        self.activation_fn = activation_fn
        self.layer_norm = layer_norm
        self.log_std_init = log_std_init
        self.state_dependent_std = state_dependent_std
        self.n_critics = n_critics
        self.normalize_obs = normalize_obs
        self.normalize_obs_kwargs = normalize_obs_kwargs
        self.ortho_init = ortho_init
        self.ortho_gains = ortho_gains

        obs_dim, action_dim = int(np.prod(observation_space.shape)), int(np.prod(action_space.shape))
        self.obs_normalizer = RunningObsNormalizer((obs_dim,), enabled=normalize_obs, **(normalize_obs_kwargs or {}))
        self.actor = GaussianActor(obs_dim, action_dim, pi_arch, activation_fn, layer_norm, log_std_init, state_dependent_std)
        self.critic = CriticEnsemble(obs_dim, vf_arch, activation_fn, layer_norm, n_critics)
        if ortho_init:
            gains = {**SB3_ORTHO_GAINS, **(ortho_gains or {})}
            self.actor.orthogonal_init_(gains["hidden"], gains["actor_output"])
            self.critic.orthogonal_init_(gains["hidden"], gains["critic_output"])
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_target.requires_grad_(False)
        self.register_buffer("action_low", th.as_tensor(action_space.low.reshape(-1), dtype=th.float32))
        self.register_buffer("action_high", th.as_tensor(action_space.high.reshape(-1), dtype=th.float32))
        # log|d env_action / d tanh(a)| summed over dimensions: the affine map's part of the entropy
        log_scale = np.log((action_space.high.astype(np.float64) - action_space.low) / 2).sum()
        self.register_buffer("action_log_scale", th.tensor(log_scale, dtype=th.float64))  # 0-dim: does not promote

        self.actor.optimizer = optimizer_class(self.actor.parameters(), lr=lr_schedule(1), **optimizer_kwargs)
        critic_lr = (critic_lr_schedule or lr_schedule)(1)
        self.critic.optimizer = optimizer_class(self.critic.parameters(), lr=critic_lr, **optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.pop("normalize_images")  # flat observations only: not an argument of this policy
        data.update(
            net_arch=self.net_arch,
            activation_fn=self.activation_fn,
            layer_norm=self.layer_norm,
            log_std_init=self.log_std_init,
            state_dependent_std=self.state_dependent_std,
            n_critics=self.n_critics,
            normalize_obs=self.normalize_obs,
            normalize_obs_kwargs=self.normalize_obs_kwargs,
            ortho_init=self.ortho_init,
            ortho_gains=self.ortho_gains,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
            lr_schedule=self._dummy_schedule,
        )
        return data

    @classmethod
    def load(cls, path: str, device: th.device | str = "auto") -> RPOPolicy:  # type: ignore[override]
        """Load a policy saved with ``policy.save(path)``, in the floating point type it was saved in."""
        saved = th.load(path, map_location=get_device(device), weights_only=False)
        policy = cls(**saved["data"]).to(dtype=saved["state_dict"]["action_low"].dtype)
        policy.load_state_dict(saved["state_dict"])
        return policy.to(get_device(device))

    @property
    def dtype(self) -> th.dtype:
        return self.action_low.dtype

    def normalize(self, obs: th.Tensor) -> th.Tensor:
        return self.obs_normalizer(obs.reshape(obs.shape[0], -1).to(device=self.action_low.device, dtype=self.dtype))

    def to_env_action(self, actions: th.Tensor) -> th.Tensor:
        """Squash pre-squash Gaussian actions (batch, action_dim) into the Box, differentiably: (batch, *Box shape)."""
        env_actions = self.action_low + 0.5 * (th.tanh(actions) + 1.0) * (self.action_high - self.action_low)
        return env_actions.reshape(-1, *self.action_space.shape)  # type: ignore[misc]

    def entropy_estimate(self, mean: th.Tensor, std: th.Tensor, noise: th.Tensor) -> th.Tensor:
        """One-sample estimate of the entropy of the env's action distribution (:func:`squashed_entropy_estimate`)."""
        return squashed_entropy_estimate(mean, std, noise, self.action_log_scale)

    def values(self, norm_obs: th.Tensor, target: bool = False) -> th.Tensor:
        """Values of every critic of the ensemble (or of the target copies), shape (n_critics, batch)."""
        return (self.critic_target if target else self.critic)(norm_obs)

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        actions, state = super().predict(observation, state, episode_start, deterministic)
        # SB3 returns the action space's dtype; a float64 policy (float64 env) would otherwise give float64
        # actions, and rounding at the bounds could leave the Box.
        low, high = self.action_space.low, self.action_space.high  # type: ignore[attr-defined]
        return np.clip(actions.astype(self.action_space.dtype, copy=False), low, high), state

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:  # type: ignore[override]
        # In [-1, 1]: BasePolicy.predict() maps it to the Box bounds because squash_output=True.
        mean, std = self.actor(self.normalize(observation))  # type: ignore[arg-type]
        actions = mean if deterministic else mean + std * th.randn_like(mean)
        return th.tanh(actions)

    def set_training_mode(self, mode: bool) -> None:
        self.actor.train(mode)
        self.critic.train(mode)
        self.training = mode


MlpPolicy = RPOPolicy
