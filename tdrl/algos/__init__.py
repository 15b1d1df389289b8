"""Algorithms: one file each, a pure ``loss(batch)`` and an ``optimize_agent`` schedule."""

from tdrl.algos.dqn import DQN, CategoricalDQN, rainbow_minus_noisy
from tdrl.algos.pg.a2c import A2C
from tdrl.algos.pg.ppo import PPO

__all__ = ["A2C", "DQN", "PPO", "CategoricalDQN", "rainbow_minus_noisy"]
