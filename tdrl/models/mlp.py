"""Multi-layer perceptron, and the float conversion in front of a network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from tdrl.utils.checks import check_int, check_int_list


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
        last = check_int("input_size", input_size, minimum=1)
        layers: list[nn.Module] = []
        for size in check_int_list("hidden_sizes", hidden_sizes, minimum=1):
            layers += [nn.Linear(last, size), nonlinearity()]
            last = size
        if output_size is not None:
            last_out = check_int("output_size", output_size, minimum=1)
            layers.append(nn.Linear(last, last_out))
            last = last_out
        self.net = nn.Sequential(*layers)
        self.output_size = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP applied to the last dim of ``x``."""
        return self.net(x)


class FloatInput(nn.Module):
    """Observations as float32, divided by ``scale`` if given, through ``module``.

    Pixels in ``[0, 255]`` (any dtype) take ``scale=255.0``; vector observations none.

    Args:
        module: the network; its ``output_size`` becomes this module's.
        scale: the divisor of the inputs (None: none).
    """

    def __init__(self, module: nn.Module, *, scale: float | None = None):
        super().__init__()
        self.module = module
        self.output_size = int(cast(int, module.output_size))
        self.scale = scale

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        """``module``'s features of the (scaled) float observations."""
        x = observation.to(torch.float32)
        return self.module(x if self.scale is None else x / self.scale)
