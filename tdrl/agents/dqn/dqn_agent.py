"""Epsilon-greedy agent over a Q-network, with a target network."""

from __future__ import annotations

import functools
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor, nn

from tdrl import keys
from tdrl._compat import TensorSpec
from tdrl.agents.base import Agent, State, StepOutput
from tdrl.agents.dqn.common import EpsilonGreedy, default_q_model, exploration_attribute
from tdrl.agents.spaces import check_action_values, discrete_action_count
from tdrl.agents.targets import TargetNetworks
from tdrl.keys import Q
from tdrl.models.dqn import AtariCatDqnModel, AtariDqnModel, CatDqnMlpModel, DqnMlpModel
from tdrl.utils.checks import check_int
from tdrl.utils.tensor import frozen_copy


class DqnAgent(Agent):
    """Acts epsilon-greedily on Q-values; holds the online and the target network.

    With ``n_atoms`` set, the model outputs logits over a fixed support of returns
    (categorical DQN, C51) and Q-values are the expectations ``sum_j p_j z_j``; the algorithm
    gives the support with ``set_support(V_min, V_max)``.

    Exploration is an ``EpsilonGreedy`` (``exploration``, shared with ``R2d1Agent``):
    epsilon annealed linearly from ``eps_init`` to ``eps_final`` between the iterations the
    algorithm sets with ``set_epsilon_schedule`` (rlpyt: from ``min_itr_learn`` over
    ``eps_steps``); with ``eps_final_min`` each env gets its own final epsilon, log-spaced
    between ``eps_final_min`` and ``eps_final`` across all envs (Ape-X); ``eps_eval`` in
    eval mode. Random draws, the per-env epsilons and the support are on the agent's
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
    exploration: EpsilonGreedy
    epsilon = exploration_attribute("epsilon")
    eps_eval = exploration_attribute("eps_eval")

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
        self.exploration = EpsilonGreedy(
            eps_init=eps_init, eps_final=eps_final, eps_final_min=eps_final_min, eps_eval=eps_eval
        )
        self.n_atoms = None if n_atoms is None else check_int("n_atoms", n_atoms, minimum=2)
        self.register_buffer("support", torch.zeros(self.n_atoms or 0))

    # ------------------------------------------------------------------ set-up
    def make_model(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, **kwargs: Any
    ) -> nn.Module:
        """The default Q model: rlpyt's Atari conv net for ``[C, H, W]`` frames, else an MLP."""
        if self.n_atoms:
            atari = functools.partial(AtariCatDqnModel, n_atoms=self.n_atoms)
            mlp = functools.partial(CatDqnMlpModel, n_atoms=self.n_atoms)
            return default_q_model("DqnAgent", observation_spec, action_spec, atari, mlp, **kwargs)
        return default_q_model(
            "DqnAgent", observation_spec, action_spec, AtariDqnModel, DqnMlpModel, **kwargs
        )

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec) -> None:
        """Build the model (unless given) and its frozen target copy."""
        self.n_actions = discrete_action_count(action_spec, type(self).__name__)
        super().initialize(observation_spec, action_spec)
        self.target_model = frozen_copy(self.model)
        self._targets = TargetNetworks([(self.target_model, self.model)], buffers=True)
        self.support = self.support.to(self.device)

    def set_support(self, v_min: float, v_max: float) -> None:
        """Fix the categorical support ``linspace(v_min, v_max, n_atoms)``."""
        if not self.n_atoms:
            raise ValueError("set_support needs an agent built with n_atoms")
        self.support = torch.linspace(v_min, v_max, self.n_atoms, device=self.device)

    def set_epsilon_schedule(self, itr_min: int, itr_max: int) -> None:
        """Anneal epsilon from ``eps_init`` at ``itr_min`` to ``eps_final`` at ``itr_max``."""
        self.exploration.set_schedule(itr_min, itr_max)

    # ------------------------------------------------------------------ acting
    def q_values(self, model_out: torch.Tensor) -> torch.Tensor:
        """Q-values from a model output (expectation over atoms for categorical models)."""
        if self.n_atoms:
            return (torch.softmax(model_out, dim=-1) * self.support).sum(-1)
        return model_out

    @torch.no_grad()
    def step(
        self, observation: Any, prev_action: Tensor, prev_reward: Tensor, rnn_state: State = None
    ) -> StepOutput:
        """Epsilon-greedy actions for a batch of envs, with their Q-values as info.

        The draws are made on the device of the Q-values. On the CPU random actions are
        drawn only when some env explores; elsewhere always (no host synchronisation).
        """
        q = self.q_values(self.model(observation, prev_action, prev_reward))
        check_action_values(q, self.n_actions, self)
        return self.exploration.act(q, self.n_actions), {Q: q}

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
        return self._targets.tensors()

    def update_target(self, tau: float = 1.0) -> None:
        """``target <- tau * online + (1 - tau) * target`` (tau=1: hard copy)."""
        self._targets.update(tau)
