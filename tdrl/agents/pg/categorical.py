"""Policy-gradient agent for discrete actions."""

from __future__ import annotations

import math
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from tdrl import keys
from tdrl._compat import Categorical, TensorSpec
from tdrl.agents.base import Agent
from tdrl.agents.pg.base import model_value
from tdrl.models.pg.mlp import CategoricalPgMlpModel
from tdrl.utils.checks import check_bool


class CategoricalPgAgent(Agent):
    """Samples actions from ``softmax(logits)``; the model returns ``(logits, value)``.

    Args:
        model: a model ``(observation, prev_action, prev_reward) -> (logits, value)``; built
            as ``CategoricalPgMlpModel`` from the env's specs when ``None``.
        model_kwargs: keyword arguments of the default model.
        eval_deterministic: act greedily (argmax) in eval mode; rlpyt keeps sampling.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        model_kwargs: dict[str, Any] | None = None,
        eval_deterministic: bool = False,
    ):
        super().__init__(model, model_kwargs)
        self.eval_deterministic = check_bool("eval_deterministic", eval_deterministic)

    def make_model(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, **kwargs: Any
    ) -> nn.Module:
        """The default MLP model for these specs (flat vector observations only)."""
        if not isinstance(action_spec, Categorical):
            raise TypeError(
                "CategoricalPgAgent needs a Discrete action space, got "
                f"{type(action_spec).__name__}; use GaussianPgAgent for Box actions"
            )
        if observation_spec.shape is None or len(observation_spec.shape) != 1:
            raise TypeError(
                "the default CategoricalPgMlpModel needs a flat vector observation, got shape "
                f"{tuple(observation_spec.shape)}; pass model= for other observations"
            )
        return CategoricalPgMlpModel(
            math.prod(observation_spec.shape), int(action_spec.space.n), **kwargs
        )

    @torch.no_grad()
    def step(
        self, observation: Any, prev_action: torch.Tensor, prev_reward: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Actions drawn from ``softmax(logits)``, with ``log_prob``, ``value`` and parameters.

        In eval mode with ``eval_deterministic`` the action is the distribution's mode.
        """
        logits, value = self.model(observation, prev_action, prev_reward)
        log_probs = torch.log_softmax(logits, dim=-1)
        if self.mode == "eval" and self.eval_deterministic:
            action = logits.argmax(dim=-1)
        else:
            action = torch.multinomial(log_probs.exp(), 1).squeeze(-1)
        log_prob = log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        return action, {keys.LOG_PROB: log_prob, keys.VALUE: value, keys.LOGITS: logits}

    def forward(self, td: TensorDictBase) -> TensorDict:
        """Writes ``logits`` and ``value`` for every row of ``td``."""
        logits, value = self.model(td[keys.OBSERVATION], td[keys.PREV_ACTION], td[keys.PREV_REWARD])
        return TensorDict({keys.LOGITS: logits, keys.VALUE: value}, batch_size=td.batch_size)

    def value(
        self, observation: Any, prev_action: torch.Tensor, prev_reward: torch.Tensor
    ) -> torch.Tensor:
        """V(o) for a batch of inputs."""
        return model_value(self.model, observation, prev_action, prev_reward)

    @staticmethod
    def distribution(out: TensorDictBase) -> torch.distributions.Categorical:
        """The action distribution for ``forward``'s output (or stored sample info)."""
        return torch.distributions.Categorical(logits=out[keys.LOGITS], validate_args=False)
