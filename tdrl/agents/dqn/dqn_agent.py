"""Epsilon-greedy agent over a Q-network, with a target network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from tdrl import keys
from tdrl._compat import Categorical, TensorSpec
from tdrl.agents.base import Agent
from tdrl.agents.dqn.common import (
    epsilon_greedy,
    epsilon_vector,
    scheduled_epsilon,
    target_pairs,
    update_target,
)
from tdrl.keys import Q
from tdrl.models.dqn import AtariCatDqnModel, AtariDqnModel, CatDqnMlpModel, DqnMlpModel
from tdrl.utils.checks import check_int, check_range
from tdrl.utils.tensor import frozen_copy


class DqnAgent(Agent):
    """Acts epsilon-greedily on Q-values; holds the online and the target network.

    With ``n_atoms`` set, the model outputs logits over a fixed support of returns
    (categorical DQN, C51) and Q-values are the expectations ``sum_j p_j z_j``; the algorithm
    gives the support with ``set_support(V_min, V_max)``.

    Epsilon is annealed linearly from ``eps_init`` to ``eps_final`` between the iterations
    the algorithm sets with ``set_epsilon_schedule`` (rlpyt: from ``min_itr_learn`` over
    ``eps_steps``). With ``eps_final_min`` each env gets its own final epsilon, log-spaced
    between ``eps_final_min`` and ``eps_final`` across all envs (Ape-X). Evaluation uses
    ``eps_eval``. Random draws, the per-env epsilons and the support are on the agent's
    device.

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

    target_model: nn.Module
    support: torch.Tensor

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
        self.eps_init = check_range("eps_init", eps_init, 0.0, 1.0)
        self.eps_final = check_range("eps_final", eps_final, 0.0, 1.0)
        self.eps_eval = check_range("eps_eval", eps_eval, 0.0, 1.0)
        self.eps_final_min = None
        if eps_final_min is not None:
            self.eps_final_min = check_range("eps_final_min", eps_final_min, 1e-12, eps_final)
        self.n_atoms = None if n_atoms is None else check_int("n_atoms", n_atoms, minimum=2)
        self.eps_itr_min = 0
        self.eps_itr_max = 1
        self._eps_final_vec: torch.Tensor | None
        self.register_buffer("_eps_final_vec", None, persistent=False)  # moves with the agent
        self.epsilon: float | torch.Tensor = self.eps_init
        self._target_pairs: tuple[list[torch.Tensor], ...] | None = None
        self.register_buffer("support", torch.zeros(self.n_atoms or 0))

    # ------------------------------------------------------------------ set-up
    def make_model(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, **kwargs: Any
    ) -> nn.Module:
        """The default Q model: rlpyt's Atari conv net for ``[C, H, W]`` frames, else an MLP."""
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
        """Build the model (unless given) and its frozen target copy."""
        super().initialize(observation_spec, action_spec)
        self.n_actions = int(action_spec.space.n)
        self.target_model = frozen_copy(self.model)
        self._target_pairs = None
        self.support = self.support.to(self.device)

    def collector_initialize(self, global_B: int, env_ranks: Sequence[int]) -> None:
        """Per-env final epsilons for these env ranks (with ``eps_final_min``)."""
        if self.eps_final_min is not None:
            vec = epsilon_vector(self.eps_final, self.eps_final_min, env_ranks, global_B)
            self._eps_final_vec = torch.as_tensor(vec, dtype=torch.float32, device=self.device)

    @property
    def has_per_env_state(self) -> bool:
        """True with per-env epsilons: ``step`` must see every env of the sampler."""
        return self._eps_final_vec is not None

    def set_support(self, v_min: float, v_max: float) -> None:
        """Fix the categorical support ``linspace(v_min, v_max, n_atoms)``."""
        if not self.n_atoms:
            raise ValueError("set_support needs an agent built with n_atoms")
        self.support = torch.linspace(v_min, v_max, self.n_atoms, device=self.device)

    def set_epsilon_schedule(self, itr_min: int, itr_max: int) -> None:
        """Anneal epsilon from ``eps_init`` at ``itr_min`` to ``eps_final`` at ``itr_max``."""
        self.eps_itr_min = int(itr_min)
        self.eps_itr_max = max(int(itr_max), self.eps_itr_min + 1)

    # ------------------------------------------------------------------ modes
    def sample_mode(self, itr: int) -> None:
        """Sampling: epsilon at its scheduled value for ``itr``."""
        super().sample_mode(itr)
        final = self._eps_final_vec if self._eps_final_vec is not None else self.eps_final
        self.epsilon = scheduled_epsilon(
            itr, self.eps_itr_min, self.eps_itr_max, self.eps_init, final
        )

    def eval_mode(self, itr: int) -> None:
        """Evaluating: epsilon is ``eps_eval``."""
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
        self,
        observation: Any,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        rnn_state: TensorDictBase | None = None,
    ) -> tuple[torch.Tensor, dict[Any, Any]]:
        """Epsilon-greedy actions for a batch of envs, with their Q-values as info.

        The draws are made on the device of the Q-values. On the CPU random actions are
        drawn only when some env explores; elsewhere always (no host synchronisation).
        """
        q = self.q_values(self.model(observation, prev_action, prev_reward))
        return epsilon_greedy(q, self.epsilon, self.n_actions), {Q: q}

    def forward(self, td: TensorDictBase) -> TensorDict:
        """Online network output (``q``: Q-values or logits) for every row of ``td``."""
        out = self.model(td[keys.OBSERVATION], td[keys.PREV_ACTION], td[keys.PREV_REWARD])
        return TensorDict({Q: out}, batch_size=td.batch_size)

    @torch.no_grad()
    def target(self, td: TensorDictBase) -> torch.Tensor:
        """Target network output for every row of ``td``."""
        return self.target_model(td[keys.OBSERVATION], td[keys.PREV_ACTION], td[keys.PREV_REWARD])

    def target_pairs(self) -> tuple[list[torch.Tensor], ...]:
        """Target and online parameters, then target and online buffers (built once)."""
        if self._target_pairs is None:
            self._target_pairs = target_pairs(self.target_model, self.model)
        return self._target_pairs

    def update_target(self, tau: float = 1.0) -> None:
        """``target <- tau * online + (1 - tau) * target`` (tau=1: hard copy)."""
        update_target(self.target_pairs(), tau)
