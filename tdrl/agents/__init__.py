"""Agents: a model plus action selection, exploration and sample/train/eval modes."""

from tdrl.agents.base import Agent
from tdrl.agents.dqn import DqnAgent
from tdrl.agents.pg import CategoricalPgAgent, GaussianPgAgent

__all__ = ["Agent", "CategoricalPgAgent", "DqnAgent", "GaussianPgAgent"]
