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

import contextlib
from collections.abc import Iterable
from typing import Any, Protocol

import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
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


def replay_updates(algo: Any, itr: int, samples: TensorDictBase | None) -> dict[str, list[float]]:
    """The replay schedule of the off-policy algorithms (DQN family, DDPG, TD3, SAC).

    Append the sampler's batch (``None``: the caller stored it, as ``AsyncRl``'s sampler
    thread does), then, from ``algo.min_itr_learn`` on, make ``algo.updates_per_optimize``
    calls of ``algo.update`` on minibatches of ``algo.batch_size``. When
    ``algo.replay_lock`` is set (``AsyncRl``), each draw-and-update holds it, so appends
    from another thread land between updates.

    Returns:
        The updates' diagnostics as lists (one synchronisation per iteration).
    """
    lock = getattr(algo, "replay_lock", None) or contextlib.nullcontext()
    if samples is not None and samples.get(keys.VALID, None) is not None:
        raise ValueError(
            f"{type(algo).__name__} stores every transition of a batch; wait-reset "
            "collection (mid_batch_reset=False) is for on-policy algorithms"
        )
    if samples is not None:
        with lock:
            algo.replay_buffer.append_samples(samples)
    if itr < algo.min_itr_learn or len(algo.replay_buffer) == 0:
        return {}
    info: dict[str, list[torch.Tensor]] = {}
    for _ in range(algo.updates_per_optimize):
        with lock:
            step_info = algo.update(algo.replay_buffer.sample_batch(algo.batch_size))
        for key, value in step_info.items():
            info.setdefault(key, []).append(value)
    return {k: torch.stack(v).tolist() for k, v in info.items()}
