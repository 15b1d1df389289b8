"""Offline evaluation: the agent in eval mode on its own envs, in the calling process.

Every sampler owns an ``Evaluator`` (the parallel samplers too: they evaluate in the parent
process). It steps its eval envs with the samplers' own loop (``EnvRunner`` for gymnasium
envs, ``TorchEnvRunner`` for TorchRL envs, of batch size ``[]`` or ``[B']``:
``eval_n_envs`` is then a multiple of ``B'``) bound to a one-row ``[1, eval_n_envs]``
buffer and run one time step at a time, so evaluation and sampling cannot drift apart.
Extra keys are not recorded. Each evaluation:

* starts a fresh episode in every eval env: the first evaluation seeds eval env ``i`` with
  ``seed + 10_000 + i``, later ones continue each env's generator; episodes still running
  from an earlier evaluation are dropped;
* stops after ``eval_max_steps`` env steps over all eval envs (``max(1, eval_max_steps //
  eval_n_envs)`` time steps) or once ``eval_max_trajectories`` episodes have completed;
* returns the completed episodes only, at most ``eval_max_trajectories`` of them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tdrl import keys
from tdrl._compat import TensorSpec
from tdrl.agents.base import Agent
from tdrl.envs.traj_info import TrajInfo
from tdrl.keys import BatchSpec
from tdrl.samplers.base import SamplerSettings, build_samples_buffer
from tdrl.samplers.env_build import close_env, make_envs
from tdrl.samplers.env_loop import EnvLoop
from tdrl.samplers.env_setup import EnvSpecs, env_specs
from tdrl.samplers.torchrl_loop import make_env_runner

#: Eval env ``i`` is seeded with ``seed + EVAL_SEED_OFFSET + i`` at the first evaluation.
EVAL_SEED_OFFSET = 10_000


class Evaluator:
    """Runs evaluations on ``settings.eval_n_envs`` envs of its own (see the module docstring).

    Args:
        settings: the sampler's settings (``env_fn``, ``eval_*``, ``traj_info_cls``).
    """

    def __init__(self, settings: SamplerSettings):
        self.settings = settings
        self.envs: list[Any] = []
        self._runner: EnvLoop | None = None
        self._seeded = False

    def initialize_for(
        self, specs: EnvSpecs, *, seed: int, discount: float, agent: Agent | None = None
    ) -> None:
        """``initialize`` with the observation and action specs of ``specs``."""
        self.initialize(
            seed=seed,
            observation_spec=specs.observation,
            action_spec=specs.action,
            discount=discount,
            agent=agent,
        )

    def initialize(
        self,
        *,
        seed: int,
        observation_spec: TensorSpec,
        action_spec: TensorSpec,
        discount: float,
        agent: Agent | None = None,
    ) -> None:
        """Build the eval envs (none when ``eval_n_envs`` is 0) and their runner.

        Args:
            seed: the sampler's seed.
            observation_spec: spec of one observation.
            action_spec: spec of one action.
            discount: for ``TrajInfo.DiscountedReturn``.
            agent: the agent to be evaluated; a recurrent one gets recurrent states of
                its own here, one per eval env, reset at every evaluation.
        """
        settings, n = self.settings, self.settings.eval_n_envs
        if not n:
            return
        self.envs = make_envs(settings.env_fn, settings.eval_env_kwargs, n, name="eval_n_envs")
        try:
            specs = env_specs(self.envs[0])
        except BaseException:
            for env in self.envs:
                close_env(env)
            raise
        self._runner = make_env_runner(
            self.envs,
            specs,
            env_ranks=[EVAL_SEED_OFFSET + i for i in range(n)],
            seed=seed,
            traj_info_cls=settings.traj_info_cls,
            discount=discount,
        )
        # No agent info is kept (and no agent call is spent on an example of it); rewards
        # are float64 so that episode returns add up the env's rewards exactly.
        rnn_state = None if agent is None else agent.initial_rnn_state(n)
        info = {} if rnn_state is None else {keys.NEXT_RNN_STATE: rnn_state}
        buffer = build_samples_buffer(BatchSpec(1, n), observation_spec, action_spec, info)
        buffer.set(keys.NEXT_REWARD, torch.zeros(1, n, 1, dtype=torch.float64))
        self._runner.bind(buffer)
        self._seeded = False

    @torch.no_grad()
    def evaluate(self, agent: Agent | None, itr: int) -> list[TrajInfo]:
        """Put ``agent`` in eval mode and run one evaluation with it.

        Args:
            agent: the agent to evaluate (the sampler's; None before ``initialize``).
            itr: the runner's iteration (passed to ``agent.eval_mode``).

        Returns:
            The completed episodes, at most ``eval_max_trajectories``.

        Raises:
            RuntimeError: ``eval_n_envs`` is 0, or ``initialize`` has not run.
        """
        settings = self.settings
        if not settings.eval_n_envs:
            raise RuntimeError("evaluate_agent needs eval_n_envs > 0")
        runner = self._runner
        if agent is None or runner is None:
            raise RuntimeError("call initialize(agent, seed=...) before evaluate_agent")
        agent.eval_mode(itr)
        if self._seeded:
            runner.restart()
        else:
            runner.start(max_decorrelation_steps=0)
            self._seeded = True
        max_steps, max_trajectories = settings.eval_max_steps, settings.eval_max_trajectories
        max_T = math.inf if max_steps is None else max(1, max_steps // settings.eval_n_envs)
        max_trajs = max_trajectories or math.inf
        completed: list[TrajInfo] = []
        t, device = 0, agent.device
        while t < max_T and len(completed) < max_trajs:
            completed.extend(runner.collect(agent, device))
            t += 1
        return completed[:max_trajectories] if max_trajectories else completed

    def close(self) -> None:
        """Close the eval envs."""
        if self._runner is not None:
            self._runner.close()
        self.envs = []
        self._runner = None
