"""What the policy-gradient agents share: model calls, feed-forward or recurrent.

A PG model is feed-forward, ``model(observation, prev_action, prev_reward) -> outputs``
with the value last, or recurrent (``tdrl.agents.base.RecurrentModel``),
``model(observation, prev_action, prev_reward, (h, c), is_init) -> (*outputs, (h, c))``.
These functions call either kind the same way for the agents.
"""

from __future__ import annotations

from typing import Any, Protocol, cast, runtime_checkable

import torch
from tensordict import TensorDictBase
from torch import nn

from tdrl import keys
from tdrl.agents.base import RecurrentModel, is_recurrent_model
from tdrl.models.lstm import state_tensordict, state_tensors


@runtime_checkable
class ValueModel(Protocol):
    """A policy-gradient model that computes V(o) alone, without the policy head."""

    def value(self, observation: Any) -> torch.Tensor:
        """V(o) for a batch of observations."""
        ...


def checked_value(outputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A PG model's outputs with its value (the last) shaped as the policy's leading dims.

    A value with a trailing dim of 1 (``[B, 1]``, as Stable-Baselines3's models return it)
    is squeezed; any other shape is refused in one line, before GAE meets it.
    """
    value, lead = outputs[-1], outputs[0].shape[:-1]
    if value.shape == lead:
        return outputs
    if value.shape[:-1] != lead or value.shape[-1] != 1:
        raise ValueError(
            f"a policy-gradient model's value (its last output) must be {list(lead)} or "
            f"{[*lead, 1]}, one per env and step; got {list(value.shape)}"
        )
    return (*outputs[:-1], value.squeeze(-1))


def step_outputs(
    model: nn.Module,
    observation: Any,
    prev_action: torch.Tensor,
    prev_reward: torch.Tensor,
    rnn_state: TensorDictBase | None,
) -> tuple[tuple[torch.Tensor, ...], dict[Any, Any]]:
    """The model's outputs for one step of ``[B]`` envs, and the recurrent info.

    Returns:
        ``(outputs, info)``: ``info`` holds ``("next", "rnn_state")`` for a recurrent model
        (``rnn_state`` None means the zero state), and is empty otherwise.
    """
    if not is_recurrent_model(model):
        return checked_value(model(observation, prev_action, prev_reward)), {}
    if rnn_state is None:
        rnn_state = cast(RecurrentModel, model).initial_state(
            prev_reward.shape[0], prev_reward.device
        )
    *outputs, state = model(observation, prev_action, prev_reward, state_tensors(rnn_state))
    return checked_value(tuple(outputs)), {keys.NEXT_RNN_STATE: state_tensordict(state)}


def forward_outputs(model: nn.Module, td: TensorDictBase) -> tuple[torch.Tensor, ...]:
    """The model's outputs for every row of ``td`` (a ``[T, B]`` batch if recurrent).

    A recurrent model runs from the state stored in the first row (``rnn_state``) and
    resets it where ``is_init`` is set, as the sampler did while acting.
    """
    inputs = (td.get(keys.OBSERVATION), td.get(keys.PREV_ACTION), td.get(keys.PREV_REWARD))
    if not is_recurrent_model(model):
        return checked_value(model(*inputs))
    if td.batch_dims != 2:
        raise ValueError(
            "a recurrent agent's forward needs a time-major [T, B] batch (whole sequences), "
            f"got batch size {tuple(td.batch_size)}"
        )
    state = state_tensors(td.get(keys.RNN_STATE)[0])
    *outputs, _ = model(*inputs, state, td.get(keys.IS_INIT, None))
    return checked_value(tuple(outputs))


def model_value(
    model: nn.Module,
    observation: Any,
    prev_action: torch.Tensor,
    prev_reward: torch.Tensor,
    rnn_state: TensorDictBase | None = None,
) -> torch.Tensor:
    """V(o) from a PG model, for inputs with any leading dims.

    Feed-forward: the model's ``value(observation)`` when it has one (it skips the policy
    head), else the last output of a full forward pass. Recurrent: one step from
    ``rnn_state`` (same leading dims as the inputs) for every entry independently, as the
    bootstrap values of stored next observations need.
    """
    if not is_recurrent_model(model):
        if isinstance(model, ValueModel):
            return model.value(observation)
        return checked_value(model(observation, prev_action, prev_reward))[-1]
    lead = prev_reward.shape[:-1]
    n = lead.numel()
    if rnn_state is None:
        rnn_state = cast(RecurrentModel, model).initial_state(n, prev_reward.device)
    else:
        rnn_state = rnn_state.reshape(n)
    flat = observation.reshape(n, *observation.shape[len(lead) :])
    *outputs, _ = model(
        flat,
        prev_action.reshape(n, *prev_action.shape[len(lead) :]),
        prev_reward.reshape(n, 1),
        state_tensors(rnn_state),
    )
    return outputs[-1].reshape(lead)
