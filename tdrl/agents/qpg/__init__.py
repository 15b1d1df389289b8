"""Agents for Q-function policy gradients (continuous actions)."""

from tdrl.agents.qpg.sac_agent import SacAgent

__all__ = ["SacAgent"]
