"""Algorithms: one file each, a pure ``loss(batch)`` and an ``optimize_agent`` schedule."""

from tdrl.algos.base import DIAGNOSTICS, Algorithm, ReplayAlgorithm
from tdrl.algos.dqn import DQN, R2D1, CategoricalDQN, rainbow_minus_noisy
from tdrl.algos.pg import A2C, PPO
from tdrl.algos.qpg import DDPG, PEARL, SAC, SAC_V, TD3

__all__ = [
    "A2C",
    "DDPG",
    "DIAGNOSTICS",
    "DQN",
    "PEARL",
    "PPO",
    "R2D1",
    "SAC",
    "SAC_V",
    "TD3",
    "Algorithm",
    "CategoricalDQN",
    "ReplayAlgorithm",
    "rainbow_minus_noisy",
]
