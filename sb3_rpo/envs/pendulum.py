"""DiffPendulum-v0: gymnasium's Pendulum-v1, batched and differentiable."""

from __future__ import annotations

import math

import numpy as np
import torch as th

from sb3_rpo.common.diff_vec_env import DiffTaskVecEnv


def angle_normalize(x: th.Tensor) -> th.Tensor:
    return ((x + math.pi) % (2 * math.pi)) - math.pi


class DiffPendulum(DiffTaskVecEnv):
    """
    Inverted pendulum swing-up with exactly the dynamics, reward, observation and episode length of
    gymnasium's ``Pendulum-v1`` (so results compare with published Pendulum-v1 numbers).

    * state: ``[theta, theta_dot]``, initial state uniform in ``[-pi, pi] x [-1, 1]``
    * observation: ``[cos(theta), sin(theta), theta_dot]``
    * action: torque in ``[-2, 2]``
    * reward: ``-(angle_normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 u^2)``, in ``[-16.27, 0]``
    * 200 steps, never terminates. As in gymnasium, ``theta_dot`` is clipped to ``[-8, 8]``, where its
      gradient is zero.

    :param g: Gravity (gymnasium's default 10.0)
    """

    state_dim = 2
    obs_low = (-1.0, -1.0, -8.0)
    obs_high = (1.0, 1.0, 8.0)
    action_low = (-2.0,)
    action_high = (2.0,)
    max_episode_steps = 200
    max_speed, max_torque, dt, m, length = 8.0, 2.0, 0.05, 1.0, 1.0

    def __init__(self, num_envs: int = 1, g: float = 10.0, **kwargs):
        self.g = g
        super().__init__(num_envs, **kwargs)

    def sample_initial_state(self, n: int) -> th.Tensor:
        return self.uniform(n, (-math.pi, -1.0), (math.pi, 1.0))

    def dynamics(self, state: th.Tensor, action: th.Tensor) -> th.Tensor:
        th_, thdot = state[:, 0], state[:, 1]
        u = action[:, 0].clamp(-self.max_torque, self.max_torque)
        newthdot = thdot + (3 * self.g / (2 * self.length) * th.sin(th_) + 3.0 / (self.m * self.length**2) * u) * self.dt
        newthdot = newthdot.clamp(-self.max_speed, self.max_speed)
        return th.stack([th_ + newthdot * self.dt, newthdot], dim=-1)

    def reward(self, state: th.Tensor, action: th.Tensor, next_state: th.Tensor) -> th.Tensor:
        u = action[:, 0].clamp(-self.max_torque, self.max_torque)
        return -(angle_normalize(state[:, 0]) ** 2 + 0.1 * state[:, 1] ** 2 + 0.001 * u**2)

    def observation(self, state: th.Tensor) -> th.Tensor:
        return th.stack([th.cos(state[:, 0]), th.sin(state[:, 0]), state[:, 1]], dim=-1)

    def render_state(self, state: np.ndarray, action: np.ndarray | None) -> np.ndarray:
        from sb3_rpo.envs.rendering import gym_renderer

        renderer = gym_renderer(self, "gymnasium.envs.classic_control.pendulum:PendulumEnv")
        renderer.state = state.copy()
        renderer.last_u = None if action is None else float(action[0])
        return renderer.render()
