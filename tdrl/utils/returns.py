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


def sequence_n_step_returns(
    reward: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
    *,
    n: int,
    discount: float,
    start: int,
    length: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n-step returns of steps ``start .. start + length - 1`` of ``[L, N]`` sequences.

    The window of step t reads rewards ``t .. t + n - 1`` and stops after the first step
    that ended an episode (``done``): ``return_n = sum_{k<m} gamma^k r_{t+k}`` over its
    ``m <= n`` steps. Only a window that ran all n steps bootstraps, from step ``t + n`` of
    the sequence. A window cut by a time limit (``done`` but not ``terminated``) would
    bootstrap from the episode's final observation, which a sequence of stored steps does
    not hold (its next step is the next episode's first): such steps are marked invalid.
    Needs ``start + length + n <= L`` (R2D1's sequences have n steps past the trained ones).

    Args:
        reward: ``[L, N]`` rewards r_t.
        done: ``[L, N]`` bool, the episode ended at step t.
        terminated: ``[L, N]`` bool, it ended in a terminal state.
        n: steps per window.
        discount: gamma.
        start: the first step with a window.
        length: the number of steps with a window.

    Returns:
        ``(return_n, bootstrap, valid)``, each ``[length, N]`` float: ``bootstrap`` is 1
        where the window ran all n steps (bootstrap from step ``t + n``), ``valid`` 1 where
        it did or where it ended at a terminal state (0: cut by a time limit).
    """
    alive = torch.ones_like(reward[start : start + length])
    return_n = torch.zeros_like(alive)
    terminal_end = torch.zeros_like(alive)
    for k in range(n):
        rows = slice(start + k, start + k + length)
        return_n = return_n + discount**k * alive * reward[rows]
        ended = done[rows].to(alive.dtype)
        terminal_end = terminal_end + alive * ended * terminated[rows].to(alive.dtype)
        alive = alive * (1.0 - ended)
    return return_n, alive, alive + terminal_end


def value_rescale(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """R2D2's invertible value rescaling ``h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x``.

    Kapturowski et al. 2019 (https://openreview.net/forum?id=r1lyTjAqYX), after Pohlen et al.
    2018. Computed as ``x / (sqrt(|x| + 1) + 1) + eps x``, the same function without the
    cancellation of ``sqrt(|x| + 1) - 1`` near 0.

    Args:
        x: values (any shape).
        eps: the linear term's weight (R2D2: 1e-3); ``h`` is invertible for ``eps >= 0``.
    """
    return x / (torch.sqrt(x.abs() + 1.0) + 1.0) + eps * x


def inv_value_rescale(y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """The exact inverse of ``value_rescale``: ``h^{-1}(h(x)) = x``.

    Solving ``h(x) = y`` for ``s = sqrt(|x| + 1)`` gives ``s - 1 = u`` with
    ``u = 2|y| / (1 + 2 eps + sqrt((1 + 2 eps)^2 + 4 eps |y|))`` (the closed form
    ``((sqrt(1 + 4 eps (|y| + 1 + eps)) - 1) / (2 eps))^2 - 1`` rewritten without
    cancellations; it holds for ``eps = 0`` too), and ``x = sign(y) u (u + 2)``.

    Args:
        y: rescaled values (any shape).
        eps: the ``eps`` of ``value_rescale``.
    """
    a = 1.0 + 2.0 * eps
    abs_y = y.abs()
    u = 2.0 * abs_y / (a + torch.sqrt(a * a + 4.0 * eps * abs_y))
    return torch.sign(y) * u * (u + 2.0)
