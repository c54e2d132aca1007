"""Differentiable tasks embedded in sb3-rpo, registered on import (see ``docs/envs.md``)."""

from sb3_rpo.common.registry import register_diff_env

register_diff_env("DiffPendulum-v0", "sb3_rpo.envs.pendulum:DiffPendulum", max_episode_steps=200)
register_diff_env("DiffCartPoleSwingUp-v0", "sb3_rpo.envs.cartpole:DiffCartPoleSwingUp", max_episode_steps=500)
register_diff_env("DiffAcrobot-v0", "sb3_rpo.envs.acrobot:DiffAcrobot", max_episode_steps=500)
register_diff_env("DiffReacher-v0", "sb3_rpo.envs.reacher:DiffReacher", max_episode_steps=100)
register_diff_env("DiffQuadrotor-v0", "sb3_rpo.envs.quadrotor:DiffQuadrotor", max_episode_steps=300)
