"""Parallel samplers: envs stepped in worker processes that write one shared ``[T, B]`` buffer.

Three ways to split the work, all returning the same batch as ``SerialSampler`` for the same
seeds with a deterministic agent (env ``b`` is seeded ``seed + b`` and decorrelated with its
own generator, whichever worker steps it; a stochastic agent draws its actions from each
worker's own generator in ``CpuSampler``, so its batches differ from serial ones while each
run reproduces itself):

* ``CpuSampler``: each worker steps a slice of the B envs *and* runs the policy on it, from
  a shared-memory CPU copy of the agent that is refreshed from the learner's agent (on
  any device) before each batch (rlpyt's ``CpuSampler``). Workers synchronise once per
  batch.
* ``GpuSampler``: workers only step envs; the parent runs one batched forward pass for all
  B envs per time step, on the agent's device (rlpyt's action server): the step's inputs
  are copied there and the actions back into the shared buffer. Workers and parent hand
  over each time step through semaphores.
* ``AlternatingSampler``: the workers form two groups over two halves of the envs; while
  one group steps its envs the parent computes the other group's actions.

The three differ only in two declared class attributes of ``ParallelSampler``
(``agent_in_workers``, ``n_groups``). The envs may be gymnasium or TorchRL envs (built in
each worker from ``env_fn``, stepped as in ``SerialSampler``); a batched TorchRL env of
batch size ``[B']`` is never split between workers (``batch_B`` a multiple of ``B'``, at most
``batch_B / B'`` workers) and may not be a ``ParallelEnv`` (workers are daemon processes,
which cannot start processes of their own). ``for samples in sampler:`` iterates like a
TorchRL collector (``tdrl.samplers.base.iterate``). Workers (``tdrl.samplers.worker``) are started
(``spawn``) at the first ``obtain_samples``, after the algorithm has configured the agent
(schedules, warm-up), and stay up until ``shutdown``; their start-up time is
``startup_seconds``. The parent supervises them with ``tdrl.utils.processes``: a worker
that dies, fails or exceeds ``worker_timeout_s`` raises ``ChildFailed`` naming it
(``tdrl-sampler-<w>``) and how it ended. Workers exit by themselves once the parent is
gone; ``shutdown`` (also run at exit) stops any that does not exit when asked. Offline
evaluation runs in the parent on its own eval envs (``Evaluator``). Scripts that use these
samplers need the ``if __name__ == "__main__":`` guard of the ``spawn`` start method.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.process import BaseProcess
from typing import Any, ClassVar

import numpy as np
import torch
from tensordict import TensorDict

from tdrl._compat import ParallelEnv, TensorSpec, TransformedEnv
from tdrl.agents.base import Agent
from tdrl.envs.gym import make_gym_env
from tdrl.envs.traj_info import TrajInfo
from tdrl.samplers.base import SamplerSettings, iterate
from tdrl.samplers.buffer_views import AgentRows
from tdrl.samplers.env_build import check_columns, close_env, make_example_env
from tdrl.samplers.env_setup import EnvSpecs, allocate_samples, env_specs, initialize_agent
from tdrl.samplers.evaluation import Evaluator
from tdrl.samplers.worker_pool import WorkerPool
from tdrl.utils.checks import (
    ArgumentError,
    check_all,
    check_int,
    check_int_list,
    check_positive_int,
)
from tdrl.utils.finite import check_env_batch
from tdrl.utils.processes import (
    STUCK_AFTER_S,
    forget_at_exit,
    stop_at_exit,
)
from tdrl.utils.timeouts import check_timeout


def env_slices(B: int, n_workers: int, columns: int = 1) -> list[tuple[int, int]]:
    """Contiguous ``[b0, b1)`` column ranges of whole envs of ``columns`` columns each.

    The workers' numbers of envs differ by at most one.
    """
    n_envs = B // columns
    bounds = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(n_envs), n_workers)])
    return [(int(bounds[i]) * columns, int(bounds[i + 1]) * columns) for i in range(n_workers)]


class ParallelSampler:
    """What ``CpuSampler``, ``GpuSampler`` and ``AlternatingSampler`` share; use one of those.

    Batches are ``[batch_T, batch_B]`` TensorDicts in shared memory (see the module
    docstring for how each variant splits the work).

    Args:
        env_fn: builds one env from ``**env_kwargs`` (a gymnasium env or a TorchRL env);
            must be importable by the workers (module level).
        env_kwargs: keyword arguments of ``env_fn``.
        batch_T: time steps per batch.
        batch_B: envs over all workers.
        mid_batch_reset: reset finished envs at once (True) or before the next batch
            (False, "wait reset"; see ``SerialSampler``).
        n_workers: worker processes (default: ``min(envs, os.cpu_count())``, at least
            ``n_groups``, where ``envs`` is ``batch_B``, or ``batch_B / B'`` for batched
            TorchRL envs); the envs are split into contiguous slices of nearly equal size.
        max_decorrelation_steps: random start-up steps per env, in ``[0, max)``.
        eval_n_envs: envs for offline evaluation (in the parent process; 0: none).
        eval_env_kwargs: ``env_kwargs`` of the evaluation envs (default: ``env_kwargs``).
        eval_max_steps: env steps per evaluation, over all eval envs.
        eval_max_trajectories: stop evaluating once this many episodes completed.
        traj_info_cls: per-episode record class.
        worker_cpus: CPUs to pin each worker to (one list per worker; None: no pinning).
        torch_threads: torch threads per worker.
        worker_timeout_s: seconds a worker may take for a batch (``CpuSampler``) or a time
            step (``GpuSampler``, ``AlternatingSampler``) before ``obtain_samples`` raises
            ``ChildFailed`` saying it is stuck (start-up: at least 300 s). The default, half
            an hour, leaves room for the slowest real batches; None: no limit.
        extra_keys: env entries to record under ``("next", *key)`` (see ``SerialSampler``).

    Attributes:
        agent_in_workers: class setting: the workers act with a shared-memory copy of the
            agent (True), or the parent acts for them each time step (False).
        n_groups: class setting: worker groups the parent serves in turn (``n_workers``
            must be a multiple of it).
        settings: the checked arguments shared with ``SerialSampler``.
        startup_seconds: how long the workers took to start (None until they have).
        last_traj_infos: the episodes that ended during the batch iteration yielded last.
    """

    agent_in_workers: ClassVar[bool] = True
    n_groups: ClassVar[int] = 1

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
        n_workers: int | None = None,
        max_decorrelation_steps: int = 100,
        eval_n_envs: int = 0,
        eval_env_kwargs: dict[str, Any] | None = None,
        eval_max_steps: int | None = None,
        eval_max_trajectories: int | None = None,
        traj_info_cls: type[TrajInfo] = TrajInfo,
        worker_cpus: Sequence[Sequence[int]] | None = None,
        torch_threads: int = 1,
        worker_timeout_s: float | None = STUCK_AFTER_S,
        extra_keys: Sequence[str | tuple[str, ...]] = (),
    ):
        self.settings = SamplerSettings.from_arguments(locals())
        self.batch_spec = self.settings.batch_spec
        self.eval_n_envs = self.settings.eval_n_envs
        B = self.batch_spec.B
        self._n_workers_given = n_workers is not None
        self.n_workers = self._check_n_workers(n_workers, B)
        self.worker_cpus = None
        if worker_cpus is not None:
            cpu_lists = check_all(
                "worker_cpus", worker_cpus, lambda n, v: check_int_list(n, v, minimum=0)
            )
            if len(cpu_lists) != self.n_workers:
                raise ArgumentError(
                    f"worker_cpus needs one CPU list per worker ({self.n_workers}), "
                    f"got {len(cpu_lists)}"
                )
            self.worker_cpus = cpu_lists
        self.torch_threads = check_positive_int("torch_threads", torch_threads)
        self.worker_timeout_s = check_timeout("worker_timeout_s", worker_timeout_s)
        self.evaluator = Evaluator(self.settings)
        self.agent: Agent | None = None
        self.startup_seconds: float | None = None
        self._shared_agent: Agent | None = None
        self._workers = WorkerPool(self.worker_timeout_s)
        self._collecting = False  # a batch began and did not end (the workers may be mid-way)
        self.last_traj_infos: list[TrajInfo] = []

    def _check_n_workers(self, n_workers: int | None, n_envs: int) -> int:
        """``n_workers`` checked for ``n_envs`` envs (the default when None)."""
        if n_workers is None:
            n_workers = max(self.n_groups, min(n_envs, os.cpu_count() or 1))
            n_workers -= n_workers % self.n_groups
        n_workers = check_int("n_workers", n_workers, minimum=1, maximum=n_envs)
        if n_workers % self.n_groups:
            raise ValueError(
                f"n_workers must be a multiple of {self.n_groups} for "
                f"{type(self).__name__}, got {n_workers}"
            )
        return n_workers

    @property
    def worker_processes(self) -> list[BaseProcess]:
        """The worker processes (none before the first batch and after ``shutdown``)."""
        return list(self._workers.procs)

    @property
    def eval_envs(self) -> list[Any]:
        """The evaluation envs (built by ``initialize``, stepped in this process)."""
        return self.evaluator.envs

    # --------------------------------------------------------------------------- set-up
    def initialize(
        self, agent: Agent, *, seed: int = 0, traj_info_kwargs: dict[str, Any] | None = None
    ) -> TensorDict:
        """Read the specs, initialise the agent, allocate the shared sample buffer.

        The specs come from one env built here; the workers start at the first batch.

        See ``Sampler.initialize`` (``tdrl.samplers.base``) for the arguments and the result.
        """
        settings = self.settings
        B = self.batch_spec.B
        self.seed = int(seed)
        self.specs = self._example_specs()
        self.observation_spec, self.action_spec = self.specs.observation, self.specs.action
        initialize_agent(agent, self.specs, B)
        if self.n_groups > 1 and agent.has_per_env_state:
            raise ValueError(
                f"{type(self).__name__} steps the agent on half the envs at a time; "
                f"{type(agent).__name__} keeps per-env state (e.g. Ape-X epsilons): "
                "use GpuSampler or CpuSampler"
            )
        self.agent = agent
        self._discount = float((traj_info_kwargs or {}).get("discount", 1.0))
        obs, action = self.observation_spec.zeros((B,)), self.action_spec.zeros((B,))
        self.samples = allocate_samples(
            settings, agent, self.specs, (obs, action, torch.zeros(B, 1))
        ).share_memory_()
        self._slices = env_slices(B, self.n_workers, self.specs.columns)
        per_group = self.n_workers // self.n_groups
        self._groups = [
            list(range(g * per_group, (g + 1) * per_group)) for g in range(self.n_groups)
        ]
        self._group_rows = [
            AgentRows(self.samples[:, self._slices[g[0]][0] : self._slices[g[-1]][1]])
            for g in self._groups
        ]
        self.evaluator.initialize_for(
            self.specs, seed=self.seed, discount=self._discount, agent=agent
        )
        return self.samples

    def _example_specs(self) -> EnvSpecs:
        """The specs of one env built here (then closed), checked for the workers.

        Raises:
            ArgumentError: ``batch_B`` is not a multiple of a batched env's ``B'``, or
                ``n_workers`` exceeds the envs.
            TypeError: a ``ParallelEnv`` (the workers cannot start its processes), or a
                spec tdrl cannot use.
        """
        settings, B = self.settings, self.batch_spec.B
        example, columns = make_example_env(settings.env_fn, settings.env_kwargs)
        try:
            check_columns("batch_B", B, columns, settings.env_fn)
            specs = env_specs(example, settings.extra_keys)
            base = example
            while isinstance(base, TransformedEnv):
                base = base.base_env
            if isinstance(base, ParallelEnv):
                raise TypeError(
                    f"{type(self).__name__} steps envs in daemon worker processes, which "
                    "cannot start a ParallelEnv's processes: return a SerialEnv (or envs "
                    "of batch size []) here, or step the ParallelEnv with SerialSampler"
                )
        finally:
            close_env(example)
        n_envs = B // columns
        if self.n_workers > n_envs:
            if self._n_workers_given or self.worker_cpus is not None:
                raise ArgumentError(
                    f"n_workers={self.n_workers} exceeds the {n_envs} batched env(s) of "
                    f"{columns} columns that batch_B={B} holds (a worker steps whole envs)"
                )
            self.n_workers = self._check_n_workers(None, n_envs)
        return specs

    def _start_workers(self, agent: Agent) -> None:
        """Spawn the workers (with the agent as configured by now); wait until all are up."""
        if self.agent_in_workers:
            self._shared_agent = copy.deepcopy(agent).cpu().share_memory()
        stop_at_exit(self)
        self.startup_seconds = self._workers.start(
            settings=self.settings,
            slices=self._slices,
            samples=self.samples,
            agent=self._shared_agent,
            seed=self.seed,
            discount=self._discount,
            cpus=self.worker_cpus,
            torch_threads=self.torch_threads,
        )

    # ------------------------------------------------------------------------- sampling
    def sync_shared_agent(self) -> None:
        """Copy the agent's parameters and buffers into the workers' shared-memory copy.

        Once per batch, from the learner's agent on whichever device it is (a GPU's state is
        copied into the shared CPU tensors).
        """
        if self.agent is None or self._shared_agent is None:
            raise RuntimeError("the workers' shared agent exists once the workers started")
        shared = self._shared_agent.state_dict()
        with torch.no_grad():
            for name, value in self.agent.state_dict().items():
                shared[name].copy_(value)

    @torch.no_grad()
    def obtain_samples(self, itr: int) -> tuple[TensorDict, list[TrajInfo]]:
        """Collect one ``[batch_T, batch_B]`` batch with the agent in its current mode.

        Args:
            itr: the runner's iteration (passed to the workers' agent copy's mode).

        Returns:
            ``(samples, traj_infos)``: the shared buffer (valid until the next call) and
            the episodes that ended during the batch, in env order.

        Raises:
            ChildFailed: a worker died or failed (its traceback in the message), or is
                stuck (``worker_timeout_s``).
            NonFiniteError: the env returned a NaN or infinite observation or reward.
        """
        agent = self.agent
        if agent is None:
            raise RuntimeError("call initialize(agent, seed=...) before obtain_samples")
        workers = self._workers
        if not workers.procs:
            self._start_workers(agent)
        self._collecting = True
        if self.agent_in_workers:
            self.sync_shared_agent()
            workers.send_all(("collect", (agent.mode, itr)))
        else:
            workers.send_all(("serve", None))
            self._serve_actions(agent)
        since = time.monotonic()  # the whole batch (CpuSampler) or its last step
        completed: list[TrajInfo] = []
        for w in range(self.n_workers):
            completed.extend(workers.expect(w, "done", since=since))
        self._collecting = False
        return check_env_batch(self.samples), completed

    def _serve_actions(self, agent: Agent) -> None:
        """Act for the workers, one time step at a time (the agent not in the workers).

        Per time step and group: wait for the group's inputs, act on all its envs at once,
        release the group.
        """
        device, workers = agent.device, self._workers
        for t in range(self.batch_spec.T):
            for group, rows in zip(self._groups, self._group_rows, strict=True):
                for w in group:
                    workers.wait_obs(w)
                rows.act(agent, t, device)
                for w in group:
                    workers.release(w)

    def __iter__(self) -> Iterator[TensorDict]:
        """``for samples in sampler:`` the batches of iterations 0, 1, ... (``iterate``)."""
        return iterate(self)

    def update_policy_weights_(self) -> None:
        """Copy the agent's weights into the workers' shared copy now (``CpuSampler``).

        ``CpuSampler`` also does it before every batch (``sync_shared_agent``);
        ``GpuSampler`` and ``AlternatingSampler`` act with the agent itself in this
        process, so there is nothing to do (nor before the workers start).
        """
        if self._shared_agent is not None:
            self.sync_shared_agent()

    # ----------------------------------------------------------------------- evaluation
    def evaluate_agent(self, itr: int) -> list[TrajInfo]:
        """Run the agent in eval mode on the eval envs, here; returns completed episodes."""
        return self.evaluator.evaluate(self.agent, itr)

    # ------------------------------------------------------------------------ shut-down
    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the workers (asking first, then terminating) and close the eval envs.

        After a batch that did not end (a worker failed or is stuck, an interrupt) the
        workers may wait mid-batch for what never comes: they are terminated at once.

        Args:
            timeout: seconds the workers get to exit when asked, before SIGTERM.
        """
        self._workers.stop(wait_s=0.0 if self._collecting else timeout)
        self._collecting = False
        forget_at_exit(self)
        self.evaluator.close()


class CpuSampler(ParallelSampler):
    """Workers step their envs and act with a shared-memory copy of the agent.

    The copy is refreshed from the learner's agent before each batch; see
    ``ParallelSampler`` for the arguments.
    """


class GpuSampler(ParallelSampler):
    """Workers only step envs; the parent acts for all B envs at once per time step.

    The parent's forward pass runs on the agent's device; see ``ParallelSampler`` for the
    arguments.
    """

    agent_in_workers = False


class AlternatingSampler(ParallelSampler):
    """Two groups of workers: while one steps its envs, the parent acts for the other.

    ``n_workers`` must be even (default 2). The agent must not keep per-env state (its
    ``step`` sees half the envs at a time); see ``ParallelSampler`` for the arguments.
    """

    agent_in_workers = False
    n_groups = 2
