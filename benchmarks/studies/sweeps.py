from benchmarks.studies._methods import RPO
from benchmarks.studies._tasks import PENDULUM_BEFORE_TUNING, REACHER_BEFORE_TUNING
from benchmarks.study import Heatmap, Study, sweep

STUDY = Study(
    name="sweeps",
    title="Sensitivity of RPO: clip band and KL x epochs",
    description="""\
RPO's entry with a `clip_low x clip_high` grid (the band is `[1 - clip_low, 1 + clip_high]`) and a
`kl_coef x n_epochs` grid around RPO's hand-set entry of before the tuning study (`<id> before tuning` in
`hyperparams/rpo.yml`: the Pendulum runs were made with it, and on Reacher it keeps RPO's default band, the
reference cell, on the grid, which the tuned band is not); heat maps of the median env
steps to the threshold and of the mean final return over 5 seeds. The second task is Reacher, not Acrobot as first
planned, for cost: RPO's Acrobot entry trains for about 3 minutes a run (the embedded study's "train s" column),
Reacher's before-tuning entry for under half a minute (this study's), and each task takes 125 runs.""",
    tasks=(PENDULUM_BEFORE_TUNING, REACHER_BEFORE_TUNING),
    methods=(
        *sweep(RPO, "clip", clip_low=(0.2, 0.5, 0.8), clip_high=(0.2, 0.5, 1.0)),
        *sweep(RPO, "kl", kl_coef=(0.0, 0.1, 0.2, 0.5), n_epochs=(1, 5, 10, 20)),
    ),
    seeds=tuple(range(5)),
    reference_method="clip_0.8_1",  # RPO's default band
    heatmaps=(Heatmap("clip_low", "clip_high"), Heatmap("kl_coef", "n_epochs")),
)
