"""The per-env loop every sampler shares: step gymnasium envs into a ``[T, B]`` buffer.

``EnvRunner`` steps a list of envs and writes their columns of a sample TensorDict in
place, through NumPy views made once (``bind``); the serial sampler, every parallel
sampler's worker and offline evaluation (``tdrl.samplers.evaluation``) all run it. A time
step ``t`` is three calls:

* ``write_inputs(t)``: the carried observation, previous action and previous reward of
  every env into row ``t``;
* ``AgentRows.act(agent, t)``: the agent's action (and info) for row ``t``, computed here
  (``collect``) or by another process (the parallel samplers' action server); an agent
  on a GPU gets row ``t``'s inputs copied there and its outputs are copied back;
* ``step_envs(t)``: every env steps with ``action[t]``; reward, next observation and
  episode ends go into row ``t``; finished episodes are returned as ``TrajInfo``.

The per-step cost is one agent call and one ``env.step`` per env: no TensorDict indexing
and no per-env Python work beyond the env itself. The agent's device is looked up once per
batch; a CPU agent costs no copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl._compat import Composite, TensorSpec
from tdrl.agents.base import Agent
from tdrl.envs.traj_info import TrajInfo, TrajTracker


def _rows(x: torch.Tensor) -> list[torch.Tensor]:
    """One view per time step (plain indexing: each view can be written in place)."""
    return [x[t] for t in range(x.shape[0])]


def numpy_leaves(td_or_tensor: TensorDictBase | torch.Tensor) -> list[np.ndarray]:
    """NumPy views of a tensor, or of a TensorDict's leaves in ``keys(True, True)`` order."""
    if isinstance(td_or_tensor, torch.Tensor):
        return [td_or_tensor.numpy()]
    return [td_or_tensor.get(k).numpy() for k in td_or_tensor.keys(True, True)]


class ActionAdapter:
    """Turns a row of stored agent actions into what ``env.step`` accepts.

    Box actions are clipped to the bounds (the stored action stays unclipped, so the
    agent's log-probabilities remain exact); Discrete actions are shifted by ``start``.

    Args:
        space: the env's action space.
    """

    def __init__(self, space: gym.Space):
        self.low = self.high = None
        self.offset = 0
        if isinstance(space, gym.spaces.Box):
            self.low, self.high = space.low, space.high
        elif isinstance(space, gym.spaces.Discrete):
            self.offset = int(space.start)

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        """What ``env.step`` takes for the stored ``actions`` (clipped or shifted)."""
        if self.low is not None:
            return np.clip(actions, self.low, self.high)
        if self.offset:
            return actions + self.offset
        return actions


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


def inputs_to(
    device: torch.device, observation: Any, prev_action: torch.Tensor, prev_reward: torch.Tensor
) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """The agent's inputs (an observation tensor or TensorDict) copied to ``device``."""
    return (
        observation.to(device, non_blocking=True),
        prev_action.to(device, non_blocking=True),
        prev_reward.to(device, non_blocking=True),
    )


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
        self.prev_action = _rows(samples.get(keys.PREV_ACTION))
        self.prev_reward = _rows(samples.get(keys.PREV_REWARD))
        self.action = _rows(samples.get(keys.ACTION))
        not_info = {*keys.AGENT_INPUTS, keys.ACTION, keys.NEXT, keys.VALID, keys.IS_INIT}
        not_info.add(keys.RNN_STATE)
        self.info_keys = [k for k in samples.keys() if k not in not_info]  # noqa: SIM118
        self.info = {k: _rows(samples.get(k)) for k in self.info_keys}
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
        if self.rnn_state is None:
            action, info = agent.step(observation, prev_action, prev_reward)
        else:
            state = self.rnn_state[t]
            if device.type != "cpu":
                state = state.to(device, non_blocking=True)
            action, info = agent.step(observation, prev_action, prev_reward, state)
            self.next_rnn_state[t].copy_(info[keys.NEXT_RNN_STATE])  # type: ignore[index]
        self.action[t].copy_(action)
        for k in self.info_keys:
            self.info[k][t].copy_(info[k])


class EnvRunner:
    """Steps a list of gymnasium envs into their ``[T, len(envs)]`` columns of a buffer.

    It keeps each env's carried agent inputs (observation, previous action and reward) and
    its running ``TrajInfo`` across batches. ``write_inputs(t)`` copies the carried inputs
    into row ``t`` of the buffer; the caller then fills ``action[t]`` (and agent info)
    itself; ``step_envs(t)`` steps every env with ``action[t]`` and records the results.
    ``collect(agent)`` runs a whole batch with the agent in this process.

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
        env_ranks: Sequence[int],
        seed: int,
        observation_spec: TensorSpec,
        action_spec: TensorSpec,
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
        # Recurrent agents: each env's state after its last step (zeros after a reset) and
        # whether its next step starts an episode; allocated by ``bind``.
        self.rnn_carry: list[np.ndarray] = []
        self.fresh = np.ones(n, dtype=bool)

    def start(self, max_decorrelation_steps: int) -> None:
        """Seed and reset every env, then decorrelate them.

        Each env takes ``[0, max_decorrelation_steps)`` random steps so that episodes do
        not end in lockstep (those episodes are not reported; the one in progress keeps
        counting).
        """
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

    def restart(self) -> None:
        """Start a fresh episode in every env (each continuing its own generator).

        The episodes in progress are dropped unreported, and the carried previous action
        and reward are the null action and 0.
        """
        for b, env in enumerate(self.envs):
            obs, _ = env.reset()
            self.obs.write(b, obs)
            self.traj.reset_one(b)
        self.np_prev_action[:] = self.null_action
        self.np_prev_reward[:] = 0.0
        self.waiting[:] = False
        self._reset_state(slice(None))

    def _reset_state(self, envs: Any) -> None:
        """Zero the carried recurrent state of ``envs`` (an index): their episodes begin."""
        for carry in self.rnn_carry:
            carry[envs] = 0
        self.fresh[envs] = True

    def bind(self, samples: TensorDict) -> None:
        """Make the per-time-step views of ``samples``, once.

        Args:
            samples: ``[T, len(envs)]``, possibly a column slice of a larger buffer.
        """
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
        state = samples.get(keys.RNN_STATE, None)
        self.np_rnn_state = [] if state is None else numpy_leaves(state)
        self.np_next_rnn_state = (
            [] if state is None else numpy_leaves(samples.get(keys.NEXT_RNN_STATE))
        )
        self.np_is_init = None if state is None else samples.get(keys.IS_INIT).numpy()
        shapes = [a.shape[1:] for a in self.np_rnn_state]
        if [c.shape for c in self.rnn_carry] != shapes:  # first bind (a re-bind keeps it)
            self.rnn_carry = [
                np.zeros(s, dtype=a.dtype) for s, a in zip(shapes, self.np_rnn_state, strict=True)
            ]
            self.fresh[:] = True

    def begin_batch(self) -> None:
        """Wait-reset: reset the envs that finished during the previous batch."""
        if self.mid_batch_reset or not self.waiting.any():
            return
        np_prev_action, np_prev_reward = self.np_prev_action, self.np_prev_reward
        for b in np.flatnonzero(self.waiting):
            o, _ = self.envs[b].reset()
            self.obs.write(int(b), o)
            np_prev_action[b] = self.null_action
            np_prev_reward[b] = 0.0
            self._reset_state(b)
        self.waiting[:] = False

    def write_inputs(self, t: int) -> None:
        """Copy the carried observation, previous action and reward into row ``t``.

        ``begin_batch`` runs first when ``t == 0``.
        """
        if t == 0:
            self.begin_batch()
        for dst, src in zip(self.np_obs, self.obs.leaves, strict=True):
            dst[t] = src
        self.rows.prev_action[t].copy_(self.prev_action)
        self.rows.prev_reward[t].copy_(self.prev_reward)
        if self.np_is_init is not None:
            for dst, src in zip(self.np_rnn_state, self.rnn_carry, strict=True):
                dst[t] = src
            self.np_is_init[t] = self.fresh
            self.fresh[:] = False

    def step_envs(self, t: int) -> list[TrajInfo]:
        """Step every env with ``action[t]`` and record the results in row ``t``.

        Records reward, next observation and episode ends; resets finished envs
        (mid-batch), or freezes them until the next batch (wait-reset: their later rows
        hold zeros, ``done`` and ``valid = 0``).

        Returns:
            The episodes that ended at this step.
        """
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
        for carry, src in zip(self.rnn_carry, self.np_next_rnn_state, strict=True):
            carry[:] = src[t]
        completed = []
        for b, env_info in done_b:
            completed.append(traj.finish(b, env_info))
        for e in np.flatnonzero(waiting) if not self.mid_batch_reset else [b for b, _ in done_b]:
            np_prev_action[e] = self.null_action
            np_prev_reward[e] = 0.0
            self._reset_state(e)
        return completed

    def collect(self, agent: Agent, device: torch.device | None = None) -> list[TrajInfo]:
        """Run a whole batch with ``agent`` acting in this process.

        Args:
            agent: the acting agent.
            device: the agent's device, where its inputs go (default: looked up here, once).

        Returns:
            The episodes that ended during the batch.
        """
        completed: list[TrajInfo] = []
        device = agent.device if device is None else device  # once per batch, not per step
        for t in range(len(self.rows.action)):
            self.write_inputs(t)
            self.rows.act(agent, t, device)
            completed.extend(self.step_envs(t))
        return completed

    def close(self) -> None:
        """Close every env."""
        for env in self.envs:
            env.close()
