"""Target networks: frozen copies of online networks, kept close by Polyak updates.

Every agent with targets (``DqnAgent``, ``R2d1Agent``, ``DdpgAgent``, ``SacAgent``,
``PearlAgent``) holds a ``TargetNetworks`` built in ``initialize`` from its ``(target,
online)`` module pairs; its ``target_pairs()`` and ``update_target(tau)`` are those of this
object. The tensor lists are built on first use, not at construction: module traversal
costs ~100 us per call, and a move to a device that replaces the parameters (e.g. to the
``meta`` device) happens between ``initialize`` and the first update.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tdrl.utils.tensor import polyak_update


class TargetNetworks:
    """``(target, online)`` module pairs and the Polyak update from online to target.

    Args:
        pairs: the ``(target, online)`` modules, in a fixed order.
        buffers: copy the online buffers into the targets at each update (DQN, R2D1);
            otherwise buffers are left alone (DDPG, SAC, PEARL).
    """

    def __init__(self, pairs: Sequence[tuple[nn.Module, nn.Module]], *, buffers: bool = False):
        self.modules = list(pairs)
        self.buffers = buffers
        self._tensors: tuple[list[torch.Tensor], ...] | None = None

    def tensors(self) -> tuple[list[torch.Tensor], ...]:
        """Target and online parameters, then target and online buffers (built once).

        The buffer lists are empty unless ``buffers``.
        """
        if self._tensors is None:
            targets, onlines = [t for t, _ in self.modules], [o for _, o in self.modules]
            self._tensors = (
                [p for m in targets for p in m.parameters()],
                [p for m in onlines for p in m.parameters()],
                [b for m in targets for b in m.buffers()] if self.buffers else [],
                [b for m in onlines for b in m.buffers()] if self.buffers else [],
            )
        return self._tensors

    @torch.no_grad()
    def update(self, tau: float = 1.0) -> None:
        """``target <- tau * online + (1 - tau) * target`` (tau=1: a copy); buffers copied."""
        target, online, target_buffers, online_buffers = self.tensors()
        polyak_update(target, online, tau)
        if target_buffers:
            polyak_update(target_buffers, online_buffers, 1.0)
