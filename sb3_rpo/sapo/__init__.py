from sb3_rpo.sapo.sapo import SAPO

__all__ = ["SAPO"]
