"""SB3 parity (issue 13): what a user of SB3's PPO expects from RPO, where SB3 defines the behaviour."""

import csv
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import SubprocVecEnv

from sb3_rpo import RPO, DiffTaskVecEnv, RPOPolicy, make_diff_vec_env, register_diff_env

SMALL = dict(n_envs=4, n_steps=8, policy_kwargs=dict(net_arch=[16]), n_critic_iterations=2, device="cpu")
REPO = Path(__file__).resolve().parents[1]


class MatrixPointMass(DiffTaskVecEnv):
    """Two point masses on a line driven by a (2, 2) action: row i pushes mass i (sum of its entries)."""

    state_dim = 2
    obs_dim = 2
    action_low = [[-1.0, -1.0], [-1.0, -1.0]]
    action_high = [[1.0, 1.0], [1.0, 1.0]]
    max_episode_steps = 20

    def sample_initial_state(self, n):
        return self.uniform(n, [-1.0, -1.0], [1.0, 1.0])

    def dynamics(self, state, action):
        assert action.shape[1:] == (2, 2)
        return state + 0.1 * action.sum(-1)

    def reward(self, state, action, next_state):
        return -(next_state**2).sum(-1)

    def observation(self, state):
        return state


def test_policy_save_load_round_trip(tmp_path):
    for dtype in (th.float32, th.float64):
        env = make_diff_vec_env("DiffPendulum-v0", n_envs=4, seed=0, dtype=dtype)
        model = RPO("MlpPolicy", env, seed=0, **SMALL).learn(64)
        model.policy.save(tmp_path / "policy.pth")
        loaded = RPOPolicy.load(tmp_path / "policy.pth", device="cpu")
        assert loaded.dtype == dtype
        sa, sb = model.policy.state_dict(), loaded.state_dict()
        assert sa.keys() == sb.keys() and all(th.equal(sa[k], sb[k]) for k in sa)
        obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
        np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])


def test_box_action_space_of_any_shape():
    env = MatrixPointMass(num_envs=4, seed=0)
    assert env.action_space.shape == (2, 2)
    model = RPO("MlpPolicy", env, seed=0, **SMALL)
    model.learn(4 * 8 * 2)
    action, _ = model.predict(env.reset(), deterministic=True)
    assert action.shape == (4, 2, 2) and all(env.action_space.contains(a) for a in action)
    single, _ = model.predict(env.reset()[0])
    assert single.shape == (2, 2)
    mean, _ = evaluate_policy(model, env, n_eval_episodes=4)
    assert np.isfinite(mean)
    # The gymnasium face takes the Box's shape too.
    register_diff_env("MatrixPointMass-v0", MatrixPointMass, max_episode_steps=20)
    single_env = gym.make("MatrixPointMass-v0")
    single_env.reset(seed=0)
    assert single_env.step(single_env.action_space.sample())[0].shape == (2,)


def test_predict_returns_the_action_space_dtype_on_a_float64_env():
    env = make_diff_vec_env("DiffPendulum-v0", n_envs=2, seed=0, dtype=th.float64)
    model = RPO("MlpPolicy", env, seed=0, **SMALL)
    assert model.policy.dtype == th.float64
    obs = env.reset()
    for deterministic in (True, False):
        actions, _ = model.predict(obs, deterministic=deterministic)
        assert actions.dtype == env.action_space.dtype == np.float32
        assert all(env.action_space.contains(a) for a in actions)
    # Saturated actions (tanh = +-1 in float64) stay inside the float32 bounds.
    with th.no_grad():
        model.policy.actor.mu.bias.fill_(1e3)
    actions, _ = model.predict(obs, deterministic=True)
    assert all(env.action_space.contains(a) for a in actions)


def test_set_env_adapts_the_policy_to_the_env_dtype():
    model = RPO("MlpPolicy", "DiffPendulum-v0", seed=0, ent_coef="auto_0.1", **SMALL).learn(64)
    assert model.policy.dtype == th.float32
    model.set_env(make_diff_vec_env("DiffPendulum-v0", n_envs=4, seed=1, dtype=th.float64))
    assert model.policy.dtype == th.float64 and model.log_ent_coef.dtype == th.float64
    model.learn(64, reset_num_timesteps=False)
    assert all(p.dtype == th.float64 and th.isfinite(p).all() for p in model.policy.parameters())
    state = model.policy.actor.optimizer.state_dict()["state"]
    assert all(s["exp_avg"].dtype == th.float64 for s in state.values())
    model.set_env(make_diff_vec_env("DiffPendulum-v0", n_envs=4, seed=1))  # and back
    model.learn(64, reset_num_timesteps=False)
    assert model.policy.dtype == th.float32


def test_callback_locals_hold_ppos_names():
    seen = []

    class Spy(BaseCallback):
        def _on_step(self) -> bool:
            seen.append(
                {
                    key: self.locals[key]
                    for key in ("actions", "clipped_actions", "obs_tensor", "n_steps", "values", "log_probs", "rollout_buffer")
                }
            )
            return True

    env = make_diff_vec_env("DiffPendulum-v0", n_envs=4, seed=0)
    model = RPO("MlpPolicy", env, seed=0, **SMALL)
    model.learn(4 * 8, callback=Spy())
    assert [s["n_steps"] for s in seen] == list(range(8))
    assert all(s["rollout_buffer"] is model.rollout_buffer for s in seen)
    buffer = model.rollout_buffer
    for k, s in enumerate(seen):
        assert isinstance(s["actions"], np.ndarray) and s["actions"].shape == (4, 1)
        np.testing.assert_array_equal(s["actions"], buffer.actions[k].numpy())  # pre-squash Gaussian sample
        assert s["clipped_actions"].dtype == np.float32 and all(env.action_space.contains(a) for a in s["clipped_actions"])
        # Pendulum's bounds +-2: low + (tanh + 1) (high - low) / 2 in float32, whose rounding near 1 is ~2e-7 absolute
        np.testing.assert_allclose(s["clipped_actions"], 2.0 * np.tanh(s["actions"]), rtol=1e-6, atol=1e-6)
        assert th.equal(s["obs_tensor"], buffer.raw_observations[k])
        assert s["values"].shape == (4, 1) and s["log_probs"].shape == (4,)
    # The critics' values of the window's observations (before the fit), as PPO's `values` are.
    assert th.isfinite(seen[0]["values"]).all()


def test_std_and_explained_variance_logged_and_last_iteration_dumped(tmp_path):
    model = RPO("MlpPolicy", "DiffPendulum-v0", seed=0, **SMALL)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(4 * 8 * 3)
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert len(rows) == 4  # one per iteration (before its train()) and the last iteration's train()
    last = rows[-1]
    assert int(last["train/n_updates"]) == 3 and last["time/policy_epochs_s"] != ""
    _, std = model.policy.actor(model.rollout_buffer.observations.flatten(0, 1))  # after the last update
    assert float(last["train/std"]) == pytest.approx(std.mean().item(), rel=1e-6)
    assert all(np.isfinite(float(row["train/explained_variance"])) for row in rows[1:])
    assert float(last["train/explained_variance"]) <= 1.0


def _subprocess_env(env_id: str, start_method: str) -> SubprocVecEnv:
    return make_vec_env(env_id, n_envs=1, seed=0, vec_env_cls=SubprocVecEnv, vec_env_kwargs=dict(start_method=start_method))


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_subprocess_workers_with_gymnasiums_module_form(start_method):
    if start_method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{start_method} is not available here")
    # The workers start a fresh interpreter (they inherit nothing): gymnasium's "module:id" imports sb3_rpo there.
    vec_env = _subprocess_env("sb3_rpo:DiffPendulum-v0", start_method)
    try:
        assert vec_env.reset().shape == (1, 3)
        obs, rewards, _, _ = vec_env.step(np.zeros((1, 1), dtype=np.float32))
        assert obs.shape == (1, 3) and rewards.shape == (1,)
        assert vec_env.get_attr("spec")[0].id == "DiffPendulum-v0"
    finally:
        vec_env.close()


def test_subprocess_workers_do_not_inherit_the_registration():
    # Why the module form is needed: the bare id is unknown in a worker that never imported sb3_rpo.
    with pytest.raises((EOFError, ConnectionError, gym.error.Error)):
        _subprocess_env("DiffPendulum-v0", "spawn").close()


def test_gymnasium_module_form_imports_the_package():
    code = "import gymnasium as gym; env = gym.make('sb3_rpo:DiffPendulum-v0'); print(env.reset(seed=0)[0].shape)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert result.returncode == 0, result.stderr
    assert "(3,)" in result.stdout


# ---------------------------------------------------------------------- the zoo's first hour
@pytest.mark.parametrize(
    "argv, added",
    [
        (["--algo", "rpo", "--env", "DiffPendulum-v0"], True),
        (["--algo", "shac", "--device", "cpu"], True),
        (["--algo", "rpo", "--num-threads", "2"], False),  # the user's choice stays
        (["--algo", "ppo", "--env", "Pendulum-v1"], False),  # rl-zoo3's own algorithms unchanged
    ],
)
def test_zoo_uses_one_thread_for_differentiable_algorithms_on_cpu(monkeypatch, argv, added):
    pytest.importorskip("rl_zoo3")
    from sb3_rpo.zoo import cli

    monkeypatch.setattr(sys, "argv", ["sb3-rpo-zoo train", *argv])
    cli._one_thread_on_cpu()
    assert sys.argv[1:] == ([*argv, "--num-threads", "1"] if added else argv)


def test_zoo_help_without_the_zoo_extra(tmp_path):
    # Simulate a machine without rl-zoo3: a package of that name that fails as a missing module does.
    (tmp_path / "rl_zoo3").mkdir()
    (tmp_path / "rl_zoo3" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'rl_zoo3'\", name='rl_zoo3')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    result = subprocess.run([sys.executable, "-m", "sb3_rpo.zoo", "-h"], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode != 0
    assert 'pip install "sb3-rpo[zoo]"' in result.stderr and "rl_zoo3 is missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_saved_figures_keep_the_axis_labels(tmp_path, monkeypatch):
    pytest.importorskip("rl_zoo3")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from PIL import Image

    from sb3_rpo.zoo.cli import _saving_figures

    def plot() -> None:  # a figure whose y-axis label lies left of the canvas, as all_plots' does
        fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
        ax.plot([0, 1], [0, 1e6])
        ax.set_ylabel("Score")
        fig.subplots_adjust(left=0.02)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["all_plots", "--png", "figure.png"])
    plt.close("all")
    _saving_figures(plot, "--png")()
    plt.close("all")
    width, _ = Image.open(tmp_path / "figure.png").size
    assert width > 400  # grown to hold the label and the tick labels (the canvas alone is 400 px wide)
