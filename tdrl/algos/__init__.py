"""Algorithms: one file each, a pure ``loss(batch)`` and an ``optimize_agent`` schedule."""

from tdrl.algos.base import DIAGNOSTICS, Algorithm, ReplayAlgorithm
from tdrl.algos.dqn import DQN, CategoricalDQN, rainbow_minus_noisy
from tdrl.algos.pg import A2C, PPO
from tdrl.algos.qpg import DDPG, SAC, SAC_V, TD3

__all__ = [
    "A2C",
    "DDPG",
    "DIAGNOSTICS",
    "DQN",
    "PPO",
    "SAC",
    "SAC_V",
    "TD3",
    "Algorithm",
    "CategoricalDQN",
    "ReplayAlgorithm",
    "rainbow_minus_noisy",
]
