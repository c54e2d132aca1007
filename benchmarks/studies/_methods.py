"""The methods of the comparison studies: the gradient methods with the shipped entries, the model-free baselines
with rl-zoo3's tuned ones."""

from __future__ import annotations

from benchmarks.study import Method

RPO = Method("rpo", "rpo", label="RPO")
SHAC = Method("shac", "shac", label="SHAC")
SAPO = Method("sapo", "sapo", label="SAPO")
PPO = Method("ppo", "ppo", label="PPO")
SAC = Method("sac", "sac", label="SAC")
TQC = Method("tqc", "tqc", label="TQC")
CROSSQ = Method("crossq", "crossq", label="CrossQ")
ALL = (RPO, SHAC, SAPO, PPO, SAC, TQC, CROSSQ)
