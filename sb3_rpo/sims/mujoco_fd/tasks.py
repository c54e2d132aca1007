"""
Gymnasium's MuJoCo v5 tasks with rewards, observations and terminations written in torch.

Each class mirrors ``gymnasium/envs/mujoco/<task>_v5.py`` with its default arguments: the same function of the
state gives the same reward, observation and termination (``tests/test_sim_mujoco.py`` checks it against
gymnasium itself). Velocities such as ``x_velocity`` are finite differences of ``qpos`` over the step, as there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th

from sb3_rpo.sims.mujoco_fd.base import MujocoFDVecEnv


def _ctrl_cost(weight: float, action: th.Tensor) -> th.Tensor:
    return weight * action.square().sum(-1)


class _Runner(MujocoFDVecEnv):
    """Forward locomotion: reward ``forward_reward_weight * x_velocity - ctrl_cost`` (+ healthy reward)."""

    forward_reward_weight: float = 1.0
    ctrl_cost_weight: float
    healthy_reward: float = 0.0
    skipped_qpos: int = 1  # leading qpos entries (root x, y) left out of the observation
    qvel_noise: str = "uniform"

    def is_healthy(self, state: th.Tensor) -> th.Tensor:
        return th.ones(state.shape[0], dtype=th.bool, device=state.device)

    def x_velocity(self, state: th.Tensor, next_state: th.Tensor) -> th.Tensor:
        return (next_state[:, 0] - state[:, 0]) / self.dt

    def reward(self, state: th.Tensor, action: th.Tensor, next_state: th.Tensor) -> th.Tensor:
        forward = self.forward_reward_weight * self.x_velocity(state, next_state)
        healthy = self.healthy_reward * self.is_healthy(next_state).to(state.dtype)
        return forward + healthy - _ctrl_cost(self.ctrl_cost_weight, action)

    def observation(self, state: th.Tensor) -> th.Tensor:
        return th.cat([self.qpos(state)[:, self.skipped_qpos :], self.qvel(state)], dim=-1)

    def terminated(self, state: th.Tensor) -> th.Tensor:
        return ~self.is_healthy(state) if self.healthy_reward else super().terminated(state)

    def sample_initial_state(self, n: int) -> th.Tensor:
        return self.reset_noise(n, self.qvel_noise)


class _PlanarWalker(_Runner):
    """Hopper and Walker2d: healthy while the torso height and angle stay in range; velocities clipped in the observation."""

    ctrl_cost_weight, healthy_reward, reset_noise_scale = 1e-3, 1.0, 5e-3
    healthy_z_range: tuple[float, float]
    healthy_angle_range: tuple[float, float]

    def is_healthy(self, state: th.Tensor) -> th.Tensor:
        z, angle = self.qpos(state)[:, 1], self.qpos(state)[:, 2]
        (min_z, max_z), (min_angle, max_angle) = self.healthy_z_range, self.healthy_angle_range
        return (min_z < z) & (z < max_z) & (min_angle < angle) & (angle < max_angle)

    def observation(self, state: th.Tensor) -> th.Tensor:
        return th.cat([self.qpos(state)[:, 1:], self.qvel(state).clamp(-10.0, 10.0)], dim=-1)


class MujocoFDHopper(_PlanarWalker):
    """Hopper-v5."""

    xml_file, frame_skip, obs_dim = "hopper.xml", 4, 11
    healthy_z_range, healthy_angle_range = (0.7, float("inf")), (-0.2, 0.2)

    def is_healthy(self, state: th.Tensor) -> th.Tensor:
        rest = th.cat([self.qpos(state), self.qvel(state)], dim=-1)[:, 2:]
        return super().is_healthy(state) & (rest.abs() < 100.0).all(-1)


class MujocoFDWalker2d(_PlanarWalker):
    """Walker2d-v5."""

    xml_file, frame_skip, obs_dim = "walker2d_v5.xml", 4, 17
    healthy_z_range, healthy_angle_range = (0.8, 2.0), (-1.0, 1.0)


class MujocoFDHalfCheetah(_Runner):
    """HalfCheetah-v5."""

    xml_file, frame_skip, obs_dim = "half_cheetah.xml", 5, 17
    ctrl_cost_weight, reset_noise_scale, qvel_noise = 0.1, 0.1, "normal"


class MujocoFDSwimmer(_Runner):
    """Swimmer-v5."""

    xml_file, frame_skip, obs_dim = "swimmer.xml", 4, 8
    ctrl_cost_weight, reset_noise_scale, skipped_qpos = 1e-4, 0.1, 2


class MujocoFDAnt(_Runner):
    """
    Ant-v5: a free joint (the torso's position and quaternion) and contact forces.

    The contact forces ``cfrc_ext`` (clipped to [-1, 1]) are ``aux`` state entries: they enter the contact cost
    and, with ``include_cfrc_ext_in_observation=True`` (gymnasium's default), the observation, but are not
    differentiated.
    """

    xml_file, frame_skip = "ant.xml", 5
    ctrl_cost_weight, healthy_reward, reset_noise_scale, skipped_qpos, qvel_noise = 0.5, 1.0, 0.1, 2, "normal"
    contact_cost_weight, healthy_z_range = 5e-4, (0.2, 1.0)
    aux_dim = 14 * 6  # cfrc_ext of every body, world included

    def __init__(self, *args, include_cfrc_ext_in_observation: bool = True, **kwargs):
        self.include_cfrc_ext_in_observation = include_cfrc_ext_in_observation
        self.obs_dim = 27 + (78 if include_cfrc_ext_in_observation else 0)
        super().__init__(*args, **kwargs)

    def aux(self, data: Any) -> np.ndarray:
        return data.cfrc_ext.clip(-1.0, 1.0).ravel()

    def is_healthy(self, state: th.Tensor) -> th.Tensor:
        z = self.qpos(state)[:, 2]
        return (self.healthy_z_range[0] <= z) & (z <= self.healthy_z_range[1])

    def x_velocity(self, state: th.Tensor, next_state: th.Tensor) -> th.Tensor:
        return (next_state[:, 0] - state[:, 0]) / self.dt  # the torso is the free joint's body: xpos = qpos[:3]

    def reward(self, state: th.Tensor, action: th.Tensor, next_state: th.Tensor) -> th.Tensor:
        contact_cost = self.contact_cost_weight * self.aux_of(next_state).square().sum(-1)
        return super().reward(state, action, next_state) - contact_cost

    def observation(self, state: th.Tensor) -> th.Tensor:
        obs = super().observation(state)
        return th.cat([obs, self.aux_of(state)[:, 6:]], dim=-1) if self.include_cfrc_ext_in_observation else obs


class MujocoFDReacher(MujocoFDVecEnv):
    """Reacher-v5: a two-link arm (links 0.1 and 0.11) reaches a target drawn in a disk of radius 0.2."""

    xml_file, frame_skip, obs_dim = "reacher.xml", 2, 10

    def fingertip_to_target(self, state: th.Tensor) -> th.Tensor:
        qpos = self.qpos(state)
        theta0, theta01 = qpos[:, 0], qpos[:, 0] + qpos[:, 1]
        fingertip_x = 0.1 * th.cos(theta0) + 0.11 * th.cos(theta01)
        fingertip = th.stack([fingertip_x, 0.1 * th.sin(theta0) + 0.11 * th.sin(theta01)], dim=-1)
        return fingertip - qpos[:, 2:4]  # the target's slide joints hold its x, y position

    def reward(self, state: th.Tensor, action: th.Tensor, next_state: th.Tensor) -> th.Tensor:
        return -th.linalg.vector_norm(self.fingertip_to_target(next_state), dim=-1) - action.square().sum(-1)

    def observation(self, state: th.Tensor) -> th.Tensor:
        qpos, qvel = self.qpos(state), self.qvel(state)
        theta = qpos[:, :2]
        return th.cat([th.cos(theta), th.sin(theta), qpos[:, 2:], qvel[:, :2], self.fingertip_to_target(state)], dim=-1)

    def sample_initial_state(self, n: int) -> th.Tensor:
        arm = self.init_qpos[:2] + self.uniform(n, [-0.1, -0.1], [0.1, 0.1])
        # uniform in the disk of radius 0.2, as gymnasium's rejection sampling from the square
        radius, angle = 0.2 * self.uniform(n, 0.0, 1.0).sqrt(), self.uniform(n, 0.0, 2 * th.pi)
        goal = th.cat([radius * th.cos(angle), radius * th.sin(angle)], dim=-1)
        qvel = th.cat([self.uniform(n, [-0.005, -0.005], [0.005, 0.005]), th.zeros_like(goal)], dim=-1)
        return th.cat([arm, goal, qvel], dim=-1)


class MujocoFDInvertedPendulum(MujocoFDVecEnv):
    """InvertedPendulum-v5: reward 1 while the pole stays within 0.2 rad of upright."""

    xml_file, frame_skip, obs_dim, reset_noise_scale = "inverted_pendulum.xml", 2, 4, 0.01

    def reward(self, state: th.Tensor, action: th.Tensor, next_state: th.Tensor) -> th.Tensor:
        return (~self.terminated(next_state)).to(state.dtype)

    def observation(self, state: th.Tensor) -> th.Tensor:
        return state

    def terminated(self, state: th.Tensor) -> th.Tensor:
        return self.qpos(state)[:, 1].abs() > 0.2

    def sample_initial_state(self, n: int) -> th.Tensor:
        return self.reset_noise(n, "uniform")


class MujocoFDInvertedDoublePendulum(MujocoFDVecEnv):
    """
    InvertedDoublePendulum-v5: keep the tip (two links of 0.6 on a cart) high.

    The slider's constraint force ``qfrc_constraint[0]`` (clipped to [-10, 10] in the observation) is an ``aux``
    state entry.
    """

    xml_file, frame_skip, obs_dim, reset_noise_scale, aux_dim = "inverted_double_pendulum.xml", 5, 9, 0.1, 1

    def aux(self, data: Any) -> np.ndarray:
        return data.qfrc_constraint[:1]

    def tip(self, state: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        qpos = self.qpos(state)
        theta1, theta12 = qpos[:, 1], qpos[:, 1] + qpos[:, 2]
        return qpos[:, 0] + 0.6 * (th.sin(theta1) + th.sin(theta12)), 0.6 * (th.cos(theta1) + th.cos(theta12))

    def reward(self, state: th.Tensor, action: th.Tensor, next_state: th.Tensor) -> th.Tensor:
        x, y = self.tip(next_state)
        v1, v2 = self.qvel(next_state)[:, 1], self.qvel(next_state)[:, 2]
        alive = 10.0 * (~self.terminated(next_state)).to(state.dtype)
        return alive - (0.01 * x**2 + (y - 2) ** 2) - (1e-3 * v1**2 + 5e-3 * v2**2)

    def observation(self, state: th.Tensor) -> th.Tensor:
        qpos, qvel = self.qpos(state), self.qvel(state)
        constraint = self.aux_of(state).clamp(-10.0, 10.0)
        return th.cat([qpos[:, :1], th.sin(qpos[:, 1:]), th.cos(qpos[:, 1:]), qvel.clamp(-10.0, 10.0), constraint], dim=-1)

    def terminated(self, state: th.Tensor) -> th.Tensor:
        return self.tip(state)[1] <= 1.0

    def sample_initial_state(self, n: int) -> th.Tensor:
        return self.reset_noise(n, "normal")
