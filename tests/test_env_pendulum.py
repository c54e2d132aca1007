"""DiffPendulum-v0 against gymnasium's Pendulum-v1, and its gradients."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_checker import check_env

from sb3_rpo import make_diff_vec_env


def test_parity_with_gymnasium_pendulum():
    reference = gym.make("Pendulum-v1").unwrapped
    env = make_diff_vec_env("DiffPendulum-v0", n_envs=1, dtype=th.float64)
    env.diff_reset()
    rng = np.random.default_rng(0)
    for _ in range(200):
        state = rng.uniform([-2 * np.pi, -8.0], [2 * np.pi, 8.0])
        u = rng.uniform(-2.5, 2.5, size=1)  # also outside the bounds, where both clip
        reference.state = state.copy()
        obs_ref, reward_ref, *_ = reference.step(u.astype(np.float32))
        env.state = th.tensor(state[None], dtype=th.float64)
        _, reward, _, _, info = env.diff_step(th.tensor(u[None], dtype=th.float64))
        np.testing.assert_allclose(info["final_obs"][0].numpy(), obs_ref, atol=1e-5)
        assert reward.item() == pytest.approx(reward_ref, abs=1e-5)


def test_initial_states_and_episode_length_match_pendulum_v1():
    env = make_diff_vec_env("DiffPendulum-v0", n_envs=1000, seed=0)
    env.diff_reset()
    assert env.state[:, 0].abs().max() <= np.pi and env.state[:, 1].abs().max() <= 1.0
    assert env.state[:, 0].std() > 1.5  # spread over the whole circle
    assert env.max_episode_steps == gym.spec("Pendulum-v1").max_episode_steps == 200


def test_gradcheck_float64_multistep():
    env = make_diff_vec_env("DiffPendulum-v0", n_envs=3, dtype=th.float64, seed=1)
    env.diff_reset()
    start = th.tensor([[0.3, 0.5], [2.0, -1.0], [-1.0, 0.2]], dtype=th.float64, requires_grad=True)
    actions = (0.3 * th.randn(5, 3, 1, dtype=th.float64)).requires_grad_(True)

    def rollout(s0, acts):
        env.state, env.elapsed_steps = s0, th.zeros_like(env.elapsed_steps)
        total = 0.0
        for a in acts:
            obs, reward, *_ = env.diff_step(a)
            total = total + reward
        return total, obs

    assert th.autograd.gradcheck(rollout, (start, actions), eps=1e-6, atol=1e-6)


def test_float32_gradients_over_a_window_are_finite_and_nonzero():
    env = make_diff_vec_env("DiffPendulum-v0", n_envs=8, seed=2)
    env.diff_reset()
    actions = [(0.5 * th.randn(8, 1)).requires_grad_(True) for _ in range(32)]
    total = sum(env.diff_step(th.tanh(a) * 2.0)[1].sum() for a in actions)
    total.backward()
    grads = th.stack([a.grad for a in actions])
    assert th.isfinite(grads).all() and (grads.abs().sum(dim=(0, 2)) > 0).all()


def test_gym_env_check_and_render():
    env = gym.make("DiffPendulum-v0", render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=False)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (500, 500, 3) and frame.dtype == np.uint8 and frame.std() > 0
