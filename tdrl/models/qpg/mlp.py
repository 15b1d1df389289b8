"""MLP actors and critics for continuous control (DDPG, TD3, SAC)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from tdrl.models.mlp import MlpModel
from tdrl.utils.checks import check_int, check_int_list


class MuMlpModel(nn.Module):
    """Deterministic actor: ``tanh(MLP(o))`` in ``[-1, 1]^A`` (DDPG, TD3).

    Args:
        observation_size: size of the flat observation.
        action_size: size of the action.
        hidden_sizes: hidden layers (rlpyt: 400, 300).
    """

    def __init__(
        self, observation_size: int, action_size: int, *, hidden_sizes: Sequence[int] = (400, 300)
    ):
        super().__init__()
        self.mlp = MlpModel(observation_size, hidden_sizes, action_size)

    def forward(self, observation, prev_action=None, prev_reward=None) -> torch.Tensor:
        """``tanh`` of the MLP: actions in ``[-1, 1]^A``."""
        return torch.tanh(self.mlp(observation.float()))


class PiMlpModel(nn.Module):
    """Gaussian actor before squashing: ``(mean, log_std)`` (SAC).

    Args:
        observation_size: size of the flat observation.
        action_size: size of the action.
        hidden_sizes: hidden layers (rlpyt: 256, 256).
    """

    def __init__(
        self, observation_size: int, action_size: int, *, hidden_sizes: Sequence[int] = (256, 256)
    ):
        super().__init__()
        self.mlp = MlpModel(observation_size, hidden_sizes, 2 * action_size)
        self.action_size = action_size

    def forward(self, observation, prev_action=None, prev_reward=None):
        """``(mean, log_std)`` of the pre-squash Gaussian."""
        out = self.mlp(observation.float())
        return out[..., : self.action_size], out[..., self.action_size :]


class QEnsembleMlpModel(nn.Module):
    """``n_q`` independent Q-functions ``Q_i(o, a)`` evaluated in one batched pass.

    Each layer keeps the ``n_q`` networks' weights stacked (``[n_q, in, out]``) and runs
    them with one ``baddbmm``: the twin critics of TD3/SAC cost one set of kernel calls
    instead of two. Initialised like ``nn.Linear`` (uniform in ``±1/sqrt(in)``), each
    network independently.

    Args:
        observation_size: size of the flat observation.
        action_size: size of the action.
        hidden_sizes: hidden layers of each Q-function.
        n_q: number of Q-functions (2 for twin critics, 1 for DDPG).
    """

    def __init__(
        self,
        observation_size: int,
        action_size: int,
        *,
        hidden_sizes: Sequence[int] = (256, 256),
        n_q: int = 2,
    ):
        super().__init__()
        n_q = check_int("n_q", n_q, minimum=1)
        sizes = [
            observation_size + action_size,
            *check_int_list("hidden_sizes", hidden_sizes, 1),
            1,
        ]
        self.n_q = n_q
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(sizes):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(
                nn.Parameter(torch.empty(n_q, fan_in, fan_out).uniform_(-bound, bound))
            )
            self.biases.append(nn.Parameter(torch.empty(n_q, 1, fan_out).uniform_(-bound, bound)))

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Returns ``[n_q, N]`` Q-values for ``N`` rows of observations and actions."""
        x = torch.cat([observation.float(), action.float()], dim=-1)
        lead = x.shape[:-1]
        x = x.reshape(1, -1, x.shape[-1]).expand(self.n_q, -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = torch.relu(x)
        return x.squeeze(-1).reshape(self.n_q, *lead)


class VMlpModel(nn.Module):
    """State value ``V(o)`` (SAC_V)."""

    def __init__(self, observation_size: int, *, hidden_sizes: Sequence[int] = (256, 256)):
        super().__init__()
        self.mlp = MlpModel(observation_size, hidden_sizes, 1)

    def forward(self, observation, prev_action=None, prev_reward=None) -> torch.Tensor:
        """``[N]`` state values."""
        return self.mlp(observation.float()).squeeze(-1)
