"""Soft actor-critic agent: a tanh-squashed Gaussian policy and twin Q-functions."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from tdrl import keys
from tdrl._compat import Bounded, TensorSpec
from tdrl.agents.base import Agent
from tdrl.models.qpg.mlp import PiMlpModel, QEnsembleMlpModel
from tdrl.utils.tensor import polyak_update

_LOG_2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def squashed_gaussian_sample(
    mean: torch.Tensor, log_std: torch.Tensor, *, deterministic: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``a = tanh(u)``, ``u ~ N(mean, exp(log_std)^2)`` (reparameterised) and ``log pi(a)``.

    The log-density includes the tanh Jacobian, ``-sum log(1 - tanh(u)^2)``, written in
    the stable form ``2 (log 2 - u - softplus(-2u))``; it is the density of the action in
    ``[-1, 1]^A`` (the affine map to the env's bounds is a constant and left out, as
    Stable-Baselines3 does, so ``target_entropy=-|A|`` means the same for any bounds).
    """
    std = log_std.exp()
    noise = torch.zeros_like(mean) if deterministic else torch.randn_like(mean)
    u = mean + std * noise
    log_prob = (-0.5 * noise.pow(2) - log_std - _HALF_LOG_2PI).sum(-1)
    log_prob = log_prob - (2.0 * (_LOG_2 - u - nn.functional.softplus(-2.0 * u))).sum(-1)
    return torch.tanh(u), log_prob


class SacAgent(Agent):
    """Tanh-Gaussian policy, twin Q-functions and their targets (rlpyt's ``SacAgent``).

    Actions are squashed to ``[-1, 1]`` and mapped affinely to the env's bounds. Before the
    algorithm starts learning (``set_pretrain_itr``) actions are drawn around the policy
    mean with a fixed ``pretrain_std``; evaluation is deterministic (``tanh(mean)``).

    Args:
        model: policy ``(observation, ...) -> (mean, log_std)``; ``PiMlpModel`` when None.
        q_model: critics ``(observation, action) -> [n_q, N]``; ``QEnsembleMlpModel`` with
            two Q-functions when None.
        model_kwargs: keyword arguments of the default policy (``hidden_sizes``).
        q_model_kwargs: keyword arguments of the default critics.
        pretrain_std: exploration std (pre-squash) before learning starts.
        log_std_min: lower clamp of the policy's log std.
        log_std_max: upper clamp of the policy's log std.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        q_model: nn.Module | None = None,
        *,
        model_kwargs: dict[str, Any] | None = None,
        q_model_kwargs: dict[str, Any] | None = None,
        pretrain_std: float = 0.75,
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
    ):
        super().__init__(model, model_kwargs)
        if pretrain_std <= 0:
            raise ValueError(f"pretrain_std must be positive, got {pretrain_std!r}")
        if not log_std_min < log_std_max:
            raise ValueError(
                f"log_std_min must be below log_std_max, got {log_std_min}, {log_std_max}"
            )
        self.q_model = q_model
        self.q_model_kwargs = dict(q_model_kwargs or {})
        self.pretrain_std = float(pretrain_std)
        self.log_std_min = float(log_std_min)
        self.log_std_max = float(log_std_max)
        self.pretrain_itr = 0
        self._pretraining = False
        self.target_q_model: nn.Module | None = None
        self._target_pairs: tuple | None = None
        self.register_buffer("action_scale", torch.ones(()))
        self.register_buffer("action_bias", torch.zeros(()))

    # ------------------------------------------------------------------ set-up
    def make_model(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, **kwargs: Any
    ) -> nn.Module:
        obs_size, act_size = _sizes(observation_spec, action_spec, type(self).__name__)
        return PiMlpModel(obs_size, act_size, **kwargs)

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec) -> None:
        super().initialize(observation_spec, action_spec)
        obs_size, act_size = _sizes(observation_spec, action_spec, type(self).__name__)
        if self.q_model is None:
            self.q_model = QEnsembleMlpModel(obs_size, act_size, **self.q_model_kwargs)
        self.target_q_model = copy.deepcopy(self.q_model)
        self.target_q_model.requires_grad_(False)
        self._target_pairs = None
        low, high = action_spec.space.low.float(), action_spec.space.high.float()
        self.action_scale = (high - low) / 2.0
        self.action_bias = (high + low) / 2.0
        self.action_size = act_size

    def set_pretrain_itr(self, itr: int) -> None:
        """Use ``pretrain_std`` exploration in sample mode before iteration ``itr``."""
        self.pretrain_itr = int(itr)

    def sample_mode(self, itr: int) -> None:
        super().sample_mode(itr)
        self._pretraining = itr < self.pretrain_itr

    # ------------------------------------------------------------------ acting
    def distribution_params(self, observation: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy mean and clamped log std."""
        mean, log_std = self.model(observation)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def to_env(self, squashed: torch.Tensor) -> torch.Tensor:
        """Map actions from ``[-1, 1]`` to the env's bounds."""
        return squashed * self.action_scale + self.action_bias

    @torch.no_grad()
    def step(
        self, observation: Any, prev_action: torch.Tensor, prev_reward: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mean, log_std = self.distribution_params(observation)
        if self.mode == "eval":
            squashed = torch.tanh(mean)
        else:
            std = self.pretrain_std if self._pretraining else log_std.exp()
            squashed = torch.tanh(mean + std * torch.randn_like(mean))
        return self.to_env(squashed), {}

    def pi(self, observation: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reparameterised env-space action, its log-probability, the mean and log std."""
        mean, log_std = self.distribution_params(observation)
        squashed, log_prob = squashed_gaussian_sample(mean, log_std)
        return self.to_env(squashed), log_prob, mean, log_std

    def q(self, observation: Any, action: torch.Tensor) -> torch.Tensor:
        """``[n_q, N]`` Q-values of env-space actions."""
        return self.q_model(observation, action)

    @torch.no_grad()
    def target_q(self, observation: Any, action: torch.Tensor) -> torch.Tensor:
        """``[n_q, N]`` target Q-values."""
        return self.target_q_model(observation, action)

    def forward(self, td: TensorDictBase) -> TensorDict:
        """Policy mean and log std for every row of ``td``."""
        mean, log_std = self.distribution_params(td[keys.OBSERVATION])
        return TensorDict({keys.LOC: mean, "log_std": log_std}, batch_size=td.batch_size)

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """``target <- tau * online + (1 - tau) * target`` for the critics."""
        if self._target_pairs is None:
            self._target_pairs = (
                list(self.target_q_model.parameters()),
                list(self.q_model.parameters()),
            )
        polyak_update(*self._target_pairs, tau)


def _sizes(observation_spec: TensorSpec, action_spec: TensorSpec, who: str) -> tuple[int, int]:
    if not isinstance(action_spec, Bounded) or not action_spec.dtype.is_floating_point:
        raise TypeError(f"{who} needs a continuous Box action space, got {action_spec}")
    if len(tuple(observation_spec.shape)) != 1:
        raise TypeError(
            f"{who}'s default models need flat vector observations, got shape "
            f"{tuple(observation_spec.shape)}; pass model= and q_model="
        )
    return math.prod(observation_spec.shape), math.prod(action_spec.shape)
