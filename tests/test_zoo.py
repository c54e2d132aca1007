"""rl-zoo3 command line of RPO and SHAC: training, enjoy, Optuna tuning on shared storages, hyperparameter files.

The end-to-end tests run the real CLI (``python -m sb3_rpo.zoo``) in subprocesses with tiny budgets,
and start concurrent processes together where they do not depend on each other.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
import torch as th
import yaml
from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
from rl_zoo3.utils import ALGOS
from stable_baselines3 import PPO, SAC

from sb3_rpo import RPO, SAPO, SHAC, DiffVecEnv
from sb3_rpo.envs import EMBEDDED_ENV_IDS
from sb3_rpo.zoo import HYPERPARAMS_DIR, ZooExperimentManager, convert_rpo_params, convert_sapo_params, is_numerical_failure
from sb3_rpo.zoo.hyperparams_opt import sample_rpo_params, sample_sapo_params, sample_shac_params

ENV = "DiffPendulum-v0"
# Short episodes (also in the evaluation and enjoy envs) and one torch thread per process keep the runs tiny.
COMMON = ["--env", ENV, "--device", "cpu", "--num-threads", "1", "--env-kwargs", "max_episode_steps:32"]
TINY_RPO = ["n_envs:8", "n_steps:16", "n_epochs:2", "n_critic_iterations:1", "policy_kwargs:dict(net_arch=[16])"]
TIMEOUT = 240


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "sb3_rpo.zoo", *args]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, f"{' '.join(process.args)} failed:\n{output[-6000:]}"
    return output


def run(args: list[str], cwd: Path) -> str:
    return finish(start(args, cwd))


def journal(path: Path) -> optuna.storages.JournalStorage:
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def make_manager(tmp_path: Path, algo: str = "rpo", env_id: str = ENV, **kwargs) -> ZooExperimentManager:
    return ZooExperimentManager(argparse.Namespace(), algo, env_id, str(tmp_path), device="cpu", verbose=0, **kwargs)


# ---------------------------------------------------------------------- in-process: files, samplers, hooks
@pytest.mark.parametrize("algo, cls", [("rpo", RPO), ("shac", SHAC), ("sapo", SAPO)])
def test_every_hyperparameter_entry_builds_a_model(tmp_path, algo, cls):
    config = HYPERPARAMS_DIR / f"{algo}.yml"
    assert config.resolve() == (Path(__file__).parents[1] / "hyperparams" / f"{algo}.yml").resolve()
    entries = yaml.safe_load(config.read_text())
    assert set(EMBEDDED_ENV_IDS) | {"default"} <= set(entries)
    for env_id in EMBEDDED_ENV_IDS:
        manager = make_manager(tmp_path, algo, env_id)
        assert manager.config == str(config)  # the package's file without -conf
        hyperparams, _ = manager.read_hyperparameters()
        hyperparams, *_ = manager._preprocess_hyperparams(hyperparams)
        env = manager.create_envs(manager.n_envs)
        assert isinstance(env, DiffVecEnv) and env.num_envs == entries[env_id]["n_envs"] and env.device == th.device("cpu")
        model = cls(env=env, device="cpu", **hyperparams)
        assert model.policy.normalize_obs == entries[env_id]["normalize"]
        assert model.n_steps == entries[env_id]["n_steps"]
        assert model.n_epochs == entries[env_id].get("n_epochs", 1)
        assert model.lr_schedule(1.0) == pytest.approx(float(str(entries[env_id]["learning_rate"]).removeprefix("lin_")))
        policy_kwargs = eval(entries[env_id].get("policy_kwargs", "{}"), {"dict": dict, "nn": th.nn})
        assert model.policy.log_std_init == policy_kwargs.get("log_std_init", {"shac": -1.0}.get(algo, 0.0))


def test_algorithms_are_registered_next_to_rl_zoo3s():
    assert (ALGOS["rpo"], ALGOS["shac"], ALGOS["sapo"], ALGOS["ppo"], ALGOS["sac"]) == (RPO, SHAC, SAPO, PPO, SAC)
    assert HYPERPARAMS_SAMPLER["rpo"] is sample_rpo_params and HYPERPARAMS_SAMPLER["shac"] is sample_shac_params
    assert HYPERPARAMS_CONVERTER["rpo"] is HYPERPARAMS_CONVERTER["shac"] is convert_rpo_params
    assert HYPERPARAMS_SAMPLER["sapo"] is sample_sapo_params and HYPERPARAMS_CONVERTER["sapo"] is convert_sapo_params
    assert "ppo" in HYPERPARAMS_SAMPLER


def manager_policy_kwargs() -> dict:
    """The policy_kwargs of the package's DiffPendulum-v0 entry."""
    entry = yaml.safe_load((HYPERPARAMS_DIR / "rpo.yml").read_text())[ENV]
    return eval(entry["policy_kwargs"], {"dict": dict})


def test_hyperparameter_preprocessing(tmp_path):
    custom = {"normalize": False, "net_arch": [8], "learning_rate": "lin_2e-3", "critic_learning_rate": "lin_1e-3"}
    manager = make_manager(tmp_path, hyperparams=custom, eval_env_kwargs={"max_episode_steps": 7})
    hyperparams, saved = manager.read_hyperparameters()
    hyperparams, env_wrapper, _, vec_env_wrapper = manager._preprocess_hyperparams(hyperparams)
    assert saved["net_arch"] == [8] and saved["normalize"] is False  # config.yml keeps what was asked
    # -params overrides the yml's net_arch and normalization, and keeps its other policy settings
    assert hyperparams["policy_kwargs"] == {**manager_policy_kwargs(), "net_arch": [8], "normalize_obs": False}
    assert not manager.normalize and env_wrapper is None and vec_env_wrapper is None  # never a VecNormalize
    # lin_<x>: linear from x to 1e-5 (never an iteration at 0, as rl-zoo3's lin_ would end)
    assert hyperparams["learning_rate"](0.5) == pytest.approx((2e-3 + 1e-5) / 2)
    assert hyperparams["critic_learning_rate"](0.5) == pytest.approx((1e-3 + 1e-5) / 2)
    assert hyperparams["learning_rate"](0.0) == pytest.approx(1e-5)
    floor = make_manager(tmp_path, hyperparams={"learning_rate": "lin_1e-3_1e-4", "ent_coef_learning_rate": 0.01})
    floored, *_ = floor._preprocess_hyperparams(floor.read_hyperparameters()[0])
    assert floored["learning_rate"](0.0) == pytest.approx(1e-4) and floored["ent_coef_learning_rate"] == 0.01
    eval_env = manager.create_envs(3, eval_env=True)
    assert isinstance(eval_env, DiffVecEnv) and eval_env.num_envs == 3 and eval_env.max_episode_steps == 7

    with pytest.raises(ValueError, match="'Pendulum-v1' is not a registered differentiable environment"):
        make_manager(tmp_path, "shac", "Pendulum-v1")

    # Model-free algorithms keep rl-zoo3's own path (Monitor + DummyVecEnv on the gymnasium face).
    ppo = make_manager(tmp_path, "ppo", hyperparams={"normalize": True})
    assert "rl_zoo3" in ppo.config
    ppo._preprocess_hyperparams(ppo.read_hyperparameters()[0])
    assert ppo.normalize and not isinstance(ppo.create_envs(1), DiffVecEnv)


@pytest.mark.parametrize(
    "sampler, convert, cls",
    [
        (sample_rpo_params, convert_rpo_params, RPO),
        (sample_shac_params, convert_rpo_params, SHAC),
        (sample_sapo_params, convert_sapo_params, SAPO),
    ],
)
def test_samplers_and_converter(sampler, convert, cls):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        trial = study.ask()
        sampled = sampler(trial, 1, 16, {})
        assert repr(convert(trial.params)) == repr(sampled)  # --trial-id rebuilds exactly what the trial trained
        kwargs = dict(sampled)
        n_envs, net_arch = kwargs.pop("n_envs"), kwargs.pop("net_arch")
        model = cls("MlpPolicy", ENV, n_envs=n_envs, policy_kwargs=dict(net_arch=net_arch), device="cpu", **kwargs)
        assert model.env.num_envs == n_envs
        study.tell(trial, 0.0)


def test_numerical_failures_prune_the_trial_and_others_abort(tmp_path, monkeypatch):
    assert is_numerical_failure(RuntimeError("Function 'MulBackward0' returned nan values in its 0th output."))
    assert is_numerical_failure(th.linalg.LinAlgError("cholesky: the input is not positive-definite"))
    assert is_numerical_failure(FloatingPointError("overflow"))
    assert not is_numerical_failure(RuntimeError("CUDA out of memory"))
    assert not is_numerical_failure(KeyError("nan"))

    manager = make_manager(
        tmp_path,
        n_timesteps=64,
        optimize_hyperparameters=True,
        n_evaluations=1,
        n_eval_episodes=1,
        env_kwargs={"max_episode_steps": 16},
        hyperparams={"n_critic_iterations": 1},
    )
    assert manager.setup_experiment() is None
    failures = iter([RuntimeError("Function 'AddmmBackward0' returned nan values"), None, RuntimeError("disk is on fire")])

    def learn(self, *args, **kwargs):
        failure = next(failures)
        if failure is not None:
            raise failure
        return RPO.learn(self, *args, **kwargs)

    monkeypatch.setattr("sb3_rpo.zoo.exp_manager.ALGOS", {"rpo": type("FailingRPO", (RPO,), {"learn": learn})})
    study = optuna.create_study(direction="maximize")
    with pytest.raises(RuntimeError, match="disk is on fire"):
        study.optimize(manager.objective, n_trials=3)
    states = [trial.state for trial in study.trials]
    assert states[:2] == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]
    assert all(trial.user_attrs["worker"] for trial in study.trials)


# ---------------------------------------------------------------------- the command line, in subprocesses
@pytest.mark.slow
def test_train_then_enjoy_best_and_checkpoint(tmp_path):
    params = [*TINY_RPO, "learning_rate:'lin_2e-3'", "critic_learning_rate:'lin_1e-3'"]
    args = ["--algo", "rpo", *COMMON, "-n", "512", "-f", "logs", "--seed", "3", "--eval-freq", "256", "--eval-episodes", "2"]
    output = run(["train", *args, "--save-freq", "256", "-tb", "tb", "-params", *params], tmp_path)
    run_dir = tmp_path / "logs" / "rpo" / f"{ENV}_1"
    assert "Eval num_timesteps=512" in output and "New best mean reward!" in output
    for name in (f"{ENV}.zip", "best_model.zip", "rl_model_256_steps.zip", "rl_model_512_steps.zip", "evaluations.npz"):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.rglob("vecnormalize.pkl"))
    assert any((tmp_path / "tb").rglob("events.out.tfevents*"))
    # Episodes of the DiffVecEnv land in a monitor file, as Monitor writes them for the other algorithms.
    episodes = (run_dir / "0.monitor.csv").read_text().splitlines()[2:]
    assert len(episodes) == 8 * (512 // 8 // 32) and all(line.split(",")[1] == "32" for line in episodes)

    model = RPO.load(run_dir / f"{ENV}.zip", device="cpu")
    assert model.n_envs == 8 and model.n_steps == 16 and model.num_timesteps == 512
    assert model.policy.normalize_obs and model.policy.net_arch == [16]
    # lin_<x> decays linearly from x to 1e-5
    assert model.lr_schedule(0.5) == pytest.approx((2e-3 + 1e-5) / 2)
    assert model.critic_lr_schedule(0.5) == pytest.approx((1e-3 + 1e-5) / 2)

    enjoy = ["enjoy", "--algo", "rpo", "--env", ENV, "-f", "logs", "--no-render", "-n", "200", "--device", "cpu"]
    best = start([*enjoy, "--load-best"], tmp_path)
    checkpoint = start([*enjoy, "--load-checkpoint", "256"], tmp_path)
    plot = start(["plot", "-a", "rpo", "-e", ENV, "-f", "logs", "-w", "2", "-o", "curve.png"], tmp_path)
    evals = ["all_plots", "-a", "rpo", "-e", ENV, "-f", "logs", "--no-display", "-o", "results", "--png", "evals.png"]
    all_plots = start(evals, tmp_path)
    for process, model_file in ((best, "best_model.zip"), (checkpoint, "rl_model_256_steps.zip")):
        output = finish(process)
        assert f"Loading logs/rpo/{ENV}_1/{model_file}" in output
        assert "6 Episodes" in output and "Mean episode length: 32.00" in output
    assert "Saved curve.png" in finish(plot) and (tmp_path / "curve.png").stat().st_size > 0
    assert "Saved evals.png" in finish(all_plots) and (tmp_path / "evals.png").stat().st_size > 0
    assert (tmp_path / "results.pkl").is_file()  # all_plots' own -o is untouched


@pytest.mark.slow
def test_model_free_baseline_on_the_numpy_face(tmp_path):
    params = ["n_envs:2", "n_steps:64", "batch_size:32", "n_epochs:1", "policy_kwargs:dict(net_arch=[16])"]
    run(["train", "--algo", "ppo", *COMMON, "-n", "256", "-f", "logs", "--eval-freq", "-1", "-params", *params], tmp_path)
    run_dir = tmp_path / "logs" / "ppo" / f"{ENV}_1"
    assert (run_dir / f"{ENV}.zip").is_file()
    # One Monitor file per gymnasium env: rl-zoo3's usual Monitor + DummyVecEnv path.
    assert {path.name for path in run_dir.glob("*.monitor.csv")} == {"0.monitor.csv", "1.monitor.csv"}


def check_shared_study(storage, study_name: str, n_trials: int) -> optuna.Study:
    study = optuna.load_study(study_name=study_name, storage=storage)
    assert len(study.trials) == n_trials
    finished = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert all(trial.state in finished for trial in study.trials)
    assert len({trial.user_attrs["worker"] for trial in study.trials}) == 2  # both workers wrote into the study
    return study


def tuning_args(storage: str, study_name: str, n_trials: int, seed: int) -> list[str]:
    return [
        *["--algo", "rpo", *COMMON, "-n", "256", "-f", "logs", "--seed", str(seed), "-optimize", "--no-optim-plots"],
        *["--storage", storage, "--study-name", study_name, "--n-trials", str(n_trials), "--n-startup-trials", "1"],
        *["--eval-episodes", "1", "-params", "n_critic_iterations:1"],
    ]


@pytest.mark.slow
def test_optimize_with_two_workers_on_a_journal_then_train_a_trial(tmp_path):
    storage = "tune/study.log"
    first = start(["train", *tuning_args(storage, "pendulum", 2, seed=1)], tmp_path)
    second = start(["train", *tuning_args(storage, "pendulum", 1, seed=2)], tmp_path)
    output = finish(first)
    finish(second)
    assert "Number of finished trials:" in output and list((tmp_path / "logs" / "rpo").glob("report_*.csv"))
    study = check_shared_study(journal(tmp_path / storage), "pendulum", 3)

    trial = study.trials[1]
    args = ["--algo", "rpo", *COMMON, "-n", "128", "-f", "logs", "--eval-freq", "-1"]
    output = run(["train", *args, "--storage", storage, "--study-name", "pendulum", "--trial-id", "1"], tmp_path)
    assert "Loading from Optuna study..." in output
    run_dir = max((tmp_path / "logs" / "rpo").glob(f"{ENV}_*"), key=lambda path: int(path.name.split("_")[-1]))
    model = RPO.load(run_dir / f"{ENV}.zip", device="cpu")
    assert model.n_envs == trial.params["n_envs"] and model.n_steps == trial.params["n_steps"]
    assert model.n_epochs == trial.params["n_epochs"] and model.clip_low == pytest.approx(trial.params["clip_low"])
    assert model.policy.net_arch == convert_rpo_params(trial.params)["net_arch"]
    assert model.lr_schedule(1.0) == pytest.approx(trial.params["learning_rate"])


@pytest.mark.slow
@pytest.mark.skipif("SB3_RPO_TEST_POSTGRES_URL" not in os.environ, reason="SB3_RPO_TEST_POSTGRES_URL is not set")
def test_two_workers_share_a_postgresql_study(tmp_path):
    url = os.environ["SB3_RPO_TEST_POSTGRES_URL"]
    study_name = f"sb3-rpo-test-{uuid.uuid4().hex[:8]}"
    # As in docs/tuning.md: create the study once, then start the workers (here on one machine).
    optuna.create_study(storage=url, study_name=study_name, direction="maximize")
    try:
        workers = [start(["train", *tuning_args(url, study_name, 1, seed=seed)], tmp_path) for seed in (1, 2)]
        for worker in workers:
            finish(worker)
        check_shared_study(url, study_name, 2)
    finally:
        optuna.delete_study(study_name=study_name, storage=url)
