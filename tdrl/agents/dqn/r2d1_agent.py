"""Epsilon-greedy recurrent agent over an R2D1 Q-network, with a target network.

The agent is recurrent (``tdrl.agents.base.Agent.recurrent``): ``step`` takes the state
before the step from the sampler and returns the state after it in
``info[("next", "rnn_state")]`` beside ``q``, the Q-values it acted on (R2D1's input
priorities are computed from them). Training runs whole sequences with
``sequence_q(sequence, state)``: the online or target network over ``[T, B]`` steps from a
given state, reset to zeros where ``is_init`` is set, as the sampler reset it while acting.

Exploration is ``DqnAgent``'s ``EpsilonGreedy`` (``exploration``): epsilon annealed linearly
from ``eps_init`` to ``eps_final`` between the iterations the algorithm sets, with
``eps_final_min`` one final epsilon per env log-spaced across all envs (Ape-X,
``epsilon_vector``), ``eps_eval`` in eval mode.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor, nn

from tdrl import keys
from tdrl._compat import TensorSpec
from tdrl.agents.base import Agent, State, StepOutput, is_recurrent_model
from tdrl.agents.dqn.common import EpsilonGreedy, default_q_model, exploration_attribute
from tdrl.agents.spaces import check_action_values, discrete_action_count
from tdrl.agents.targets import TargetNetworks
from tdrl.models.dqn.r2d1 import AtariR2d1Model, R2d1MlpModel
from tdrl.models.lstm import RnnState, state_tensordict, state_tensors
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
    exploration: EpsilonGreedy
    epsilon = exploration_attribute("epsilon")
    eps_eval = exploration_attribute("eps_eval")

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
        self.exploration = EpsilonGreedy(
            eps_init=eps_init, eps_final=eps_final, eps_final_min=eps_final_min, eps_eval=eps_eval
        )
        self.n_actions = 0

    # ------------------------------------------------------------------ set-up
    def make_model(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, **kwargs: Any
    ) -> nn.Module:
        """The default model: rlpyt's ``AtariR2d1Model`` for ``[C, H, W]`` frames, else an MLP."""
        return default_q_model(
            "R2d1Agent", observation_spec, action_spec, AtariR2d1Model, R2d1MlpModel, **kwargs
        )

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec) -> None:
        """Build the model (unless given) and its frozen target copy."""
        self.n_actions = discrete_action_count(action_spec, type(self).__name__)
        super().initialize(observation_spec, action_spec)
        if not is_recurrent_model(self.model):
            raise TypeError(
                "R2d1Agent needs a recurrent model (with initial_state), got "
                f"{type(self.model).__name__}"
            )
        self.target_model = frozen_copy(self.model)
        self._targets = TargetNetworks([(self.target_model, self.model)], buffers=True)

    def set_epsilon_schedule(self, itr_min: int, itr_max: int) -> None:
        """Anneal epsilon from ``eps_init`` at ``itr_min`` to ``eps_final`` at ``itr_max``."""
        self.exploration.set_schedule(itr_min, itr_max)

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def step(
        self, observation: Any, prev_action: Tensor, prev_reward: Tensor, rnn_state: State = None
    ) -> StepOutput:
        """Epsilon-greedy actions for ``[B]`` envs from the state before the step.

        Returns:
            ``(action, info)`` with ``q`` (``[B, A]``) and ``("next", "rnn_state")``.
        """
        if rnn_state is None:
            rnn_state = self._zero_state(prev_reward.shape[0])
        q, state = self.model(observation, prev_action, prev_reward, state_tensors(rnn_state))
        check_action_values(q, self.n_actions, self)
        info: dict[Any, Any] = {keys.Q: q, keys.NEXT_RNN_STATE: state_tensordict(state)}
        return self.exploration.act(q, self.n_actions), info

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
        return self._targets.tensors()

    def update_target(self, tau: float = 1.0) -> None:
        """``target <- tau * online + (1 - tau) * target`` (tau=1: hard copy)."""
        self._targets.update(tau)
