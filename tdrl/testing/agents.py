"""Agents with known, deterministic behaviour for sampler contract tests."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tdrl.agents.base import Agent


class _Offset(nn.Module):
    def __init__(self):
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(()))


class FixedActionAgent(Agent):
    """Discrete actions ``(k + offset + env_rank) mod n_actions`` and ``info["k"]``.

    ``k`` is the step count in the observation's first entry (``CountingEnv``).
    """

    model: _Offset

    def __init__(self, n_actions: int = 3, *, per_env: bool = False):
        super().__init__(model=_Offset())
        self.n_actions = n_actions
        self.per_env = per_env
        self.env_ranks = torch.zeros(0, dtype=torch.long)

    @property
    def has_per_env_state(self) -> bool:
        """True with ``per_env``: the action depends on the env rank."""
        return self.per_env

    def collector_initialize(self, global_B: int, env_ranks: Any) -> None:
        """Record each env's global rank."""
        self.env_ranks = torch.as_tensor(list(env_ranks), dtype=torch.long)

    @torch.no_grad()
    def step(self, observation, prev_action, prev_reward, rnn_state=None):
        """Actions ``(k + offset [+ env_rank]) mod n_actions``; ``info["k"]``."""
        k = observation[..., 0].round().long()
        action = k + self.model.offset.round().long()
        if self.per_env:
            action = action + self.env_ranks
        return action % self.n_actions, {"k": observation[..., 0].clone()}
