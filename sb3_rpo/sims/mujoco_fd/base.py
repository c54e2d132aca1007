"""MuJoCo as a differentiable environment: ``mj_step`` forward, chained ``mjd_transitionFD`` Jacobians backward."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch as th

from sb3_rpo.common.jacobian_env import JacobianVecEnv, SimStep
from sb3_rpo.sims import require


def gymnasium_asset(xml_file: str) -> str:
    """Path of ``xml_file`` in gymnasium's MuJoCo assets (an absolute path is returned as is)."""
    if os.path.isabs(xml_file):
        return xml_file
    import gymnasium.envs.mujoco

    return os.path.join(os.path.dirname(gymnasium.envs.mujoco.__file__), "assets", xml_file)


def _quat_left(q: np.ndarray) -> np.ndarray:
    """Matrix L(q) of the quaternion product: q * p = L(q) p (MuJoCo's w, x, y, z order)."""
    w, x, y, z = q
    return np.array([[w, -x, -y, -z], [x, w, -z, y], [y, z, w, -x], [z, -y, x, w]])


class MujocoFDVecEnv(JacobianVecEnv):
    """
    A batch of MuJoCo simulations whose steps are differentiated with MuJoCo's finite-difference Jacobians.

    The forward pass sets each environment's ``mjData`` from the state tensor and calls ``mj_step``
    ``frame_skip`` times. When the step will be differentiated, every frame's transition Jacobians
    ``A = dx'/dx`` and ``B = dx'/du`` come from ``mujoco.mjd_transitionFD`` and are chained over the frames
    (the action is held for ``frame_skip`` frames), and the backward pass multiplies by them (see
    :class:`~sb3_rpo.common.jacobian_env.JacobianVecEnv`). Environments are split over ``n_threads`` threads:
    MuJoCo releases the GIL, so the Jacobians of different environments are computed in parallel.

    The state of one environment is ``[qpos, qvel, aux]``. MuJoCo's Jacobians live in the tangent space
    ``[dqpos (nv), qvel]``; for models with free or ball joints (quaternions, ``nq > nv``) they are mapped
    to the quaternion coordinates of ``qpos`` (``q = q0 * exp(w / 2)`` to first order). ``aux`` holds
    ``aux_dim`` quantities that gymnasium's task reads from ``mjData`` and that are not a function of
    ``(qpos, qvel)`` alone, such as contact forces: they are computed after the step, are not
    differentiated (zero Jacobian), and are zero in initial states, as in gymnasium after a reset.

    Gymnasium's XML files use the RK4 integrator, which ``mjd_transitionFD`` rejects. By default the model is
    loaded with the Euler integrator, so the dynamics differ slightly from the official env's (see
    ``docs/sims/mujoco.md`` for the drift, measured by ``benchmarks/mujoco_fd_drift.py``). With
    ``integrator="official"`` the adapter keeps the XML's integrator, hence gymnasium's dynamics, and differentiates
    whole env steps with RK4 by central differences (``2 (2 nv + nu)`` extra env steps, 5-7x slower) instead. Kinematic
    quantities (body positions) are computed in torch from ``qpos``, on the state reached by the step:
    gymnasium reads them from ``mjData`` before the last frame's integration, one frame earlier.

    A task sets ``xml_file``, ``frame_skip``, ``obs_dim``, ``max_episode_steps``, optionally ``aux_dim`` and
    ``aux()``, and writes ``reward``, ``observation``, ``terminated`` and ``sample_initial_state`` in torch
    (the helpers ``qpos``, ``qvel``, ``aux_of`` and ``reset_noise`` read and build states).

    :param num_envs: Number of environments simulated in one batch
    :param device: Device of the torch face (MuJoCo runs on the CPU)
    :param dtype: ``torch.float32`` or ``torch.float64`` (MuJoCo itself runs in float64)
    :param seed: Seed of the initial-state generator
    :param render_mode: ``None`` or ``"rgb_array"`` (needs an OpenGL backend, see ``MUJOCO_GL``)
    :param max_episode_steps: Override of the task's episode length
    :param n_threads: Threads over which the environments are split (default: the CPU cores available)
    :param fd_eps: Finite-difference step (of ``mjd_transitionFD``, or of the whole-step differences with RK4)
    :param fd_centered: Centered differences (second-order accurate); forward ones cost half as much but were off by
        up to 0.08 in entries of Walker2d's step Jacobian (tests/test_sim_mujoco.py)
    :param integrator: ``"euler"`` or ``"implicitfast"`` (per-frame ``mjd_transitionFD``), ``"rk4"`` (whole-step
        central differences), or ``"official"``: the XML's own, as in gymnasium
    """

    xml_file: str
    frame_skip: int
    aux_dim: int = 0
    reset_noise_scale: float = 0.0

    def __init__(
        self,
        num_envs: int = 1,
        device: th.device | str = "cpu",
        dtype: th.dtype = th.float32,
        seed: int | None = None,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        n_threads: int | None = None,
        fd_eps: float = 1e-6,
        fd_centered: bool = True,
        integrator: str = "euler",
    ):
        self.mujoco = mujoco = require("mujoco", "mujoco")
        self.model = mujoco.MjModel.from_xml_path(gymnasium_asset(self.xml_file))
        integrators = {
            "euler": mujoco.mjtIntegrator.mjINT_EULER,
            "implicitfast": mujoco.mjtIntegrator.mjINT_IMPLICITFAST,
            "rk4": mujoco.mjtIntegrator.mjINT_RK4,
        }
        if integrator not in (*integrators, "official"):
            raise ValueError(f"integrator must be 'official' or one of {sorted(integrators)}, got {integrator!r}")
        if integrator != "official":  # else the XML's own, as gymnasium's env
            self.model.opt.integrator = integrators[integrator]
        # mjd_transitionFD rejects RK4: with it, whole env steps are differentiated by central differences instead
        self._whole_step_fd = self.model.opt.integrator == integrators["rk4"]
        # A step must be a function of (state, action) alone: no warm start from whatever the mjData simulated before
        self.model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_WARMSTART
        if self.model.na:
            raise ValueError(f"{self.xml_file}: actuators with activation state (na={self.model.na}) are not supported")
        self.nq, self.nv, self.nu = self.model.nq, self.model.nv, self.model.nu
        self.state_dim = self.nq + self.nv + self.aux_dim
        self.action_low, self.action_high = self.model.actuator_ctrlrange.T.tolist()
        self.dt = self.model.opt.timestep * self.frame_skip
        self.fd_eps, self.fd_centered = fd_eps, fd_centered
        # qpos addresses of the quaternions of free and ball joints
        free, ball = int(mujoco.mjtJoint.mjJNT_FREE), int(mujoco.mjtJoint.mjJNT_BALL)
        self._quat_adr = [
            int(adr) + (3 if jnt == free else 0)
            for jnt, adr in zip(self.model.jnt_type.tolist(), self.model.jnt_qposadr, strict=True)
            if jnt in (free, ball)
        ]
        assert self.nq == self.nv + len(self._quat_adr), "one extra qpos coordinate per quaternion"
        self._datas = [mujoco.MjData(self.model) for _ in range(num_envs)]
        warning = mujoco.mjtWarning
        self._unstable_kinds = [int(w) for w in (warning.mjWARN_BADQPOS, warning.mjWARN_BADQVEL, warning.mjWARN_BADQACC)]
        self.n_threads = max(1, min(n_threads or len(os.sched_getaffinity(0)), num_envs))
        self._pool = ThreadPoolExecutor(self.n_threads) if self.n_threads > 1 else None
        self._renderer: Any = None
        super().__init__(num_envs, device, dtype, seed, render_mode, max_episode_steps)
        self.init_qpos = th.as_tensor(self.model.qpos0, dtype=dtype, device=self.device)
        self.init_qvel = th.zeros(self.nv, dtype=dtype, device=self.device)

    # ------------------------------------------------------------- state layout, for the tasks
    def qpos(self, state: th.Tensor) -> th.Tensor:
        return state[:, : self.nq]

    def qvel(self, state: th.Tensor) -> th.Tensor:
        return state[:, self.nq : self.nq + self.nv]

    def aux_of(self, state: th.Tensor) -> th.Tensor:
        return state[:, self.nq + self.nv :]

    def reset_noise(self, n: int, qvel_noise: str = "uniform") -> th.Tensor:
        """gymnasium's reset: ``qpos0`` plus uniform noise, zero velocity plus uniform or normal noise, zero aux."""
        s = self.reset_noise_scale
        qpos = self.init_qpos + self.uniform(n, [-s] * self.nq, [s] * self.nq)
        noise = self.uniform(n, [-s] * self.nv, [s] * self.nv) if qvel_noise == "uniform" else s * self.normal(n, self.nv)
        aux = th.zeros(n, self.aux_dim, dtype=self.dtype, device=self.device)
        return th.cat([qpos, self.init_qvel + noise, aux], dim=-1)

    def aux(self, data: Any) -> np.ndarray:
        """The ``aux_dim`` non-differentiable quantities of ``data`` after a step (after ``mj_forward``)."""
        return np.zeros(0)

    # ------------------------------------------------------------- the simulator
    def sim_step(self, state: np.ndarray, action: np.ndarray) -> SimStep:
        n, nq, nv = len(state), self.nq, self.nv
        next_state = np.zeros_like(state)
        derivatives, state_derivatives = self.needs_derivatives, not self.skip_state_derivatives
        if derivatives:
            jacobians = (np.zeros((n, self.state_dim, self.state_dim)), np.zeros((n, self.state_dim, self.nu)))
        chunks = np.array_split(np.arange(n), self.n_threads)

        def simulate(envs: np.ndarray) -> None:
            mujoco, model = self.mujoco, self.model
            a_frame, b_frame = np.zeros((2 * nv, 2 * nv)), np.zeros((2 * nv, self.nu))
            for i in envs:
                data = self._datas[i]
                data.qpos[:], data.qvel[:], data.ctrl[:] = state[i, :nq], state[i, nq : nq + nv], action[i]
                unstable_before = self._instability_warnings(data)
                a_step, b_step = np.eye(2 * nv), np.zeros((2 * nv, self.nu))
                if derivatives and not self._whole_step_fd:
                    # Chain the frames' Jacobians (the action is held for frame_skip frames). The first frame's dx'/dx
                    # only enters the step's dx'/dx: skipped when the state is not differentiated (a window's first step).
                    for frame in range(self.frame_skip):
                        a_out = a_frame if state_derivatives or frame > 0 else None
                        mujoco.mjd_transitionFD(model, data, self.fd_eps, self.fd_centered, a_out, b_frame, None, None)
                        if state_derivatives:
                            a_step = a_frame @ a_step
                        b_step = a_frame @ b_step + b_frame if frame > 0 else b_frame.copy()
                        mujoco.mj_step(model, data)
                else:
                    mujoco.mj_step(model, data, nstep=self.frame_skip)
                next_state[i, :nq], next_state[i, nq : nq + nv] = data.qpos, data.qvel
                if self._instability_warnings(data) != unstable_before:
                    # MuJoCo found a NaN, inf or huge value and silently reset mjData to qpos0: a non-finite state here,
                    # so the base class ends and resets this env instead of reading the jump as a normal step.
                    next_state[i] = np.nan
                if self.aux_dim:
                    mujoco.mj_forward(model, data)
                    mujoco.mj_rnePostConstraint(model, data)
                    next_state[i, nq + nv :] = self.aux(data)
                if derivatives and self._whole_step_fd:
                    a_step, b_step = self._whole_step_jacobians(
                        data, state[i, : nq + nv], action[i], next_state[i, :nq], state_derivatives
                    )
                if derivatives and self._quat_adr:
                    # tangent space -> qpos coordinates: x' = E(q') A F(q) x
                    expand = self._tangent_to_qpos(next_state[i, :nq])
                    a_step, b_step = expand @ a_step @ self._qpos_to_tangent(state[i, :nq]), expand @ b_step
                if derivatives:  # aux rows and columns stay zero
                    jacobians[0][i, : nq + nv, : nq + nv], jacobians[1][i, : nq + nv] = a_step, b_step

        if self._pool is None:
            simulate(chunks[0])
        else:
            list(self._pool.map(simulate, chunks))
        if derivatives:
            return SimStep(next_state, dx_dx=jacobians[0] if state_derivatives else None, dx_da=jacobians[1])
        return SimStep(next_state)

    def _instability_warnings(self, data: Any) -> int:
        """How many times MuJoCo warned about a NaN/inf/huge qpos, qvel or qacc in ``data`` (it then resets ``data``)."""
        return sum(int(data.warning[kind].number) for kind in self._unstable_kinds)

    def _whole_step_jacobians(
        self, data: Any, qpos_qvel: np.ndarray, ctrl: np.ndarray, next_qpos: np.ndarray, state_derivatives: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        Tangent-space Jacobians of a whole env step by central differences (2 (2 nv + nu) steps, 2 nu without
        ``state_derivatives``: dx'/dx is then left zero); overwrites ``data``.
        """
        mujoco, model, nq, nv, eps = self.mujoco, self.model, self.nq, self.nv, self.fd_eps
        columns = [np.zeros(2 * nv)] * (0 if state_derivatives else 2 * nv)
        for j in range(0 if state_derivatives else 2 * nv, 2 * nv + self.nu):
            outputs = []
            for sign in (1.0, -1.0):
                data.qpos[:], data.qvel[:], data.ctrl[:] = qpos_qvel[:nq], qpos_qvel[nq:], ctrl
                if j < nv:  # a position perturbation lives in the tangent space
                    direction = np.zeros(nv)
                    direction[j] = sign * eps
                    mujoco.mj_integratePos(model, data.qpos, direction, 1.0)
                elif j < 2 * nv:
                    data.qvel[j - nv] += sign * eps
                else:
                    data.ctrl[j - 2 * nv] += sign * eps
                mujoco.mj_step(model, data, nstep=self.frame_skip)
                position = np.zeros(nv)
                mujoco.mj_differentiatePos(model, position, 1.0, next_qpos, data.qpos)
                outputs.append(np.concatenate([position, data.qvel]))
            columns.append((outputs[0] - outputs[1]) / (2 * eps))
        jacobian = np.stack(columns, axis=1)
        return jacobian[:, : 2 * nv], jacobian[:, 2 * nv :]

    def _tangent_to_qpos(self, qpos: np.ndarray) -> np.ndarray:
        """d[qpos, qvel] / d[dqpos, qvel]: (nq + nv, 2 nv); each quaternion block is 0.5 L(q)[:, 1:]."""
        expand = np.zeros((self.nq + self.nv, 2 * self.nv))
        expand[self.nq :, self.nv :] = np.eye(self.nv)
        row = col = 0
        for adr in [*self._quat_adr, self.nq]:  # identity blocks between quaternions
            width = adr - row
            expand[row:adr, col : col + width] = np.eye(width)
            row, col = adr + 4, col + width + 3
            if adr < self.nq:
                q = qpos[adr : adr + 4] / np.linalg.norm(qpos[adr : adr + 4])
                expand[adr : adr + 4, col - 3 : col] = 0.5 * _quat_left(q)[:, 1:]
        return expand

    def _qpos_to_tangent(self, qpos: np.ndarray) -> np.ndarray:
        """d[dqpos, qvel] / d[qpos, qvel]: (2 nv, nq + nv); each quaternion block is 2 L(q^-1)[1:] / |q|."""
        project = np.zeros((2 * self.nv, self.nq + self.nv))
        project[self.nv :, self.nq :] = np.eye(self.nv)
        row = col = 0
        for adr in [*self._quat_adr, self.nq]:
            width = adr - col
            project[row : row + width, col:adr] = np.eye(width)
            row, col = row + width + 3, adr + 4
            if adr < self.nq:
                norm = np.linalg.norm(qpos[adr : adr + 4])
                conj = qpos[adr : adr + 4] * np.array([1.0, -1.0, -1.0, -1.0]) / norm
                project[row - 3 : row, adr : adr + 4] = 2.0 * _quat_left(conj)[1:] / norm
        return project

    # ------------------------------------------------------------- rendering and cleanup
    def render_state(self, state: np.ndarray, action: np.ndarray | None) -> np.ndarray:
        if self._renderer is None:
            self._renderer = self.mujoco.Renderer(self.model, 480, 480)
            self._render_data = self.mujoco.MjData(self.model)
        self._render_data.qpos[:], self._render_data.qvel[:] = state[: self.nq], state[self.nq : self.nq + self.nv]
        self.mujoco.mj_forward(self.model, self._render_data)
        self._renderer.update_scene(self._render_data)
        return self._renderer.render()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        if self._renderer is not None:
            self._renderer.close()
        super().close()
