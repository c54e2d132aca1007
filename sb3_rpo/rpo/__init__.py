from sb3_rpo.rpo.policies import MlpPolicy, RPOPolicy
from sb3_rpo.rpo.rpo import RPO

__all__ = ["RPO", "MlpPolicy", "RPOPolicy"]
