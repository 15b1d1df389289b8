"""Q-learning agents: epsilon-greedy over Q-values (or a categorical return distribution)."""

from tdrl.agents.dqn.dqn_agent import DqnAgent, epsilon_vector

__all__ = ["DqnAgent", "epsilon_vector"]
