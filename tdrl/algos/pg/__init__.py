"""Policy-gradient algorithms: A2C and PPO."""

from tdrl.algos.pg.a2c import A2C
from tdrl.algos.pg.ppo import PPO

__all__ = ["A2C", "PPO"]
