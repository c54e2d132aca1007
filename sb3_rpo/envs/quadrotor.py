"""DiffQuadrotor-v0: a 3D rigid-body quadrotor flying to, and hovering at, a random target."""

from __future__ import annotations

import math

import numpy as np
import torch as th

from sb3_rpo.common.diff_vec_env import DiffTaskVecEnv
from sb3_rpo.envs.draw import Viewport, canvas, draw_line, fill_circle


def quat_multiply(p: th.Tensor, q: th.Tensor) -> th.Tensor:
    """Hamilton product of quaternions ``[w, x, y, z]`` (n, 4)."""
    pw, px, py, pz = p.unbind(-1)
    qw, qx, qy, qz = q.unbind(-1)
    return th.stack(
        [
            pw * qw - px * qx - py * qy - pz * qz,
            pw * qx + px * qw + py * qz - pz * qy,
            pw * qy - px * qz + py * qw + pz * qx,
            pw * qz + px * qy - py * qx + pz * qw,
        ],
        dim=-1,
    )


def quat_to_matrix(q: th.Tensor) -> th.Tensor:
    """Rotation matrix (n, 3, 3), body to world, of unit quaternions ``[w, x, y, z]`` (n, 4)."""
    w, x, y, z = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return th.stack([th.stack(row, dim=-1) for row in rows], dim=-2)


def euler_to_quat(roll: th.Tensor, pitch: th.Tensor, yaw: th.Tensor) -> th.Tensor:
    """Unit quaternion ``[w, x, y, z]`` of the intrinsic z-y-x (yaw, pitch, roll) rotation."""
    cr, sr = th.cos(roll / 2), th.sin(roll / 2)
    cp, sp = th.cos(pitch / 2), th.sin(pitch / 2)
    cy, sy = th.cos(yaw / 2), th.sin(yaw / 2)
    return th.stack(
        [
            cr * cp * cy + sr * sp * sy,
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
        ],
        dim=-1,
    )


class DiffQuadrotor(DiffTaskVecEnv):
    """
    A quadrotor (generic 1 kg X-frame, thrust-to-weight 2.5) starts near the origin in a small random
    attitude and must fly to a target drawn within a few metres, then hover there. World frame: z up,
    gravity -9.81 along z. Body frame: x forward, z along the thrust.

    * state (16): ``[p (3), v (3), q = [w, x, y, z] (4, body to world), omega (3, body frame), target (3)]``
    * initial state: ``p ~ U([-0.5, 0.5]^2 x [0.5, 1.5])``, ``v ~ U(-0.5, 0.5)^3``, roll and pitch
      ``~ U(-0.2, 0.2)`` rad, yaw ``~ U(-pi, pi)``, ``omega ~ U(-0.2, 0.2)^3``,
      ``target ~ U([-2, 2]^2 x [0.5, 2.5])``
    * observation (21): ``[p - target (3), v (3), R row-major (9), omega (3), p (3)]``; the absolute
      position is there because termination (ground, bounding box) depends on it
    * action (4) in ``[-1, 1]``, not clipped (policies squash into the Box):

      - ``control_mode="motors"`` (default): motor ``i`` thrust ``f_i = (a_i + 1) / 2 * max_motor_thrust``;
        motors at ``arm_length`` along the body diagonals, front-left (+x, +y), back-left, back-right,
        front-right, spinning alternately so that ``tau_z = yaw_torque_coef * (f0 - f1 + f2 - f3)``;
        ``J domega = tau - omega x J omega - rate_damping * omega`` (gyroscopic term by the midpoint rule)
      - ``control_mode="ctbr"``: collective thrust ``(a_0 + 1) / 2 * 4 max_motor_thrust`` and body-rate
        command ``a_{1:4} * max_body_rate``, tracked to first order, ``domega = (omega_cmd - omega) / rate_tau``

    * translation: ``m dv = R e_z F - m g e_z - drag * v``; semi-implicit Euler (velocities, then
      positions and attitude with the new velocities), ``q <- normalize(q + dt/2 q * [0, omega])``,
      2 substeps of 0.01 s per 0.02 s step
    * reward: ``alive_bonus - ||p - target|| - 0.05 ||v||^2 - 0.01 ||omega||^2 - 0.05 ||a - a_hover||^2``
      with ``alive_bonus = 2``: the reward is positive within about 2 m of the target, so crashing never
      pays once the drone has come close; ``a_hover`` is the action that hovers at level attitude
    * terminated when the drone hits the ground (``z < 0``), flips (tilt beyond 90 degrees,
      ``R_zz < 0``) or leaves the box ``|x|, |y| < 4``, ``z < 5``; truncated after 300 steps (6 s)

    :param control_mode: ``"motors"`` (four normalized motor thrusts) or ``"ctbr"`` (collective thrust
        and body rates)
    """

    state_dim = 16
    obs_dim = 21
    action_low = (-1.0, -1.0, -1.0, -1.0)
    action_high = (1.0, 1.0, 1.0, 1.0)
    max_episode_steps = 300
    # Physical parameters of a generic 1 kg quadrotor (SI units).
    mass, gravity = 1.0, 9.81
    arm_length = 0.15  # centre to motor (m)
    inertia = (0.0049, 0.0049, 0.0088)  # diagonal, kg m^2
    thrust_to_weight = 2.5
    max_motor_thrust = thrust_to_weight * mass * gravity / 4  # N
    yaw_torque_coef = 0.016  # rotor drag torque per unit thrust (m)
    drag = 0.1  # linear translational drag (N s / m)
    rate_damping = 1e-3  # rotational drag (N m s / rad)
    max_body_rate = (6.0, 6.0, 3.0)  # ctbr rate command range (rad/s)
    rate_tau = 0.05  # ctbr first-order rate tracking time constant (s)
    dt, n_substeps = 0.01, 2
    alive_bonus = 2.0
    box_xy, box_z = 4.0, 5.0

    def __init__(self, num_envs: int = 1, control_mode: str = "motors", **kwargs):
        if control_mode not in ("motors", "ctbr"):
            raise ValueError(f"control_mode must be 'motors' or 'ctbr', got {control_mode!r}")
        self.control_mode = control_mode
        super().__init__(num_envs, **kwargs)

    @property
    def hover_action(self) -> np.ndarray:
        """The action holding a level, resting drone in place."""
        a_thrust = 2.0 / self.thrust_to_weight - 1.0  # (a + 1) / 2 * T_max = m g
        if self.control_mode == "motors":
            return np.full(4, a_thrust)
        return np.array([a_thrust, 0.0, 0.0, 0.0])

    def _const(self, values: tuple[float, ...], like: th.Tensor) -> th.Tensor:
        return th.as_tensor(values, dtype=like.dtype, device=like.device)

    # ---------------------------------------------------------------- dynamics
    def _thrust_and_moment(self, action: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Collective thrust (n,) and body torque (motors) or body-rate command (ctbr) (n, 3) of ``action``."""
        if self.control_mode == "ctbr":
            thrust = (action[:, 0] + 1.0) * (2.0 * self.max_motor_thrust)
            return thrust, action[:, 1:] * self._const(self.max_body_rate, action)
        f = (action + 1.0) * (0.5 * self.max_motor_thrust)
        d = self.arm_length / math.sqrt(2.0)  # motor offset along body x and y
        # Motors 0..3 at (+d, +d), (-d, +d), (-d, -d), (+d, -d): tau_x = sum y_i f_i, tau_y = -sum x_i f_i.
        torque = th.stack(
            [
                d * (f[:, 0] + f[:, 1] - f[:, 2] - f[:, 3]),
                d * (-f[:, 0] + f[:, 1] + f[:, 2] - f[:, 3]),
                self.yaw_torque_coef * (f[:, 0] - f[:, 1] + f[:, 2] - f[:, 3]),
            ],
            dim=-1,
        )
        return f.sum(dim=-1), torque

    def _next_rates(self, omega: th.Tensor, moment: th.Tensor) -> th.Tensor:
        """Body rates after one substep under the torque (motors) or rate command (ctbr) ``moment``."""
        if self.control_mode == "ctbr":
            return omega + (self.dt / self.rate_tau) * (moment - omega)
        # Angular momentum L = J omega with dL/dt = tau - omega x L, by the midpoint rule
        # (I + [k]x) L' = (I - [k]x) L + dt tau with k = dt/2 omega_mid, omega_mid from an explicit
        # predictor: it keeps |L| exactly and the rotational energy closely, where explicit Euler
        # inflates the roll/pitch rates of a yawing drone.
        inertia = self._const(self.inertia, omega)
        momentum = inertia * omega
        torque = moment - self.rate_damping * omega
        predicted = omega + self.dt * (torque - th.linalg.cross(omega, momentum)) / inertia
        k = (0.25 * self.dt) * (omega + predicted)
        b = momentum - th.linalg.cross(k, momentum) + self.dt * torque
        # (I + [k]x)^-1 b = (b - k x b + k (k . b)) / (1 + |k|^2)
        kb = (k * b).sum(dim=-1, keepdim=True)
        momentum = (b - th.linalg.cross(k, b) + k * kb) / (1.0 + (k * k).sum(dim=-1, keepdim=True))
        return momentum / inertia

    def dynamics(self, state: th.Tensor, action: th.Tensor) -> th.Tensor:
        p, v, q, omega, target = state[:, :3], state[:, 3:6], state[:, 6:10], state[:, 10:13], state[:, 13:]
        gravity = self._const((0.0, 0.0, -self.gravity), state)
        thrust, moment = self._thrust_and_moment(action)
        acc_thrust = (thrust / self.mass).unsqueeze(-1)
        for _ in range(self.n_substeps):
            body_z = quat_to_matrix(q)[:, :, 2]
            v = v + self.dt * (body_z * acc_thrust + gravity - (self.drag / self.mass) * v)
            omega = self._next_rates(omega, moment)
            # Semi-implicit: position and attitude move with the new velocities.
            p = p + self.dt * v
            q = q + (0.5 * self.dt) * quat_multiply(q, th.cat([th.zeros_like(omega[:, :1]), omega], dim=-1))
            q = q / th.linalg.vector_norm(q, dim=-1, keepdim=True)
        return th.cat([p, v, q, omega, target], dim=-1)

    # ---------------------------------------------------------------- the task
    def sample_initial_state(self, n: int) -> th.Tensor:
        p = self.uniform(n, (-0.5, -0.5, 0.5), (0.5, 0.5, 1.5))
        v = self.uniform(n, (-0.5,) * 3, (0.5,) * 3)
        rpy = self.uniform(n, (-0.2, -0.2, -math.pi), (0.2, 0.2, math.pi))
        q = euler_to_quat(rpy[:, 0], rpy[:, 1], rpy[:, 2])
        omega = self.uniform(n, (-0.2,) * 3, (0.2,) * 3)
        target = self.uniform(n, (-2.0, -2.0, 0.5), (2.0, 2.0, 2.5))
        return th.cat([p, v, q, omega, target], dim=-1)

    def reward(self, state: th.Tensor, action: th.Tensor, next_state: th.Tensor) -> th.Tensor:
        dist = th.linalg.vector_norm(next_state[:, :3] - next_state[:, 13:], dim=-1)
        speed_sq = (next_state[:, 3:6] ** 2).sum(dim=-1)
        rate_sq = (next_state[:, 10:13] ** 2).sum(dim=-1)
        effort_sq = ((action - self._const(tuple(self.hover_action), action)) ** 2).sum(dim=-1)
        return self.alive_bonus - dist - 0.05 * speed_sq - 0.01 * rate_sq - 0.05 * effort_sq

    def observation(self, state: th.Tensor) -> th.Tensor:
        rot = quat_to_matrix(state[:, 6:10]).flatten(1)
        p = state[:, :3]
        return th.cat([p - state[:, 13:], state[:, 3:6], rot, state[:, 10:13], p], dim=-1)

    def terminated(self, state: th.Tensor) -> th.Tensor:
        p = state[:, :3]
        x, y = state[:, 7], state[:, 8]
        upside_down = 1 - 2 * (x * x + y * y) < 0  # R_zz, the world z component of the body z axis
        out = (p[:, :2].abs() > self.box_xy).any(dim=-1) | (p[:, 2] > self.box_z)
        return (p[:, 2] < 0) | upside_down | out

    def render_state(self, state: np.ndarray, action: np.ndarray | None) -> np.ndarray:
        """Side view (x-z, left) and top view (x-y, right): drone (front motors orange), thrust axis, red target."""
        size = 256
        img = canvas(size, 2 * size, (240, 240, 240))
        rot = quat_to_matrix(th.as_tensor(state[None, 6:10])).numpy()[0]
        p, target = state[:3], state[13:16]
        d = self.arm_length / math.sqrt(2.0)
        motors = [p + rot @ np.array([sx * d, sy * d, 0.0]) for sx, sy in ((1, 1), (-1, 1), (-1, -1), (1, -1))]
        # A fixed 9 m window around the flight area; the drone is drawn 3x larger so that its attitude shows.
        side = Viewport((-4.5, 4.5), (-0.5, 5.5), (size, size))
        top = Viewport((-4.5, 4.5), (-4.5, 4.5), (size, size), offset=(size, 0))
        draw_line(img, (size, 0), (size, size), 2, (120, 120, 120))
        draw_line(img, side(-4.5, 0.0), side(4.5, 0.0), 3, (110, 160, 90))  # ground
        for view, axes in ((side, (0, 2)), (top, (0, 1))):
            i, j = axes
            fill_circle(img, view(target[i], target[j]), 6, (220, 50, 50))
            centre = view(p[i], p[j])
            for k, m in enumerate(motors):
                tip = view(p[i] + 3 * (m[i] - p[i]), p[j] + 3 * (m[j] - p[j]))
                draw_line(img, centre, tip, 3, (30, 80, 160))
                fill_circle(img, tip, 4, (230, 90, 40) if k in (0, 3) else (30, 80, 160))
            fill_circle(img, centre, 4, (20, 20, 20))
        # Thrust direction in the side view.
        draw_line(img, side(p[0], p[2]), side(p[0] + 0.6 * rot[0, 2], p[2] + 0.6 * rot[2, 2]), 2, (20, 20, 20))
        return img
