"""The SAC family's tanh-squashed Gaussian policy and twin critics, written once.

They are functions of the network input ``x`` (``policy_params``, ``policy_action``,
``policy_sample``, ``sac_critics``): ``SacAgent`` calls them with the observation,
``PearlAgent`` with ``o ⊕ z``.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import nn

from tdrl.agents.base import Agent
from tdrl.agents.qpg.base import default_critics
from tdrl.agents.targets import TargetNetworks
from tdrl.models.qpg.mlp import VMlpModel
from tdrl.utils.checks import ArgumentError, check_range
from tdrl.utils.tensor import frozen_copy

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


class SquashedGaussianActor(Protocol):
    """What the policy functions read: ``SacAgent`` or ``PearlAgent``."""

    model: nn.Module
    log_std_min: float
    log_std_max: float
    action_scale: torch.Tensor
    action_bias: torch.Tensor


def check_log_std(log_std_min: float, log_std_max: float) -> tuple[float, float]:
    """The clamp of the policy's log std, checked (each finite, ``min < max``)."""
    low = check_range("log_std_min", log_std_min, -1e3, 1e3)
    high = check_range("log_std_max", log_std_max, -1e3, 1e3)
    if not low < high:
        raise ArgumentError(
            f"log_std_min must be below log_std_max, got {log_std_min}, {log_std_max}"
        )
    return low, high


def policy_params(agent: SquashedGaussianActor, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Policy mean and clamped log std at the network input ``x``."""
    mean, log_std = agent.model(x)
    return mean, log_std.clamp(agent.log_std_min, agent.log_std_max)


def policy_action(
    agent: SquashedGaussianActor,
    x: Any,
    *,
    deterministic: bool,
    std: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """An env-space action at ``x``: ``tanh(mean)``, or ``tanh(mean + std * N(0, I))``.

    ``std`` None: the policy's own, ``exp(log_std)``.
    """
    mean, log_std = policy_params(agent, x)
    if deterministic:
        squashed = torch.tanh(mean)
    else:
        std = log_std.exp() if std is None else std
        squashed = torch.tanh(mean + std * torch.randn_like(mean))
    return squashed * agent.action_scale + agent.action_bias


def policy_sample(
    agent: SquashedGaussianActor, x: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reparameterised env-space action at ``x``, its log-probability, the mean and log std."""
    mean, log_std = policy_params(agent, x)
    squashed, log_prob = squashed_gaussian_sample(mean, log_std)
    return squashed * agent.action_scale + agent.action_bias, log_prob, mean, log_std


def sac_critics(
    agent: Agent,
    in_size: int,
    act_size: int,
    *,
    value_network: bool,
    q_model_kwargs: dict[str, Any],
    v_model_kwargs: dict[str, Any],
) -> TargetNetworks:
    """Build ``agent``'s critics, its value network and their frozen target; the target.

    Twin critics ``q_model`` (unless given) over ``in_size`` inputs; with
    ``value_network`` a state value ``v_model`` (unless given) and its copy
    ``target_v_model``, else copies of the critics ``target_q_model``. New networks go to
    the agent's device (the policy's: a user's model may be on a GPU already).
    """
    device = agent.device
    q_model = default_critics(agent, in_size, act_size, q_model_kwargs, device)
    if value_network:
        v_model = agent._modules.get("v_model")
        if v_model is None:
            v_model = agent.v_model = VMlpModel(in_size, **v_model_kwargs).to(device)
        agent.target_v_model = frozen_copy(v_model)
        return TargetNetworks([(agent.target_v_model, v_model)])
    agent.target_q_model = frozen_copy(q_model)
    return TargetNetworks([(agent.target_q_model, q_model)])
