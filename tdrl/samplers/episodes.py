"""Whole episodes, one task at a time: the sampler of meta-RL (PEARL's collection).

``EpisodeSampler`` steps one multi-task env (``tdrl.envs.tasks.MultiTaskEnv``) with the
samplers' shared loop (``tdrl.samplers.torchrl_loop.make_env_runner``: gymnasium's
``EnvRunner`` or, for a TorchRL ``EnvBase`` of batch size ``[]``, ``TorchEnvRunner`` with
the env's transforms and specs; input conversion, the previous action and reward, inputs
copied to the agent's device), one whole episode at a time, on the task the caller sets
(``set_task``; a ``TransformedEnv`` hands it to its base env). The env declares its
episode limit as ``max_episode_steps`` (gymnasium envs: or their registered one).

* an episode starts with a fresh ``env.reset()`` (the env's own generator, seeded once by
  ``initialize`` with ``seed + env_rank``) and runs to the env's episode end (a time limit
  after ``max_episode_steps``, or a termination); nothing is stepped after it;
* it comes back as an ``Episode``: a ``[T, 1]`` TensorDict with the keys of every sampler
  batch (``observation``, ``prev_action``, ``prev_reward``, ``action``, ``next``), a copy
  that the caller keeps, the same steps as the encoder sees them (``context``: with
  ``sparse_rewards`` the env's ``info["sparse_reward"]`` replaces the reward and the
  previous reward), its return (of the encoder's reward) and its ``TrajInfo``.

The agent acts with the latent ``z`` it holds (``PearlAgent.set_z``). ``collect`` is
oyster's collection of at least ``n_steps`` steps: before every episode ``z`` is drawn
from a belief ``(mu, var)`` (the prior first), and after every episode a callback of the
caller may replace the belief (a posterior) while more steps are to come. PEARL's
evaluation (``meta_evaluation``: ``posterior_returns`` and ``online_returns``, which
accumulates the context of a run's episodes) runs on a sampler of its own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl._compat import EnvBase
from tdrl.agents.qpg.pearl_agent import PearlAgent
from tdrl.envs.meta import make_meta_env
from tdrl.envs.traj_info import TrajInfo
from tdrl.keys import BatchSpec
from tdrl.samplers.base import build_samples_buffer
from tdrl.samplers.env_build import close_env, env_source, make_envs
from tdrl.samplers.env_loop import EnvLoop
from tdrl.samplers.env_setup import env_specs
from tdrl.samplers.torchrl_loop import make_env_runner
from tdrl.utils.checks import check_bool, check_int
from tdrl.utils.finite import check_env_batch

#: A task's belief about ``z``: ``(mu, var)``, each ``[1, latent]``.
Belief = tuple[torch.Tensor, torch.Tensor]


class Episode(NamedTuple):
    """One whole episode (see the module docstring).

    Attributes:
        samples: ``[T, 1]`` sampler batch (``keys.AGENT_INPUTS``, ``action`` and ``next``).
        context: what the encoder sees: ``samples`` with the sparse reward (and previous
            reward) under ``sparse_rewards``, else ``samples`` itself.
        ret: the undiscounted return of ``context``'s reward (float32 sum).
        traj_info: the episode's record.
    """

    samples: TensorDict
    context: TensorDict
    ret: float
    traj_info: TrajInfo

    @property
    def length(self) -> int:
        """Steps of the episode (``T``)."""
        return int(self.samples.shape[0])


#: Called after each episode of ``collect`` with the episodes so far and whether more steps
#: are to come; returns the belief the next ``z`` is drawn from, or None to keep it.
AfterEpisode = Callable[[list[Episode], bool], Belief | None]


class SparseTrajInfo(TrajInfo):
    """``TrajInfo`` that also keeps each step's ``info["sparse_reward"]`` (not logged)."""

    def __init__(self) -> None:
        super().__init__()
        self._sparse: list[float] = []

    def step_info(self, info: Mapping[str, Any]) -> None:
        """Keep the step's sparse reward (gymnasium's ``info`` or a TorchRL env's ``next``)."""
        self._sparse.append(float(info["sparse_reward"]))

    def sparse_rewards(self) -> torch.Tensor:
        """The episode's sparse rewards, ``[T, 1, 1]`` float32."""
        return torch.tensor(self._sparse).reshape(-1, 1, 1)


def _checked_episode_limit(env: Any, env_fn: Callable[..., Any]) -> int:
    """``env``'s episode limit, once ``env`` is checked to be one an ``EpisodeSampler`` steps.

    Raises:
        TypeError: as ``EpisodeSampler.initialize`` says, naming ``env_fn``'s call.
    """
    where = f"{env_source(env_fn)} returned a {type(env).__name__}"
    if not callable(getattr(env, "set_task", None)):
        raise TypeError(
            f"EpisodeSampler switches tasks with env.set_task(task); {where} without set_task"
        )
    if isinstance(env, EnvBase) and env.batch_size:
        raise TypeError(
            f"EpisodeSampler steps one env of batch size []; {where} of batch size "
            f"{list(env.batch_size)}"
        )
    limit = getattr(env, "max_episode_steps", None)
    if limit is None and isinstance(env, gym.Env) and env.spec is not None:
        limit = env.spec.max_episode_steps
    if not isinstance(limit, int | np.integer) or isinstance(limit, bool) or limit < 1:
        raise TypeError(
            "EpisodeSampler needs the env's episode limit as an int attribute "
            f"max_episode_steps >= 1; {where} with {limit!r}"
        )
    return int(limit)


class EpisodeSampler:
    """Whole ``[T, 1]`` episodes of one multi-task env (see the module docstring).

    Args:
        env_fn: builds the env from ``**env_kwargs`` (default: ``make_meta_env``).
        env_kwargs: its keyword arguments (``{"name": "point-robot", ...}``).
        env_rank: the env is seeded with ``seed + env_rank`` (``initialize``).
        sparse_rewards: the encoder's reward is ``info["sparse_reward"]``.

    Attributes:
        env: the env (built by ``initialize``).
        max_episode_steps: the env's episode limit, the capacity of an episode.
    """

    #: A gymnasium env or a TorchRL ``EnvBase`` with the task interface (``MultiTaskEnv``).
    env: Any

    def __init__(
        self,
        env_fn: Callable[..., Any] = make_meta_env,
        env_kwargs: dict[str, Any] | None = None,
        *,
        env_rank: int = 0,
        sparse_rewards: bool = False,
    ):
        self.env_fn = env_fn
        self.env_kwargs = dict(env_kwargs or {})
        self.env_rank = check_int("env_rank", env_rank, minimum=0)
        self.sparse_rewards = check_bool("sparse_rewards", sparse_rewards)
        self._runner: EnvLoop | None = None

    def initialize(self, *, seed: int) -> None:
        """Build the env, seed it (``seed + env_rank``) and allocate the episode buffer.

        Raises:
            TypeError: the env has no task interface (``set_task``), is a batched TorchRL
                env, or declares no episode limit (``max_episode_steps``); one line naming
                ``env_fn``.
        """
        self.env = make_envs(self.env_fn, self.env_kwargs, 1)[0]
        try:
            self.max_episode_steps = _checked_episode_limit(self.env, self.env_fn)
            sparse = self.sparse_rewards and isinstance(self.env, EnvBase)
            # a TorchRL env's sparse reward is an entry of its specs, not an observation
            specs = env_specs(self.env, extra_keys=[("sparse_reward",)] if sparse else [])
        except BaseException:
            close_env(self.env)
            raise
        self.observation_spec, self.action_spec = specs.observation, specs.action
        self._runner = make_env_runner(
            [self.env],
            specs,
            env_ranks=[self.env_rank],
            seed=seed,
            traj_info_cls=SparseTrajInfo if self.sparse_rewards else TrajInfo,
            discount=1.0,
            mid_batch_reset=False,  # an episode's end freezes the env: nothing runs past it
        )
        self._runner.start(max_decorrelation_steps=0)
        spec = BatchSpec(self.max_episode_steps, 1)
        self._runner.bind(build_samples_buffer(spec, self.observation_spec, self.action_spec, {}))

    def close(self) -> None:
        """Close the env (a sampler never initialised has none)."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def set_task(self, task: Any) -> None:
        """Make ``task`` the env's task (from the next episode on)."""
        self.env.set_task(task)

    @torch.no_grad()
    def episode(self, agent: PearlAgent) -> Episode:
        """One whole episode with the agent's current ``z`` and mode.

        Raises:
            RuntimeError: the episode runs past the env's ``max_episode_steps``.
            NonFiniteError: the env returned a NaN or infinite observation or reward.
        """
        runner = self._runner
        if runner is None:
            raise RuntimeError("call initialize(seed=...) before episode")
        runner.restart()
        device = agent.device
        for t in range(self.max_episode_steps):
            runner.write_inputs(t)
            runner.rows.act(agent, t, device)
            completed = runner.step_envs(t)
            if completed:
                samples = check_env_batch(runner.samples[: t + 1].clone())
                return self._episode(samples, completed[0])
        raise RuntimeError(
            f"an episode of {self.env_kwargs} ran past its max_episode_steps="
            f"{self.max_episode_steps} without ending"
        )

    def _episode(self, samples: TensorDict, traj_info: TrajInfo) -> Episode:
        context = samples
        if isinstance(traj_info, SparseTrajInfo):
            sparse = traj_info.sparse_rewards()
            context = samples.clone()
            context.set(keys.NEXT_REWARD, sparse)
            context.set(keys.PREV_REWARD, torch.cat([torch.zeros(1, 1, 1), sparse[:-1]]))
        ret = float(context.get(keys.NEXT_REWARD).sum())
        return Episode(samples, context, ret, traj_info)

    @torch.no_grad()
    def collect(
        self,
        agent: PearlAgent,
        n_steps: int,
        *,
        after_episode: AfterEpisode | None = None,
        belief: Belief | None = None,
    ) -> list[Episode]:
        """Whole episodes until at least ``n_steps`` steps (none for 0).

        Args:
            agent: acts with ``z`` drawn from the belief before every episode.
            n_steps: steps to collect.
            after_episode: called after every episode (see ``AfterEpisode``).
            belief: the first belief (None: the prior, oyster's ``clear_z``).

        Returns:
            The episodes.
        """
        mu, var = agent.prior_z(1) if belief is None else belief
        episodes: list[Episode] = []
        steps = 0
        while steps < n_steps:
            agent.set_z(agent.sample_z(mu, var))
            episodes.append(self.episode(agent))
            steps += episodes[-1].length
            if after_episode is not None:
                new = after_episode(episodes, steps < n_steps)
                if new is not None:
                    mu, var = new
        return episodes


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def posterior_returns(
    sampler: EpisodeSampler,
    agent: PearlAgent,
    n_episodes: int,
    context: Callable[[], TensorDictBase],
) -> list[float]:
    """Returns of ``n_episodes`` episodes, each with ``z`` from the posterior of ``context()``.

    ``context`` gives a fresh ``[1, n]`` context every time (from a replay of the task).
    """
    returns = []
    for _ in range(n_episodes):
        agent.set_z(agent.sample_z(*agent.infer_posterior(context())))
        returns.append(sampler.episode(agent).ret)
    return returns


def online_returns(
    sampler: EpisodeSampler,
    agent: PearlAgent,
    tasks: Sequence[Any],
    *,
    n_runs: int,
    n_steps: int,
    first_posterior: int,
) -> tuple[list[float], np.ndarray]:
    """Online adaptation: per task, ``n_runs`` runs of at least ``n_steps`` steps.

    A run starts from the prior and accumulates the context of its episodes; from its
    ``first_posterior``-th episode on, the next ``z`` is drawn from the posterior of all
    the context so far.

    Returns:
        Per task the last episode's return (mean over runs); and the mean return per
        episode index over tasks and runs (cut to the shortest run).
    """
    device = agent.device

    def posterior(episodes: list[Episode], more: bool) -> Belief | None:
        if not more or len(episodes) < first_posterior:
            return None
        context = torch.cat([e.context for e in episodes], 0).squeeze(1).unsqueeze(0)
        return agent.infer_posterior(context.to(device))

    final, online = [], []
    for task in tasks:
        sampler.set_task(task)
        runs = []
        for _ in range(n_runs):
            episodes = sampler.collect(agent, n_steps, after_episode=posterior)
            runs.append([e.ret for e in episodes])
        final.append(float(np.mean([r[-1] for r in runs])))
        n = min(len(r) for r in runs)
        online.append(np.mean([r[:n] for r in runs], axis=0))
    n = min(len(o) for o in online)
    return final, np.mean([o[:n] for o in online], axis=0)


def meta_evaluation(
    sampler: EpisodeSampler,
    agent: PearlAgent,
    *,
    train_tasks: Sequence[Any],
    contexts: Sequence[Callable[[], TensorDictBase]],
    test_tasks: Sequence[Any],
    n_episodes: int,
    n_runs: int,
    n_steps: int,
    first_posterior: int,
) -> tuple[dict[str, float], np.ndarray]:
    """PEARL's evaluation (oyster's ``evaluate``) of the agent in its current mode.

    (a) On each of ``train_tasks``, ``n_episodes`` episodes with ``z`` from the posterior
    of a fresh context of the task (``contexts``, one per task): their mean return is
    ``AverageTrainReturn_all_train_tasks``; (b) ``online_returns`` of the same train tasks
    and (c) of ``test_tasks``: the last episode's returns are
    ``AverageReturn_all_train_tasks`` and ``AverageReturn_all_test_tasks``.

    Returns:
        The three columns and the test tasks' mean return per episode index.
    """
    replay_returns = []
    for task, context in zip(train_tasks, contexts, strict=True):
        sampler.set_task(task)
        replay_returns.append(
            float(np.mean(posterior_returns(sampler, agent, n_episodes, context)))
        )
    online = functools.partial(
        online_returns,
        sampler,
        agent,
        n_runs=n_runs,
        n_steps=n_steps,
        first_posterior=first_posterior,
    )
    train_final, _ = online(train_tasks)
    test_final, test_online = online(test_tasks)
    columns = {
        "AverageTrainReturn_all_train_tasks": float(np.mean(replay_returns)),
        "AverageReturn_all_train_tasks": float(np.mean(train_final)),
        "AverageReturn_all_test_tasks": float(np.mean(test_final)),
    }
    return columns, test_online
