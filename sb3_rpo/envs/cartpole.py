"""DiffCartPoleSwingUp-v0: cart-pole swing-up with gymnasium CartPole-v1's equations of motion, continuous force."""

from __future__ import annotations

import math

import numpy as np
import torch as th

from sb3_rpo.common.diff_vec_env import DiffTaskVecEnv


class DiffCartPoleSwingUp(DiffTaskVecEnv):
    """
    Cart-pole swing-up: push the cart so that the pole, starting hanging down, swings up and balances.
    The equations of motion, constants and Euler integrator are exactly those of gymnasium's
    ``CartPole-v1`` (``theta = 0`` is upright); the force is continuous and the reward is smooth, in the
    style of SHAC's DFlex cart-pole.

    * state: ``[x, x_dot, theta, theta_dot]`` (``theta`` is not wrapped, as in gymnasium)
    * initial state: ``theta = pi + U(-0.05, 0.05)``, the others ``U(-0.05, 0.05)``
    * observation: ``[x, x_dot, cos(theta), sin(theta), theta_dot]``
    * action: ``u`` in ``[-1, 1]``, force ``force_mag * u`` (``force_mag = 10`` N as in CartPole-v1);
      actions outside the bounds are clipped, where their gradient is zero
    * reward, of the state reached ``s'``:
      ``(1 + cos(theta'))/2 - 0.1 (x'/x_threshold)^2 - 0.001 (x_dot'^2 + theta_dot'^2) - 0.001 u^2``,
      1 when balanced at rest in the centre, about 0 hanging down; it is smooth everywhere (no angle
      wrapping) and its penalties are small, so rewards are mostly positive and running off the track
      (which ends the episode) is no escape from negative rewards
    * terminates when ``|x| > x_threshold = 2.4`` (gymnasium's track edge); 500 steps otherwise

    :param x_threshold: Half-length of the track; the episode terminates beyond it
    """

    state_dim = 4
    obs_low = (-math.inf, -math.inf, -1.0, -1.0, -math.inf)
    obs_high = (math.inf, math.inf, 1.0, 1.0, math.inf)
    action_low = (-1.0,)
    action_high = (1.0,)
    max_episode_steps = 500
    # gymnasium CartPole-v1's constants ("length" is half the pole's length).
    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    total_mass = masscart + masspole
    polemass_length = masspole * length
    # Reward weights.
    x_cost, velocity_cost, action_cost = 0.1, 0.001, 0.001

    def __init__(self, num_envs: int = 1, x_threshold: float = 2.4, **kwargs):
        self.x_threshold = x_threshold
        super().__init__(num_envs, **kwargs)

    def sample_initial_state(self, n: int) -> th.Tensor:
        return self.uniform(n, (-0.05, -0.05, math.pi - 0.05, -0.05), (0.05, 0.05, math.pi + 0.05, 0.05))

    def dynamics(self, state: th.Tensor, action: th.Tensor) -> th.Tensor:
        x, x_dot, theta, theta_dot = state.unbind(-1)
        force = self.force_mag * action[:, 0].clamp(-1.0, 1.0)
        costheta, sintheta = th.cos(theta), th.sin(theta)
        temp = (force + self.polemass_length * theta_dot**2 * sintheta) / self.total_mass
        # The denominator is at least 4/3 - 1/11 > 0: the effective inertia never vanishes.
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * costheta**2 / self.total_mass)
        )
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        return th.stack(
            [x + self.tau * x_dot, x_dot + self.tau * xacc, theta + self.tau * theta_dot, theta_dot + self.tau * thetaacc],
            dim=-1,
        )

    def reward(self, state: th.Tensor, action: th.Tensor, next_state: th.Tensor) -> th.Tensor:
        x, x_dot, theta, theta_dot = next_state.unbind(-1)
        u = action[:, 0].clamp(-1.0, 1.0)
        return (
            0.5 * (1.0 + th.cos(theta))
            - self.x_cost * (x / self.x_threshold) ** 2
            - self.velocity_cost * (x_dot**2 + theta_dot**2)
            - self.action_cost * u**2
        )

    def observation(self, state: th.Tensor) -> th.Tensor:
        x, x_dot, theta, theta_dot = state.unbind(-1)
        return th.stack([x, x_dot, th.cos(theta), th.sin(theta), theta_dot], dim=-1)

    def terminated(self, state: th.Tensor) -> th.Tensor:
        return state[:, 0].abs() > self.x_threshold

    def render_state(self, state: np.ndarray, action: np.ndarray | None) -> np.ndarray:
        from sb3_rpo.envs.rendering import gym_renderer

        renderer = gym_renderer(self, "gymnasium.envs.classic_control.cartpole:CartPoleEnv")
        renderer.x_threshold = self.x_threshold  # the drawing's scale: the whole track fits
        renderer.state = state.copy()
        return renderer.render()
