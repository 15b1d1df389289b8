"""Epsilon-greedy agent over a Q-network, with a target network."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from tdrl import keys
from tdrl._compat import Categorical, TensorSpec
from tdrl.agents.base import Agent
from tdrl.utils.tensor import polyak_update

Q = "q"


def epsilon_vector(eps_final: float, eps_final_min: float, env_ranks: Sequence[int], global_B: int):
    """Ape-X style per-env final epsilons, log-spaced from ``eps_final_min`` to
    ``eps_final`` over the global env ranks (rank 0 gets ``eps_final_min``)."""
    if global_B == 1:
        return np.array([eps_final], dtype=np.float64)
    log_eps = np.linspace(math.log(eps_final_min), math.log(eps_final), global_B)
    return np.exp(log_eps)[np.asarray(env_ranks)]


class DqnAgent(Agent):
    """Acts epsilon-greedily on Q-values; holds the online and the target network.

    With ``n_atoms`` set, the model outputs logits over a fixed support of returns
    (categorical DQN, C51) and Q-values are the expectations ``sum_j p_j z_j``; the algorithm
    gives the support with ``set_support(V_min, V_max)``.

    Epsilon is annealed linearly from ``eps_init`` to ``eps_final`` between the iterations
    the algorithm sets with ``set_epsilon_schedule`` (rlpyt: from ``min_itr_learn`` over
    ``eps_steps``). With ``eps_final_min`` each env gets its own final epsilon, log-spaced
    between ``eps_final_min`` and ``eps_final`` across all envs (Ape-X). Evaluation uses
    ``eps_eval``.

    Args:
        model: a model ``(observation, prev_action, prev_reward) -> Q [..., A]`` (or logits
            ``[..., A, n_atoms]``); built from the env's specs when None: an Atari conv
            model for ``[C, H, W]`` uint8 frames, an MLP otherwise.
        model_kwargs: keyword arguments of the default model (e.g. ``{"dueling": True}``).
        n_atoms: atoms of the return distribution (None: plain Q-values).
        eps_init: epsilon at the start of the schedule.
        eps_final: epsilon at its end.
        eps_final_min: lowest per-env final epsilon (None: one epsilon for all envs).
        eps_eval: epsilon in eval mode.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        model_kwargs: dict[str, Any] | None = None,
        n_atoms: int | None = None,
        eps_init: float = 1.0,
        eps_final: float = 0.01,
        eps_final_min: float | None = None,
        eps_eval: float = 0.001,
    ):
        super().__init__(model, model_kwargs)
        for name, value in (
            ("eps_init", eps_init),
            ("eps_final", eps_final),
            ("eps_eval", eps_eval),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if eps_final_min is not None and not 0.0 < eps_final_min <= eps_final:
            raise ValueError(f"eps_final_min must be in (0, eps_final], got {eps_final_min!r}")
        if n_atoms is not None and (not isinstance(n_atoms, int) or n_atoms < 2):
            raise ValueError(f"n_atoms must be an int >= 2 or None, got {n_atoms!r}")
        self.n_atoms = n_atoms
        self.eps_init = eps_init
        self.eps_final = eps_final
        self.eps_final_min = eps_final_min
        self.eps_eval = eps_eval
        self.eps_itr_min = 0
        self.eps_itr_max = 1
        self._eps_final_vec: torch.Tensor | None = None
        self.epsilon: float | torch.Tensor = eps_init
        self.target_model: nn.Module | None = None
        self._target_pairs: tuple | None = None
        self.register_buffer("support", torch.zeros(n_atoms or 0))

    # ------------------------------------------------------------------ set-up
    def make_model(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, **kwargs: Any
    ) -> nn.Module:
        from tdrl.models.dqn import AtariCatDqnModel, AtariDqnModel, CatDqnMlpModel, DqnMlpModel

        if not isinstance(action_spec, Categorical):
            raise TypeError(
                f"DqnAgent needs a Discrete action space, got {type(action_spec).__name__}"
            )
        n_actions = int(action_spec.space.n)
        shape = tuple(observation_spec.shape)
        if len(shape) == 3:
            if self.n_atoms:
                return AtariCatDqnModel(shape, n_actions, n_atoms=self.n_atoms, **kwargs)
            return AtariDqnModel(shape, n_actions, **kwargs)
        if len(shape) == 1:
            if self.n_atoms:
                return CatDqnMlpModel(shape[0], n_actions, n_atoms=self.n_atoms, **kwargs)
            return DqnMlpModel(shape[0], n_actions, **kwargs)
        raise TypeError(f"no default DQN model for observations of shape {shape}; pass model=")

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec) -> None:
        super().initialize(observation_spec, action_spec)
        self.n_actions = int(action_spec.space.n)
        self.target_model = copy.deepcopy(self.model)
        self.target_model.requires_grad_(False)
        self._target_pairs = None

    def collector_initialize(self, global_B: int, env_ranks: Sequence[int]) -> None:
        if self.eps_final_min is not None:
            vec = epsilon_vector(self.eps_final, self.eps_final_min, env_ranks, global_B)
            self._eps_final_vec = torch.as_tensor(vec, dtype=torch.float32)

    @property
    def has_per_env_state(self) -> bool:
        return self._eps_final_vec is not None

    def set_support(self, v_min: float, v_max: float) -> None:
        """Fix the categorical support ``linspace(v_min, v_max, n_atoms)``."""
        if not self.n_atoms:
            raise ValueError("set_support needs an agent built with n_atoms")
        self.support = torch.linspace(v_min, v_max, self.n_atoms, device=self.support.device)

    def set_epsilon_schedule(self, itr_min: int, itr_max: int) -> None:
        """Anneal epsilon from ``eps_init`` at ``itr_min`` to ``eps_final`` at ``itr_max``."""
        self.eps_itr_min = int(itr_min)
        self.eps_itr_max = max(int(itr_max), self.eps_itr_min + 1)

    # ------------------------------------------------------------------ modes
    def sample_mode(self, itr: int) -> None:
        super().sample_mode(itr)
        frac = (itr - self.eps_itr_min) / (self.eps_itr_max - self.eps_itr_min)
        frac = min(1.0, max(0.0, frac))
        final = self._eps_final_vec if self._eps_final_vec is not None else self.eps_final
        self.epsilon = self.eps_init + frac * (final - self.eps_init)

    def eval_mode(self, itr: int) -> None:
        super().eval_mode(itr)
        self.epsilon = self.eps_eval

    # ------------------------------------------------------------------ acting
    def q_values(self, model_out: torch.Tensor) -> torch.Tensor:
        """Q-values from a model output (expectation over atoms for categorical models)."""
        if self.n_atoms:
            return (torch.softmax(model_out, dim=-1) * self.support).sum(-1)
        return model_out

    @torch.no_grad()
    def step(
        self, observation: Any, prev_action: torch.Tensor, prev_reward: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        q = self.q_values(self.model(observation, prev_action, prev_reward))
        action = q.argmax(dim=-1)
        eps = self.epsilon
        n = action.shape[0]
        explore = torch.rand(n) < eps  # eps: a number, or one per env (Ape-X vector)
        if explore.any():
            action = torch.where(explore, torch.randint(self.n_actions, (n,)), action)
        return action, {Q: q}

    def forward(self, td: TensorDictBase) -> TensorDict:
        """Online network output (``q``: Q-values or logits) for every row of ``td``."""
        out = self.model(td[keys.OBSERVATION], td[keys.PREV_ACTION], td[keys.PREV_REWARD])
        return TensorDict({Q: out}, batch_size=td.batch_size)

    @torch.no_grad()
    def target(self, td: TensorDictBase) -> torch.Tensor:
        """Target network output for every row of ``td``."""
        return self.target_model(td[keys.OBSERVATION], td[keys.PREV_ACTION], td[keys.PREV_REWARD])

    @torch.no_grad()
    def update_target(self, tau: float = 1.0) -> None:
        """``target <- tau * online + (1 - tau) * target`` (tau=1: hard copy)."""
        if self._target_pairs is None:  # module traversal costs ~100 us: do it once
            self._target_pairs = (
                list(self.target_model.parameters()),
                list(self.model.parameters()),
                list(self.target_model.buffers()),
                list(self.model.buffers()),
            )
        target, online, target_buffers, online_buffers = self._target_pairs
        polyak_update(target, online, tau)
        if target_buffers:
            polyak_update(target_buffers, online_buffers, 1.0)
