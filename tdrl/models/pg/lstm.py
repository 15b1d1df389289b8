"""Recurrent policy-gradient models: a trunk, an LSTM, policy and value heads.

The LSTM's input at step t is ``[trunk(o_t), prev_action, prev_reward]`` with the previous
action one-hot for discrete actions, as rlpyt's ``AtariLstmModel`` and ``MujocoLstmModel``
(this is why every agent receives ``prev_action`` and ``prev_reward``). The trunk is an MLP
for vector observations or rlpyt's Atari conv net (``tdrl.models.pg.atari``).

Every forward takes ``(observation, prev_action, prev_reward, state, is_init)`` with either
one step (``[B, ...]`` inputs, the sampler's call) or a sequence (``[T, B, ...]``, training),
and returns the outputs with the same leading dims plus the state after the last step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from tensordict import TensorDict
from torch import nn

from tdrl.models.lstm import LstmCore, RnnState
from tdrl.models.mlp import MlpModel
from tdrl.models.running_mean_std import RunningMeanStd
from tdrl.utils.checks import check_int


class PgLstmModel(nn.Module):
    """``trunk → LSTM → heads``: logits (discrete) or a Gaussian mean and log std, and V.

    Args:
        trunk: maps observations ``[N, ...]`` to features ``[N, trunk.output_size]``.
        policy_size: number of discrete actions, or the action size (``gaussian``).
        gaussian: continuous actions: the policy head gives the mean, and a learned
            state-independent log std is returned beside it (as rlpyt's ``MujocoFfModel``).
        state_dependent_std: with ``gaussian``, the policy head gives the log std too (one
            output per action dimension beside the mean), as rlpyt's ``MujocoLstmModel``
            does: the log std then depends on the state and the history
            (docs/fidelity.md). Off by default (tdrl's documented runs used the parameter).
        lstm_size: LSTM units.
        head_sizes: hidden layers of each head after the LSTM (empty: linear heads).
        nonlinearity: activation of the head layers.
        init_log_std: initial log std (``gaussian``).
        normalize_observation: normalise vector observations with running statistics.
        observation_size: the observation size (needed by ``normalize_observation``).
        critic_lstm: the value head reads an LSTM of its own (same input), so the value
            loss does not shape the policy's memory (sb3-contrib's ``enable_critic_lstm``);
            the two states are stacked as layers ``[0]`` (policy) and ``[1]`` (value).
    """

    def __init__(
        self,
        trunk: nn.Module,
        policy_size: int,
        *,
        gaussian: bool = False,
        lstm_size: int = 256,
        head_sizes: Sequence[int] = (),
        nonlinearity: type[nn.Module] = nn.ReLU,
        init_log_std: float = 0.0,
        normalize_observation: bool = False,
        observation_size: int | None = None,
        critic_lstm: bool = False,
        state_dependent_std: bool = False,
    ):
        super().__init__()
        self.trunk = trunk
        self.policy_size = check_int("policy_size", policy_size, minimum=1)
        self.gaussian = bool(gaussian)
        self.obs_rms = None
        if normalize_observation:
            if observation_size is None:
                raise ValueError("normalize_observation needs observation_size")
            self.obs_rms = RunningMeanStd((observation_size,))
        in_size = int(cast(int, trunk.output_size)) + self.policy_size + 1
        self.lstm = LstmCore(in_size, check_int("lstm_size", lstm_size, minimum=1))
        self.critic_lstm = LstmCore(in_size, lstm_size) if critic_lstm else None
        self.state_dependent_std = bool(state_dependent_std) and self.gaussian
        pi_size = self.policy_size * (2 if self.state_dependent_std else 1)
        self.pi = MlpModel(lstm_size, list(head_sizes), pi_size, nonlinearity)
        self.v = MlpModel(lstm_size, list(head_sizes), 1, nonlinearity)
        if self.gaussian and not self.state_dependent_std:
            self.log_std = nn.Parameter(torch.full((self.policy_size,), float(init_log_std)))

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> TensorDict:
        """The zero state of ``batch_size`` envs (``h``, ``c``: ``[B, 1 or 2, lstm_size]``)."""
        state = self.lstm.initial_state(batch_size, device)
        if self.critic_lstm is None:
            return state
        return state.apply(lambda x: torch.cat([x, torch.zeros_like(x)], dim=1))

    def _features(
        self,
        observation: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        state: RnnState,
        is_init: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, RnnState]:
        """Policy and value LSTM outputs ``[*lead, lstm_size]`` and the final state."""
        lead = prev_reward.shape[:-1]  # [B] (one step) or [T, B]
        obs = observation.reshape(-1, *observation.shape[len(lead) :])
        if self.obs_rms is not None:
            obs = self.obs_rms(obs.to(torch.float32))
        features = self.trunk(obs.to(torch.float32) if obs.is_floating_point() else obs)
        if self.gaussian:
            action = prev_action.reshape(-1, self.policy_size).to(features.dtype)
        else:
            action = nn.functional.one_hot(prev_action.reshape(-1).long(), self.policy_size)
        x = torch.cat([features, action.to(features.dtype), prev_reward.reshape(-1, 1)], dim=-1)
        seq = x.view(1, *lead, -1) if len(lead) == 1 else x.view(*lead, -1)
        if is_init is not None and len(lead) == 1:
            is_init = is_init.view(1, -1)
        if self.critic_lstm is None:
            y, state = self.lstm(seq, state, is_init)
            return y.view(*lead, -1), y.view(*lead, -1), state
        (h, c), n = state, self.lstm.num_layers
        y, (h_pi, c_pi) = self.lstm(seq, (h[:, :n], c[:, :n]), is_init)
        y_v, (h_v, c_v) = self.critic_lstm(seq, (h[:, n:], c[:, n:]), is_init)
        state = torch.cat([h_pi, h_v], dim=1), torch.cat([c_pi, c_v], dim=1)
        return y.view(*lead, -1), y_v.view(*lead, -1), state

    def forward(
        self,
        observation: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        state: RnnState,
        is_init: torch.Tensor | None = None,
    ) -> tuple[Any, ...]:
        """Policy outputs, value and next state.

        Returns:
            ``(logits, value, state)`` for discrete actions, ``(mu, log_std, value, state)``
            for Gaussian ones; outputs ``[*lead, ...]``.
        """
        y, y_v, state = self._features(observation, prev_action, prev_reward, state, is_init)
        value = self.v(y_v).squeeze(-1)
        out = self.pi(y)
        if self.state_dependent_std:  # rlpyt's MujocoLstmModel: [mu, log_std] from the head
            mu, log_std = out.chunk(2, dim=-1)
            return mu, log_std, value, state
        if self.gaussian:
            return out, self.log_std.expand_as(out), value, state
        return out, value, state


def mlp_trunk(
    observation_size: int, hidden_sizes: Sequence[int], nonlinearity: type[nn.Module] = nn.ReLU
) -> MlpModel:
    """An MLP trunk for vector observations (``output_size`` = the last hidden size)."""
    return MlpModel(observation_size, list(hidden_sizes), None, nonlinearity)
