"""Check the gradients of a :class:`DiffTaskVecEnv` over a window against central differences."""

from __future__ import annotations

from dataclasses import dataclass

import torch as th

from sb3_rpo.common.diff_vec_env import DiffTaskVecEnv


@dataclass
class WindowGradientCheck:
    """A directional derivative of a window objective with respect to the actions, two ways."""

    analytic: float  # through diff_step and autograd, as RPO and SHAC compute it
    numerical: dict[float, float]  # central difference of the whole window, for each step size
    gradient_norm: float  # norm of the whole action-gradient

    def rel_error(self, eps: float) -> float:
        return abs(self.analytic - self.numerical[eps]) / max(abs(self.numerical[eps]), 1e-12)


def check_window_gradient(
    env: DiffTaskVecEnv,
    window: int,
    action_scale: float = 0.3,
    eps: tuple[float, ...] = (1e-5, 1e-7),
    seed: int = 0,
) -> WindowGradientCheck:
    """
    Compare the action-gradient of a window objective with central differences of the whole window.

    The objective is the window's return plus a random linear function of its observations (so that tasks with
    a constant reward are checked too), from the env's current state, under random actions in
    ``[-action_scale, action_scale]`` times the action bounds. Terminations are switched off during the check:
    a reset inside the window would make the objective non-smooth. Use ``dtype=torch.float64`` envs; the state is
    restored afterwards.

    :param env: The environment, reset
    :param window: Number of steps
    :param action_scale: Scale of the random actions
    :param eps: Step sizes of the central differences (their disagreement shows where the objective is not smooth)
    :param seed: Seed of the actions, observation weights and direction
    """
    generator = th.Generator().manual_seed(seed)
    low, high = (th.as_tensor(b, dtype=env.dtype) for b in (env.action_space.low, env.action_space.high))
    shape = (window, env.num_envs, *env.action_space.shape)
    unit = 2 * th.rand(shape, generator=generator, dtype=env.dtype) - 1
    actions = (low + high) / 2 + action_scale * (high - low) / 2 * unit
    weights = 0.1 * th.randn(window, env.num_envs, env.observation_space.shape[0], generator=generator, dtype=env.dtype)
    direction = th.randn(shape, generator=generator, dtype=env.dtype)
    start, elapsed = env.state.detach().clone(), env.elapsed_steps.clone()

    def objective(actions: th.Tensor) -> th.Tensor:
        env.state, env.elapsed_steps = start.clone(), th.zeros_like(elapsed)
        total = th.zeros((), dtype=env.dtype)
        for t in range(window):
            obs, rewards, *_ = env.diff_step(actions[t].to(env.device))
            total = total + rewards.sum() + (obs * weights[t].to(env.device)).sum()
        return total

    env.terminated = lambda state: th.zeros(state.shape[0], dtype=th.bool, device=state.device)
    try:
        leaf = actions.clone().requires_grad_(True)
        (gradient,) = th.autograd.grad(objective(leaf), leaf)
        with th.no_grad():
            differences = {e: objective(actions + e * direction) - objective(actions - e * direction) for e in eps}
        numerical = {e: difference.item() / (2 * e) for e, difference in differences.items()}
    finally:
        del env.terminated
        env.state, env.elapsed_steps = start, elapsed
    return WindowGradientCheck((gradient * direction).sum().item(), numerical, gradient.norm().item())
