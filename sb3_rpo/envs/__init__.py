"""Differentiable tasks embedded in sb3-rpo, registered on import (see ``docs/envs.md``)."""

from sb3_rpo.common.registry import register_diff_env

# id, entry point, episode length
_EMBEDDED = (
    ("DiffPendulum-v0", "sb3_rpo.envs.pendulum:DiffPendulum", 200),
    ("DiffCartPoleSwingUp-v0", "sb3_rpo.envs.cartpole:DiffCartPoleSwingUp", 500),
    ("DiffAcrobot-v0", "sb3_rpo.envs.acrobot:DiffAcrobot", 500),
    ("DiffReacher-v0", "sb3_rpo.envs.reacher:DiffReacher", 100),
    ("DiffQuadrotor-v0", "sb3_rpo.envs.quadrotor:DiffQuadrotor", 300),
)
EMBEDDED_ENV_IDS: tuple[str, ...] = tuple(env_id for env_id, _, _ in _EMBEDDED)

for _env_id, _entry_point, _max_episode_steps in _EMBEDDED:
    register_diff_env(_env_id, _entry_point, max_episode_steps=_max_episode_steps)
