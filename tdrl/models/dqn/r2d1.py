"""Recurrent Q-networks for R2D1: a trunk, an LSTM, a Q (or dueling) head.

The LSTM's input at step t is ``[trunk(o_t), one_hot(a_{t-1}), r_{t-1}]``, as rlpyt's
``AtariR2d1Model``; its output goes through the head to one Q-value per action. The trunk is
an MLP for vector observations (``R2d1MlpModel``) or rlpyt's Atari conv net with a 512-unit
layer (``AtariR2d1Model``: conv ``[32, 64, 64]``, kernels ``[8, 4, 3]``, strides ``[4, 2, 1]``,
paddings ``[0, 1, 1]``, FC 512 ReLU, LSTM 512, head 512).

Every forward takes ``(observation, prev_action, prev_reward, (h, c), is_init=None)`` with
either one step (``[B, ...]`` inputs, ``prev_reward`` ``[B, 1]``: the sampler's call) or a
sequence (``[T, B, ...]``, ``prev_reward`` ``[T, B, 1]``: training) and returns
``(q, (h, c))``: Q-values with the same leading dims and the state after the last step. The
state is ``tdrl.models.lstm``'s (``[B, layers, hidden]`` each), reset to zeros at the steps
where ``is_init`` is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from tensordict import TensorDict
from torch import nn

from tdrl.models.dqn.conv2d import Conv2dHeadModel
from tdrl.models.dqn.heads import q_head
from tdrl.models.lstm import LstmCore, RnnState
from tdrl.models.mlp import FloatInput, MlpModel
from tdrl.utils.checks import check_bool, check_int, check_int_list


class R2d1Model(nn.Module):
    """``trunk → LSTM([features, one-hot a_{t-1}, r_{t-1}]) → head → Q``.

    Args:
        trunk: maps observations ``[N, ...]`` to features ``[N, trunk.output_size]``.
        output_size: number of actions.
        lstm_size: LSTM units.
        head_sizes: hidden layers of the head (of each stream with ``dueling``).
        dueling: a ``DuelingHeadModel`` head (``Q = V + A - mean A``).
        nonlinearity: activation of the head's hidden layers.
    """

    def __init__(
        self,
        trunk: nn.Module,
        output_size: int,
        *,
        lstm_size: int,
        head_sizes: Sequence[int],
        dueling: bool = False,
        nonlinearity: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        self.trunk = trunk
        self.output_size = check_int("output_size", output_size, minimum=1)
        self.dueling = check_bool("dueling", dueling)
        lstm_size = check_int("lstm_size", lstm_size, minimum=1)
        heads = check_int_list("head_sizes", head_sizes, 1)
        self.lstm = LstmCore(int(cast(int, trunk.output_size)) + self.output_size + 1, lstm_size)
        self.head = q_head(
            lstm_size, heads, self.output_size, dueling=self.dueling, nonlinearity=nonlinearity
        )

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> TensorDict:
        """The zero state of ``batch_size`` envs (``h``, ``c``: ``[B, 1, lstm_size]``)."""
        return self.lstm.initial_state(batch_size, device)

    def forward(
        self,
        observation: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        state: RnnState,
        is_init: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, RnnState]:
        """Q-values and the state after the last step (see the module docstring).

        Args:
            observation: ``[*lead, ...]`` with ``lead`` ``[B]`` or ``[T, B]``.
            prev_action: ``[*lead]`` action indices.
            prev_reward: ``[*lead, 1]``.
            state: ``(h, c)`` entering the first step.
            is_init: ``[*lead]`` bool: the state entering the step is reset (None: none).

        Returns:
            ``(q [*lead, output_size], (h, c))``.
        """
        lead = prev_reward.shape[:-1]
        if len(lead) not in (1, 2):
            raise ValueError(
                "prev_reward must be [B, 1] (one step) or [T, B, 1] (a sequence), got "
                f"{tuple(prev_reward.shape)}"
            )
        obs = observation.reshape(-1, *observation.shape[len(lead) :])
        features = self.trunk(obs)
        action = nn.functional.one_hot(prev_action.reshape(-1).long(), self.output_size)
        reward = prev_reward.reshape(-1, 1).to(features.dtype)
        x = torch.cat([features, action.to(features.dtype), reward], dim=-1)
        seq = x.view(1, *lead, -1) if len(lead) == 1 else x.view(*lead, -1)
        if is_init is not None:
            is_init = is_init.reshape(seq.shape[:2])
        y, state = self.lstm(seq, state, is_init)
        return self.head(y.view(*lead, -1)), state


class R2d1MlpModel(R2d1Model):
    """R2D1 Q-network for vector observations: MLP trunk, LSTM, MLP (or dueling) head.

    Args:
        observation_size: size of the flat observation.
        output_size: number of actions.
        hidden_sizes: the trunk's hidden layers (empty: the LSTM reads the observation).
        lstm_size: LSTM units.
        head_sizes: hidden layers of the head (of each stream with ``dueling``).
        dueling: use a dueling head.
        nonlinearity: activation of the trunk and the head.
    """

    def __init__(
        self,
        observation_size: int,
        output_size: int,
        *,
        hidden_sizes: Sequence[int] = (64,),
        lstm_size: int = 64,
        head_sizes: Sequence[int] = (64,),
        dueling: bool = False,
        nonlinearity: type[nn.Module] = nn.ReLU,
    ):
        observation_size = check_int("observation_size", observation_size, minimum=1)
        trunk = MlpModel(observation_size, check_int_list("hidden_sizes", hidden_sizes, 1))
        super().__init__(
            FloatInput(trunk),
            output_size,
            lstm_size=lstm_size,
            head_sizes=head_sizes,
            dueling=dueling,
            nonlinearity=nonlinearity,
        )


class AtariR2d1Model(R2d1Model):
    """rlpyt's ``AtariR2d1Model``: conv trunk + FC 512, LSTM 512, head 512 (or dueling).

    Args:
        image_shape: ``(C, H, W)`` of the stacked frames (pixels in ``[0, 255]``).
        output_size: number of actions.
        fc_size: the ReLU layer after the convolutions.
        lstm_size: LSTM units.
        head_size: hidden layer of the head (of each stream with ``dueling``).
        dueling: use a dueling head (rlpyt's ``r2d1`` config does).
        use_maxpool: downsample with max-pooling instead of strided convolutions.
        channels: output channels of each convolution.
        kernel_sizes: kernel size of each convolution.
        strides: stride of each convolution.
        paddings: zero padding of each convolution.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        output_size: int,
        *,
        fc_size: int = 512,
        lstm_size: int = 512,
        head_size: int = 512,
        dueling: bool = False,
        use_maxpool: bool = False,
        channels: Sequence[int] = (32, 64, 64),
        kernel_sizes: Sequence[int] = (8, 4, 3),
        strides: Sequence[int] = (4, 2, 1),
        paddings: Sequence[int] = (0, 1, 1),
    ):
        conv = Conv2dHeadModel(
            image_shape,
            channels,
            kernel_sizes,
            strides,
            [check_int("fc_size", fc_size, minimum=1)],
            None,
            paddings,
            check_bool("use_maxpool", use_maxpool),
        )
        super().__init__(
            FloatInput(conv, scale=255.0),
            output_size,
            lstm_size=lstm_size,
            head_sizes=[check_int("head_size", head_size, minimum=1)],
            dueling=dueling,
        )
