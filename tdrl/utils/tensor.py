"""Module helpers: Polyak updates, frozen copies and frozen blocks.

Device helpers are in ``tdrl.utils.device``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any

import torch


@torch.no_grad()
def polyak_update(
    target: Sequence[torch.Tensor], online: Sequence[torch.Tensor], tau: float
) -> None:
    """``target <- target + tau * (online - target)`` for paired tensors (tau=1: copy).

    One fused ``foreach`` call for all pairs.
    """
    if tau == 1.0:
        torch._foreach_copy_(list(target), list(online))
    else:
        torch._foreach_lerp_(list(target), list(online), tau)


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Within the block, ``module``'s parameters do not require gradients.

    A backward pass through what it computes reaches its inputs but neither touches nor
    pays for its weight gradients. ``requires_grad`` is restored on exit.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


def frozen_call(module: torch.nn.Module, *args: Any) -> Any:
    """``module(*args)`` with the gradient reaching ``args`` only, not the module's weights.

    Eager: within ``frozen(module)``. While ``torch.compile`` traces (a compiled update),
    where ``requires_grad_`` cannot be changed: the module called with its parameters
    detached (``torch.func.functional_call``). Both compute the same values and gradients.
    """
    if torch.compiler.is_compiling():
        params = {name: p.detach() for name, p in module.named_parameters()}
        return torch.func.functional_call(module, params, args)
    with frozen(module):
        return module(*args)


def frozen_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``module`` whose parameters do not require gradients (a target)."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target
