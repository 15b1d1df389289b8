"""What the continuous-action agents (DDPG/TD3 and SAC/SAC_V) share, as plain functions.

Both act in ``[-1, 1]^A``, map actions affinely to the env's bounds and build default
MLPs for flat observations; neither agent inherits the other.
"""

from __future__ import annotations

import math

import torch

from tdrl._compat import Bounded, TensorSpec


def flat_sizes(observation_spec: TensorSpec, action_spec: TensorSpec, who: str) -> tuple[int, int]:
    """``(observation size, action size)`` for the default MLPs.

    Raises:
        TypeError: naming ``who``, for non-Box actions or non-flat observations.
    """
    if not isinstance(action_spec, Bounded) or not action_spec.dtype.is_floating_point:
        raise TypeError(f"{who} needs a continuous Box action space, got {action_spec}")
    if len(tuple(observation_spec.shape)) != 1:
        raise TypeError(
            f"{who}'s default models need flat vector observations, got shape "
            f"{tuple(observation_spec.shape)}; pass model= and q_model="
        )
    return math.prod(observation_spec.shape), math.prod(action_spec.shape)


def action_map(action_spec: TensorSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, bias)`` of the affine map from ``[-1, 1]^A`` to the env's action bounds."""
    low, high = action_spec.space.low.float(), action_spec.space.high.float()
    return (high - low) / 2.0, (high + low) / 2.0
