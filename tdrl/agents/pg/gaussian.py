"""Policy-gradient agent for continuous (Box) actions."""

from __future__ import annotations

import math
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor, nn

from tdrl import keys
from tdrl._compat import Bounded, TensorSpec
from tdrl.agents.base import Agent, State, StepOutput
from tdrl.agents.pg.base import forward_outputs, model_value, step_outputs
from tdrl.agents.pg.categorical import recurrent_mlp_model
from tdrl.models.pg.mlp import GaussianPgMlpModel
from tdrl.utils.checks import check_bool

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class GaussianPgAgent(Agent):
    """Samples ``a ~ N(mu, exp(log_std)^2)`` (diagonal); the model gives ``(mu, log_std, value)``.

    Actions are stored unclipped (so log-probabilities stay exact); the sampler clips what
    it sends to the env to the action bounds.

    Args:
        model: a model ``(observation, prev_action, prev_reward) -> (mu, log_std, value)``;
            built as ``GaussianPgMlpModel`` from the env's specs when ``None``.
        model_kwargs: keyword arguments of the default model.
        eval_deterministic: act with the mean in eval mode; rlpyt keeps sampling.
        recurrent: build a recurrent default model (rlpyt's ``MujocoLstmModel`` layout:
            MLP ``(256, 256)``, LSTM 256, linear heads; see ``tdrl.models.pg.lstm``), except
            that the log std is one learned parameter, not a head output (docs/fidelity.md).
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

    def make_model(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, **kwargs: Any
    ) -> nn.Module:
        """The default MLP model for these specs (flat vector observations only)."""
        if not isinstance(action_spec, Bounded) or not action_spec.dtype.is_floating_point:
            raise TypeError(
                "GaussianPgAgent needs a continuous Box action space, got "
                f"{type(action_spec).__name__}; use CategoricalPgAgent for Discrete actions"
            )
        if observation_spec.shape is None or len(observation_spec.shape) != 1:
            raise TypeError(
                "the default GaussianPgMlpModel needs a flat vector observation, got shape "
                f"{tuple(observation_spec.shape)}; pass model= for other observations"
            )
        sizes = math.prod(observation_spec.shape), math.prod(action_spec.shape)
        if self.make_recurrent:
            return recurrent_mlp_model(*sizes, gaussian=True, **kwargs)
        return GaussianPgMlpModel(*sizes, **kwargs)

    @torch.no_grad()
    def step(
        self, observation: Any, prev_action: Tensor, prev_reward: Tensor, rnn_state: State = None
    ) -> StepOutput:
        """Actions drawn from ``N(mu, exp(log_std)^2)``, with log-prob, value and parameters.

        In eval mode with ``eval_deterministic`` the action is the distribution's mode.
        """
        (mu, log_std, value), info = step_outputs(
            self.model, observation, prev_action, prev_reward, rnn_state
        )
        if self.mode == "eval" and self.eval_deterministic:
            action = mu
        else:
            action = mu + torch.randn_like(mu) * log_std.exp()
        log_prob = gaussian_log_prob(action, mu, log_std)
        return action, {
            keys.LOG_PROB: log_prob,
            keys.VALUE: value,
            keys.LOC: mu,
            keys.LOG_STD: log_std,
            **info,
        }

    def forward(self, td: TensorDictBase) -> TensorDict:
        """Writes ``loc``, ``log_std`` and ``value`` for every row (``[T, B]`` if recurrent)."""
        mu, log_std, value = forward_outputs(self.model, td)
        return TensorDict(
            {keys.LOC: mu, keys.LOG_STD: log_std, keys.VALUE: value}, batch_size=td.batch_size
        )

    def value(
        self, observation: Any, prev_action: Tensor, prev_reward: Tensor, rnn_state: State = None
    ) -> Tensor:
        """V(o) for a batch of inputs (one step from ``rnn_state`` if recurrent)."""
        return model_value(self.model, observation, prev_action, prev_reward, rnn_state)

    @staticmethod
    def distribution(out: TensorDictBase) -> torch.distributions.Independent:
        """The action distribution for ``forward``'s output (or stored sample info)."""
        normal = torch.distributions.Normal(
            out[keys.LOC], out[keys.LOG_STD].exp(), validate_args=False
        )
        return torch.distributions.Independent(normal, 1, validate_args=False)


def gaussian_log_prob(x: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Log-density of a diagonal Gaussian, summed over the last dim."""
    z = (x - mu) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - _LOG_SQRT_2PI).sum(-1)
