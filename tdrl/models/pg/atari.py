"""rlpyt's Atari policy-gradient models: a small conv net and policy and value heads.

``AtariFfModel`` is rlpyt's ``AtariFfModel``: conv ``[16, 32]``, kernels ``[8, 4]``, strides
``[4, 2]``, paddings ``[0, 1]``, then a 512-unit ReLU layer, then a softmax policy head
(logits) and a value head. ``atari_pg_trunk`` builds that trunk for the recurrent model too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tdrl.models.dqn.conv2d import Conv2dHeadModel
from tdrl.models.mlp import FloatInput


class PixelTrunk(FloatInput):
    """Pixels in ``[0, 255]`` (any dtype) → floats in ``[0, 1]`` → ``module``'s features.

    Args:
        module: the conv net and its fully connected layers.
    """

    def __init__(self, module: Conv2dHeadModel):
        super().__init__(module, scale=255.0)


def atari_pg_trunk(
    image_shape: Sequence[int],
    *,
    channels: Sequence[int] = (16, 32),
    kernel_sizes: Sequence[int] = (8, 4),
    strides: Sequence[int] = (4, 2),
    paddings: Sequence[int] = (0, 1),
    fc_sizes: Sequence[int] = (512,),
    use_maxpool: bool = False,
) -> PixelTrunk:
    """The Atari PG trunk of rlpyt: ``[..., C, H, W]`` pixels → ``[..., fc_sizes[-1]]``.

    The module has an ``output_size`` attribute.
    """
    return PixelTrunk(
        Conv2dHeadModel(
            image_shape,
            channels,
            kernel_sizes,
            strides,
            fc_sizes,
            None,
            paddings,
            use_maxpool,
        )
    )


class AtariFfModel(nn.Module):
    """Logits and a state value from stacked Atari frames (rlpyt's ``AtariFfModel``).

    Args:
        image_shape: ``(C, H, W)`` of the observation (C stacked frames).
        n_actions: number of discrete actions.
        channels: conv channels.
        kernel_sizes: conv kernel sizes.
        strides: conv strides.
        paddings: conv paddings.
        fc_sizes: hidden layers after the convolutions.
        use_maxpool: downsample with max-pooling instead of strides.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        n_actions: int,
        *,
        channels: Sequence[int] = (16, 32),
        kernel_sizes: Sequence[int] = (8, 4),
        strides: Sequence[int] = (4, 2),
        paddings: Sequence[int] = (0, 1),
        fc_sizes: Sequence[int] = (512,),
        use_maxpool: bool = False,
    ):
        super().__init__()
        self.trunk = atari_pg_trunk(
            image_shape,
            channels=channels,
            kernel_sizes=kernel_sizes,
            strides=strides,
            paddings=paddings,
            fc_sizes=fc_sizes,
            use_maxpool=use_maxpool,
        )
        self.pi = nn.Linear(self.trunk.output_size, n_actions)
        self.v = nn.Linear(self.trunk.output_size, 1)

    def forward(
        self, observation: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(logits [..., n_actions], value [...])``."""
        h = self.trunk(observation)
        return self.pi(h), self.v(h).squeeze(-1)

    def value(self, observation: torch.Tensor) -> torch.Tensor:
        """V(o) only."""
        return self.v(self.trunk(observation)).squeeze(-1)
