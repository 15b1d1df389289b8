"""Q-learning models: conv trunks, dueling and distributional heads, Atari and MLP Q-networks.

Q-networks return ``[..., n_actions]``; categorical (C51) ones return logits
``[..., n_actions, n_atoms]`` (apply ``softmax`` over the last dim for probabilities).
"""

from tdrl.models.dqn.atari import AtariCatDqnModel, AtariDqnModel
from tdrl.models.dqn.conv2d import Conv2dHeadModel, Conv2dModel
from tdrl.models.dqn.heads import (
    DistributionalDuelingHeadModel,
    DistributionalHeadModel,
    DuelingHeadModel,
    scale_grad,
)
from tdrl.models.dqn.mlp import CatDqnMlpModel, DqnMlpModel
from tdrl.models.dqn.r2d1 import AtariR2d1Model, R2d1MlpModel, R2d1Model

__all__ = [
    "AtariCatDqnModel",
    "AtariDqnModel",
    "AtariR2d1Model",
    "CatDqnMlpModel",
    "Conv2dHeadModel",
    "Conv2dModel",
    "DistributionalDuelingHeadModel",
    "DistributionalHeadModel",
    "DqnMlpModel",
    "DuelingHeadModel",
    "R2d1MlpModel",
    "R2d1Model",
    "scale_grad",
]
