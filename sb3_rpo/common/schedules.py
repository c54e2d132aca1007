"""Learning-rate schedules of the references: linear decay to a floor, never to 0."""

from __future__ import annotations

from stable_baselines3.common.utils import LinearSchedule

# DiffRL's SHAC and SAPO decay their learning rates linearly to this floor over training.
LR_FLOOR = 1e-5


def linear_schedule(initial_value: float, final_value: float = LR_FLOOR) -> LinearSchedule:
    """
    SB3's :class:`~stable_baselines3.common.utils.LinearSchedule` from ``initial_value`` at the start of
    training to ``final_value`` at its end (default the references' floor 1e-5; ``min`` of the two if the
    initial value is already lower), so that no iteration runs at learning rate 0.
    """
    return LinearSchedule(initial_value, min(final_value, initial_value), end_fraction=1.0)


def parse_schedule(value: str) -> LinearSchedule:
    """
    A schedule written as rl-zoo3 writes them in its yml files, as sb3-rpo reads it: ``lin_<x>`` decays linearly
    from x to the floor 1e-5 (rl-zoo3's own ``lin_`` ends at 0), ``lin_<x>_<floor>`` to ``floor``.
    """
    kind, *values = value.split("_")
    if kind != "lin" or len(values) not in (1, 2):
        raise ValueError(f"{value!r} is not a float, 'lin_<x>' or 'lin_<x>_<floor>'")
    return linear_schedule(*(float(v) for v in values))
