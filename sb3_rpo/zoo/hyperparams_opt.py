"""Optuna search spaces of RPO, SHAC and SAPO for rl-zoo3 (``-optimize``) and their converters (``--trial-id``).

A sampler returns constructor arguments, plus two keys that :class:`sb3_rpo.zoo.ZooExperimentManager` reads:
``n_envs`` (the size of the trial's DiffVecEnv) and ``net_arch`` (merged into ``policy_kwargs``, so that the
yml's other policy arguments, e.g. ``normalize``, survive a trial). A converter maps a stored trial's raw
parameters to the same dictionary.
"""

from __future__ import annotations

from typing import Any

import optuna

from sb3_rpo.common.schedules import linear_schedule

NET_ARCH = {"tiny": [32, 32], "small": [64, 64], "medium": [128, 128], "large": [256, 256]}
# Mixed floats and strings: a fixed bonus, or a temperature learned towards the target entropy ("auto_<init>").
ENT_COEF = [0.0, 1e-3, 1e-2, "auto_0.01", "auto_0.1"]


def _decaying_rates(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """The learning rates as linear decays to 1e-5 (the references' schedule)."""
    for key in ("learning_rate", "critic_learning_rate"):
        if key in hyperparams:
            hyperparams[key] = linear_schedule(hyperparams[key])
    return hyperparams


def convert_rpo_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """Raw trial parameters of RPO or SHAC -> hyperparameters (the ``net_arch`` name becomes its layer list, the
    learning rates decay linearly when ``lr_schedule`` is ``linear``)."""
    hyperparams = dict(sampled_params)
    if "net_arch" in hyperparams:
        hyperparams["net_arch"] = NET_ARCH[hyperparams["net_arch"]]
    if hyperparams.pop("lr_schedule", "constant") == "linear":
        _decaying_rates(hyperparams)
    return hyperparams


def _sample_shac_space(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        "critic_learning_rate": trial.suggest_float("critic_learning_rate", 1e-4, 1e-2, log=True),
        # Constant, or decaying linearly to 1e-5 over training as in SHAC's and RPO's references.
        "lr_schedule": trial.suggest_categorical("lr_schedule", ["constant", "linear"]),
        # Window length H: longer windows see further but their gradients explode on chaotic dynamics.
        "n_steps": trial.suggest_categorical("n_steps", [8, 16, 32, 64]),
        "n_envs": trial.suggest_categorical("n_envs", [8, 16, 32, 64]),
        "ent_coef": trial.suggest_categorical("ent_coef", ENT_COEF),
        "tau": trial.suggest_float("tau", 0.1, 1.0),
        "net_arch": trial.suggest_categorical("net_arch", list(NET_ARCH)),
    }


def sample_shac_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """SHAC search space: learning rates and their schedule, window, number of envs, entropy, target-critic rate,
    network size."""
    return convert_rpo_params(_sample_shac_space(trial))


def sample_rpo_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """RPO search space: SHAC's, plus the number of epochs, the importance-weight band and the KL weight."""
    params = _sample_shac_space(trial)
    params.update(
        n_epochs=trial.suggest_categorical("n_epochs", [2, 5, 10, 20]),
        clip_low=trial.suggest_float("clip_low", 0.1, 0.95),
        clip_high=trial.suggest_float("clip_high", 0.1, 4.0, log=True),
        kl_coef=trial.suggest_float("kl_coef", 1e-3, 1.0, log=True),
    )
    return convert_rpo_params(params)


# SAPO's own architecture (actor [128, 64, 32], critics [64, 64]) next to the shared sizes.
SAPO_NET_ARCH: dict[str, Any] = {**NET_ARCH, "sapo": dict(pi=[128, 64, 32], vf=[64, 64])}


def convert_sapo_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """Raw trial parameters of SAPO -> hyperparameters: the network by name, the learning rates as SAPO's linear
    decays to 1e-5."""
    hyperparams = dict(sampled_params)
    if "net_arch" in hyperparams:
        hyperparams["net_arch"] = SAPO_NET_ARCH[hyperparams["net_arch"]]
    return _decaying_rates(hyperparams)


def sample_sapo_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """SAPO search space: learning rates (decaying to 1e-5), the temperature's initial value and learning rate, the
    window, the number of envs, the gradient clip and the network size, around the authors' defaults."""
    return convert_sapo_params(
        {
            "learning_rate": trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
            "critic_learning_rate": trial.suggest_float("critic_learning_rate", 1e-4, 3e-3, log=True),
            "ent_coef": trial.suggest_categorical("ent_coef", ["auto_0.1", "auto_0.3", "auto_1.0"]),
            "ent_coef_learning_rate": trial.suggest_float("ent_coef_learning_rate", 1e-3, 2e-2, log=True),
            "n_steps": trial.suggest_categorical("n_steps", [16, 32, 64]),
            "n_envs": trial.suggest_categorical("n_envs", [16, 32, 64]),
            "max_grad_norm": trial.suggest_categorical("max_grad_norm", [0.5, 1.0, 5.0]),
            "net_arch": trial.suggest_categorical("net_arch", list(SAPO_NET_ARCH)),
        }
    )
