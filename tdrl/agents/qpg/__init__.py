"""Agents for Q-function policy gradients (continuous actions)."""

from tdrl.agents.qpg.ddpg_agent import DdpgAgent, Td3Agent
from tdrl.agents.qpg.sac_agent import SacAgent

__all__ = ["DdpgAgent", "SacAgent", "Td3Agent"]
