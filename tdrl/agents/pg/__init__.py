"""Policy-gradient agents: a stochastic policy and a value function."""

from tdrl.agents.pg.categorical import CategoricalPgAgent
from tdrl.agents.pg.gaussian import GaussianPgAgent

__all__ = ["CategoricalPgAgent", "GaussianPgAgent"]
