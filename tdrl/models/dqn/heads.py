r"""Q-value heads: dueling, distributional (C51) and distributional dueling.

Every head maps features ``[..., input_size]`` (any leading dims) to Q-values
``[..., output_size]`` or to per-atom logits ``[..., output_size, n_atoms]``.

Dueling architecture (Wang et al., 2016, https://arxiv.org/abs/1511.06581):

.. math::

    Q(s, a) = V(s) + A(s, a) - \\frac{1}{|\\mathcal{A}|} \\sum_{a'} A(s, a')

with separate value and advantage streams on the same features. The gradient entering the
shared trunk from both streams is multiplied by ``grad_scale`` (the paper's :math:`1/\\sqrt{2}`)
while the forward pass is unchanged. As in rlpyt, the advantage stream's output layer has no
per-action bias; a single bias (one per atom in the distributional head) is shared by all
actions. That bias cancels in the centring, so it never changes Q and its gradient is zero up
to rounding; it is kept for parity with rlpyt and appears only in the uncentred advantage
returned by ``value_and_advantage``.

Distributional heads (Bellemare et al., 2017, https://arxiv.org/abs/1707.06887) return
**logits**, not probabilities as rlpyt does: callers apply ``softmax``/``log_softmax`` over the
last (atom) dim. A cross-entropy loss on ``log_softmax(logits)`` is more stable than the log of
probabilities that were already normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tdrl.models.mlp import MlpModel
from tdrl.utils.checks import check_int, check_int_list, check_range


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by ``scale`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Returns ``x`` unchanged; the gradient flowing back through it is multiplied by ``scale``."""
    return _ScaleGrad.apply(x, scale)


def _dueling_streams(
    input_size: int,
    hidden_sizes: Sequence[int],
    output_size: int,
    width: int,
    nonlinearity: type[nn.Module],
) -> tuple[MlpModel, nn.Linear, nn.Parameter, MlpModel]:
    """The streams of a dueling head with ``width`` outputs per action (1, or the atoms).

    Returns:
        ``(advantage_hidden, advantage_out, advantage_bias, value)``: the advantage stream's
        hidden layers, its output layer (no bias, ``output_size * width`` outputs), the
        shared bias ``[width]`` and the value stream (``width`` outputs).
    """
    input_size = check_int("input_size", input_size, minimum=1)
    hidden_sizes = check_int_list("hidden_sizes", hidden_sizes, 1)
    hidden = MlpModel(input_size, hidden_sizes, None, nonlinearity)
    out = nn.Linear(hidden.output_size, output_size * width, bias=False)
    bias = nn.Parameter(torch.zeros(width))
    return hidden, out, bias, MlpModel(input_size, hidden_sizes, width, nonlinearity)


def q_head(
    input_size: int,
    hidden_sizes: Sequence[int],
    output_size: int,
    *,
    dueling: bool = False,
    n_atoms: int | None = None,
    nonlinearity: type[nn.Module] = nn.ReLU,
) -> nn.Module:
    """The head of a Q-network on features ``[..., input_size]``.

    Args:
        input_size: size of the features.
        hidden_sizes: hidden layers (of each stream with ``dueling``).
        output_size: number of actions.
        dueling: a dueling head (``DuelingHeadModel`` or ``DistributionalDuelingHeadModel``).
        n_atoms: None: Q-values ``[..., output_size]`` (an ``MlpModel`` without
            ``dueling``); an int: C51 logits ``[..., output_size, n_atoms]``
            (``DistributionalHeadModel`` without ``dueling``).
        nonlinearity: activation class of the hidden layers.
    """
    if n_atoms is None:
        if dueling:
            return DuelingHeadModel(
                input_size, hidden_sizes, output_size, nonlinearity=nonlinearity
            )
        return MlpModel(input_size, hidden_sizes, output_size, nonlinearity)
    head_cls = DistributionalDuelingHeadModel if dueling else DistributionalHeadModel
    return head_cls(input_size, hidden_sizes, output_size, n_atoms, nonlinearity=nonlinearity)


class DuelingHeadModel(nn.Module):
    """Dueling Q head: ``Q = V + A - mean_a(A)`` (see the module docstring for the math).

    Args:
        input_size: size of the input features.
        hidden_sizes: hidden layer sizes of each stream (value and advantage each get their
            own layers; may be empty).
        output_size: number of actions.
        grad_scale: factor on the gradient flowing back into the input features.
        nonlinearity: activation class of the hidden layers.
    """

    def __init__(
        self,
        input_size: int,
        hidden_sizes: Sequence[int],
        output_size: int,
        grad_scale: float = 2**-0.5,
        *,
        nonlinearity: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        self.output_size = check_int("output_size", output_size, minimum=1)
        self.grad_scale = check_range("grad_scale", grad_scale, 1e-12, 1e12)
        streams = _dueling_streams(input_size, hidden_sizes, self.output_size, 1, nonlinearity)
        self.advantage_hidden, self.advantage_out, self.advantage_bias, self.value = streams

    def value_and_advantage(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(V [..., 1], A [..., output_size])``, the advantage not yet centred."""
        x = scale_grad(x, self.grad_scale)
        advantage = self.advantage_out(self.advantage_hidden(x)) + self.advantage_bias
        return self.value(x), advantage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps features ``[..., input_size]`` to Q-values ``[..., output_size]``."""
        value, advantage = self.value_and_advantage(x)
        return value + advantage - advantage.mean(dim=-1, keepdim=True)


class DistributionalHeadModel(nn.Module):
    """MLP giving per-action logits over ``n_atoms`` return atoms (C51).

    Args:
        input_size: size of the input features.
        hidden_sizes: hidden layer sizes (may be empty).
        output_size: number of actions.
        n_atoms: number of atoms of the return distribution.
        nonlinearity: activation class of the hidden layers.
    """

    def __init__(
        self,
        input_size: int,
        hidden_sizes: Sequence[int],
        output_size: int,
        n_atoms: int,
        *,
        nonlinearity: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        input_size = check_int("input_size", input_size, minimum=1)
        hidden_sizes = check_int_list("hidden_sizes", hidden_sizes, 1)
        self.output_size = check_int("output_size", output_size, minimum=1)
        self.n_atoms = check_int("n_atoms", n_atoms, minimum=2)
        self.mlp = MlpModel(input_size, hidden_sizes, self.output_size * self.n_atoms, nonlinearity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps ``[..., input_size]`` to logits ``[..., output_size, n_atoms]``."""
        return self.mlp(x).unflatten(-1, (self.output_size, self.n_atoms))


class DistributionalDuelingHeadModel(nn.Module):
    """Dueling on the logits of each atom.

    ``logits = V[..., None, :] + A - mean_a(A)`` with ``V`` of shape ``[..., n_atoms]`` and
    ``A`` of shape ``[..., output_size, n_atoms]``; the softmax over atoms is left to the
    caller. Gradient scaling and the shared (per-atom) advantage bias are as in
    :class:`DuelingHeadModel`.

    Args:
        input_size: size of the input features.
        hidden_sizes: hidden layer sizes of each stream (may be empty).
        output_size: number of actions.
        n_atoms: number of atoms of the return distribution.
        grad_scale: factor on the gradient flowing back into the input features.
        nonlinearity: activation class of the hidden layers.
    """

    def __init__(
        self,
        input_size: int,
        hidden_sizes: Sequence[int],
        output_size: int,
        n_atoms: int,
        grad_scale: float = 2**-0.5,
        *,
        nonlinearity: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        self.output_size = check_int("output_size", output_size, minimum=1)
        self.n_atoms = check_int("n_atoms", n_atoms, minimum=2)
        self.grad_scale = check_range("grad_scale", grad_scale, 1e-12, 1e12)
        streams = _dueling_streams(
            input_size, hidden_sizes, self.output_size, self.n_atoms, nonlinearity
        )
        self.advantage_hidden, self.advantage_out, self.advantage_bias, self.value = streams

    def value_and_advantage(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(V [..., 1, n_atoms], A [..., output_size, n_atoms])``, A not yet centred."""
        x = scale_grad(x, self.grad_scale)
        advantage = self.advantage_out(self.advantage_hidden(x))
        advantage = advantage.unflatten(-1, (self.output_size, self.n_atoms)) + self.advantage_bias
        return self.value(x).unsqueeze(-2), advantage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps ``[..., input_size]`` to logits ``[..., output_size, n_atoms]``."""
        value, advantage = self.value_and_advantage(x)
        return value + advantage - advantage.mean(dim=-2, keepdim=True)
