"""Soft actor-critic agent: a tanh-squashed Gaussian policy and twin Q-functions."""

from __future__ import annotations

import math
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from tdrl import keys
from tdrl._compat import TensorSpec
from tdrl.agents.qpg.base import QpgAgent, flat_sizes
from tdrl.models.qpg.mlp import PiMlpModel
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


class SacAgent(QpgAgent):
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
        super().__init__(model, q_model, model_kwargs=model_kwargs, q_model_kwargs=q_model_kwargs)
        if pretrain_std <= 0:
            raise ValueError(f"pretrain_std must be positive, got {pretrain_std!r}")
        if not log_std_min < log_std_max:
            raise ValueError(
                f"log_std_min must be below log_std_max, got {log_std_min}, {log_std_max}"
            )
        self.pretrain_std = float(pretrain_std)
        self.log_std_min = float(log_std_min)
        self.log_std_max = float(log_std_max)

    # ------------------------------------------------------------------ set-up
    def make_model(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, **kwargs: Any
    ) -> nn.Module:
        obs_size, act_size = flat_sizes(observation_spec, action_spec, type(self).__name__)
        return PiMlpModel(obs_size, act_size, **kwargs)

    # ------------------------------------------------------------------ acting
    def distribution_params(self, observation: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy mean and clamped log std."""
        mean, log_std = self.model(observation)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

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
