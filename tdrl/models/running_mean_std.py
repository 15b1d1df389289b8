"""Running mean and variance of observations (for MuJoCo observation normalisation)."""

from __future__ import annotations

import torch
from torch import nn


class RunningMeanStd(nn.Module):
    """Running mean/variance over all leading dims, kept as buffers (saved with the model).

    Uses the parallel (Chan et al.) update, so a batch of any size merges exactly.

    Args:
        shape: shape of one observation.
        clip: normalised values are clipped to ``[-clip, clip]``.
        min_var: variance floor.
    """

    def __init__(
        self, shape: tuple[int, ...] | torch.Size, clip: float = 10.0, min_var: float = 1e-6
    ):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.clip = clip
        self.min_var = min_var

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge a batch ``[..., *shape]`` into the statistics."""
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
        mean = self.mean.to(x.dtype)
        std = self.var.clamp_min(self.min_var).sqrt().to(x.dtype)
        return ((x - mean) / std).clamp(-self.clip, self.clip)
