"""Elementwise losses shared by several algorithms."""

from __future__ import annotations

import torch

__all__ = ["huber"]


def huber(delta: torch.Tensor, delta_clip: float | None) -> torch.Tensor:
    """Huber loss of ``delta`` with threshold ``delta_clip`` (``0.5 delta^2`` when None)."""
    if delta_clip is None:
        return 0.5 * delta**2
    return torch.nn.functional.huber_loss(
        delta, torch.zeros_like(delta), reduction="none", delta=delta_clip
    )
