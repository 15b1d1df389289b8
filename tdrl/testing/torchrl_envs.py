"""A tiny deterministic TorchRL env with a nested observation, and an agent acting on it.

``NestedCountingEnv`` is ``CountingEnv``'s TorchRL counterpart: every number it returns is
predictable, so a test can check each position of a ``[T, B]`` batch that tdrl's samplers
collect from a TorchRL ``EnvBase`` (``tdrl.samplers.torchrl_loop``): a nested ``Composite``
observation, a second reward entry (``cost``) to record as an extra key, terminations and
truncations. ``NestedFixedAgent`` acts deterministically on its observation.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from tdrl._compat import Categorical, Composite, EnvBase, Unbounded
from tdrl.agents.base import Agent, State, StepOutput


class NestedCountingEnv(EnvBase):
    """Counts steps; its observation is ``{"observation": {"pos": (2,), "vel": (3,)}}``.

    After step k of an episode (k steps taken) the observation is
    ``pos = [k, episode]`` and ``vel = [env_id, last action, k / 2]`` (all zeros but the
    ``env_id`` after a reset), where ``episode`` counts the resets and ``env_id`` is the
    last seed given to ``set_seed``. The reward of step k is ``k + 1 + action / 10`` and the
    ``cost`` entry of its reward spec is ``action``. An episode lasts ``episode_length`` steps
    and ends as ``terminated`` (or ``truncated`` with ``truncate=True``). Batch size ``[]``;
    ``SerialEnv`` batches it.

    Args:
        episode_length: steps per episode.
        n_actions: size of the ``Categorical`` action spec.
        truncate: end episodes by truncation instead of termination.
    """

    def __init__(self, episode_length: int = 5, n_actions: int = 3, truncate: bool = False):
        super().__init__(batch_size=torch.Size([]))
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        self.episode_length, self.n_actions, self.truncate = episode_length, n_actions, truncate
        self.observation_spec = Composite(
            observation=Composite(pos=Unbounded(shape=(2,)), vel=Unbounded(shape=(3,)))
        )
        self.action_spec = Categorical(n=n_actions)
        self.reward_spec = Composite(reward=Unbounded(shape=(1,)), cost=Unbounded(shape=(1,)))
        flag = Categorical(n=2, shape=(1,), dtype=torch.bool)
        self.done_spec = Composite(done=flag, terminated=flag.clone(), truncated=flag.clone())
        self._k, self._episode, self._env_id, self._action = 0, -1, 0.0, 0.0

    def _observation(self) -> TensorDict:
        pos = torch.tensor([self._k, self._episode], dtype=torch.float32)
        vel = torch.tensor([self._env_id, self._action, self._k / 2], dtype=torch.float32)
        return TensorDict({"pos": pos, "vel": vel}, batch_size=[])

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDict:
        self._k, self._action = 0, 0.0
        self._episode += 1
        no = torch.zeros(1, dtype=torch.bool)
        return TensorDict(
            {"observation": self._observation(), "done": no, "terminated": no, "truncated": no},
            batch_size=[],
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        action = int(tensordict.get("action"))
        reward = self._k + 1 + action / 10
        self._k += 1
        self._action = float(action)
        end = self._k >= self.episode_length
        terminated = torch.tensor([end and not self.truncate])
        truncated = torch.tensor([end and self.truncate])
        return TensorDict(
            {
                "observation": self._observation(),
                "reward": torch.tensor([reward], dtype=torch.float32),
                "cost": torch.tensor([float(action)]),
                "done": terminated | truncated,
                "terminated": terminated,
                "truncated": truncated,
            },
            batch_size=[],
        )

    def _set_seed(self, seed: int | None) -> None:
        self._env_id = float(seed or 0)


class _Offset(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(()))


class NestedFixedAgent(Agent):
    """Actions ``(k + env_id + offset) mod n_actions`` on ``NestedCountingEnv``'s observation.

    ``k`` is ``pos[0]`` and ``env_id`` is ``vel[0]``; ``offset`` is a parameter (zero), so
    a test can change the weights the sampler acts with. ``info["k"]`` repeats ``k``.

    Args:
        n_actions: the env's number of actions.
    """

    model: _Offset

    def __init__(self, n_actions: int = 3):
        super().__init__(model=_Offset())
        self.n_actions = n_actions

    @torch.no_grad()
    def step(
        self, observation: Any, prev_action: torch.Tensor, prev_reward: torch.Tensor,
        rnn_state: State = None,
    ) -> StepOutput:  # fmt: skip
        """The actions of the class docstring for a ``[B]`` batch of observations."""
        k = observation.get("pos")[..., 0]
        env_id = observation.get("vel")[..., 0]
        action = (k + env_id + self.model.offset).round().long() % self.n_actions
        return action, {"k": k.clone()}
