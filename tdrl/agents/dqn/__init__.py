"""Q-learning agents: epsilon-greedy over Q-values (or a categorical return distribution).

``R2d1Agent`` is the recurrent one (R2D1).
"""

from tdrl.agents.dqn.common import epsilon_greedy, epsilon_vector, scheduled_epsilon
from tdrl.agents.dqn.dqn_agent import DqnAgent
from tdrl.agents.dqn.r2d1_agent import R2d1Agent

__all__ = [
    "DqnAgent",
    "R2d1Agent",
    "epsilon_greedy",
    "epsilon_vector",
    "scheduled_epsilon",
]
