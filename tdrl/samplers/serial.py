"""Serial sampler: every env and the agent in the calling process."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from tensordict import TensorDict

from tdrl._compat import TensorSpec
from tdrl.agents.base import Agent
from tdrl.envs.gym import make_gym_env
from tdrl.envs.traj_info import TrajInfo
from tdrl.samplers.base import SamplerSettings, iterate
from tdrl.samplers.env_build import close_env, make_envs
from tdrl.samplers.env_loop import EnvLoop
from tdrl.samplers.env_setup import EnvSpecs, allocate_samples, env_specs, initialize_agent
from tdrl.samplers.evaluation import Evaluator
from tdrl.samplers.torchrl_loop import make_env_runner
from tdrl.utils.finite import check_env_batch


class SerialSampler:
    """Steps ``batch_B`` envs in this process and returns ``[T, B]`` batches.

    The per-step cost is paid once per batch of envs: the agent runs once per time step on
    all B observations, and every result is written in place into a pre-allocated
    ``[T, B]`` TensorDict through NumPy views of its tensors (``EnvRunner``, for gymnasium
    envs). TorchRL envs are stepped with their own ``step_and_maybe_reset``, transforms
    included (``tdrl.samplers.torchrl_loop``); a batched one (``SerialEnv``,
    ``ParallelEnv``, a vectorized env, of batch size ``[B']``) fills ``B'`` columns, so
    ``batch_B`` must be a multiple of ``B'``. Envs reset as soon as an episode ends
    (mid-batch reset): ``prev_action``/``prev_reward`` are then the null action and 0, and
    ``("next", "observation")`` keeps the episode's final observation.

    The returned TensorDict is the sampler's own buffer, overwritten by the next call:
    consume it (or ``.clone()`` it) before sampling again. Offline evaluation runs on
    separate envs (``Evaluator``). ``for samples in sampler:`` iterates like a TorchRL
    collector (``tdrl.samplers.base.iterate``); the agent acts here, so
    ``update_policy_weights_`` has nothing to do.

    The envs step on the CPU and the buffer is on the CPU. An agent on a GPU acts there:
    each time step's inputs are copied to it (one batched forward for all B envs) and its
    action and info are copied back. The buffer is then moved to pinned memory (once, at
    the first batch with the agent on CUDA), so that the input copies and the algorithm's
    one copy of the batch to the GPU are asynchronous.

    Args:
        env_fn: builds one env from ``**env_kwargs``: a ``gymnasium.Env`` or a TorchRL
            ``EnvBase`` (default: ``tdrl.envs.make_gym_env``).
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
        extra_keys: env entries to record under ``("next", *key)`` (a string or a tuple of
            strings each): keys a TorchRL env declares in its observation, reward or done
            spec, or entries of a gymnasium env's step ``info`` (numbers). Default: none.

    Attributes:
        settings: the checked arguments.
        envs: the sampling envs (built by ``initialize``).
        samples: the ``[T, B]`` buffer ``obtain_samples`` fills (after ``initialize``).
        last_traj_infos: the episodes that ended during the batch iteration yielded last.
    """

    samples: TensorDict
    observation_spec: TensorSpec
    action_spec: TensorSpec
    specs: EnvSpecs

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
        extra_keys: Sequence[str | tuple[str, ...]] = (),
    ):
        self.settings = SamplerSettings.from_arguments(locals())
        self.batch_spec = self.settings.batch_spec
        self.eval_n_envs = self.settings.eval_n_envs
        self.evaluator = Evaluator(self.settings)
        self.agent: Agent | None = None
        self.envs: list[Any] = []
        self.last_traj_infos: list[TrajInfo] = []
        self._runner: EnvLoop | None = None
        self._pinned = False

    @property
    def eval_envs(self) -> list[Any]:
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
        self.seed = int(seed)
        self.envs = make_envs(settings.env_fn, settings.env_kwargs, self.batch_spec.B)
        try:  # a failure part-way closes the envs (a ParallelEnv's workers included)
            self._start(agent, traj_info_kwargs)
        except BaseException:
            self._close_envs()
            self.evaluator.close()
            raise
        return self.samples

    def _start(self, agent: Agent, traj_info_kwargs: dict[str, Any] | None) -> None:
        """``initialize`` once the envs are built: specs, agent, env loop, buffer, evaluator."""
        settings, B = self.settings, self.batch_spec.B
        self.specs = env_specs(self.envs[0], settings.extra_keys)
        self.observation_spec, self.action_spec = self.specs.observation, self.specs.action
        initialize_agent(agent, self.specs, B)
        self.agent = agent
        discount = float((traj_info_kwargs or {}).get("discount", 1.0))
        runner = self._runner = make_env_runner(
            self.envs,
            self.specs,
            env_ranks=range(B),
            seed=self.seed,
            traj_info_cls=settings.traj_info_cls,
            discount=discount,
            mid_batch_reset=settings.mid_batch_reset,
        )
        runner.start(settings.max_decorrelation_steps)
        self.samples = allocate_samples(settings, agent, self.specs, runner.agent_inputs())
        self._pinned = False
        runner.bind(self.samples)
        self.evaluator.initialize_for(self.specs, seed=self.seed, discount=discount, agent=agent)

    # ------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def obtain_samples(self, itr: int) -> tuple[TensorDict, list[TrajInfo]]:
        """Collect one ``[batch_T, batch_B]`` batch with the agent in its current mode.

        Args:
            itr: the runner's iteration (unused here; part of the sampler interface).

        Returns:
            ``(samples, traj_infos)``: the buffer (valid until the next call) and the
            records of the episodes that ended during the batch.

        Raises:
            NonFiniteError: the env returned a NaN or infinite observation or reward
                (``tdrl.utils.finite``).
        """
        if self.agent is None or self._runner is None:
            raise RuntimeError("call initialize(agent, seed=...) before obtain_samples")
        device = self.agent.device  # once per batch
        if device.type == "cuda" and not self._pinned:
            self.pin_buffer()
        completed = self._runner.collect(self.agent, device)
        return check_env_batch(self.samples), completed

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

    def __iter__(self) -> Iterator[TensorDict]:
        """``for samples in sampler:`` the batches of iterations 0, 1, ... (``iterate``)."""
        return iterate(self)

    def update_policy_weights_(self) -> None:
        """Nothing to do: the sampler acts with the agent itself, its weights are current."""

    def shutdown(self) -> None:
        """Close every env."""
        self._close_envs()
        self.evaluator.close()

    def _close_envs(self) -> None:
        if self._runner is not None:
            self._runner.close()
        else:
            for env in self.envs:
                close_env(env)
        self.envs, self._runner = [], None
