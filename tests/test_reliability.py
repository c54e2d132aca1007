"""Issue 12, nothing lost and nothing silent: atomic saves, exact resume, guarded observations and actions, checked task
outputs, validated arguments, the gradient path, host syncs, episode lengths. Each test injects the fault."""

import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from torch.utils._python_dispatch import TorchDispatchMode

from sb3_rpo import RPO, SHAC, CheckpointAfterUpdateCallback, make_diff_vec_env, register_diff_env
from sb3_rpo.envs.pendulum import DiffPendulum

TINY = dict(n_steps=4, policy_kwargs=dict(net_arch=[8]), n_critic_iterations=2, device="cpu")
ROOT = Path(__file__).resolve().parents[1]


def state_dicts_equal(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict):
            if not (isinstance(y, dict) and state_dicts_equal(x, y)):
                return False
        elif isinstance(x, th.Tensor):
            if not (isinstance(y, th.Tensor) and x.dtype == y.dtype and th.equal(x, y)):
                return False
        elif isinstance(x, (list, tuple)):
            if len(x) != len(y) or not all(state_dicts_equal({0: u}, {0: v}) for u, v in zip(x, y, strict=True)):
                return False
        elif x != y:
            return False
    return True


def run_python(code: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


# ---------------------------------------------------------------------------------------- 1. atomic saves
def test_killed_saves_always_leave_a_loadable_file(tmp_path):
    """SIGKILL a process that saves over the same path again and again; every time, the file left loads."""
    path = tmp_path / "model.zip"
    model = RPO("MlpPolicy", "DiffPendulum-v0", n_envs=2, seed=0, **TINY)
    model.save(path)
    rng = random.Random(0)
    partial_files_seen, generations = 0, set()
    for kill in range(12):
        pid = os.fork()
        if pid == 0:  # the child saves forever, each file marked with its generation
            try:
                for i in range(10**6):
                    model.num_timesteps = 1000 * (kill + 1) + i
                    model.save(path)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.02, 0.12))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        partial_files_seen += len(list(tmp_path.glob(".model.zip.*.tmp")))
        for partial in tmp_path.glob(".model.zip.*.tmp"):
            partial.unlink()  # what a killed save leaves behind; never the target
        loaded = RPO.load(path, device="cpu")
        generations.add(loaded.num_timesteps)
    assert partial_files_seen > 0  # kills did land in the middle of a write
    assert len(generations) > 1  # and between completed saves


def test_save_keeps_sb3s_path_rules(tmp_path):
    model = RPO("MlpPolicy", "DiffPendulum-v0", n_envs=2, seed=0, **TINY)
    model.save(tmp_path / "sub" / "m")  # no suffix: .zip is added; the folder is created
    assert (tmp_path / "sub" / "m.zip").is_file() and list((tmp_path / "sub").iterdir()) == [tmp_path / "sub" / "m.zip"]
    RPO.load(tmp_path / "sub" / "m", device="cpu")


# ---------------------------------------------------------------------------------------- 2. exact resume
def test_resume_in_a_new_process_is_bit_exact(tmp_path):
    """
    A run of 40 iterations checkpointed after its 20th update, loaded in a new process and continued for the 20 left
    (reset_num_timesteps=False) ends bit for bit where the uninterrupted run ends, learning-rate schedule included.
    """
    kwargs = dict(n_steps=4, batch_size=4, ent_coef="auto_0.1", policy_kwargs=dict(net_arch=[8]), n_critic_iterations=2)
    make_env = lambda seed: make_diff_vec_env("DiffPendulum-v0", n_envs=2, seed=seed, max_episode_steps=30)  # noqa: E731
    checkpoints = CheckpointAfterUpdateCallback(save_freq=20 * 4, save_path=str(tmp_path))  # every 20 windows of 4 steps
    straight = RPO("MlpPolicy", make_env(0), seed=0, device="cpu", **kwargs)
    assert callable(straight.learning_rate)  # the default: a linear decay, continued exactly by the resumed run
    straight.learn(40 * 8, callback=checkpoints)
    # A new process, a new env with another seed: load() must put back the generators and the env's state.
    run_python(
        """
        import torch as th
        th.set_num_threads(1)
        from sb3_rpo import RPO, make_diff_vec_env
        env = make_diff_vec_env("DiffPendulum-v0", n_envs=2, seed=123, max_episode_steps=30)
        model = RPO.load("rl_model_160_steps", env=env, device="cpu")
        assert model._n_updates == 20, model._n_updates
        model.learn(40 * 8 - model.num_timesteps, reset_num_timesteps=False).save("resumed")
        """,
        tmp_path,
    )
    resumed = RPO.load(tmp_path / "resumed", env=make_env(7), device="cpu")
    assert resumed.num_timesteps == straight.num_timesteps == 40 * 8 and resumed._n_updates == 40
    for name in ("policy", "policy.actor.optimizer", "policy.critic.optimizer", "ent_coef_optimizer"):
        a, b = (m.get_parameters()[name] for m in (straight, resumed))
        assert state_dicts_equal(a, b), name  # parameters, target critics, observation statistics, Adam moments
    assert th.equal(straight.log_ent_coef, resumed.log_ent_coef)
    assert state_dicts_equal(straight.env.get_state(), resumed.env.get_state())  # states, counters, generator
    assert th.equal(straight._last_obs_t, resumed._last_obs_t)
    assert [e["r"] for e in straight.ep_info_buffer] == [e["r"] for e in resumed.ep_info_buffer]


@pytest.mark.parametrize("env_id", ["DiffCartPoleSwingUp-v0", "MujocoFDHopper-v5"])
def test_env_state_round_trip_continues_identically(env_id):
    """An env given another's state continues exactly as that one does: steps, rewards, resets (short episodes)."""
    if env_id.startswith("Mujoco"):
        pytest.importorskip("mujoco")
    a, b = (make_diff_vec_env(env_id, n_envs=3, seed=seed, max_episode_steps=4) for seed in (0, 1))
    a.diff_reset(), b.diff_reset()
    actions = th.rand(12, 3, *a.action_space.shape, generator=th.Generator().manual_seed(0)) * 0.6 - 0.3
    for action in actions[:3]:
        a.diff_step(action)
    b.set_state(a.get_state())
    for action in actions[3:]:  # across two automatic resets
        out_a, out_b = a.diff_step(action), b.diff_step(action)
        for x, y in zip(out_a[:4], out_b[:4], strict=True):
            assert th.equal(x, y)
    assert state_dicts_equal(a.get_state(), b.get_state())
    with pytest.raises(ValueError, match="the saved env state is of num_envs 3, this env's is 2"):
        make_diff_vec_env(env_id, n_envs=2).set_state(a.get_state())


def test_load_does_not_reseed_over_the_saved_generators(tmp_path):
    model = RPO("MlpPolicy", "DiffPendulum-v0", n_envs=2, seed=0, **TINY).learn(16)
    model.save(tmp_path / "m")
    expected_env, expected_torch = model.env.get_state(), th.get_rng_state()
    th.manual_seed(99)
    loaded = RPO.load(tmp_path / "m", env=make_diff_vec_env("DiffPendulum-v0", n_envs=2, seed=5), device="cpu")
    assert loaded.seed == 0  # SB3's load reseeded with it...
    assert th.equal(th.get_rng_state(), expected_torch)  # ...and the saved states were put back over it
    assert state_dicts_equal(loaded.env.get_state(), expected_env)


def test_state_of_another_env_is_not_restored_and_says_why(tmp_path):
    RPO("MlpPolicy", "DiffPendulum-v0", n_envs=2, seed=0, **TINY).learn(16).save(tmp_path / "m")
    with pytest.warns(UserWarning, match=r"environment's saved state was not restored \(the saved env state is of num_envs 2"):
        loaded = RPO.load(tmp_path / "m", env=make_diff_vec_env("DiffPendulum-v0", n_envs=3), device="cpu")
    assert loaded._last_obs is None and loaded._last_obs_t is None  # learn() starts new episodes


def test_load_names_the_algorithm_of_another_file(tmp_path):
    PPO("MlpPolicy", make_diff_vec_env("DiffPendulum-v0", n_envs=2), n_steps=8, batch_size=8).save(tmp_path / "ppo")
    with pytest.raises(
        ValueError, match=r"holds a PPO model \(its policy is .*ActorCriticPolicy\), not a RPO model: load it with PPO"
    ):
        RPO.load(tmp_path / "ppo")
    SHAC("MlpPolicy", "DiffPendulum-v0", n_envs=2, **TINY).save(tmp_path / "shac")
    with pytest.raises(ValueError, match=r"holds a SHAC model, not a RPO model: load it with SHAC.load\(\)"):
        RPO.load(tmp_path / "shac")
    RPO("MlpPolicy", "DiffPendulum-v0", n_envs=2, **TINY).save(tmp_path / "rpo")
    with pytest.raises(ValueError, match="holds a RPO model, not a SHAC model"):
        SHAC.load(tmp_path / "rpo")


# ---------------------------------------------------------------------------------------- 4. non-finite observations
class InfObsPendulum(DiffPendulum):
    """The observation of env 1 is +inf, from a finite state, at step 5 of every 40 (a 1/distance feature at 0)."""

    def dynamics(self, state, action):
        self.calls = getattr(self, "calls", 0) + 1
        self.pending = self.calls % 40 == 5
        return super().dynamics(state, action)

    def observation(self, state):
        obs = super().observation(state)
        if getattr(self, "pending", False):
            self.pending = False
            obs = th.where(th.arange(obs.shape[0]).unsqueeze(-1) == 1, th.inf, obs)
        return obs


register_diff_env("InfObsPendulum-v0", InfObsPendulum, register_gym=False)


def test_nonfinite_observation_is_reset_and_never_reaches_the_policy():
    model = RPO("MlpPolicy", "InfObsPendulum-v0", n_envs=4, seed=0, **{**TINY, "n_steps": 8})
    with pytest.warns(UserWarning, match=r"1 env\(s\) got a non-finite observation\(\) from a finite state and were reset"):
        model.learn(4 * 8 * 10)  # today: "diff_step received non-finite actions"
    env = model.get_env()
    assert env.nonfinite_totals["observation"] == 2 and env.nonfinite_count == 2  # steps 5 and 45 of 80
    assert model.skipped_updates == 0
    assert all(th.isfinite(p).all() for p in model.policy.state_dict().values())  # incl. the observation statistics


def test_nonfinite_observation_is_reported_on_both_faces():
    env = InfObsPendulum(num_envs=3, seed=0)
    env.reset()
    env.calls = 4
    with pytest.warns(UserWarning, match="non-finite observation"):
        obs, _, dones, infos = env.step(np.zeros((3, 1), np.float32))
    assert dones.tolist() == [False, True, False] and np.isfinite(obs).all()
    assert infos[1]["nonfinite_state"] and np.isfinite(infos[1]["terminal_observation"]).all()


class InfAtResetPendulum(DiffPendulum):
    """observation() is +inf for initial angles above 2 (about a fifth of them), or always."""

    always = False

    def observation(self, state):
        obs = super().observation(state)
        bad = (state[:, 0] > 2.0) | self.always
        return th.where(bad.unsqueeze(-1), th.inf, obs)


def test_nonfinite_reset_observation_is_redrawn_or_named():
    env = InfAtResetPendulum(num_envs=16, seed=0)
    obs = env.diff_reset()
    assert bool(th.isfinite(obs).all())
    with pytest.warns(UserWarning, match=r"initial state\(s\) had a non-finite observation\(\)"):
        assert env.report_nonfinite()["reset_observation"] > 0
    env.always = True
    with pytest.raises(RuntimeError, match=r"InfAtResetPendulum.observation\(\) stays non-finite .* after 10 draws"):
        env.diff_reset()


def test_nonfinite_actions_reset_their_env_on_the_torch_face_and_are_refused_on_the_numpy_face():
    env = make_diff_vec_env("DiffPendulum-v0", n_envs=4, seed=0)
    env.diff_reset()
    _, _, terminated, _, _ = env.diff_step(th.tensor([[0.0], [1.0], [th.nan], [th.inf]]))
    assert terminated.tolist() == [False, False, True, True] and bool(th.isfinite(env.state).all())
    with pytest.warns(UserWarning, match=r"2 env\(s\) received non-finite actions \(NaN or inf\) and were reset"):
        assert env.report_nonfinite()["action"] == 2
    with pytest.raises(ValueError, match=r"step\(\) received non-finite actions \(NaN or inf\) for envs \[2\]"):
        env.step(np.array([[0.0], [1.0], [np.nan], [0.0]], np.float32))


# ---------------------------------------------------------------------------------------- 5. MuJoCo's silent recovery
def test_mujoco_silent_reset_is_a_nonfinite_state(tmp_path, monkeypatch):
    pytest.importorskip("mujoco")
    monkeypatch.chdir(tmp_path)  # MuJoCo appends its warnings to ./MUJOCO_LOG.TXT
    env = make_diff_vec_env("MujocoFDInvertedPendulum-v5", n_envs=2, seed=0)
    env.diff_reset()
    state = env.state.clone()
    state[0, env.nq :] = 1e12  # MuJoCo: "Nan, Inf or huge value in QVEL", then it resets its data to qpos0
    env.state = state
    _, _, terminated, _, info = env.diff_step(th.zeros(2, env.action_space.shape[0]))
    assert info["nonfinite"].tolist() == [True, False] and terminated[0]
    with pytest.warns(UserWarning, match=r"1 env\(s\) reached a non-finite state"):
        env.report_nonfinite()


# ---------------------------------------------------------------------------------------- 6. the gradient path
class DetachedRewardPendulum(DiffPendulum):
    def reward(self, state, action, next_state):
        return super().reward(state, action, next_state).detach()  # e.g. computed with .item() or numpy


class NoGraphPendulum(DiffPendulum):
    def dynamics(self, state, action):
        return super().dynamics(state, action).detach()

    def reward(self, state, action, next_state):
        return super().reward(state, action, next_state).detach()


class ZeroGradientPendulum(NoGraphPendulum):
    def reward(self, state, action, next_state):
        return super().reward(state, action, next_state) + 0.0 * action.sum(-1)


@pytest.mark.parametrize(
    "env_class, message",
    [
        (DetachedRewardPendulum, r"rewards of DetachedRewardPendulum have no autograd path to the actions.*\.item\(\), numpy"),
        (ZeroGradientPendulum, r"every action-gradient of the first window is exactly zero.*\.detach\(\)"),
    ],
)
def test_rewards_without_gradient_warn_once(env_class, message):
    model = RPO("MlpPolicy", env_class(num_envs=2, seed=0), seed=0, **TINY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.learn(2 * 4 * 3)
    matching = [w for w in caught if "RPO:" in str(w.message)]
    assert len(matching) == 1, [str(w.message) for w in caught]
    assert re.search(message, str(matching[0].message))


def test_env_without_any_gradient_path_is_a_clear_error():
    model = RPO("MlpPolicy", NoGraphPendulum(num_envs=2, seed=0), seed=0, **TINY)
    with pytest.raises(RuntimeError, match=r"NoGraphPendulum returned rewards and observations with no autograd graph"):
        model.learn(2 * 4)  # today: torch's "element 0 of tensors does not require grad"


# ---------------------------------------------------------------------------------------- 7. what a task returns
class WrongObsSize(DiffPendulum):
    def observation(self, state):
        return super().observation(state)[:, :2]


class ColumnReward(DiffPendulum):
    def reward(self, state, action, next_state):
        return super().reward(state, action, next_state).unsqueeze(-1)


class FloatTerminated(DiffPendulum):
    def terminated(self, state):
        return (state[:, 1] > 100.0).float()


class Float64Constant(DiffPendulum):
    def dynamics(self, state, action):
        return super().dynamics(state, action) * th.ones(1, dtype=th.float64)  # a float64 constant: promotes


@pytest.mark.parametrize(
    "env_class, error, message",
    [
        (WrongObsSize, ValueError, r"WrongObsSize.observation\(\) returned shape \(3, 2\), expected \(3, 3\)"),
        (ColumnReward, ValueError, r"ColumnReward.reward\(\) returned shape \(3, 1\), expected \(3,\), one reward per env"),
        (FloatTerminated, TypeError, r"FloatTerminated.terminated\(\) returned dtype torch.float32, expected torch.bool"),
        (
            Float64Constant,
            TypeError,
            r"Float64Constant.dynamics\(\) returned dtype torch.float64, expected torch.float32 \(a float64",
        ),
    ],
)
def test_task_outputs_are_checked_on_the_first_reset_and_step(env_class, error, message):
    env = env_class(num_envs=3, seed=0)
    with pytest.raises(error, match=message):
        env.diff_reset()
        env.diff_step(th.zeros(3, 1))


# ---------------------------------------------------------------------------------------- 8. numpy actions
def test_numpy_face_refuses_actions_of_the_wrong_shape():
    env = make_diff_vec_env("DiffReacher-v0", n_envs=3, seed=0)  # two-dimensional actions
    env.reset()
    for bad in (np.zeros((2, 3), np.float32), np.zeros(6, np.float32), np.zeros((3, 2, 1), np.float32)):
        with pytest.raises(ValueError, match=r"step\(\) expects actions of shape \(3, 2\) \(n_envs, \*action_space.shape\)"):
            env.step(bad)
    env.step(np.zeros((3, 2), np.float32))
    pendulum = make_diff_vec_env("DiffPendulum-v0", n_envs=3, seed=0)  # one-dimensional: (n_envs,) too, as DummyVecEnv
    pendulum.reset()
    pendulum.step(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"got \(1, 3\)"):
        pendulum.step(np.zeros((1, 3), np.float32))


# ---------------------------------------------------------------------------------------- 9. episode lengths
register_diff_env("ShortPendulum-v0", DiffPendulum, max_episode_steps=7)


def test_registered_and_gym_make_episode_lengths_are_honoured():
    assert make_diff_vec_env("ShortPendulum-v0").max_episode_steps == 7  # today: the class's 200
    assert make_diff_vec_env("ShortPendulum-v0", max_episode_steps=3).max_episode_steps == 3
    for kwargs, length in (({}, 7), ({"max_episode_steps": 12}, 12)):  # today: 7 and 7 (the inner limit)
        env = gym.make("ShortPendulum-v0", **kwargs)
        env.reset(seed=0)
        steps, truncated = 0, False
        while not truncated:
            _, _, _, truncated, _ = env.step(np.zeros(1, np.float32))
            steps += 1
        assert steps == length


# ---------------------------------------------------------------------------------------- 10. arguments
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_steps=0), "n_steps must be an integer >= 1, got 0"),
        (dict(batch_size=0), "batch_size must be an integer >= 1, or None for the whole window, got 0"),
        (dict(n_critic_batches=0), "n_critic_batches must be an integer >= 1, got 0"),
        (dict(n_epochs=0), "n_epochs must be an integer >= 1, got 0"),
        (dict(clip_low=-0.1), r"clip_low must be in \[0, 1\) .* use clip_low=None for no lower bound"),
        (dict(clip_low=1.5), r"clip_low must be in \[0, 1\)"),
        (dict(clip_high=-0.2), "clip_high must be >= 0, got -0.2; use clip_high=None for no upper bound"),
        (dict(gamma=1.1), r"gamma must be in \[0, 1\], got 1.1"),
        (dict(gae_lambda=-0.5), r"gae_lambda must be in \[0, 1\]"),
        (dict(tau=0.0), r"tau must be in \(0, 1\]"),
        (dict(kl_coef=-1.0), "kl_coef must be >= 0"),
        (dict(max_grad_norm=-1.0), r"max_grad_norm must be > 0 \(use float\('inf'\) for no clipping\)"),
        (dict(ent_coef="automatic"), "ent_coef must be a float, 'auto' or 'auto_<init>'.*got 'automatic'"),
        (dict(ent_coef="auto_x"), "ent_coef must be a float, 'auto' or 'auto_<init>'"),
        (dict(ent_coef="auto_-1"), "with an initial value > 0"),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RPO("MlpPolicy", "DiffPendulum-v0", n_envs=2, **{**TINY, **kwargs})


def test_clip_none_still_means_no_bound_and_a_batch_that_does_not_divide_warns():
    RPO("MlpPolicy", "DiffPendulum-v0", n_envs=2, clip_low=None, clip_high=None, **TINY)
    with pytest.warns(UserWarning, match=r"batch_size=3 does not divide the window \(n_steps \* n_envs = 4 x 2 = 8\)"):
        RPO("MlpPolicy", "DiffPendulum-v0", n_envs=2, batch_size=3, **TINY)


# ---------------------------------------------------------------------------------------- 11. host syncs
SYNC_OPS = {"aten._local_scalar_dense", "aten.item", "aten.is_nonzero", "aten.equal"}


class CountSyncs(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func.overloadpacket) in SYNC_OPS:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("env_id", ["DiffPendulum-v0", "InfObsPendulum-v0"])
def test_host_syncs_per_window_do_not_grow_with_its_length(env_id):
    counts = {}
    for n_steps in (4, 16):
        model = RPO("MlpPolicy", env_id, n_envs=2, seed=0, **{**TINY, "n_steps": n_steps})
        model._setup_learn(10**6)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # InfObsPendulum's resets
            model.rollout_window(model.env)  # the first window checks the gradient path once
            with CountSyncs() as mode:
                model.rollout_window(model.env)
        counts[n_steps] = mode.count
    assert counts[4] == counts[16] <= 2, counts


# ---------------------------------------------------------------------------------------- 3. zoo checkpoints
def test_zoo_checkpoints_hold_the_update_of_the_window_they_are_named_after(tmp_path):
    import argparse

    from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback

    from sb3_rpo.zoo import CheckpointAfterUpdateCallback, ZooExperimentManager

    manager = ZooExperimentManager(argparse.Namespace(), "rpo", "DiffPendulum-v0", str(tmp_path), device="cpu", save_freq=16)
    manager.n_envs, manager.save_path = 2, str(tmp_path)
    manager.create_callbacks()
    (checkpoint,) = [c for c in manager.callbacks if isinstance(c, CheckpointCallback)]
    assert type(checkpoint) is CheckpointAfterUpdateCallback and checkpoint.save_freq == 8  # per env, as rl-zoo3's

    updates = {}

    class AfterEachUpdate(BaseCallback):  # the parameters after n updates, at the start of window n + 1
        def _on_rollout_start(self) -> None:
            updates[self.model.num_timesteps] = {k: v.clone() for k, v in self.model.policy.state_dict().items()}

        def _on_training_end(self) -> None:
            self._on_rollout_start()

        def _on_step(self) -> bool:
            return True

    model = RPO("MlpPolicy", "DiffPendulum-v0", n_envs=2, seed=0, **TINY)  # windows of 8 steps: a save every 2 windows
    model.learn(6 * 8, callback=[checkpoint, AfterEachUpdate()])
    for steps in (16, 32, 48):
        saved = RPO.load(tmp_path / f"rl_model_{steps}_steps.zip", device="cpu")
        assert saved.num_timesteps == steps and saved._n_updates == steps // 8  # SB3's callback: one update fewer
        assert state_dicts_equal(saved.policy.state_dict(), updates[steps])
    assert sorted(p.name for p in tmp_path.glob("rl_model_*")) == [f"rl_model_{s}_steps.zip" for s in (16, 32, 48)]
