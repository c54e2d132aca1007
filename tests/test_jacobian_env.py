"""JacobianVecEnv: simulators outside torch that supply their own Jacobians or vector-Jacobian products."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch as th

from sb3_rpo import RPO
from sb3_rpo.common.jacobian_env import JacobianVecEnv, SimStep

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from numpy_pendulum_jacobian import NumpyPendulum, NumpyPendulumVJP, window_return

N_ENVS, N_STEPS = 4, 20
BRIDGES = [NumpyPendulum, NumpyPendulumVJP]


class TorchPendulum(NumpyPendulum):
    """The same task with its dynamics written in torch: the reference the bridge must reproduce."""

    def dynamics(self, state: th.Tensor, action: th.Tensor) -> th.Tensor:
        theta, theta_dot, u = state[:, 0], state[:, 1], action[:, 0]
        accel = self.g / self.length * th.sin(theta) - self.damping * theta_dot + u / (self.mass * self.length**2)
        new_theta_dot = theta_dot + self.dt * accel
        return th.stack([theta + self.dt * new_theta_dot, new_theta_dot], dim=-1)


def random_actions(n_steps: int = N_STEPS, n_envs: int = N_ENVS, dtype: th.dtype = th.float64, seed: int = 0) -> th.Tensor:
    return th.randn(n_steps, n_envs, 1, dtype=dtype, generator=th.Generator().manual_seed(seed))


def start_state(env: JacobianVecEnv) -> th.Tensor:
    env.diff_reset()
    return env.state.clone().requires_grad_(True)


@pytest.mark.parametrize("cls", BRIDGES)
def test_gradients_match_central_differences(cls):
    env = cls(num_envs=N_ENVS, dtype=th.float64, seed=0)
    state0, actions = start_state(env), random_actions().requires_grad_(True)
    grad_s, grad_a = th.autograd.grad(window_return(env, state0, actions), [state0, actions])
    assert grad_s.abs().min() > 0 and grad_a.abs().min() > 0

    gen, eps = th.Generator().manual_seed(1), 1e-6
    d_state = th.randn(state0.shape, generator=gen, dtype=th.float64)
    d_actions = th.randn(actions.shape, generator=gen, dtype=th.float64)
    for ds, da in [(d_state, th.zeros_like(actions)), (th.zeros_like(state0), d_actions)]:  # one direction each
        with th.no_grad():
            plus = window_return(env, state0 + eps * ds, actions + eps * da)
            minus = window_return(env, state0 - eps * ds, actions - eps * da)
        central = ((plus - minus) / (2 * eps)).item()
        directional = ((grad_s * ds).sum() + (grad_a * da).sum()).item()
        assert directional == pytest.approx(central, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("cls", BRIDGES)
def test_matches_the_same_system_in_torch(cls):
    # max_episode_steps=8 puts two automatic resets inside the 20 steps.
    bridge, reference = (c(num_envs=N_ENVS, dtype=th.float64, seed=3, max_episode_steps=8) for c in (cls, TorchPendulum))
    results = []
    for env in (bridge, reference):
        obs0 = env.diff_reset()
        state0 = env.state.clone().requires_grad_(True)
        env.state = state0
        actions = random_actions().requires_grad_(True)
        outputs, truncations = [obs0], []
        for a in actions:
            obs, rewards, terminated, truncated, info = env.diff_step(a)
            outputs += [obs, rewards, terminated, truncated, info["final_obs"]]
            truncations.append(bool(truncated.all()))
        objective = sum(out.sum() for out in outputs if out.is_floating_point())
        results.append((outputs, th.autograd.grad(objective, [state0, actions])))
        assert [k + 1 for k, trunc in enumerate(truncations) if trunc] == [8, 16]

    (out_b, grads_b), (out_r, grads_r) = results
    for b, r in zip(out_b + list(grads_b), out_r + list(grads_r), strict=True):
        assert b.dtype == r.dtype
        th.testing.assert_close(b, r, rtol=0, atol=1e-10)
    assert grads_r[1].abs().min() > 0


@pytest.mark.parametrize("cls", BRIDGES)
def test_float32(cls):
    grads, state0 = {}, cls(num_envs=8, seed=0).sample_initial_state(8)  # the same random start in both dtypes
    for dtype in (th.float32, th.float64):
        env = cls(num_envs=8, dtype=dtype, seed=0)
        env.diff_reset()
        env.state = state0.to(dtype)
        actions = (2 * th.rand(32, 8, 1, generator=th.Generator().manual_seed(0)) - 1).to(dtype).requires_grad_(True)
        total = th.zeros((), dtype=dtype)
        for a in actions:
            obs, rewards, *_ = env.diff_step(a)
            assert obs.dtype == rewards.dtype == env.state.dtype == dtype
            total = total + rewards.sum()
        (grads[dtype],) = th.autograd.grad(total, [actions])
    grad = grads[th.float32]
    assert grad.dtype == th.float32
    assert bool(th.isfinite(grad).all()) and grad.abs().min() > 0
    th.testing.assert_close(grad.double(), grads[th.float64], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("cls", BRIDGES)
def test_detach_state_cuts_the_gradient(cls):
    for cut in (False, True):
        env = cls(num_envs=N_ENVS, dtype=th.float64, seed=0)
        env.diff_reset()
        a0, a1 = random_actions(2).requires_grad_(True).unbind(0)
        env.diff_step(a0)
        if cut:
            env.detach_state()
        obs, rewards, *_ = env.diff_step(a1)
        grad_a0, grad_a1 = th.autograd.grad(obs.sum() + rewards.sum(), [a0, a1], allow_unused=True)
        assert grad_a1.abs().min() > 0
        if cut:
            assert grad_a0 is None
        else:
            assert grad_a0.abs().min() > 0


class RecordingPendulum(NumpyPendulum):
    """Records whether the base asked for derivatives at each call."""

    def sim_step(self, state: np.ndarray, action: np.ndarray) -> SimStep:
        self.asked.append(self.needs_derivatives)
        return super().sim_step(state, action)


def test_derivatives_are_asked_only_when_needed():
    env = RecordingPendulum(num_envs=2, dtype=th.float64, seed=0)
    env.asked = []
    env.reset()
    env.step(np.zeros((2, 1), np.float32))  # numpy face: under no_grad
    env.diff_step(th.zeros(2, 1, dtype=th.float64))  # nothing requires grad
    action = th.zeros(2, 1, dtype=th.float64, requires_grad=True)
    _, rewards, *_ = env.diff_step(action)  # a fresh (detached) state, an action that requires grad
    (grad_a,) = th.autograd.grad(rewards.sum(), [action])
    env.state.requires_grad_(True)
    _, rewards, *_ = env.diff_step(th.zeros(2, 1, dtype=th.float64))  # a state that requires grad, a plain action
    assert env.asked == [False, False, True, True]
    assert grad_a.abs().min() > 0


def test_double_backward_is_not_supported():
    env = NumpyPendulum(num_envs=2, dtype=th.float64, seed=0)
    env.diff_reset()
    action = th.zeros(2, 1, dtype=th.float64, requires_grad=True)
    _, rewards, *_ = env.diff_step(action)
    (grad,) = th.autograd.grad(rewards.sum(), [action], create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad.sum().backward()


class BufferReusingPendulum(NumpyPendulum):
    """Writes its Jacobians into the same arrays at every step, as C simulators often do."""

    def sim_step(self, state: np.ndarray, action: np.ndarray) -> SimStep:
        step = super().sim_step(state, action)
        if step.has_jacobians:
            self.buffers = getattr(self, "buffers", (np.empty_like(step.dx_dx), np.empty_like(step.dx_da)))
            self.buffers[0][:], self.buffers[1][:] = step.dx_dx, step.dx_da
            step.dx_dx, step.dx_da = self.buffers
        return step


def test_simulator_may_reuse_its_jacobian_buffers():
    grads = []
    for cls in (BufferReusingPendulum, TorchPendulum):
        env = cls(num_envs=N_ENVS, dtype=th.float64, seed=0)
        state0, actions = start_state(env), random_actions().requires_grad_(True)
        grads.append(th.autograd.grad(window_return(env, state0, actions), [state0, actions]))
    for b, r in zip(*grads, strict=True):
        th.testing.assert_close(b, r, rtol=0, atol=1e-10)


class NaNPendulum(NumpyPendulum):
    """Blows up in env 1: NaN next state and NaN derivatives."""

    def sim_step(self, state: np.ndarray, action: np.ndarray) -> SimStep:
        step = super().sim_step(state, action)
        step.next_state[1] = np.nan
        if step.has_jacobians:
            step.dx_dx, step.dx_da = step.dx_dx.copy(), step.dx_da.copy()
            step.dx_dx[1], step.dx_da[1] = np.nan, np.nan
        return step


class NaNPendulumVJP(NumpyPendulumVJP):
    def sim_step(self, state: np.ndarray, action: np.ndarray) -> SimStep:
        step = super().sim_step(state, action)
        step.next_state[1] = np.nan
        vjp = step.vjp

        def nan_vjp(grad_next: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            grad_state, grad_action = vjp(grad_next)
            grad_state[1], grad_action[1] = np.nan, np.nan
            return grad_state, grad_action

        return SimStep(step.next_state, vjp=nan_vjp)


@pytest.mark.parametrize("cls", [NaNPendulum, NaNPendulumVJP])
def test_nonfinite_step_is_reset_and_gives_zero_gradient(cls):
    env = cls(num_envs=3, dtype=th.float64, seed=0)
    env.diff_reset()
    actions = random_actions(3, 3).requires_grad_(True)
    total = th.zeros((), dtype=th.float64)
    for a in actions:
        obs, rewards, terminated, _, info = env.diff_step(a)
        with pytest.warns(UserWarning, match="non-finite"):  # counted on the device, reported once per call
            env.report_nonfinite()
        assert info["nonfinite"].tolist() == [False, True, False] and terminated.tolist() == [False, True, False]
        assert bool(th.isfinite(obs).all() and th.isfinite(rewards).all())
        total = total + rewards.sum() + obs.sum()
    (grad,) = th.autograd.grad(total, [actions])
    assert bool(th.isfinite(grad).all())
    assert bool((grad[:, 1] == 0).all()) and grad[:, [0, 2]].abs().min() > 0
    assert env.nonfinite_count == 3


class BrokenPendulum(NumpyPendulum):
    """Returns what ``mode`` says, to check the errors of the contract."""

    mode = "neither"

    def sim_step(self, state: np.ndarray, action: np.ndarray) -> SimStep:
        next_state = self.integrate(state, action)
        n = len(state)
        if self.mode == "neither":
            return SimStep(next_state)
        if self.mode == "next_state_shape":
            return SimStep(next_state[:, :1], vjp=lambda g: (g, g[:, :1]))
        if self.mode == "dx_da_shape":
            return SimStep(next_state, dx_dx=np.zeros((n, 2, 2)), dx_da=np.zeros((n, 2)))
        return SimStep(next_state, vjp=lambda g: (g, g))  # mode "vjp_shape": grad_action (n, 2) for act_dim 1


@pytest.mark.parametrize(
    "mode, message",
    [
        ("neither", "either dense Jacobians \\(dx_dx and dx_da\\) or a vjp"),
        ("next_state_shape", r"next_state has shape \(2, 1\), expected \(2, 2\)"),
        ("dx_da_shape", r"dx_da has shape \(2, 2\), expected \(2, 2, 1\)"),
        ("vjp_shape", r"grad_action has shape \(2, 2\), expected \(2, 1\)"),
    ],
)
def test_contract_errors_say_what_was_expected(mode, message):
    env = BrokenPendulum(num_envs=2, dtype=th.float64, seed=0)
    env.mode = mode
    env.diff_reset()
    action = th.zeros(2, 1, dtype=th.float64, requires_grad=True)
    with pytest.raises(ValueError, match=message):
        _, rewards, *_ = env.diff_step(action)
        th.autograd.grad(rewards.sum(), [action])


def test_rpo_learns_through_the_bridge():
    env = NumpyPendulumVJP(num_envs=4, seed=0)
    model = RPO("MlpPolicy", env, n_steps=8, n_critic_iterations=2, policy_kwargs=dict(net_arch=[16]), seed=0, device="cpu")
    before = [p.detach().clone() for p in model.policy.actor.parameters()]
    model.learn(total_timesteps=64)
    assert model.skipped_updates == 0
    assert any(not th.equal(b, p) for b, p in zip(before, model.policy.actor.parameters(), strict=True))
