"""The rollout buffer of RPO: one window of samples with their cached action-gradients."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch as th


class PolicySamples(NamedTuple):
    observations: th.Tensor  # normalized with the statistics frozen for this iteration
    actions: th.Tensor  # pre-squash Gaussian samples a
    action_grads: th.Tensor  # g = dR/da, total derivative through the simulator
    old_mean: th.Tensor
    old_std: th.Tensor
    old_log_prob: th.Tensor
    entropy_noise: th.Tensor | None = None  # the fresh noise of each sample's entropy estimate
    discounts: th.Tensor | None = None  # gamma^(k - segment start): the weight of the sample's reward in R


class CriticSamples(NamedTuple):
    observations: th.Tensor
    returns: th.Tensor  # TD(lambda) targets


@dataclass
class DiffRolloutBuffer:
    """
    Everything the policy epochs and the critic fit need from one window of ``n_steps`` x ``n_envs``
    samples, as detached tensors of shape (n_steps, n_envs, ...) on the training device.
    """

    observations: th.Tensor
    raw_observations: th.Tensor  # before normalization, for the running statistics
    actions: th.Tensor
    action_grads: th.Tensor
    old_mean: th.Tensor
    old_std: th.Tensor
    old_log_prob: th.Tensor
    rewards: th.Tensor
    dones: th.Tensor
    returns: th.Tensor  # TD(lambda) targets of the env's rewards (train() adds the entropy term's in auto mode)
    entropy_noise: th.Tensor
    discounts: th.Tensor
    entropies: th.Tensor  # entropy estimates H_k of the rollout
    entropy_returns: th.Tensor  # TD(lambda) targets of the normalized entropies E_k with zero bootstraps

    def __post_init__(self) -> None:
        for f in fields(self):
            assert not getattr(self, f.name).requires_grad, f"{f.name} must be detached"

    @property
    def size(self) -> int:
        return self.rewards.numel()

    def _flat(self, name: str) -> th.Tensor:
        tensor = getattr(self, name)
        return tensor.reshape(self.size, *tensor.shape[2:])

    def _minibatches(self, names: tuple[str, ...], batch_size: int | None) -> Generator[list[th.Tensor], None, None]:
        flat = [self._flat(name) for name in names]
        if batch_size is None or batch_size >= self.size:
            yield flat
            return
        indices = th.randperm(self.size, device=self.rewards.device)
        for start in range(0, self.size, batch_size):
            idx = indices[start : start + batch_size]
            yield [tensor[idx] for tensor in flat]

    def policy_batches(self, batch_size: int | None = None) -> Generator[PolicySamples, None, None]:
        """Shuffled minibatches for one policy epoch (the whole window when ``batch_size`` is None)."""
        for batch in self._minibatches(PolicySamples._fields, batch_size):
            yield PolicySamples(*batch)

    def critic_batches(self, n_batches: int, n_passes: int = 1) -> Generator[CriticSamples, None, None]:
        """
        ``n_passes`` passes over the window, each in ``n_batches`` shuffled minibatches of (observation, TD target).

        The passes' permutations are drawn up front (the same random stream as one ``randperm`` per pass) and the
        samples gathered once, so each minibatch is a slice.
        """
        observations, returns = self._flat("observations"), self._flat("returns")
        batch_size = -(-self.size // n_batches)
        if n_batches <= 1 or batch_size >= self.size:
            for _ in range(n_passes):
                yield CriticSamples(observations, returns)
            return
        if n_passes < 1:
            return
        indices = th.cat([th.randperm(self.size, device=self.rewards.device) for _ in range(n_passes)])
        observations, returns = observations[indices], returns[indices]
        for start in range(0, n_passes * self.size, self.size):
            for offset in range(0, self.size, batch_size):
                batch = slice(start + offset, start + min(offset + batch_size, self.size))
                yield CriticSamples(observations[batch], returns[batch])
