"""Multi-layer perceptron."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MlpModel(nn.Module):
    """Linear layers with a nonlinearity between them.

    Args:
        input_size: size of the last input dim.
        hidden_sizes: sizes of the hidden layers (may be empty).
        output_size: size of the output layer; ``None`` ends on the last hidden layer (with
            its nonlinearity).
        nonlinearity: activation class applied after each hidden layer.
    """

    def __init__(
        self,
        input_size: int,
        hidden_sizes: Sequence[int],
        output_size: int | None = None,
        nonlinearity: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        if input_size < 1:
            raise ValueError(f"input_size must be >= 1, got {input_size}")
        layers: list[nn.Module] = []
        last = input_size
        for size in hidden_sizes:
            layers += [nn.Linear(last, int(size)), nonlinearity()]
            last = int(size)
        if output_size is not None:
            layers.append(nn.Linear(last, output_size))
            last = output_size
        self.net = nn.Sequential(*layers)
        self.output_size = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
