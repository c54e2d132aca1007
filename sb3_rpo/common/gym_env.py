"""A single gymnasium environment backed by a one-env :class:`DiffVecEnv` (numpy in, numpy out)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch as th

from sb3_rpo.common.registry import make_diff_vec_env


class DiffGymEnv(gym.Env):
    """
    The gymnasium face of a registered differentiable environment, for tools that want one ``gym.Env``.

    :param diff_env_id: Registered differentiable env id
    :param render_mode: ``None`` or ``"rgb_array"``
    :param kwargs: Task options passed to :func:`make_diff_vec_env`
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, diff_env_id: str, render_mode: str | None = None, **kwargs: Any):
        self.venv = make_diff_vec_env(diff_env_id, n_envs=1, render_mode=render_mode, **kwargs)
        self.observation_space = self.venv.observation_space
        self.action_space = self.venv.action_space
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self.venv.seed(seed)
        return self.venv.reset()[0], {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action_t = th.as_tensor(np.asarray(action, dtype=np.float64), dtype=self.venv.dtype, device=self.venv.device)
        with th.no_grad():
            _, reward, terminated, truncated, info = self.venv.diff_step(action_t.reshape(1, *self.action_space.shape))
        # Return the observation reached, not the one after the automatic reset.
        obs_np = self.venv._to_numpy_obs(info["final_obs"])[0]
        return obs_np, float(reward[0]), bool(terminated[0]), bool(truncated[0]), {}

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; pass render_mode='rgb_array' to gymnasium.make().")
            return None
        return self.venv.get_images()[0]
