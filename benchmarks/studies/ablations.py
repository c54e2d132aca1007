from benchmarks.studies._methods import RPO
from benchmarks.studies._tasks import ACROBOT, CARTPOLE_BEFORE_TUNING, PENDULUM_BEFORE_TUNING
from benchmarks.study import Method, Study
from sb3_rpo.shac.shac import SHAC_SETTINGS

STUDY = Study(
    name="ablations",
    title="Ablations of RPO",
    description="""\
RPO's entry of `hyperparams/rpo.yml` with one part removed: without the KL penalty (`kl_coef=0`), without the clip
band (`clip_low=clip_high=None`), with one epoch (SHAC's update, `sb3_rpo.shac.SHAC_SETTINGS`, with RPO's other
settings and defaults), and naive reuse (RPO's epochs without band or KL: the compute-fair SHAC). 5 seeds on three
embedded tasks. On Pendulum and CartPoleSwingUp the base is RPO's entry of before the tuning study (`DiffPendulum-v0
before tuning` and `DiffCartPoleSwingUp-v0 before tuning` in `hyperparams/rpo.yml`), which these runs were made
with.""",
    tasks=(PENDULUM_BEFORE_TUNING, CARTPOLE_BEFORE_TUNING, ACROBOT),
    methods=(
        RPO,
        Method("rpo_no_kl", "rpo", overrides=dict(kl_coef=0.0), label="RPO without KL"),
        Method("rpo_no_clip", "rpo", overrides=dict(clip_low=None, clip_high=None), label="RPO without clip band"),
        # SHAC's update (one epoch on the whole window, no band, no KL) with RPO's other settings and defaults
        Method("rpo_one_epoch", "rpo", overrides=SHAC_SETTINGS, label="RPO with n_epochs=1 (SHAC)"),
        Method("rpo_naive_reuse", "rpo", overrides=dict(kl_coef=0.0, clip_low=None, clip_high=None), label="naive reuse"),
    ),
    seeds=tuple(range(5)),
)
