"""The DiffVecEnv protocol and the DiffTaskVecEnv base: input checks, non-finite states, automatic resets,
episode statistics, seeding, graph cuts, gradients, and the documentation's example task."""

import re
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_rpo import make_diff_vec_env
from sb3_rpo.envs import EMBEDDED_ENV_IDS
from sb3_rpo.envs.pendulum import DiffPendulum

PENDULUM = "DiffPendulum-v0"
ALL_IDS = EMBEDDED_ENV_IDS


def make_pendulum(n_envs: int = 4, seed: int = 0, **kwargs) -> DiffPendulum:
    env = make_diff_vec_env(PENDULUM, n_envs=n_envs, seed=seed, **kwargs)
    assert isinstance(env, DiffPendulum)
    return env


def random_actions(env, n_steps: int, seed: int = 0) -> th.Tensor:
    """Actions uniform in the action space, (n_steps, n_envs, act_dim)."""
    low, high = (th.as_tensor(b, dtype=env.dtype) for b in (env.action_space.low, env.action_space.high))
    u = th.rand(n_steps, env.num_envs, *env.action_space.shape, dtype=env.dtype, generator=th.Generator().manual_seed(seed))
    return low + (high - low) * u


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "make_actions, error, message",
    [
        (lambda: th.zeros(4, 2), ValueError, r"actions of shape \(4, 1\) \(n_envs, act_dim\), got \(4, 2\)"),
        (lambda: th.zeros(4), ValueError, r"actions of shape \(4, 1\) \(n_envs, act_dim\), got \(4,\)"),
        (lambda: th.zeros(4, 1, dtype=th.float64), TypeError, r"dtype torch.float32 \(the env's dtype\), got torch.float64"),
        (lambda: th.zeros(4, 1, device="meta"), ValueError, "actions on device cpu, got meta"),
        (lambda: np.zeros((4, 1), np.float32), TypeError, r"a torch.Tensor of shape \(4, 1\), got ndarray; use step\(\)"),
    ],
)
def test_bad_actions_raise_and_leave_the_env_untouched(make_actions, error, message):
    env = make_pendulum()
    env.diff_reset()
    state = env.state.clone()
    with pytest.raises(error, match=message):
        env.diff_step(make_actions())
    assert th.equal(env.state, state) and not env.elapsed_steps.any()
    env.diff_step(th.zeros(4, 1))  # the env is still usable


def test_bad_construction_and_order_raise():
    unknown = r"No differentiable environment with id 'DiffNope-v0'. Registered ids: .*DiffPendulum-v0"
    with pytest.raises(gym.error.UnregisteredEnv, match=unknown):
        make_diff_vec_env("DiffNope-v0")
    with pytest.raises(ValueError, match="n_envs must be >= 1, got 0"):
        make_diff_vec_env(PENDULUM, n_envs=0)
    with pytest.raises(TypeError, match="dtype must be torch.float32 or torch.float64, got torch.float16"):
        make_diff_vec_env(PENDULUM, dtype=th.float16)
    with pytest.raises(ValueError, match="render_mode must be None or 'rgb_array', got 'human'"):
        make_diff_vec_env(PENDULUM, render_mode="human")
    with pytest.raises(RuntimeError, match=r"call diff_reset\(\) \(or reset\(\)\) before stepping"):
        make_pendulum().diff_step(th.zeros(4, 1))


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs CUDA")
def test_device_given_without_index():
    # "cuda" is how users (and SB3's get_device) name the device; tensors made there report "cuda:0".
    env = make_pendulum(device="cuda")
    obs = env.diff_reset()
    obs, rewards, *_ = env.diff_step(th.zeros(4, 1, device="cuda"))
    assert obs.is_cuda and rewards.is_cuda


# ----------------------------------------------------------------------------- non-finite states
class BlowUpPendulum(DiffPendulum):
    """DiffPendulum whose integrator blows up (NaN) where the torque exceeds 1.5."""

    def dynamics(self, state: th.Tensor, action: th.Tensor) -> th.Tensor:
        return super().dynamics(state, action) * th.sqrt(1.5 - action)


def test_nonfinite_state_is_reported_terminated_and_reset():
    env = make_pendulum(n_envs=3, dtype=th.float64)
    env.diff_reset()
    env.state[1, 1] = float("nan")
    obs, rewards, terminated, truncated, info = env.diff_step(th.zeros(3, 1, dtype=th.float64))
    with pytest.warns(UserWarning, match=r"DiffPendulum: 1 env\(s\) reached a non-finite state"):
        assert env.report_nonfinite()["state"] == 1  # counted on the device, reported once (per window in RPO)
    assert info["nonfinite"].tolist() == [False, True, False]
    assert terminated.tolist() == [False, True, False] and not truncated.any()
    assert env.nonfinite_count == 1
    assert bool(th.isfinite(obs).all() and th.isfinite(rewards).all() and th.isfinite(env.state).all())
    assert env.elapsed_steps.tolist() == [1, 0, 1]
    assert rewards[1] == 0 and info["episode_length"][1] == 1


def test_nonfinite_dynamics_are_reported_through_both_faces():
    env = BlowUpPendulum(num_envs=3, dtype=th.float64, seed=0)
    env.reset()
    with pytest.warns(UserWarning, match="non-finite"):
        obs, rewards, dones, infos = env.step(np.array([[0.0], [2.0], [0.0]], np.float32))
    assert dones.tolist() == [False, True, False] and env.nonfinite_count == 1
    assert np.isfinite(obs).all() and np.isfinite(rewards).all()
    assert infos[1]["nonfinite_state"] is True and infos[1]["TimeLimit.truncated"] is False
    assert np.isfinite(infos[1]["terminal_observation"]).all()
    assert infos[0] == {} and infos[2] == {}


def test_nonfinite_env_does_not_poison_the_gradients():
    # The env that blew up is reset: its gradient must be zero, not NaN, or one bad env spoils a whole update.
    env = BlowUpPendulum(num_envs=3, dtype=th.float64, seed=0)
    env.diff_reset()
    actions = th.tensor([[0.5], [2.0], [-0.5]], dtype=th.float64, requires_grad=True)
    obs, rewards, _, _, info = env.diff_step(actions)
    with pytest.warns(UserWarning, match="non-finite"):
        env.report_nonfinite()
    (grad,) = th.autograd.grad(rewards.sum() + obs.sum() + info["final_obs"].sum(), [actions])
    assert bool(th.isfinite(grad).all()), grad
    assert grad[1, 0] == 0 and grad[[0, 2]].abs().min() > 0


# ----------------------------------------------------------------------------- automatic reset
def test_auto_reset_at_the_time_limit():
    env = make_pendulum(n_envs=3, dtype=th.float64, max_episode_steps=5)
    env.diff_reset()
    actions = random_actions(env, 5).requires_grad_(True)
    rewards_sum = th.zeros(3, dtype=th.float64)
    for k, a in enumerate(actions):
        state_before = env.state
        obs, rewards, terminated, truncated, info = env.diff_step(a)
        rewards_sum = rewards_sum + rewards.detach()
        assert not terminated.any()
        if k < 4:
            assert not truncated.any() and th.equal(info["final_obs"], obs)
    assert truncated.all()
    reached = env.observation(env.dynamics(state_before, actions[-1]))
    th.testing.assert_close(info["final_obs"], reached, rtol=0, atol=0)
    th.testing.assert_close(obs, env.observation(env.state), rtol=0, atol=0)  # the fresh episode
    assert not th.allclose(obs, reached) and not env.elapsed_steps.any() and not env.episode_returns.any()
    th.testing.assert_close(info["episode_return"], rewards_sum)
    assert info["episode_length"].tolist() == [5, 5, 5]

    (grad_fresh,) = th.autograd.grad(obs.sum(), [actions], allow_unused=True, retain_graph=True)
    (grad_final,) = th.autograd.grad(info["final_obs"].sum(), [actions])
    assert grad_fresh is None or not grad_fresh.any(), "the gradient crossed the reset"
    assert grad_final[-1].abs().min() > 0  # the observation reached does depend on the episode's actions


# ----------------------------------------------------------------------------- SB3's numpy face
def test_episode_statistics_like_vec_monitor():
    env = make_pendulum(n_envs=2, max_episode_steps=5)
    env.reset()
    rng, total = np.random.default_rng(0), np.zeros(2)
    for k in range(5):
        state_before = env.state
        actions = rng.uniform(-2, 2, (2, 1)).astype(np.float32)
        obs, rewards, dones, infos = env.step(actions)
        assert obs.dtype == rewards.dtype == np.float32 and obs.shape == (2, 3) and dones.dtype == bool
        total += rewards
        if k < 4:
            assert not dones.any() and infos == [{}, {}]
    assert dones.all()
    reached = env.observation(env.dynamics(state_before, th.as_tensor(actions))).numpy()
    for i in range(2):
        assert infos[i]["episode"]["r"] == pytest.approx(total[i], abs=1e-4)
        assert infos[i]["episode"]["l"] == 5 and infos[i]["episode"]["t"] >= 0
        assert infos[i]["TimeLimit.truncated"] is True
        np.testing.assert_allclose(infos[i]["terminal_observation"], reached[i], rtol=1e-6)
        assert not np.allclose(obs[i], reached[i])  # obs is the first observation of the next episode


class ZeroModel:
    """The least a model needs for ``evaluate_policy``: ``predict`` (here, zero torque)."""

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        return np.zeros((len(observation), 1), np.float32), None


def test_evaluate_policy_matches_a_manual_rollout():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        returns, lengths = evaluate_policy(
            ZeroModel(), make_pendulum(n_envs=2, seed=1, max_episode_steps=10), n_eval_episodes=4, return_episode_rewards=True
        )
    assert not [w for w in caught if "Monitor" in str(w.message)]  # the episode statistics are built in
    env = make_pendulum(n_envs=2, seed=1, max_episode_steps=10)
    env.reset()
    manual, running = [], np.zeros(2)
    for _ in range(20):
        _, rewards, dones, _ = env.step(np.zeros((2, 1), np.float32))
        running += rewards
        manual += [float(running[i]) for i in np.flatnonzero(dones)]
        running[dones] = 0
    assert lengths == [10, 10, 10, 10]
    np.testing.assert_allclose(sorted(returns), sorted(manual), atol=1e-4)
    mean, _ = evaluate_policy(ZeroModel(), make_pendulum(n_envs=2, seed=1, max_episode_steps=10), n_eval_episodes=4)
    assert mean == pytest.approx(np.mean(manual), abs=1e-4)


# ----------------------------------------------------------------------------- seeding
def initial_states(seed: int, env_id: str = PENDULUM) -> th.Tensor:
    env = make_diff_vec_env(env_id, n_envs=4, seed=seed)
    env.diff_reset()
    return env.state


def test_seeding():
    assert th.equal(initial_states(3), initial_states(3))
    assert not th.allclose(initial_states(3), initial_states(4))
    env = make_pendulum(seed=10)
    env.seed(3)
    env.reset()
    assert th.equal(env.state, initial_states(3))

    single = gym.make(PENDULUM)
    first, _ = single.reset(seed=3)
    np.testing.assert_array_equal(single.reset(seed=3)[0], first)
    np.testing.assert_array_equal(gym.make(PENDULUM).reset(seed=3)[0], first)
    assert not np.allclose(single.reset(seed=4)[0], first)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_same_seed_same_rollout(env_id):
    rollouts = []
    for _ in range(2):
        env = make_diff_vec_env(env_id, n_envs=3, seed=7, max_episode_steps=4)  # resets draw from the generator too
        outputs = [env.diff_reset()]
        for a in random_actions(env, 6):
            obs, rewards, *_ = env.diff_step(a)
            outputs += [obs, rewards]
        rollouts.append(outputs)
    for a, b in zip(*rollouts, strict=True):
        assert th.equal(a, b)


class UndrawnPendulum(DiffPendulum):
    render_modes = ()  # as MJXVecEnv and RewarpedVecEnv


def test_gym_face_of_an_env_that_cannot_render():
    """SB3's make_vec_env asks every env for render_mode="rgb_array" and retries without it on a TypeError only: an
    env class that cannot render must still build there, and refuse an explicit render mode clearly."""
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_rpo import register_diff_env
    from sb3_rpo.sims.mjx import MJXVecEnv
    from sb3_rpo.sims.rewarped import RewarpedVecEnv

    assert MJXVecEnv.render_modes == () and RewarpedVecEnv.render_modes == ()
    # The class refuses a mode it cannot draw, MJX's and rewarped's before compiling anything (no jax or warp needed).
    for cls in (UndrawnPendulum, MJXVecEnv, RewarpedVecEnv):
        with pytest.raises(ValueError, match=f"{cls.__name__}: render_mode must be None, got 'rgb_array'"):
            cls(render_mode="rgb_array")
    register_diff_env("TestUndrawnPendulum-v0", UndrawnPendulum, max_episode_steps=200)
    with pytest.raises(TypeError, match="TestUndrawnPendulum-v0 does not render"):
        gym.make("TestUndrawnPendulum-v0", render_mode="rgb_array")
    venv = make_vec_env("TestUndrawnPendulum-v0", n_envs=2, seed=0)
    assert venv.reset().shape == (2, 3) and venv.render_mode is None
    drawn = gym.make(PENDULUM, render_mode="rgb_array")  # a class that renders still does
    drawn.reset(seed=0)
    assert drawn.render().ndim == 3


# ----------------------------------------------------------------------------- every registered env
@pytest.mark.parametrize("env_id", ALL_IDS)
def test_check_env(env_id):
    check_env(gym.make(env_id).unwrapped)


@pytest.mark.parametrize("dtype", [th.float32, th.float64])
@pytest.mark.parametrize("env_id", ALL_IDS)
def test_protocol_outputs(env_id, dtype):
    env = make_diff_vec_env(env_id, n_envs=3, seed=0, dtype=dtype)
    (obs_dim,) = env.observation_space.shape
    obs = env.diff_reset()
    assert obs.shape == (3, obs_dim) and obs.dtype == dtype and obs.device == env.device
    for a in random_actions(env, 3):
        obs, rewards, terminated, truncated, info = env.diff_step(a)
        assert obs.shape == info["final_obs"].shape == (3, obs_dim) and obs.dtype == rewards.dtype == dtype
        assert rewards.shape == terminated.shape == truncated.shape == info["nonfinite"].shape == (3,)
        assert terminated.dtype == truncated.dtype == info["nonfinite"].dtype == th.bool
        assert info["episode_return"].shape == info["episode_length"].shape == (3,)
        running = ~(terminated | truncated)
        assert th.equal(info["final_obs"][running], obs[running])

    obs_np = env.reset()
    assert obs_np.shape == (3, obs_dim) and obs_np.dtype == np.float32
    obs_np, rewards_np, dones, infos = env.step(np.stack([env.action_space.sample() for _ in range(3)]))
    assert obs_np.shape == (3, obs_dim) and rewards_np.shape == (3,) and dones.shape == (3,) and len(infos) == 3
    assert all(env.observation_space.contains(o) for o in obs_np), obs_np


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_detach_state_cuts_the_graph(env_id):
    for cut in (False, True):
        env = make_diff_vec_env(env_id, n_envs=2, seed=0, dtype=th.float64)
        env.diff_reset()
        a0, a1 = random_actions(env, 2).requires_grad_(True).unbind(0)
        env.diff_step(a0)
        if cut:
            env.detach_state()
        obs, rewards, *_ = env.diff_step(a1)
        grad_a0, grad_a1 = th.autograd.grad(obs.sum() + rewards.sum(), [a0, a1], allow_unused=True)
        assert grad_a1 is not None and grad_a1.abs().sum() > 0
        assert (grad_a0 is None) if cut else (grad_a0.abs().sum() > 0)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_float32_window_gradients_are_finite_and_nonzero(env_id):
    env = make_diff_vec_env(env_id, n_envs=8, seed=0)
    env.diff_reset()
    actions = random_actions(env, 32).requires_grad_(True)
    total = sum(env.diff_step(a)[1].sum() for a in actions)
    (grad,) = th.autograd.grad(total, [actions])
    assert bool(th.isfinite(grad).all())
    assert bool((grad.abs().sum(dim=(0, 2)) > 0).all()), "an env got no gradient"


def test_gradcheck_three_pendulum_steps():
    env = make_pendulum(n_envs=2, dtype=th.float64)

    def rollout(state0: th.Tensor, actions: th.Tensor) -> th.Tensor:
        env.diff_reset()  # also restarts the step counter: no time limit inside gradcheck's many calls
        env.state = state0
        outputs = []
        for a in actions:
            obs, rewards, *_ = env.diff_step(a)
            outputs += [obs, rewards.unsqueeze(-1)]
        return th.cat(outputs, dim=-1)

    # theta_dot stays far from the +-8 clip and theta from the wrap of angle_normalize at +-pi.
    state0 = th.tensor([[0.3, -0.5], [-1.2, 0.8]], dtype=th.float64, requires_grad=True)
    actions = th.tensor([[[0.5], [-1.0]], [[1.2], [0.3]], [[-0.7], [1.5]]], dtype=th.float64, requires_grad=True)
    assert th.autograd.gradcheck(rollout, (state0, actions))


# ----------------------------------------------------------------------------- docs/custom_env.md
def test_custom_env_doc_runs():
    """The python blocks of docs/custom_env.md run, in order, in one namespace (they build on each other)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "custom_env.md").read_text()
    blocks = re.findall(r"(<!-- not run[^>]*-->\n)?```python\n(.*?)```", text, flags=re.DOTALL)
    runnable = [code for skip, code in blocks if not skip]
    assert len(runnable) >= 5 and len(blocks) > len(runnable)
    namespace: dict = {}
    for code in runnable:
        code = re.sub(r"total_timesteps=[\d_]+", "total_timesteps=64", code)  # one window is enough here
        exec(compile(code, "docs/custom_env.md", "exec"), namespace)
    env = namespace["env"]
    assert isinstance(env, namespace["PointMassReach"]) and env.num_envs == 16
    assert namespace["model"].num_timesteps > 0
