"""What the policy-gradient agents share: the state value of a model."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class ValueModel(Protocol):
    """A policy-gradient model that computes V(o) alone, without the policy head."""

    def value(self, observation: Any) -> torch.Tensor:
        """V(o) for a batch of observations."""
        ...


def model_value(
    model: nn.Module, observation: Any, prev_action: torch.Tensor, prev_reward: torch.Tensor
) -> torch.Tensor:
    """V(o) from a PG model.

    The model's ``value(observation)`` when it has one (it skips the policy head), else the
    last output of a full forward pass.
    """
    if isinstance(model, ValueModel):
        return model.value(observation)
    return model(observation, prev_action, prev_reward)[-1]
