"""Plain ``nn.Module`` models.

Every model's forward takes ``(observation, prev_action, prev_reward)``; feed-forward
models ignore the last two. Recurrent models also take the state ``(h, c)`` and ``is_init``
and return the next state (``tdrl.models.lstm``).
"""

from tdrl.models.mlp import MlpModel
from tdrl.models.running_mean_std import RunningMeanStd

__all__ = ["MlpModel", "RunningMeanStd"]
