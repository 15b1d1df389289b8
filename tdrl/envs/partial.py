"""Partially observed envs: memory tasks that no feed-forward agent can solve.

``CartPoleNoVel-v1`` is CartPole-v1 with the two velocities removed from the observation
(cart position and pole angle remain), rl-zoo3's benchmark for recurrent policies: the
velocities must be inferred from successive observations. tdrl registers it with
gymnasium on first use of the id (``tdrl.envs.make_gym_env``), so
``make_gym_env("CartPoleNoVel-v1")`` and ``tdrl train --env CartPoleNoVel-v1`` work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

#: CartPole's observation: cart position, cart velocity, pole angle, pole angular velocity.
CARTPOLE_POSITIONS = (0, 2)
CARTPOLE_NO_VEL_ID = "CartPoleNoVel-v1"


class KeepObservationEntries(gym.ObservationWrapper):
    """Keeps only some entries of a flat ``Box`` observation.

    Args:
        env: an env with a 1-D ``Box`` observation space.
        indices: the entries to keep, in order.
    """

    def __init__(self, env: gym.Env, indices: Sequence[int]):
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise TypeError(f"KeepObservationEntries needs a 1-D Box observation, got {space}")
        self.indices = np.asarray(indices, dtype=np.int64)
        self.observation_space = gym.spaces.Box(
            space.low[self.indices], space.high[self.indices], dtype=space.dtype
        )

    def observation(self, observation: Any) -> np.ndarray:
        """The kept entries."""
        return np.asarray(observation)[self.indices]


def make_cartpole_no_vel(**kwargs: Any) -> gym.Env:
    """CartPole-v1 without its velocities (``**kwargs`` go to ``gymnasium.make``)."""
    return KeepObservationEntries(gym.make("CartPole-v1", **kwargs), CARTPOLE_POSITIONS)


def register_partial_envs() -> None:
    """Register ``CartPoleNoVel-v1`` with gymnasium (once)."""
    if CARTPOLE_NO_VEL_ID not in gym.registry:
        gym.register(CARTPOLE_NO_VEL_ID, entry_point=make_cartpole_no_vel)
