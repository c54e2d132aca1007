"""
brax's MJX (MuJoCo XLA) tasks as differentiable environments: the optional extra ``sb3-rpo[mjx]``.

:class:`MJXVecEnv` runs a brax environment (``brax.envs.get_environment(name, backend="mjx")``) batched with
``jax.vmap`` and jitted. A ``torch.autograd.Function`` calls the jitted step in the forward pass; its backward
pass calls a jitted ``jax.vjp`` of the same step (which recomputes the step: faster on a CPU than keeping the
forward pass's residuals, and it stores nothing but the inputs). Tensors cross between torch and JAX by DLPack,
without a copy where both live on the same device.

The brax state (a pytree) becomes one flat vector per environment, ``env.state`` (n_envs, state_dim): the
leaves that the step reads, found once by dead-code elimination of the step's jaxpr (for hopper: ``qpos``,
``qvel``, ``qacc_warmstart``, the applied forces, brax's copies ``q``, ``qd`` and its body positions ``x.pos``),
followed by brax's observation, reward and done. The step is then a pure function of this vector, so that
:class:`~sb3_rpo.DiffTaskVecEnv` runs the episodes (time limits, automatic resets, statistics, non-finite guards,
numpy face), while rewards, observations and terminations stay brax's own, differentiated by JAX.

Importing this module imports neither JAX nor brax: they are imported when an environment is built.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch as th
from torch.autograd.function import once_differentiable

from sb3_rpo.common.diff_vec_env import DiffStepReturn, DiffTaskVecEnv

ENTRY_POINT = "sb3_rpo.sims.mjx:MJXVecEnv"

# (env_id, entry point, max_episode_steps, kwargs): registered by sb3_rpo.sims. 1000 steps is brax's episode length.
TASKS: tuple = (
    ("MJXHopper-v0", ENTRY_POINT, 1000, {"env_name": "hopper"}),
    ("MJXAnt-v0", ENTRY_POINT, 1000, {"env_name": "ant"}),
    ("MJXHalfCheetah-v0", ENTRY_POINT, 1000, {"env_name": "halfcheetah"}),
    ("MJXWalker2d-v0", ENTRY_POINT, 1000, {"env_name": "walker2d"}),
    ("MJXInvertedPendulum-v0", ENTRY_POINT, 1000, {"env_name": "inverted_pendulum"}),
)

_MISSING = object()


def import_brax() -> tuple[Any, Any]:
    """
    Import ``jax`` and ``brax.envs`` (with ``mujoco.mjx``), or raise an ImportError with the install line.

    ``mujoco.mjx`` also imports its optional Warp backend whenever a ``warp`` module is installed, and an older
    warp-lang (rewarped pins 1.3.3; mujoco-mjx 3.17 wants 1.18) makes that import fail with a TypeError. The
    JAX implementation used here never needs Warp: if the plain import fails that way, ``warp`` is hidden
    while ``mujoco.mjx`` is imported (it then reports Warp as not installed) and put back afterwards.

    :return: The modules ``jax`` and ``brax.envs``
    """
    from sb3_rpo.sims import require

    jax = require("jax", "mjx")
    if "mujoco.mjx" not in sys.modules:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # mjx prints its failed optional imports
                require("mujoco.mjx", "mjx")
        except ImportError:
            raise
        except Exception as error:  # e.g. TypeError: <class 'warp.types.array'> is not a generic class
            if importlib.util.find_spec("warp") is None:
                raise
            saved = sys.modules.get("warp", _MISSING)
            sys.modules["warp"] = None  # type: ignore[assignment]  # makes `import warp` raise ImportError
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    require("mujoco.mjx", "mjx")
            except Exception:
                raise error from None
            finally:
                if saved is _MISSING:
                    del sys.modules["warp"]
                else:
                    sys.modules["warp"] = saved  # type: ignore[assignment]
    envs = require("brax.envs", "mjx")
    return jax, envs


def _leaf_name(path: Sequence[Any]) -> str:
    import jax

    return jax.tree_util.keystr(tuple(path)).lstrip(".")


def _leaves_read_by_step(jax: Any, step: Any, leaves: list[Any], action: Any, needed: set[int]) -> list[bool]:
    """
    Which state leaves the step reads, directly or through later steps, to compute the ``needed`` outputs.

    Dead-code elimination of the jaxpr of ``step(leaves, action) -> leaves``, iterated to the smallest fixed
    point: a leaf is kept if a kept output depends on it. Falls back to every leaf if JAX's (private) DCE is
    unavailable.
    """
    try:
        from jax._src.interpreters import partial_eval as pe

        jaxpr = jax.make_jaxpr(step)(leaves, action).jaxpr
        used = [i in needed for i in range(len(leaves))]
        while True:
            _, used_inputs = pe.dce_jaxpr(jaxpr, used)
            grown = [u or bool(v) for u, v in zip(used, used_inputs[: len(leaves)], strict=True)]
            if grown == used:
                return used
            used = grown
    except Exception as error:  # pragma: no cover - depends on JAX internals
        warnings.warn(f"MJX: dead-code elimination failed ({error}); the state keeps every leaf of the brax state.")
        return [True] * len(leaves)


class BraxMJXFunctions:
    """
    The JAX side of one brax MJX task: the flat state layout and the jitted reset, step and vjp.

    Shared by every :class:`MJXVecEnv` of the same configuration (see :meth:`get`), so that XLA compiles each
    program once per batch size and process.

    :param env_name: brax environment name (``brax.envs.get_environment``)
    :param env_kwargs: Keyword arguments of the brax environment
    :param solver_iterations: ``opt.iterations`` of the MuJoCo constraint solver (1: differentiable)
    :param ls_iterations: ``opt.ls_iterations`` (line search), ``None`` keeps brax's value
    :param float64: Simulate in float64 (requires ``jax_enable_x64``)
    """

    _cache: dict[tuple, BraxMJXFunctions] = {}

    @classmethod
    def get(
        cls, env_name: str, env_kwargs: dict[str, Any], solver_iterations: int, ls_iterations: int | None, float64: bool
    ) -> BraxMJXFunctions:
        key = (env_name, repr(sorted(env_kwargs.items())), solver_iterations, ls_iterations, float64)  # values may be lists
        if key not in cls._cache:
            cls._cache[key] = cls(env_name, env_kwargs, solver_iterations, ls_iterations, float64)
        return cls._cache[key]

    def __init__(
        self, env_name: str, env_kwargs: dict[str, Any], solver_iterations: int, ls_iterations: int | None, float64: bool
    ):
        jax, envs = import_brax()
        jnp = jax.numpy
        self.jax = jax
        env = envs.get_environment(env_name, backend="mjx", **env_kwargs)
        options: dict[str, Any] = {"opt.iterations": int(solver_iterations)}
        if ls_iterations is not None:
            options["opt.ls_iterations"] = int(ls_iterations)
        env.sys = env.sys.tree_replace(options)
        self.brax_env = env
        self.sim_dtype = jnp.float64 if float64 else jnp.float32
        self.action_size = int(env.action_size)
        ctrl_range = np.asarray(env.sys.actuator.ctrl_range, dtype=np.float64)
        ctrl_range = np.where(np.isfinite(ctrl_range), ctrl_range, [-1.0, 1.0])  # brax's convention where unlimited
        self.action_low, self.action_high = ctrl_range[:, 0], ctrl_range[:, 1]
        self.dt = float(env.dt)

        # Shapes and dtypes only (no compile): the leaves the step never reads are zeros, the others come from the flat state.
        shapes = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
        paths_leaves, self.treedef = jax.tree_util.tree_flatten_with_path(shapes)
        self.template = [np.zeros(leaf.shape, leaf.dtype) for _, leaf in paths_leaves]  # numpy: no dispatch
        template = jax.tree_util.tree_unflatten(self.treedef, self.template)
        self.leaf_names = [_leaf_name(path) for path, _ in paths_leaves]
        outputs = {self.leaf_names.index(name) for name in ("obs", "reward", "done")}
        self.obs_size = int(self.template[self.leaf_names.index("obs")].size)  # env.observation_size runs reset eagerly

        def step_leaves(leaves: list[Any], action: Any) -> list[Any]:
            out = env.step(jax.tree_util.tree_unflatten(self.treedef, leaves), action)
            return jax.tree_util.tree_leaves(out)

        zero_action = jnp.zeros(self.action_size, self.template[self.leaf_names.index("obs")].dtype)
        if jax.tree_util.tree_structure(jax.eval_shape(env.step, template, zero_action)) != self.treedef:
            raise NotImplementedError(
                f"brax env {env_name!r}: step() changes the structure of its state; it cannot be flattened."
            )
        used = _leaves_read_by_step(jax, step_leaves, self.template, zero_action, outputs)
        # Layout: the leaves the step reads, then obs, reward, done (brax's outputs, read by the torch side).
        order = [i for i in range(len(used)) if used[i] and i not in outputs]
        order += [self.leaf_names.index(name) for name in ("obs", "reward", "done")]
        self.slices: dict[str, slice] = {}
        start = 0
        for i in order:
            leaf = self.template[i]
            if jnp.issubdtype(leaf.dtype, jnp.unsignedinteger):  # PRNG keys would lose bits in a float
                raise NotImplementedError(
                    f"brax state leaf {self.leaf_names[i]!r} ({leaf.dtype}) cannot live in a float state."
                )
            self.slices[self.leaf_names[i]] = slice(start, start + leaf.size)
            start += leaf.size
        self.order, self.state_dim = order, start
        self.obs_slice, self.reward_index, self.done_index = (
            self.slices["obs"],
            self.slices["reward"].start,
            self.slices["done"].start,
        )

        def flatten(state: Any) -> Any:
            leaves = jax.tree_util.tree_leaves(state)
            return jnp.concatenate([jnp.ravel(leaves[i]).astype(self.sim_dtype) for i in self.order])

        def unflatten(x: Any) -> Any:
            leaves = list(self.template)  # leaves the step never reads: zeros
            for i in self.order:
                ref, part = self.template[i], x[self.slices[self.leaf_names[i]]].reshape(self.template[i].shape)
                if ref.dtype == jnp.bool_:
                    leaves[i] = part > 0.5
                elif jnp.issubdtype(ref.dtype, jnp.integer):
                    leaves[i] = jnp.round(part).astype(ref.dtype)
                else:
                    leaves[i] = part.astype(ref.dtype)
            return jax.tree_util.tree_unflatten(self.treedef, leaves)

        def step(x: Any, action: Any) -> Any:
            return jax.vmap(lambda xi, ai: flatten(env.step(unflatten(xi), ai.astype(zero_action.dtype))))(x, action)

        self.flatten, self.unflatten, self.step_fn = flatten, unflatten, step
        self.flatten_batch, self.unflatten_batch = jax.jit(jax.vmap(flatten)), jax.jit(jax.vmap(unflatten))
        self.reset = jax.jit(jax.vmap(lambda key: flatten(env.reset(key))))
        self.step = jax.jit(step)
        # The backward pass recomputes the step inside jax.vjp: on a CPU this is faster than keeping the forward
        # pass's residuals (and stores nothing but the inputs), see docs/sims/mjx.md.
        self.step_vjp = jax.jit(lambda x, action, grad: jax.vjp(step, x, action)[1](grad))


class MJXVecEnv(DiffTaskVecEnv):
    """
    A brax MJX environment as a differentiable vectorized environment.

    Observations, rewards and terminations are brax's (``done`` is a termination; truncation comes from
    ``max_episode_steps``). Actions are brax's controls, clipped by MuJoCo to the actuators' ``ctrlrange``
    (zero gradient outside). ``env.state`` holds, per environment, the leaves of the brax state that the step
    reads followed by the observation, reward and done (``state_slices`` names them); it is a pure function of
    itself and the action, differentiated by ``jax.vjp``. Initial states are brax's ``reset``, with keys drawn
    from the env's torch generator (``seed``). XLA compiles each program (reset, step, step's vjp) once per
    batch size and process (about 45 s in all for hopper or ant at 64 envs on a CPU core; envs of the same
    configuration share them, and JAX's persistent cache, ``JAX_COMPILATION_CACHE_DIR``, keeps them across
    processes).

    MJX differentiates only with ``solver_iterations=1`` (with more, its solver's ``while_loop`` has no reverse-mode
    derivative): one Newton iteration of the constraint solver from the previous step's accelerations (warm
    start), so contacts are solved less exactly than with brax's default (4 iterations for hopper, walker2d and
    halfcheetah; brax already uses 1 for ant): docs/sims/mjx.md measures the difference. Larger values are
    allowed for forward-only use (numpy face, evaluation); ``diff_step`` then refuses actions or states that
    require grad.

    With float64 (``dtype=torch.float64``), MJX simulates in float64 only if ``jax_enable_x64`` is set before JAX is
    used (``JAX_ENABLE_X64=1``); otherwise it simulates in float32 and converts at the boundary.

    :param num_envs: Number of environments simulated in one batch
    :param env_name: brax environment: ``"hopper"``, ``"ant"``, ``"halfcheetah"``, ``"walker2d"``,
        ``"inverted_pendulum"``... (any brax env that runs on the ``mjx`` backend and keeps no PRNG key in its state)
    :param device: Device of the torch tensors; JAX runs on the matching device if it has one (``cuda:i`` ->
        JAX's GPU ``i``), otherwise on its CPU, with a copy at the boundary
    :param dtype: ``torch.float32`` or ``torch.float64``
    :param seed: Seed of the env's generator (the reset keys); ``seed()`` changes it later
    :param render_mode: Only ``None``: rendering is not implemented
    :param max_episode_steps: Episode length (truncation), 1000 by default as in brax
    :param solver_iterations: MuJoCo's ``opt.iterations``; 1 is the only value that can be differentiated
    :param ls_iterations: MuJoCo's ``opt.ls_iterations``, the line-search steps of the solver iteration. 4, as brax
        sets for ant on MJX, gave the same trajectories as brax's 50 (hopper, walker2d, halfcheetah) in our rollouts,
        for 30% more throughput (docs/sims/mjx.md); ``None`` keeps brax's value
    :param env_kwargs: Keyword arguments of the brax environment (e.g. ``{"ctrl_cost_weight": 0.01}``)
    """

    max_episode_steps = 1000
    render_modes = ()

    def __init__(
        self,
        num_envs: int = 1,
        env_name: str = "hopper",
        device: th.device | str = "cpu",
        dtype: th.dtype = th.float32,
        seed: int | None = None,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        solver_iterations: int = 1,
        ls_iterations: int | None = 4,
        env_kwargs: dict[str, Any] | None = None,
    ):
        self.check_render_mode(render_mode)  # before XLA compiles anything
        jax, _ = import_brax()
        float64 = dtype == th.float64 and bool(jax.config.jax_enable_x64)
        if dtype == th.float64 and not float64:
            warnings.warn(
                "MJXVecEnv: dtype float64 but jax_enable_x64 is off: MJX simulates in float32 (set JAX_ENABLE_X64=1)."
            )
        self.env_name, self.solver_iterations = env_name, int(solver_iterations)
        self.sim = BraxMJXFunctions.get(env_name, dict(env_kwargs or {}), self.solver_iterations, ls_iterations, float64)
        # The task's dimensions, read by DiffTaskVecEnv.__init__ (instance attributes shadow the class's).
        self.state_dim, self.obs_dim = self.sim.state_dim, self.sim.obs_size
        self.action_low, self.action_high = tuple(self.sim.action_low), tuple(self.sim.action_high)
        self.state_slices = dict(self.sim.slices)
        self._fresh: th.Tensor | None = None
        super().__init__(num_envs, device=device, dtype=dtype, seed=seed, max_episode_steps=max_episode_steps)
        self.dt = self.sim.dt
        self.jax_device = self._match_jax_device(jax, self.device)
        self._sim_torch_dtype = th.float64 if float64 else th.float32

    @staticmethod
    def _match_jax_device(jax: Any, device: th.device) -> Any:
        if device.type == "cuda":
            with contextlib.suppress(RuntimeError):
                gpus = jax.devices("gpu")
                return gpus[device.index or 0]
        return jax.devices("cpu")[0]

    # ----------------------------------------------------------------- torch <-> JAX
    def to_jax(self, x: th.Tensor) -> Any:
        """``x`` as a JAX array of the simulation's dtype on :attr:`jax_device` (DLPack: no copy on the same device)."""
        x = x.detach().to(self._sim_torch_dtype).contiguous()
        if (x.device.type == "cuda") == (self.jax_device.platform == "gpu"):
            return self.sim.jax.dlpack.from_dlpack(x)
        return self.sim.jax.device_put(x.cpu().numpy(), self.jax_device)

    def to_torch(self, x: Any) -> th.Tensor:
        """A JAX array as a tensor of the env's device and dtype (DLPack: no copy on the same device and dtype)."""
        return th.from_dlpack(x).to(device=self.device, dtype=self.dtype)

    # ----------------------------------------------------------------- the task
    def sample_initial_state(self, n: int) -> th.Tensor:
        # brax's reset with keys from the torch generator. One batch is computed ahead and reused until a step
        # consumes it (diff_step drops it when an episode ends): resets cost a third of a step.
        if self._fresh is None or self._fresh.shape[0] != n:
            seed = int(th.randint(0, 2**31 - 1, (1,), generator=self.generator, device=self.device).item())
            keys = np.random.default_rng(seed).integers(0, 2**32, size=(n, 2), dtype=np.uint32)
            self._fresh = self.to_torch(self.sim.reset(self.sim.jax.device_put(keys, self.jax_device)))
        return self._fresh

    def dynamics(self, state: th.Tensor, action: th.Tensor) -> th.Tensor:
        if th.is_grad_enabled() and (state.requires_grad or action.requires_grad):
            if self.solver_iterations != 1:
                raise RuntimeError(
                    f"MJX differentiates only with solver_iterations=1 (got {self.solver_iterations}): its solver's "
                    "while_loop has no reverse-mode derivative. Use this env under torch.no_grad() or the numpy face."
                )
            return _MJXStepFunction.apply(state, action, self)
        return self.to_torch(self.sim.step(self.to_jax(state), self.to_jax(action)))

    def reward(self, state: th.Tensor, action: th.Tensor, next_state: th.Tensor) -> th.Tensor:
        return next_state[:, self.sim.reward_index]

    def observation(self, state: th.Tensor) -> th.Tensor:
        return state[:, self.sim.obs_slice]

    def terminated(self, state: th.Tensor) -> th.Tensor:
        return state[:, self.sim.done_index] > 0.5

    # ----------------------------------------------------------------- episodes
    def diff_reset(self) -> th.Tensor:
        obs = super().diff_reset()
        self._fresh = None  # used
        return obs

    def diff_step(self, actions: th.Tensor) -> DiffStepReturn:
        obs, rewards, terminated, truncated, info = super().diff_step(actions)
        if bool((terminated | truncated).any()):  # some fresh states were used: draw new ones next time
            self._fresh = None
        return obs, rewards, terminated, truncated, info

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        self._fresh = None
        return super().seed(seed)

    def get_state(self) -> dict[str, Any]:
        # The batch of initial states drawn ahead is part of what comes next (an exact resume draws the same resets).
        return {**super().get_state(), "fresh": None if self._fresh is None else self._fresh.cpu().clone()}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._fresh = None if state["fresh"] is None else state["fresh"].to(self.device, self.dtype)

    # ----------------------------------------------------------------- brax states
    def from_brax(self, brax_state: Any) -> th.Tensor:
        """The flat state (n, state_dim) of a batched brax ``State`` (e.g. ``jax.vmap(brax_env.reset)(keys)``)."""
        return self.to_torch(self.sim.flatten_batch(brax_state))

    def to_brax(self, state: th.Tensor | None = None) -> Any:
        """The batched brax ``State`` of a flat state (default: the current one); the leaves the step never reads are zeros."""
        state = self.state if state is None else state
        return self.sim.unflatten_batch(self.to_jax(state))

    @property
    def brax_env(self) -> Any:
        """The brax environment (with this env's solver options)."""
        return self.sim.brax_env


class _MJXStepFunction(th.autograd.Function):
    """``next_state = step(state, action)`` through the jitted MJX step, differentiated by ``jax.vjp``."""

    @staticmethod
    def forward(ctx: Any, state: th.Tensor, action: th.Tensor, env: MJXVecEnv) -> th.Tensor:  # type: ignore[override]
        ctx.save_for_backward(state, action)  # the backward pass recomputes the step from them
        ctx.env = env
        return env.to_torch(env.sim.step(env.to_jax(state), env.to_jax(action)))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_next: th.Tensor) -> tuple[th.Tensor | None, th.Tensor | None, None]:  # type: ignore[override]
        env, (state, action) = ctx.env, ctx.saved_tensors
        grad_state, grad_action = env.sim.step_vjp(env.to_jax(state), env.to_jax(action), env.to_jax(grad_next))
        return (
            env.to_torch(grad_state).to(grad_next.dtype) if ctx.needs_input_grad[0] else None,
            env.to_torch(grad_action).to(grad_next.dtype) if ctx.needs_input_grad[1] else None,
            None,
        )
