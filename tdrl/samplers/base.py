"""What every sampler provides, and the pieces samplers share.

A sampler is built from an env factory and a batch shape, then:

* ``initialize(agent, *, seed, traj_info_kwargs)`` builds the envs, gives the agent the
  env's specs (``agent.initialize``), allocates the ``[T, B]`` sample buffer and starts the
  envs (decorrelated);
* ``obtain_samples(itr) -> (samples, traj_infos)`` returns a TensorDict of batch size
  ``[batch_T, batch_B]`` (dim 0 named ``"time"``, keys in ``tdrl.keys``) and the
  ``TrajInfo`` of every episode that ended during the batch;
* ``evaluate_agent(itr) -> traj_infos`` runs the agent in eval mode on separate envs and
  returns only completed episodes;
* ``shutdown()`` closes the envs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl._compat import Composite, TensorSpec


class BatchSpec(NamedTuple):
    """Shape of one sampler batch: ``T`` time steps of ``B`` envs."""

    T: int
    B: int

    @property
    def size(self) -> int:
        return self.T * self.B


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def build_samples_buffer(
    batch_spec: BatchSpec,
    observation_spec: TensorSpec,
    action_spec: TensorSpec,
    agent_info: dict[str, torch.Tensor],
    *,
    valid: bool = False,
) -> TensorDict:
    """Allocate the zeroed ``[T, B]`` sample TensorDict for these specs.

    Args:
        batch_spec: ``(T, B)``.
        observation_spec: spec of one observation (a ``Composite`` for Dict spaces).
        action_spec: spec of one action.
        agent_info: an example of what the agent's ``step`` returns beside the action, with
            leading dim B; one ``[T, B, ...]`` entry is allocated per key.
        valid: add a bool ``valid`` ``[T, B]`` entry (wait-reset collection).

    Returns:
        The buffer, with the time dim named ``"time"``.
    """
    T, B = batch_spec
    lead = (T, B)
    buf = TensorDict(
        {
            keys.OBSERVATION: observation_spec.zeros(lead),
            keys.PREV_ACTION: action_spec.zeros(lead),
            keys.PREV_REWARD: torch.zeros(T, B, 1),
            keys.ACTION: action_spec.zeros(lead),
            keys.NEXT: TensorDict(
                {
                    keys.OBSERVATION: observation_spec.zeros(lead),
                    keys.REWARD: torch.zeros(T, B, 1),
                    keys.DONE: torch.zeros(T, B, 1, dtype=torch.bool),
                    keys.TERMINATED: torch.zeros(T, B, 1, dtype=torch.bool),
                    keys.TRUNCATED: torch.zeros(T, B, 1, dtype=torch.bool),
                },
                batch_size=lead,
            ),
        },
        batch_size=lead,
    )
    for key, value in agent_info.items():
        buf.set(key, torch.zeros(T, *value.shape, dtype=value.dtype))
    if valid:
        buf.set(keys.VALID, torch.ones(T, B, dtype=torch.bool))
    buf.names = [keys.TIME_DIM_NAME, None]
    return buf


class ObsWriter:
    """Writes gymnasium observations (arrays or nested dicts) into ``[B, ...]`` arrays.

    Built once from the observation spec; ``write(b, obs)`` costs one NumPy assignment per
    leaf. For a plain ``Box`` space ``arrays`` is a single array.
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
        if not self.paths:
            self.leaves[0][b] = obs
            return
        for path, leaf in zip(self.paths, self.leaves, strict=True):
            value = obs
            for k in path:
                value = value[k]
            leaf[b] = value


def numpy_leaves(td_or_tensor: TensorDictBase | torch.Tensor) -> list[np.ndarray]:
    """NumPy views of a tensor, or of a TensorDict's leaves in ``keys(True, True)`` order."""
    if isinstance(td_or_tensor, torch.Tensor):
        return [td_or_tensor.numpy()]
    return [td_or_tensor.get(k).numpy() for k in td_or_tensor.keys(True, True)]


def make_envs(env_fn: Callable[..., Any], env_kwargs: dict[str, Any], n: int) -> list[gym.Env]:
    """Build ``n`` gymnasium envs from the factory (see ``tdrl.envs.unwrap_gym_env``)."""
    from tdrl.envs.gym import unwrap_gym_env

    return [unwrap_gym_env(env_fn(**env_kwargs)) for _ in range(n)]
