"""Policy-gradient agent for discrete actions."""

from __future__ import annotations

import math
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor, nn

from tdrl import keys
from tdrl._compat import TensorSpec
from tdrl.agents.base import Agent, State, StepOutput
from tdrl.agents.pg.base import forward_outputs, model_value, step_outputs
from tdrl.agents.spaces import (
    check_action_values,
    check_channels_first,
    discrete_action_count,
    with_index_observations,
)
from tdrl.models.pg.atari import AtariFfModel, atari_pg_trunk
from tdrl.models.pg.lstm import PgLstmModel, mlp_trunk
from tdrl.models.pg.mlp import CategoricalPgMlpModel
from tdrl.utils.checks import check_bool


class CategoricalPgAgent(Agent):
    """Samples actions from ``softmax(logits)``; the model returns ``(logits, value)``.

    The default model follows the observation: ``CategoricalPgMlpModel`` for vectors,
    rlpyt's ``AtariFfModel`` for ``[C, H, W]`` images; with ``recurrent=True`` a
    ``PgLstmModel`` on an MLP trunk (rlpyt's ``MujocoLstmModel`` layout: MLP
    ``hidden_sizes=(256, 256)``, LSTM 256) or on the Atari trunk (rlpyt's
    ``AtariLstmModel``: LSTM 512). A model with ``initial_state`` makes the agent recurrent
    (``tdrl.agents.base.Agent.recurrent``).

    Args:
        model: a model ``(observation, prev_action, prev_reward) -> (logits, value)`` (or a
            recurrent one, see ``tdrl.models.pg.lstm``); built from the env's specs when
            ``None``.
        model_kwargs: keyword arguments of the default model.
        eval_deterministic: act greedily (argmax) in eval mode; rlpyt keeps sampling.
        recurrent: build the recurrent default model.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        model_kwargs: dict[str, Any] | None = None,
        eval_deterministic: bool = False,
        recurrent: bool = False,
    ):
        super().__init__(model, model_kwargs)
        self.eval_deterministic = check_bool("eval_deterministic", eval_deterministic)
        self.make_recurrent = check_bool("recurrent", recurrent)

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec) -> None:
        """Build the model (unless given); learn the number of actions."""
        self.n_actions = discrete_action_count(
            action_spec, "CategoricalPgAgent", "use GaussianPgAgent for Box actions"
        )
        super().initialize(observation_spec, action_spec)

    def make_model(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, **kwargs: Any
    ) -> nn.Module:
        """The default model for these specs (vector or ``[C, H, W]`` image observations).

        A state index is one-hot encoded (``tdrl.agents.spaces.with_index_observations``).
        """
        n_actions = discrete_action_count(
            action_spec, "CategoricalPgAgent", "use GaussianPgAgent for Box actions"
        )
        return with_index_observations(
            observation_spec, lambda spec: self._default_model(spec, n_actions, kwargs)
        )

    def _default_model(
        self, observation_spec: TensorSpec, n_actions: int, kwargs: dict[str, Any]
    ) -> nn.Module:
        shape = None if observation_spec.shape is None else tuple(observation_spec.shape)
        if shape is not None and len(shape) == 3:
            check_channels_first(shape, "CategoricalPgAgent")
            if not self.make_recurrent:
                return AtariFfModel(shape, n_actions, **kwargs)
            # PgLstmModel's own options; the rest configure the conv trunk.
            own = {k: kwargs.pop(k) for k in ("head_sizes", "critic_lstm") if k in kwargs}
            lstm_size = kwargs.pop("lstm_size", 512)
            trunk = atari_pg_trunk(shape, **kwargs)
            return PgLstmModel(trunk, n_actions, lstm_size=lstm_size, **own)
        if shape is None or len(shape) != 1:
            raise TypeError(
                "the default CategoricalPgAgent models need a flat vector or a [C, H, W] "
                f"image observation, got shape {shape}; pass model= for other observations"
            )
        if not self.make_recurrent:
            return CategoricalPgMlpModel(math.prod(shape), n_actions, **kwargs)
        return recurrent_mlp_model(math.prod(shape), n_actions, gaussian=False, **kwargs)

    @torch.no_grad()
    def step(
        self, observation: Any, prev_action: Tensor, prev_reward: Tensor, rnn_state: State = None
    ) -> StepOutput:
        """Actions drawn from ``softmax(logits)``, with ``log_prob``, ``value`` and parameters.

        In eval mode with ``eval_deterministic`` the action is the distribution's mode.
        """
        (logits, value), info = step_outputs(
            self.model, observation, prev_action, prev_reward, rnn_state
        )
        check_action_values(logits, self.n_actions, self)
        log_probs = torch.log_softmax(logits, dim=-1)
        if self.mode == "eval" and self.eval_deterministic:
            action = logits.argmax(dim=-1)
        else:
            action = torch.multinomial(log_probs.exp(), 1).squeeze(-1)
        log_prob = log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        return action, {
            keys.LOG_PROB: log_prob,
            keys.VALUE: value,
            keys.LOGITS: logits,
            **info,
        }

    def forward(self, td: TensorDictBase) -> TensorDict:
        """Writes ``logits`` and ``value`` for every row of ``td`` (``[T, B]`` if recurrent)."""
        logits, value = forward_outputs(self.model, td)
        return TensorDict({keys.LOGITS: logits, keys.VALUE: value}, batch_size=td.batch_size)

    def value(
        self, observation: Any, prev_action: Tensor, prev_reward: Tensor, rnn_state: State = None
    ) -> Tensor:
        """V(o) for a batch of inputs (one step from ``rnn_state`` if recurrent)."""
        return model_value(self.model, observation, prev_action, prev_reward, rnn_state)

    @staticmethod
    def distribution(out: TensorDictBase) -> torch.distributions.Categorical:
        """The action distribution for ``forward``'s output (or stored sample info)."""
        return torch.distributions.Categorical(logits=out[keys.LOGITS], validate_args=False)


def recurrent_mlp_model(
    observation_size: int,
    policy_size: int,
    *,
    gaussian: bool,
    hidden_sizes: tuple[int, ...] | list[int] = (256, 256),
    nonlinearity: type[nn.Module] = nn.ReLU,
    **kwargs: Any,
) -> PgLstmModel:
    """The recurrent model of rlpyt's ``MujocoLstmModel`` layout: MLP trunk, ``PgLstmModel``.

    One difference (docs/fidelity.md): a Gaussian model's log std is one learned
    parameter, where rlpyt's ``MujocoLstmModel`` reads a per-state one from its head.

    Args:
        observation_size: size of the flat observation.
        policy_size: number of actions, or the action size (``gaussian``).
        gaussian: continuous actions.
        hidden_sizes: the trunk's hidden layers (empty: the LSTM reads the observation).
        nonlinearity: activation of the trunk and the heads.
        **kwargs: ``PgLstmModel`` arguments (``lstm_size``, ``head_sizes``, ...).
    """
    return PgLstmModel(
        mlp_trunk(observation_size, hidden_sizes, nonlinearity),
        policy_size,
        gaussian=gaussian,
        nonlinearity=nonlinearity,
        observation_size=observation_size,
        **kwargs,
    )
