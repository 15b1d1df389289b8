"""What the DQN-family agents share: epsilon-greedy exploration and target networks.

``DqnAgent`` and ``R2d1Agent`` anneal epsilon with ``scheduled_epsilon`` (Ape-X per-env final
values from ``epsilon_vector``), act with ``epsilon_greedy`` and keep their target network
with ``target_pairs`` and ``update_target``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from tdrl.utils.tensor import polyak_update


def epsilon_vector(
    eps_final: float, eps_final_min: float, env_ranks: Sequence[int], global_B: int
) -> np.ndarray:
    """Ape-X style per-env final epsilons over the global env ranks.

    Log-spaced from ``eps_final_min`` (rank 0) to ``eps_final`` (rank ``global_B - 1``).
    """
    if global_B == 1:
        return np.array([eps_final], dtype=np.float64)
    log_eps = np.linspace(math.log(eps_final_min), math.log(eps_final), global_B)
    return np.exp(log_eps)[np.asarray(env_ranks)]


def scheduled_epsilon(
    itr: int, itr_min: int, itr_max: int, eps_init: float, eps_final: float | torch.Tensor
) -> float | torch.Tensor:
    """Epsilon at ``itr``: ``eps_init`` until ``itr_min``, linear to ``eps_final`` at ``itr_max``.

    ``eps_final`` may be one value per env (a tensor); the result is then a tensor too.
    """
    frac = min(1.0, max(0.0, (itr - itr_min) / max(itr_max - itr_min, 1)))
    return eps_init + frac * (eps_final - eps_init)


def epsilon_greedy(q: torch.Tensor, epsilon: float | torch.Tensor, n_actions: int) -> torch.Tensor:
    """``argmax q``, replaced by a uniform random action with probability ``epsilon``.

    ``epsilon`` is a number or one per row (``[B]``). Draws are made on ``q``'s device; on
    the CPU random actions are drawn only when some row explores (elsewhere always: no
    host synchronisation).
    """
    action = q.argmax(dim=-1)
    n, device = action.shape[0], action.device
    eps = epsilon.to(device) if isinstance(epsilon, torch.Tensor) else epsilon
    explore = torch.rand(n, device=device) < eps
    if device.type != "cpu" or explore.any():
        action = torch.where(explore, torch.randint(n_actions, (n,), device=device), action)
    return action


def target_pairs(target: nn.Module, online: nn.Module) -> tuple[list[torch.Tensor], ...]:
    """Target and online parameters, then target and online buffers.

    Module traversal costs ~100 us per call: agents build the lists once and keep them.
    """
    return (
        list(target.parameters()),
        list(online.parameters()),
        list(target.buffers()),
        list(online.buffers()),
    )


@torch.no_grad()
def update_target(pairs: tuple[list[torch.Tensor], ...], tau: float = 1.0) -> None:
    """``target <- tau * online + (1 - tau) * target`` over ``target_pairs``'s lists.

    ``tau=1`` is a hard copy; buffers are always copied.
    """
    target, online, target_buffers, online_buffers = pairs
    polyak_update(target, online, tau)
    if target_buffers:
        polyak_update(target_buffers, online_buffers, 1.0)
