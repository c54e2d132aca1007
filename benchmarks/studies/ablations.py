from benchmarks.studies._methods import RPO
from benchmarks.studies._tasks import ACROBOT, CARTPOLE, PENDULUM
from benchmarks.study import Method, Study

# SHAC's settings (sb3_rpo.shac.SHAC_SETTINGS) dropped from RPO's entry: SHAC is RPO with one epoch, no band, no KL.
RPO_ONLY = ("n_epochs", "batch_size", "kl_coef", "clip_low", "clip_high")

STUDY = Study(
    name="ablations",
    title="Ablations of RPO",
    description="""\
RPO's entry of `hyperparams/rpo.yml` with one part removed: without the KL penalty (`kl_coef=0`), without the clip
band (`clip_low=clip_high=None`), with one epoch (SHAC's update: `sb3_rpo.SHAC` with RPO's other settings), and naive
reuse (RPO's epochs without band or KL: the compute-fair SHAC). 5 seeds on three embedded tasks.""",
    tasks=(PENDULUM, CARTPOLE, ACROBOT),
    methods=(
        RPO,
        Method("rpo_no_kl", "rpo", overrides=dict(kl_coef=0.0), label="RPO without KL"),
        Method("rpo_no_clip", "rpo", overrides=dict(clip_low=None, clip_high=None), label="RPO without clip band"),
        Method("rpo_one_epoch", "shac", entry_algo="rpo", drop=RPO_ONLY, label="RPO with n_epochs=1 (SHAC)"),
        Method("rpo_naive_reuse", "rpo", overrides=dict(kl_coef=0.0, clip_low=None, clip_high=None), label="naive reuse"),
    ),
    seeds=tuple(range(5)),
)
