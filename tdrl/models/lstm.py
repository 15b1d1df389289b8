"""The LSTM core of tdrl's recurrent models: ``nn.LSTM`` over ``[T, B]`` with per-step resets.

A recurrent model's state is a pair ``(h, c)``, each ``[B, layers, hidden]`` (batch first,
so that it sits in ``[T, B, ...]`` sample buffers as a TensorDict of rows); ``nn.LSTM``
wants ``[layers, B, hidden]``, and ``LstmCore`` transposes at its boundary.

``is_init[t, b]`` marks a step that starts an episode: the state entering it is zeros. The
sampler resets the state the same way while acting, so a training forward over a stored
``[T, B]`` batch from its first row's state reproduces the states the agent acted with,
resets inside the batch included. The sequence is cut at the steps where some env resets
and each piece runs as one ``nn.LSTM`` call (cuDNN on a GPU), so the cost grows with the
number of distinct reset times, not with T.
"""

from __future__ import annotations

import itertools

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from tdrl.utils.checks import check_int

#: ``(h, c)``, each ``[B, layers, hidden]``.
RnnState = tuple[torch.Tensor, torch.Tensor]


def state_tensors(rnn_state: TensorDictBase) -> RnnState:
    """``(h, c)`` of a recurrent-state TensorDict (keys ``h`` and ``c``)."""
    return rnn_state.get("h"), rnn_state.get("c")


def state_tensordict(state: RnnState) -> TensorDict:
    """A recurrent state as the TensorDict samplers store (batch size ``[B]``)."""
    h, c = state
    return TensorDict({"h": h, "c": c}, batch_size=h.shape[:1])


class LstmCore(nn.Module):
    """An ``nn.LSTM`` run over ``[T, B, F]`` inputs from batch-first states, with resets.

    Args:
        input_size: features per step.
        hidden_size: LSTM units.
        num_layers: stacked LSTM layers.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__()
        self.input_size = check_int("input_size", input_size, minimum=1)
        self.hidden_size = check_int("hidden_size", hidden_size, minimum=1)
        self.num_layers = check_int("num_layers", num_layers, minimum=1)
        self.lstm = nn.LSTM(self.input_size, self.hidden_size, self.num_layers)

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> TensorDict:
        """Zeros ``h`` and ``c`` of ``batch_size`` rows, ``[B, layers, hidden]`` each."""
        shape = (batch_size, self.num_layers, self.hidden_size)
        zeros = torch.zeros(shape, device=device)
        return TensorDict({"h": zeros, "c": zeros.clone()}, batch_size=[batch_size])

    def forward(
        self, x: torch.Tensor, state: RnnState, is_init: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, RnnState]:
        """Run the LSTM over a sequence.

        Args:
            x: ``[T, B, input_size]``.
            state: ``(h, c)`` entering step 0, ``[B, layers, hidden]`` each.
            is_init: ``[T, B]`` bool, True where the state entering the step is reset to
                zeros (None: no resets).

        Returns:
            ``(y [T, B, hidden], (h, c))`` with the state after the last step.
        """
        if x.shape[0] == 1 and is_init is None:  # one step (acting): the cell op, 2x faster
            return self._one_step(x, state)
        h, c = (s.transpose(0, 1).contiguous() for s in state)
        if is_init is None:
            y, (h, c) = self.lstm(x, (h, c))
            return y, (h.transpose(0, 1), c.transpose(0, 1))
        T = x.shape[0]
        keep = (~is_init.bool()).to(x.dtype).unsqueeze(-1)  # [T, B, 1]
        cuts = [0, *(torch.nonzero(is_init[1:].any(dim=1)).flatten() + 1).tolist(), T]
        pieces = []
        for t0, t1 in itertools.pairwise(cuts):
            h, c = h * keep[t0], c * keep[t0]
            y, (h, c) = self.lstm(x[t0:t1], (h, c))
            pieces.append(y)
        y = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        return y, (h.transpose(0, 1), c.transpose(0, 1))

    def _one_step(self, x: torch.Tensor, state: RnnState) -> tuple[torch.Tensor, RnnState]:
        """``forward`` for ``T = 1`` without resets, layer by layer through ``lstm_cell``."""
        h0, c0 = state
        y, hs, cs = x[0], [], []
        for layer in range(self.num_layers):
            h, c = torch.lstm_cell(
                y,
                (h0[:, layer], c0[:, layer]),
                getattr(self.lstm, f"weight_ih_l{layer}"),
                getattr(self.lstm, f"weight_hh_l{layer}"),
                getattr(self.lstm, f"bias_ih_l{layer}"),
                getattr(self.lstm, f"bias_hh_l{layer}"),
            )
            hs.append(h)
            cs.append(c)
            y = h
        return y.unsqueeze(0), (torch.stack(hs, dim=1), torch.stack(cs, dim=1))
