"""Differentiable environments around simulators that do not run in torch (numpy/C, JAX, warp, MuJoCo)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from torch.autograd.function import once_differentiable

from sb3_rpo.common.diff_vec_env import DiffTaskVecEnv

VJPFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class SimStep:
    """
    One batched step of an external simulator, with what is needed to differentiate it.

    Give either the dense Jacobians (``dx_dx`` and ``dx_da``) or a vector-Jacobian product ``vjp``.
    Both may be left out when :attr:`JacobianVecEnv.needs_derivatives` is ``False``, and ``dx_dx`` when
    :attr:`JacobianVecEnv.skip_state_derivatives` is ``True``.

    :param next_state: Next states (n, state_dim)
    :param dx_dx: Jacobians d next_state / d state (n, state_dim, state_dim)
    :param dx_da: Jacobians d next_state / d action (n, state_dim, act_dim)
    :param vjp: ``vjp(grad_next_state (n, state_dim)) -> (grad_state (n, state_dim), grad_action (n, act_dim))``,
        the gradients with respect to state and action of ``sum(grad_next_state * next_state)``. It is called
        in the backward pass, possibly after many later steps: it must not read buffers that the simulator
        overwrites in the meantime.
    """

    next_state: np.ndarray
    dx_dx: np.ndarray | None = None
    dx_da: np.ndarray | None = None
    vjp: VJPFn | None = None

    @property
    def has_jacobians(self) -> bool:
        return self.dx_dx is not None and self.dx_da is not None


class JacobianVecEnv(DiffTaskVecEnv):
    """
    A :class:`DiffTaskVecEnv` whose dynamics run in an external simulator that supplies its own derivatives.

    A subclass implements ``sim_step(state, action) -> SimStep`` on numpy arrays, returning the next
    states with either the dense Jacobians of the step or a vector-Jacobian product. The base turns it into
    ``dynamics(state, action)``: a ``torch.autograd.Function`` that runs ``sim_step`` on the detached values
    in the forward pass and applies the Jacobians (batched matrix products on the tensors' device and
    dtype) or calls the vjp in the backward pass. Everything else is written in torch as in any
    :class:`DiffTaskVecEnv`: ``sample_initial_state``, ``reward``, ``observation`` and ``terminated`` are
    torch functions of the state, differentiated by torch.

    The simulator must be a pure function of ``(state, action)``: the state tensor is the whole truth
    (set the simulator's internal state from it at every call), since the backward pass chains the
    derivatives of the steps exactly as the forward pass chained the states. Arrays reach ``sim_step`` as
    ``sim_dtype`` (float64 by default) on the CPU, whatever the env's device and dtype; the results are
    converted back at the boundary. The Jacobians are copied, so a simulator may reuse its buffers.

    Only first derivatives exist: the backward pass is ``once_differentiable``, so double backward is not
    supported. Differentiating a gradient through the simulator again (``create_graph=True``) raises an
    error with ``.backward()``, while ``torch.autograd.grad(..., inputs)`` leaves the simulator's
    second-order terms out silently, as for any once-differentiable torch function.

    Rows whose next state is non-finite get a zero gradient through ``diff_step``, as in every
    :class:`DiffTaskVecEnv`, which resets those envs.

    Example, a point mass with drag (``state = [x, v]``, ``action = [force]``)::

        class NumpyPointMass(JacobianVecEnv):
            state_dim, obs_dim, action_low, action_high, max_episode_steps = 2, 2, (-1.0,), (1.0,), 100
            dt, drag = 0.05, 0.1

            def sim_step(self, state, action):
                x, v, u = state[:, 0], state[:, 1], action[:, 0]
                v_next = v + self.dt * (u - self.drag * v)
                next_state = np.stack([x + self.dt * v_next, v_next], axis=-1)
                n = len(state)
                dv = np.broadcast_to([[0.0, 1 - self.dt * self.drag]], (n, 2))  # d v_next / d [x, v]
                dx_dx = np.stack([np.array([1.0, 0.0]) + self.dt * dv, dv], axis=1)
                dx_da = np.broadcast_to([[self.dt**2], [self.dt]], (n, 2, 1))
                return SimStep(next_state, dx_dx=dx_dx, dx_da=dx_da)

            def sample_initial_state(self, n):
                return self.uniform(n, (-1.0, -0.5), (1.0, 0.5))

            def reward(self, state, action, next_state):
                return -(next_state**2).sum(-1) - 0.01 * (action**2).sum(-1)

            def observation(self, state):
                return state

    :param num_envs: Number of environments simulated in one batch
    :param device: Device of the torch face (the simulator itself runs wherever it runs)
    :param dtype: ``torch.float32`` or ``torch.float64``
    :param seed: Seed of the task's random generator (initial states)
    :param render_mode: ``None`` or ``"rgb_array"``
    :param max_episode_steps: Override of the task's episode length (truncation)
    """

    sim_dtype: type[np.floating] = np.float64
    needs_derivatives: bool = False
    """``True`` while ``sim_step`` runs for a step that will be differentiated. When ``False`` (the numpy
    face, ``torch.no_grad()``, inputs that do not require grad), ``sim_step`` may skip the derivatives."""
    skip_state_derivatives: bool = False
    """``True`` while ``sim_step`` runs for a differentiated step whose state is not differentiated (the first step
    of a window: its state is detached): ``sim_step`` may then leave ``dx_dx`` out (``None``)."""

    @abstractmethod
    def sim_step(self, state: np.ndarray, action: np.ndarray) -> SimStep:
        """
        Simulate one step of every environment.

        :param state: States (n, state_dim), of dtype ``sim_dtype``
        :param action: Actions (n, act_dim), of dtype ``sim_dtype``
        :return: The next states and their derivatives (see :class:`SimStep`)
        """

    def dynamics(self, state: th.Tensor, action: th.Tensor) -> th.Tensor:
        if th.is_grad_enabled() and (state.requires_grad or action.requires_grad):
            return _SimStepFunction.apply(state, action, self)
        return self._run_sim(state, action, needs_derivatives=False)[0]

    def _run_sim(
        self, state: th.Tensor, action: th.Tensor, needs_derivatives: bool, skip_state_derivatives: bool = False
    ) -> tuple[th.Tensor, SimStep]:
        """Call ``sim_step`` on numpy copies of ``state`` and ``action``; check its output; return the next state tensor."""
        self.needs_derivatives, self.skip_state_derivatives = needs_derivatives, skip_state_derivatives
        try:
            step = self.sim_step(self._to_numpy(state), self._to_numpy(action))
        finally:
            self.needs_derivatives = self.skip_state_derivatives = False
        n, state_dim, act_dim = state.shape[0], state.shape[1], action.shape[1]
        name = f"{type(self).__name__}.sim_step"
        _check_shape(f"{name}: next_state", step.next_state, (n, state_dim))
        if needs_derivatives:
            dense = step.dx_da is not None or step.dx_dx is not None
            if dense == (step.vjp is not None):
                raise ValueError(f"{name} must return either dense Jacobians (dx_dx and dx_da) or a vjp, not both or neither.")
            if dense:
                if step.dx_da is None or (step.dx_dx is None and not skip_state_derivatives):
                    raise ValueError(f"{name} must return dx_da, and dx_dx unless skip_state_derivatives is True.")
                if step.dx_dx is not None:
                    _check_shape(f"{name}: dx_dx", step.dx_dx, (n, state_dim, state_dim))
                _check_shape(f"{name}: dx_da", step.dx_da, (n, state_dim, act_dim))
        return _to_torch(step.next_state, state), step

    def _to_numpy(self, x: th.Tensor) -> np.ndarray:
        return x.detach().cpu().numpy().astype(self.sim_dtype)


def _to_torch(array: Any, like: th.Tensor) -> th.Tensor:
    """A copy of ``array`` with the dtype and device of ``like`` (the simulator may reuse its buffers)."""
    return th.tensor(np.asarray(array), dtype=like.dtype, device=like.device)


def _check_shape(what: str, array: Any, expected: tuple[int, ...]) -> None:
    shape = tuple(np.shape(array))
    if shape != expected:
        raise ValueError(f"{what} has shape {shape}, expected {expected}.")


class _SimStepFunction(th.autograd.Function):
    """``next_state = sim(state, action)`` with the simulator's own first derivatives."""

    @staticmethod
    def forward(ctx: Any, state: th.Tensor, action: th.Tensor, env: JacobianVecEnv) -> th.Tensor:  # type: ignore[override]
        next_state, step = env._run_sim(
            state, action, needs_derivatives=True, skip_state_derivatives=not ctx.needs_input_grad[0]
        )
        if step.dx_da is not None:
            dx_dx = _to_torch(step.dx_dx, state) if ctx.needs_input_grad[0] else None
            ctx.jacobians = (dx_dx, _to_torch(step.dx_da, state))
        else:
            ctx.jacobians = None
        ctx.vjp, ctx.to_numpy, ctx.act_dim = step.vjp, env._to_numpy, action.shape[1]
        return next_state

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_next: th.Tensor) -> tuple[th.Tensor | None, th.Tensor | None, None]:  # type: ignore[override]
        if ctx.jacobians is not None:
            dx_dx, dx_da = ctx.jacobians
            row = grad_next.unsqueeze(1)  # (n, 1, S): the batched row vector grad^T of grad^T J
            grad_state = th.bmm(row, dx_dx).squeeze(1) if ctx.needs_input_grad[0] else None
            grad_action = th.bmm(row, dx_da).squeeze(1) if ctx.needs_input_grad[1] else None
        else:
            grad_state_np, grad_action_np = ctx.vjp(ctx.to_numpy(grad_next))
            _check_shape("vjp: grad_state", grad_state_np, tuple(grad_next.shape))
            _check_shape("vjp: grad_action", grad_action_np, (grad_next.shape[0], ctx.act_dim))
            grad_state = _to_torch(grad_state_np, grad_next) if ctx.needs_input_grad[0] else None
            grad_action = _to_torch(grad_action_np, grad_next) if ctx.needs_input_grad[1] else None
        return grad_state, grad_action, None
