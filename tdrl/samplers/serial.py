"""Serial sampler: every env and the agent in the calling process."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

from tdrl import keys
from tdrl.agents.base import Agent
from tdrl.envs.gym import make_gym_env
from tdrl.envs.spaces import space_to_spec
from tdrl.envs.traj_info import TrajInfo, TrajTracker
from tdrl.samplers.base import (
    BatchSpec,
    ObsWriter,
    build_samples_buffer,
    check_positive_int,
    make_envs,
    numpy_leaves,
)


def _rows(x: torch.Tensor) -> list[torch.Tensor]:
    """One view per time step (plain indexing: each view can be written in place)."""
    return [x[t] for t in range(x.shape[0])]


class _ActionAdapter:
    """Turns a row of stored agent actions into what ``env.step`` accepts.

    Box actions are clipped to the bounds (the stored action stays unclipped, so the
    agent's log-probabilities remain exact); Discrete actions are shifted by ``start``.
    """

    def __init__(self, space: gym.Space):
        self.low = self.high = None
        self.offset = 0
        if isinstance(space, gym.spaces.Box):
            self.low, self.high = space.low, space.high
        elif isinstance(space, gym.spaces.Discrete):
            self.offset = int(space.start)

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        if self.low is not None:
            return np.clip(actions, self.low, self.high)
        if self.offset:
            return actions + self.offset
        return actions


class SerialSampler:
    """Steps ``batch_B`` gymnasium envs in this process and returns ``[T, B]`` batches.

    The per-step cost is paid once per batch of envs: the agent runs once per time step on
    all B observations, and every result is written in place into a pre-allocated
    ``[T, B]`` TensorDict through NumPy views of its tensors. Envs reset as soon as an
    episode ends (mid-batch reset): ``prev_action``/``prev_reward`` are then the null action
    and 0, and ``("next", "observation")`` keeps the episode's final observation.

    The returned TensorDict is the sampler's own buffer, overwritten by the next call:
    consume it (or ``.clone()`` it) before sampling again.

    Args:
        env_fn: builds one env from ``**env_kwargs``: a ``gymnasium.Env`` or a
            ``tdrl.envs.make_env`` env (default: ``tdrl.envs.make_gym_env``).
        env_kwargs: keyword arguments of ``env_fn`` (e.g. ``{"id": "CartPole-v1"}``).
        batch_T: time steps per batch.
        batch_B: envs stepped side by side.
        max_decorrelation_steps: at start-up each env takes a random number of random
            actions in ``[0, max_decorrelation_steps)`` so episodes do not end in lockstep.
        eval_n_envs: envs for offline evaluation (0: no evaluation).
        eval_env_kwargs: ``env_kwargs`` of the evaluation envs (default: ``env_kwargs``).
        eval_max_steps: budget of env steps per evaluation, over all eval envs.
        eval_max_trajectories: stop evaluating once this many episodes completed.
        traj_info_cls: per-episode record class (``TrajInfo`` or a subclass).
    """

    def __init__(
        self,
        env_fn: Callable[..., Any] = make_gym_env,
        env_kwargs: dict[str, Any] | None = None,
        *,
        batch_T: int,
        batch_B: int,
        max_decorrelation_steps: int = 100,
        eval_n_envs: int = 0,
        eval_env_kwargs: dict[str, Any] | None = None,
        eval_max_steps: int | None = None,
        eval_max_trajectories: int | None = None,
        traj_info_cls: type[TrajInfo] = TrajInfo,
    ):
        if not callable(env_fn):
            raise TypeError(f"env_fn must be callable, got {env_fn!r}")
        if env_kwargs is not None and not isinstance(env_kwargs, dict):
            raise TypeError(f"env_kwargs must be a dict, got {type(env_kwargs).__name__}")
        self.batch_spec = BatchSpec(
            check_positive_int("batch_T", batch_T), check_positive_int("batch_B", batch_B)
        )
        self.env_fn = env_fn
        self.env_kwargs = dict(env_kwargs or {})
        self.max_decorrelation_steps = check_positive_int(
            "max_decorrelation_steps", max_decorrelation_steps, 0
        )
        self.eval_n_envs = check_positive_int("eval_n_envs", eval_n_envs, 0)
        self.eval_env_kwargs = dict(
            eval_env_kwargs if eval_env_kwargs is not None else self.env_kwargs
        )
        if eval_max_steps is not None:
            check_positive_int("eval_max_steps", eval_max_steps)
        if eval_max_trajectories is not None:
            check_positive_int("eval_max_trajectories", eval_max_trajectories)
        if self.eval_n_envs > 0 and eval_max_steps is None and eval_max_trajectories is None:
            raise ValueError(
                "eval_n_envs > 0 needs eval_max_steps or eval_max_trajectories to bound evaluation"
            )
        self.eval_max_steps = eval_max_steps
        self.eval_max_trajectories = eval_max_trajectories
        self.traj_info_cls = traj_info_cls
        self.agent: Agent | None = None
        self.envs: list[gym.Env] = []
        self.eval_envs: list[gym.Env] = []

    # --------------------------------------------------------------------------- set-up
    def initialize(
        self, agent: Agent, *, seed: int = 0, traj_info_kwargs: dict[str, Any] | None = None
    ) -> TensorDict:
        """Build and start the envs, initialise the agent, allocate the sample buffer.

        Args:
            agent: the agent; receives the env's specs through ``agent.initialize``.
            seed: env ``b`` is seeded with ``seed + b``; eval env ``i`` with
                ``seed + 10_000 + i``.
            traj_info_kwargs: ``{"discount": gamma}`` for ``DiscountedReturn``.

        Returns:
            The (zeroed) sample buffer, as an example of what ``obtain_samples`` returns.
        """
        B = self.batch_spec.B
        self.seed = int(seed)
        self.envs = make_envs(self.env_fn, self.env_kwargs, B)
        space_o, space_a = self.envs[0].observation_space, self.envs[0].action_space
        self.observation_spec = space_to_spec(space_o)
        self.action_spec = space_to_spec(space_a)
        self._act = _ActionAdapter(space_a)
        agent.initialize(self.observation_spec, self.action_spec)
        agent.collector_initialize(B, list(range(B)))
        self.agent = agent
        self._discount = float((traj_info_kwargs or {}).get("discount", 1.0))
        self._traj = TrajTracker(B, self.traj_info_cls, self._discount)

        # Current (carried) agent inputs, as persistent [B] arrays.
        self._obs = ObsWriter(self.observation_spec, B)
        self._prev_action = self.action_spec.zeros((B,))
        self._prev_reward = torch.zeros(B, 1)
        self._null_action = self.action_spec.zeros(()).numpy()
        rng = np.random.default_rng(self.seed)
        for b, env in enumerate(self.envs):
            env.action_space.seed(self.seed + b)
            obs, _ = env.reset(seed=self.seed + b)
            self._obs.write(b, obs)
        self._decorrelate(rng)

        agent.sample_mode(0)
        _, info = agent.step(self._obs.tensors, self._prev_action, self._prev_reward)
        self.samples = build_samples_buffer(
            self.batch_spec, self.observation_spec, self.action_spec, info
        )
        self._bind_views()
        if self.eval_n_envs:
            self.eval_envs = make_envs(self.env_fn, self.eval_env_kwargs, self.eval_n_envs)
            self._eval_started = False
        return self.samples

    def _decorrelate(self, rng: np.random.Generator) -> None:
        """Random actions for a random number of steps per env; episodes that end here are
        not reported, the one in progress keeps counting."""
        prev_action = self._prev_action.numpy()
        prev_reward = self._prev_reward.numpy()
        for b, env in enumerate(self.envs):
            n_steps = int(rng.random() * self.max_decorrelation_steps)
            for _ in range(n_steps):
                action = env.action_space.sample()
                obs, reward, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    self._traj.reset_one(b)
                    obs, _ = env.reset()
                    prev_action[b] = self._null_action
                    prev_reward[b] = 0.0
                else:
                    self._traj.step_one(b, float(reward))
                    prev_action[b] = np.asarray(action) - self._act.offset
                    prev_reward[b] = reward
                self._obs.write(b, obs)

    def _bind_views(self) -> None:
        """Per-time-step torch views and NumPy views of the buffer, made once."""
        s = self.samples
        T = self.batch_spec.T
        obs = s.get(keys.OBSERVATION)
        self._v_obs = [obs[t] for t in range(T)]  # agent inputs at t (tensor or TensorDict)
        self._v_prev_action = _rows(s.get(keys.PREV_ACTION))
        self._v_prev_reward = _rows(s.get(keys.PREV_REWARD))
        self._v_action = _rows(s.get(keys.ACTION))
        not_info = (*keys.AGENT_INPUTS, keys.ACTION, keys.NEXT)
        self._info_keys = [k for k in s.keys() if k not in not_info]  # noqa: SIM118
        self._v_info = {k: _rows(s.get(k)) for k in self._info_keys}
        self._np_obs = numpy_leaves(obs)
        self._np_next_obs = numpy_leaves(s.get(keys.NEXT_OBSERVATION))
        self._np_action = s.get(keys.ACTION).numpy()
        self._np_reward = s.get(keys.NEXT_REWARD).numpy()[..., 0]
        self._np_done = s.get(keys.NEXT_DONE).numpy()[..., 0]
        self._np_terminated = s.get(keys.NEXT_TERMINATED).numpy()[..., 0]
        self._np_truncated = s.get(keys.NEXT_TRUNCATED).numpy()[..., 0]

    # ------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def obtain_samples(self, itr: int) -> tuple[TensorDict, list[TrajInfo]]:
        """Collect one ``[batch_T, batch_B]`` batch with the agent in its current mode.

        Args:
            itr: the runner's iteration (unused here; part of the sampler interface).

        Returns:
            ``(samples, traj_infos)``: the buffer (valid until the next call) and the
            records of the episodes that ended during the batch.
        """
        if self.agent is None:
            raise RuntimeError("call initialize(agent, seed=...) before obtain_samples")
        T, B = self.batch_spec
        agent, envs, traj, act = self.agent, self.envs, self._traj, self._act
        obs_leaves, cur_leaves = self._np_obs, self._obs.leaves
        next_leaves = self._np_next_obs
        single_leaf = not self._obs.paths
        write_obs = self._obs.write
        cur_prev_action = self._prev_action
        cur_prev_reward = self._prev_reward
        np_prev_action = cur_prev_action.numpy()
        np_prev_reward = cur_prev_reward.numpy()[:, 0]
        np_action, np_reward = self._np_action, self._np_reward
        np_term, np_trunc, np_done = self._np_terminated, self._np_truncated, self._np_done
        null_action = self._null_action
        needs_info = traj.needs_info
        completed: list[TrajInfo] = []

        for t in range(T):
            # The agent's inputs at t: the carried observation and previous action/reward.
            for dst, src in zip(obs_leaves, cur_leaves, strict=True):
                dst[t] = src
            self._v_prev_action[t].copy_(cur_prev_action)
            self._v_prev_reward[t].copy_(cur_prev_reward)
            action, info = agent.step(
                self._v_obs[t], self._v_prev_action[t], self._v_prev_reward[t]
            )
            self._v_action[t].copy_(action)
            for k in self._info_keys:
                self._v_info[k][t].copy_(info[k])
            env_actions = act(np_action[t])
            reward_t, term_t, trunc_t = np_reward[t], np_term[t], np_trunc[t]
            done_b = []
            for b in range(B):
                o, r, terminated, truncated, env_info = envs[b].step(env_actions[b])
                reward_t[b] = r
                term_t[b] = terminated
                trunc_t[b] = truncated
                if single_leaf:
                    next_leaves[0][t, b] = o
                else:
                    for path, leaf in zip(self._obs.paths, next_leaves, strict=True):
                        value = o
                        for k in path:
                            value = value[k]
                        leaf[t, b] = value
                if needs_info:
                    traj.step_info(b, env_info)
                if terminated or truncated:
                    done_b.append((b, env_info))
                    o, _ = envs[b].reset()
                write_obs(b, o)
            np.logical_or(term_t, trunc_t, out=np_done[t])
            traj.step(reward_t)
            np_prev_action[:] = np_action[t]
            np_prev_reward[:] = reward_t
            for b, env_info in done_b:
                completed.append(traj.finish(b, env_info))
                np_prev_action[b] = null_action
                np_prev_reward[b] = 0.0
        return self.samples, completed

    # ----------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate_agent(self, itr: int) -> list[TrajInfo]:
        """Run the agent in eval mode on the eval envs; return completed episodes only.

        Every eval env starts a fresh episode; evaluation stops after ``eval_max_steps``
        env steps in total or once ``eval_max_trajectories`` episodes completed.
        """
        if not self.eval_n_envs:
            raise RuntimeError("evaluate_agent needs eval_n_envs > 0")
        n = self.eval_n_envs
        agent = self.agent
        agent.eval_mode(itr)
        envs = self.eval_envs
        writer = ObsWriter(self.observation_spec, n)
        prev_action = self.action_spec.zeros((n,))
        prev_reward = torch.zeros(n, 1)
        np_prev_action = prev_action.numpy()
        np_prev_reward = prev_reward.numpy()[:, 0]
        traj = TrajTracker(n, self.traj_info_cls, self._discount)
        for i, env in enumerate(envs):
            seed = self.seed + 10_000 + i if not self._eval_started else None
            obs, _ = env.reset(seed=seed)
            writer.write(i, obs)
        self._eval_started = True
        max_T = math.inf if self.eval_max_steps is None else max(1, self.eval_max_steps // n)
        max_trajs = self.eval_max_trajectories or math.inf
        completed: list[TrajInfo] = []
        rewards = np.zeros(n)
        t = 0
        while t < max_T and len(completed) < max_trajs:
            action, _ = agent.step(writer.tensors, prev_action, prev_reward)
            np_action = action.cpu().numpy()
            env_actions = self._act(np_action)
            done_b = []
            for i in range(n):
                o, r, terminated, truncated, env_info = envs[i].step(env_actions[i])
                rewards[i] = r
                if traj.needs_info:
                    traj.step_info(i, env_info)
                if terminated or truncated:
                    done_b.append((i, env_info))
                    o, _ = envs[i].reset()
                writer.write(i, o)
            traj.step(rewards)
            np_prev_action[:] = np_action
            np_prev_reward[:] = rewards
            for i, env_info in done_b:
                completed.append(traj.finish(i, env_info))
                np_prev_action[i] = self._null_action
                np_prev_reward[i] = 0.0
            t += 1
        return completed[: self.eval_max_trajectories] if self.eval_max_trajectories else completed

    def shutdown(self) -> None:
        """Close every env."""
        for env in self.envs + self.eval_envs:
            env.close()
        self.envs, self.eval_envs = [], []
