"""
The embedded tasks' gymnasium faces in one batch (:class:`BatchedFaces`): the benchmarks' eval env, and the
training env of the model-free methods on those tasks.

``make_vec_env(<id>, n_envs=k, seed=s)`` of a differentiable id is SB3's DummyVecEnv of ``k`` gymnasium faces (each
a one-env DiffVecEnv in gymnasium's ``TimeLimit`` and SB3's ``Monitor``), stepped one env at a time: on Acrobot and
Quadrotor the evaluations took longer than the training. :class:`BatchedFaces` returns the same observations,
rewards, episode ends and infos, bit for bit (tests/test_batched_faces.py), from one batched step:

* the embedded tasks compute each env's row of a batch exactly as a one-env batch does;
* each env keeps its face's random stream: a one-env copy of the task, seeded as the face is, draws the fresh state
  that every step draws for an automatic reset (discarded on the face, whose episodes DummyVecEnv resets), and the
  initial state of every new episode (its reset, with the face's redraws of non-finite observations);
* episodes end at the registered length as gymnasium's ``TimeLimit`` ends them, and the episode returns are summed
  as ``Monitor`` sums them (in Python floats, rounded to 6 decimals).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from sb3_rpo import make_diff_vec_env
from sb3_rpo.envs import EMBEDDED_ENV_IDS


class BatchedFaces(VecEnv):
    """
    ``make_vec_env(env_id, n_envs)`` of an embedded task's gymnasium faces, computed as one batch (seed it with
    :meth:`seed`, as ``make_vec_env(..., seed=s)`` does).

    :param env_id: One of ``sb3_rpo.envs.EMBEDDED_ENV_IDS``
    :param n_envs: Number of environments (of faces)
    """

    def __init__(self, env_id: str, n_envs: int):
        if env_id not in EMBEDDED_ENV_IDS:
            raise ValueError(f"BatchedFaces reproduces the faces of the embedded tasks {EMBEDDED_ENV_IDS}, not {env_id!r}")
        self.batch = make_diff_vec_env(env_id, n_envs=n_envs)
        self.faces = [make_diff_vec_env(env_id, n_envs=1) for _ in range(n_envs)]  # each env's random stream
        self.batch.max_episode_steps = 2**62  # the episodes end here, as gymnasium's TimeLimit ends the faces'
        self.max_episode_steps = gym.spec(env_id).max_episode_steps
        self.batch.sample_initial_state = self._fresh_states  # type: ignore[method-assign]
        super().__init__(n_envs, self.batch.observation_space, self.batch.action_space)
        self.episode_rewards: list[list[float]] = [[] for _ in range(n_envs)]
        self.t_start = time.time()

    def _fresh_states(self, n: int) -> th.Tensor:
        """The batch's draw of fresh states, one per env from its own stream, as each face draws it every step."""
        return th.cat([face.sample_initial_state(1) for face in self.faces])

    def _new_episodes(self, envs: Iterable[int]) -> VecEnvObs:
        """Start new episodes in ``envs`` from their faces' resets; the observations of every env."""
        saved = self.batch.get_state()
        for i in envs:
            self.faces[i].diff_reset()
            self.faces[i].report_nonfinite()  # the face's reset warns of redrawn initial states
            saved["state"][i] = self.faces[i].state[0]
            saved["elapsed_steps"][i] = 0
            saved["episode_returns"][i] = 0.0
            self.episode_rewards[i] = []
        self.batch.set_state({**saved, "needs_reset": False})
        return self.batch.diff_observation().cpu().numpy().astype(self.observation_space.dtype)  # type: ignore[union-attr]

    def reset(self) -> VecEnvObs:
        for face, seed in zip(self.faces, self._seeds, strict=True):
            if seed is not None:
                face.seed(seed)
        self._reset_seeds()
        return self._new_episodes(range(self.num_envs))

    def step_async(self, actions: np.ndarray) -> None:
        self.batch.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        # The batch ends episodes only at a termination or a non-finite value (its own time limit is off).
        obs, rewards, terminated, batch_infos = self.batch.step_wait()
        for i, reward in enumerate(rewards):
            self.episode_rewards[i].append(float(reward))
        truncated = np.array([len(episode) >= self.max_episode_steps for episode in self.episode_rewards])
        dones = terminated | truncated
        time_limit = truncated & ~terminated  # as DummyVecEnv writes it at every step
        infos: list[dict[str, Any]] = [{"TimeLimit.truncated": bool(flag)} for flag in time_limit]
        ended = np.flatnonzero(dones)
        for i in ended:
            episode = self.episode_rewards[i]
            infos[i]["episode"] = {"r": round(sum(episode), 6), "l": len(episode), "t": round(time.time() - self.t_start, 6)}
            infos[i]["terminal_observation"] = batch_infos[i].get("terminal_observation", obs[i])
        if len(ended):
            obs = self._new_episodes(ended)
        return obs, rewards, dones, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self.batch.get_attr(attr_name, indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self.batch.set_attr(attr_name, value, indices)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list:
        return self.batch.env_method(method_name, *method_args, indices=indices, **method_kwargs)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> Sequence[bool]:
        # Monitor's statistics are in the infos, as the faces' Monitor writes them (evaluate_policy reads them).
        return [wrapper_class is Monitor for _ in self._get_indices(indices)]


def faces_vec_env(env_id: str, n_envs: int, seed: int) -> VecEnv:
    """``make_vec_env(env_id, n_envs=n_envs, seed=seed)``, as :class:`BatchedFaces` for an embedded task's id."""
    if env_id not in EMBEDDED_ENV_IDS:
        return make_vec_env(env_id, n_envs=n_envs, seed=seed)
    env = BatchedFaces(env_id, n_envs)
    env.action_space.seed(seed)  # as make_vec_env seeds its first env's, the DummyVecEnv's action space
    env.seed(seed)
    return env


def main() -> None:
    """
    ``python -m benchmarks.batched_faces [--docs]``: on each embedded task, three consecutive evaluations of 10 episodes
    (an untrained RPO policy, the protocol's env and seed) on make_vec_env's faces and on :class:`BatchedFaces`, side
    by side: whether the returns and lengths are identical, and the time of each (``--docs``: the table into
    docs/performance.md).
    """
    import argparse

    from stable_baselines3.common.evaluation import evaluate_policy

    from benchmarks.docs_tables import write_between
    from sb3_rpo import RPO

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--docs", action="store_true", help="write the table into docs/performance.md")
    args = parser.parse_args()
    th.set_num_threads(1)
    lines = ["| task | identical returns and lengths | faces (s) | batched (s) | speed-up |", "|---|---|---:|---:|---:|"]
    for env_id in EMBEDDED_ENV_IDS:
        model = RPO("MlpPolicy", env_id, n_envs=2, seed=0, device="cpu")
        batched = BatchedFaces(env_id, n_envs=10)
        batched.seed(1000)
        results, seconds = [], []
        for env in (make_vec_env(env_id, n_envs=10, seed=1000), batched):
            start = time.perf_counter()
            results.append([evaluate_policy(model, env, 10, return_episode_rewards=True) for _ in range(3)])
            seconds.append(time.perf_counter() - start)
        same = "yes" if results[0] == results[1] else "**no**"
        lines.append(f"| {env_id} | {same} | {seconds[0]:.1f} | {seconds[1]:.1f} | {seconds[0] / seconds[1]:.1f}x |")
        print(lines[-1], flush=True)
    if args.docs:
        write_between("performance.md", "eval env table", "\n".join(lines))


if __name__ == "__main__":
    main()
