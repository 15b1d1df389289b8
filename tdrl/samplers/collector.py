"""TorchRL's collectors behind tdrl's ``Sampler`` interface: ``CollectorSampler``.

The sampler runs one of TorchRL's collectors with the agent as its policy
(``tdrl.agents.AgentPolicy``) and hands the runners tdrl's ``[T, B]`` batches:

* ``collector="sync"``: TorchRL's ``Collector`` in this process, over a ``SerialEnv`` of the
  ``batch_B`` envs; the policy is the agent itself.
* ``collector="multi_sync"``: ``MultiSyncCollector``, ``n_workers`` processes with
  ``batch_B / n_workers`` envs each and a copy of the agent; every batch waits for all.
* ``collector="multi_async"``: ``MultiAsyncCollector``, ``n_workers`` processes with
  ``batch_B`` envs each; a batch is the first one a worker finished, so consecutive batches
  come from different workers and may have been collected with older weights.
* ``collector="ray"``: TorchRL's ``RayCollector`` (extra ``ray``), as ``"multi_sync"`` with
  Ray actors, on the Ray instance this process joined or a local one it starts and
  ``shutdown`` stops (``RaySampler`` does the same with tdrl's env loop).

Each env is ``env_fn(**env_kwargs)`` (default ``gym_env``: TorchRL's ``GymEnv`` of a
gymnasium id), batched by a ``SerialEnv``; outside it, once per batched step, the sampler
appends ``DoubleToFloat`` when an entry is float64, and ``tdrl.envs.PrevActionReward`` (and,
for a recurrent agent, ``InitTracker`` and the state primer) where the env lacks them
(``AgentPolicy.env_transforms``). Transforms inside each env cost a TorchRL call per env
and step: ``tdrl.envs.make_env`` envs work but collect more slowly (docs/torchrl.md).

TorchRL yields ``[B, T]`` batches (time last); the sampler copies each into its own
``[T, B]`` buffer (``samples``, time dim named ``"time"``, the layout of
``SerialSampler``'s): ``observation``, ``prev_action``, ``prev_reward``, ``action`` (the
agent's format: indices for discrete actions), the agent's info, a recurrent agent's
``rnn_state``, ``("next", "rnn_state")`` and ``is_init``, and ``("next", ...)``
observation, reward, done, terminated and truncated. Envs reset as soon as an episode ends
(mid-batch reset). Episode statistics (``TrajInfo``: length, return, non-zero rewards,
discounted return) are summed from the batches' rewards, per trajectory id
(``("collector", "traj_ids")``).

Weights: the sync collector acts with the agent itself. The multi-process collectors act
with copies; TorchRL's default weight sync puts CPU weights in shared memory, and
``update_policy_weights_`` (called by ``obtain_samples`` before every batch) pushes the
agent's current weights and mode (``AgentPolicy.follow_mode``: an epsilon schedule
follows the iterations there). It passes the weights as a TensorDict: TorchRL 0.14.1's
``update_policy_weights_(policy)`` fails on a module (``'AgentPolicy' object has no
attribute 'data'``), the TensorDict form works. Agents with per-env exploration state
(``eps_final_min``) need ``collector="sync"``.

Evaluation (``eval_n_envs > 0``) runs in this process on envs of its own, through tdrl's
``Evaluator`` (the same as ``SerialSampler``'s). Worker processes are started with
TorchRL's default ``spawn``: ``env_fn`` must be picklable (a module-level function) for the
multi-process kinds, and scripts need an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from tensordict import NestedKey, TensorDict, TensorDictBase

from tdrl import _compat, keys
from tdrl._compat import Compose, DoubleToFloat, EnvBase, Transform, TransformedEnv
from tdrl.agents.base import Agent
from tdrl.agents.torchrl_policy import AgentPolicy, policy_specs
from tdrl.envs.torchrl_batch import batched_env, gym_env, has_float64
from tdrl.envs.torchrl_env import reward_key
from tdrl.envs.traj_info import TrajInfo
from tdrl.samplers.base import SamplerSettings, build_samples_buffer, example_agent_info, iterate
from tdrl.samplers.env_build import close_env
from tdrl.samplers.evaluation import Evaluator
from tdrl.utils.checks import ArgumentError, check_choice, check_mapping, check_positive_int
from tdrl.utils.finite import check_env_batch
from tdrl.utils.ray_support import connect, import_ray

#: The ``collector`` choices.
COLLECTORS = ("sync", "multi_sync", "multi_async", "ray")

#: The collector's own trajectory ids, which the episode statistics follow.
TRAJ_IDS = ("collector", "traj_ids")


class EpisodeStats:
    """Statistics of the episodes in collector batches, summed per trajectory id.

    Args:
        discount: discount of ``DiscountedReturn``.
    """

    def __init__(self, discount: float):
        self.discount = float(discount)
        #: trajectory id -> [length, return, non-zero rewards, discounted return, gamma^length]
        self.running: dict[int, list[float]] = {}

    def add(self, traj_ids: np.ndarray, reward: np.ndarray, done: np.ndarray) -> list[TrajInfo]:
        """Add a ``[B, T]`` batch; returns the episodes that ended in it, in column order."""
        finished: list[TrajInfo] = []
        for ids, r, d in zip(traj_ids, reward, done, strict=True):
            ends = (np.flatnonzero(d) + 1).tolist()
            for start, stop in zip([0, *ends], [*ends, len(r)], strict=True):
                if start == stop:
                    continue
                segment = r[start:stop]
                key = int(ids[start])
                n, ret, nonzero, disc_ret, disc = self.running.pop(key, [0, 0.0, 0, 0.0, 1.0])
                powers = self.discount ** np.arange(len(segment))
                stats = [
                    n + len(segment),
                    ret + float(segment.sum()),
                    nonzero + int(np.count_nonzero(segment)),
                    disc_ret + disc * float(powers @ segment),
                    disc * self.discount ** len(segment),
                ]
                if d[stop - 1]:
                    finished.append(_traj_info(stats))
                else:
                    self.running[key] = stats
        return finished


def _traj_info(stats: list[float]) -> TrajInfo:
    info = TrajInfo()
    info.Length, info.Return = int(stats[0]), float(stats[1])
    info.NonzeroRewards, info.DiscountedReturn = int(stats[2]), float(stats[3])
    return info


class CollectorSampler:
    """Collects ``[T, B]`` batches with a TorchRL collector (see the module docstring).

    Args:
        env_fn: builds one TorchRL env from ``**env_kwargs`` (batch size ``[]``, or
            ``[B_w]`` with ``B_w`` the envs of one collector); a string is a gymnasium id
            for the default, ``gym_env`` (TorchRL's ``GymEnv``); ``tdrl.envs.make_env``
            works too.
        env_kwargs: keyword arguments of ``env_fn`` (e.g. ``{"id": "CartPole-v1"}``).
        batch_T: time steps per batch.
        batch_B: envs per batch: all envs for ``"sync"`` and ``"multi_sync"`` (split over
            the workers), each worker's envs for ``"multi_async"``.
        collector: ``"sync"``, ``"multi_sync"``, ``"multi_async"`` or ``"ray"``.
        n_workers: worker processes of the multi-process collectors (1 for ``"sync"``).
        eval_n_envs: envs for offline evaluation (0: no evaluation).
        eval_env_kwargs: ``env_kwargs`` of the evaluation envs (default: ``env_kwargs``).
        eval_max_steps: budget of env steps per evaluation, over all eval envs.
        eval_max_trajectories: stop evaluating once this many episodes completed.

    Attributes:
        settings: the checked arguments shared with the other samplers.
        policy: the agent as a TorchRL policy (after ``initialize``).
        samples: the ``[T, B]`` buffer ``obtain_samples`` fills (after ``initialize``).
        last_traj_infos: the episodes that ended during the batch the iterator gave last.

    Raises:
        ArgumentError: a bad argument, named.
    """

    samples: TensorDict
    policy: AgentPolicy

    def __init__(
        self,
        env_fn: Callable[..., EnvBase] | str = gym_env,
        env_kwargs: dict[str, Any] | None = None,
        *,
        batch_T: int,
        batch_B: int,
        collector: str = "sync",
        n_workers: int = 1,
        eval_n_envs: int = 0,
        eval_env_kwargs: dict[str, Any] | None = None,
        eval_max_steps: int | None = None,
        eval_max_trajectories: int | None = None,
    ):
        if isinstance(env_fn, str):
            env_kwargs = {"id": env_fn, **check_mapping("env_kwargs", env_kwargs)}
            env_fn = gym_env
        self.collector = check_choice("collector", collector, COLLECTORS)
        self.n_workers = check_positive_int("n_workers", n_workers)
        if collector == "sync" and self.n_workers != 1:
            raise ArgumentError(f"n_workers={n_workers} needs a multi_* collector, not 'sync'")
        self.settings = SamplerSettings.check(
            env_fn,
            env_kwargs,
            batch_T=batch_T,
            batch_B=batch_B,
            mid_batch_reset=True,
            max_decorrelation_steps=0,
            eval_n_envs=eval_n_envs,
            eval_env_kwargs=eval_env_kwargs,
            eval_max_steps=eval_max_steps,
            eval_max_trajectories=eval_max_trajectories,
            traj_info_cls=TrajInfo,
            extra_keys=(),
        )
        self.batch_spec = self.settings.batch_spec
        if collector in ("multi_sync", "ray") and self.batch_spec.B % self.n_workers:
            raise ArgumentError(
                f"batch_B={batch_B} must be a multiple of n_workers={n_workers} for {collector!r}"
            )
        self.eval_n_envs = self.settings.eval_n_envs
        self.evaluator = Evaluator(self.settings)
        self.agent: Agent | None = None
        self.last_traj_infos: list[TrajInfo] = []
        self._collector: Any = None  # a TorchRL collector (imported when first built)
        self._started_ray = False  # collector="ray" started a local Ray instance
        self._batches: Iterator[TensorDictBase] | None = None

    @property
    def envs_per_collector(self) -> int:
        """Envs stepped by one collector (one worker of a multi-process collector)."""
        B = self.batch_spec.B
        return B // self.n_workers if self.collector in ("multi_sync", "ray") else B

    # --------------------------------------------------------------------------- set-up
    def initialize(
        self, agent: Agent, *, seed: int = 0, traj_info_kwargs: dict[str, Any] | None = None
    ) -> TensorDict:
        """Initialise the agent from the env's specs, start the collector, allocate the buffer.

        See ``Sampler.initialize`` (``tdrl.samplers.base``). Seeds the collector's envs
        with TorchRL's ``set_seed(seed)`` (env ``b`` of a ``SerialEnv`` gets ``seed + b``;
        each worker its own range), eval env ``i`` with ``seed + 10_000 + i``.

        Raises:
            TypeError: ``env_fn`` does not return a TorchRL env, or its batch size is
                neither ``[]`` nor ``[B_w]``; the agent cannot act in its spaces.
            ArgumentError: ``env_fn`` does not pickle (multi-process collectors), or the
                agent keeps per-env state that worker copies cannot share.
        """
        settings, B, n = self.settings, self.batch_spec.B, self.envs_per_collector
        probe = settings.env_fn(**settings.env_kwargs)
        try:
            batched = self._check_env(probe, n)
            transforms: list[Transform] = [DoubleToFloat()] if has_float64(probe) else []
            env = TransformedEnv(probe, Compose(*transforms)) if transforms else probe
            self.policy = AgentPolicy(agent, env)
            transforms += self.policy.env_transforms(env)
            _, observation_spec, action_spec = policy_specs(env, self.policy.observation_keys)
            self._reward_key = reward_key(env)  # the samplers' rule (tdrl.envs.torchrl_env)
            done_keys = set(env.done_keys)
        finally:
            close_env(probe)  # an unstarted batched env counts as closed already
        agent.collector_initialize(B, list(range(B)))
        factory = functools.partial(
            batched_env,
            settings.env_fn,
            settings.env_kwargs,
            n_envs=n,
            batched=batched,
            transforms=transforms,
        )
        if self.collector != "sync":
            self._check_workers(agent, factory)
        self.agent = agent
        self.stats = EpisodeStats(float((traj_info_kwargs or {}).get("discount", 1.0)))
        agent.sample_mode(0)
        info = example_agent_info(
            agent, observation_spec.zero((B,)), action_spec.zero((B,)), torch.zeros(B, 1)
        )
        self.samples = build_samples_buffer(self.batch_spec, observation_spec, action_spec, info)
        self._plan = self._copy_plan(done_keys)
        self._collector = self._make_collector(factory)
        self._collector.set_seed(int(seed))
        self._batches = iter(self._collector)
        self.evaluator.initialize(
            seed=int(seed),
            observation_spec=observation_spec,
            action_spec=action_spec,
            discount=self.stats.discount,
            agent=agent,
        )
        return self.samples

    def _check_env(self, env: Any, n: int) -> bool:
        """Whether ``env`` is batched (``[n]``); refuses anything else in one line."""
        name = getattr(self.settings.env_fn, "__qualname__", "env_fn")
        if not isinstance(env, EnvBase):
            raise TypeError(
                f"env_fn must return a TorchRL env for CollectorSampler; {name}(**env_kwargs) "
                f"returned {type(env).__name__} (use SerialSampler for gymnasium envs)"
            )
        if tuple(env.batch_size) not in ((), (n,)):
            raise TypeError(
                f"env_fn's env has batch size {tuple(env.batch_size)}; CollectorSampler "
                f"takes [] or [{n}] (the envs of one collector)"
            )
        return tuple(env.batch_size) == (n,)

    def _check_workers(self, agent: Agent, factory: Callable[[], EnvBase]) -> None:
        """Refuse what worker processes cannot run: an unpicklable factory, per-env state."""
        if agent.has_per_env_state:
            raise ArgumentError(
                f"collector={self.collector!r} gives each worker a copy of the agent; an agent "
                "with per-env state (eps_final_min) needs collector='sync'"
            )
        try:
            pickle.dumps(factory)
        except Exception as e:
            raise ArgumentError(
                f"env_fn and env_kwargs must pickle for collector={self.collector!r} (worker "
                f"processes are spawned; use a module-level function): {e}"
            ) from None

    def _make_collector(self, factory: Callable[[], EnvBase]) -> Any:
        frames = self.batch_spec.size
        common = {
            "frames_per_batch": frames,
            "total_frames": -1,
            "auto_register_policy_transforms": False,
        }
        if self.collector == "sync":
            return _compat.Collector(factory, self.policy, **common)
        if self.collector == "ray":
            self._started_ray = connect()
            return _compat.RayCollector(
                [factory] * self.n_workers, self.policy, frames_per_batch=frames,
                total_frames=2**62,  # its iterator stops at once with -1 (TorchRL 0.14.1)
                collector_class=_compat.Collector, num_collectors=self.n_workers, sync=True,
                collector_kwargs={"auto_register_policy_transforms": False},
                remote_configs={"num_cpus": 1},
            )  # fmt: skip
        multi_sync = self.collector == "multi_sync"
        kind = _compat.MultiSyncCollector if multi_sync else _compat.MultiAsyncCollector
        return kind(
            [factory] * self.n_workers,
            self.policy,
            cat_results="stack",
            num_threads=torch.get_num_threads(),  # TorchRL would lower this process's count
            **common,
        )

    def _copy_plan(
        self, done_keys: set[NestedKey]
    ) -> list[tuple[torch.Tensor, NestedKey, Callable[..., Any] | None]]:
        """``(buffer leaf, collector key, conversion)`` for every entry of the batch.

        The env's reward key fills ``("next", "reward")``; an env without ``terminated``
        gives ``done`` there, one without ``truncated`` leaves it False.
        """
        policy, samples = self.policy, self.samples
        plan: list[tuple[torch.Tensor, NestedKey, Callable[..., Any] | None]] = []

        def add(dst_key: NestedKey, src_key: NestedKey, convert: Any = None) -> None:
            dst = samples.get(dst_key)
            if isinstance(dst, torch.Tensor):
                plan.append((dst, src_key, convert))
                return
            src = src_key if isinstance(src_key, tuple) else (src_key,)
            for leaf in dst.keys(True, True):
                sub = leaf if isinstance(leaf, tuple) else (leaf,)
                plan.append((dst.get(leaf), (*src, *sub), convert))

        obs_keys = policy.observation_keys
        for prefix in ((), (keys.NEXT,)):
            if len(obs_keys) == 1:
                add((*prefix, keys.OBSERVATION), _join(prefix, obs_keys[0]))
            else:
                for k in obs_keys:
                    add((*prefix, keys.OBSERVATION, *_path(k)), _join(prefix, k))
        add(keys.PREV_ACTION, keys.PREV_ACTION, policy.to_agent)
        add(keys.ACTION, keys.ACTION, policy.to_agent)
        add(keys.PREV_REWARD, keys.PREV_REWARD)
        add(keys.NEXT_REWARD, _join((keys.NEXT,), self._reward_key))
        add(keys.NEXT_DONE, keys.NEXT_DONE)
        terminated = keys.TERMINATED if keys.TERMINATED in done_keys else keys.DONE
        add(keys.NEXT_TERMINATED, (keys.NEXT, terminated))
        if keys.TRUNCATED in done_keys:
            add(keys.NEXT_TRUNCATED, keys.NEXT_TRUNCATED)
        for key in policy.info_keys:
            add(key, key)
        if policy.recurrent:
            add(keys.RNN_STATE, keys.RNN_STATE)
            add(keys.IS_INIT, keys.IS_INIT, lambda x: x.squeeze(-1))
        return plan

    # ------------------------------------------------------------------------- sampling
    def obtain_samples(self, itr: int) -> tuple[TensorDict, list[TrajInfo]]:
        """Collect one ``[batch_T, batch_B]`` batch with the agent in its current mode.

        Args:
            itr: the runner's iteration (multi-process workers put their agent copy in the
                agent's mode for it).

        Returns:
            ``(samples, traj_infos)``: the buffer (valid until the next call) and the
            records of the episodes that ended during the batch.
        """
        if self.agent is None or self._batches is None:
            raise RuntimeError("call initialize(agent, seed=...) before obtain_samples")
        if self.collector != "sync":
            self.policy.follow_mode(self.agent.mode, itr)
            self.update_policy_weights_()
        out = next(self._batches)
        if out.batch_dims == 3:  # multi_sync, ray: [workers, envs per worker, T]
            out = out.flatten(0, 1)
        for dst, src, convert in self._plan:
            value = out.get(src)
            dst.copy_((value if convert is None else convert(value)).transpose(0, 1))
        done = out.get(keys.NEXT_DONE).reshape(out.batch_size).numpy()
        reward = out.get(_join((keys.NEXT,), self._reward_key))
        reward = reward.reshape(out.batch_size).double().numpy()
        traj_infos = self.stats.add(out.get(TRAJ_IDS).numpy(), reward, done)
        return check_env_batch(self.samples), traj_infos

    def update_policy_weights_(self) -> None:
        """Push the agent's current weights (and mode) to the collector's workers.

        A no-op for ``"sync"``, which acts with the agent itself.
        """
        if self._collector is not None and self.collector != "sync":
            weights = TensorDict.from_module(self.policy)
            if self.agent is not None and self.agent.device.type != "cpu":
                weights = weights.cpu()  # the workers' copies act on the CPU
            self._collector.update_policy_weights_(weights)

    def __iter__(self) -> Iterator[TensorDict]:
        """The ``[T, B]`` batches of iterations 0, 1, ... (``tdrl.samplers.base.iterate``)."""
        return iterate(self)

    # ----------------------------------------------------------------------- evaluation
    def evaluate_agent(self, itr: int) -> list[TrajInfo]:
        """Run the agent in eval mode on the eval envs; return completed episodes only.

        See ``tdrl.samplers.evaluation``: every eval env starts a fresh episode; evaluation
        stops after ``eval_max_steps`` env steps in total or ``eval_max_trajectories``
        completed episodes.
        """
        return self.evaluator.evaluate(self.agent, itr)

    def shutdown(self) -> None:
        """Stop the collector (and its worker processes) and close the eval envs."""
        if self._collector is not None:
            self._collector.shutdown()
        if self._started_ray:
            import_ray().shutdown()
            self._started_ray = False
        self._collector = self._batches = None
        self.evaluator.close()


def _path(key: NestedKey) -> tuple[str, ...]:
    return key if isinstance(key, tuple) else (key,)


def _join(prefix: tuple[str, ...], key: NestedKey) -> tuple[str, ...]:
    return (*prefix, *_path(key))
