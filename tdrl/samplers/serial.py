"""Serial sampler: every env and the agent in the calling process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import torch
from tensordict import TensorDict

from tdrl._compat import TensorSpec
from tdrl.agents.base import Agent
from tdrl.envs.gym import make_gym_env
from tdrl.envs.traj_info import TrajInfo
from tdrl.samplers.base import (
    SamplerSettings,
    allocate_samples,
    initialize_agent,
    make_envs,
)
from tdrl.samplers.env_loop import EnvRunner
from tdrl.samplers.evaluation import Evaluator


class SerialSampler:
    """Steps ``batch_B`` gymnasium envs in this process and returns ``[T, B]`` batches.

    The per-step cost is paid once per batch of envs: the agent runs once per time step on
    all B observations, and every result is written in place into a pre-allocated
    ``[T, B]`` TensorDict through NumPy views of its tensors (``EnvRunner``). Envs reset as
    soon as an episode ends (mid-batch reset): ``prev_action``/``prev_reward`` are then the
    null action and 0, and ``("next", "observation")`` keeps the episode's final observation.

    The returned TensorDict is the sampler's own buffer, overwritten by the next call:
    consume it (or ``.clone()`` it) before sampling again. Offline evaluation runs on
    separate envs (``Evaluator``).

    The envs step on the CPU and the buffer is on the CPU. An agent on a GPU acts there:
    each time step's inputs are copied to it (one batched forward for all B envs) and its
    action and info are copied back. The buffer is then moved to pinned memory (once, at
    the first batch with the agent on CUDA), so that the input copies and the algorithm's
    one copy of the batch to the GPU are asynchronous.

    Args:
        env_fn: builds one env from ``**env_kwargs``: a ``gymnasium.Env`` or a
            ``tdrl.envs.make_env`` env (default: ``tdrl.envs.make_gym_env``).
        env_kwargs: keyword arguments of ``env_fn`` (e.g. ``{"id": "CartPole-v1"}``).
        batch_T: time steps per batch.
        batch_B: envs stepped side by side.
        mid_batch_reset: reset an env as soon as its episode ends (default); False freezes
            it for the rest of the batch and resets it before the next ("wait reset", for
            recurrent training and slow resets): its later rows hold zeros and ``done``, and
            the batch gets a bool ``valid`` entry, False on those rows, that the
            policy-gradient losses use as a mask.
        max_decorrelation_steps: at start-up each env takes a random number of random
            actions in ``[0, max_decorrelation_steps)`` so episodes do not end in lockstep.
        eval_n_envs: envs for offline evaluation (0: no evaluation).
        eval_env_kwargs: ``env_kwargs`` of the evaluation envs (default: ``env_kwargs``).
        eval_max_steps: budget of env steps per evaluation, over all eval envs.
        eval_max_trajectories: stop evaluating once this many episodes completed.
        traj_info_cls: per-episode record class (``TrajInfo`` or a subclass).

    Attributes:
        settings: the checked arguments.
        envs: the sampling envs (built by ``initialize``).
        samples: the ``[T, B]`` buffer ``obtain_samples`` fills (after ``initialize``).
    """

    samples: TensorDict
    observation_spec: TensorSpec
    action_spec: TensorSpec

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
        self.settings = SamplerSettings.from_arguments(locals())
        self.batch_spec = self.settings.batch_spec
        self.eval_n_envs = self.settings.eval_n_envs
        self.evaluator = Evaluator(self.settings)
        self.agent: Agent | None = None
        self.envs: list[gym.Env] = []
        self._runner: EnvRunner | None = None
        self._pinned = False

    @property
    def eval_envs(self) -> list[gym.Env]:
        """The evaluation envs (built by ``initialize``)."""
        return self.evaluator.envs

    # --------------------------------------------------------------------------- set-up
    def initialize(
        self, agent: Agent, *, seed: int = 0, traj_info_kwargs: dict[str, Any] | None = None
    ) -> TensorDict:
        """Build and start the envs, initialise the agent, allocate the sample buffer.

        See ``Sampler.initialize`` (``tdrl.samplers.base``) for the arguments and the result.
        """
        settings = self.settings
        B = self.batch_spec.B
        self.seed = int(seed)
        self.envs = make_envs(settings.env_fn, settings.env_kwargs, B)
        self.observation_spec, self.action_spec = initialize_agent(agent, self.envs[0], B)
        self.agent = agent
        discount = float((traj_info_kwargs or {}).get("discount", 1.0))
        runner = self._runner = EnvRunner(
            self.envs,
            env_ranks=range(B),
            seed=self.seed,
            observation_spec=self.observation_spec,
            action_spec=self.action_spec,
            traj_info_cls=settings.traj_info_cls,
            discount=discount,
            mid_batch_reset=settings.mid_batch_reset,
        )
        runner.start(settings.max_decorrelation_steps)
        self.samples = allocate_samples(
            settings,
            agent,
            self.observation_spec,
            self.action_spec,
            (runner.obs.tensors, runner.prev_action, runner.prev_reward),
        )
        self._pinned = False
        runner.bind(self.samples)
        self.evaluator.initialize(
            seed=self.seed,
            observation_spec=self.observation_spec,
            action_spec=self.action_spec,
            discount=discount,
            agent=agent,
        )
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
        if self.agent is None or self._runner is None:
            raise RuntimeError("call initialize(agent, seed=...) before obtain_samples")
        device = self.agent.device  # once per batch
        if device.type == "cuda" and not self._pinned:
            self.pin_buffer()
        return self.samples, self._runner.collect(self.agent, device)

    def pin_buffer(self) -> None:
        """Move the ``[T, B]`` buffer to pinned (page-locked) memory, where CUDA can pin.

        ``obtain_samples`` calls it once, at the first batch with the agent on CUDA; the
        envs write into the new buffer from then on (``samples`` is replaced). Without a
        CUDA device nothing changes.
        """
        if self._runner is None:
            raise RuntimeError("call initialize(agent, seed=...) before pin_buffer")
        self._pinned = True
        if torch.cuda.is_available():
            self.samples = self.samples.pin_memory()
            self._runner.bind(self.samples)

    # ----------------------------------------------------------------------- evaluation
    def evaluate_agent(self, itr: int) -> list[TrajInfo]:
        """Run the agent in eval mode on the eval envs; return completed episodes only.

        Every eval env starts a fresh episode; evaluation stops after ``eval_max_steps``
        env steps in total or once ``eval_max_trajectories`` episodes completed (see
        ``tdrl.samplers.evaluation``).
        """
        return self.evaluator.evaluate(self.agent, itr)

    def shutdown(self) -> None:
        """Close every env."""
        for env in self.envs:
            env.close()
        self.envs = []
        self.evaluator.close()
