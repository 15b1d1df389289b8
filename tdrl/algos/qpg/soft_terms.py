"""The soft actor-critic loss terms, written once for SAC, SAC_V and PEARL.

Pure functions of tensors; the algorithms call their networks and pass the outputs. With
``a~ ~ pi(.|o)`` a reparameterised action, ``s`` the reward scale, ``w`` importance
weights (prioritized replay; none for PEARL) and ``c`` = 1/2 or 1::

    y       = s R^(n) + gamma^m (1 - terminal) V_next            (soft_target)
    L_Q     = c sum_i E[w (Q_i(o, a) - y)^2]                     (critic_loss)
    L_V     = c E[w (V(o) - sg(min_i Q_i(o, a~) - log pi(a~|o) + log p(a~)))^2]   (value_loss)
    L_pi    = E[alpha log pi(a~|o) - min_i Q_i(o, a~) - log p(a~)] + regulariser  (actor_loss)
    L_alpha = -E[log alpha sg(log pi(a~|o) + H_target)]          (temperature_loss)

The documented differences are parameters: SAC and SAC_V halve the squared errors
(``c = 1/2``), PEARL follows oyster's MSE without it (``half=False``), which sets the
weight of its KL term against the Bellman error; SAC's action prior ``log p`` (None:
none); ``alpha`` None is SAC v1's fixed weight 1 (folded into the reward scale); the
policy regulariser is each algorithm's own (SAC_V: ``c/2 (E[mean^2] + E[log_std^2])``,
PEARL: ``c_mean E[mean^2] + c_std E[log_std^2]``). The learned temperature's set-up
(``check_target_entropy``, ``entropy_target``, ``initial_log_alpha``) is shared too.
"""

from __future__ import annotations

import math

import torch

from tdrl.utils.checks import check_range

__all__ = [
    "ACTION_PRIORS",
    "action_log_prior",
    "actor_loss",
    "check_target_entropy",
    "critic_loss",
    "entropy_target",
    "initial_log_alpha",
    "soft_target",
    "temperature_loss",
    "value_loss",
]

#: The action priors ``log p(a)`` of the actor loss.
ACTION_PRIORS = ("uniform", "gaussian")


def action_log_prior(action: torch.Tensor, prior: str) -> torch.Tensor:
    """``log p(a)`` of an action prior.

    0 for ``"uniform"``; for ``"gaussian"`` a standard normal's log-density summed over the
    action dims.
    """
    if prior == "uniform":
        return torch.zeros((), dtype=action.dtype, device=action.device)
    return (-0.5 * action.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)


def soft_target(
    reward_scale: float,
    return_n: torch.Tensor,
    discount_n: torch.Tensor,
    next_value: torch.Tensor,
) -> torch.Tensor:
    """``y = s R^(n) + discount_n * next_value`` (``discount_n`` is 0 at terminal states)."""
    return reward_scale * return_n + discount_n * next_value


def critic_loss(
    q: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    half: bool = True,
) -> torch.Tensor:
    """``c sum_i E[w (Q_i - y)^2]`` for ``q`` of shape ``[n_q, *batch]``."""
    sq = (q - target) ** 2
    if weight is not None:
        sq = sq * weight
    loss = sq.mean(tuple(range(1, sq.dim()))).sum()
    return 0.5 * loss if half else loss


def value_loss(
    v: torch.Tensor,
    q_pi: torch.Tensor,
    log_pi: torch.Tensor,
    prior: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    *,
    half: bool = True,
) -> torch.Tensor:
    """``c E[w (V - sg(min Q(o, a~) - log pi(a~) + log p(a~)))^2]`` (SAC v1's value loss)."""
    target = q_pi - log_pi
    if prior is not None:
        target = target + prior
    sq = (v - target.detach()) ** 2
    if weight is not None:
        sq = sq * weight
    return 0.5 * sq.mean() if half else sq.mean()


def actor_loss(
    log_pi: torch.Tensor,
    q_pi: torch.Tensor,
    *,
    alpha: torch.Tensor | None = None,
    prior: torch.Tensor | None = None,
    regularizer: torch.Tensor | None = None,
) -> torch.Tensor:
    """``E[alpha log pi(a~) - min Q(o, a~) - log p(a~)] + regularizer``.

    ``alpha`` None: weight 1 (SAC v1); ``prior`` None: no action prior; ``regularizer``
    None: none.
    """
    gap = (log_pi if alpha is None else alpha * log_pi) - q_pi
    if prior is not None:
        gap = gap - prior
    loss = gap.mean()
    return loss if regularizer is None else loss + regularizer


def temperature_loss(
    log_alpha: torch.Tensor, log_pi: torch.Tensor, target_entropy: float
) -> torch.Tensor:
    """``-E[log alpha sg(log pi(a~) + H_target)]``."""
    return -(log_alpha * (log_pi + target_entropy).detach()).mean()


def check_target_entropy(value: str | float) -> str | float:
    """A ``target_entropy`` argument: ``"auto"`` or a finite number."""
    return "auto" if value == "auto" else check_range("target_entropy", value, -1e6, 1e6)


def entropy_target(setting: str | float, action_size: int) -> float:
    """``H_target``: ``-|A|`` for ``"auto"``, else the number."""
    return -float(action_size) if setting == "auto" else float(setting)


def initial_log_alpha(fixed_alpha: float | None, device: torch.device) -> torch.Tensor:
    """The temperature's ``log alpha`` (a leaf with gradient): ``log fixed_alpha``, or 0."""
    log_alpha = torch.zeros((), requires_grad=True, device=device)
    if fixed_alpha is not None:
        log_alpha.data.fill_(math.log(max(fixed_alpha, 1e-30)))
    return log_alpha
