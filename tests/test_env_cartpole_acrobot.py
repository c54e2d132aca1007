"""DiffCartPoleSwingUp-v0 and DiffAcrobot-v0: parity with gymnasium, gradients, SB3 checks, rendering, episodes."""

import math
import os

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium.envs.classic_control.acrobot import AcrobotEnv
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from stable_baselines3.common.env_checker import check_env

from sb3_rpo import make_diff_vec_env
from sb3_rpo.envs.acrobot import DiffAcrobot
from sb3_rpo.envs.cartpole import DiffCartPoleSwingUp

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

ENV_IDS = ["DiffCartPoleSwingUp-v0", "DiffAcrobot-v0"]


def random_states(env_id: str, n: int, seed: int, dtype: th.dtype = th.float64) -> th.Tensor:
    """States spread over the whole state space (not only near the initial ones)."""
    rng = np.random.default_rng(seed)
    if env_id == "DiffCartPoleSwingUp-v0":
        low, high = [-1.5, -2.0, -math.pi, -4.0], [1.5, 2.0, math.pi, 4.0]
    else:
        low, high = [-math.pi, -math.pi, -3.0, -6.0], [math.pi, math.pi, 3.0, 6.0]
    return th.as_tensor(rng.uniform(low, high, size=(n, 4)), dtype=dtype)


def wrapped_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a - b + np.pi) % (2 * np.pi) - np.pi


# ----------------------------------------------------------------------------- parity with gymnasium
def test_cartpole_dynamics_match_gymnasium():
    rng = np.random.default_rng(0)
    n = 64
    # Wide ranges, angles beyond [-pi, pi] included: gymnasium does not wrap theta either.
    states = rng.uniform([-3.0, -5.0, -2 * np.pi, -10.0], [3.0, 5.0, 2 * np.pi, 10.0], size=(n, 4))
    actions = rng.integers(0, 2, size=n)  # gymnasium: 1 pushes right with force_mag, 0 left
    env = DiffCartPoleSwingUp(n, dtype=th.float64)
    ours = env.dynamics(th.as_tensor(states), th.as_tensor(2.0 * actions - 1.0).reshape(n, 1)).numpy()
    gym_env = CartPoleEnv()
    assert (gym_env.gravity, gym_env.masscart, gym_env.masspole, gym_env.length, gym_env.tau, gym_env.force_mag) == (
        env.gravity,
        env.masscart,
        env.masspole,
        env.length,
        env.tau,
        env.force_mag,
    )
    for i in range(n):
        gym_env.state = states[i].copy()
        gym_env.steps_beyond_terminated = None
        obs, *_ = gym_env.step(int(actions[i]))
        np.testing.assert_allclose(ours[i], gym_env.state, rtol=0, atol=1e-5)
        np.testing.assert_allclose(ours[i], obs, rtol=1e-6, atol=1e-5)  # gymnasium's float32 observation


def test_acrobot_dynamics_match_gymnasium():
    rng = np.random.default_rng(1)
    n = 64
    max_vel = np.array([AcrobotEnv.MAX_VEL_1, AcrobotEnv.MAX_VEL_2])
    states = np.concatenate([rng.uniform(-np.pi, np.pi, (n, 2)), rng.uniform(-max_vel, max_vel, (n, 2))], axis=1)
    actions = rng.integers(0, 3, size=n)  # gymnasium: torques -1, 0, 1
    env = DiffAcrobot(n, dtype=th.float64)
    next_states = env.dynamics(th.as_tensor(states), th.as_tensor(actions - 1.0).reshape(n, 1))
    ours, our_obs = next_states.numpy(), env.observation(next_states).numpy()
    gym_env = AcrobotEnv()
    assert gym_env.torque_noise_max == 0.0 and gym_env.book_or_nips == "book" and gym_env.dt == env.dt
    n_clipped = 0
    for i in range(n):
        gym_env.state = states[i].copy()
        obs, *_ = gym_env.step(int(actions[i]))
        np.testing.assert_allclose(wrapped_diff(ours[i, :2], gym_env.state[:2]), 0.0, atol=1e-5)
        np.testing.assert_allclose(ours[i, 2:], gym_env.state[2:], rtol=0, atol=1e-5)
        np.testing.assert_allclose(our_obs[i], obs, rtol=1e-6, atol=1e-5)
        n_clipped += int(np.any(np.abs(gym_env.state[2:]) >= max_vel))
    assert -np.pi <= ours[:, :2].min() and ours[:, :2].max() < np.pi
    assert n_clipped > 0, "the sample should exercise the velocity bounds"


def test_rewards_at_reference_states():
    cart = DiffCartPoleSwingUp(2, dtype=th.float64)
    states = th.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, math.pi, 0.0]], dtype=th.float64)  # upright, hanging
    zero = th.zeros(2, 1, dtype=th.float64)
    np.testing.assert_allclose(cart.reward(states, zero, cart.dynamics(states, zero)).numpy(), [1.0, 0.0], atol=1e-12)
    moving = th.tensor([[1.2, 1.0, 0.0, 2.0]], dtype=th.float64)
    ones = th.ones(1, 1, dtype=th.float64)
    expected = 1.0 - 0.1 * (1.2 / 2.4) ** 2 - 0.001 * (1.0 + 4.0) - 0.001
    np.testing.assert_allclose(cart.reward(moving, ones, moving).numpy(), [expected])

    acro = DiffAcrobot(2, dtype=th.float64)
    states = th.tensor([[0.0, 0.0, 0.0, 0.0], [math.pi, 0.0, 0.0, 0.0]], dtype=th.float64)  # hanging, upright
    np.testing.assert_allclose(acro.reward(states, zero, acro.dynamics(states, zero)).numpy(), [-1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(acro.reward(states[:1], ones, states[:1]).numpy(), [-1.01])


# ----------------------------------------------------------------------------- gradients
def rollout(env, state: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """Rewards of every step and last observation of a rollout from ``state`` under ``actions`` (T, n, 1)."""
    env.diff_reset()
    env.state = state
    rewards = []
    for t in range(actions.shape[0]):
        obs, reward, terminated, truncated, _ = env.diff_step(actions[t])
        assert not bool((terminated | truncated).any())
        rewards.append(reward)
    return th.cat([*rewards, obs.flatten()])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gradcheck_float64_rollout(env_id):
    env = make_diff_vec_env(env_id, n_envs=3, seed=0, dtype=th.float64)
    state = random_states(env_id, 3, seed=2).requires_grad_(True)
    uniform = th.rand(5, 3, 1, generator=th.Generator().manual_seed(3), dtype=th.float64)
    actions = (0.8 * (2 * uniform - 1)).requires_grad_(True)
    assert th.autograd.gradcheck(lambda s, a: rollout(env, s, a), (state, actions))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_float32_window_gradients_finite_and_nonzero(env_id):
    n, horizon = 8, 32
    env = make_diff_vec_env(env_id, n_envs=n, seed=0, dtype=th.float32)
    env.diff_reset()
    env.state = random_states(env_id, n, seed=4, dtype=th.float32)
    actions = (0.9 * (2 * th.rand(horizon, n, 1, generator=th.Generator().manual_seed(5)) - 1)).requires_grad_(True)
    total = sum(env.diff_step(actions[t])[1].sum() for t in range(horizon))
    total.backward()
    grad = actions.grad
    assert th.isfinite(grad).all()
    assert (grad[0].abs() > 0).all(), "every env's first action should move the window's return"
    assert (grad.abs().sum(dim=(1, 2)) > 0).all(), "every step's actions should get a gradient"


# ----------------------------------------------------------------------------- SB3 / gymnasium surface
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_make_and_check_env(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert env.spec.max_episode_steps == 500


@pytest.mark.parametrize("env_id, shape", [("DiffCartPoleSwingUp-v0", (400, 600, 3)), ("DiffAcrobot-v0", (500, 500, 3))])
def test_render_rgb_array(env_id, shape):
    pytest.importorskip("pygame")
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    frame = env.render()
    assert frame.shape == shape and frame.dtype == np.uint8
    assert frame.min() < 255, "something is drawn"
    venv = env.unwrapped.venv
    venv.state = venv.state.clone()
    venv.state[0, 2 if env_id == "DiffCartPoleSwingUp-v0" else 0] = 0.5
    assert not np.array_equal(env.render(), frame), "the frame follows the state"
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("dtype", [th.float32, th.float64])
def test_dtypes_and_numpy_face(env_id, dtype):
    env = make_diff_vec_env(env_id, n_envs=4, seed=0, dtype=dtype)
    obs = env.diff_reset()
    assert obs.dtype == dtype and obs.shape == (4, env.observation_space.shape[0])
    obs, reward, terminated, truncated, _ = env.diff_step(th.zeros(4, 1, dtype=dtype))
    assert obs.dtype == dtype and reward.dtype == dtype and reward.shape == (4,)
    assert terminated.dtype == truncated.dtype == th.bool
    np_obs = env.reset()
    assert np_obs.dtype == np.float32 and np_obs.shape == (4, env.observation_space.shape[0])
    np_obs, np_reward, dones, infos = env.step(np.full((4, 1), 0.5, dtype=np.float32))
    assert np.isfinite(np_obs).all() and np.isfinite(np_reward).all() and not dones.any() and len(infos) == 4


def test_initial_states_hang_down():
    cart = make_diff_vec_env("DiffCartPoleSwingUp-v0", n_envs=256, seed=0, dtype=th.float64)
    s = cart.sample_initial_state(256)
    assert (s[:, 2] - math.pi).abs().max() <= 0.05 and s[:, [0, 1, 3]].abs().max() <= 0.05
    acro = make_diff_vec_env("DiffAcrobot-v0", n_envs=256, seed=0, dtype=th.float64)
    assert acro.sample_initial_state(256).abs().max() <= 0.1


# ----------------------------------------------------------------------------- episodes
def test_cartpole_terminates_off_the_track():
    env = make_diff_vec_env("DiffCartPoleSwingUp-v0", n_envs=2, seed=0, dtype=th.float64)
    env.diff_reset()
    env.state = th.tensor([[2.39, 5.0, math.pi, 0.0], [0.0, 0.0, math.pi, 0.0]], dtype=th.float64)
    obs, _, terminated, truncated, info = env.diff_step(th.zeros(2, 1, dtype=th.float64))
    assert terminated.tolist() == [True, False] and not truncated.any()
    assert info["final_obs"][0, 0] > 2.4 and info["episode_length"][0] == 1
    assert obs[0, 0].abs() <= 0.05 and obs[0, 2] < -0.99, "the ended env restarts hanging down in the centre"
    # The track bound is an option.
    wide = make_diff_vec_env("DiffCartPoleSwingUp-v0", n_envs=1, seed=0, dtype=th.float64, x_threshold=5.0)
    wide.diff_reset()
    wide.state = th.tensor([[2.39, 5.0, math.pi, 0.0]], dtype=th.float64)
    assert not wide.diff_step(th.zeros(1, 1, dtype=th.float64))[2].any()


def test_acrobot_never_terminates_and_truncates_at_500():
    env = make_diff_vec_env("DiffAcrobot-v0", n_envs=2, seed=0, dtype=th.float64)
    env.diff_reset()
    env.state = th.tensor([[math.pi, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=th.float64)  # tip above the bar
    ends = []
    with th.no_grad():
        for t in range(500):
            _, _, terminated, truncated, _ = env.diff_step(th.ones(2, 1, dtype=th.float64))
            assert not terminated.any()
            if truncated.any():
                ends.append((t + 1, truncated.tolist()))
    assert ends == [(500, [True, True])]


def test_cartpole_energy_controller_swings_up_within_the_track():
    """The task is solvable as specified: energy pumping, then a PD balance, stays on the track."""
    n = 8
    env = make_diff_vec_env("DiffCartPoleSwingUp-v0", n_envs=n, seed=0, dtype=th.float64)
    env.diff_reset()
    m, half_len, g = env.masspole, env.length, env.gravity
    rewards = []
    with th.no_grad():
        for _ in range(500):
            x, x_dot, theta, theta_dot = env.state.unbind(-1)
            # Pole energy relative to upright at rest (inertia about the pivot 4/3 m l^2).
            energy = 2 / 3 * m * half_len**2 * theta_dot**2 + m * g * half_len * (th.cos(theta) - 1)
            pump = (20 * energy * theta_dot * th.cos(theta)).clamp(-1, 1) - 0.2 * (x + x_dot)
            angle = th.atan2(th.sin(theta), th.cos(theta))
            balance = (40 * angle + 8 * theta_dot + x + 2 * x_dot) / 10
            u = th.where(th.cos(theta) > 0.85, balance, pump).clamp(-1, 1)
            _, reward, terminated, *_ = env.diff_step(u.unsqueeze(-1))
            assert not terminated.any()
            rewards.append(reward)
    rewards = th.stack(rewards)
    assert (rewards[-100:] > 0.95).all(), "balanced upright near the centre at the end"
    assert rewards.mean() > 0.8


def test_acrobot_pumping_reaches_gymnasium_goal_height():
    """The torque range suffices: pumping with sign(dtheta2) lifts the tip above gymnasium's bar."""
    env = make_diff_vec_env("DiffAcrobot-v0", n_envs=8, seed=0, dtype=th.float64)
    env.diff_reset()
    best = th.full((8,), -2.0, dtype=th.float64)
    with th.no_grad():
        for _ in range(200):
            u = th.where(env.state[:, 3:] >= 0, 1.0, -1.0).to(th.float64)
            _, reward, *_ = env.diff_step(u)
            best = th.maximum(best, 2 * (reward + 0.01))  # reward = h/2 - 0.01 u^2 with |u| = 1
    assert (best > 1.0).all()
