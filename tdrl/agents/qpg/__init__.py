"""Agents for Q-function policy gradients (continuous actions)."""

from tdrl.agents.qpg.ddpg_agent import DdpgAgent, Td3Agent
from tdrl.agents.qpg.pearl_agent import PearlAgent
from tdrl.agents.qpg.sac_agent import SacAgent, SacVAgent
from tdrl.agents.qpg.squashed_gaussian import squashed_gaussian_sample

__all__ = [
    "DdpgAgent",
    "PearlAgent",
    "SacAgent",
    "SacVAgent",
    "Td3Agent",
    "squashed_gaussian_sample",
]
