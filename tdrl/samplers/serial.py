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


class ActionAdapter:
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


class AgentRows:
    """Per-time-step views of a ``[T, B]`` sample buffer's agent inputs and outputs.

    ``act(agent, t)`` runs the agent on row ``t``'s inputs and writes its action and info
    into row ``t``, in place. The views are made once (indexing a TensorDict per step
    costs more than a small policy's forward pass).
    """

    def __init__(self, samples: TensorDict):
        T = samples.shape[0]
        obs = samples.get(keys.OBSERVATION)
        self.observation = [obs[t] for t in range(T)]  # a tensor or TensorDict per row
        self.prev_action = _rows(samples.get(keys.PREV_ACTION))
        self.prev_reward = _rows(samples.get(keys.PREV_REWARD))
        self.action = _rows(samples.get(keys.ACTION))
        not_info = (*keys.AGENT_INPUTS, keys.ACTION, keys.NEXT, keys.VALID)
        self.info_keys = [k for k in samples.keys() if k not in not_info]  # noqa: SIM118
        self.info = {k: _rows(samples.get(k)) for k in self.info_keys}

    def act(self, agent: Agent, t: int, device: torch.device | None = None) -> None:
        """The agent's action (and info) for row ``t``, written into row ``t``; inputs go to
        ``device`` (default: the agent's; pass it to skip the lookup in a loop)."""
        observation, prev_action, prev_reward = (
            self.observation[t],
            self.prev_action[t],
            self.prev_reward[t],
        )
        device = agent.device if device is None else device
        if device.type != "cpu":
            observation = observation.to(device, non_blocking=True)
            prev_action = prev_action.to(device, non_blocking=True)
            prev_reward = prev_reward.to(device, non_blocking=True)
        action, info = agent.step(observation, prev_action, prev_reward)
        self.action[t].copy_(action)
        for k in self.info_keys:
            self.info[k][t].copy_(info[k])


class EnvRunner:
    """Steps a list of gymnasium envs and writes their ``[T, len(envs)]`` columns of a sample
    buffer in place; the per-env loop shared by every sampler.

    It keeps each env's carried agent inputs (observation, previous action and reward) and
    its running ``TrajInfo`` across batches. ``write_inputs(t)`` copies the carried inputs
    into row ``t`` of the buffer; the caller then fills ``action[t]`` (and agent info)
    itself; ``step_envs(t)`` steps every env with ``action[t]`` and records the results.

    Args:
        envs: the envs (unwrapped to gymnasium).
        env_ranks: each env's index among all the sampler's envs; env ``b`` is seeded with
            ``seed + env_ranks[b]`` and decorrelated with its own generator, so a batch
            does not depend on how envs are split among processes.
        seed: base seed.
        observation_spec: spec of one observation.
        action_spec: spec of one action.
        traj_info_cls: per-episode record class.
        discount: for ``TrajInfo.DiscountedReturn``.
        mid_batch_reset: reset an env as soon as its episode ends (True), or freeze it
            for the rest of the batch and reset it before the next one (False: "wait
            reset"; the buffer then has a ``valid`` entry, 0 on the frozen steps).
    """

    def __init__(
        self,
        envs: list[gym.Env],
        *,
        env_ranks: list[int],
        seed: int,
        observation_spec: Any,
        action_spec: Any,
        traj_info_cls: type[TrajInfo],
        discount: float,
        mid_batch_reset: bool = True,
    ):
        self.envs = envs
        self.env_ranks = list(env_ranks)
        self.seed = int(seed)
        self.observation_spec = observation_spec
        self.action_spec = action_spec
        n = len(envs)
        self.act = ActionAdapter(envs[0].action_space)
        self.traj = TrajTracker(n, traj_info_cls, discount)
        self.obs = ObsWriter(observation_spec, n)
        self.prev_action = action_spec.zeros((n,))
        self.prev_reward = torch.zeros(n, 1)
        self.np_prev_action = self.prev_action.numpy()  # views, written in place
        self.np_prev_reward = self.prev_reward.numpy()[:, 0]
        self.null_action = action_spec.zeros(()).numpy()
        self.mid_batch_reset = bool(mid_batch_reset)
        self.waiting = np.zeros(n, dtype=bool)  # wait-reset: finished, frozen until next batch

    def start(self, max_decorrelation_steps: int) -> None:
        """Seed and reset every env, then take ``[0, max_decorrelation_steps)`` random steps
        in each so that episodes do not end in lockstep (those episodes are not reported;
        the one in progress keeps counting)."""
        prev_action = self.prev_action.numpy()
        prev_reward = self.prev_reward.numpy()
        for b, env in enumerate(self.envs):
            seed = self.seed + self.env_ranks[b]
            env.action_space.seed(seed)
            obs, _ = env.reset(seed=seed)
            n_steps = int(np.random.default_rng(seed).random() * max_decorrelation_steps)
            for _ in range(n_steps):
                action = env.action_space.sample()
                obs, reward, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    self.traj.reset_one(b)
                    obs, _ = env.reset()
                    prev_action[b] = self.null_action
                    prev_reward[b] = 0.0
                else:
                    self.traj.step_one(b, float(reward))
                    prev_action[b] = np.asarray(action) - self.act.offset
                    prev_reward[b] = reward
            self.obs.write(b, obs)

    def bind(self, samples: TensorDict) -> None:
        """Per-time-step views of ``samples`` (``[T, len(envs)]``, possibly a column slice
        of a larger buffer), made once."""
        self.samples = samples
        self.rows = AgentRows(samples)
        obs = samples.get(keys.OBSERVATION)
        self.np_obs = numpy_leaves(obs)
        self.np_next_obs = numpy_leaves(samples.get(keys.NEXT_OBSERVATION))
        self.np_action = samples.get(keys.ACTION).numpy()
        self.np_reward = samples.get(keys.NEXT_REWARD).numpy()[..., 0]
        self.np_done = samples.get(keys.NEXT_DONE).numpy()[..., 0]
        self.np_terminated = samples.get(keys.NEXT_TERMINATED).numpy()[..., 0]
        self.np_truncated = samples.get(keys.NEXT_TRUNCATED).numpy()[..., 0]
        valid = samples.get(keys.VALID, None)
        self.np_valid = None if valid is None else valid.numpy()

    def begin_batch(self) -> None:
        """Wait-reset: reset the envs that finished during the previous batch."""
        if self.mid_batch_reset or not self.waiting.any():
            return
        np_prev_action, np_prev_reward = self.np_prev_action, self.np_prev_reward
        for b in np.flatnonzero(self.waiting):
            o, _ = self.envs[b].reset()
            self.obs.write(b, o)
            np_prev_action[b] = self.null_action
            np_prev_reward[b] = 0.0
        self.waiting[:] = False

    def write_inputs(self, t: int) -> None:
        """Row ``t``'s agent inputs: the carried observation, previous action and reward
        (``begin_batch`` first when ``t == 0``)."""
        if t == 0:
            self.begin_batch()
        for dst, src in zip(self.np_obs, self.obs.leaves, strict=True):
            dst[t] = src
        self.rows.prev_action[t].copy_(self.prev_action)
        self.rows.prev_reward[t].copy_(self.prev_reward)

    def step_envs(self, t: int) -> list[TrajInfo]:
        """Step every env with ``action[t]``; record reward, next observation and episode
        ends in row ``t``; reset finished envs (mid-batch), or freeze them until the next
        batch (wait-reset: their later rows hold zeros, ``done`` and ``valid = 0``).
        Returns the finished episodes."""
        envs, traj, obs_writer = self.envs, self.traj, self.obs
        next_leaves, paths = self.np_next_obs, self.obs.paths
        env_actions = self.act(self.np_action[t])
        reward_t, term_t, trunc_t = self.np_reward[t], self.np_terminated[t], self.np_truncated[t]
        waiting = self.waiting
        if self.np_valid is not None:
            self.np_valid[t] = ~waiting
        frozen = waiting.copy() if not self.mid_batch_reset else None
        done_b = []
        for b in range(len(envs)):
            if frozen is not None and frozen[b]:
                reward_t[b] = 0.0
                term_t[b] = True
                trunc_t[b] = False
                for leaf in next_leaves:
                    leaf[t, b] = 0
                continue
            o, r, terminated, truncated, env_info = envs[b].step(env_actions[b])
            reward_t[b] = r
            term_t[b] = terminated
            trunc_t[b] = truncated
            if not paths:
                next_leaves[0][t, b] = o
            else:
                for path, leaf in zip(paths, next_leaves, strict=True):
                    value = o
                    for k in path:
                        value = value[k]
                    leaf[t, b] = value
            if traj.needs_info:
                traj.step_info(b, env_info)
            if terminated or truncated:
                done_b.append((b, env_info))
                if self.mid_batch_reset:
                    o, _ = envs[b].reset()
                else:
                    waiting[b] = True
                    o = None
            if o is not None:
                obs_writer.write(b, o)
            else:
                for leaf in obs_writer.leaves:
                    leaf[b] = 0
        np.logical_or(term_t, trunc_t, out=self.np_done[t])
        traj.step(reward_t, active=None if frozen is None or not frozen.any() else ~frozen)
        np_prev_action, np_prev_reward = self.np_prev_action, self.np_prev_reward
        np_prev_action[:] = self.np_action[t]
        np_prev_reward[:] = reward_t
        completed = []
        for b, env_info in done_b:
            completed.append(traj.finish(b, env_info))
        for b in np.flatnonzero(waiting) if not self.mid_batch_reset else [b for b, _ in done_b]:
            np_prev_action[b] = self.null_action
            np_prev_reward[b] = 0.0
        return completed

    def collect(self, agent: Agent) -> list[TrajInfo]:
        """A whole batch with ``agent`` acting in this process."""
        completed: list[TrajInfo] = []
        device = agent.device  # looked up once per batch, not per step
        for t in range(len(self.rows.action)):
            self.write_inputs(t)
            self.rows.act(agent, t, device)
            completed.extend(self.step_envs(t))
        return completed

    def close(self) -> None:
        for env in self.envs:
            env.close()


@torch.no_grad()
def evaluate(
    agent: Agent,
    envs: list[gym.Env],
    *,
    observation_spec: Any,
    action_spec: Any,
    traj_info_cls: type[TrajInfo],
    discount: float,
    max_steps: int | None,
    max_trajectories: int | None,
    seeds: list[int] | None,
) -> list[TrajInfo]:
    """Run ``agent`` (already in eval mode) on ``envs`` from fresh episodes; return the
    completed episodes only. Stops after ``max_steps`` env steps over all envs or once
    ``max_trajectories`` episodes completed. ``seeds``: reset seeds (None: continue the
    envs' generators)."""
    n = len(envs)
    act = ActionAdapter(envs[0].action_space)
    writer = ObsWriter(observation_spec, n)
    prev_action = action_spec.zeros((n,))
    prev_reward = torch.zeros(n, 1)
    np_prev_action = prev_action.numpy()
    np_prev_reward = prev_reward.numpy()[:, 0]
    null_action = action_spec.zeros(()).numpy()
    traj = TrajTracker(n, traj_info_cls, discount)
    for i, env in enumerate(envs):
        obs, _ = env.reset(seed=None if seeds is None else seeds[i])
        writer.write(i, obs)
    max_T = math.inf if max_steps is None else max(1, max_steps // n)
    max_trajs = max_trajectories or math.inf
    completed: list[TrajInfo] = []
    rewards = np.zeros(n)
    t = 0
    while t < max_T and len(completed) < max_trajs:
        action, _ = agent.step(writer.tensors, prev_action, prev_reward)
        np_action = action.cpu().numpy()
        env_actions = act(np_action)
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
            np_prev_action[i] = null_action
            np_prev_reward[i] = 0.0
        t += 1
    return completed[:max_trajectories] if max_trajectories else completed


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
        mid_batch_reset: reset an env as soon as its episode ends (default); False freezes
            it for the rest of the batch and resets it before the next ("wait reset", for
            recurrent training and slow resets): its later rows hold zeros and ``done``, and
            the batch gets a bool ``valid`` entry, False on those rows, that the
            policy-gradient losses use as a mask.
    """

    def __init__(
        self,
        env_fn: Callable[..., Any] = make_gym_env,
        env_kwargs: dict[str, Any] | None = None,
        *,
        batch_T: int,
        batch_B: int,
        mid_batch_reset: bool = True,
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
        if not isinstance(mid_batch_reset, bool):
            raise TypeError(f"mid_batch_reset must be a bool, got {mid_batch_reset!r}")
        self.mid_batch_reset = mid_batch_reset
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
        self.observation_spec = space_to_spec(self.envs[0].observation_space)
        self.action_spec = space_to_spec(self.envs[0].action_space)
        agent.initialize(self.observation_spec, self.action_spec)
        agent.collector_initialize(B, list(range(B)))
        self.agent = agent
        self._discount = float((traj_info_kwargs or {}).get("discount", 1.0))
        self._runner = EnvRunner(
            self.envs,
            env_ranks=list(range(B)),
            seed=self.seed,
            observation_spec=self.observation_spec,
            action_spec=self.action_spec,
            traj_info_cls=self.traj_info_cls,
            discount=self._discount,
            mid_batch_reset=self.mid_batch_reset,
        )
        self._runner.start(self.max_decorrelation_steps)
        agent.sample_mode(0)
        r = self._runner
        _, info = agent.step(r.obs.tensors, r.prev_action, r.prev_reward)
        self.samples = build_samples_buffer(
            self.batch_spec,
            self.observation_spec,
            self.action_spec,
            info,
            valid=not self.mid_batch_reset,
        )
        self._runner.bind(self.samples)
        if self.eval_n_envs:
            self.eval_envs = make_envs(self.env_fn, self.eval_env_kwargs, self.eval_n_envs)
            self._eval_started = False
        return self.samples

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
        return self.samples, self._runner.collect(self.agent)

    # ----------------------------------------------------------------------- evaluation
    def evaluate_agent(self, itr: int) -> list[TrajInfo]:
        """Run the agent in eval mode on the eval envs; return completed episodes only.

        Every eval env starts a fresh episode; evaluation stops after ``eval_max_steps``
        env steps in total or once ``eval_max_trajectories`` episodes completed.
        """
        if not self.eval_n_envs:
            raise RuntimeError("evaluate_agent needs eval_n_envs > 0")
        self.agent.eval_mode(itr)
        seeds = (
            None
            if self._eval_started
            else [self.seed + 10_000 + i for i in range(self.eval_n_envs)]
        )
        self._eval_started = True
        return evaluate(
            self.agent,
            self.eval_envs,
            observation_spec=self.observation_spec,
            action_spec=self.action_spec,
            traj_info_cls=self.traj_info_cls,
            discount=self._discount,
            max_steps=self.eval_max_steps,
            max_trajectories=self.eval_max_trajectories,
            seeds=seeds,
        )

    def shutdown(self) -> None:
        """Close every env."""
        for env in self.envs + self.eval_envs:
            env.close()
        self.envs, self.eval_envs = [], []
