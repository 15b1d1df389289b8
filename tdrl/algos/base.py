"""What every algorithm provides to the runners.

An algorithm never sees envs or samplers: it receives TensorDicts.

* ``initialize(agent, *, n_itr, batch_spec)``: bind the agent, build optimizers and any
  schedule that needs the run length.
* ``loss(batch) -> TensorDict``: pure; the total ``loss`` (with gradient), its named
  ``loss_*`` terms and detached diagnostics. Does not modify ``batch``.
* ``optimize_agent(itr, samples) -> dict[str, list[float]]``: one iteration's updates; the
  returned diagnostics (``loss``, ``grad_norm``, ``entropy``, ...) are logged by the runner
  as ``<name>Average``, ``<name>Std``, ... with no per-algorithm code.
* ``state_dict()`` / ``load_state_dict()``: optimizer and schedule state for snapshots.
* ``discount``: used by samplers for ``TrajInfo.DiscountedReturn``.
* ``update_counter``: gradient updates done so far (for ``Diagnostics/CumUpdates``).
* ``batch_size``: samples per gradient update, set by ``initialize`` (for
  ``Diagnostics/ReplayRatio``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch
from tensordict import TensorDict, TensorDictBase

from tdrl.agents.base import Agent
from tdrl.samplers.base import BatchSpec


class Algorithm(Protocol):
    """Structural type of tdrl algorithms (see the module docstring)."""

    discount: float
    update_counter: int
    batch_size: int

    def initialize(self, agent: Agent, *, n_itr: int, batch_spec: BatchSpec) -> None: ...

    def loss(self, batch: TensorDictBase) -> TensorDict: ...

    def optimize_agent(self, itr: int, samples: TensorDictBase) -> dict[str, list[float]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def check_range(name: str, value: float, low: float, high: float) -> float:
    """Return ``float(value)`` if ``low <= value <= high``, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def make_optimizer(
    optim_cls: type[torch.optim.Optimizer],
    params: Iterable[torch.nn.Parameter],
    learning_rate: float,
    optim_kwargs: dict[str, Any],
) -> torch.optim.Optimizer:
    """Build an optimizer; Adam and AdamW use their fused kernel unless told otherwise
    (same arithmetic, one kernel per step instead of several per parameter)."""
    kwargs = dict(optim_kwargs)
    if optim_cls in (torch.optim.Adam, torch.optim.AdamW) and "foreach" not in kwargs:
        kwargs.setdefault("fused", True)
    return optim_cls(params, lr=learning_rate, **kwargs)
