"""The settings and state every algorithm shares, checked and built once.

Each algorithm keeps its hyperparameters as typed keyword-only constructor arguments (the
off-policy ones are keyword-only dataclasses, so that a variant such as ``TD3`` or
``CategoricalDQN`` declares only the defaults and arguments it changes); the checks they
share, and what is built from them, are these functions:

* ``tdrl.algos.replay.check_replay_settings`` (beside the replay schedule): in place, the
  settings every replay algorithm has, and its ``ReplayConfig``;
* ``check_optimizer_args``: ``learning_rate``, ``optim_cls`` and ``optim_kwargs``;
* ``check_target_args``: ``target_update_tau`` and ``target_update_interval`` (the
  off-policy algorithms' Polyak target updates, ``tdrl.algos.updates``);
* ``algo_optimizer``: the optimizer over some parameters from those settings, fused for
  the compiled step when the algorithm has ``compile=True``;
* ``param_group``: an optimizer's parameter group by its ``"name"``;
* ``counted_state`` / ``load_counted_state``: ``state_dict`` / ``load_state_dict`` of an
  algorithm whose state is its optimizers and its update counter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import torch

from tdrl.utils.checks import check_int, check_range
from tdrl.utils.optim import (
    check_optimizer,
    load_optimizers_state,
    make_optimizer,
    optimizers_state,
)

__all__ = [
    "OptimizingAlgorithm",
    "algo_optimizer",
    "check_optimizer_args",
    "check_target_args",
    "counted_state",
    "load_counted_state",
    "param_group",
]


def check_optimizer_args(
    learning_rate: float,
    optim_cls: type[torch.optim.Optimizer],
    optim_kwargs: Mapping[str, Any] | None,
) -> tuple[float, type[torch.optim.Optimizer], dict[str, Any]]:
    """``learning_rate`` in ``[0, 10]``, and ``tdrl.utils.optim.check_optimizer``'s checks."""
    return (
        check_range("learning_rate", learning_rate, 0.0, 10.0),
        *check_optimizer(optim_cls, optim_kwargs),
    )  # type: ignore[return-value]


def check_target_args(target_update_tau: float, target_update_interval: int) -> tuple[float, int]:
    """``target_update_tau`` in ``(0, 1]`` (1: hard copy) and an interval of at least 1."""
    return (
        check_range("target_update_tau", target_update_tau, 1e-12, 1.0),
        check_int("target_update_interval", target_update_interval, minimum=1),
    )


class OptimizingAlgorithm(Protocol):
    """What ``algo_optimizer`` reads from an algorithm (after ``initialize`` set ``device``)."""

    learning_rate: float
    optim_cls: type[torch.optim.Optimizer]
    optim_kwargs: dict[str, Any]
    compile: bool
    device: torch.device


def algo_optimizer(
    algo: OptimizingAlgorithm,
    params: Iterable[Any],
    *,
    learning_rate: float | None = None,
    tensor_lr: bool = False,
) -> torch.optim.Optimizer:
    """``algo.optim_cls`` over ``params`` (or parameter groups) with ``algo.optim_kwargs``.

    Args:
        algo: the algorithm whose settings build it.
        params: parameters or parameter groups.
        learning_rate: the step size (None: ``algo.learning_rate``).
        tensor_lr: hold the learning rate in a tensor (a compiled step with a schedule).
    """
    return make_optimizer(
        algo.optim_cls,
        params,
        algo.learning_rate if learning_rate is None else learning_rate,
        algo.optim_kwargs,
        compile_on=algo.device if algo.compile else None,
        tensor_lr=tensor_lr,
    )


def param_group(optimizer: torch.optim.Optimizer, name: str) -> dict[str, Any]:
    """The parameter group of ``optimizer`` whose ``"name"`` entry is ``name``.

    Raises:
        KeyError: no such group (the message lists the names there are).
    """
    for group in optimizer.param_groups:
        if group.get("name") == name:
            return group
    names = [g.get("name") for g in optimizer.param_groups]
    raise KeyError(f"no parameter group {name!r}; groups: {names}")


def counted_state(
    optimizers: Mapping[str, torch.optim.Optimizer], update_counter: int, **extra: Any
) -> dict[str, Any]:
    """A ``state_dict``: each optimizer's portable state by name, ``extra`` and the counter."""
    return {**optimizers_state(optimizers), **extra, "update_counter": update_counter}


def load_counted_state(
    optimizers: Mapping[str, torch.optim.Optimizer], state: Mapping[str, Any]
) -> int:
    """Restore the optimizers of ``counted_state``; returns its update counter."""
    load_optimizers_state(optimizers, state)
    return int(state["update_counter"])
