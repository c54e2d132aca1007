"""sb3-rpo: Reparameterization Proximal Policy Optimization (RPO), SHAC and SAPO for Stable-Baselines3."""

import os

from sb3_rpo import envs, sims  # noqa: F401  (register the embedded tasks and the simulator adapters' ids)
from sb3_rpo.common.callbacks import CheckpointAfterUpdateCallback
from sb3_rpo.common.diff_vec_env import DiffTaskVecEnv, DiffVecEnv
from sb3_rpo.common.jacobian_env import JacobianVecEnv, SimStep
from sb3_rpo.common.registry import list_diff_envs, make_diff_vec_env, register_diff_env
from sb3_rpo.common.schedules import linear_schedule
from sb3_rpo.rpo import RPO, RPOPolicy
from sb3_rpo.sapo import SAPO
from sb3_rpo.shac import SHAC

with open(os.path.join(os.path.dirname(__file__), "version.txt")) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = [
    "RPO",
    "SAPO",
    "SHAC",
    "CheckpointAfterUpdateCallback",
    "DiffTaskVecEnv",
    "DiffVecEnv",
    "JacobianVecEnv",
    "RPOPolicy",
    "SimStep",
    "__version__",
    "linear_schedule",
    "list_diff_envs",
    "make_diff_vec_env",
    "register_diff_env",
]
