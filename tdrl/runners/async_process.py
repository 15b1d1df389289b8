"""``AsyncRl``'s sampler in a process of its own: the double buffer and the relay.

The sampler process runs ``tdrl.runners.async_sampler.sample_loop`` with a
``ProcessLink``. Batches travel through a double buffer: two shared-memory ``[T, B]``
TensorDicts that the process fills in turn (iteration ``itr`` uses slot ``itr % 2``). Each
slot has a semaphore: the process acquires it before copying a batch in and announces the
slot (``BatchReady``) through a pipe; the relay thread in the learner's process appends the
slot to the replay buffer (``ReplayFeed.store``, under ``algo.replay_lock``) and releases
the semaphore. So the process collects the next batch while the learner appends the
previous one, and never overwrites a slot that is still being read.

The relay reads the pipe with ``tdrl.utils.processes.receive``: a process that reports an
error (``report_failure``) or dies surfaces as ``ChildFailed`` naming it and how it ended,
passed to the optimiser as a ``SamplerFailed`` event. ``RunningSampler.stop`` ends the
process with ``stop_processes`` (stop flag, then SIGTERM, then SIGKILL). The process is
started by ``start_child``, so it exits by itself once the learner's process is gone. The
controls the two sides poll (stop flag, throttle, weights version, progress) are shared
numbers without a lock: a side killed while reading one cannot leave it locked for the
other (only the weights' lock is taken by both, and waits for it are supervised).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase

from tdrl.envs.traj_info import TrajInfo
from tdrl.runners.async_sampler import (
    Flag,
    LogPoint,
    ReplayFeed,
    RunningSampler,
    SamplerControls,
    SamplerFailed,
    SamplerFinished,
    SamplerJob,
    sample_loop,
)
from tdrl.utils.processes import Child, ChildFailed, receive, report_failure, start_child

#: Seconds between the process's checks of the stop flag while it waits for a free slot.
_SLOT_WAIT_S = 0.5


@dataclass(frozen=True)
class BatchReady:
    """(Process to relay) the batch of iteration ``itr`` waits in shared slot ``slot``."""

    itr: int
    slot: int
    traj_infos: list[TrajInfo]
    weights_version: int


class SharedFlag:
    """A stop flag in shared memory, without a lock (a ``Flag`` for a sampler process).

    Args:
        ctx: the multiprocessing context of the process.
    """

    def __init__(self, ctx: Any):
        self._value = ctx.Value("b", 0, lock=False)

    def is_set(self) -> bool:
        """Whether it was set."""
        return bool(self._value.value)

    def set(self) -> None:
        """Set it."""
        self._value.value = 1


class ProcessLink:
    """A sampler process's link: batches through the shared double buffer.

    Args:
        conn: the sending end of the pipe to the learner's relay.
        slots: the two shared-memory ``[T, B]`` batches.
        slot_free: one semaphore per slot, released by the relay once it appended it.
        controls: the run's controls (stop flag, progress counter).
    """

    def __init__(
        self,
        conn: Connection,
        slots: list[TensorDict],
        slot_free: list[Any],
        controls: SamplerControls,
    ):
        self.conn = conn
        self.slots = slots
        self.slot_free = slot_free
        self.stop: Flag = controls.stop
        self.progress = controls.progress

    def deliver(
        self, itr: int, samples: TensorDictBase, traj_infos: list[TrajInfo], version: int
    ) -> bool:
        """Copy the batch into the next slot (once the relay freed it) and announce it."""
        slot = itr % 2
        while not self.slot_free[slot].acquire(timeout=_SLOT_WAIT_S):  # relay still reads it
            if self.stop.is_set():
                return False
            self.progress.value += 1
        if self.stop.is_set():
            return False
        self.slots[slot].copy_(samples)
        self.conn.send(("event", BatchReady(itr, slot, traj_infos, version)))
        return True

    def report(self, event: LogPoint | SamplerFinished) -> None:
        """Send the event to the relay."""
        self.conn.send(("event", event))


def start_sampler_process(
    ctx: Any,
    job: SamplerJob,
    feed: ReplayFeed,
    *,
    example: TensorDict,
    seed: int,
    discount: float,
) -> RunningSampler:
    """Spawn ``sample_loop`` in a process and start the relay thread that feeds ``feed``.

    Args:
        ctx: the spawn context the controls were made with.
        job: the process's work: an uninitialised copy of the sampler, a copy of the agent,
            the shared controls (``multiprocessing`` objects of ``ctx``), the plan.
        feed: the learner's feed.
        example: a ``[T, B]`` batch of the sampler's layout (the double buffer's model).
        seed: the seed of the sampler's envs.
        discount: the algorithm's discount (for ``TrajInfo``).
    """
    slots = [example.clone().zero_().share_memory_() for _ in range(2)]
    slot_free = [ctx.Semaphore(1) for _ in range(2)]
    receiver, sender = ctx.Pipe(duplex=False)
    proc = start_child(
        ctx,
        _sampler_process_main,
        args=(sender, job, slots, slot_free),
        kwargs={"seed": seed, "discount": discount},
        name="tdrl-async-sampler",
        daemon=False,  # a parallel sampler in it starts worker processes of its own
    )
    sender.close()  # the child holds its end
    thread = threading.Thread(
        target=_relay,
        args=(receiver, proc, feed, slots, slot_free, job.controls.stop),
        name="tdrl-async-relay",
        daemon=True,
    )
    thread.start()
    return RunningSampler(job.controls, thread, proc, slot_free)


def _sampler_process_main(
    conn: Connection,
    job: SamplerJob,
    slots: list[TensorDict],
    slot_free: list[Any],
    *,
    seed: int,
    discount: float,
) -> None:
    """Body of the sampler process: initialise the sampler, run ``sample_loop``.

    An error is sent through ``conn`` (``report_failure``) before the process exits.
    """
    try:
        with report_failure(conn):
            torch.set_num_threads(1)
            traj_info_kwargs = {"discount": discount}
            job.sampler.initialize(job.agent, seed=seed, traj_info_kwargs=traj_info_kwargs)
            sample_loop(job, ProcessLink(conn, slots, slot_free, job.controls))
    finally:
        job.sampler.shutdown()


def _relay(
    conn: Connection,
    proc: Child,
    feed: ReplayFeed,
    slots: list[TensorDict],
    slot_free: list[Any],
    stop: Flag,
) -> None:
    """In the learner's process: store the process's batches, forward its other events.

    Each filled slot is appended through ``feed`` and freed; a failure (or death) of the
    process becomes a ``SamplerFailed`` event.
    """
    try:
        while True:
            try:
                _, event = receive(conn, proc)
            except ChildFailed:
                if stop.is_set():  # the run ended first and stopped the process
                    return
                raise
            if isinstance(event, BatchReady):
                feed.store(event.itr, slots[event.slot], event.traj_infos, event.weights_version)
                slot_free[event.slot].release()
                continue
            feed.events.put(event)
            if isinstance(event, SamplerFinished):
                return
    except BaseException as exc:
        feed.events.put(SamplerFailed("process", exc))
