"""Q-function policy gradients for continuous actions."""

from tdrl.algos.qpg.sac import SAC

__all__ = ["SAC"]
