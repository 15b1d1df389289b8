"""What the DQN-family agents share: epsilon-greedy exploration.

``DqnAgent`` and ``R2d1Agent`` each hold one ``EpsilonGreedy`` (``agent.exploration``): the
epsilon schedule, the Ape-X per-env final epsilons and the greedy-or-random choice, written
once here. The agents' ``set_epsilon_schedule``, ``collector_initialize``,
``has_per_env_state``, ``sample_mode`` and ``eval_mode`` hand over to it, and their
``epsilon`` and ``eps_eval`` attributes are its own (``exploration_attribute``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from tdrl._compat import TensorSpec
from tdrl.agents.spaces import (
    check_channels_first,
    discrete_action_count,
    with_index_observations,
)
from tdrl.utils.checks import check_range


def default_q_model(
    who: str,
    observation_spec: TensorSpec,
    action_spec: TensorSpec,
    atari: Callable[..., nn.Module],
    mlp: Callable[..., nn.Module],
    **kwargs: Any,
) -> nn.Module:
    """``atari(shape, n_actions)`` for ``[C, H, W]`` frames, ``mlp(size, n_actions)`` for vectors.

    A state index (``Discrete`` observation) gets the vector model behind a one-hot encoding
    (``tdrl.agents.spaces.with_index_observations``).

    Raises:
        TypeError: naming ``who``, for non-Discrete actions or other observation shapes.
    """
    n_actions = discrete_action_count(action_spec, who)

    def build(spec: TensorSpec) -> nn.Module:
        shape = tuple(spec.shape)
        if len(shape) == 3:
            check_channels_first(shape, who)
            return atari(shape, n_actions, **kwargs)
        if len(shape) == 1:
            return mlp(shape[0], n_actions, **kwargs)
        kind = who.removesuffix("Agent").upper()
        raise TypeError(f"no default {kind} model for observations of shape {shape}; pass model=")

    return with_index_observations(observation_spec, build)


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


class EpsilonGreedy(nn.Module):
    """Epsilon-greedy exploration on a linear schedule, with Ape-X per-env epsilons.

    Epsilon is ``eps_init`` until ``itr_min``, then linear to ``eps_final`` at ``itr_max``
    (``set_schedule``; rlpyt: from ``min_itr_learn`` over ``eps_steps``), ``eps_eval`` in
    eval mode. With ``eps_final_min`` each env gets its own final epsilon, log-spaced
    between ``eps_final_min`` and ``eps_final`` across all the sampler's envs
    (``collector_initialize``); those live in a buffer, so they move with the agent and
    are not saved. A module without parameters or saved state: it adds nothing to the
    agent's ``state_dict``.

    Args:
        eps_init: epsilon at the start of the schedule.
        eps_final: epsilon at its end.
        eps_final_min: lowest per-env final epsilon (None: one epsilon for all envs).
        eps_eval: epsilon in eval mode.
    """

    final_vec: torch.Tensor | None

    def __init__(
        self,
        *,
        eps_init: float = 1.0,
        eps_final: float = 0.01,
        eps_final_min: float | None = None,
        eps_eval: float = 0.001,
    ):
        super().__init__()
        self.eps_init = check_range("eps_init", eps_init, 0.0, 1.0)
        self.eps_final = check_range("eps_final", eps_final, 0.0, 1.0)
        self.eps_eval = check_range("eps_eval", eps_eval, 0.0, 1.0)
        self.eps_final_min = None
        if eps_final_min is not None:
            self.eps_final_min = check_range("eps_final_min", eps_final_min, 1e-12, eps_final)
        self.itr_min = 0
        self.itr_max = 1
        self.register_buffer("final_vec", None, persistent=False)  # moves with the agent
        self.epsilon: float | torch.Tensor = self.eps_init

    def collector_initialize(
        self, global_B: int, env_ranks: Sequence[int], device: torch.device
    ) -> None:
        """Per-env final epsilons for these env ranks, on ``device`` (with ``eps_final_min``)."""
        if self.eps_final_min is not None:
            vec = epsilon_vector(self.eps_final, self.eps_final_min, env_ranks, global_B)
            self.final_vec = torch.as_tensor(vec, dtype=torch.float32, device=device)

    @property
    def per_env(self) -> bool:
        """Whether each env has its own epsilon (then ``step`` must see every env)."""
        return self.final_vec is not None

    def set_schedule(self, itr_min: int, itr_max: int) -> None:
        """Anneal epsilon from ``eps_init`` at ``itr_min`` to ``eps_final`` at ``itr_max``."""
        self.itr_min = int(itr_min)
        self.itr_max = max(int(itr_max), self.itr_min + 1)

    def sample_mode(self, itr: int) -> None:
        """Epsilon at its scheduled value for ``itr`` (one per env with ``eps_final_min``)."""
        final = self.final_vec if self.final_vec is not None else self.eps_final
        self.epsilon = scheduled_epsilon(itr, self.itr_min, self.itr_max, self.eps_init, final)

    def eval_mode(self) -> None:
        """Epsilon is ``eps_eval``."""
        self.epsilon = self.eps_eval

    def act(self, q: torch.Tensor, n_actions: int) -> torch.Tensor:
        """``epsilon_greedy`` actions for Q-values ``[B, n_actions]`` at the current epsilon."""
        return epsilon_greedy(q, self.epsilon, n_actions)


def exploration_attribute(name: str) -> Any:
    """A property of an agent that reads and writes ``agent.exploration.<name>``.

    Keeps the agents' attribute names (``agent.epsilon``, ``agent.eps_eval``) on the one
    ``EpsilonGreedy`` that holds the values.
    """

    def get(agent: Any) -> Any:
        return getattr(agent.exploration, name)

    def set_(agent: Any, value: Any) -> None:
        setattr(agent.exploration, name, value)

    return property(get, set_, doc=f"``exploration.{name}`` (``EpsilonGreedy``).")
