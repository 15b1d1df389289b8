"""Q-networks for vector observations (classic control, toy envs).

Layout: a shared trunk of ``hidden_sizes[:-1]`` followed by a head whose hidden layer is
``hidden_sizes[-1]``. Without dueling this is just the MLP ``hidden_sizes → output``. With
dueling the last hidden layer is split into a value stream and an advantage stream (each of
size ``hidden_sizes[-1]``), the same arrangement as the Atari model, where the 512-unit layer
sits inside each stream. The depth is thus the same with and without dueling. With empty
``hidden_sizes`` the heads act on the observation directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from tdrl.models.dqn.heads import q_head
from tdrl.models.mlp import MlpModel
from tdrl.utils.checks import check_int, check_int_list


def _trunk(
    observation_size: int, hidden_sizes: Sequence[int], nonlinearity: type[nn.Module]
) -> tuple[MlpModel, list[int]]:
    """The shared trunk ``hidden_sizes[:-1]`` and the head's hidden sizes ``hidden_sizes[-1:]``."""
    sizes = check_int_list("hidden_sizes", hidden_sizes, 1)
    observation_size = check_int("observation_size", observation_size, minimum=1)
    return MlpModel(observation_size, sizes[:-1], None, nonlinearity), sizes[-1:]


class DqnMlpModel(nn.Module):
    """Q-values from a vector observation (C51 logits with ``n_atoms``).

    Args:
        observation_size: size of the (flat) observation.
        output_size: number of actions.
        n_atoms: None: Q-values ``[..., output_size]``; an int: C51 logits
            ``[..., output_size, n_atoms]`` (``CatDqnMlpModel``'s default: 51).
        hidden_sizes: hidden layer sizes; with ``dueling`` the last one is per stream.
        dueling: use a :class:`DuelingHeadModel` (Q = V + A - mean A), or with atoms a
            :class:`DistributionalDuelingHeadModel`.
        nonlinearity: activation class.
    """

    #: The atoms when ``n_atoms`` is None (None: plain Q-values).
    default_n_atoms: ClassVar[int | None] = None

    def __init__(
        self,
        observation_size: int,
        output_size: int,
        *,
        n_atoms: int | None = None,
        hidden_sizes: Sequence[int] = (64, 64),
        dueling: bool = False,
        nonlinearity: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        output_size = check_int("output_size", output_size, minimum=1)
        self.trunk, head_sizes = _trunk(observation_size, hidden_sizes, nonlinearity)
        self.dueling = dueling
        self.n_atoms = self.default_n_atoms if n_atoms is None else n_atoms
        self.head = q_head(
            self.trunk.output_size,
            head_sizes,
            output_size,
            dueling=dueling,
            n_atoms=self.n_atoms,
            nonlinearity=nonlinearity,
        )

    def forward(
        self, observation: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor
    ) -> torch.Tensor:
        """Q-values ``[..., output_size]`` (logits ``[..., output_size, n_atoms]``)."""
        return self.head(self.trunk(observation.to(torch.float32)))


class CatDqnMlpModel(DqnMlpModel):
    """C51 logits from a vector observation.

    Returns **logits** ``[..., output_size, n_atoms]``; apply ``softmax``/``log_softmax`` over
    the last dim for the return distribution. The arguments are ``DqnMlpModel``'s;
    ``n_atoms`` defaults to 51 here.
    """

    default_n_atoms = 51
