"""MJX adapter (sb3-rpo[mjx]): brax's MJX tasks as DiffVecEnvs, gradients through jax.vjp.

XLA compiles each program once per shape and task (the hopper's reset, step and vjp take 1.5 min on a CPU core, the
inverted pendulum's half of that), so every test here uses one task and one batch size: the inverted pendulum, as the
bridge (the flattened state, DLPack, jax.vjp, resets) is the same code for every task and brax's MJX tests its own
models. A session fixture compiles the programs once on the pytest-xdist worker that runs this file (the README's
command distributes by file), and the tests, the zoo's included, run in this process to reuse them. The float64
check runs in a subprocess (jax_enable_x64 is process-wide).
"""

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch as th
from extras import require_extra

from sb3_rpo import RPO, list_diff_envs, make_diff_vec_env
from sb3_rpo.sims.mjx import MJXVecEnv, import_brax

require_extra("jax", "mjx")
with contextlib.suppress(ImportError):  # reported by require_extra below
    import_brax()  # brax through the adapter's import, which works around an incompatible warp-lang (rewarped's pin)
require_extra("brax", "mjx")

N_ENVS = 4
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def env():
    """An inverted-pendulum env whose programs (reset, step, step's vjp) are compiled: the other tests reuse them."""
    env = make_diff_vec_env("MJXInvertedPendulum-v0", n_envs=N_ENVS, seed=0)
    env.diff_reset()
    actions = th.zeros(N_ENVS, 1, requires_grad=True)
    _, rewards, *_ = env.diff_step(actions)
    rewards.sum().backward()
    return env


def pendulum(**kwargs) -> MJXVecEnv:
    """Another inverted-pendulum env: same configuration, so the same compiled programs."""
    return MJXVecEnv(num_envs=N_ENVS, env_name="inverted_pendulum", **kwargs)


def random_actions(n_steps: int, seed: int = 0, scale: float = 0.3) -> th.Tensor:
    """Small enough that no pendulum falls (|hinge| > 0.2) within a few steps."""
    return scale * (2 * th.rand(n_steps, N_ENVS, 1, generator=th.Generator().manual_seed(seed)) - 1)


def test_ids_registered_and_no_jax_at_import():
    for env_id in ("MJXHopper-v0", "MJXAnt-v0", "MJXHalfCheetah-v0", "MJXWalker2d-v0", "MJXInvertedPendulum-v0"):
        assert env_id in list_diff_envs()
    code = "import sys, sb3_rpo, sb3_rpo.sims.mjx; assert not {'jax', 'brax', 'mujoco.mjx'} & set(sys.modules), 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)


def test_matches_brax(env):
    """From brax's own reset states, the adapter's rollout equals brax's env.step rollout, every carried leaf included."""
    jax, envs = import_brax()
    reference = envs.get_environment("inverted_pendulum", backend="mjx")
    reference.sys = reference.sys.tree_replace({"opt.iterations": 1, "opt.ls_iterations": 4})  # the adapter's defaults
    keys = jax.random.split(jax.random.PRNGKey(7), N_ENVS)
    brax_state = jax.jit(jax.vmap(reference.reset))(keys)
    brax_step = jax.jit(jax.vmap(reference.step))

    sim = pendulum(seed=0)
    sim.diff_reset()
    sim.state = sim.from_brax(brax_state)
    for a in random_actions(5):
        obs, rewards, terminated, truncated, _ = sim.diff_step(a)
        brax_state = brax_step(brax_state, jax.numpy.asarray(a.numpy()))
        assert not bool(terminated.any() or truncated.any())
        th.testing.assert_close(obs, th.as_tensor(np.array(brax_state.obs)), rtol=1e-5, atol=1e-5)
        th.testing.assert_close(rewards, th.as_tensor(np.array(brax_state.reward)), rtol=1e-5, atol=1e-5)
        th.testing.assert_close(sim.state, sim.from_brax(brax_state), rtol=1e-5, atol=1e-5)
    assert sim.state_slices["pipeline_state.qpos"] == slice(0, 2)  # the cart's slider and the pole's hinge


def test_gradient_matches_central_differences_float64():
    """
    float64 (a subprocess with jax_enable_x64): d(objective)/d(actions) over 4 steps equals central differences. The
    inverted pendulum, as in the other tests.
    """
    code = textwrap.dedent(
        """
        import torch as th
        th.set_num_threads(1)
        from sb3_rpo.sims.mjx import MJXVecEnv

        env = MJXVecEnv(num_envs=2, env_name="inverted_pendulum", dtype=th.float64, seed=0)
        env.diff_reset()
        state0 = env.state.clone()
        weights = th.linspace(-1, 1, env.obs_dim, dtype=th.float64)
        gen = th.Generator().manual_seed(0)
        actions = (0.3 * th.randn(4, 2, 1, dtype=th.float64, generator=gen)).requires_grad_(True)  # the cart off its limits

        def objective(actions):
            env.state = state0.clone()
            total = th.zeros((), dtype=th.float64)
            for a in actions:
                obs, rewards, terminated, truncated, _ = env.diff_step(a)
                assert not bool(terminated.any() or truncated.any())
                total = total + rewards.sum() + (obs * weights).sum()
            return total

        assert env.to_jax(state0).dtype.name == "float64"
        (grad,) = th.autograd.grad(objective(actions), [actions])
        assert grad.abs().min() > 0
        eps = 1e-6
        for seed in (1, 2):
            direction = th.randn(actions.shape, dtype=th.float64, generator=th.Generator().manual_seed(seed))
            with th.no_grad():
                central = (objective(actions + eps * direction) - objective(actions - eps * direction)) / (2 * eps)
            directional = (grad * direction).sum()
            assert abs(directional - central) <= 1e-6 * abs(central) + 1e-8, (directional.item(), central.item())
        print("ok")
        """
    )
    environ = {**os.environ, "JAX_ENABLE_X64": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_truncation_auto_reset_and_episode_stats(env):
    sim = pendulum(seed=1, max_episode_steps=5)
    obs = sim.diff_reset()
    total = th.zeros(N_ENVS)
    actions = random_actions(5, seed=1, scale=0.3).requires_grad_(True)
    for t, a in enumerate(actions):
        obs, rewards, terminated, truncated, info = sim.diff_step(a)
        total += rewards.detach()
        assert not bool(terminated.any())
        assert bool(truncated.all()) == (t == 4)
    assert info["episode_length"].tolist() == [5] * N_ENVS
    th.testing.assert_close(info["episode_return"], total)
    # obs is the first observation of the next episode (brax's reset: positions and velocities within 0.01 of
    # zero), final_obs the one reached, which carries the gradient of the episode's actions.
    assert obs.abs().max() <= 0.0101
    assert not th.allclose(info["final_obs"], obs)
    (grad_final,) = th.autograd.grad(info["final_obs"].sum(), [actions], retain_graph=True)
    assert grad_final[-1].abs().sum() > 0
    grad_obs = th.autograd.grad(obs.sum(), [actions], allow_unused=True)[0]
    assert grad_obs is None or grad_obs.abs().sum() == 0  # no gradient crosses the reset
    assert sim.elapsed_steps.tolist() == [0] * N_ENVS


def test_termination_is_not_truncation(env):
    sim = pendulum(seed=2)
    sim.diff_reset()
    state = sim.state.clone()
    for name in ("pipeline_state.qpos", "pipeline_state.q"):  # MJX's qpos and brax's copy of it
        state[0, sim.state_slices[name].start + 1] = 0.5  # the hinge: brax ends the episode beyond 0.2 rad
    sim.state = state
    actions = th.zeros(N_ENVS, 1, requires_grad=True)
    obs, _, terminated, truncated, info = sim.diff_step(actions)
    assert terminated.tolist() == [True, False, False, False]
    assert not bool(truncated.any())
    assert info["final_obs"][0, 1] > 0.2 and obs[0].abs().max() <= 0.0101  # fallen, then reset
    th.testing.assert_close(info["final_obs"][1:], obs[1:])
    assert info["episode_length"][0] == 1
    (grad_final,) = th.autograd.grad(info["final_obs"][0].sum(), [actions], retain_graph=True)
    assert grad_final[0].abs().sum() > 0  # final_obs is differentiable
    grad_obs = th.autograd.grad(obs[0].sum(), [actions], allow_unused=True)[0]
    assert grad_obs is None or grad_obs.abs().sum() == 0  # no gradient crosses the reset


def test_nonfinite_state_is_reset_with_zero_gradient(env):
    sim = pendulum(seed=3)
    sim.diff_reset()
    state = sim.state.clone()
    for name in ("pipeline_state.qvel", "pipeline_state.qd"):
        state[1, sim.state_slices[name]] = float("nan")
    sim.state = state
    actions = (0.1 * th.ones(N_ENVS, 1)).requires_grad_(True)
    obs, rewards, terminated, _, info = sim.diff_step(actions)
    with pytest.warns(UserWarning, match="non-finite"):  # counted on the device, reported once per call
        sim.report_nonfinite()
    assert info["nonfinite"].tolist() == [False, True, False, False]
    assert terminated[1] and rewards[1] == 0 and sim.nonfinite_count == 1
    assert bool(th.isfinite(obs).all() and th.isfinite(sim.state).all() and th.isfinite(info["final_obs"]).all())
    (grad,) = th.autograd.grad(rewards.sum() + info["final_obs"].sum() + obs.sum(), [actions])
    assert bool(th.isfinite(grad).all())
    assert grad[1].abs().sum() == 0 and grad[[0, 2, 3]].abs().min() > 0


def test_detach_state_cuts_the_gradient(env):
    for cut in (False, True):
        sim = pendulum(seed=4)
        sim.diff_reset()
        a0, a1 = random_actions(2, seed=4, scale=0.5).requires_grad_(True).unbind(0)
        sim.diff_step(a0)
        if cut:
            sim.detach_state()
        obs, rewards, *_ = sim.diff_step(a1)
        grad_a0, grad_a1 = th.autograd.grad(obs.sum() + rewards.sum(), [a0, a1], allow_unused=True)
        assert grad_a1.abs().sum() > 0
        assert (grad_a0 is None) if cut else (grad_a0.abs().sum() > 0)


def test_numpy_face_and_seeding(env):
    sims = [pendulum(seed=5, max_episode_steps=3) for _ in range(2)]
    firsts = [sim.reset() for sim in sims]
    np.testing.assert_array_equal(firsts[0], firsts[1])  # the same seed, the same initial states
    sim = sims[0]
    assert firsts[0].dtype == np.float32 and firsts[0].shape == (N_ENVS, 4)
    for _ in range(3):
        obs, rewards, dones, infos = sim.step(np.zeros((N_ENVS, 1), np.float32))
        assert obs.dtype == rewards.dtype == np.float32 and dones.dtype == bool
    assert dones.all()
    for info in infos:
        assert info["TimeLimit.truncated"] and info["episode"]["l"] == 3 and info["terminal_observation"].shape == (4,)
    sim.seed(6)
    other = sim.reset()
    assert not np.allclose(other, firsts[0])


def test_refuses_gradients_with_several_solver_iterations(env):
    sim = pendulum(seed=0, solver_iterations=4)
    action = th.zeros(N_ENVS, 1, requires_grad=True)
    with pytest.raises(RuntimeError, match="solver_iterations=1"):
        sim.dynamics(th.zeros(N_ENVS, sim.state_dim), action)


def test_rpo_trains_on_mjx_inverted_pendulum(env):
    # 16-step episodes: several of them end (by truncation or by falling) in these 256 steps.
    sim = pendulum(seed=0, max_episode_steps=16)
    model = RPO("MlpPolicy", sim, n_steps=8, n_epochs=2, n_critic_iterations=2, seed=0, device="cpu")
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=256)
    params = list(model.policy.parameters())
    assert all(bool(th.isfinite(p).all()) for p in params)
    assert any(not th.equal(b, p) for b, p in zip(before, params, strict=True))
    assert len(model.ep_info_buffer) > 0
    assert all(0 < info["l"] <= 16 and np.isfinite(info["r"]) for info in model.ep_info_buffer)


def test_zoo_trains_an_mjx_id(env, tmp_path, monkeypatch, capsys):
    """
    rl-zoo3's command line takes MJX ids. In this process: envs of this module's configuration reuse its compiled
    programs (a subprocess would trace them again, 30 s, even with the persistent compilation cache).
    """
    from sb3_rpo.zoo.cli import main

    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main() rewrites it for rl-zoo3's argument parsers
    command = ["train", "--algo", "rpo", "--env", "MJXInvertedPendulum-v0", "-n", "64", "-f", str(tmp_path)]
    command += ["--num-threads", "1", "--device", "cpu", "--hyperparams", f"n_envs:{N_ENVS}", "n_steps:8"]
    command += ["--eval-freq", "32", "--eval-episodes", str(N_ENVS), "--n-eval-envs", str(N_ENVS)]
    main(command)
    assert (tmp_path / "rpo" / "MJXInvertedPendulum-v0_1" / "MJXInvertedPendulum-v0.zip").exists()
    assert "Eval num_timesteps=" in capsys.readouterr().out
