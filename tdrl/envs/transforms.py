"""The transform that gives every agent rlpyt's ``(observation, prev_action, prev_reward)``."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase

from tdrl import keys
from tdrl._compat import Composite, Transform


class PrevActionReward(Transform):
    """Adds ``prev_action`` and ``prev_reward`` to a TorchRL env's observations.

    After a reset both hold the null value (zeros: the null action and reward 0.0); after
    a step they hold the action just taken and the reward just received, so the agent's
    input at time t carries a_{t-1} and r_{t-1}, as in rlpyt.
    """

    def __init__(self) -> None:
        super().__init__(in_keys=[], out_keys=[keys.PREV_ACTION, keys.PREV_REWARD])

    def _null(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        # The parent's specs already carry its batch dims (a SerialEnv's [B] included). On a
        # partial reset the env keeps the entries of the envs not reset (TorchRL's merge).
        parent = self.parent
        action = parent.full_action_spec[keys.ACTION].zero()
        reward = parent.full_reward_spec[keys.REWARD].zero()
        return action, reward

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        action, reward = self._null(tensordict_reset)
        tensordict_reset.set(keys.PREV_ACTION, action)
        tensordict_reset.set(keys.PREV_REWARD, reward)
        return tensordict_reset

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        next_tensordict.set(keys.PREV_ACTION, tensordict.get(keys.ACTION).clone())
        next_tensordict.set(keys.PREV_REWARD, next_tensordict.get(keys.REWARD).clone())
        return next_tensordict

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        """Add ``prev_action`` and ``prev_reward`` entries shaped like the action and reward."""
        parent = self.parent
        observation_spec[keys.PREV_ACTION] = parent.full_action_spec[keys.ACTION].clone()
        observation_spec[keys.PREV_REWARD] = parent.full_reward_spec[keys.REWARD].clone()
        return observation_spec
