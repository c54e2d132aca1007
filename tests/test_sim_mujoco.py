"""MuJoCo through finite-difference Jacobians: parity with gymnasium's v5 tasks, gradients, threads, RPO."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch as th
from extras import require_extra

mujoco = require_extra("mujoco", "mujoco")
import gymnasium as gym  # noqa: E402

from sb3_rpo import RPO, make_diff_vec_env  # noqa: E402
from sb3_rpo.common.gradcheck import check_window_gradient  # noqa: E402
from sb3_rpo.sims import require  # noqa: E402
from sb3_rpo.sims.mujoco_fd import TASKS  # noqa: E402

ENV_IDS = [task[0] for task in TASKS]
CONTACT_TASKS = {"MujocoFDHopper-v5", "MujocoFDWalker2d-v5", "MujocoFDHalfCheetah-v5", "MujocoFDAnt-v5"}


def make(env_id: str, n_envs: int = 4, **kwargs):
    env = make_diff_vec_env(env_id, n_envs=n_envs, seed=0, dtype=th.float64, n_threads=1, **kwargs)
    env.action_space.seed(0)
    return env


def gymnasium_twin(env):
    """gymnasium's own env with our integrator, no warm start, and kinematics refreshed after the step."""
    twin = gym.make(env.spec_id.replace("MujocoFD", "")).unwrapped
    twin.reset(seed=0)
    twin.model.opt.integrator, twin.model.opt.disableflags = env.model.opt.integrator, env.model.opt.disableflags

    def step_with_fresh_kinematics(ctrl, n_frames):
        twin.data.ctrl[:] = ctrl
        mujoco.mj_step(twin.model, twin.data, nstep=n_frames)
        mujoco.mj_forward(twin.model, twin.data)
        mujoco.mj_rnePostConstraint(twin.model, twin.data)

    twin._step_mujoco_simulation = step_with_fresh_kinematics
    return twin


def random_states(env, n: int, scale: float) -> th.Tensor:
    """Initial states, the second half pushed further away (falls, joint limits, terminations)."""
    states = env.sample_initial_state(n)
    noise = scale * th.randn(n, env.nq + env.nv, generator=th.Generator().manual_seed(1), dtype=th.float64)
    noise[: n // 2] = 0.0
    states[:, : env.nq + env.nv] += noise
    for adr in env._quat_adr:  # keep quaternions unit, as MuJoCo's own states are
        states[:, adr : adr + 4] /= states[:, adr : adr + 4].norm(dim=-1, keepdim=True)
    return states


@pytest.mark.parametrize("integrator", ["euler", "official"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_matches_gymnasium(env_id, integrator):
    """Same state and action: same next state, observation, reward and termination as gymnasium's v5 task."""
    env = make(env_id, n_envs=16, integrator=integrator)
    twin = gymnasium_twin(env)
    env.diff_reset()
    states = random_states(env, 16, scale=0.6)
    actions = th.as_tensor(np.stack([env.action_space.sample() for _ in range(16)]), dtype=th.float64)
    env.state = states.clone()
    _, rewards, terminated, _, info = env.diff_step(actions)
    for i in range(16):
        qpos, qvel = states[i, : env.nq].numpy(), states[i, env.nq : env.nq + env.nv].numpy()
        twin.set_state(qpos, qvel)
        obs, reward, term, _, _ = twin.step(actions[i].numpy())
        assert not info["nonfinite"][i]
        np.testing.assert_allclose(info["final_obs"][i].numpy(), obs, rtol=1e-9, atol=1e-9)
        assert rewards[i].item() == pytest.approx(reward, rel=1e-9, abs=1e-9)
        assert bool(terminated[i]) == term
    if env_id not in ("MujocoFDHalfCheetah-v5", "MujocoFDSwimmer-v5", "MujocoFDReacher-v5"):
        assert terminated.any() and not terminated.all(), "the states should exercise both outcomes"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_reset_matches_gymnasium(env_id):
    """Initial states have gymnasium's distribution support and its first observation."""
    env = make(env_id, n_envs=8)
    twin = gymnasium_twin(env)
    obs = env.diff_reset()
    assert obs.shape == (8, *twin.observation_space.shape)
    for i in range(8):
        twin.reset(seed=i)  # fresh mjData (contact forces zero), then our state
        twin.set_state(env.state[i, : env.nq].numpy(), env.state[i, env.nq : env.nq + env.nv].numpy())
        np.testing.assert_allclose(obs[i].numpy(), twin._get_obs(), rtol=1e-12, atol=1e-12)
    noise = (env.state[:, : env.nq] - env.init_qpos).abs().max()
    assert 0 < noise <= max(env.reset_noise_scale, 0.3)  # Reacher's target: anywhere in a disk of radius 0.2


@pytest.mark.parametrize("integrator", ["euler", "official"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_jacobians_match_central_differences(env_id, integrator):
    """d next_state / d (state, action) of one env step against central differences in the state's coordinates."""
    env = make(env_id, n_envs=2, integrator=integrator)
    env.diff_reset()
    state = env.state.numpy().copy()
    action = np.stack([env.action_space.sample() for _ in range(2)]).astype(np.float64) * 0.5
    env.needs_derivatives = True
    step = env.sim_step(state, action)
    env.needs_derivatives = False
    n = env.nq + env.nv
    eps = 1e-6
    for inputs, jacobian in ((state, step.dx_dx[:, :n, :n]), (action, step.dx_da[:, :n])):
        numerical = np.zeros_like(jacobian)
        for j in range(jacobian.shape[-1]):
            delta = np.zeros_like(inputs)
            delta[:, j] = eps
            plus = env.sim_step(state + delta, action) if inputs is state else env.sim_step(state, action + delta)
            minus = env.sim_step(state - delta, action) if inputs is state else env.sim_step(state, action - delta)
            numerical[:, :, j] = (plus.next_state[:, :n] - minus.next_state[:, :n]) / (2 * eps)
        np.testing.assert_allclose(jacobian, numerical, atol=1e-4 * max(1.0, np.abs(numerical).max()))
    assert np.all(step.dx_dx[:, n:] == 0) and np.all(step.dx_dx[:, :, n:] == 0), "aux entries are not differentiated"


# (task, window): 32 steps (landings included), but Ant, whose feet bounce on the ground from its third step on: the
# per-frame Jacobians miss contacts that come and go (benchmarks/mujoco_fd_gradients.py measures every window:
# docs/sims/mujoco.md)
WINDOW_CASES = [
    ("MujocoFDSwimmer-v5", 32),
    ("MujocoFDReacher-v5", 32),
    ("MujocoFDInvertedPendulum-v5", 32),
    ("MujocoFDInvertedDoublePendulum-v5", 32),
    ("MujocoFDHopper-v5", 32),
    ("MujocoFDWalker2d-v5", 32),
    ("MujocoFDHalfCheetah-v5", 32),
    ("MujocoFDAnt-v5", 2),
]


@pytest.mark.parametrize("env_id, window", WINDOW_CASES)
def test_window_gradient_matches_central_differences(env_id, window):
    """The gradient that RPO caches (through diff_step, the Jacobian bridge and torch) against central differences."""
    env = make(env_id, n_envs=4)
    env.diff_reset()
    check = check_window_gradient(env, window)
    assert check.rel_error(1e-5) < 1e-3, check


def test_threads_give_the_same_steps_and_jacobians():
    """Splitting the envs over threads changes nothing: each env owns its mjData and is a function of its state."""
    results = []
    for n_threads in (1, 2):
        env = make_diff_vec_env("MujocoFDHopper-v5", n_envs=5, seed=3, dtype=th.float64, n_threads=n_threads)
        assert env.n_threads == n_threads
        env.diff_reset()
        actions = th.full((5, 3), 0.2, dtype=th.float64, requires_grad=True)
        total = sum(env.diff_step(actions)[1].sum() for _ in range(3))
        results.append((env.state.clone(), th.autograd.grad(total, actions)[0]))
        env.close()
    th.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    th.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=0)


def test_ant_quaternion_gradient_through_the_initial_state():
    """d(next observations)/d(initial state) in qpos coordinates, quaternion included, against central differences."""
    env = make("MujocoFDAnt-v5", n_envs=1)
    env.diff_reset()
    start, actions = env.state.clone(), th.full((1, 8), 0.1, dtype=th.float64)
    weights = th.randn(2, env.obs_dim, generator=th.Generator().manual_seed(0), dtype=th.float64)

    def objective(state: th.Tensor) -> th.Tensor:
        env.state = state
        return sum((env.diff_step(actions)[0] * weights[t]).sum() for t in range(2))

    leaf = start.clone().requires_grad_(True)
    (gradient,) = th.autograd.grad(objective(leaf), leaf)
    for j in range(3, 7):  # the torso quaternion's components
        delta = th.zeros_like(start)
        delta[0, j] = 1e-6
        with th.no_grad():
            numerical = (objective(start + delta) - objective(start - delta)) / 2e-6
        assert gradient[0, j].item() == pytest.approx(numerical.item(), rel=1e-4, abs=1e-6)


def test_rpo_trains_on_mujoco_hopper():
    env = make_diff_vec_env("MujocoFDHopper-v5", n_envs=4, seed=0, n_threads=1)
    model = RPO("MlpPolicy", env, n_steps=8, n_critic_iterations=2, seed=0, policy_kwargs={"net_arch": [32]})
    model.learn(256)
    assert model.num_timesteps == 256
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    assert len(model.ep_info_buffer) > 0, "Hopper episodes end (falls) within 256 steps of a random policy"


def test_clear_errors():
    with pytest.raises(ValueError, match="integrator must be .official. or one of"):
        make("MujocoFDHopper-v5", integrator="semi-implicit")
    with pytest.raises(ImportError, match=r'pip install "sb3-rpo\[mujoco\]"'):
        require("no_such_simulator_module", "mujoco")


def test_rgb_array_frames():
    env = make_diff_vec_env("MujocoFDHopper-v5", n_envs=2, seed=0, n_threads=1, render_mode="rgb_array")
    env.reset()
    try:
        frames = env.get_images()
    except Exception as error:  # no OpenGL context on this machine: nothing of ours to test
        pytest.skip(f"MuJoCo cannot render here (MUJOCO_GL={os.environ['MUJOCO_GL']}): {error}")
    assert len(frames) == 2 and frames[0].shape == (480, 480, 3) and frames[0].dtype == np.uint8
    assert frames[0].std() > 0, "a blank frame"
    env.close()


def test_zoo_trains_a_mujoco_id(tmp_path):
    """rl-zoo3's command line takes the adapter's ids, with their hyperparams/rpo.yml entry, and evaluates them."""
    command = [sys.executable, "-m", "sb3_rpo.zoo", "train", "--algo", "rpo", "--env", "MujocoFDHopper-v5", "-n", "512"]
    command += ["-f", str(tmp_path), "--num-threads", "1", "--eval-freq", "256", "--eval-episodes", "2", "--device", "cpu"]
    process = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    assert "n_envs" in process.stdout and (tmp_path / "rpo" / "MujocoFDHopper-v5_1" / "MujocoFDHopper-v5.zip").exists()
    assert "Eval num_timesteps=" in process.stdout
