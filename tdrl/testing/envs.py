"""Tiny gymnasium environments whose every number is predictable.

They are plain ``gymnasium.Env`` classes, so samplers exercise exactly the same code path
as with real environments.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class CountingEnv(gym.Env):
    """Counts steps: the contract-test env for samplers and replay buffers.

    The observation is ``[k, episode, env_id]`` (float32), where ``k`` is the number of
    steps taken in the current episode and ``episode`` counts the resets. The reward for
    step k is ``k + 1 + action / 10`` (never zero, and it identifies the action). An episode
    lasts ``episode_length`` steps and then ends as ``terminated`` (or as ``truncated``
    when ``truncate=True``). ``info["k"]`` repeats k after the step.

    Args:
        episode_length: steps per episode.
        n_actions: size of the Discrete action space.
        truncate: end episodes by truncation instead of termination.
        env_id: a number written into every observation.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium declares it per instance

    def __init__(
        self, episode_length: int = 5, n_actions: int = 3, truncate: bool = False, env_id: int = 0
    ):
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        self.episode_length = episode_length
        self.truncate = truncate
        self.env_id = env_id
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(n_actions)
        self._k = 0
        self._episode = -1

    def _obs(self) -> np.ndarray:
        return np.array([self._k, self._episode, self.env_id], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start counting at 0."""
        super().reset(seed=seed)
        self._k = 0
        self._episode += 1
        return self._obs(), {}

    def step(self, action):
        """Count one step; reward and episode end as in the class docstring."""
        reward = self._k + 1 + int(action) / 10
        self._k += 1
        end = self._k >= self.episode_length
        terminated = end and not self.truncate
        truncated = end and self.truncate
        return self._obs(), float(reward), terminated, truncated, {"k": self._k}


class IdentityEnv(gym.Env):
    """Reward 1 for repeating the observed symbol: a policy-gradient sanity check.

    Each step shows a one-hot symbol drawn uniformly from ``n``; the reward is 1 when the
    action equals it, else 0. Episodes are truncated after ``episode_length`` steps, so the
    best return is ``episode_length`` and a random policy gets ``episode_length / n``.
    """

    def __init__(self, n: int = 4, episode_length: int = 10):
        self.n = n
        self.episode_length = episode_length
        self.observation_space = gym.spaces.Box(0.0, 1.0, (n,), np.float32)
        self.action_space = gym.spaces.Discrete(n)
        self._target = 0
        self._t = 0

    def _obs(self) -> np.ndarray:
        self._target = int(self.np_random.integers(self.n))
        obs = np.zeros(self.n, dtype=np.float32)
        obs[self._target] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """A new random target."""
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        """Reward 1 for matching the target, then a new target."""
        reward = float(int(action) == self._target)
        self._t += 1
        return self._obs(), reward, False, self._t >= self.episode_length, {}


class ContinuousIdentityEnv(gym.Env):
    """Reward ``-||a - o||^2`` for a target ``o`` in ``[-1, 1]^dim``: the continuous twin.

    The best return is 0; a policy that outputs zeros gets about ``-dim / 3`` per step.
    """

    def __init__(self, dim: int = 2, episode_length: int = 10):
        self.dim = dim
        self.episode_length = episode_length
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
        self._target = np.zeros(dim, dtype=np.float32)
        self._t = 0

    def _obs(self) -> np.ndarray:
        self._target = self.np_random.uniform(-1.0, 1.0, self.dim).astype(np.float32)
        return self._target.copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """A new random target."""
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        """Reward ``-||a - target||^2``, then a new target."""
        reward = -float(np.sum((np.asarray(action, dtype=np.float32) - self._target) ** 2))
        self._t += 1
        return self._obs(), reward, False, self._t >= self.episode_length, {}


class NonFiniteEnv(gym.Wrapper):
    """``IdentityEnv`` (or ``ContinuousIdentityEnv``) that emits one bad value on purpose.

    At its ``at_step``-th call of ``step`` (counted from 0 over the env's life) the reward,
    or the first observation entry, is ``value``: NaN, an infinity, or a huge finite number
    that overflows what training computes from it. The fault-injection env of the
    non-finite guard's tests (``tdrl.utils.finite``).

    Args:
        at_step: the step that returns ``value``.
        where: ``"reward"`` or ``"observation"``.
        value: what it returns there.
        continuous: wrap ``ContinuousIdentityEnv`` (Box actions) instead of
            ``IdentityEnv``.
        episode_length: steps per episode.
    """

    def __init__(
        self,
        at_step: int = 5,
        where: str = "reward",
        value: float = float("nan"),
        continuous: bool = False,
        episode_length: int = 10,
    ):
        if where not in ("reward", "observation"):
            raise ValueError(f"where must be 'reward' or 'observation', got {where!r}")
        inner: gym.Env = (
            ContinuousIdentityEnv(episode_length=episode_length)
            if continuous
            else IdentityEnv(episode_length=episode_length)
        )
        super().__init__(inner)
        self.at_step, self.where, self.value = at_step, where, value
        self.steps = 0

    def step(self, action):
        """The inner env's step, with ``value`` at step ``at_step``."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.steps == self.at_step:
            if self.where == "reward":
                reward = self.value
            else:
                obs = obs.copy()
                obs[0] = self.value
        self.steps += 1
        return obs, reward, terminated, truncated, info
