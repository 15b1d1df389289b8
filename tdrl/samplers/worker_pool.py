"""The parent's side of the sampler workers: starting them, talking to them, stopping them.

``tdrl.samplers.worker`` is a worker's side. A ``WorkerPool`` holds, per worker, its
process, the pipe of its commands and reports, and the two semaphores of the per-step
hand-over (``GpuSampler``, ``AlternatingSampler``). Every wait is supervised with
``tdrl.utils.processes``: a worker that dies, reports an error or exceeds
``worker_timeout_s`` raises ``ChildFailed`` naming it (``tdrl-sampler-<w>``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Semaphore
from typing import Any

from tensordict import TensorDict

from tdrl.agents.base import Agent
from tdrl.samplers.base import SamplerSettings
from tdrl.samplers.worker import run_worker
from tdrl.utils.processes import (
    POLL_S,
    ChildFailed,
    exit_description,
    receive,
    spawn_context,
    start_child,
    startup_timeout,
    stop_processes,
    wait_for,
)


class WorkerPool:
    """The sampler's worker processes, as the parent sees them.

    Args:
        timeout_s: seconds a worker may take to answer (``worker_timeout_s``; start-up
            gets at least the start-up allowance); None: no limit.
    """

    def __init__(self, timeout_s: float | None):
        self.timeout_s = timeout_s
        self.procs: list[BaseProcess] = []
        self.conns: list[Connection] = []
        self.obs_ready: list[Semaphore] = []
        self.act_ready: list[Semaphore] = []

    def start(
        self,
        *,
        settings: SamplerSettings,
        slices: Sequence[tuple[int, int]],
        samples: TensorDict,
        agent: Agent | None,
        seed: int,
        discount: float,
        cpus: Sequence[Sequence[int]] | None,
        torch_threads: int,
    ) -> float:
        """Start one worker per column slice of ``samples``; wait until all are up.

        Args:
            settings: the sampler's checked arguments (env factory, reset mode, ...).
            slices: each worker's ``[b0, b1)`` columns.
            samples: the shared ``[T, B]`` buffer.
            agent: the shared-memory agent copy the workers act with (None: the parent
                acts for them).
            seed: base seed (env ``b`` gets ``seed + b``).
            discount: for ``TrajInfo.DiscountedReturn``.
            cpus: CPUs to pin each worker to (None: no pinning).
            torch_threads: torch threads per worker.

        Returns:
            The seconds the start took.
        """
        t0 = time.monotonic()
        ctx = spawn_context()
        self.obs_ready = [ctx.Semaphore(0) for _ in slices]
        self.act_ready = [ctx.Semaphore(0) for _ in slices]
        for w, columns in enumerate(slices):
            parent_conn, child_conn = ctx.Pipe()
            proc = start_child(
                ctx,
                run_worker,
                args=(child_conn, self.obs_ready[w], self.act_ready[w]),
                kwargs={
                    "settings": settings,
                    "columns": columns,
                    "samples": samples,
                    "agent": agent,
                    "seed": seed,
                    "discount": discount,
                    "cpus": cpus[w] if cpus else None,
                    "torch_threads": torch_threads,
                },
                name=f"tdrl-sampler-{w}",
            )
            child_conn.close()
            self.procs.append(proc)
            self.conns.append(parent_conn)
        for w in range(len(slices)):
            self.expect(w, "ready", since=t0, startup=True)
        return time.monotonic() - t0

    def send_all(self, message: tuple[str, Any]) -> None:
        """Send ``message`` to every worker; a worker that is gone raises ``ChildFailed``."""
        for proc, conn in zip(self.procs, self.conns, strict=True):
            try:
                conn.send(message)
            except OSError as e:  # BrokenPipeError, ConnectionResetError: it is gone
                proc.join(1.0)
                raise ChildFailed(proc.name, exit_description(proc.exitcode)) from e

    def expect(self, w: int, expected: str, *, since: float, startup: bool = False) -> Any:
        """The payload of worker ``w``'s next message, which must be of kind ``expected``.

        It has ``timeout_s`` (``startup``: at least the start-up allowance) from ``since``
        (``time.monotonic()``), else ``ChildFailed``, as when it dies or fails.
        """
        timeout = startup_timeout(self.timeout_s) if startup else self.timeout_s
        conn, proc = self.conns[w], self.procs[w]
        kind, payload = receive(
            conn, proc, timeout=timeout, since=since, timeout_name="worker_timeout_s"
        )
        if kind != expected:
            raise ChildFailed(proc.name, f"sent {kind!r}, expected {expected!r}")
        return payload

    def wait_obs(self, w: int) -> None:
        """Block until worker ``w`` has written its inputs for this step (supervised)."""
        sem = self.obs_ready[w]
        if sem.acquire(timeout=POLL_S):  # the usual case, as cheap as an unsupervised wait
            return
        since = time.monotonic() - POLL_S  # supervised from here on: no cost per step

        def surface_error() -> None:
            if self.conns[w].poll():
                self.expect(w, "ready", since=since)  # raises the worker's reported error

        wait_for(
            lambda s: sem.acquire(timeout=s),
            [self.procs[w]],
            timeout=self.timeout_s,
            since=since,
            what="observation",
            timeout_name="worker_timeout_s",
            on_poll=surface_error,
        )

    def release(self, w: int) -> None:
        """Let worker ``w`` step its envs with the actions written for this step."""
        self.act_ready[w].release()

    def stop(self, *, wait_s: float) -> None:
        """Ask every worker to exit, then stop those that do not within ``wait_s``."""
        for conn, proc in zip(self.conns, self.procs, strict=True):
            if proc.is_alive():
                with contextlib.suppress(OSError):
                    conn.send(("close", None))
        stop_processes(self.procs, wait_s=wait_s, terminate_s=1.0)
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []
