"""Atari Q-networks: the Nature-DQN convolution trunk with a Q, dueling or C51 head.

Observations are stacked frames ``[..., C, H, W]`` holding pixel values in ``[0, 255]``
(normally uint8); the models convert them to float and divide by 255 themselves, so the
replay buffer can keep uint8 frames. Leading dims are arbitrary (``[B]`` or ``[T, B]``).

With ``autocast=True`` the network runs under bf16 autocast on CUDA (convolutions and
matrix products in bfloat16, the output cast back to float32); on other devices it runs
in float32 as usual and warns once that the option has no effect there.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from tdrl.models.dqn.conv2d import Conv2dModel
from tdrl.models.dqn.heads import q_head
from tdrl.utils.checks import check_bool, check_int, check_int_list


def bf16_autocast(enabled: bool, x: torch.Tensor) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled``; elsewhere no autocast (with a warning).

    Args:
        enabled: the model's ``autocast`` option.
        x: the model's input (its device decides).
    """
    if not enabled:
        return contextlib.nullcontext()
    if x.device.type != "cuda":
        warnings.warn(
            f"autocast=True has no effect on {x.device.type}: the Atari models use bf16 "
            "autocast on CUDA only and run in float32 here",
            stacklevel=3,
        )
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)


class _AtariConvTrunk(nn.Module):
    """Pixels ``[..., C, H, W]`` in ``[0, 255]`` → flat conv features ``[..., conv_out_size]``."""

    def __init__(
        self,
        image_shape: Sequence[int],
        use_maxpool: bool,
        channels: Sequence[int],
        kernel_sizes: Sequence[int],
        strides: Sequence[int],
        paddings: Sequence[int],
    ):
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
        c, h, w = check_int_list("image_shape", image_shape, 1)
        self.image_shape = (c, h, w)
        self.conv = Conv2dModel(c, channels, kernel_sizes, strides, paddings, nn.ReLU, use_maxpool)
        self.output_size = self.conv.conv_out_size(h, w)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        if tuple(observation.shape[-3:]) != self.image_shape:
            raise ValueError(
                f"expected observation [..., {self.image_shape}], got {tuple(observation.shape)}"
            )
        x = observation.to(torch.float32) / 255.0
        return self.conv(x).flatten(start_dim=observation.dim() - 3)


def _fc_list(fc_sizes: int | Sequence[int]) -> list[int]:
    sizes = list(fc_sizes) if isinstance(fc_sizes, Sequence) else [fc_sizes]
    return check_int_list("fc_sizes", sizes, 1)


class AtariDqnModel(nn.Module):
    """Q-values for Atari: conv trunk, then an MLP (``fc_sizes``) to one Q per action.

    With ``dueling=True`` the MLP is a :class:`DuelingHeadModel` (each stream has its own
    ``fc_sizes`` layers, gradient into the trunk scaled by 2^-1/2, shared advantage bias).
    With ``n_atoms`` the head is distributional (``AtariCatDqnModel``).

    Args:
        image_shape: ``(C, H, W)`` of the stacked frames.
        output_size: number of actions.
        n_atoms: None: Q-values ``[..., output_size]``; an int: C51 logits
            ``[..., output_size, n_atoms]`` (``AtariCatDqnModel``'s default: 51).
        fc_sizes: hidden layer size(s) of the head.
        dueling: use the dueling head.
        use_maxpool: downsample with max-pooling instead of strided convolutions.
        channels: output channels of each convolution.
        kernel_sizes: kernel size of each convolution.
        strides: stride of each convolution.
        paddings: zero padding of each convolution.
        autocast: run under bf16 autocast on CUDA (see the module docstring).
    """

    #: The atoms when ``n_atoms`` is None (None: plain Q-values).
    default_n_atoms: ClassVar[int | None] = None

    def __init__(
        self,
        image_shape: Sequence[int],
        output_size: int,
        *,
        n_atoms: int | None = None,
        fc_sizes: int | Sequence[int] = 512,
        dueling: bool = False,
        use_maxpool: bool = False,
        channels: Sequence[int] = (32, 64, 64),
        kernel_sizes: Sequence[int] = (8, 4, 3),
        strides: Sequence[int] = (4, 2, 1),
        paddings: Sequence[int] = (0, 1, 1),
        autocast: bool = False,
    ):
        super().__init__()
        self.autocast = check_bool("autocast", autocast)
        output_size = check_int("output_size", output_size, minimum=1)
        fc = _fc_list(fc_sizes)
        self.trunk = _AtariConvTrunk(
            image_shape, use_maxpool, channels, kernel_sizes, strides, paddings
        )
        self.dueling = dueling
        self.n_atoms = self.default_n_atoms if n_atoms is None else n_atoms
        self.head = q_head(
            self.trunk.output_size, fc, output_size, dueling=dueling, n_atoms=self.n_atoms
        )

    def forward(
        self, observation: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor
    ) -> torch.Tensor:
        """Q-values ``[..., output_size]`` (logits ``[..., output_size, n_atoms]`` with atoms).

        ``prev_action`` and ``prev_reward`` are unused.
        """
        with bf16_autocast(self.autocast, observation):
            out = self.head(self.trunk(observation))
        return out.float() if self.autocast else out


class AtariCatDqnModel(AtariDqnModel):
    """C51 logits for Atari: conv trunk, then a distributional (optionally dueling) head.

    Returns **logits** ``[..., output_size, n_atoms]``; apply ``softmax`` (or ``log_softmax``)
    over the last dim for the return distribution. rlpyt returned the probabilities. The
    arguments are ``AtariDqnModel``'s; ``n_atoms`` defaults to 51 here, and ``dueling`` uses
    :class:`DistributionalDuelingHeadModel`.
    """

    default_n_atoms = 51
