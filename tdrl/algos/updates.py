"""After each gradient step: priorities, the update counter, the target networks.

The second half of every off-policy ``update`` (DQN family, R2D1, DDPG, TD3, SAC, SAC_V,
PEARL), written once: ``finish_update`` writes a prioritized buffer's new priorities,
counts the update and calls ``targets_when_due``, which makes the agent's Polyak target
update (``TargetAgent.update_target``; compiled with the step under ``compile=True``)
every ``target_update_interval`` updates.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from tensordict import TensorDictBase

from tdrl import keys
from tdrl.utils.compile import maybe_compiled

__all__ = ["TargetAgent", "TargetUpdating", "finish_update", "targets_when_due", "update_targets"]


class TargetAgent(Protocol):
    """An agent with target networks (``DqnAgent``, ``DdpgAgent``, ``SacAgent``)."""

    def target_pairs(self) -> tuple[list[torch.Tensor], ...]:
        """The target and online tensors, paired (built once)."""
        ...

    def update_target(self, tau: float) -> None:
        """``target <- tau * online + (1 - tau) * target``."""
        ...


def update_targets(
    agent: TargetAgent, tau: float, *, compiled_on: bool, device: torch.device
) -> None:
    """The agent's Polyak target update, compiled when ``compiled_on`` (like the step)."""
    if compiled_on:
        agent.target_pairs()  # built before tracing: one compilation
    maybe_compiled(compiled_on, type(agent).update_target, device, agent, tau)


class TargetUpdating(Protocol):
    """What ``targets_when_due`` / ``finish_update`` read from an algorithm."""

    agent: Any  # a ``TargetAgent``
    compile: bool
    device: torch.device
    update_counter: int
    target_update_interval: int
    target_update_tau: float


def targets_when_due(algo: TargetUpdating) -> None:
    """The agent's target update, when ``algo.update_counter`` is a multiple of the interval."""
    if algo.update_counter % algo.target_update_interval == 0:
        update_targets(
            algo.agent, algo.target_update_tau, compiled_on=algo.compile, device=algo.device
        )


def finish_update(
    algo: TargetUpdating,
    info: dict[str, torch.Tensor],
    batch: TensorDictBase,
    *,
    priority: str | None = None,
    buffer: Any = None,
) -> dict[str, torch.Tensor]:
    """The bookkeeping after a gradient step; returns ``info``.

    Write ``info[priority]`` (per item) to ``buffer`` as the new priorities of the
    batch's ``index`` (a prioritized buffer; None: none), count the update, update the
    targets when due, and report the mean of ``info[priority]``.
    """
    if buffer is not None and priority is not None:
        buffer.update_priorities(batch.get(keys.INDEX), info[priority])
    algo.update_counter += 1
    targets_when_due(algo)
    if priority is not None:
        info[priority] = info[priority].mean()
    return info
