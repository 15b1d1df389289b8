"""Views of a ``[T, B]`` sample buffer, made once, that the env loops write through.

``AgentRows`` is where an agent acts on a batch being collected: ``act(agent, t)`` reads row
``t``'s inputs and writes the action and info into row ``t``, in place. ``ObsWriter`` holds
the observation each env carries to its next step. Every env loop
(``tdrl.samplers.env_loop``, ``tdrl.samplers.torchrl_loop``) and the parallel samplers'
action server (``tdrl.samplers.parallel``) use them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl._compat import Composite, TensorSpec
from tdrl.agents.base import Agent
from tdrl.utils.finite import check_agent_inputs_after


def rows(x: torch.Tensor) -> list[torch.Tensor]:
    """One view per time step (plain indexing: each view can be written in place)."""
    return [x[t] for t in range(x.shape[0])]


def numpy_leaves(td_or_tensor: TensorDictBase | torch.Tensor) -> list[np.ndarray]:
    """NumPy views of a tensor, or of a TensorDict's leaves in ``keys(True, True)`` order."""
    if isinstance(td_or_tensor, torch.Tensor):
        return [td_or_tensor.numpy()]
    return [td_or_tensor.get(k).numpy() for k in td_or_tensor.keys(True, True)]


def inputs_to(
    device: torch.device, observation: Any, prev_action: torch.Tensor, prev_reward: torch.Tensor
) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """The agent's inputs (an observation tensor or TensorDict) copied to ``device``."""
    return (
        observation.to(device, non_blocking=True),
        prev_action.to(device, non_blocking=True),
        prev_reward.to(device, non_blocking=True),
    )


class ObsWriter:
    """Writes gymnasium observations (arrays or nested dicts) into ``[B, ...]`` arrays.

    Built once from the observation spec; ``write(b, obs)`` costs one NumPy assignment per
    leaf. ``tensors`` holds the observations (a tensor, or a TensorDict for Dict spaces) and
    ``leaves`` NumPy views of its leaves (one for a plain ``Box`` space).

    Args:
        observation_spec: spec of one observation.
        n_envs: rows (envs) to hold.
    """

    def __init__(self, observation_spec: TensorSpec, n_envs: int):
        self.paths: list[tuple[str, ...]] = (
            [k if isinstance(k, tuple) else (k,) for k in observation_spec.keys(True, True)]
            if isinstance(observation_spec, Composite)
            else []
        )
        self.tensors = observation_spec.zeros((n_envs,))
        if self.paths:
            self.leaves = [self.tensors.get(p).numpy() for p in self.paths]
        else:
            self.leaves = [self.tensors.numpy()]

    def write(self, b: int, obs: Any) -> None:
        """Store env ``b``'s observation ``obs`` (an array, or a nested dict of arrays)."""
        if not self.paths:
            self.leaves[0][b] = obs
            return
        for path, leaf in zip(self.paths, self.leaves, strict=True):
            value = obs
            for k in path:
                value = value[k]
            leaf[b] = value


class AgentRows:
    """Per-time-step views of a ``[T, B]`` sample buffer's agent inputs and outputs.

    ``act(agent, t)`` runs the agent on row ``t``'s inputs and writes its action and info
    into row ``t``, in place. The views are made once (indexing a TensorDict per step
    costs more than a small policy's forward pass). Info entries the buffer lacks are not
    stored.

    Args:
        samples: the ``[T, B]`` buffer (or a column slice of one).
    """

    def __init__(self, samples: TensorDict):
        T = samples.shape[0]
        obs = samples.get(keys.OBSERVATION)
        self.observation = [obs[t] for t in range(T)]  # a tensor or TensorDict per row
        self.prev_action = rows(samples.get(keys.PREV_ACTION))
        self.prev_reward = rows(samples.get(keys.PREV_REWARD))
        self.action = rows(samples.get(keys.ACTION))
        not_info = {*keys.AGENT_INPUTS, keys.ACTION, keys.NEXT, keys.VALID, keys.IS_INIT}
        not_info.add(keys.RNN_STATE)
        self.info_keys = [k for k in samples.keys() if k not in not_info]  # noqa: SIM118
        self.info = {k: rows(samples.get(k)) for k in self.info_keys}
        state = samples.get(keys.RNN_STATE, None)  # recurrent agents: the state in, and out
        self.rnn_state = None if state is None else [state[t] for t in range(T)]
        self.next_rnn_state = (
            None if state is None else [samples.get(keys.NEXT_RNN_STATE)[t] for t in range(T)]
        )

    def act(self, agent: Agent, t: int, device: torch.device | None = None) -> None:
        """Write the agent's action (and info) for row ``t`` into row ``t``.

        An agent on another device than the CPU gets its inputs copied there; its action
        and info are copied back into the (CPU) buffer.

        Args:
            agent: the acting agent.
            t: the row (time step).
            device: where the inputs go (default: the agent's; pass it to skip the look-up
                in a loop).
        """
        observation, prev_action, prev_reward = (
            self.observation[t],
            self.prev_action[t],
            self.prev_reward[t],
        )
        device = agent.device if device is None else device
        if device.type != "cpu":  # non-blocking from a pinned buffer (SerialSampler's)
            observation, prev_action, prev_reward = inputs_to(
                device, observation, prev_action, prev_reward
            )
        try:
            if self.rnn_state is None:
                action, info = agent.step(observation, prev_action, prev_reward)
            else:
                state = self.rnn_state[t]
                if device.type != "cpu":
                    state = state.to(device, non_blocking=True)
                action, info = agent.step(observation, prev_action, prev_reward, state)
                self.next_rnn_state[t].copy_(info[keys.NEXT_RNN_STATE])  # type: ignore[index]
        except (RuntimeError, ValueError) as err:  # NaN inputs fail deep inside torch
            check_agent_inputs_after(err, observation, prev_reward, f"at time step t={t}")
            raise
        self.action[t].copy_(action)
        for k in self.info_keys:
            self.info[k][t].copy_(info[k])
