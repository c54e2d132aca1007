from benchmarks.studies._methods import RPO, SHAC
from benchmarks.studies._tasks import CARTPOLE
from benchmarks.study import Method, Study

ENTROPY = dict(ent_coef=0.01)

STUDY = Study(
    name="entropy_screen",
    title="Screen: an entropy bonus for RPO and SHAC on CartPoleSwingUp",
    description="""\
Without an entropy bonus, RPO's shipped CartPoleSwingUp entry leaves some seeds at the bottom (return ~9: the
pole never swings up) while the policy's standard deviation shrinks from 1 to 0.4. This screen asks whether a
fixed bonus `ent_coef=0.01` (on the entropy of the env's action distribution, as SAPO's) keeps exploring long
enough, for RPO and for SHAC alike, each on its shipped entry. Tuning seeds (100-109), disjoint from the
evaluation seeds of the other studies.""",
    tasks=(CARTPOLE,),
    methods=(
        RPO,
        Method("rpo_ent", "rpo", overrides=ENTROPY, label="RPO, ent_coef=0.01"),
        SHAC,
        Method("shac_ent", "shac", overrides=ENTROPY, label="SHAC, ent_coef=0.01"),
    ),
    seeds=tuple(range(100, 110)),
    tuning=True,
)
