"""Running mean and variance of observations (for MuJoCo observation normalisation)."""

from __future__ import annotations

import torch
from torch import nn


class RunningMeanStd(nn.Module):
    """Running mean/variance over all leading dims, kept as buffers (saved with the model).

    Uses the parallel (Chan et al.) update, so a batch of any size merges exactly.

    With ``sync_across_ranks`` set (``SyncRl`` sets it for a run) and a
    ``torch.distributed`` process group initialised, ``update`` merges the batches of all
    ranks at once (``update_across_ranks``), so every replica normalises alike.

    Args:
        shape: shape of one observation.
        clip: normalised values are clipped to ``[-clip, clip]``.
        min_var: variance floor.
    """

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(
        self, shape: tuple[int, ...] | torch.Size, clip: float = 10.0, min_var: float = 1e-6
    ):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.clip = clip
        self.min_var = min_var
        self.sync_across_ranks = False

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge a batch ``[..., *shape]`` into the statistics.

        Across ranks when ``sync_across_ranks`` is set.
        """
        if self.sync_across_ranks:
            self.update_across_ranks(x)
        else:
            self._merge_local(x)

    def _merge_local(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, *self.mean.shape).to(torch.float64)
        n = x.shape[0]
        if n == 0:
            return
        batch_mean = x.mean(0)
        batch_var = x.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        m2 = self.var * self.count + batch_var * n + delta.pow(2) * self.count * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` standardised with the running statistics, clipped to ``[-clip, clip]``."""
        mean = self.mean.to(x.dtype)
        std = self.var.clamp_min(self.min_var).sqrt().to(x.dtype)
        return ((x - mean) / std).clamp(-self.clip, self.clip)

    @torch.no_grad()
    def update_across_ranks(
        self, x: torch.Tensor, group: torch.distributed.ProcessGroup | None = None
    ) -> None:
        """Merge the batches ``[..., *shape]`` of all ``torch.distributed`` ranks at once.

        Every rank calls it with its own batch (a collective call, like an all-reduce); the
        batch moments are summed across ranks before the merge, so all ranks end with the
        statistics of the concatenation of their batches, and with equal statistics when
        they started equal. Without an initialised process group it is ``update(x)``.

        Args:
            x: this rank's observations.
            group: the process group (None: the default group).
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            self._merge_local(x)
            return
        x = x.reshape(-1, *self.mean.shape).to(self.mean.device, torch.float64)
        # Sums around the current mean (equal on all ranks) keep the one-pass variance exact;
        # the batch mean relative to it is the delta of the Chan merge in ``update``.
        centred = x - self.mean
        k = self.mean.numel()
        sums = torch.cat(
            [
                x.new_full((1,), x.shape[0]),
                centred.sum(0).reshape(-1),
                centred.pow(2).sum(0).reshape(-1),
            ]
        )
        dist.all_reduce(sums, group=group)
        n = sums[0]
        if n == 0:
            return
        delta = sums[1 : 1 + k].view_as(self.mean) / n
        batch_var = (sums[1 + k :].view_as(self.mean) / n - delta.pow(2)).clamp_min(0.0)
        total = self.count + n
        self.mean += delta * n / total
        m2 = self.var * self.count + batch_var * n + delta.pow(2) * self.count * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)
