"""Convolutional trunks for image observations.

Both models accept any number of leading dims (``[B, C, H, W]``, ``[T, B, C, H, W]``, ...):
they are flattened into one batch dim for the convolutions and restored afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tdrl.models.mlp import MlpModel
from tdrl.utils.checks import check_int_list


class Conv2dModel(nn.Module):
    """Stack of ``Conv2d`` layers, each followed by the nonlinearity.

    With ``use_maxpool=True`` every convolution runs with stride 1 and is followed by
    ``MaxPool2d(stride)`` (omitted where the stride is 1), so the requested strides become
    pooling strides (rlpyt's option).

    Args:
        in_channels: channels of the input image.
        channels: output channels of each convolution.
        kernel_sizes: kernel size of each convolution.
        strides: stride of each convolution (or of its max-pool with ``use_maxpool``).
        paddings: zero padding of each convolution; ``None`` means no padding.
        nonlinearity: activation class applied after each convolution.
        use_maxpool: downsample with max-pooling instead of strided convolutions.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        kernel_sizes: Sequence[int],
        strides: Sequence[int],
        paddings: Sequence[int] | None = None,
        nonlinearity: type[nn.Module] = nn.ReLU,
        use_maxpool: bool = False,
    ):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if paddings is None:
            paddings = [0] * len(channels)
        if not len(channels) == len(kernel_sizes) == len(strides) == len(paddings):
            raise ValueError(
                "channels, kernel_sizes, strides and paddings must have the same length, got "
                f"{len(channels)}, {len(kernel_sizes)}, {len(strides)}, {len(paddings)}"
            )
        if len(channels) == 0:
            raise ValueError("channels must name at least one convolution")
        self.in_channels = in_channels
        self.channels = check_int_list("channels", channels, 1)
        self.kernel_sizes = check_int_list("kernel_sizes", kernel_sizes, 1)
        self.strides = check_int_list("strides", strides, 1)
        self.paddings = check_int_list("paddings", paddings, 0)
        self.use_maxpool = use_maxpool
        layers: list[nn.Module] = []
        last = in_channels
        for c, k, s, p in zip(
            self.channels, self.kernel_sizes, self.strides, self.paddings, strict=True
        ):
            layers += [nn.Conv2d(last, c, k, 1 if use_maxpool else s, p), nonlinearity()]
            if use_maxpool and s > 1:
                layers.append(nn.MaxPool2d(s))
            last = c
        self.conv = nn.Sequential(*layers)

    def conv_out_shape(self, h: int, w: int) -> tuple[int, int, int]:
        """``(channels, height, width)`` of the output for an ``h`` × ``w`` input.

        Raises:
            ValueError: if the image is too small for the stack.
        """
        h0, w0 = h, w
        for k, s, p in zip(self.kernel_sizes, self.strides, self.paddings, strict=True):
            conv_s = 1 if self.use_maxpool else s
            h = (h + 2 * p - k) // conv_s + 1
            w = (w + 2 * p - k) // conv_s + 1
            if self.use_maxpool and s > 1:
                h, w = (h - s) // s + 1, (w - s) // s + 1
            if h < 1 or w < 1:
                raise ValueError(f"a {h0}x{w0} image is too small for this convolution stack")
        return self.channels[-1], h, w

    def conv_out_size(self, h: int, w: int) -> int:
        """Number of features in the flattened output for an ``h`` × ``w`` input."""
        c, h, w = self.conv_out_shape(h, w)
        return c * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps ``[..., C, H, W]`` to ``[..., C', H', W']``."""
        if x.dim() < 3:
            raise ValueError(f"expected [..., C, H, W] input, got shape {tuple(x.shape)}")
        lead = x.shape[:-3]
        y = self.conv(x.reshape(-1, *x.shape[-3:]))
        return y.reshape(*lead, *y.shape[1:])


class Conv2dHeadModel(nn.Module):
    """:class:`Conv2dModel` followed by an MLP on the flattened features.

    Args:
        image_shape: ``(C, H, W)`` of the input.
        channels: output channels of each convolution.
        kernel_sizes: kernel size of each convolution.
        strides: stride of each convolution.
        hidden_sizes: hidden layer sizes of the MLP (may be empty).
        output_size: size of the MLP's output layer; ``None`` ends on the last hidden layer
            (or on the flattened conv features when ``hidden_sizes`` is empty).
        paddings: zero padding of each convolution; ``None`` means no padding.
        use_maxpool: downsample with max-pooling instead of strided convolutions.
        nonlinearity: activation class for the convolutions and the MLP.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        channels: Sequence[int],
        kernel_sizes: Sequence[int],
        strides: Sequence[int],
        hidden_sizes: Sequence[int],
        output_size: int | None = None,
        paddings: Sequence[int] | None = None,
        use_maxpool: bool = False,
        nonlinearity: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
        c, h, w = check_int_list("image_shape", image_shape, 1)
        if output_size is not None and output_size < 1:
            raise ValueError(f"output_size must be >= 1 or None, got {output_size}")
        self.image_shape = (c, h, w)
        self.conv = Conv2dModel(
            c, channels, kernel_sizes, strides, paddings, nonlinearity, use_maxpool
        )
        self.head = MlpModel(
            self.conv.conv_out_size(h, w),
            check_int_list("hidden_sizes", hidden_sizes, 1),
            output_size,
            nonlinearity,
        )
        self.output_size = self.head.output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps ``[..., C, H, W]`` to ``[..., output_size]``."""
        features = self.conv(x)
        return self.head(features.flatten(start_dim=features.dim() - 3))
