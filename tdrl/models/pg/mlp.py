"""MLP policy/value models for vector observations."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tdrl.models.mlp import MlpModel
from tdrl.models.running_mean_std import RunningMeanStd


class _PgMlpBase(nn.Module):
    """Trunk(s) of both PG MLP models: optional normalisation, shared or separate MLPs."""

    def __init__(
        self,
        observation_size: int,
        policy_out: int,
        hidden_sizes: Sequence[int],
        nonlinearity: type[nn.Module],
        shared: bool,
        normalize_observation: bool,
    ):
        super().__init__()
        self.obs_rms = RunningMeanStd((observation_size,)) if normalize_observation else None
        self.shared = shared
        if shared:
            self.trunk = MlpModel(observation_size, hidden_sizes, None, nonlinearity)
            self.pi_head = nn.Linear(self.trunk.output_size, policy_out)
            self.v_head = nn.Linear(self.trunk.output_size, 1)
        else:
            self.pi = MlpModel(observation_size, hidden_sizes, policy_out, nonlinearity)
            self.v = MlpModel(observation_size, hidden_sizes, 1, nonlinearity)

    def _trunk(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = observation.to(torch.float32)
        if self.obs_rms is not None:
            x = self.obs_rms(x)
        if self.shared:
            h = self.trunk(x)
            return self.pi_head(h), self.v_head(h).squeeze(-1)
        return self.pi(x), self.v(x).squeeze(-1)

    def value(self, observation: torch.Tensor) -> torch.Tensor:
        """V(o) only, without the policy head."""
        x = observation.to(torch.float32)
        if self.obs_rms is not None:
            x = self.obs_rms(x)
        if self.shared:
            return self.v_head(self.trunk(x)).squeeze(-1)
        return self.v(x).squeeze(-1)


class CategoricalPgMlpModel(_PgMlpBase):
    """Logits over ``n_actions`` and a state value, from a vector observation.

    Args:
        observation_size: size of the (flat) observation.
        n_actions: number of discrete actions.
        hidden_sizes: hidden layer sizes of each MLP.
        nonlinearity: activation class.
        shared: one trunk with two heads instead of separate policy and value MLPs.
        normalize_observation: normalise inputs with running statistics.
    """

    def __init__(
        self,
        observation_size: int,
        n_actions: int,
        *,
        hidden_sizes: Sequence[int] = (64, 64),
        nonlinearity: type[nn.Module] = nn.Tanh,
        shared: bool = False,
        normalize_observation: bool = False,
    ):
        super().__init__(
            observation_size, n_actions, hidden_sizes, nonlinearity, shared, normalize_observation
        )

    def forward(
        self, observation: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(logits [..., n_actions], value [...])``."""
        return self._trunk(observation)


class GaussianPgMlpModel(_PgMlpBase):
    """Gaussian mean, state-independent log std, and a state value (rlpyt's MujocoFfModel).

    Args:
        observation_size: size of the (flat) observation.
        action_size: size of the action vector.
        hidden_sizes: hidden layer sizes of each MLP.
        nonlinearity: activation class.
        shared: one trunk with two heads instead of separate policy and value MLPs.
        normalize_observation: normalise inputs with running statistics.
        init_log_std: initial value of the learned log std.
        tanh_mu: squash the mean with tanh (rlpyt's default for MuJoCo).
    """

    def __init__(
        self,
        observation_size: int,
        action_size: int,
        *,
        hidden_sizes: Sequence[int] = (64, 64),
        nonlinearity: type[nn.Module] = nn.Tanh,
        shared: bool = False,
        normalize_observation: bool = False,
        init_log_std: float = 0.0,
        tanh_mu: bool = True,
    ):
        super().__init__(
            observation_size, action_size, hidden_sizes, nonlinearity, shared, normalize_observation
        )
        self.log_std = nn.Parameter(torch.full((action_size,), float(init_log_std)))
        self.tanh_mu = tanh_mu

    def forward(
        self, observation: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(mu [..., A], log_std [..., A], value [...])``."""
        mu, value = self._trunk(observation)
        if self.tanh_mu:
            mu = torch.tanh(mu)
        return mu, self.log_std.expand_as(mu), value
