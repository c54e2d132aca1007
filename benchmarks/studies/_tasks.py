"""
The tasks of the studies, with their budgets, evaluation periods, thresholds and normalization constants, fixed
here before any run. Several studies use the same task (the comparison, the ablations, the sweeps); they import it
from here.

Normalization, ``(score - random) / (reference - random)``:

* Embedded tasks: ``random`` is the mean return of uniform random actions over 10 episodes and ``reference`` the best
  mean final return over 3 seeds of RPO or SHAC, both from the legacy results of the per-task scripts that the
  runner replaced (``benchmarks/results/legacy/learning_all_tasks_{rpo,shac}.json`` and ``legacy/pendulum.json``).
* MuJoCo: D4RL's reference returns (``REF_MIN_SCORE``/``REF_MAX_SCORE`` of ``d4rl/infos.py``: a random policy and an
  expert SAC policy on the v2 envs, whose models and rewards v5 keeps).
* rewarped's DFlex Cartpole: ``random`` measured here (``python -m benchmarks random --study rewarped``, 10 episodes),
  ``reference`` the authors' SAPO at 500k env steps (docs/sapo.md). DFlex Hopper has none yet (random actions reach
  non-finite states there, and no reference return is at hand): final returns and curves only, out of the aggregate.
* MJX Hopper: D4RL's Hopper constants, as for MuJoCo's Hopper-v5: brax's hopper has gymnasium's Hopper model, reward
  weights, health ranges, termination and frame skip (random actions measured here: 24.6).

Model-free methods train on the gymnasium env the DiffVecEnv mirrors: gymnasium's ``Pendulum-v1`` and ``Hopper-v5``
etc. where one exists (the DiffVecEnv reproduces its dynamics and reward), else the gymnasium registration of the
differentiable id itself (``gymnasium.make("DiffAcrobot-v0")``: the same simulation, one env, numpy in and out; of
an embedded task computed as one batch, bit for bit). On rewarped and MJX, whose registration runs one simulator
per env, they train on the DiffVecEnv itself, an SB3 VecEnv (``model_free_on_diff_env``): the same simulation in
one call for all envs; every method is still evaluated on the registration.
"""

from __future__ import annotations

from dataclasses import replace

from benchmarks.study import Task

# rl-zoo3 has no entry for the embedded tasks: the nearest tuned entries, by what the task is.
SWING_UP = dict(ppo="InvertedPendulumSwingupBulletEnv-v0", sac="InvertedPendulumSwingupBulletEnv-v0",
                tqc="InvertedPendulumSwingupBulletEnv-v0", crossq="Pendulum-v1")  # fmt: skip
REACHER = dict(ppo="ReacherBulletEnv-v0", sac="ReacherBulletEnv-v0", tqc="ReacherBulletEnv-v0", crossq="Pendulum-v1")
LANDER = dict.fromkeys(("ppo", "sac", "tqc", "crossq"), "LunarLanderContinuous-v3")
PENDULUM_ENTRY = dict.fromkeys(("ppo", "sac", "tqc", "crossq"), "Pendulum-v1")

PENDULUM = Task(
    name="Pendulum",
    diff_env_id="DiffPendulum-v0",
    gym_env_id="Pendulum-v1",
    budget=60_000,
    eval_every=2_500,
    threshold=-200.0,
    random_score=-1170.7,
    reference_score=-131.4,
    normalization_source="random: legacy/learning_all_tasks_rpo.json; reference: RPO, legacy/pendulum.json",
    zoo_notes="rl-zoo3's own Pendulum-v1 entries (DiffPendulum-v0 is Pendulum-v1's dynamics and reward, parity-tested)",
)


def before_tuning(task: Task) -> Task:
    """``task`` with the gradient methods' entries of before the tuning study replaced them (``<id> before tuning`` in
    ``hyperparams/``): the ablations, sweeps and screens that ran around those entries keep them as their base."""
    return replace(task, diff_hyperparams_id=f"{task.diff_env_id} before tuning")


PENDULUM_BEFORE_TUNING = before_tuning(PENDULUM)
CARTPOLE = Task(
    name="CartPoleSwingUp",
    diff_env_id="DiffCartPoleSwingUp-v0",
    gym_env_id="DiffCartPoleSwingUp-v0",
    budget=200_000,
    eval_every=10_000,
    threshold=400.0,  # of at most 500 (one per step upright and centred)
    random_score=3.0,
    reference_score=346.3,
    normalization_source="random: legacy/learning_all_tasks_rpo.json; reference: SHAC, legacy/learning_all_tasks_shac.json",
    zoo_ids=SWING_UP,
    zoo_notes="pybullet's InvertedPendulumSwingup (a cart-pole swing-up); CrossQ has none: its Pendulum-v1 (a swing-up)",
)
CARTPOLE_BEFORE_TUNING = before_tuning(CARTPOLE)
ACROBOT = Task(
    name="Acrobot",
    diff_env_id="DiffAcrobot-v0",
    gym_env_id="DiffAcrobot-v0",
    budget=200_000,
    eval_every=10_000,
    threshold=-100.0,
    random_score=-455.4,
    reference_score=-54.4,
    normalization_source="random: legacy/learning_all_tasks_rpo.json; reference: RPO, legacy/learning_all_tasks_rpo.json",
    zoo_ids=PENDULUM_ENTRY,
    zoo_notes="Pendulum-v1 (an underactuated swing-up with a continuous torque); rl-zoo3's Acrobot-v1 is discrete",
)
REACHER_TASK = Task(
    name="Reacher",
    diff_env_id="DiffReacher-v0",
    gym_env_id="DiffReacher-v0",
    budget=100_000,
    eval_every=5_000,
    threshold=-8.0,
    random_score=-30.9,
    reference_score=-5.2,
    normalization_source="random: legacy/learning_all_tasks_rpo.json; reference: RPO, legacy/learning_all_tasks_rpo.json",
    zoo_ids=REACHER,
    zoo_notes="pybullet's Reacher (a 2-link planar reacher); CrossQ has none: its Pendulum-v1",
)
REACHER_BEFORE_TUNING = before_tuning(REACHER_TASK)
QUADROTOR = Task(
    name="Quadrotor",
    diff_env_id="DiffQuadrotor-v0",
    gym_env_id="DiffQuadrotor-v0",
    budget=120_000,
    eval_every=6_000,
    threshold=450.0,  # of at most 600
    random_score=-7.8,
    reference_score=511.4,
    normalization_source="random: legacy/learning_all_tasks_rpo.json; reference: RPO, legacy/learning_all_tasks_rpo.json",
    zoo_ids=LANDER,
    zoo_notes="LunarLanderContinuous-v3 (thrust control of a flying body against gravity)",
)
EMBEDDED = (PENDULUM, CARTPOLE, ACROBOT, REACHER_TASK, QUADROTOR)


def mujoco(name: str, random_score: float, reference_score: float, threshold: float) -> Task:
    """A MuJoCo task: gradient methods through ``MujocoFD<name>-v5``, everyone evaluated on gymnasium's ``<name>-v5``."""
    return Task(
        name=f"{name}-v5",
        diff_env_id=f"MujocoFD{name}-v5",
        gym_env_id=f"{name}-v5",
        budget=300_000,
        eval_every=20_000,
        threshold=threshold,
        random_score=random_score,
        reference_score=reference_score,
        normalization_source="D4RL's REF_MIN_SCORE / REF_MAX_SCORE (random and expert SAC, v2 envs)",
        # Only Hopper has a tuned entry in hyperparams/: the others take it as the nearest one.
        diff_hyperparams_id="MujocoFDHopper-v5",
        diff_env_kwargs=dict(n_threads=1),  # one core per run: two runs share the two cores
        zoo_ids=dict.fromkeys(("ppo", "sac", "tqc", "crossq"), f"{name}-v4"),
        zoo_notes=f"rl-zoo3 has no v5 entries: {name}-v4's (same model and reward)",
    )


# Thresholds above what standing still earns (Hopper and Walker2d pay 1 per healthy step, 1000 per episode).
MUJOCO = (
    mujoco("Hopper", -20.272305, 3234.3, threshold=2000.0),
    mujoco("Walker2d", 1.629008, 4592.3, threshold=2000.0),
    mujoco("HalfCheetah", -280.178953, 12135.0, threshold=3000.0),
)

REWARPED = (
    Task(
        name="DFlexCartpole",
        diff_env_id="RewarpedDFlexCartpole-v0",
        gym_env_id="RewarpedDFlexCartpole-v0",
        budget=200_000,
        eval_every=10_000,
        threshold=-650.0,  # 0.9 of the way from random to the reference: swung up and balanced (the zero action: -1818)
        random_score=-1962.6,
        reference_score=-520.0,
        normalization_source="random: `python -m benchmarks random --study rewarped`; reference: the authors' SAPO at 500k",
        zoo_ids=SWING_UP,
        zoo_notes="as the embedded cart-pole swing-up",
        model_free_on_diff_env=True,
    ),
    Task(
        name="DFlexHopper",
        diff_env_id="RewarpedDFlexHopper-v0",
        gym_env_id="RewarpedDFlexHopper-v0",
        budget=300_000,
        eval_every=20_000,
        threshold=None,
        diff_hyperparams_id="MujocoFDHopper-v5",
        zoo_ids=dict.fromkeys(("ppo", "sac", "tqc", "crossq"), "Hopper-v4"),
        zoo_notes="gymnasium's Hopper-v4 entries (DiffRL's Hopper is the same robot)",
        model_free_on_diff_env=True,
    ),
)

MJX = (
    Task(
        name="MJXHopper",
        diff_env_id="MJXHopper-v0",
        gym_env_id="MJXHopper-v0",
        budget=300_000,
        eval_every=20_000,
        threshold=2000.0,  # as Hopper-v5's
        random_score=-20.272305,
        reference_score=3234.3,
        normalization_source="D4RL's Hopper REF_MIN_SCORE / REF_MAX_SCORE, as Hopper-v5 (the same model and reward)",
        zoo_ids=dict.fromkeys(("ppo", "sac", "tqc", "crossq"), "Hopper-v4"),
        zoo_notes="gymnasium's Hopper-v4 entries (brax's hopper is MuJoCo's Hopper model)",
        model_free_on_diff_env=True,
    ),
)
