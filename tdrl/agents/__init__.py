"""Agents: a model plus action selection, exploration and sample/train/eval modes."""

from tdrl.agents.base import Agent, PgAgent
from tdrl.agents.dqn import DqnAgent, R2d1Agent
from tdrl.agents.pg import CategoricalPgAgent, GaussianPgAgent
from tdrl.agents.qpg import DdpgAgent, PearlAgent, SacAgent, SacVAgent, Td3Agent
from tdrl.agents.torchrl_policy import AgentPolicy

__all__ = [
    "Agent",
    "AgentPolicy",
    "CategoricalPgAgent",
    "DdpgAgent",
    "DqnAgent",
    "GaussianPgAgent",
    "PearlAgent",
    "PgAgent",
    "R2d1Agent",
    "SacAgent",
    "SacVAgent",
    "Td3Agent",
]
