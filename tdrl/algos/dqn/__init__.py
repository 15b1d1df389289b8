"""Deep Q-learning: DQN (double, dueling via the model, n-step, prioritized), C51, Rainbow."""

from tdrl.algos.dqn.cat_dqn import CategoricalDQN
from tdrl.algos.dqn.dqn import DQN
from tdrl.algos.dqn.rainbow import rainbow_minus_noisy

__all__ = ["DQN", "CategoricalDQN", "rainbow_minus_noisy"]
