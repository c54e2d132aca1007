from benchmarks.studies._methods import RPO, SHAC
from benchmarks.studies._tasks import CARTPOLE_BEFORE_TUNING
from benchmarks.study import Method, Study

ENTROPY = dict(ent_coef=0.01)

STUDY = Study(
    name="cartpole_screen",
    title="Screen: an entropy bonus, fewer epochs or no KL penalty for RPO (and SHAC) on CartPoleSwingUp",
    description="""\
With its shipped CartPoleSwingUp entry (10 epochs), RPO leaves many seeds at the bottom (return ~9: the pole never
swings up) while the policy's standard deviation shrinks from 1 to about 0.4. This screen asks whether a fixed
entropy bonus `ent_coef=0.01` (on the entropy of the env's action distribution, as SAPO's) keeps it exploring, for
RPO and for SHAC alike, each on its shipped entry, or whether RPO's default of 5 epochs (the specification's M = 5)
does; and, added after the ablations (where RPO without its KL penalty swung the pole up on more seeds), whether
dropping the KL penalty (`kl_coef=0`) does. Tuning seeds (100-109), disjoint from the evaluation seeds of the other
studies. The shipped entries it screens are those of before the tuning study (`DiffCartPoleSwingUp-v0 before tuning`
in `hyperparams/rpo.yml` and `shac.yml`).""",
    tasks=(CARTPOLE_BEFORE_TUNING,),
    methods=(
        RPO,
        Method("rpo_ent", "rpo", overrides=ENTROPY, label="RPO, ent_coef=0.01"),
        Method("rpo_epochs5", "rpo", overrides=dict(n_epochs=5), label="RPO, n_epochs=5"),
        Method("rpo_no_kl", "rpo", overrides=dict(kl_coef=0.0), label="RPO, kl_coef=0"),
        SHAC,
        Method("shac_ent", "shac", overrides=ENTROPY, label="SHAC, ent_coef=0.01"),
    ),
    seeds=tuple(range(100, 110)),
    tuning=True,
)
