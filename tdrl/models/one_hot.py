"""Index observations (a gymnasium ``Discrete`` space) one-hot encoded in front of a model.

FrozenLake, Taxi and CliffWalking observe a state index. The default models take vectors,
so ``tdrl.agents.base.Agent.initialize`` builds the default model for ``n``-vectors and
puts ``OneHotObservation`` in front of it, as Stable-Baselines3 encodes such observations.
The samplers and replay buffers keep storing the index (one ``int64`` per step, not ``n``
floats).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's name

from tdrl.utils.checks import check_positive_int


class OneHotObservation(nn.Module):
    """``model(one_hot(observation, n), *rest)`` for index observations in ``[0, n)``.

    The wrapped model's ``initial_state`` (a recurrent model) and ``value`` (V(o) alone) are
    offered when it has them, ``value`` on the encoded observation, so the wrapper is a
    recurrent or value model exactly when ``model`` is.

    Args:
        model: a model whose observation input is a float vector of size ``n``.
        n: the number of states (the ``Discrete`` space's ``n``; its ``start`` must be 0).
    """

    def __init__(self, model: nn.Module, n: int):
        super().__init__()
        self.model = model
        self.n = check_positive_int("n", n)

    def encode(self, observation: torch.Tensor) -> torch.Tensor:
        """Float one-hot vectors ``[..., n]`` of index observations ``[...]``."""
        return F.one_hot(observation.long(), self.n).float()

    def forward(self, observation: torch.Tensor, *rest: Any) -> Any:
        """The wrapped model on the encoded observation; the other inputs pass through."""
        return self.model(self.encode(observation), *rest)

    def __getattr__(self, name: str) -> Any:
        """``initial_state`` and ``value`` of the wrapped model (module docstring)."""
        if name == "initial_state":
            return getattr(self.model, name)
        if name == "value":
            value = getattr(self.model, name)
            return lambda observation: value(self.encode(observation))
        return super().__getattr__(name)
