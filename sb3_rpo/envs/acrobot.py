"""DiffAcrobot-v0: gymnasium Acrobot-v1's dynamics with a continuous torque and a smooth height reward."""

from __future__ import annotations

import math

import numpy as np
import torch as th

from sb3_rpo.common.diff_vec_env import DiffTaskVecEnv


def wrap_angle(x: th.Tensor) -> th.Tensor:
    """Angle in ``[-pi, pi)``; the gradient passes through unchanged."""
    return th.remainder(x + math.pi, 2 * math.pi) - math.pi


class DiffAcrobot(DiffTaskVecEnv):
    """
    Acrobot swing-up: a two-link chain hanging from a fixed pivot, actuated at the middle joint only.
    The dynamics are exactly those of gymnasium's ``Acrobot-v1`` ("book" equations, RK4 with
    ``dt = 0.2``, same constants, angles wrapped, velocities clipped to ``[-4 pi, 4 pi]`` and
    ``[-9 pi, 9 pi]``); the torque is continuous and the reward rewards the tip's height at every step.

    * state: ``[theta1, theta2, dtheta1, dtheta2]`` (``theta1 = 0``: link 1 hangs down; ``theta2`` is relative
      to link 1); angles are kept in ``[-pi, pi)`` (the wrap passes gradients through unchanged)
    * initial state: each component ``U(-0.1, 0.1)``, as in gymnasium (hanging down)
    * observation: ``[cos theta1, sin theta1, cos theta2, sin theta2, dtheta1, dtheta2]``
    * action: torque in ``[-1, 1]`` at the middle joint; actions outside are clipped (gradient zero there)
    * reward, of the state reached: ``h/2 - 0.01 u^2`` with the tip height ``h = -cos(theta1) - cos(theta1 + theta2)``
      in ``[-2, 2]``, so the reward is in ``[-1.01, 1]``: -1 hanging at rest, 1 upright
    * never terminates (gymnasium ends the episode when ``h > 1``, but a height reward that is higher up
      there would make ending the episode a loss, and a constant -1 gives no gradient): 500 steps.
      As in gymnasium, velocities are clipped; the gradient through a clipped velocity is zero.
    """

    state_dim = 4
    max_vel_1, max_vel_2 = 4 * math.pi, 9 * math.pi
    obs_low = (-1.0, -1.0, -1.0, -1.0, -max_vel_1, -max_vel_2)
    obs_high = (1.0, 1.0, 1.0, 1.0, max_vel_1, max_vel_2)
    action_low = (-1.0,)
    action_high = (1.0,)
    max_episode_steps = 500
    # gymnasium Acrobot-v1's constants.
    dt = 0.2
    link_length_1, link_mass_1, link_mass_2 = 1.0, 1.0, 1.0
    link_com_pos_1, link_com_pos_2, link_moi, gravity = 0.5, 0.5, 1.0, 9.8
    action_cost = 0.01

    def sample_initial_state(self, n: int) -> th.Tensor:
        return self.uniform(n, (-0.1,) * 4, (0.1,) * 4)

    def _dsdt(self, s: th.Tensor, a: th.Tensor) -> th.Tensor:
        m1, m2, l1 = self.link_mass_1, self.link_mass_2, self.link_length_1
        lc1, lc2, i1, i2, g = self.link_com_pos_1, self.link_com_pos_2, self.link_moi, self.link_moi, self.gravity
        theta1, theta2, dtheta1, dtheta2 = s.unbind(-1)
        cos2, sin2 = th.cos(theta2), th.sin(theta2)
        # Mass matrix [[d1, d2], [d2, m2 lc2^2 + I2]]: positive definite, so d1 > 0 and the Schur complement below is > 0.
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * cos2) + i1 + i2
        d2 = m2 * (lc2**2 + l1 * lc2 * cos2) + i2
        phi2 = m2 * lc2 * g * th.cos(theta1 + theta2 - math.pi / 2.0)
        phi1 = (
            -m2 * l1 * lc2 * dtheta2**2 * sin2
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin2
            + (m1 * lc1 + m2 * l1) * g * th.cos(theta1 - math.pi / 2)
            + phi2
        )
        ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1**2 * sin2 - phi2) / (m2 * lc2**2 + i2 - d2**2 / d1)
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return th.stack([dtheta1, dtheta2, ddtheta1, ddtheta2], dim=-1)

    def dynamics(self, state: th.Tensor, action: th.Tensor) -> th.Tensor:
        a = action[:, 0].clamp(-1.0, 1.0)
        # One RK4 step with the torque held constant, as gymnasium's rk4(..., [0, dt]).
        k1 = self._dsdt(state, a)
        k2 = self._dsdt(state + self.dt / 2 * k1, a)
        k3 = self._dsdt(state + self.dt / 2 * k2, a)
        k4 = self._dsdt(state + self.dt * k3, a)
        ns = state + self.dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        return th.stack(
            [
                wrap_angle(ns[:, 0]),
                wrap_angle(ns[:, 1]),
                ns[:, 2].clamp(-self.max_vel_1, self.max_vel_1),
                ns[:, 3].clamp(-self.max_vel_2, self.max_vel_2),
            ],
            dim=-1,
        )

    def reward(self, state: th.Tensor, action: th.Tensor, next_state: th.Tensor) -> th.Tensor:
        theta1, theta2 = next_state[:, 0], next_state[:, 1]
        height = -th.cos(theta1) - th.cos(theta1 + theta2)
        return 0.5 * height - self.action_cost * action[:, 0].clamp(-1.0, 1.0) ** 2

    def observation(self, state: th.Tensor) -> th.Tensor:
        theta1, theta2, dtheta1, dtheta2 = state.unbind(-1)
        return th.stack([th.cos(theta1), th.sin(theta1), th.cos(theta2), th.sin(theta2), dtheta1, dtheta2], dim=-1)

    def render_state(self, state: np.ndarray, action: np.ndarray | None) -> np.ndarray:
        from sb3_rpo.envs.rendering import gym_renderer

        renderer = gym_renderer(self, "gymnasium.envs.classic_control.acrobot:AcrobotEnv")
        renderer.state = state.copy()
        return renderer.render()
