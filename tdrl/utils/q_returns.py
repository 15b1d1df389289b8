"""Q-learning targets on ``[T, B]`` tensors: n-step returns of sequences, value rescaling.

The semantics of ``done`` / ``terminated`` / time limits are ``tdrl.utils.returns``': a
``done`` step ends the window, a ``terminated`` one also stops bootstrapping. Used by R2D1
(``tdrl.algos.dqn.r2d1``); the policy-gradient returns live in ``tdrl.utils.returns``.
"""

from __future__ import annotations

import torch

__all__ = ["inv_value_rescale", "sequence_n_step_returns", "value_rescale"]


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
