"""
Adapter for `rewarped <https://github.com/rewarped/rewarped>`_ 1.3.3, the differentiable multiphysics tasks on warp
(DFlex's Cartpole, Hopper, Ant and Humanoid; rewarped's hands, soft bodies and MPM tasks): the optional extra
``pip install "sb3-rpo[rewarped]"``.

:class:`RewarpedVecEnv` wraps a rewarped task class as a :class:`~sb3_rpo.common.diff_vec_env.DiffVecEnv`. Nothing
here imports warp or rewarped at module level: they are imported when an env is built, so that the ids below are
registered (and listed) without the extra.

What the adapter does on top of rewarped, and why (docs/sims/rewarped.md has the details):

* the step is rewarped's ``WarpEnv.step`` (pinned 1.3.3) minus its automatic reset, which the adapter runs itself:
  rewarped's partial reset writes the state of *every* environment back in place, which cuts the gradient of the
  environments that go on (any early termination in the batch truncated every gradient window). The adapter
  splices the differentiable state of the continuing environments back in;
* non-finite states (NaN, inf) are reported, end their episode as terminated and are reset, with their gradient rows
  zeroed where they enter the step; rewarped 1.3.3 lets them through;
* terminated and truncated follow gymnasium: rewarped's tasks without early termination report ``terminated`` at
  the time limit;
* the task's randomness (initial states) is drawn from the env's own seeded generator, without touching torch's
  global random state;
* rewarped 1.3.3's DFlex Hopper observes the 12 coordinates of ``joint_q``/``joint_qd`` although it declares 11,
  which shifts every index its reward and termination read: :func:`fixed_dflex_hopper` restores DiffRL's
  observation (``joint_q[1:]`` and ``joint_qd``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_rpo.common.diff_vec_env import DiffStepReturn, DiffVecEnv

# Entry point of every registered task: make_diff_vec_env calls it with num_envs, device, dtype, seed and the row's kwargs.
_ENTRY = "sb3_rpo.sims.rewarped:RewarpedVecEnv"

# (id, entry point, max_episode_steps, kwargs). max_episode_steps is the task's own default episode length (the env
# reads it from the task; pass max_episode_steps=... to make_diff_vec_env to change it). Tasks that do not run here
# are listed, with the reason, in docs/sims/rewarped.md.
TASKS: tuple = (
    # DFlex tasks (DiffRL / SHAC's benchmark), Featherstone articulations.
    ("RewarpedDFlexCartpole-v0", _ENTRY, 240, {"task": "rewarped.envs.dflex.cartpole:Cartpole"}),
    ("RewarpedDFlexHopper-v0", _ENTRY, 1000, {"task": "sb3_rpo.sims.rewarped:fixed_dflex_hopper"}),
    ("RewarpedDFlexAnt-v0", _ENTRY, 1000, {"task": "rewarped.envs.dflex.ant:Ant"}),
    ("RewarpedDFlexHumanoid-v0", _ENTRY, 1000, {"task": "rewarped.envs.dflex.humanoid:Humanoid"}),
    # In-hand reorientation (IsaacGymEnvs' configs; these need hydra-core and omegaconf).
    ("RewarpedAllegroHand-v0", _ENTRY, 600, {"task": "rewarped.envs.isaacgymenvs.allegro_hand:AllegroHand"}),
    ("RewarpedShadowHand-v0", _ENTRY, 600, {"task": "rewarped.envs.isaacgymenvs.shadow_hand:ShadowHand"}),
    # Soft bodies (finite-element tetrahedra driven by muscle activations).
    ("RewarpedSoftJumper-v0", _ENTRY, 300, {"task": "rewarped.envs.gradsim.jumper:Jumper"}),
    ("RewarpedSoftWalker-v0", _ENTRY, 300, {"task": "rewarped.envs.warp_examples.walker:Walker"}),
    # Material point method (plasticine, dough, fluid): they run on the CPU, but at about one env-step per second.
    ("RewarpedRollingFlat-v0", _ENTRY, 300, {"task": "rewarped.envs.plasticinelab.rolling_pin:RollingPin"}),
    ("RewarpedHandFlip-v0", _ENTRY, 300, {"task": "rewarped.envs.dexdeform.flip:Flip"}),
    ("RewarpedFluidMove-v0", _ENTRY, 300, {"task": "rewarped.envs.softgym.transport:Transport"}),
)


@functools.cache
def fixed_dflex_hopper() -> type:
    """
    rewarped 1.3.3's DFlex Hopper with DiffRL's 11-dimensional observation.

    rewarped's ``Hopper.compute_observations`` concatenates the full ``joint_q`` (6) and ``joint_qd`` (6) although
    the task declares 11 observations, so ``obs[:, 0]`` is the horizontal position instead of the height and every
    index that ``compute_reward`` reads is shifted by one: the height reward and the fall termination read the wrong
    coordinate, episodes never end, and the fallen hopper's simulation goes NaN within about 50 steps even at zero
    action. DiffRL's Hopper, which rewarped ports, drops ``joint_q[:, 0]`` (the x position); so does this subclass.

    :return: The fixed task class (built once, on first use, since it imports rewarped)
    """
    from rewarped.envs.dflex.hopper import Hopper

    class DFlexHopperFixed(Hopper):
        """DFlex Hopper observing ``[joint_q[1:], joint_qd]``: height, angle, 3 joint angles, then 6 velocities."""

        def compute_observations(self) -> None:
            joint_q = self.state.joint_q.clone().view(self.num_envs, -1)
            joint_qd = self.state.joint_qd.clone().view(self.num_envs, -1)
            self.obs_buf = th.cat([joint_q[:, 1:], joint_qd], dim=-1)

    return DFlexHopperFixed


def _resolve_task(task: str | type | Callable[[], type]) -> type:
    """A rewarped task class from a class, a ``"module:Class"`` path, or a ``"module:factory"`` returning one."""
    if isinstance(task, str):
        module, _, name = task.partition(":")
        if not name:
            raise ValueError(f"task must be 'module:Class', got {task!r}")
        task = getattr(importlib.import_module(module), name)
    if not isinstance(task, type) and callable(task):
        task = task()
    if not isinstance(task, type):
        raise TypeError(f"task must be a rewarped WarpEnv subclass, got {task!r}")
    return task


class RewarpedVecEnv(DiffVecEnv):
    """
    A rewarped task as a :class:`~sb3_rpo.common.diff_vec_env.DiffVecEnv`.

    The torch face steps the task with its autograd graph (rewarped's ``UpdateFunction`` runs warp's tape backward);
    the numpy face, episode statistics, automatic resets and non-finite guards follow the DiffVecEnv contract
    (docs/custom_env.md, section c). Observations are the task's ``obs_buf``: a tensor as it is, a dict through its
    ``"obs"`` entry when it has one (the hands; ``"state"`` is privileged information), otherwise every entry
    flattened and concatenated in the task's order (the soft-body and MPM tasks). The observation size is read from
    a first reset, not from the task's declared ``num_obs`` (wrong for ShadowHand in 1.3.3). Actions are the task's:
    rewarped clips them to ``[-1, 1]`` (zero gradient outside) and scales them itself.

    Episodes end where the task says (``terminated``) or at ``max_episode_steps`` (``truncated``). Tasks built with
    ``early_termination=False`` (Cartpole, the soft bodies, MPM) can only reset every environment at once in
    rewarped: when one of them becomes non-finite, all are reset and the others are reported as truncated.

    :param num_envs: Number of environments simulated in one batch
    :param device: Device of the simulation and of every tensor (``"cpu"``, ``"cuda"``, ``"cuda:1"``)
    :param dtype: ``torch.float32``; warp simulates in float32, so ``torch.float64`` raises a ``TypeError``
        (converting at the boundary would only pretend to double precision)
    :param seed: Seed of the env's generator, which seeds the task's random initial states
    :param render_mode: ``None`` only (rewarped renders to USD or OpenGL files, not to frames)
    :param max_episode_steps: Episode length (truncation); default: the task's own ``episode_length``
    :param task: The rewarped task: a ``WarpEnv`` subclass, ``"module:Class"`` or ``"module:factory"`` (a function
        returning the class, as :func:`fixed_dflex_hopper`)
    :param quiet: Silence what rewarped prints while it builds the task (warp options, model summaries); warp's
        "Module ... load" lines are governed by ``warp.config.quiet``
    :param task_kwargs: Other keyword arguments of the task's constructor, e.g. ``early_termination=False``,
        ``which="bear"`` (Jumper) or ``use_graph_capture=False`` (CUDA)
    """

    render_modes = ()

    def __init__(
        self,
        num_envs: int = 1,
        device: th.device | str = "cpu",
        dtype: th.dtype = th.float32,
        seed: int | None = None,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        task: str | type | Callable[[], type] = "rewarped.envs.dflex.cartpole:Cartpole",
        quiet: bool = True,
        **task_kwargs: Any,
    ):
        if dtype != th.float32:
            raise TypeError(
                f"rewarped simulates in float32 (warp), got dtype={dtype}; use dtype=torch.float32. "
                "A float64 interface would convert at the boundary without adding precision."
            )
        self.check_render_mode(render_mode)  # before warp compiles anything
        from sb3_rpo.sims import require

        with self._quiet(quiet):  # gym's deprecation banner, warp's start-up lines
            require("warp", "rewarped")
            require("rewarped", "rewarped")
            try:
                self.task_class = _resolve_task(task)
            except ImportError as error:  # the hand tasks import hydra and omegaconf
                raise ImportError(
                    f"The rewarped task {task!r} needs a package that is missing ({error}). "
                    'Install it with: pip install "sb3-rpo[rewarped]"'
                ) from error
        torch_device = th.empty(0, device=device).device  # "cuda" -> "cuda:0", as warp and the tensors name it
        self.generator = th.Generator()  # on the CPU: it only draws the seeds of the task's global-RNG calls
        self.generator.manual_seed(self._new_seed() if seed is None else int(seed))
        self._rng_devices = [torch_device.index or 0] if torch_device.type == "cuda" else []

        kwargs = dict(task_kwargs)
        if max_episode_steps is not None:
            kwargs["episode_length"] = int(max_episode_steps)
        with self._task_rng(), self._quiet(quiet):
            self.task = self.task_class(num_envs=num_envs, device=str(torch_device), no_grad=False, render=False, **kwargs)
            self.task.reset()  # builds the model and compiles (or loads) warp's kernels
        self.max_episode_steps = int(self.task.episode_length)
        if self.max_episode_steps < 1:
            raise ValueError(f"{self.task_class.__name__}: the episode length must be >= 1, got {self.max_episode_steps}")
        act = self.task.action_space
        if int(np.prod(act.shape)) == 0:
            raise ValueError(f"{self.task_class.__name__} has no actions (num_act = 0): a simulation demo, not a control task")
        obs_dim = self._flat_obs(self.task.obs_buf, num_envs).shape[1]
        observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), dtype=np.float32)
        action_space = spaces.Box(np.asarray(act.low, np.float32), np.asarray(act.high, np.float32), dtype=np.float32)
        super().__init__(num_envs, observation_space, action_space, device=torch_device, dtype=dtype, render_mode=None)

        self.elapsed_steps = th.zeros(num_envs, dtype=th.long, device=self.device)
        self.episode_returns = th.zeros(num_envs, dtype=dtype, device=self.device)
        self.nonfinite_count = 0  # environments reset because their state became NaN/inf
        self._last_obs: th.Tensor | None = None
        self._needs_reset = True

    # ----------------------------------------------------------------- helpers
    @contextlib.contextmanager
    def _task_rng(self) -> Iterator[None]:
        """Run task code that draws from torch's global generator (``torch.rand`` in resets) on the env's own seed."""
        seed = int(th.randint(0, 2**62, (1,), generator=self.generator))
        with th.random.fork_rng(devices=self._rng_devices), warnings.catch_warnings():
            # warp.from_torch reads .grad of the (non-leaf) state tensors it is given, which makes torch warn.
            warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")
            th.default_generator.manual_seed(seed)
            for index in self._rng_devices:
                th.cuda.default_generators[index].manual_seed(seed)
            yield

    @staticmethod
    @contextlib.contextmanager
    def _quiet(quiet: bool) -> Iterator[None]:
        if not quiet:
            yield
            return
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Box bound precision lowered.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.jit.script in rewarped
            yield

    @staticmethod
    def _flat_obs(obs_buf: th.Tensor | dict[str, th.Tensor], num_envs: int) -> th.Tensor:
        """The task's observation buffer as one (num_envs, obs_dim) tensor."""
        if isinstance(obs_buf, dict):
            if not obs_buf:
                raise ValueError("the task observes nothing (an empty observation dict)")
            if "obs" in obs_buf:
                return obs_buf["obs"].reshape(num_envs, -1)
            return th.cat([value.reshape(num_envs, -1) for value in obs_buf.values()], dim=-1)
        return obs_buf.reshape(num_envs, -1)

    def _obs(self) -> th.Tensor:
        return self._flat_obs(self.task.obs_buf, self.num_envs).to(self.dtype)

    def _rows(self, x: th.Tensor) -> th.Tensor | None:
        """A simulator array (e.g. joint_q, num_envs * dofs) as one row per environment; None if it does not split."""
        return x.reshape(self.num_envs, -1) if x.numel() % self.num_envs == 0 else None

    @staticmethod
    def _new_seed() -> int:
        return int(np.random.randint(0, np.iinfo(np.uint32).max, dtype=np.uint32))

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seed the env's generator now: the same seed gives the same initial states and resets."""
        seed = self._new_seed() if seed is None else int(seed)
        self.generator.manual_seed(seed)
        return [seed + i for i in range(self.num_envs)]

    # ----------------------------------------------------------------- the protocol
    def diff_reset(self) -> th.Tensor:
        with self._task_rng():
            self.task.reset()  # every environment: fresh states, no graph
        self.elapsed_steps.zero_()
        self.episode_returns.zero_()
        self._needs_reset = False
        self._last_obs = self._obs().detach()  # fresh states: nothing before them to differentiate
        return self._last_obs

    def detach_state(self) -> None:
        # rewarped's clear_grad: detached copies of the state and control tensors (initialize_trajectory without
        # recomputing the observation, which some tasks update statefully).
        self.task.clear_grad()
        if self._last_obs is not None:
            self._last_obs = self._last_obs.detach()

    def diff_observation(self) -> th.Tensor | None:
        return None if self._needs_reset or self._last_obs is None else self._last_obs.detach()

    def diff_step(self, actions: th.Tensor) -> DiffStepReturn:
        if self._needs_reset:
            raise RuntimeError(f"{type(self).__name__}: call diff_reset() (or reset()) before stepping.")
        self.check_actions(actions)
        task, n = self.task, self.num_envs
        # Nodes of this step only, where the gradient rows of non-finite environments are zeroed (hooks below).
        step_actions = actions.view_as(actions)
        task.state_tensors = [x.view_as(x) for x in task.state_tensors]
        state_in = list(task.state_tensors)

        with self._task_rng():
            # rewarped 1.3.3's WarpEnv.step up to its automatic reset, which runs below.
            task.pre_physics_step(step_actions)
            task.do_physics_step()
            task.progress_buf += 1
            task.num_frames += 1
            task.reset_buf = th.zeros_like(task.reset_buf)
            task.compute_observations()
            task.compute_reward()

            final_obs = self._obs()
            rewards = task.rew_buf.reshape(n).to(self.dtype)
            # A non-finite state is reported, ends its episode (bootstrap 0) and never reaches the caller.
            finite = th.isfinite(final_obs).all(dim=-1) & th.isfinite(rewards)
            for x in task.state_tensors:
                rows = self._rows(x)
                finite = finite & (th.isfinite(x).all() if rows is None else th.isfinite(rows).all(dim=-1))
            nonfinite = ~finite
            # Its derivatives are NaN too: zero its rows where they enter the step, or 0 * nan in the backward pass
            # would spoil the gradient of the whole window.
            for x in (step_actions, *state_in):
                if x.requires_grad:
                    x.register_hook(functools.partial(self._zero_rows, mask=nonfinite))
            assert self._last_obs is not None
            final_obs = th.where(nonfinite.unsqueeze(-1), self._last_obs.detach(), final_obs)
            rewards = th.where(nonfinite, th.zeros_like(rewards), rewards)

            truncated = task.truncated_buf.reshape(n).bool()
            terminated = task.terminated_buf.reshape(n).bool()
            if not task.early_termination:
                terminated = terminated & ~truncated  # rewarped writes terminated = reset when it cannot terminate
            terminated = terminated | nonfinite
            done = task.reset_buf.reshape(n).bool() | terminated | truncated
            truncated = done & ~terminated  # whatever else the task resets counts as a cut, bootstrapped

            obs = final_obs
            if bool(done.any()):  # one host sync per step, as rewarped's own reset check
                n_bad = int(nonfinite.sum())
                if n_bad:
                    self.nonfinite_count += n_bad
                    warnings.warn(f"{type(self).__name__}: {n_bad} env(s) reached a non-finite state; reset them.")
                if not task.early_termination and not bool(done.all()):
                    # rewarped resets such tasks all at once: the environments cut short are truncated.
                    truncated = truncated | ~done
                    done = th.ones_like(done)
                self._reset_envs(done)
                # The first observation of the next episode where one ended, the same tensor elsewhere.
                obs = th.where(done.unsqueeze(-1), self._obs(), final_obs)

        self.elapsed_steps += 1
        self.episode_returns += rewards.detach()
        info: dict[str, Any] = {
            "final_obs": final_obs,
            "episode_return": self.episode_returns.clone(),
            "episode_length": self.elapsed_steps.clone(),
            "nonfinite": nonfinite,
        }
        self.elapsed_steps = th.where(done, th.zeros_like(self.elapsed_steps), self.elapsed_steps)
        self.episode_returns = th.where(done, th.zeros_like(self.episode_returns), self.episode_returns)
        self._last_obs = obs
        return obs, rewards, terminated, truncated, info

    def _zero_rows(self, grad: th.Tensor | None, mask: th.Tensor) -> th.Tensor | None:
        if grad is None:
            return None
        rows = self._rows(grad)
        if rows is None:  # an array that does not split per environment: all of it, if any environment failed
            return th.where(mask.any(), th.zeros_like(grad), grad)
        return rows.masked_fill(mask.unsqueeze(-1), 0.0).view_as(grad)

    def _reset_envs(self, done: th.Tensor) -> None:
        """rewarped's ``WarpEnv.reset(env_ids)``, keeping the gradient of the environments that go on."""
        task = self.task
        env_ids = done.nonzero().squeeze(-1)
        before = list(task.state_tensors)
        task.reset_idx(env_ids)  # fresh state arrays; the others' values are copied back in place, without graph
        if not bool(done.all()):
            # Splice the continuing environments' tensors (same values, with their graph) back into the state.
            task.state_tensors = [
                new if self._rows(new) is None else th.where(done.unsqueeze(-1), self._rows(new), self._rows(old)).view_as(new)
                for new, old in zip(task.state_tensors, before, strict=True)
            ]
        task.progress_buf[env_ids] = 0
        task.num_frames = 0
        task.integrator._step = 0
        task.compute_observations()

    # ----------------------------------------------------------------- numpy face
    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]

    def close(self) -> None:
        self.task = None  # type: ignore[assignment]  # frees warp's arrays


def make_rewarped_env(task: str | type | Callable[[], type], num_envs: int = 1, **kwargs: Any) -> RewarpedVecEnv:
    """
    Wrap any rewarped task, registered or not: ``make_rewarped_env("rewarped.envs.dflex.ant:Ant", num_envs=16)``.

    :param task: A ``WarpEnv`` subclass, ``"module:Class"`` or a function returning the class
    :param num_envs: Number of environments simulated in one batch
    :param kwargs: Other arguments of :class:`RewarpedVecEnv` (``device``, ``seed``, ``max_episode_steps``, task options)
    """
    return RewarpedVecEnv(num_envs=num_envs, task=task, **kwargs)
