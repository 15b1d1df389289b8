"""Returns and advantages on ``[T, B]`` tensors.

All functions take time-major tensors, as samplers produce them. Episode ends are given by
two masks, following the TorchRL convention: ``done`` (the episode ended at step t, for any
reason) stops accumulation across the boundary, ``terminated`` (a true terminal state) stops
bootstrapping from ``next_value``. A step cut by a time limit has ``done`` set and
``terminated`` clear, so its target still bootstraps from V(o_{t+1}): rlpyt's
``bootstrap_timelimit``, on by default here.
"""

from __future__ import annotations

import torch

from tdrl._compat import vec_generalized_advantage_estimate


def generalized_advantage_estimate(
    reward: torch.Tensor,
    value: torch.Tensor,
    next_value: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
    *,
    discount: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(gamma, lambda) advantages and their returns.

    ``A_t = sum_k (gamma * lambda)^k * delta_{t+k}`` with
    ``delta_t = r_t + gamma * (1 - terminated_t) * V(o_{t+1}) - V(o_t)``, the sum cut at the
    first ``done``. With ``gae_lambda=1`` the return ``A_t + V(o_t)`` is the discounted
    return bootstrapped at the batch end and at time-limit cuts.

    Computed by TorchRL's vectorised estimator, which the tests check against a plain loop.

    Args:
        reward: ``[T, B]`` rewards r_t.
        value: ``[T, B]`` values V(o_t).
        next_value: ``[T, B]`` values V(o_{t+1}) of the next observations.
        done: ``[T, B]`` bool, the episode ended at step t.
        terminated: ``[T, B]`` bool, o_{t+1} is terminal.
        discount: gamma.
        gae_lambda: lambda.

    Returns:
        ``(advantage, return_)``, both ``[T, B]``.
    """
    if discount * gae_lambda == 0.0:
        # One-step TD error; TorchRL's vectorised estimator cannot build a zero filter.
        not_terminal = (~terminated.bool()).to(value.dtype)
        advantage = reward + discount * not_terminal * next_value - value
        return advantage, advantage + value
    advantage, return_ = vec_generalized_advantage_estimate(
        discount,
        gae_lambda,
        value.unsqueeze(-1),
        next_value.unsqueeze(-1),
        reward.unsqueeze(-1),
        done.unsqueeze(-1).bool(),
        terminated.unsqueeze(-1).bool(),
        time_dim=0,
    )
    return advantage.squeeze(-1), return_.squeeze(-1)


def discount_return(
    reward: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
    next_value: torch.Tensor,
    *,
    discount: float,
) -> torch.Tensor:
    """Discounted return ``R_t = r_t + gamma * R_{t+1}``, bootstrapped where a trajectory is cut.

    Written as a plain backward loop over T (T is small next to B in practice). Bootstraps
    from ``next_value`` at the batch end and where ``done`` is set but ``terminated`` is not.

    Args:
        reward: ``[T, B]``.
        done: ``[T, B]`` bool.
        terminated: ``[T, B]`` bool.
        next_value: ``[T, B]`` V(o_{t+1}).
        discount: gamma.

    Returns:
        ``[T, B]`` returns.
    """
    not_done = (~done.bool()).to(reward.dtype)
    bootstrap = (~terminated.bool()).to(reward.dtype) * next_value
    return_ = torch.empty_like(reward)
    running = next_value[-1] * (~terminated[-1].bool()).to(reward.dtype)
    for t in range(reward.shape[0] - 1, -1, -1):
        if t < reward.shape[0] - 1:
            running = not_done[t] * running + (1.0 - not_done[t]) * bootstrap[t]
        running = reward[t] + discount * running
        return_[t] = running
    return return_


def valid_from_done(done: torch.Tensor) -> torch.Tensor:
    """Mask that is 1 up to and including the first ``done`` along time, 0 after it.

    Used where an environment does not reset mid-batch (wait-reset sampling, recurrent
    agents): steps recorded after an episode ended belong to no trajectory.

    Args:
        done: ``[T, B]`` bool or float.

    Returns:
        ``[T, B]`` float mask.
    """
    done = done.float()
    valid = torch.ones_like(done)
    valid[1:] = 1.0 - torch.clamp(torch.cumsum(done[:-1], dim=0), max=1.0)
    return valid


def valid_mean(x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``valid`` is 1 (plain mean when None)."""
    if valid is None:
        return x.mean()
    return (x * valid).sum() / valid.sum().clamp_min(1.0)
