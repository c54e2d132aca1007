"""
Gymnasium's MuJoCo tasks, differentiated through MuJoCo's finite-difference Jacobians (extra ``sb3-rpo[mujoco]``).

See ``docs/sims/mujoco.md``. Importing this module does not import MuJoCo.
"""

from sb3_rpo.sims.mujoco_fd.base import MujocoFDVecEnv

# id, entry point, episode length, default options; ids mirror gymnasium's, with the prefix MujocoFD
TASKS = tuple(
    (f"MujocoFD{name}-v5", f"sb3_rpo.sims.mujoco_fd.tasks:MujocoFD{name}", max_episode_steps, {})
    for name, max_episode_steps in (
        ("Hopper", 1000),
        ("Walker2d", 1000),
        ("HalfCheetah", 1000),
        ("Swimmer", 1000),
        ("Ant", 1000),
        ("Reacher", 50),
        ("InvertedPendulum", 1000),
        ("InvertedDoublePendulum", 1000),
    )
)

__all__ = ["TASKS", "MujocoFDVecEnv"]
