"""The state methods of an algorithm that steps one ``self.optimizer``, written once.

A2C, the DQN family and SAC_V keep one optimizer and an update counter, and their
``optimizers``, ``state_dict`` and ``load_state_dict`` are these plain functions, bound as
methods in the class body (``state_dict = one_optimizer.state_dict``)::

    from tdrl.algos import one_optimizer

    class MyAlgo:
        optimizers = one_optimizer.optimizers
        state_dict = one_optimizer.state_dict
        load_state_dict = one_optimizer.load_state_dict
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from tdrl.algos.settings import counted_state, load_counted_state


class OneOptimizerAlgo(Protocol):
    """What these methods read: one optimizer and the update counter."""

    optimizer: torch.optim.Optimizer
    update_counter: int


def optimizers(self: OneOptimizerAlgo) -> list[torch.optim.Optimizer]:
    """The optimizers this algorithm steps."""
    return [self.optimizer]


def state_dict(self: OneOptimizerAlgo) -> dict[str, Any]:
    """Optimizer state and update counter (a replay buffer is saved apart)."""
    return counted_state({"optimizer": self.optimizer}, self.update_counter)


def load_state_dict(self: OneOptimizerAlgo, state: dict[str, Any]) -> None:
    """Restore ``state_dict()``."""
    self.update_counter = load_counted_state({"optimizer": self.optimizer}, state)
