"""rl-zoo3 training, evaluation and Optuna tuning of RPO, SHAC and SAPO: ``python -m sb3_rpo.zoo train --algo rpo ...``.

rl-zoo3 has no plugin mechanism: importing this module adds ``rpo``, ``shac`` and ``sapo`` to its shared registries
(``rl_zoo3.utils.ALGOS``, ``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER`` / ``HYPERPARAMS_CONVERTER``),
next to the built-in algorithms. See ``docs/zoo.md`` and ``docs/tuning.md``.
"""

try:
    import optuna  # noqa: F401
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
    from rl_zoo3.utils import ALGOS
except ModuleNotFoundError as error:
    # name=__name__: `python -m sb3_rpo.zoo` then prints this one line instead of a traceback
    raise ModuleNotFoundError(
        f'sb3_rpo.zoo needs the zoo extra ({error.name} is missing): pip install "sb3-rpo[zoo]"', name=__name__
    ) from error

from sb3_rpo.rpo import RPO
from sb3_rpo.sapo import SAPO
from sb3_rpo.shac import SHAC
from sb3_rpo.zoo.exp_manager import (
    DIFF_ALGOS,
    HYPERPARAMS_DIR,
    CheckpointAfterUpdateCallback,
    ZooExperimentManager,
    is_numerical_failure,
)
from sb3_rpo.zoo.hyperparams_opt import (
    convert_rpo_params,
    convert_sapo_params,
    sample_rpo_params,
    sample_sapo_params,
    sample_shac_params,
)

ALGOS.update(rpo=RPO, shac=SHAC, sapo=SAPO)
HYPERPARAMS_SAMPLER.update(rpo=sample_rpo_params, shac=sample_shac_params, sapo=sample_sapo_params)
HYPERPARAMS_CONVERTER.update(rpo=convert_rpo_params, shac=convert_rpo_params, sapo=convert_sapo_params)

__all__ = [
    "DIFF_ALGOS",
    "HYPERPARAMS_DIR",
    "CheckpointAfterUpdateCallback",
    "ZooExperimentManager",
    "convert_rpo_params",
    "convert_sapo_params",
    "is_numerical_failure",
    "sample_rpo_params",
    "sample_sapo_params",
    "sample_shac_params",
]
