"""Deep Q-learning: DQN (double, dueling via the model, n-step, prioritized), C51, Rainbow.

R2D1 is recurrent DQN from sequence replay.
"""

from tdrl.algos.dqn.cat_dqn import CategoricalDQN
from tdrl.algos.dqn.dqn import DQN
from tdrl.algos.dqn.r2d1 import R2D1
from tdrl.algos.dqn.rainbow import rainbow_minus_noisy

__all__ = ["DQN", "R2D1", "CategoricalDQN", "rainbow_minus_noisy"]
