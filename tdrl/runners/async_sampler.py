"""The sampler side of ``AsyncRl``: one sampling loop, run in a thread or in a process.

``sample_loop`` is the whole sampler side, written once: before each batch it waits
while it is ``lead`` iterations ahead of the optimiser's schedule (the throttle), stops
when asked, loads the learner's newest published weights into its agent, collects the
batch and hands it to its *link*; at each log point it reports (after evaluating, for
``AsyncRlEval``); at the end it reports that it finished. A thread and a process differ
only in the link and in the kind of shared objects ``SamplerControls`` holds:

* **thread** (``ThreadLink``, here): each batch goes straight into the replay buffer
  through the learner's ``ReplayFeed`` (under ``algo.replay_lock``) and events go on the
  feed's ``queue.Queue``; the controls hold a ``threading`` lock and event and ``Box``
  values;
* **process** (``ProcessLink``, in ``tdrl.runners.async_process``): each batch goes
  through a shared-memory double buffer to a relay thread of the learner's process, which
  stores it through the same ``ReplayFeed``; the controls hold ``multiprocessing`` objects
  and the published weights live in shared memory.

Events are small dataclasses: ``BatchStored`` (an iteration's batch is in the replay
buffer), ``LogPoint`` (a log point, with the evaluation episodes), ``SamplerFinished`` and
``SamplerFailed``.

**Supervision.** The loop bumps ``controls.progress`` after every batch and at every poll
while it waits (for the optimiser, or for a free slot of the double buffer), so a counter
that stands still means the sampler is inside one batch or evaluation; the optimiser's
``ProgressWatch`` raises ``SamplerStuck`` when that lasts longer than ``sampler_timeout_s``.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from tensordict import TensorDictBase

from tdrl.agents.base import Agent
from tdrl.envs.traj_info import TrajInfo
from tdrl.replays import ReplayBuffer
from tdrl.runners.base import RunPlan, evaluate
from tdrl.runners.nonfinite import in_iteration
from tdrl.samplers.base import Sampler
from tdrl.utils.processes import Child, startup_timeout, stop_processes, stuck_description, wait_for

#: Seconds between the sampler's checks while it waits for the optimiser.
_WAIT_S = 0.0005


# --------------------------------------------------------------------------------- events
@dataclass(frozen=True)
class BatchStored:
    """The batch of iteration ``itr`` is in the replay buffer."""

    itr: int
    traj_infos: list[TrajInfo]
    weights_version: int  # the publication the sampler's agent acted with


@dataclass(frozen=True)
class LogPoint:
    """Iteration ``itr`` ends a log interval (``eval_only``: the row before training)."""

    itr: int
    eval_only: bool
    eval_traj_infos: list[TrajInfo] | None = None  # AsyncRlEval's evaluation episodes
    eval_seconds: float = 0.0


@dataclass(frozen=True)
class SamplerFinished:
    """The sampler collected its last batch."""


@dataclass(frozen=True)
class SamplerFailed:
    """The sampler (``where``: ``"thread"`` or ``"process"``) raised ``error``."""

    where: str
    error: BaseException


SamplerEvent = BatchStored | LogPoint | SamplerFinished | SamplerFailed


# ------------------------------------------------------------------------- shared state
class Value(Protocol):
    """A shared number: a ``Box`` in thread mode, a lock-free ``multiprocessing.Value``."""

    value: float


class TimedLock(Protocol):
    """A lock with a timed acquire: ``threading.Lock`` or ``multiprocessing.Lock``."""

    def acquire(self, *, timeout: float) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds; whether it was taken."""
        ...

    def release(self) -> None:
        """Give the lock back."""
        ...


class Flag(Protocol):
    """A stop flag: ``threading.Event``, or a lock-free ``SharedFlag`` for a process."""

    def is_set(self) -> bool:
        """Whether it was set."""
        ...

    def set(self) -> None:
        """Set it."""
        ...


@dataclass
class Box:
    """A plain number shared by the threads of one process."""

    value: float


class PublishedWeights:
    """The learner's newest agent state, which the sampler's agent loads before a batch.

    Args:
        state: tensors of the agent's ``state_dict()`` (in shared memory for a process).
        lock: held while ``state`` is written or read.
        version: the number of publications so far (written under ``lock``, read without).
    """

    def __init__(self, state: dict[str, torch.Tensor], lock: TimedLock, version: Value):
        self.state = state
        self.lock = lock
        self.version = version

    @classmethod
    def for_thread(cls, agent: Agent) -> PublishedWeights:
        """A copy of ``agent``'s state for a sampler thread."""
        state = {k: v.detach().clone() for k, v in agent.state_dict().items()}
        return cls(state, threading.Lock(), Box(0))

    @classmethod
    def for_process(cls, agent: Agent, ctx: Any) -> PublishedWeights:
        """A shared-memory copy of ``agent``'s state for a sampler process."""
        state = {k: v.detach().cpu().clone().share_memory_() for k, v in agent.state_dict().items()}
        return cls(state, ctx.Lock(), ctx.Value("q", 0, lock=False))

    @property
    def current(self) -> int:
        """The latest publication's number."""
        return int(self.version.value)

    def publish(self, agent: Agent, children: Sequence[Child] = ()) -> None:
        """Make ``agent``'s current state the sampler's next one.

        Args:
            agent: the learner's agent.
            children: the sampler process, if any: dying while it holds the lock, it
                raises ``ChildFailed`` here instead of blocking the learner for ever.
        """
        with self._held(children), torch.no_grad():
            for key, value in agent.state_dict().items():
                self.state[key].copy_(value)
            self.version.value += 1

    def load_into(self, agent: Agent, have: int) -> int:
        """Load the newest publication into ``agent`` unless it holds it (``have``).

        Returns:
            The publication ``agent`` holds now.
        """
        if self.version.value == have:
            return have
        with self._held():
            agent.load_state_dict(self.state)
            return int(self.version.value)

    @contextlib.contextmanager
    def _held(self, children: Sequence[Child] = ()) -> Iterator[None]:
        """Hold ``lock``, supervising ``children`` while waiting for it."""
        wait_for(lambda s: self.lock.acquire(timeout=s), children)
        try:
            yield
        finally:
            self.lock.release()


@dataclass
class SamplerControls:
    """What the optimiser shares with the sampler.

    Attributes:
        weights: the published weights.
        throttle: the sampler iteration the optimiser's next round waits for.
        stop: set when the run ends (or fails) before the sampler finished.
        lead: iterations the sampler may run ahead of ``throttle`` (None: free-running).
        progress: bumped by the sampler whenever it moves (see the module docstring).
    """

    weights: PublishedWeights
    throttle: Value
    stop: Flag
    lead: int | None
    progress: Value


@dataclass(frozen=True)
class SamplerJob:
    """What the sampler side of an asynchronous run works with, in a thread or a process.

    Attributes:
        sampler: the sampler (initialised by the thread's runner, or in the process).
        agent: the agent the sampler acts with (its own copy, loaded from ``weights``).
        controls: what the optimiser shares with it.
        plan: the run's plan (iterations, log points).
        offline_eval: evaluate at the log points.
    """

    sampler: Sampler
    agent: Agent
    controls: SamplerControls
    plan: RunPlan
    offline_eval: bool


# ------------------------------------------------------------------------------ the loop
class SamplerLink(Protocol):
    """Where ``sample_loop`` hands its batches and reports."""

    def deliver(
        self, itr: int, samples: TensorDictBase, traj_infos: list[TrajInfo], version: int
    ) -> bool:
        """Hand over iteration ``itr``'s batch; False when stopped meanwhile."""
        ...

    def report(self, event: LogPoint | SamplerFinished) -> None:
        """Send a log point or the end to the optimiser."""
        ...


def sample_loop(job: SamplerJob, link: SamplerLink) -> None:
    """Collect the iterations ``plan.start_itr .. plan.n_itr - 1`` (see the module doc)."""
    sampler, agent, controls, plan = job.sampler, job.agent, job.controls, job.plan
    offline_eval = job.offline_eval
    version = -1
    progress = controls.progress
    if offline_eval and plan.start_itr == 0:
        version = controls.weights.load_into(agent, version)
        link.report(_log_point(sampler, 0, offline_eval, eval_only=True))
    for itr in range(plan.start_itr, plan.n_itr):
        while controls.lead is not None and itr >= controls.throttle.value + controls.lead:
            if controls.stop.is_set():
                return
            progress.value += 1
            time.sleep(_WAIT_S)  # the optimiser is behind: wait for it
        if controls.stop.is_set():
            return
        version = controls.weights.load_into(agent, version)
        agent.sample_mode(itr)
        with in_iteration(itr):  # a non-finite env value names the iteration
            samples, traj_infos = sampler.obtain_samples(itr)
        progress.value += 1
        if not link.deliver(itr, samples, traj_infos, version):
            return
        if plan.is_log_itr(itr):
            link.report(_log_point(sampler, itr, offline_eval, eval_only=False))
    link.report(SamplerFinished())


def _log_point(sampler: Sampler, itr: int, offline_eval: bool, *, eval_only: bool) -> LogPoint:
    if not offline_eval:
        return LogPoint(itr, eval_only)
    traj_infos, seconds = evaluate(sampler, itr)
    return LogPoint(itr, eval_only, traj_infos, seconds)


# ----------------------------------------------------------------------- the learner's end
class ReplayFeed:
    """Where batches enter the learner: the replay buffer, then an event for the optimiser.

    Args:
        buffer: the algorithm's replay buffer.
        lock: ``algo.replay_lock``, held while appending.
        start_itr: the first iteration of the run.
    """

    def __init__(
        self, buffer: ReplayBuffer, lock: contextlib.AbstractContextManager[Any], start_itr: int
    ):
        self.buffer = buffer
        self.lock = lock
        self.events: queue.Queue[SamplerEvent] = queue.Queue()
        self.sampler_itr = start_itr  # iterations whose batch is in the replay buffer

    def store(
        self, itr: int, samples: TensorDictBase, traj_infos: list[TrajInfo], version: int
    ) -> None:
        """Append iteration ``itr``'s batch and tell the optimiser."""
        with self.lock:
            self.buffer.append_samples(samples)
        self.sampler_itr = itr + 1
        self.events.put(BatchStored(itr, traj_infos, version))


# -------------------------------------------------------------------------- thread mode
class ThreadLink:
    """A sampler thread's link: batches straight into the ``ReplayFeed``.

    Args:
        feed: the learner's feed.
    """

    def __init__(self, feed: ReplayFeed):
        self.feed = feed

    def deliver(
        self, itr: int, samples: TensorDictBase, traj_infos: list[TrajInfo], version: int
    ) -> bool:
        """Append the batch to the replay buffer."""
        self.feed.store(itr, samples, traj_infos, version)
        return True

    def report(self, event: LogPoint | SamplerFinished) -> None:
        """Queue the event for the optimiser."""
        self.feed.events.put(event)


def start_sampler_thread(job: SamplerJob, feed: ReplayFeed) -> RunningSampler:
    """Start ``sample_loop`` in a thread of this process, acting with ``job.agent``."""
    thread = threading.Thread(
        target=_sampler_thread_main,
        args=(job, feed),
        name="tdrl-async-sampler",
        daemon=True,
    )
    thread.start()
    return RunningSampler(job.controls, thread)


def _sampler_thread_main(job: SamplerJob, feed: ReplayFeed) -> None:
    """Body of the sampler thread; an exception becomes a ``SamplerFailed`` event."""
    try:
        sample_loop(job, ThreadLink(feed))
    except BaseException as exc:  # surfaced in the optimiser thread
        feed.events.put(SamplerFailed("thread", exc))


@dataclass
class RunningSampler:
    """A started sampler: its thread (or, for a process, the relay thread) and process.

    Attributes:
        controls: the controls shared with it.
        thread: the sampler thread, or the relay thread of a sampler process.
        proc: the sampler process (None in thread mode).
        slot_free: the double buffer's semaphores (process mode).
    """

    controls: SamplerControls
    thread: threading.Thread
    proc: Child | None = None
    slot_free: list[Any] = field(default_factory=list)

    def stop(self, *, at_once: bool = False) -> None:
        """Ask the sampler to stop and wait for it.

        A process that does not end in time is terminated, then killed; with
        ``at_once`` (it is stuck) it is terminated without waiting, and a stuck thread
        (which cannot be stopped) is left to end with this process.
        """
        self.controls.stop.set()
        for sem in self.slot_free:
            sem.release()  # a sampler waiting for a free slot wakes up and sees the stop
        if self.proc is not None:
            stop_processes([self.proc], wait_s=0.0 if at_once else 10.0, terminate_s=2.0)
        self.thread.join(timeout=1.0 if at_once else 60.0)


class SamplerStuck(RuntimeError):  # noqa: N818 - reads as what happened
    """The sampler made no progress within ``sampler_timeout_s``."""


class ProgressWatch:
    """The optimiser's check that the sampler still moves (``controls.progress``).

    Args:
        progress: the counter the sampler bumps.
        timeout: seconds it may stand still once the first batch arrived (before that, at
            least ``STARTUP_ALLOWANCE_S``); None: never stuck.
        running: the running sampler (its process is named in the message).
    """

    def __init__(self, progress: Value, timeout: float | None, running: RunningSampler):
        self.progress = progress
        self.timeout = timeout
        self.running = running
        self._seen = progress.value
        self._since = time.monotonic()

    def check(self, *, started: bool) -> None:
        """Raise ``SamplerStuck`` if the counter stood still too long.

        Args:
            started: a batch arrived already (the start-up allowance is over).
        """
        now, value = time.monotonic(), self.progress.value
        if value != self._seen:
            self._seen, self._since = value, now
            return
        limit = self.timeout if started else startup_timeout(self.timeout)
        if limit is None or now - self._since <= limit:
            return
        proc = self.running.proc
        where = "thread" if proc is None else f"process {proc.name}"
        waited = f"made no progress within {limit:g} s (sampler_timeout_s)"
        raise SamplerStuck(f"the sampler {where} {stuck_description(proc, waited)}")
