"""Epsilon-greedy recurrent agent over an R2D1 Q-network, with a target network.

The agent is recurrent (``tdrl.agents.base.Agent.recurrent``): ``step`` takes the state
before the step from the sampler and returns the state after it in
``info[("next", "rnn_state")]`` beside ``q``, the Q-values it acted on (R2D1's input
priorities are computed from them). Training runs whole sequences with
``sequence_q(sequence, state)``: the online or target network over ``[T, B]`` steps from a
given state, reset to zeros where ``is_init`` is set, as the sampler reset it while acting.

Exploration is ``DqnAgent``'s: epsilon annealed linearly from ``eps_init`` to ``eps_final``
between the iterations the algorithm sets, with ``eps_final_min`` one final epsilon per env
log-spaced across all envs (Ape-X, ``epsilon_vector``), ``eps_eval`` in eval mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from tdrl import keys
from tdrl._compat import Categorical, TensorSpec
from tdrl.agents.base import Agent, RecurrentModel
from tdrl.agents.dqn.common import (
    epsilon_greedy,
    epsilon_vector,
    scheduled_epsilon,
    target_pairs,
    update_target,
)
from tdrl.models.dqn.r2d1 import AtariR2d1Model, R2d1MlpModel
from tdrl.models.lstm import RnnState, state_tensordict, state_tensors
from tdrl.utils.checks import check_range
from tdrl.utils.tensor import frozen_copy


class R2d1Agent(Agent):
    """Acts epsilon-greedily on a recurrent Q-network; holds the online and target networks.

    Args:
        model: a ``RecurrentModel`` ``(observation, prev_action, prev_reward, (h, c),
            is_init) -> (q, (h, c))`` (``tdrl.models.dqn.r2d1``); built from the env's specs
            when None: ``AtariR2d1Model`` for ``[C, H, W]`` frames, ``R2d1MlpModel`` for
            vectors.
        model_kwargs: keyword arguments of the default model (e.g. ``{"dueling": True}``).
        eps_init: epsilon at the start of the schedule.
        eps_final: epsilon at its end.
        eps_final_min: lowest per-env final epsilon (None: one epsilon for all envs).
        eps_eval: epsilon in eval mode.
    """

    target_model: nn.Module

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        model_kwargs: dict[str, Any] | None = None,
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
        self.eps_itr_min = 0
        self.eps_itr_max = 1
        self._eps_final_vec: torch.Tensor | None
        self.register_buffer("_eps_final_vec", None, persistent=False)  # moves with the agent
        self.epsilon: float | torch.Tensor = self.eps_init
        self.n_actions = 0
        self._target_pairs: tuple[list[torch.Tensor], ...] | None = None

    # ------------------------------------------------------------------ set-up
    def make_model(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, **kwargs: Any
    ) -> nn.Module:
        """The default model: rlpyt's ``AtariR2d1Model`` for ``[C, H, W]`` frames, else an MLP."""
        if not isinstance(action_spec, Categorical):
            raise TypeError(
                f"R2d1Agent needs a Discrete action space, got {type(action_spec).__name__}"
            )
        n_actions = int(action_spec.space.n)
        shape = tuple(observation_spec.shape)
        if len(shape) == 3:
            return AtariR2d1Model(shape, n_actions, **kwargs)
        if len(shape) == 1:
            return R2d1MlpModel(math.prod(shape), n_actions, **kwargs)
        raise TypeError(f"no default R2D1 model for observations of shape {shape}; pass model=")

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec) -> None:
        """Build the model (unless given) and its frozen target copy."""
        super().initialize(observation_spec, action_spec)
        if not isinstance(self.model, RecurrentModel):
            raise TypeError(
                "R2d1Agent needs a recurrent model (with initial_state), got "
                f"{type(self.model).__name__}"
            )
        self.n_actions = int(action_spec.space.n)
        self.target_model = frozen_copy(self.model)
        self._target_pairs = None

    def collector_initialize(self, global_B: int, env_ranks: Sequence[int]) -> None:
        """Per-env final epsilons for these env ranks (with ``eps_final_min``)."""
        if self.eps_final_min is not None:
            vec = epsilon_vector(self.eps_final, self.eps_final_min, env_ranks, global_B)
            self._eps_final_vec = torch.as_tensor(vec, dtype=torch.float32, device=self.device)

    @property
    def has_per_env_state(self) -> bool:
        """True with per-env epsilons: ``step`` must see every env of the sampler."""
        return self._eps_final_vec is not None

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
    @torch.no_grad()
    def step(
        self,
        observation: Any,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        rnn_state: TensorDictBase | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Epsilon-greedy actions for ``[B]`` envs from the state before the step.

        Returns:
            ``(action, info)`` with ``q`` (``[B, A]``) and ``("next", "rnn_state")``.
        """
        if rnn_state is None:
            rnn_state = self._zero_state(prev_reward.shape[0])
        q, state = self.model(observation, prev_action, prev_reward, state_tensors(rnn_state))
        info: dict[Any, Any] = {keys.Q: q, keys.NEXT_RNN_STATE: state_tensordict(state)}
        return epsilon_greedy(q, self.epsilon, self.n_actions), info

    def sequence_q(
        self, sequence: TensorDictBase, state: RnnState | None, *, target: bool = False
    ) -> tuple[torch.Tensor, RnnState]:
        """Q-values of the online (or, with ``target``, the target) network over a sequence.

        Args:
            sequence: a time-major ``[T, B]`` TensorDict of agent inputs and ``is_init``.
            state: ``(h, c)`` entering its first step (None: zeros).
            target: run the target network (under ``no_grad``).

        Returns:
            ``(q [T, B, A], (h, c))`` with the state after the last step.
        """
        model = self.target_model if target else self.model
        if state is None:
            state = state_tensors(self._zero_state(sequence.batch_size[1]))
        inputs = (
            sequence.get(keys.OBSERVATION),
            sequence.get(keys.PREV_ACTION),
            sequence.get(keys.PREV_REWARD),
            state,
            sequence.get(keys.IS_INIT, None),
        )
        if target:
            with torch.no_grad():
                return model(*inputs)
        return model(*inputs)

    def forward(self, td: TensorDictBase) -> TensorDict:
        """Online ``q`` for a ``[T, B]`` sampler batch, from the state of its first row."""
        if td.batch_dims != 2:
            raise ValueError(
                "R2d1Agent's forward needs a time-major [T, B] batch (whole sequences), "
                f"got batch size {tuple(td.batch_size)}"
            )
        state = td.get(keys.RNN_STATE, None)
        q, _ = self.sequence_q(td, None if state is None else state_tensors(state[0]))
        return TensorDict({keys.Q: q}, batch_size=td.batch_size)

    def _zero_state(self, batch_size: int) -> TensorDictBase:
        state = self.initial_rnn_state(batch_size)
        if state is None:
            raise RuntimeError("call R2d1Agent.initialize (or pass a recurrent model) first")
        return state

    # ------------------------------------------------------------------ target network
    def target_pairs(self) -> tuple[list[torch.Tensor], ...]:
        """Target and online parameters, then target and online buffers (built once)."""
        if self._target_pairs is None:
            self._target_pairs = target_pairs(self.target_model, self.model)
        return self._target_pairs

    def update_target(self, tau: float = 1.0) -> None:
        """``target <- tau * online + (1 - tau) * target`` (tau=1: hard copy)."""
        update_target(self.target_pairs(), tau)
