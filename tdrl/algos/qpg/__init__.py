"""Q-function policy gradients for continuous actions."""

from tdrl.algos.qpg.ddpg import DDPG
from tdrl.algos.qpg.pearl import PEARL
from tdrl.algos.qpg.sac import SAC
from tdrl.algos.qpg.sac_v import SAC_V
from tdrl.algos.qpg.td3 import TD3

__all__ = ["DDPG", "PEARL", "SAC", "SAC_V", "TD3"]
