"""The differentiable vectorized environment protocol.

A :class:`DiffVecEnv` is an SB3 ``VecEnv`` with a second, torch-native face:

* ``diff_reset()`` / ``diff_step(actions)`` take and return batched tensors on ``env.device`` whose
  autograd graph reaches back through the simulator to the actions and to the state at the last cut;
* ``detach_state()`` cuts that graph (the start of a new gradient window).

The numpy face (``reset``, ``step_async``/``step_wait``, ``render``...) runs the same dynamics under
``torch.no_grad()`` and converts at the boundary, so every SB3 tool that takes a VecEnv works unchanged.

:class:`DiffTaskVecEnv` is the small base of the embedded tasks: a task writes its initial-state
sampler, dynamics, reward, observation and termination as batched tensor functions, and the base does
the rest (time limits, automatic resets, episode statistics, non-finite guards, checks of the task's outputs on
the first step, input checks, a saved state for exact resume).
"""

from __future__ import annotations

import time
import warnings
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

DiffStepReturn = tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor, dict[str, Any]]

# Why DiffTaskVecEnv ended and reset environments, in the order of its counters.
NONFINITE_KINDS = ("state", "observation", "action", "reset_observation")
NONFINITE_MESSAGES = {
    "state": "{n} env(s) reached a non-finite state (NaN or inf from dynamics() or reward()) and were reset",
    "observation": "{n} env(s) got a non-finite observation() from a finite state and were reset",
    "action": "{n} env(s) received non-finite actions (NaN or inf) and were reset",
    "reset_observation": "{n} initial state(s) had a non-finite observation() (redrawn on reset, zeroed after an "
    "automatic reset)",
}


class DiffVecEnv(VecEnv):
    """
    A batched environment whose ``diff_step`` keeps the autograd graph.

    Implementations define ``diff_reset``, ``diff_step`` and ``detach_state``; this class derives the
    numpy ``VecEnv`` face from them. ``diff_step`` returns ``(obs, rewards, terminated, truncated, info)``:

    * ``obs`` (n_envs, obs_dim) and ``rewards`` (n_envs,) are differentiable with respect to the actions
      and to the state reached since the last ``detach_state()``;
    * ``terminated``/``truncated`` are bool tensors (n_envs,); environments that end are reset
      automatically and ``obs`` is then the first observation of the new episode;
    * ``info["final_obs"]`` is the (differentiable) observation reached before that reset, equal to
      ``obs`` where nothing ended: bootstrap from it on truncation;
    * ``info["episode_return"]``/``info["episode_length"]`` (n_envs,) hold the undiscounted return and
      length of the episodes that ended at this step (meaningful where ``terminated | truncated``);
    * ``info["nonfinite"]`` (n_envs,) marks environments whose state, reward or observation became non-finite
      at this step (or whose action was); they are reported as terminated and reset, never propagated, and
      counted until :meth:`report_nonfinite` reports them.

    :param num_envs: Number of environments simulated in one batch
    :param observation_space: Observation space of one environment (a flat ``Box``)
    :param action_space: Action space of one environment (a ``Box``)
    :param device: Device of every tensor of the torch face
    :param dtype: Floating point type of states, observations, actions and rewards
    :param render_mode: ``None`` or ``"rgb_array"``
    """

    # The render modes the class can draw: its gymnasium face refuses any other (a class that cannot render sets ())
    render_modes: tuple[str, ...] = ("rgb_array",)

    def __init__(
        self,
        num_envs: int,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        device: th.device | str = "cpu",
        dtype: th.dtype = th.float32,
        render_mode: str | None = None,
    ):
        if dtype not in (th.float32, th.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.check_render_mode(render_mode)
        self.device = th.empty(0, device=device).device  # "cuda" -> "cuda:0", as tensors report it
        self.dtype = dtype
        self.render_mode = render_mode
        self._actions: np.ndarray | None = None
        self._t_start = time.time()
        super().__init__(num_envs, observation_space, action_space)

    @classmethod
    def check_render_mode(cls, render_mode: str | None) -> None:
        """Refuse a render mode the class cannot draw (a subclass with a costly set-up calls it first)."""
        if render_mode is not None and render_mode not in cls.render_modes:
            allowed = " or ".join(repr(mode) for mode in (None, *cls.render_modes))
            raise ValueError(f"{cls.__name__}: render_mode must be {allowed}, got {render_mode!r}")

    # ----------------------------------------------------------------- torch face
    @abstractmethod
    def diff_reset(self) -> th.Tensor:
        """Reset every environment; return the observations (n_envs, obs_dim) on ``device``."""

    @abstractmethod
    def diff_step(self, actions: th.Tensor) -> DiffStepReturn:
        """Step every environment with ``actions`` (n_envs, act_dim), keeping the autograd graph."""

    @abstractmethod
    def detach_state(self) -> None:
        """Cut the graph: later gradients stop at the current state."""

    def diff_observation(self) -> th.Tensor | None:
        """
        The observations of the current states (n_envs, obs_dim), detached, without stepping: where a learner
        continues from after the env was stepped elsewhere (e.g. ``evaluate_policy``). None when the env was
        never reset, or cannot tell (this default).
        """
        return None

    def check_actions(self, actions: Any) -> None:
        """
        Raise a clear error for actions that ``diff_step`` cannot take (type, shape, dtype, device).

        These checks read only metadata: no device-to-host synchronization. Non-finite values are not refused here
        (that would synchronize every step): ``diff_step`` ends and resets the environments that receive them and
        :meth:`report_nonfinite` counts them; the numpy face refuses them at once (see :meth:`step_wait`).
        """
        expected = (self.num_envs, *self.action_space.shape)
        if not isinstance(actions, th.Tensor):
            raise TypeError(
                f"diff_step expects a torch.Tensor of shape {expected}, got {type(actions).__name__}; "
                "use step() for numpy actions."
            )
        if tuple(actions.shape) != expected:
            raise ValueError(f"diff_step expects actions of shape {expected} (n_envs, act_dim), got {tuple(actions.shape)}.")
        if actions.dtype != self.dtype:
            raise TypeError(f"diff_step expects actions of dtype {self.dtype} (the env's dtype), got {actions.dtype}.")
        if actions.device != self.device:
            raise ValueError(f"diff_step expects actions on device {self.device}, got {actions.device}.")

    def report_nonfinite(self) -> dict[str, int]:
        """
        Warn once about the environments reset for non-finite values since the last report, and return their counts.

        ``diff_step`` only accumulates these counts in tensors (no host synchronization per step); this reads them,
        which synchronizes once. RPO calls it at the end of every window, the numpy face after every step.
        An implementation that reports at once in ``diff_step`` may leave this default (nothing pending).
        """
        return {}

    def get_state(self) -> dict[str, Any] | None:
        """
        Everything needed to continue exactly where the env is (states, episode counters, random generator), as a
        dict of tensors and numbers that ``torch.save`` and pickle take; ``None`` if the env cannot save it (the
        default). RPO saves it in its zip file and ``RPO.load(path, env=...)`` gives it back to :meth:`set_state`.
        """
        return None

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned; raise ``ValueError`` if it belongs to another kind of env."""
        raise NotImplementedError(f"{type(self).__name__} cannot restore its state (get_state() returns None)")

    # ----------------------------------------------------------------- numpy face
    def _to_numpy_obs(self, obs: th.Tensor) -> np.ndarray:
        return obs.detach().cpu().numpy().astype(self.observation_space.dtype, copy=False)

    def reset(self) -> VecEnvObs:
        with th.no_grad():
            obs = self.diff_reset()
        self._reset_seeds()
        self._reset_options()
        self.report_nonfinite()
        return self._to_numpy_obs(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def _numpy_actions(self, actions: Any) -> th.Tensor:
        """
        ``step()``'s actions as the tensor ``diff_step`` takes, refused as SB3's VecEnvs would refuse them.

        Accepted: shape (n_envs, *action_space.shape), as ``predict`` returns them, and (n_envs,) for a one-dimensional
        action (DummyVecEnv gives each env ``actions[i]``, a scalar, then). Anything else is refused, even with the
        right number of elements: a transposed (act_dim, n_envs) or flat (n_envs * act_dim,) array would mix the
        actions of different environments.
        """
        array = np.asarray(actions)
        expected = (self.num_envs, *self.action_space.shape)
        if array.shape != expected and not (self.action_space.shape == (1,) and array.shape == (self.num_envs,)):
            raise ValueError(
                f"step() expects actions of shape {expected} (n_envs, *action_space.shape), got {array.shape}: "
                "one row per environment, as model.predict() returns them."
            )
        if not np.all(np.isfinite(array)):
            bad = np.flatnonzero(~np.isfinite(array.reshape(self.num_envs, -1)).all(axis=-1)).tolist()
            raise ValueError(f"step() received non-finite actions (NaN or inf) for envs {bad}.")
        return th.as_tensor(array, device=self.device).to(self.dtype).reshape(expected)

    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None, "step_async() must be called before step_wait()"
        actions = self._numpy_actions(self._actions)
        with th.no_grad():
            obs, rewards, terminated, truncated, info = self.diff_step(actions)
        self.report_nonfinite()
        dones = (terminated | truncated).cpu().numpy()
        infos = self.sb3_infos(info, terminated, truncated)
        return self._to_numpy_obs(obs), rewards.detach().cpu().numpy().astype(np.float32), dones, infos

    def sb3_infos(self, info: dict[str, Any], terminated: th.Tensor, truncated: th.Tensor) -> list[dict[str, Any]]:
        """Per-env info dicts of one ``diff_step``, as SB3's VecMonitor and DummyVecEnv write them."""
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        done = (terminated | truncated).cpu().numpy()
        if not done.any():
            return infos
        term = terminated.cpu().numpy()
        final_obs = self._to_numpy_obs(info["final_obs"])
        ep_ret = info["episode_return"].detach().cpu().numpy()
        ep_len = info["episode_length"].cpu().numpy()
        nonfinite = info["nonfinite"].cpu().numpy() if "nonfinite" in info else np.zeros(self.num_envs, dtype=bool)
        t = round(time.time() - self._t_start, 6)
        for i in np.flatnonzero(done):
            infos[i] = {
                "episode": {"r": round(float(ep_ret[i]), 6), "l": int(ep_len[i]), "t": t},
                "terminal_observation": final_obs[i],
                "TimeLimit.truncated": bool(not term[i]),
            }
            if nonfinite[i]:
                infos[i]["nonfinite_state"] = True
        return infos

    def close(self) -> None:
        pass

    # A DiffVecEnv simulates all its environments in one object: attributes are shared by every index.
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        return [getattr(self, method_name)(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        # Episode statistics are built in, exactly as Monitor writes them (evaluate_policy relies on this).
        return [wrapper_class is Monitor for _ in self._get_indices(indices)]


class DiffTaskVecEnv(DiffVecEnv):
    """
    Base of a batched torch task: subclasses write the physics, the base runs the episodes.

    A task sets the class attributes ``state_dim``, ``obs_low``/``obs_high`` (or ``obs_dim`` for an
    unbounded observation), ``action_low``/``action_high`` and ``max_episode_steps``, and implements

    * ``sample_initial_state(n) -> (n, state_dim)`` (draw randomness with ``self.uniform`` / ``self.normal``);
    * ``dynamics(state, action) -> next_state``;
    * ``reward(state, action, next_state) -> (n,)``;
    * ``observation(state) -> (n, obs_dim)``;
    * optionally ``terminated(state) -> (n,) bool`` (default: never) and ``render_state(state, action)``
      returning an RGB frame of one environment for ``render_mode="rgb_array"``.

    Task parameters drawn per episode (a target, a mass) belong in the state so that the observation
    can read them. Everything is batched over the first dimension and must work for any device and dtype.

    :param num_envs: Number of environments simulated in one batch
    :param device: Device of the simulation
    :param dtype: ``torch.float32`` or ``torch.float64``
    :param seed: Seed of the task's random generator (initial states); ``seed()`` changes it later
    :param render_mode: ``None`` or ``"rgb_array"``
    :param max_episode_steps: Override of the task's episode length (truncation)
    """

    state_dim: int
    obs_low: Sequence[float] | None = None
    obs_high: Sequence[float] | None = None
    obs_dim: int | None = None
    action_low: Sequence[float]
    action_high: Sequence[float]
    max_episode_steps: int = 1000

    def __init__(
        self,
        num_envs: int = 1,
        device: th.device | str = "cpu",
        dtype: th.dtype = th.float32,
        seed: int | None = None,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
    ):
        if max_episode_steps is not None:
            self.max_episode_steps = int(max_episode_steps)
        if self.obs_low is not None and self.obs_high is not None:
            obs_space = spaces.Box(np.array(self.obs_low, np.float32), np.array(self.obs_high, np.float32), dtype=np.float32)
        else:
            assert self.obs_dim is not None, "a task sets obs_low/obs_high or obs_dim"
            obs_space = spaces.Box(-np.inf, np.inf, (self.obs_dim,), dtype=np.float32)
        act_space = spaces.Box(np.array(self.action_low, np.float32), np.array(self.action_high, np.float32), dtype=np.float32)
        super().__init__(num_envs, obs_space, act_space, device=device, dtype=dtype, render_mode=render_mode)
        self.generator = th.Generator(device=self.device)
        self.seed(seed)
        self.state = th.zeros(num_envs, self.state_dim, device=self.device, dtype=dtype)
        self.elapsed_steps = th.zeros(num_envs, dtype=th.long, device=self.device)
        self.episode_returns = th.zeros(num_envs, dtype=dtype, device=self.device)
        # Environments reset because of non-finite values, per kind: counted in a tensor by diff_step (no host sync),
        # added to the totals by report_nonfinite().
        self._nonfinite_pending = th.zeros(len(NONFINITE_KINDS), dtype=th.long, device=self.device)
        self.nonfinite_totals = dict.fromkeys(NONFINITE_KINDS, 0)
        low, high = (th.as_tensor(b, dtype=dtype, device=self.device) for b in (act_space.low, act_space.high))
        self._safe_action = (low + high) / 2  # what the simulator gets in place of a non-finite action
        self._last_obs: th.Tensor | None = None
        self._last_actions: th.Tensor | None = None
        self._needs_reset = True
        self._outputs_checked = {"reset": False, "step": False}  # the task's outputs are checked once

    # ------------------------------------------------------------- what a task writes
    @abstractmethod
    def sample_initial_state(self, n: int) -> th.Tensor:
        """Draw ``n`` initial states (n, state_dim)."""

    @abstractmethod
    def dynamics(self, state: th.Tensor, action: th.Tensor) -> th.Tensor:
        """Next state (n, state_dim) reached from ``state`` under ``action``."""

    @abstractmethod
    def reward(self, state: th.Tensor, action: th.Tensor, next_state: th.Tensor) -> th.Tensor:
        """Reward (n,) of the transition ``state -> next_state`` under ``action``."""

    @abstractmethod
    def observation(self, state: th.Tensor) -> th.Tensor:
        """Observation (n, obs_dim) of ``state``."""

    def terminated(self, state: th.Tensor) -> th.Tensor:
        """Whether ``state`` ends the episode (n,) bool; by default episodes end only at the time limit."""
        return th.zeros(state.shape[0], dtype=th.bool, device=state.device)

    def render_state(self, state: np.ndarray, action: np.ndarray | None) -> np.ndarray:
        """RGB frame (H, W, 3) of one environment's ``state``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement render_state()")

    # ------------------------------------------------------------- randomness helpers
    def uniform(self, n: int, low: Sequence[float] | float, high: Sequence[float] | float) -> th.Tensor:
        """Uniform samples (n, d) between ``low`` and ``high`` from the task's generator."""
        low_t = th.as_tensor(low, dtype=self.dtype, device=self.device).reshape(1, -1)
        high_t = th.as_tensor(high, dtype=self.dtype, device=self.device).reshape(1, -1)
        width = max(low_t.shape[1], high_t.shape[1])
        u = th.rand(n, width, generator=self.generator, dtype=self.dtype, device=self.device)
        return low_t + (high_t - low_t) * u

    def normal(self, n: int, d: int) -> th.Tensor:
        """Standard normal samples (n, d) from the task's generator."""
        return th.randn(n, d, generator=self.generator, dtype=self.dtype, device=self.device)

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        if seed is None:
            seed = int(np.random.randint(0, np.iinfo(np.uint32).max, dtype=np.uint32))
        self.generator.manual_seed(int(seed))
        return [int(seed) + i for i in range(self.num_envs)]

    # ------------------------------------------------------------- checks of what the task returns
    def _check_output(self, method: str, value: Any, shape: tuple[int, ...], dtype: th.dtype, hint: str = "") -> None:
        """Raise an error naming the task's ``method`` if ``value`` is not a tensor of ``shape``, ``dtype`` on the device."""
        name = f"{type(self).__name__}.{method}()"
        if not isinstance(value, th.Tensor):
            raise TypeError(f"{name} must return a torch.Tensor of shape {shape}, got {type(value).__name__}.")
        if tuple(value.shape) != shape:
            raise ValueError(f"{name} returned shape {tuple(value.shape)}, expected {shape}{hint}.")
        if value.dtype != dtype:
            promoted = (
                " (a float64 constant, e.g. a numpy float64 array or a tensor created without dtype=self.dtype, promotes "
                "float32 computations)"
                if dtype == th.float32 and value.dtype == th.float64
                else ""
            )
            raise TypeError(f"{name} returned dtype {value.dtype}, expected {dtype}{promoted}.")
        if value.device != self.device:
            raise ValueError(f"{name} returned a tensor on {value.device}, expected the env's device {self.device}.")

    def _check_reset_outputs(self, state: Any, obs: Any) -> None:
        n, obs_shape = self.num_envs, self.observation_space.shape
        self._check_output("sample_initial_state", state, (n, self.state_dim), self.dtype, " (n, state_dim)")
        self._check_output(
            "observation", obs, (n, *obs_shape), self.dtype, ", the size that obs_dim or obs_low/obs_high declare"
        )

    def _check_step_outputs(self, next_state: Any, rewards: Any, terminated: Any) -> None:
        n = self.num_envs
        self._check_output("dynamics", next_state, (n, self.state_dim), self.dtype, " (n, state_dim)")
        self._check_output("reward", rewards, (n,), self.dtype, ", one reward per env (reduce or squeeze the last axis)")
        self._check_output("terminated", terminated, (n,), th.bool, " (one flag per env)")

    # ------------------------------------------------------------- the protocol
    def _initial_states(self) -> tuple[th.Tensor, th.Tensor]:
        """Initial states of every env and their observations, redrawn (a few times) where an observation is non-finite."""
        state = self.sample_initial_state(self.num_envs)
        obs = self.observation(state)
        if not self._outputs_checked["reset"]:
            self._check_reset_outputs(state, obs)
            self._outputs_checked["reset"] = True
        for _ in range(10):  # a reset synchronizes once anyway (the numpy face converts its observation)
            bad = ~th.isfinite(obs).all(dim=-1)
            if not bool(bad.any()):
                return state, obs
            self._nonfinite_pending[NONFINITE_KINDS.index("reset_observation")] += bad.sum()
            state = th.where(bad.unsqueeze(-1), self.sample_initial_state(self.num_envs), state)
            obs = self.observation(state)
        raise RuntimeError(
            f"{type(self).__name__}.observation() stays non-finite (NaN or inf) for {int(bad.sum())} of {self.num_envs} "
            "initial states after 10 draws of sample_initial_state(): the task's observation of its own initial states "
            "must be finite (e.g. bound a 1/distance feature away from zero)."
        )

    def diff_reset(self) -> th.Tensor:
        self.state, obs = self._initial_states()
        self.elapsed_steps.zero_()
        self.episode_returns.zero_()
        self._last_obs, self._last_actions = obs.detach(), None
        self._needs_reset = False
        return obs

    def detach_state(self) -> None:
        self.state = self.state.detach()

    def diff_observation(self) -> th.Tensor | None:
        return None if self._needs_reset else self.observation(self.state).detach()

    def diff_step(self, actions: th.Tensor) -> DiffStepReturn:
        if self._needs_reset:
            raise RuntimeError(f"{type(self).__name__}: call diff_reset() (or reset()) before stepping.")
        self.check_actions(actions)
        state, step_actions = self.state.view_as(self.state), actions.view_as(actions)  # nodes of this step only
        # The simulator never sees a non-finite action (an external one may silently recover from it); the env is reset.
        bad_actions = ~th.isfinite(actions).flatten(1).all(dim=-1)
        per_env = (-1, *[1] * (actions.dim() - 1))  # broadcasts an (n,) mask over actions of any Box shape (n, *shape)
        next_state = self.dynamics(state, th.where(bad_actions.reshape(per_env), self._safe_action, step_actions))
        rewards = self.reward(state, step_actions, next_state)
        obs_reached = self.observation(next_state)
        if not self._outputs_checked["step"]:
            self._check_step_outputs(next_state, rewards, self.terminated(next_state))
            self._outputs_checked["step"] = True

        # A non-finite state, reward or observation (even from a finite state, e.g. 1/distance) is counted, ends its
        # episode (bootstrap 0) and never reaches the caller. Counting stays on the device: no host sync per step.
        bad_state = ~(th.isfinite(next_state).all(dim=-1) & th.isfinite(rewards))
        bad_obs = ~th.isfinite(obs_reached).all(dim=-1) & ~bad_state
        nonfinite = bad_state | bad_obs | bad_actions
        # Its derivatives are NaN too: zero them where they enter the step, or the backward pass would turn the
        # zero gradient of the discarded next state into NaN (0 * nan) and spoil the whole batch.
        for x in (state, step_actions):
            if x.requires_grad:
                mask = nonfinite.reshape(-1, *[1] * (x.dim() - 1))
                x.register_hook(lambda grad, mask=mask: None if grad is None else grad.masked_fill(mask, 0.0))
        safe_next = th.where(nonfinite.unsqueeze(-1), state.detach(), next_state)
        rewards = th.where(nonfinite, th.zeros_like(rewards), rewards)

        self.elapsed_steps += 1
        self.episode_returns += rewards.detach()
        terminated = self.terminated(safe_next) | nonfinite
        truncated = self.elapsed_steps >= self.max_episode_steps
        done = terminated | truncated

        # The observation reached; where it was not finite, the last one returned (that env is terminated: no bootstrap).
        assert self._last_obs is not None
        final_obs = th.where(nonfinite.unsqueeze(-1), self._last_obs, obs_reached)
        info: dict[str, Any] = {
            "final_obs": final_obs,
            "episode_return": self.episode_returns.clone(),
            "episode_length": self.elapsed_steps.clone(),
            "nonfinite": nonfinite,
        }
        # Automatic reset without a host sync: fresh states replace ended ones, which cuts their gradient.
        fresh = self.sample_initial_state(self.num_envs).to(self.dtype)
        self.state = th.where(done.unsqueeze(-1), fresh, safe_next)
        obs = self.observation(self.state)  # equals final_obs, gradient included, where nothing ended
        # A fresh state whose observation is not finite cannot be redrawn without a sync: its observation is zeroed.
        bad_reset = done & ~th.isfinite(obs).all(dim=-1)
        obs = th.where(bad_reset.unsqueeze(-1), th.zeros_like(obs), obs)
        self._nonfinite_pending += th.stack([bad_state.sum(), bad_obs.sum(), bad_actions.sum(), bad_reset.sum()])
        self.elapsed_steps = th.where(done, th.zeros_like(self.elapsed_steps), self.elapsed_steps)
        self.episode_returns = th.where(done, th.zeros_like(self.episode_returns), self.episode_returns)
        self._last_obs, self._last_actions = obs.detach(), actions.detach()
        return obs, rewards, terminated, truncated, info

    # ------------------------------------------------------------- non-finite values, saved state
    def report_nonfinite(self) -> dict[str, int]:
        counts = dict(zip(NONFINITE_KINDS, self._nonfinite_pending.tolist(), strict=True))  # the one host sync
        self._nonfinite_pending.zero_()
        parts = [NONFINITE_MESSAGES[kind].format(n=n) for kind, n in counts.items() if n]
        if parts:
            for kind, n in counts.items():
                self.nonfinite_totals[kind] += n
            warnings.warn(f"{type(self).__name__}: {'; '.join(parts)}.", stacklevel=2)
        return counts

    @property
    def nonfinite_count(self) -> int:
        """Environments ended and reset so far because of a non-finite state, reward, observation or action."""
        self.report_nonfinite()
        return sum(self.nonfinite_totals[kind] for kind in ("state", "observation", "action"))

    def get_state(self) -> dict[str, Any]:
        self.report_nonfinite()
        return {
            "env_class": f"{type(self).__module__}.{type(self).__qualname__}",
            "num_envs": self.num_envs,
            "dtype": str(self.dtype),
            "state": self.state.detach().cpu().clone(),
            "elapsed_steps": self.elapsed_steps.cpu().clone(),
            "episode_returns": self.episode_returns.cpu().clone(),
            "generator": self.generator.get_state(),
            "needs_reset": self._needs_reset,
            "nonfinite_totals": dict(self.nonfinite_totals),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        mine = self.get_state()
        for key in ("env_class", "num_envs", "dtype"):
            if state.get(key) != mine[key]:
                raise ValueError(f"the saved env state is of {key} {state.get(key)!r}, this env's is {mine[key]!r}")
        if tuple(state["state"].shape) != tuple(self.state.shape):
            shape = tuple(state["state"].shape)
            raise ValueError(f"the saved env state has shape {shape}, expected {tuple(self.state.shape)}")
        self.state = state["state"].to(self.device, self.dtype)
        self.elapsed_steps = state["elapsed_steps"].to(self.device)
        self.episode_returns = state["episode_returns"].to(self.device, self.dtype)
        self.generator.set_state(state["generator"])
        self._needs_reset = bool(state["needs_reset"])
        self.nonfinite_totals = dict(state["nonfinite_totals"])
        with th.no_grad():
            self._last_obs, self._last_actions = self.observation(self.state), None

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            return [None for _ in range(self.num_envs)]
        states = self.state.detach().cpu().double().numpy()
        actions = None if self._last_actions is None else self._last_actions.cpu().double().numpy()
        return [self.render_state(states[i], None if actions is None else actions[i]) for i in range(self.num_envs)]
