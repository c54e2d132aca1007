from sb3_rpo.rpo.policies import MlpPolicy
from sb3_rpo.shac.shac import SHAC

__all__ = ["SHAC", "MlpPolicy"]
