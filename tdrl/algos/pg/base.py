"""Pieces A2C and PPO share: advantages from a ``[T, B]`` batch, the training batch."""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl.agents.base import Agent
from tdrl.utils.returns import generalized_advantage_estimate


@torch.no_grad()
def process_returns(
    agent: Agent,
    samples: TensorDictBase,
    *,
    discount: float,
    gae_lambda: float,
    normalize_advantage: bool,
) -> TensorDict:
    """The training batch of an on-policy algorithm, still ``[T, B]``.

    Values of the next observations are computed with the current agent, so targets
    bootstrap at the batch end and where a time limit cut an episode (``truncated``), and
    not at true terminal states. ``gae_lambda=1`` gives discounted returns.

    Args:
        agent: a policy-gradient agent (``value(observation, prev_action, prev_reward)``).
        samples: the sampler's ``[T, B]`` batch with the agent's stored ``value`` and
            ``log_prob``; a ``valid`` entry, when present, masks steps out.
        discount: gamma.
        gae_lambda: GAE lambda.
        normalize_advantage: standardise advantages over the valid steps.

    Returns:
        A new TensorDict with the agent inputs, ``action``, the sampling ``log_prob`` and
        ``value``, plus ``advantage`` and ``return`` (and ``valid`` if present).
    """
    reward = samples.get(keys.NEXT_REWARD)[..., 0]
    next_value = agent.value(
        samples.get(keys.NEXT_OBSERVATION), samples.get(keys.ACTION), samples.get(keys.NEXT_REWARD)
    )
    advantage, return_ = generalized_advantage_estimate(
        reward,
        samples.get(keys.VALUE),
        next_value,
        samples.get(keys.NEXT_DONE)[..., 0],
        samples.get(keys.NEXT_TERMINATED)[..., 0],
        discount=discount,
        gae_lambda=gae_lambda,
    )
    valid = samples.get(keys.VALID, None)
    if normalize_advantage:
        if valid is None:
            mean, std = advantage.mean(), advantage.std()
        else:
            n = valid.sum().clamp_min(1.0)
            mean = (advantage * valid).sum() / n
            std = (((advantage - mean) ** 2 * valid).sum() / n).sqrt()
        advantage = (advantage - mean) / (std + 1e-8)
    batch = samples.select(*keys.AGENT_INPUTS, keys.ACTION, keys.LOG_PROB, keys.VALUE)
    batch.set(keys.ADVANTAGE, advantage)
    batch.set(keys.RETURN, return_)
    if valid is not None:
        batch.set(keys.VALID, valid)
    return batch


def grad_norm_clip(parameters, max_norm: float | None) -> torch.Tensor:
    """Clip the global gradient norm (no clipping when ``max_norm`` is None); return the
    norm before clipping."""
    params = [p for p in parameters if p.grad is not None]
    if max_norm is None:
        return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


def append_info(
    info: dict[str, list[torch.Tensor]], terms: TensorDict, grad_norm: torch.Tensor
) -> None:
    """Collect one update's loss terms and gradient norm (kept as tensors)."""
    for key in (
        "loss",
        "loss_pi",
        "loss_value",
        "entropy",
        "perplexity",
        "clip_fraction",
        "approx_kl",
    ):
        info.setdefault(key, []).append(terms.get(key).detach())
    info.setdefault("grad_norm", []).append(grad_norm.detach())


def info_to_lists(info: dict[str, list[torch.Tensor]]) -> dict[str, list[float]]:
    """One synchronisation per iteration instead of one ``.item()`` per value."""
    return {k: torch.stack(v).tolist() for k, v in info.items()}
