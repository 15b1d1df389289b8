"""The per-env loop every sampler shares: step envs into a ``[T, B]`` buffer.

``EnvLoop`` is what the loop over gymnasium envs (``EnvRunner``, here) and the loop over
TorchRL envs (``tdrl.samplers.torchrl_loop.TorchEnvRunner``) share: the carried agent
inputs of every env, the episode statistics, the recurrent state and the per-step views of
the buffer. Each runner steps a list of envs and writes their columns of a sample
TensorDict in place, through views made once (``bind``); the serial sampler, every
parallel sampler's worker and offline evaluation (``tdrl.samplers.evaluation``) all run
one. A time step ``t`` is three calls:

* ``write_inputs(t)``: the carried observation, previous action and previous reward of
  every env into row ``t``;
* ``AgentRows.act(agent, t)``: the agent's action (and info) for row ``t``, computed here
  (``collect``) or by another process (the parallel samplers' action server); an agent
  on a GPU gets row ``t``'s inputs copied there and its outputs are copied back;
* ``step_envs(t)``: every env steps with ``action[t]``; reward, next observation, episode
  ends and the extra keys go into row ``t``; finished episodes are returned as ``TrajInfo``.

For gymnasium envs the per-step cost is one agent call and one ``env.step`` per env: no
TensorDict indexing and no per-env Python work beyond the env itself. The agent's device
is looked up once per batch; a CPU agent costs no copy. ``extra_keys`` of a gymnasium env
are entries of each step's ``info`` (numbers, stored as float32 ``("next", *key)``
``[T, B, 1]``); every step's ``info`` must hold them.

The module is over 450 lines because the two classes are read together: ``EnvLoop``'s
carried inputs and views, and ``EnvRunner``'s gymnasium stepping that writes into them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

from tdrl import keys
from tdrl._compat import TensorSpec
from tdrl.agents.base import Agent
from tdrl.envs.torchrl_env import Path, show
from tdrl.envs.traj_info import TrajInfo, TrajTracker
from tdrl.samplers.buffer_views import AgentRows, ObsWriter, numpy_leaves
from tdrl.samplers.env_checks import check_reset_output, check_step_output

__all__ = ["ActionAdapter", "AgentRows", "EnvLoop", "EnvRunner", "ObsWriter", "numpy_leaves"]


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


class EnvLoop:
    """What every env runner shares (see the module docstring); a runner subclasses it.

    It keeps each env's carried agent inputs (observation, previous action and reward), its
    running ``TrajInfo`` and its recurrent state across batches. ``write_inputs(t)`` copies
    the carried inputs into row ``t`` of the buffer; the caller then fills ``action[t]``
    (and agent info) itself; the runner's ``step_envs(t)`` steps every env with
    ``action[t]`` and records the results, ending with ``finish_step``. ``collect(agent)``
    runs a whole batch with the agent in this process.

    A runner implements ``start``, ``restart``, ``begin_batch``, ``step_envs`` and ``close``.

    Args:
        n_envs: the envs' columns of the buffer.
        env_ranks: each column's index among all the sampler's envs; env ``b`` is seeded
            with ``seed + env_ranks[b]`` and decorrelated with its own generator, so a
            batch does not depend on how envs are split among processes.
        seed: base seed.
        observation_spec: spec of one observation.
        action_spec: spec of one action.
        traj_info_cls: per-episode record class.
        discount: for ``TrajInfo.DiscountedReturn``.
        mid_batch_reset: reset an env as soon as its episode ends (True), or freeze it
            for the rest of the batch and reset it before the next one (False: "wait
            reset"; the buffer then has a ``valid`` entry, 0 on the frozen steps).
        extra_keys: keys recorded under ``("next", *key)`` (where the buffer has them).
    """

    def __init__(
        self,
        n_envs: int,
        *,
        env_ranks: Sequence[int],
        seed: int,
        observation_spec: TensorSpec,
        action_spec: TensorSpec,
        traj_info_cls: type[TrajInfo],
        discount: float,
        mid_batch_reset: bool = True,
        extra_keys: Sequence[Path] = (),
    ):
        n = n_envs
        self.env_ranks = list(env_ranks)
        self.seed = int(seed)
        self.observation_spec = observation_spec
        self.action_spec = action_spec
        self.extra_keys = tuple(extra_keys)
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

    # ------------------------------------------------------------- what a runner implements
    def start(self, max_decorrelation_steps: int) -> None:
        """Seed and reset every env, then decorrelate them (random actions)."""
        raise NotImplementedError

    def restart(self) -> None:
        """Start a fresh episode in every env, dropping the ones in progress unreported."""
        raise NotImplementedError

    def begin_batch(self) -> None:
        """Wait-reset: reset the envs that finished during the previous batch."""
        raise NotImplementedError

    def step_envs(self, t: int) -> list[TrajInfo]:
        """Step every env with ``action[t]``, record row ``t``; the episodes that ended."""
        raise NotImplementedError

    def close(self) -> None:
        """Close every env."""
        raise NotImplementedError

    # ------------------------------------------------------------------------ shared
    def agent_inputs(self) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """The carried ``(observation, prev_action, prev_reward)`` of every env (``[B]``)."""
        return self.obs.tensors, self.prev_action, self.prev_reward

    def _reset_state(self, envs: Any) -> None:
        """Zero the carried recurrent state of ``envs`` (an index): their episodes begin."""
        for carry in self.rnn_carry:
            carry[envs] = 0
        self.fresh[envs] = True

    def _all_restarted(self) -> None:
        """After every env was reset: null previous actions, zero rewards and states."""
        self.np_prev_action[:] = self.null_action
        self.np_prev_reward[:] = 0.0
        self.waiting[:] = False
        self._reset_state(slice(None))

    def bind(self, samples: TensorDict) -> None:
        """Make the per-time-step views of ``samples``, once.

        Args:
            samples: ``[T, n_envs]``, possibly a column slice of a larger buffer.
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
        self.extras = [
            (path, samples.get((keys.NEXT, *path)))
            for path in self.extra_keys
            if (keys.NEXT, *path) in samples.keys(True, True)
        ]
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

    def finish_step(
        self, t: int, ended: list[tuple[int, Any]], frozen: np.ndarray | None
    ) -> list[TrajInfo]:
        """Finish step ``t`` once the runner wrote its reward, terminated and truncated.

        Sets ``done``, updates the episode statistics, the carried previous action and
        reward and the recurrent state.

        Args:
            t: the row.
            ended: ``(column, info)`` of each episode that ended at this step.
            frozen: wait-reset: the columns frozen during this step (None: mid-batch reset).

        Returns:
            The records of the episodes that ended.
        """
        reward_t = self.np_reward[t]
        np.logical_or(self.np_terminated[t], self.np_truncated[t], out=self.np_done[t])
        self.traj.step(reward_t, active=None if frozen is None or not frozen.any() else ~frozen)
        np_prev_action, np_prev_reward = self.np_prev_action, self.np_prev_reward
        np_prev_action[:] = self.np_action[t]
        np_prev_reward[:] = reward_t
        for carry, src in zip(self.rnn_carry, self.np_next_rnn_state, strict=True):
            carry[:] = src[t]
        records = [(b, info) for b, info in ended if game_ended(info)]
        completed = self.traj.finish_many([b for b, _ in records], [i for _, i in records])
        reset = np.flatnonzero(self.waiting) if not self.mid_batch_reset else [b for b, _ in ended]
        if len(reset):
            index = np.asarray(reset, dtype=np.int64)
            np_prev_action[index] = self.null_action
            np_prev_reward[index] = 0.0
            self._reset_state(index)
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


class EnvRunner(EnvLoop):
    """Steps a list of gymnasium envs into their ``[T, len(envs)]`` columns of a buffer.

    See ``EnvLoop`` for the calls and the arguments beside ``envs``; results are written
    through NumPy views of the buffer, one assignment per env and entry.

    Args:
        envs: the envs (unwrapped to gymnasium).
        **kwargs: ``EnvLoop``'s keyword arguments (``env_ranks``, ``seed``, specs, ...).
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
        extra_keys: Sequence[Path] = (),
    ):
        super().__init__(
            len(envs),
            env_ranks=env_ranks,
            seed=seed,
            observation_spec=observation_spec,
            action_spec=action_spec,
            traj_info_cls=traj_info_cls,
            discount=discount,
            mid_batch_reset=mid_batch_reset,
            extra_keys=extra_keys,
        )
        self.envs = envs
        self.act = ActionAdapter(envs[0].action_space)
        self.unchecked = set(range(len(envs)))  # envs whose first step is still to check

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
            out = env.reset(seed=seed)
            check_reset_output(out, env, b, self.observation_spec)
            obs = out[0]
            n_steps = int(np.random.default_rng(seed).random() * max_decorrelation_steps)
            for _ in range(n_steps):
                action = env.action_space.sample()
                step = env.step(action)
                if b in self.unchecked:
                    check_step_output(step, env, b, self.observation_spec)
                    self.unchecked.discard(b)
                obs, reward, terminated, truncated, info = step
                ended = terminated or truncated
                if ended and game_ended(info):
                    self.traj.reset_one(b)
                else:
                    self.traj.step_one(b, float(reward))
                    if self.traj.needs_info:
                        self.traj.step_info(b, info)
                if ended:
                    obs, _ = env.reset()
                    prev_action[b] = self.null_action
                    prev_reward[b] = 0.0
                else:
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
        self._all_restarted()

    def bind(self, samples: TensorDict) -> None:
        """``EnvLoop.bind``, plus NumPy views of the extra keys' ``[T, B]`` rows."""
        super().bind(samples)
        self.np_extras = [(path, x.numpy()[..., 0]) for path, x in self.extras]

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

    def step_envs(self, t: int) -> list[TrajInfo]:
        """Step every env with ``action[t]`` and record the results in row ``t``.

        Records reward, next observation, episode ends and the extra keys (from the
        step's ``info``); resets finished envs (mid-batch), or freezes them until the next
        batch (wait-reset: their later rows hold zeros, ``done`` and ``valid = 0``).

        Returns:
            The episodes that ended at this step.
        """
        envs, traj, obs_writer = self.envs, self.traj, self.obs
        next_leaves, paths, extras = self.np_next_obs, self.obs.paths, self.np_extras
        env_actions = self.act(self.np_action[t])
        reward_t, term_t, trunc_t = self.np_reward[t], self.np_terminated[t], self.np_truncated[t]
        waiting, unchecked = self.waiting, self.unchecked
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
                for _, leaf in extras:
                    leaf[t, b] = 0
                continue
            step = envs[b].step(env_actions[b])
            if unchecked and b in unchecked:
                check_step_output(step, envs[b], b, self.observation_spec)
                unchecked.discard(b)
            o, r, terminated, truncated, env_info = step
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
            if extras:
                for key, leaf in extras:
                    leaf[t, b] = info_entry(env_info, key)
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
        return self.finish_step(t, done_b, frozen)

    def close(self) -> None:
        """Close every env."""
        for env in self.envs:
            env.close()


def game_ended(info: Any) -> bool:
    """Whether an episode end also ends the episode's record (its ``TrajInfo``).

    False only where the step's ``info`` holds a false ``traj_done`` (rlpyt's name): an
    Atari life lost with ``episodic_lives`` ends the learner's episode (``terminated``, the
    agent's state and previous action reset) but not the game, so ``Return``,
    ``GameScore`` and ``Length`` keep counting to the real game end, as in rlpyt.
    """
    if not isinstance(info, dict) or "traj_done" not in info:
        return True
    return bool(info["traj_done"])


def info_entry(info: dict[str, Any], path: Path) -> Any:
    """``info[path[0]][path[1]]...``: a gymnasium env's extra key in one step's ``info``.

    Raises:
        KeyError: (one line) the step's ``info`` lacks it; the message names it and lists
            the keys the ``info`` holds.
    """
    value: Any = info
    for k in path:
        if not isinstance(value, dict) or k not in value:
            raise KeyError(
                f"extra_keys: the env's step info has no {show(path)} (it holds "
                f"{sorted(info)}); a gymnasium env's extra keys must be in every step's info"
            )
        value = value[k]
    return value
