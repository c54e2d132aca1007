"""DiffReacher-v0 and DiffQuadrotor-v0: physics, gradients, gymnasium face, rendering; and the draw helpers."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_checker import check_env

import sb3_rpo  # noqa: F401  (registers the ids)
from sb3_rpo import make_diff_vec_env
from sb3_rpo.envs.draw import Viewport, canvas, draw_line, fill_circle
from sb3_rpo.envs.quadrotor import DiffQuadrotor, euler_to_quat, quat_to_matrix
from sb3_rpo.envs.reacher import DiffReacher

# (env id, task kwargs)
TASKS = [("DiffReacher-v0", {}), ("DiffQuadrotor-v0", {}), ("DiffQuadrotor-v0", {"control_mode": "ctbr"})]
TASK_IDS = ["reacher", "quad-motors", "quad-ctbr"]


def rollout(env, state: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """Rewards (steps, n) and final observation of ``env.diff_step`` from ``state``, concatenated."""
    env.diff_reset()
    env.state = state
    rewards = []
    for a in actions:
        obs, rew, terminated, truncated, _ = env.diff_step(a)
        assert not bool((terminated | truncated).any()), "the checked rollout must not cross a reset"
        rewards.append(rew)
    return th.cat([th.stack(rewards).flatten(), obs.flatten()])


# ------------------------------------------------------------------------------------------ common
@pytest.mark.parametrize("env_id,kwargs", TASKS, ids=TASK_IDS)
def test_gradcheck_float64_rollout(env_id, kwargs):
    n_envs = 2 if env_id == "DiffReacher-v0" else 1
    env = make_diff_vec_env(env_id, n_envs=n_envs, seed=0, dtype=th.float64, **kwargs)
    env.diff_reset()
    state0 = env.state.clone().requires_grad_(True)
    gen = th.Generator().manual_seed(1)
    shape = (4, n_envs, env.action_space.shape[0])
    actions = (0.8 * th.rand(*shape, generator=gen, dtype=th.float64) - 0.4).requires_grad_(True)
    if env_id == "DiffQuadrotor-v0":
        with th.no_grad():
            actions += th.as_tensor(env.hover_action)  # fly, do not fall
    assert th.autograd.gradcheck(lambda s, a: rollout(env, s, a), (state0, actions), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("env_id,kwargs", TASKS, ids=TASK_IDS)
def test_float32_window_gradients(env_id, kwargs):
    env = make_diff_vec_env(env_id, n_envs=8, seed=3, dtype=th.float32, **kwargs)
    env.diff_reset()
    gen = th.Generator().manual_seed(0)
    actions = th.tanh(th.randn(32, 8, env.action_space.shape[0], generator=gen)).requires_grad_(True)
    total = sum(env.diff_step(a)[1].sum() for a in actions)
    total.backward()
    assert th.isfinite(actions.grad).all()
    # Every action moves its own step's reward at least, even on the last step of an episode.
    assert (actions.grad.abs().sum(dim=-1) > 0).all()


@pytest.mark.parametrize("env_id,kwargs", TASKS, ids=TASK_IDS)
@pytest.mark.parametrize("dtype", [th.float32, th.float64])
def test_dtypes(env_id, kwargs, dtype):
    env = make_diff_vec_env(env_id, n_envs=3, seed=0, dtype=dtype, **kwargs)
    obs = env.diff_reset()
    assert obs.dtype == dtype and obs.shape == (3, *env.observation_space.shape)
    obs, rew, *_ = env.diff_step(th.zeros(3, env.action_space.shape[0], dtype=dtype))
    assert obs.dtype == dtype and rew.dtype == dtype and th.isfinite(obs).all()
    assert env.observation_space.contains(env.reset()[0])


@pytest.mark.parametrize("env_id,kwargs", TASKS, ids=TASK_IDS)
def test_gym_make_check_env_and_render(env_id, kwargs):
    env = gym.make(env_id, render_mode="rgb_array", **kwargs)
    check_env(env.unwrapped)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    colors = np.unique(frame.reshape(-1, 3), axis=0)
    assert len(colors) >= 4  # background plus the drawn bodies, not a blank frame
    assert (frame == frame[0, 0]).all(axis=-1).mean() < 0.99


# ------------------------------------------------------------------------------------------ reacher
def test_reacher_mass_matrix_matches_link_jacobians():
    env = DiffReacher(1, dtype=th.float64)
    q = th.rand(16, 2, dtype=th.float64) * 4 * math.pi - 2 * math.pi
    q1, q12 = q[:, 0], q[:, 0] + q[:, 1]
    zero = th.zeros_like(q1)
    lc1, lc2 = env.l1 / 2, env.l2 / 2
    # Jacobians of the link centres of mass (rows x, y) with respect to (q1, q2).
    jac1 = th.stack([th.stack([-lc1 * th.sin(q1), zero], -1), th.stack([lc1 * th.cos(q1), zero], -1)], -2)
    jac2 = th.stack(
        [
            th.stack([-env.l1 * th.sin(q1) - lc2 * th.sin(q12), -lc2 * th.sin(q12)], -1),
            th.stack([env.l1 * th.cos(q1) + lc2 * th.cos(q12), lc2 * th.cos(q12)], -1),
        ],
        -2,
    )
    i1, i2 = env.m1 * env.l1**2 / 12, env.m2 * env.l2**2 / 12
    rot = th.tensor([[i1 + i2, i2], [i2, i2]], dtype=th.float64)  # rod inertias, angular Jacobians [1, 0] and [1, 1]
    expected = env.m1 * jac1.mT @ jac1 + env.m2 * jac2.mT @ jac2 + rot + env.armature * th.eye(2, dtype=th.float64)
    mass = env.mass_matrix(q)
    th.testing.assert_close(mass, expected)
    assert (th.linalg.eigvalsh(mass) > 0).all()


def test_reacher_accelerations_follow_euler_lagrange():
    env = DiffReacher(1, dtype=th.float64)
    gen = th.Generator().manual_seed(0)
    q, dq, tau = (th.randn(8, 2, generator=gen, dtype=th.float64) * s for s in (3.0, 5.0, 1.0))

    def kinetic(q_, dq_):
        return 0.5 * th.einsum("ni,nij,nj->n", dq_, env.mass_matrix(q_), dq_).sum()

    # M ddq = tau - damping dq + dT/dq - (dM/dt) dq, with (dM/dt) dq = d(M dq)/dq . dq.
    q_req = q.clone().requires_grad_(True)
    dT_dq = th.autograd.grad(kinetic(q_req, dq), q_req)[0]
    dM_dq = th.autograd.functional.jacobian(lambda x: th.einsum("nij,nj->ni", env.mass_matrix(x), dq).sum(0), q)
    mdot_dq = th.einsum("inj,nj->ni", dM_dq, dq)
    rhs = tau - env.damping * dq + dT_dq - mdot_dq
    expected = th.linalg.solve(env.mass_matrix(q), rhs)
    th.testing.assert_close(env.joint_accelerations(q, dq, tau), expected)


def test_reacher_energy_conserved_without_torque_and_damping():
    env = DiffReacher(4, dtype=th.float64, seed=0)
    env.damping = 0.0
    env.diff_reset()
    start = env.state.clone()
    start[:, 2:4] = th.tensor([[3.0, -2.0], [-1.0, 4.0], [2.0, 2.0], [0.5, -5.0]], dtype=th.float64)

    def energy(s):
        return 0.5 * th.einsum("ni,nij,nj->n", s[:, 2:4], env.mass_matrix(s[:, :2]), s[:, 2:4])

    # Over 1 s (several elbow revolutions) the kinetic energy drifts by a few percent at the env's step,
    # and ten times less with a ten times smaller step: the integrator's first-order error, nothing else.
    e0 = energy(start)
    for n_substeps, rtol in ((2, 0.05), (20, 0.005)):
        env.n_substeps, env.dt = n_substeps, 0.02 / n_substeps
        state = start
        for _ in range(50):
            state = env.dynamics(state, th.zeros(4, 2, dtype=th.float64))
            assert th.allclose(energy(state), e0, rtol=rtol)
    env.n_substeps, env.dt = DiffReacher.n_substeps, DiffReacher.dt
    env.damping = DiffReacher.damping
    damped = env.dynamics(state, th.zeros(4, 2, dtype=th.float64))
    assert (energy(damped) < energy(state)).all()


def test_reacher_initial_state_and_observation_layout():
    env = DiffReacher(512, seed=0, dtype=th.float64)
    obs = env.diff_reset()
    state = env.state
    assert (state[:, :2].abs() <= 0.1).all() and (state[:, 2:4].abs() <= 0.005).all()
    radius = th.linalg.vector_norm(state[:, 4:6], dim=-1)
    assert (radius < 0.2).all() and radius.max() > 0.18 and (state[:, 4:6] < 0).any(dim=0).all()
    assert obs.shape == (512, 10)
    th.testing.assert_close(obs[:, 4:6], state[:, 4:6])
    th.testing.assert_close(obs[:, 6:8], state[:, 2:4])
    # Straight arm along x: fingertip at (l1 + l2, 0).
    straight = th.tensor([[0.0, 0.0, 0.0, 0.0, 0.1, 0.05]], dtype=th.float64)
    th.testing.assert_close(env.fingertip(straight), th.tensor([[0.21, 0.0]], dtype=th.float64))
    th.testing.assert_close(
        env.observation(straight), th.tensor([[1.0, 1.0, 0.0, 0.0, 0.1, 0.05, 0.0, 0.0, 0.11, -0.05]], dtype=th.float64)
    )
    action = th.tensor([[0.5, -1.0]], dtype=th.float64)
    expected = -math.hypot(0.11, 0.05) - 1.25 * env.ctrl_cost_weight
    assert env.reward(straight, action, straight).item() == pytest.approx(expected)


def reacher_controller(env: DiffReacher, state: th.Tensor, kp: float, kd: float) -> th.Tensor:
    """Joint-space PD towards the inverse-kinematics solution (elbow sign) closest to the current angles."""
    tx, ty = state[:, 4], state[:, 5]
    cos_q2 = ((tx**2 + ty**2 - env.l1**2 - env.l2**2) / (2 * env.l1 * env.l2)).clamp(-1, 1)
    best = None
    for sign in (1.0, -1.0):
        q2 = sign * th.acos(cos_q2)
        q1 = th.atan2(ty, tx) - th.atan2(env.l2 * th.sin(q2), env.l1 + env.l2 * th.cos(q2))
        err = (th.stack([q1, q2], -1) - state[:, :2] + math.pi) % (2 * math.pi) - math.pi
        best = err if best is None else th.where((err.abs().sum(-1) < best.abs().sum(-1)).unsqueeze(-1), err, best)
    return (kp * best - kd * state[:, 2:4]).clamp(-1, 1)


def test_reacher_is_solvable_and_rewards_reaching():
    """A PD controller reaches every target; its return beats doing nothing (the effort cost is not too high)."""
    returns = {}
    for kp, kd in ((0.0, 0.0), (1.0, 0.15)):
        env = DiffReacher(128, seed=0, dtype=th.float64)
        env.diff_reset()
        total = th.zeros(128, dtype=th.float64)
        for _ in range(99):
            total += env.diff_step(reacher_controller(env, env.state, kp, kd))[1]
        returns[kp] = total.mean().item()
    dist = th.linalg.vector_norm(env.fingertip(env.state) - env.state[:, 4:6], dim=-1)
    assert dist.median() < 1e-3 and dist.quantile(0.9) < 5e-3 and dist.max() < 0.02  # near-singular at r ~ 0.2
    assert returns[1.0] > returns[0.0] + 5


# ------------------------------------------------------------------------------------------ quadrotor
def level_state(n: int, z: float = 1.0, dtype: th.dtype = th.float64) -> th.Tensor:
    state = th.zeros(n, 16, dtype=dtype)
    state[:, 2] = z
    state[:, 6] = 1.0
    state[:, 13:] = th.tensor([1.0, 0.0, 2.0], dtype=dtype)
    return state


@pytest.mark.parametrize("mode", ["motors", "ctbr"])
def test_quadrotor_hovers_with_hover_action(mode):
    env = DiffQuadrotor(2, control_mode=mode, dtype=th.float64)
    state = level_state(2)
    hover = th.as_tensor(env.hover_action).expand(2, 4)
    for _ in range(50):
        state = env.dynamics(state, hover)
    th.testing.assert_close(state, level_state(2), atol=1e-9, rtol=0)  # no vertical acceleration, no rotation
    # Full thrust: vertical acceleration (T/W - 1) g.
    vz = env.dynamics(level_state(2), th.ones(2, 4, dtype=th.float64))[:, 5]
    th.testing.assert_close(vz, th.full_like(vz, (env.thrust_to_weight - 1) * env.gravity * 0.02), rtol=1e-3, atol=0)


def test_quadrotor_motor_torques_tilt_the_right_way():
    env = DiffQuadrotor(1, dtype=th.float64)
    hover = env.hover_action[0]
    # More thrust on the left motors (+y): roll right-handed about x, thrust tilts towards -y.
    left = th.tensor([[hover + 0.05, hover + 0.05, hover - 0.05, hover - 0.05]], dtype=th.float64)
    state = level_state(1)
    for _ in range(10):
        state = env.dynamics(state, left)
    assert state[0, 10] > 0.1 and abs(state[0, 11]) < 1e-9 and state[0, 4] < 0
    # More thrust on the front motors (+x) pitches nose up (negative about y), thrust tilts towards -x.
    front = th.tensor([[hover + 0.05, hover - 0.05, hover - 0.05, hover + 0.05]], dtype=th.float64)
    state = env.dynamics(env.dynamics(level_state(1), front), front)
    assert state[0, 11] < 0 and state[0, 3] < 0
    # Motors 0 and 2 spin so that their drag torque turns the body positively about z.
    yaw = th.tensor([[hover + 0.05, hover - 0.05, hover + 0.05, hover - 0.05]], dtype=th.float64)
    state = env.dynamics(level_state(1), yaw)
    assert state[0, 12] > 0 and abs(state[0, 5]) < 1e-9


def test_quadrotor_torque_free_rotation_conserves_momentum_and_energy():
    env = DiffQuadrotor(2, dtype=th.float64)
    env.rate_damping = 0.0
    env.inertia = (0.003, 0.005, 0.0088)  # asymmetric, so that the gyroscopic coupling matters
    inertia = th.tensor(env.inertia, dtype=th.float64)
    state = level_state(2, z=3.0)
    state[:, 10:13] = th.tensor([[2.0, 0.0, 10.0], [5.0, -4.0, 1.0]], dtype=th.float64)
    start = state
    hover = th.as_tensor(env.hover_action).expand(2, 4)  # balanced motors: zero torque
    for _ in range(100):  # 2 s of spinning
        state = env.dynamics(state, hover)
    momentum, momentum0 = inertia * state[:, 10:13], inertia * start[:, 10:13]
    th.testing.assert_close(momentum.norm(dim=-1), momentum0.norm(dim=-1))
    energy = (momentum * state[:, 10:13]).sum(-1)
    th.testing.assert_close(energy, (momentum0 * start[:, 10:13]).sum(-1), rtol=1e-3, atol=0)
    assert (state[:, 10:13] - start[:, 10:13]).abs().max() > 1.0  # the rates did precess
    # The world-frame angular momentum R L is constant too (up to the attitude integration error).
    world = (quat_to_matrix(state[:, 6:10]) @ momentum.unsqueeze(-1)).squeeze(-1)
    th.testing.assert_close(world, momentum0, rtol=0, atol=0.02 * momentum0.norm(dim=-1).max().item())


def test_quadrotor_ctbr_tracks_rates_and_keeps_unit_quaternion():
    env = DiffQuadrotor(1, control_mode="ctbr", dtype=th.float64)
    action = th.tensor([[env.hover_action[0], 0.5, -0.25, 1.0]], dtype=th.float64)
    state = level_state(1, z=3.0)
    for _ in range(15):  # 0.3 s = 6 time constants
        state = env.dynamics(state, action)
    cmd = action[0, 1:] * th.tensor(env.max_body_rate, dtype=th.float64)
    th.testing.assert_close(state[0, 10:13], cmd, rtol=0.01, atol=0)

    env = DiffQuadrotor(8, seed=0, dtype=th.float64)
    env.diff_reset()
    gen = th.Generator().manual_seed(0)
    for _ in range(100):
        env.diff_step(2 * th.rand(8, 4, generator=gen, dtype=th.float64) - 1)
        th.testing.assert_close(th.linalg.vector_norm(env.state[:, 6:10], dim=-1), th.ones(8, dtype=th.float64))


def test_quadrotor_observation_matches_state():
    env = DiffQuadrotor(64, seed=1, dtype=th.float64)
    obs = env.diff_reset()
    state = env.state
    th.testing.assert_close(obs[:, :3], state[:, :3] - state[:, 13:16])
    th.testing.assert_close(obs[:, 3:6], state[:, 3:6])
    rot = obs[:, 6:15].reshape(-1, 3, 3)
    th.testing.assert_close(rot @ rot.mT, th.eye(3, dtype=th.float64).expand(64, 3, 3))
    th.testing.assert_close(obs[:, 15:18], state[:, 10:13])
    th.testing.assert_close(obs[:, 18:21], state[:, :3])
    # Initial attitude: small roll and pitch, so the body z axis points nearly up.
    assert (rot[:, 2, 2] > math.cos(0.3)).all()
    rpy = th.tensor([[0.1, -0.2, 0.3]], dtype=th.float64)
    expected = (
        th.linalg.matrix_exp(th.tensor([[0.0, -0.3, 0.0], [0.3, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=th.float64))
        @ th.linalg.matrix_exp(th.tensor([[0.0, 0.0, -0.2], [0.0, 0.0, 0.0], [0.2, 0.0, 0.0]], dtype=th.float64))
        @ th.linalg.matrix_exp(th.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, -0.1], [0.0, 0.1, 0.0]], dtype=th.float64))
    )
    th.testing.assert_close(quat_to_matrix(euler_to_quat(*rpy.unbind(-1)))[0], expected)


def quadrotor_controller(env: DiffQuadrotor, state: th.Tensor) -> th.Tensor:
    """Cascaded position PD -> thrust direction -> body rates (-> torques and motor mixing in ``motors`` mode)."""
    p, v, w, target = state[:, :3], state[:, 3:6], state[:, 10:13], state[:, 13:]
    rot = quat_to_matrix(state[:, 6:10])
    acc = 4.0 * (target - p) - 3.0 * v
    acc = acc * (5.0 / acc.norm(dim=-1, keepdim=True).clamp(min=5.0)) + th.tensor([0.0, 0.0, env.gravity], dtype=state.dtype)
    body_z = rot[:, :, 2]
    thrust = env.mass * (acc * body_z).sum(-1)
    tilt = (rot.mT @ th.linalg.cross(body_z, acc / acc.norm(dim=-1, keepdim=True)).unsqueeze(-1)).squeeze(-1)
    rates = 10.0 * tilt * th.tensor([1.0, 1.0, 0.0], dtype=state.dtype)
    if env.control_mode == "ctbr":
        max_rate = th.tensor(env.max_body_rate, dtype=state.dtype)
        return th.cat([(thrust / (2 * env.max_motor_thrust) - 1).unsqueeze(-1), rates / max_rate], -1).clamp(-1, 1)
    inertia = th.tensor(env.inertia, dtype=state.dtype)
    torque = inertia * 20.0 * (rates - w) + th.linalg.cross(w, inertia * w)
    d, c = env.arm_length / math.sqrt(2), env.yaw_torque_coef
    mix = th.tensor([[1, 1, 1, 1], [d, d, -d, -d], [-d, d, d, -d], [c, -c, c, -c]], dtype=state.dtype)
    forces = th.linalg.solve(mix, th.cat([thrust.unsqueeze(-1), torque], -1).unsqueeze(-1)).squeeze(-1)
    return (2 * forces / env.max_motor_thrust - 1).clamp(-1, 1)


@pytest.mark.parametrize("mode", ["motors", "ctbr"])
def test_quadrotor_is_solvable(mode):
    """A cascaded controller flies every start to its target and hovers there: the task and its conventions fit."""
    env = DiffQuadrotor(32, seed=0, control_mode=mode, dtype=th.float64)
    env.diff_reset()
    total = th.zeros(32, dtype=th.float64)
    for _ in range(299):
        _, rew, terminated, _, _ = env.diff_step(quadrotor_controller(env, env.state))
        assert not terminated.any()
        total += rew
    assert th.linalg.vector_norm(env.state[:, :3] - env.state[:, 13:], dim=-1).max() < 0.01
    assert th.linalg.vector_norm(env.state[:, 3:6], dim=-1).max() < 0.01
    assert total.min() > 0.6 * 299 * env.alive_bonus  # most of the episode near the target


def test_quadrotor_termination():
    env = DiffQuadrotor(5, dtype=th.float64)
    state = level_state(5)
    state[1, 2] = -0.01  # below the ground
    state[2, 6:10] = th.tensor([0.0, 1.0, 0.0, 0.0])  # upside down (rolled by pi)
    state[3, 0] = 4.5  # outside the box
    state[4, 2] = 5.5  # above the box
    assert env.terminated(state).tolist() == [False, True, True, True, True]

    # Motors off from 1 m: free fall reaches the ground after sqrt(2 / g) = 0.45 s, i.e. about step 23.
    env = DiffQuadrotor(2, seed=0, dtype=th.float64)
    env.diff_reset()
    env.state = level_state(2)
    step, terminated = 0, th.zeros(2, dtype=th.bool)
    while not terminated.any() and step < 40:
        _, _, terminated, truncated, info = env.diff_step(-th.ones(2, 4, dtype=th.float64))
        step += 1
    assert terminated.all() and not truncated.any() and 20 <= step <= 26
    assert (info["episode_length"] == step).all() and (info["final_obs"][:, 20] < 0).all()
    assert (env.state[:, 2] >= 0.5).all()  # reset to a fresh initial state


def test_quadrotor_rejects_unknown_control_mode():
    with pytest.raises(ValueError, match="control_mode"):
        DiffQuadrotor(1, control_mode="attitude")


# ------------------------------------------------------------------------------------------ draw
def test_draw_primitives():
    img = canvas(100, 120, (0, 0, 0))
    assert img.shape == (100, 120, 3) and img.dtype == np.uint8 and not img.any()
    fill_circle(img, (60, 50), 20, (255, 0, 0))
    assert abs(int((img[..., 0] == 255).sum()) - math.pi * 400) < 0.03 * math.pi * 400
    assert tuple(img[50, 60]) == (255, 0, 0) and tuple(img[50, 85]) == (0, 0, 0)
    img = canvas(100, 120, (0, 0, 0))
    draw_line(img, (10, 10), (90, 10), 5, (0, 255, 0))
    count = int((img[..., 1] == 255).sum())
    assert abs(count - (80 * 5 + math.pi * 2.5**2)) < 30
    assert img[10, 50, 1] == 255 and img[20, 50, 1] == 0 and img[10, 100, 1] == 0
    # Shapes partly or fully off the canvas are clipped, not an error.
    fill_circle(img, (-5, -5), 10, (0, 0, 255))
    draw_line(img, (-50, 500), (-10, 600), 3, (0, 0, 255))
    assert img[0, 0, 2] == 255 and img[..., 2].sum() < 255 * 100
    view = Viewport((-1.0, 1.0), (0.0, 1.0), (200, 200), offset=(10, 0))
    assert view(0.0, 0.5) == (110.0, 100.0) and view(1.0, 1.0) == (210.0, 50.0)
