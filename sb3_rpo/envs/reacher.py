"""DiffReacher-v0: a planar two-link arm reaching a random target, in the style of gymnasium's Reacher-v5."""

from __future__ import annotations

import math

import numpy as np
import torch as th

from sb3_rpo.common.diff_vec_env import DiffTaskVecEnv
from sb3_rpo.envs.draw import Viewport, canvas, draw_line, fill_circle


class DiffReacher(DiffTaskVecEnv):
    """
    A planar (horizontal, no gravity) two-link arm moves its fingertip to a target drawn at reset.
    Geometry, action range, target distribution, observation and reward follow gymnasium's ``Reacher-v5``;
    the dynamics are those of a two-link manipulator with uniform-rod links, so unlike MuJoCo's
    ``reacher.xml`` (whose unit joint armature makes both joints nearly independent double
    integrators) the arm's own inertia and its Coriolis/centrifugal coupling matter.

    * state: ``[q1, q2, dq1, dq2, target_x, target_y]`` (joint angles are not wrapped)
    * initial state: ``q ~ U(-0.1, 0.1)^2``, ``dq ~ U(-0.005, 0.005)^2``, target uniform in the disc of
      radius 0.2 (gymnasium samples the same distribution by rejection)
    * observation (10): ``[cos q1, cos q2, sin q1, sin q2, target_x, target_y, dq1, dq2,
      fingertip_x - target_x, fingertip_y - target_y]``
    * action: joint torques (N m) in ``[-1, 1]^2`` (not clipped: policies squash into the Box)
    * reward: ``-||fingertip' - target|| - ctrl_cost_weight * ||a||^2`` with the fingertip after the step
    * 100 steps of 0.02 s (2 semi-implicit Euler substeps of 0.01 s), never terminates

    Dynamics: ``M(q) ddq + C(q, dq) dq + damping * dq = a`` with
    ``M = [[a1 + 2 b cos q2, a2 + b cos q2], [a2 + b cos q2, a2]] + armature * I``, where
    ``a1 = I1 + I2 + m1 lc1^2 + m2 (l1^2 + lc2^2)``, ``a2 = I2 + m2 lc2^2``, ``b = m2 l1 lc2``; ``M`` is
    positive definite for every ``q`` (``det >= a2 (a1 - a2) - b^2 > 0``) and is inverted in closed form.

    :param ctrl_cost_weight: Weight of the action penalty. gymnasium 1.x's ``Reacher-v5`` code uses 1.0 by
        default (as ``Reacher-v4`` hard-codes; its docstring's "0.1" does not match the code), but there an
        action of 1 is 200 N m on a joint inertia of about 1 (gear 200, unit armature) with unit damping;
        this arm needs actions 4x (accelerating) to 20x (at speed) larger for the same motion, so 0.1
        gives a comparable trade-off between reaching and effort.
    """

    state_dim = 6
    obs_dim = 10
    action_low = (-1.0, -1.0)
    action_high = (1.0, 1.0)
    max_episode_steps = 100
    # Links: lengths (m, the second to the fingertip), masses (kg), uniform rods.
    l1, l2, m1, m2 = 0.1, 0.11, 1.0, 1.0
    armature = 1e-3  # rotor inertia on each joint (kg m^2)
    damping = 0.1  # viscous joint friction (N m s / rad): top speed 10 rad/s at full torque
    dt, n_substeps = 0.01, 2
    target_radius = 0.2

    def __init__(self, num_envs: int = 1, ctrl_cost_weight: float = 0.1, **kwargs):
        self.ctrl_cost_weight = ctrl_cost_weight
        super().__init__(num_envs, **kwargs)

    # ---------------------------------------------------------------- kinematics and dynamics
    def _inertia_constants(self) -> tuple[float, float, float]:
        lc1, lc2 = self.l1 / 2, self.l2 / 2
        i1, i2 = self.m1 * self.l1**2 / 12, self.m2 * self.l2**2 / 12
        a1 = i1 + i2 + self.m1 * lc1**2 + self.m2 * (self.l1**2 + lc2**2)
        a2 = i2 + self.m2 * lc2**2
        return a1, a2, self.m2 * self.l1 * lc2

    def mass_matrix(self, q: th.Tensor) -> th.Tensor:
        """Joint-space inertia ``M(q)`` (n, 2, 2)."""
        a1, a2, b = self._inertia_constants()
        c2 = th.cos(q[:, 1])
        m11 = a1 + 2 * b * c2 + self.armature
        m12 = a2 + b * c2
        m22 = th.full_like(c2, a2 + self.armature)
        return th.stack([th.stack([m11, m12], -1), th.stack([m12, m22], -1)], -2)

    def joint_accelerations(self, q: th.Tensor, dq: th.Tensor, torque: th.Tensor) -> th.Tensor:
        """``ddq = M(q)^-1 (torque - C(q, dq) dq - damping dq)`` (n, 2), with the closed-form 2x2 inverse."""
        a1, a2, b = self._inertia_constants()
        c2, s2 = th.cos(q[:, 1]), th.sin(q[:, 1])
        dq1, dq2 = dq[:, 0], dq[:, 1]
        m11 = a1 + 2 * b * c2 + self.armature
        m12 = a2 + b * c2
        m22 = a2 + self.armature
        # Coriolis and centrifugal torques.
        rhs1 = torque[:, 0] + b * s2 * (2 * dq1 * dq2 + dq2**2) - self.damping * dq1
        rhs2 = torque[:, 1] - b * s2 * dq1**2 - self.damping * dq2
        det = m11 * m22 - m12**2
        return th.stack([(m22 * rhs1 - m12 * rhs2) / det, (m11 * rhs2 - m12 * rhs1) / det], dim=-1)

    def fingertip(self, state: th.Tensor) -> th.Tensor:
        """Fingertip position (n, 2)."""
        q1, q12 = state[:, 0], state[:, 0] + state[:, 1]
        return th.stack([self.l1 * th.cos(q1) + self.l2 * th.cos(q12), self.l1 * th.sin(q1) + self.l2 * th.sin(q12)], dim=-1)

    # ---------------------------------------------------------------- the task
    def sample_initial_state(self, n: int) -> th.Tensor:
        q = self.uniform(n, (-0.1, -0.1), (0.1, 0.1))
        dq = self.uniform(n, (-0.005, -0.005), (0.005, 0.005))
        # Uniform in the disc: radius ~ R sqrt(u).
        polar = self.uniform(n, (0.0, -math.pi), (1.0, math.pi))
        radius = self.target_radius * th.sqrt(polar[:, :1])
        target = radius * th.stack([th.cos(polar[:, 1]), th.sin(polar[:, 1])], dim=-1)
        return th.cat([q, dq, target], dim=-1)

    def dynamics(self, state: th.Tensor, action: th.Tensor) -> th.Tensor:
        q, dq = state[:, :2], state[:, 2:4]
        for _ in range(self.n_substeps):
            dq = dq + self.dt * self.joint_accelerations(q, dq, action)
            q = q + self.dt * dq  # semi-implicit: positions move with the new velocities
        return th.cat([q, dq, state[:, 4:]], dim=-1)

    def reward(self, state: th.Tensor, action: th.Tensor, next_state: th.Tensor) -> th.Tensor:
        dist = th.linalg.vector_norm(self.fingertip(next_state) - next_state[:, 4:6], dim=-1)
        return -dist - self.ctrl_cost_weight * (action**2).sum(dim=-1)

    def observation(self, state: th.Tensor) -> th.Tensor:
        q = state[:, :2]
        return th.cat([th.cos(q), th.sin(q), state[:, 4:6], state[:, 2:4], self.fingertip(state) - state[:, 4:6]], dim=-1)

    def render_state(self, state: np.ndarray, action: np.ndarray | None) -> np.ndarray:
        size = 256
        img = canvas(size, size, (235, 235, 235))
        view = Viewport((-0.3, 0.3), (-0.3, 0.3), (size, size))
        q1, q12 = state[0], state[0] + state[1]
        elbow = (self.l1 * np.cos(q1), self.l1 * np.sin(q1))
        tip = (elbow[0] + self.l2 * np.cos(q12), elbow[1] + self.l2 * np.sin(q12))
        # Arena border as in reacher.xml, then target, links, joints and fingertip.
        corners = [(-0.28, -0.28), (0.28, -0.28), (0.28, 0.28), (-0.28, 0.28)]
        for a, b in zip(corners, corners[1:] + corners[:1], strict=True):
            draw_line(img, view(*a), view(*b), 0.02 * view.scale, (230, 102, 153))
        fill_circle(img, view(state[4], state[5]), 0.012 * view.scale, (230, 51, 51))
        link_width = 0.02 * view.scale
        draw_line(img, view(0.0, 0.0), view(*elbow), link_width, (0, 102, 153))
        draw_line(img, view(*elbow), view(*tip), link_width, (0, 102, 153))
        fill_circle(img, view(0.0, 0.0), 0.014 * view.scale, (230, 102, 153))
        fill_circle(img, view(*elbow), 0.008 * view.scale, (40, 40, 40))
        fill_circle(img, view(*tip), 0.01 * view.scale, (0, 204, 153))
        return img
