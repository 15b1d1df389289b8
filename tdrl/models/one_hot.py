"""Index observations (a gymnasium ``Discrete`` space) one-hot encoded in front of a model.

FrozenLake, Taxi and CliffWalking observe a state index. The default models take vectors,
so the discrete-action agents' ``make_model`` (``tdrl.agents.spaces.with_index_observations``)
builds the default model for ``n``-vectors and puts ``one_hot_observations`` in front of it,
as Stable-Baselines3 encodes such observations. The samplers and replay buffers keep
storing the index (one ``int64`` per step, not ``n`` floats).

The wrapper declares what the wrapped model offers, chosen when it is built: a
``RecurrentOneHotObservation`` has ``initial_state`` (a ``RecurrentModel``), a
``ValueOneHotObservation`` computes ``value(observation)`` (V(o) alone) on the encoded
observation, and a plain ``OneHotObservation`` neither.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's name

from tdrl.utils.checks import check_positive_int

__all__ = [
    "OneHotObservation",
    "RecurrentOneHotObservation",
    "ValueOneHotObservation",
    "one_hot_observations",
]


class OneHotObservation(nn.Module):
    """``model(one_hot(observation, n), *rest)`` for index observations in ``[0, n)``.

    Args:
        model: a model whose observation input is a float vector of size ``n``.
        n: the number of states (the ``Discrete`` space's ``n``; its ``start`` must be 0).
    """

    def __init__(self, model: nn.Module, n: int):
        super().__init__()
        self.model = model
        self.n = check_positive_int("n", n)

    def encode(self, observation: torch.Tensor) -> torch.Tensor:
        """Float one-hot vectors ``[..., n]`` of index observations ``[...]``.

        Raises:
            ValueError: an index outside ``[0, n)`` (a ``Discrete`` space with ``start``
                other than 0, or a wrong ``n``), in one line.
        """
        try:
            return F.one_hot(observation.long(), self.n).float()
        except RuntimeError:
            low, high = int(observation.min()), int(observation.max())
            raise ValueError(
                f"one-hot observations of {self.n} states need indices in [0, {self.n}), got "
                f"[{low}, {high}] (a Discrete space with start != 0?): shift the observations, "
                "or pass the agent your own model="
            ) from None

    def forward(self, observation: torch.Tensor, *rest: Any) -> Any:
        """The wrapped model on the encoded observation; the other inputs pass through."""
        return self.model(self.encode(observation), *rest)


class ValueOneHotObservation(OneHotObservation):
    """``OneHotObservation`` of a policy-gradient model with ``value(observation)``."""

    def value(self, observation: torch.Tensor) -> torch.Tensor:
        """The wrapped model's V(o) of the encoded observation."""
        value: Any = self.model.value  # the wrapped model's own (checked when built)
        return value(self.encode(observation))


class RecurrentOneHotObservation(OneHotObservation):
    """``OneHotObservation`` of a recurrent model (``tdrl.agents.base.RecurrentModel``)."""

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> TensorDict:
        """The wrapped model's zero state."""
        initial_state: Any = self.model.initial_state
        return initial_state(batch_size, device)


def one_hot_observations(model: nn.Module, n: int) -> OneHotObservation:
    """``model`` behind the one-hot encoding.

    The wrapper class declares what ``model`` offers (module docstring).
    """
    if getattr(model, "initial_state", None) is not None:
        return RecurrentOneHotObservation(model, n)
    if getattr(model, "value", None) is not None:
        return ValueOneHotObservation(model, n)
    return OneHotObservation(model, n)
