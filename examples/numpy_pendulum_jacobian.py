"""
A damped pendulum simulated in numpy, made differentiable with :class:`sb3_rpo.common.jacobian_env.JacobianVecEnv`.

``NumpyPendulum`` returns the dense Jacobians of each step, ``NumpyPendulumVJP`` a vector-Jacobian
product instead (what a JAX or warp simulator would give). Run this file to check the gradient of a
20-step return against central differences and train RPO on the numpy simulator (a few minutes on a CPU):

    python examples/numpy_pendulum_jacobian.py
"""

from __future__ import annotations

import numpy as np
import torch as th

from sb3_rpo.common.jacobian_env import JacobianVecEnv, SimStep


class NumpyPendulum(JacobianVecEnv):
    """
    Damped pendulum swing-up whose physics is numpy code with analytic Jacobians.

    * state: ``[theta, theta_dot]``, ``theta = 0`` upright; initial state uniform in ``[-pi, pi] x [-1, 1]``
    * observation: ``[cos(theta), sin(theta), theta_dot]``
    * action: torque in ``[-2, 2]``
    * dynamics (semi-implicit Euler, no clipping): ``theta_dot' = theta_dot + dt (g / l sin(theta)
      - b theta_dot + u / (m l^2))``, ``theta' = theta + dt theta_dot'``
    * reward of the state reached: ``cos(theta') - 0.1 theta_dot'^2 - 0.001 u^2``
    * 200 steps, never terminates
    """

    state_dim = 2
    obs_dim = 3
    action_low = (-2.0,)
    action_high = (2.0,)
    max_episode_steps = 200
    g, length, mass, damping, dt = 10.0, 1.0, 1.0, 0.1, 0.05

    def integrate(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        theta, theta_dot, u = state[:, 0], state[:, 1], action[:, 0]
        accel = self.g / self.length * np.sin(theta) - self.damping * theta_dot + u / (self.mass * self.length**2)
        new_theta_dot = theta_dot + self.dt * accel
        return np.stack([theta + self.dt * new_theta_dot, new_theta_dot], axis=-1)

    def sim_step(self, state: np.ndarray, action: np.ndarray) -> SimStep:
        next_state = self.integrate(state, action)
        if not self.needs_derivatives:
            return SimStep(next_state)
        n, dt = len(state), self.dt
        # Row of d theta_dot' / d [theta, theta_dot]; theta' = theta + dt theta_dot' chains through it.
        d_vel = np.stack([dt * self.g / self.length * np.cos(state[:, 0]), np.full(n, 1.0 - dt * self.damping)], axis=-1)
        dx_dx = np.stack([np.array([1.0, 0.0]) + dt * d_vel, d_vel], axis=1)
        d_vel_du = dt / (self.mass * self.length**2)
        dx_da = np.broadcast_to(np.array([[dt * d_vel_du], [d_vel_du]]), (n, 2, 1))
        return SimStep(next_state, dx_dx=dx_dx, dx_da=dx_da)

    def sample_initial_state(self, n: int) -> th.Tensor:
        return self.uniform(n, (-np.pi, -1.0), (np.pi, 1.0))

    def reward(self, state: th.Tensor, action: th.Tensor, next_state: th.Tensor) -> th.Tensor:
        return th.cos(next_state[:, 0]) - 0.1 * next_state[:, 1] ** 2 - 0.001 * action[:, 0] ** 2

    def observation(self, state: th.Tensor) -> th.Tensor:
        return th.stack([th.cos(state[:, 0]), th.sin(state[:, 0]), state[:, 1]], dim=-1)


class NumpyPendulumVJP(NumpyPendulum):
    """:class:`NumpyPendulum` that returns a vector-Jacobian product instead of dense Jacobians."""

    def sim_step(self, state: np.ndarray, action: np.ndarray) -> SimStep:
        next_state = self.integrate(state, action)
        cos_theta = np.cos(state[:, 0])  # what the vjp needs, captured now (state may be reused)
        dt = self.dt

        def vjp(grad_next: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # theta' depends on theta_dot', so theta_dot' collects both components of the gradient.
            grad_vel = grad_next[:, 1] + dt * grad_next[:, 0]
            grad_theta = grad_next[:, 0] + grad_vel * dt * self.g / self.length * cos_theta
            grad_theta_dot = grad_vel * (1.0 - dt * self.damping)
            grad_u = grad_vel * dt / (self.mass * self.length**2)
            return np.stack([grad_theta, grad_theta_dot], axis=-1), grad_u[:, None]

        return SimStep(next_state, vjp=vjp)


def window_return(env: JacobianVecEnv, initial_state: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """Summed reward of ``actions`` (steps, n_envs, act_dim) played from ``initial_state``, with the graph."""
    env.diff_reset()
    env.state = initial_state
    return sum(env.diff_step(a)[1].sum() for a in actions)


if __name__ == "__main__":
    from stable_baselines3.common.evaluation import evaluate_policy

    from sb3_rpo import RPO, make_diff_vec_env, register_diff_env

    # 1. The gradient of a 20-step return agrees with central differences, for both kinds of derivatives.
    for cls in (NumpyPendulum, NumpyPendulumVJP):
        env = cls(num_envs=4, dtype=th.float64, seed=0)
        env.diff_reset()
        state0 = env.state.clone().requires_grad_(True)
        actions = th.randn(20, 4, 1, dtype=th.float64, generator=th.Generator().manual_seed(0), requires_grad=True)
        grad_s, grad_a = th.autograd.grad(window_return(env, state0, actions), [state0, actions])
        ds, da, eps = th.randn_like(state0), th.randn_like(actions), 1e-6
        with th.no_grad():
            plus = window_return(env, state0 + eps * ds, actions + eps * da)
            minus = window_return(env, state0 - eps * ds, actions - eps * da)
        fd = (plus - minus) / (2 * eps)
        analytic = (grad_s * ds).sum() + (grad_a * da).sum()
        print(f"{cls.__name__}: directional derivative {analytic.item():.8f}, central differences {fd.item():.8f}")

    # 2. Register it like any differentiable env and train on it.
    register_diff_env("NumpyPendulum-v0", NumpyPendulum, max_episode_steps=200)
    eval_env = make_diff_vec_env("NumpyPendulum-v0", n_envs=8, seed=1)
    model = RPO(
        "MlpPolicy",
        "NumpyPendulum-v0",
        n_envs=16,
        n_steps=32,
        n_epochs=10,
        learning_rate=3e-3,
        policy_kwargs=dict(log_std_init=-0.5),
        seed=0,
        device="cpu",
    )
    before, _ = evaluate_policy(model, eval_env, n_eval_episodes=8)
    model.learn(total_timesteps=20_000)
    after, _ = evaluate_policy(model, eval_env, n_eval_episodes=8)
    print(f"RPO on NumpyPendulum-v0: mean return {before:.1f} before training, {after:.1f} after 20k steps")
