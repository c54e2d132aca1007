"""A single gymnasium environment backed by a one-env :class:`DiffVecEnv` (numpy in, numpy out)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch as th

from sb3_rpo.common.diff_vec_env import DiffTaskVecEnv
from sb3_rpo.common.registry import diff_env_render_modes, make_diff_vec_env


class DiffGymEnv(gym.Env):
    """
    The gymnasium face of a registered differentiable environment, for tools that want one ``gym.Env``.

    :param diff_env_id: Registered differentiable env id
    :param render_mode: ``None`` or ``"rgb_array"`` where the env class renders (``None`` only for MJX and rewarped)
    :param gymnasium_time_limit: The episode length is gymnasium's ``TimeLimit`` (``gymnasium.make`` adds it with the
        registered ``max_episode_steps``, or the one given to ``make``): a :class:`DiffTaskVecEnv` does not truncate
        itself (other DiffVecEnvs keep their own limit too). Set by :func:`~sb3_rpo.register_diff_env` for ids
        registered with a ``max_episode_steps``
    :param kwargs: Task options passed to :func:`make_diff_vec_env`
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, diff_env_id: str, render_mode: str | None = None, gymnasium_time_limit: bool = False, **kwargs: Any):
        if render_mode is not None and render_mode not in diff_env_render_modes(diff_env_id):
            # A TypeError, as from an env without a render_mode argument: SB3's make_vec_env, which asks every env
            # for "rgb_array", then builds it without one.
            raise TypeError(f"{diff_env_id} does not render: render_mode must be None, got {render_mode!r}")
        self.venv = make_diff_vec_env(diff_env_id, n_envs=1, render_mode=render_mode, **kwargs)
        if gymnasium_time_limit and isinstance(self.venv, DiffTaskVecEnv) and "max_episode_steps" not in kwargs:
            self.venv.max_episode_steps = 2**62  # never reached: gymnasium's TimeLimit truncates
        self.observation_space = self.venv.observation_space
        self.action_space = self.venv.action_space
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self.venv.seed(seed)
        return self.venv.reset()[0], {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action_t = self.venv._numpy_actions(np.asarray(action, dtype=np.float64)[None])  # refuses shapes and NaNs as step()
        with th.no_grad():
            _, reward, terminated, truncated, info = self.venv.diff_step(action_t)
        self.venv.report_nonfinite()
        # Return the observation reached, not the one after the automatic reset.
        obs_np = self.venv._to_numpy_obs(info["final_obs"])[0]
        return obs_np, float(reward[0]), bool(terminated[0]), bool(truncated[0]), {}

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; pass render_mode='rgb_array' to gymnasium.make().")
            return None
        return self.venv.get_images()[0]
