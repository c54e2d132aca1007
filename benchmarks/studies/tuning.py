from benchmarks.studies._methods import RPO, SAPO, SHAC
from benchmarks.studies._tasks import EMBEDDED
from benchmarks.study import Study

STUDY = Study(
    name="tuning",
    title="Equal-budget tuning of RPO, SHAC and SAPO",
    description="""\
Optuna (TPE, median pruner) over each gradient method's search space of `sb3_rpo.zoo.hyperparams_opt` (the spaces of
`python -m sb3_rpo.zoo train -optimize`, docs/tuning.md), the same number of trials for every method on every
embedded task, each trial trained under the benchmark protocol on the three tuning seeds 100-102 (disjoint from the
evaluation seeds 0-9). Objective: the lower quartile over the seeds of the normalized area under the learning curve
(`benchmarks/tuning.py`). Each search first scores the shipped entry the same way on the same seeds ("objective of
the entry shipped when the search began"). `python -m benchmarks adopt --study tuning --task T --method M` writes
the best trial of a finished search into `hyperparams/<algo>.yml`, with a comment naming this study, where it beats
the shipped entry; the `embedded` study then evaluates it on seeds 0-9 (its runs of the replaced entry are stale).""",
    tasks=EMBEDDED,
    methods=(RPO, SHAC, SAPO),
    seeds=(100, 101, 102),
    kind="search",
    tuning=True,
    n_trials=20,
)
