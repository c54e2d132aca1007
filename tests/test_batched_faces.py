"""The embedded tasks' batched faces equal SB3's make_vec_env of the gymnasium faces, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from benchmarks.batched_faces import BatchedFaces
from benchmarks.methods import make_eval_env
from benchmarks.studies._tasks import EMBEDDED, MUJOCO
from sb3_rpo import RPO


def faces_and_batch(env_id: str, n_envs: int, seed: int) -> tuple:
    batch = BatchedFaces(env_id, n_envs)
    batch.seed(seed)
    return make_vec_env(env_id, n_envs=n_envs, seed=seed), batch


# Reacher's episodes end at the time limit; Quadrotor's (an untrained policy) by termination, two per env (new
# episodes mid-evaluation), in consecutive evaluations (each env's random stream continues across them).
@pytest.mark.parametrize("env_id, per_env, n_evaluations", [("DiffReacher-v0", 1, 1), ("DiffQuadrotor-v0", 2, 2)])
def test_evaluations_equal_those_on_the_gymnasium_faces(env_id, per_env, n_evaluations):
    """The same episode returns and lengths as on make_vec_env's DummyVecEnv of the faces."""
    model = RPO("MlpPolicy", env_id, n_envs=2, seed=0, device="cpu")
    faces, batch = faces_and_batch(env_id, 2, seed=1003)

    def evaluate(env):
        return evaluate_policy(model, env, n_eval_episodes=2 * per_env, deterministic=True, return_episode_rewards=True)

    for _ in range(n_evaluations):
        expected = evaluate(faces)
        assert evaluate(batch) == expected
    if env_id == "DiffQuadrotor-v0":
        assert min(expected[1]) < 300  # terminations, not only the time limit


def test_every_step_equals_the_faces_step():
    """Observations, rewards, episode ends and the infos that SB3 reads, step by step across several episode ends."""
    model = RPO("MlpPolicy", "DiffQuadrotor-v0", n_envs=2, seed=0, device="cpu")
    faces, batch = faces_and_batch("DiffQuadrotor-v0", 3, seed=7)
    obs = faces.reset()
    np.testing.assert_array_equal(batch.reset(), obs)
    ends = 0
    for _ in range(60):
        actions, _ = model.predict(obs, deterministic=True)
        obs, rewards, dones, infos = faces.step(actions)
        batch_obs, batch_rewards, batch_dones, batch_infos = batch.step(actions)
        for mine, theirs in ((batch_obs, obs), (batch_rewards, rewards), (batch_dones, dones)):
            np.testing.assert_array_equal(mine, theirs)
            assert mine.dtype == theirs.dtype
        for mine, theirs in zip(batch_infos, infos, strict=True):
            assert mine.keys() == theirs.keys()
            if "episode" in theirs:
                ends += 1
                assert (mine["episode"]["r"], mine["episode"]["l"]) == (theirs["episode"]["r"], theirs["episode"]["l"])
                np.testing.assert_array_equal(mine["terminal_observation"], theirs["terminal_observation"])
                assert mine["TimeLimit.truncated"] == theirs["TimeLimit.truncated"]
    assert ends >= 3


def test_the_protocol_batches_the_embedded_tasks_only():
    assert all(isinstance(make_eval_env(task, seed=0), BatchedFaces) for task in EMBEDDED if task.eval_id != "Pendulum-v1")
    assert not isinstance(make_eval_env(MUJOCO[0], seed=0), BatchedFaces)  # gymnasium's own MuJoCo env
    with pytest.raises(ValueError, match="embedded tasks"):
        BatchedFaces("Pendulum-v1", 2)
