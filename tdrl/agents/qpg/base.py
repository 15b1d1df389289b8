"""What the continuous-action agents (DDPG/TD3, SAC/SAC_V, PEARL) share, as plain functions.

All act in ``[-1, 1]^A``, map actions affinely to the env's bounds (``action_scale``,
``action_bias``) and build default MLPs for flat observations, critics included; none
inherits another.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import nn

from tdrl._compat import Bounded, TensorSpec
from tdrl.models.qpg.mlp import QEnsembleMlpModel


def flat_sizes(observation_spec: TensorSpec, action_spec: TensorSpec, who: str) -> tuple[int, int]:
    """``(observation size, action size)`` for the default MLPs.

    Raises:
        TypeError: naming ``who``, for non-Box actions or non-flat observations.
    """
    if not isinstance(action_spec, Bounded) or not action_spec.dtype.is_floating_point:
        raise TypeError(f"{who} needs a Box action space, got {type(action_spec).__name__}")
    if len(tuple(observation_spec.shape)) != 1:
        raise TypeError(
            f"{who}'s default models need flat vector observations, got shape "
            f"{tuple(observation_spec.shape)}; pass model= and q_model="
        )
    return math.prod(observation_spec.shape), math.prod(action_spec.shape)


def action_map(action_spec: TensorSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, bias)`` of the affine map from ``[-1, 1]^A`` to the env's action bounds.

    Raises:
        ValueError: the bounds are not finite (an unbounded ``Box``): the map would turn
            every action into NaN.
    """
    low, high = action_spec.space.low.float(), action_spec.space.high.float()
    if not bool(torch.isfinite(low).all() & torch.isfinite(high).all()):
        raise ValueError(
            f"squashed actions need finite Box bounds, got low={low.tolist()}, high={high.tolist()}"
        )
    return (high - low) / 2.0, (high + low) / 2.0


class ActionMapped(Protocol):
    """An agent that acts in ``[-1, 1]^A`` and maps actions to the env's bounds."""

    action_scale: torch.Tensor
    action_bias: torch.Tensor


def register_action_map(agent: nn.Module) -> None:
    """Give ``agent`` its ``action_scale`` and ``action_bias`` buffers (identity until set)."""
    agent.register_buffer("action_scale", torch.ones(()))
    agent.register_buffer("action_bias", torch.zeros(()))


def set_action_map(agent: ActionMapped, action_spec: TensorSpec, device: torch.device) -> None:
    """Set ``agent``'s action map to the env's bounds (``action_map``), on ``device``."""
    agent.action_scale, agent.action_bias = (x.to(device) for x in action_map(action_spec))


def default_critics(
    agent: nn.Module, in_size: int, act_size: int, kwargs: dict[str, Any], device: torch.device
) -> nn.Module:
    """``agent.q_model``; a ``QEnsembleMlpModel`` on ``device`` is built first if it has none.

    ``in_size`` is what the critics see beside the action (the observation, or ``o ⊕ z``).
    """
    q_model = agent._modules.get("q_model")
    if q_model is None:
        q_model = QEnsembleMlpModel(in_size, act_size, **kwargs).to(device)
        agent.q_model = q_model
    return q_model
