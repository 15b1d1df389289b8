"""Parallel samplers: envs stepped in worker processes that write one shared ``[T, B]`` buffer.

Three ways to split the work, all returning the same batch as ``SerialSampler`` for the same
seeds (env ``b`` is seeded ``seed + b`` and decorrelated with its own generator, whichever
worker steps it):

* ``CpuSampler``: each worker steps a slice of the B envs *and* runs the policy on it, from
  a shared-memory CPU copy of the agent that is refreshed from the learner's agent before
  each batch (rlpyt's ``CpuSampler``). Workers synchronise once per batch.
* ``GpuSampler``: workers only step envs; the parent runs one batched forward pass for all
  B envs per time step, on the agent's device (rlpyt's action server). Workers and parent
  hand over each time step through semaphores.
* ``AlternatingSampler``: the workers form two groups over two halves of the envs; while
  one group steps its envs the parent computes the other group's actions.

Workers are started (``spawn``) at the first ``obtain_samples``, after the algorithm has
configured the agent (schedules, warm-up), and stay up until ``shutdown``; their start-up
time is ``startup_seconds``. Every worker process is a daemon, and ``shutdown`` (also run
at interpreter exit) terminates any that does not exit when asked. Offline evaluation runs
in the parent process on its own eval envs. Scripts that use these samplers need the
``if __name__ == "__main__":`` guard of the ``spawn`` start method.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import multiprocessing as mp
import os
import time
import traceback
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from tdrl.agents.base import Agent
from tdrl.envs.gym import make_gym_env
from tdrl.envs.spaces import space_to_spec
from tdrl.envs.traj_info import TrajInfo
from tdrl.samplers.base import build_samples_buffer, check_positive_int, make_envs
from tdrl.samplers.serial import AgentRows, EnvRunner, SerialSampler

_POLL_S = 0.5  # how often a waiting parent checks that its workers are alive


def _env_slices(B: int, n_workers: int) -> list[tuple[int, int]]:
    """Contiguous ``[b0, b1)`` column ranges, sizes differing by at most one."""
    bounds = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(B), n_workers)])
    return [(int(bounds[i]), int(bounds[i + 1])) for i in range(n_workers)]


def set_worker_affinity(cpus: Sequence[int] | None, torch_threads: int) -> None:
    """Pin this process to ``cpus`` (skipped with a warning where unsupported) and set
    torch's thread count."""
    if cpus:
        if hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(0, list(cpus))
            except OSError as e:  # e.g. a CPU outside the container's set
                warnings.warn(f"could not pin to CPUs {list(cpus)}: {e}", stacklevel=2)
        else:
            warnings.warn("CPU pinning is not supported on this platform", stacklevel=2)
    torch.set_num_threads(torch_threads)


def _worker(
    conn: Any,
    obs_ready: Any,
    act_ready: Any,
    *,
    env_fn: Callable[..., Any],
    env_kwargs: dict[str, Any],
    env_ranks: list[int],
    columns: tuple[int, int],
    samples: TensorDict,
    agent: Agent | None,
    seed: int,
    max_decorrelation_steps: int,
    traj_info_cls: type[TrajInfo],
    discount: float,
    mid_batch_reset: bool,
    cpus: Sequence[int] | None,
    torch_threads: int,
) -> None:
    """A worker's life: build and start its envs, then serve ``collect`` (policy here) or
    ``serve`` (actions from the parent, one time step at a time) until ``close``."""
    try:
        set_worker_affinity(cpus, torch_threads)
        envs = make_envs(env_fn, env_kwargs, len(env_ranks))
        runner = EnvRunner(
            envs,
            env_ranks=env_ranks,
            seed=seed,
            observation_spec=space_to_spec(envs[0].observation_space),
            action_spec=space_to_spec(envs[0].action_space),
            traj_info_cls=traj_info_cls,
            discount=discount,
            mid_batch_reset=mid_batch_reset,
        )
        runner.start(max_decorrelation_steps)
        runner.bind(samples[:, columns[0] : columns[1]])
        if agent is not None:
            agent.collector_initialize(samples.shape[1], env_ranks)
            torch.manual_seed(seed + 7919 * (1 + env_ranks[0]))  # own stream per worker
        T = samples.shape[0]
        conn.send(("ready", None))
        while True:
            command, arg = conn.recv()
            if command == "collect":
                mode, itr = arg
                getattr(agent, mode)(itr)
                with torch.no_grad():
                    completed = runner.collect(agent)
                conn.send(("done", completed))
            elif command == "serve":
                completed = []
                for t in range(T):
                    runner.write_inputs(t)
                    obs_ready.release()
                    act_ready.acquire()
                    completed.extend(runner.step_envs(t))
                conn.send(("done", completed))
            elif command == "close":
                runner.close()
                conn.send(("closed", None))
                return
            else:
                raise ValueError(f"unknown worker command {command!r}")
    except KeyboardInterrupt:
        return
    except BaseException:  # reported to the parent, which raises it
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(("error", traceback.format_exc()))


class ParallelSampler(SerialSampler):
    """What ``CpuSampler``, ``GpuSampler`` and ``AlternatingSampler`` share (see the module
    docstring); use one of those. Argument checks and offline evaluation (in this process,
    on the eval envs) are ``SerialSampler``'s.

    Args:
        env_fn: builds one env from ``**env_kwargs`` (a gymnasium env or a
            ``tdrl.envs.make_env`` env); must be importable by the workers (module level).
        env_kwargs: keyword arguments of ``env_fn``.
        batch_T: time steps per batch.
        batch_B: envs over all workers.
        n_workers: worker processes (default: ``min(batch_B, os.cpu_count())``); the envs
            are split into contiguous slices of nearly equal size.
        max_decorrelation_steps: random start-up steps per env, in ``[0, max)``.
        eval_n_envs: envs for offline evaluation (in the parent process; 0: none).
        eval_env_kwargs: ``env_kwargs`` of the evaluation envs (default: ``env_kwargs``).
        eval_max_steps: env steps per evaluation, over all eval envs.
        eval_max_trajectories: stop evaluating once this many episodes completed.
        traj_info_cls: per-episode record class.
        mid_batch_reset: reset finished envs at once (True) or before the next batch
            (False, "wait reset"; see ``SerialSampler``).
        worker_cpus: CPUs to pin each worker to (one list per worker; None: no pinning).
        torch_threads: torch threads per worker.
    """

    agent_in_workers = True
    n_groups = 1

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
    ):
        super().__init__(
            env_fn,
            env_kwargs,
            batch_T=batch_T,
            batch_B=batch_B,
            mid_batch_reset=mid_batch_reset,
            max_decorrelation_steps=max_decorrelation_steps,
            eval_n_envs=eval_n_envs,
            eval_env_kwargs=eval_env_kwargs,
            eval_max_steps=eval_max_steps,
            eval_max_trajectories=eval_max_trajectories,
            traj_info_cls=traj_info_cls,
        )
        if n_workers is None:
            n_workers = max(self.n_groups, min(batch_B, os.cpu_count() or 1))
        self.n_workers = check_positive_int("n_workers", n_workers)
        if self.n_workers > batch_B:
            raise ValueError(f"n_workers ({n_workers}) must not exceed batch_B ({batch_B})")
        if self.n_workers % self.n_groups:
            raise ValueError(
                f"n_workers must be a multiple of {self.n_groups} for "
                f"{type(self).__name__}, got {n_workers}"
            )
        if worker_cpus is not None and len(worker_cpus) != self.n_workers:
            raise ValueError(
                f"worker_cpus needs one CPU list per worker ({self.n_workers}), "
                f"got {len(worker_cpus)}"
            )
        self.worker_cpus = [list(c) for c in worker_cpus] if worker_cpus is not None else None
        self.torch_threads = check_positive_int("torch_threads", torch_threads)
        self.startup_seconds: float | None = None
        self._procs: list[mp.process.BaseProcess] = []
        self._conns: list[Any] = []

    # --------------------------------------------------------------------------- set-up
    def initialize(
        self, agent: Agent, *, seed: int = 0, traj_info_kwargs: dict[str, Any] | None = None
    ) -> TensorDict:
        """Read the env's specs (from one env built here), initialise the agent and
        allocate the shared sample buffer; the workers start at the first batch.

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
        (example,) = make_envs(self.env_fn, self.env_kwargs, 1)
        self.observation_spec = space_to_spec(example.observation_space)
        self.action_spec = space_to_spec(example.action_space)
        example.close()
        agent.initialize(self.observation_spec, self.action_spec)
        agent.collector_initialize(B, list(range(B)))
        if self.n_groups > 1 and agent.has_per_env_state:
            raise ValueError(
                f"{type(self).__name__} steps the agent on half the envs at a time; "
                f"{type(agent).__name__} keeps per-env state (e.g. Ape-X epsilons): "
                "use GpuSampler or CpuSampler"
            )
        self.agent = agent
        self._discount = float((traj_info_kwargs or {}).get("discount", 1.0))
        agent.sample_mode(0)
        with torch.no_grad():
            _, info = agent.step(
                self.observation_spec.zeros((B,)),
                self.action_spec.zeros((B,)),
                torch.zeros(B, 1),
            )
        self.samples = build_samples_buffer(
            self.batch_spec,
            self.observation_spec,
            self.action_spec,
            info,
            valid=not self.mid_batch_reset,
        ).share_memory_()
        self._slices = _env_slices(B, self.n_workers)
        per_group = self.n_workers // self.n_groups
        self._groups = [
            list(range(g * per_group, (g + 1) * per_group)) for g in range(self.n_groups)
        ]
        self._group_rows = [
            AgentRows(self.samples[:, self._slices[g[0]][0] : self._slices[g[-1]][1]])
            for g in self._groups
        ]
        if self.eval_n_envs:
            self.eval_envs = make_envs(self.env_fn, self.eval_env_kwargs, self.eval_n_envs)
            self._eval_started = False
        return self.samples

    def _start_workers(self) -> None:
        """Spawn the workers (with the agent as configured by now) and wait until each has
        started its envs."""
        t0 = time.perf_counter()
        ctx = torch.multiprocessing.get_context("spawn")
        if self.agent_in_workers:
            self._shared_agent = copy.deepcopy(self.agent).cpu().share_memory()
        else:
            self._shared_agent = None
        self._obs_ready = [ctx.Semaphore(0) for _ in range(self.n_workers)]
        self._act_ready = [ctx.Semaphore(0) for _ in range(self.n_workers)]
        for w, (b0, b1) in enumerate(self._slices):
            parent_conn, child_conn = ctx.Pipe()
            proc = ctx.Process(
                target=_worker,
                args=(child_conn, self._obs_ready[w], self._act_ready[w]),
                kwargs={
                    "env_fn": self.env_fn,
                    "env_kwargs": self.env_kwargs,
                    "env_ranks": list(range(b0, b1)),
                    "columns": (b0, b1),
                    "samples": self.samples,
                    "agent": self._shared_agent,
                    "seed": self.seed,
                    "max_decorrelation_steps": self.max_decorrelation_steps,
                    "traj_info_cls": self.traj_info_cls,
                    "discount": self._discount,
                    "mid_batch_reset": self.mid_batch_reset,
                    "cpus": self.worker_cpus[w] if self.worker_cpus else None,
                    "torch_threads": self.torch_threads,
                },
                daemon=True,
                name=f"tdrl-sampler-{w}",
            )
            proc.start()
            child_conn.close()
            self._procs.append(proc)
            self._conns.append(parent_conn)
        _shutdown_at_exit.add(self)
        for w in range(self.n_workers):
            self._receive(w, "ready")
        self.startup_seconds = time.perf_counter() - t0

    def _receive(self, w: int, expected: str) -> Any:
        """The next message of worker ``w``; raises if it failed or died."""
        conn = self._conns[w]
        while not conn.poll(_POLL_S):
            if not self._procs[w].is_alive():
                raise RuntimeError(f"sampler worker {w} died (exit code {self._procs[w].exitcode})")
        kind, payload = conn.recv()
        if kind == "error":
            raise RuntimeError(f"sampler worker {w} failed:\n{payload}")
        if kind != expected:
            raise RuntimeError(f"sampler worker {w} sent {kind!r}, expected {expected!r}")
        return payload

    def _wait_obs(self, w: int) -> None:
        """Block until worker ``w`` has written its inputs for this step."""
        sem = self._obs_ready[w]
        while not sem.acquire(timeout=_POLL_S):
            if self._conns[w].poll():
                self._receive(w, "ready")  # raises the worker's error
            if not self._procs[w].is_alive():
                raise RuntimeError(f"sampler worker {w} died (exit code {self._procs[w].exitcode})")

    # ------------------------------------------------------------------------- sampling
    def sync_shared_agent(self) -> None:
        """Copy the learner's agent tensors (parameters, buffers) into the workers'
        shared-memory copy."""
        shared = self._shared_agent.state_dict()
        with torch.no_grad():
            for name, value in self.agent.state_dict().items():
                shared[name].copy_(value)

    @torch.no_grad()
    def obtain_samples(self, itr: int) -> tuple[TensorDict, list[TrajInfo]]:
        """Collect one ``[batch_T, batch_B]`` batch with the agent in its current mode.

        Returns:
            ``(samples, traj_infos)``: the shared buffer (valid until the next call) and
            the episodes that ended during the batch, in env order.
        """
        if self.agent is None:
            raise RuntimeError("call initialize(agent, seed=...) before obtain_samples")
        if not self._procs:
            self._start_workers()
        if self.agent_in_workers:
            self.sync_shared_agent()
            command = ("collect", (f"{self.agent.mode}_mode", itr))
            for conn in self._conns:
                conn.send(command)
        else:
            for conn in self._conns:
                conn.send(("serve", None))
            self._serve_actions()
        completed: list[TrajInfo] = []
        for w in range(self.n_workers):
            completed.extend(self._receive(w, "done"))
        return self.samples, completed

    def _serve_actions(self) -> None:
        """The parent's side of a batch without the agent in the workers: per time step and
        group, wait for the group's inputs, act on all its envs at once, release it."""
        agent = self.agent
        device = agent.device
        for t in range(self.batch_spec.T):
            for group, rows in zip(self._groups, self._group_rows, strict=True):
                for w in group:
                    self._wait_obs(w)
                rows.act(agent, t, device)
                for w in group:
                    self._act_ready[w].release()

    # ------------------------------------------------------------------------ shut-down
    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the workers (asking first, then terminating) and close the eval envs."""
        for conn, proc in zip(self._conns, self._procs, strict=True):
            if proc.is_alive():
                with contextlib.suppress(BrokenPipeError, OSError):
                    conn.send(("close", None))
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(1.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []
        _shutdown_at_exit.discard(self)
        for env in self.eval_envs:
            env.close()
        self.eval_envs = []


class CpuSampler(ParallelSampler):
    """Workers step their envs and run the policy from a shared-memory copy of the agent,
    refreshed before each batch; see ``ParallelSampler`` for the arguments."""


class GpuSampler(ParallelSampler):
    """Workers only step envs; the parent acts for all B envs at once per time step, on the
    agent's device; see ``ParallelSampler`` for the arguments."""

    agent_in_workers = False


class AlternatingSampler(ParallelSampler):
    """Two groups of workers (``n_workers`` even, default 2): while one group steps its
    envs, the parent computes the other group's actions. The agent must not keep per-env
    state (its ``step`` sees half the envs at a time); see ``ParallelSampler`` for the
    arguments."""

    agent_in_workers = False
    n_groups = 2


_shutdown_at_exit: weakref.WeakSet[ParallelSampler] = weakref.WeakSet()


@atexit.register
def _shutdown_all() -> None:
    for sampler in list(_shutdown_at_exit):
        sampler.shutdown(timeout=1.0)
