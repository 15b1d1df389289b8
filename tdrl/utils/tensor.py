"""Small tensor helpers."""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def polyak_update(
    target: Sequence[torch.Tensor], online: Sequence[torch.Tensor], tau: float
) -> None:
    """``target <- target + tau * (online - target)`` for paired tensors (tau=1: copy),
    with one fused ``foreach`` call."""
    if tau == 1.0:
        torch._foreach_copy_(list(target), list(online))
    else:
        torch._foreach_lerp_(list(target), list(online), tau)
