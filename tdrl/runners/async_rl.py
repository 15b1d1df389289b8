"""Asynchronous runners: sampling and optimisation at the same time.

The sampler (any of tdrl's samplers) runs with its own copy of the agent, either in a
thread of this process (default) or, with ``sampler_process=True``, in a process of its
own, as rlpyt's async samplers do; its loop is ``tdrl.runners.async_sampler``. The calling
thread optimises from the algorithm's replay buffer, into which every batch is appended
(in process mode by a relay thread here, from a double buffer of two shared-memory
batches the sampler process fills in turn). A thread shares the GIL with the optimiser,
so Python env code and the learner's Python take turns; a process does not (its
start-up, importing torch and building the envs, costs a few seconds), and neither
matters for ``CpuSampler``/``GpuSampler`` workers, which step their envs in processes of
their own.

* **Throttle.** Optimisation round ``k`` (``updates_per_optimize`` updates) starts only once
  the sampler has finished iteration ``min_itr_learn + k * delta``, with
  ``delta = batch_size * updates_per_optimize / (sampler batch * replay_ratio)``, so
  ``replay_ratio`` is an upper bound on data reuse (rlpyt's ``AsyncRl``). When the
  optimiser is the slower side, the sampler runs ahead and the ratio falls below it.
* **Weights.** After each round the learner's agent state is published; the sampler
  loads it into its agent before its next batch (and parallel samplers copy it on to their
  workers).
* **Devices.** With ``device`` on a GPU the learner trains there; a sampler thread acts
  with its copy of the agent on the same GPU, a sampler process with a CPU copy (the
  published weights live in shared CPU memory). Batches enter the replay buffer on the CPU.
* **Replay.** Appends (sampler or relay thread) and each draw-and-update (optimiser) hold
  ``algo.replay_lock``, so they interleave at update granularity.
* **Supervision.** A sampler that fails or dies raises here, naming it and how it ended;
  one that makes no progress (``tdrl.runners.async_sampler.ProgressWatch``) for
  ``sampler_timeout_s`` raises ``SamplerStuck``; a sampler process exits by itself once
  this process is gone.
* **Logging.** A row every ``log_interval_steps`` sampled steps, as ``MinibatchRl`` writes,
  plus ``Diagnostics/SamplerIteration`` and ``Diagnostics/OptThrottle`` (seconds the
  optimiser waited for the sampler in the interval). ``AsyncRlEval`` evaluates in the
  sampler's thread or process, with the sampler's agent, at iteration 0 and every log
  point.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import time
from pathlib import Path
from typing import ClassVar

import torch

from tdrl.agents.base import Agent
from tdrl.algos.base import ReplayAlgorithm
from tdrl.logging import ProgressBar
from tdrl.runners.async_process import SharedFlag, start_sampler_process
from tdrl.runners.async_sampler import (
    BatchStored,
    Box,
    LogPoint,
    ProgressWatch,
    PublishedWeights,
    ReplayFeed,
    RunningSampler,
    SamplerControls,
    SamplerEvent,
    SamplerFailed,
    SamplerFinished,
    SamplerJob,
    SamplerStuck,
    start_sampler_thread,
)
from tdrl.runners.base import (
    log_iteration,
    progress_bar,
)
from tdrl.runners.minibatch_rl import check_run_arguments
from tdrl.runners.nonfinite import NonFiniteGuard
from tdrl.runners.startup import start_run
from tdrl.samplers.base import Sampler
from tdrl.utils.checks import check_bool, check_int
from tdrl.utils.device import check_device
from tdrl.utils.processes import STUCK_AFTER_S, Child, ChildFailed, spawn_context
from tdrl.utils.timeouts import check_timeout

#: Seconds the optimiser waits for an event before checking its throttle again.
_EVENT_WAIT_S = 0.05


class AsyncRl:
    """Asynchronous sampling and optimisation, with online statistics.

    For replay-based algorithms (DQN family, DDPG, TD3, SAC).

    Args:
        algo: the algorithm: a ``ReplayAlgorithm`` (on-policy algorithms do not fit: they
            have no buffer to reuse).
        agent: the learner's agent; the sampler acts with a copy.
        sampler: the sampler (any ``Sampler``).
        n_steps: environment steps to train for (rounded up to whole batches).
        seed: seeds torch/NumPy/random and (``seed + 1``) the envs; random when None.
        log_interval_steps: sampled environment steps between log rows (and snapshots).
        log_traj_window: number of recent training episodes the statistics cover.
        progress_bar: show a tqdm bar over the run (None: only on a terminal).
        resume_from: a snapshot file or run directory to continue from (see
            ``MinibatchRl``).
        snapshot_replay: save the replay buffer with every snapshot (see ``MinibatchRl``).
        nonfinite: ``"raise"`` or ``"skip"`` (see ``MinibatchRl``); a non-finite env value
            fails the sampler, which the run reports.
        max_sampler_lead_itrs: how many iterations the sampler may run ahead of the
            optimiser's schedule (None: free-running, as rlpyt; the replay ratio then
            falls below ``replay_ratio`` whenever optimising is the slower side). 1
            pipelines the two: the sampler collects the next batch while the optimiser
            works on the current ones, keeping the replay ratio of a serial run.
        sampler_process: run the sampler in its own (spawned) process instead of a
            thread; the script then needs an ``if __name__ == "__main__":`` guard, and the
            sampler, agent and env factory must be picklable.
        sampler_timeout_s: seconds the sampler (thread or process) may take for one
            batch, or one evaluation of ``AsyncRlEval``, before the run fails with
            ``SamplerStuck`` (while it waits for the optimiser it is not stuck); its
            start-up and first batch get at least 300 s. The default, half an hour, leaves
            room for the slowest real batches and evaluations; None: no limit.
        device: where the learner's agent trains (see ``MinibatchRl``; None: where its
            parameters are). A sampler thread acts with a copy on the same device; a
            sampler process acts with a CPU copy, which loads the weights the learner
            publishes (copied from the device into shared CPU memory) before each batch.
    """

    #: Evaluate offline in the sampler (``AsyncRlEval``) instead of reporting training
    #: episodes.
    offline_eval: ClassVar[bool] = False

    def __init__(
        self,
        algo: ReplayAlgorithm,
        agent: Agent,
        sampler: Sampler,
        *,
        n_steps: int,
        seed: int | None = None,
        log_interval_steps: int = 100_000,
        log_traj_window: int = 100,
        progress_bar: bool | None = None,
        resume_from: str | Path | None = None,
        snapshot_replay: bool = False,
        nonfinite: str = "raise",
        max_sampler_lead_itrs: int | None = None,
        sampler_process: bool = False,
        sampler_timeout_s: float | None = STUCK_AFTER_S,
        device: str | torch.device | None = None,
    ):
        self.settings, self.algo, self.agent, self.sampler = check_run_arguments(
            type(self).__name__, locals(), offline_eval=self.offline_eval
        )
        self.device = check_device("device", device)
        self.guard = NonFiniteGuard(self.settings.nonfinite)
        self.sampler_process = check_bool("sampler_process", sampler_process)
        self.sampler_timeout_s = check_timeout("sampler_timeout_s", sampler_timeout_s)
        self.max_sampler_lead_itrs = (
            None
            if max_sampler_lead_itrs is None
            else check_int("max_sampler_lead_itrs", max_sampler_lead_itrs, minimum=1)
        )
        self.sampler_agent: Agent | None = None  # the thread sampler's copy of the agent
        self.sampler_weights_version = 0  # the publication the sampler's agent held last
        self.weights: PublishedWeights | None = None
        self.sampler_proc: Child | None = None
        self._opt_throttle = 0.0  # seconds the optimiser waited in this log interval

    def train(self) -> dict[str, float]:
        """Run the whole training; returns the last logged row of diagnostics."""
        algo = self.algo
        if not isinstance(algo, ReplayAlgorithm):
            raise TypeError(
                f"{type(self).__name__} needs a replay-based algorithm (a ReplayAlgorithm, "
                f"with a replay buffer to reuse); got {type(algo).__name__}"
            )
        child_sampler = copy.deepcopy(self.sampler) if self.sampler_process else None
        self.plan, self.stats = start_run(
            algo,
            self.agent,
            self.sampler,
            self.settings,
            seed=self.settings.seed,
            runner_name=type(self).__name__,
            device=self.device,
        )
        running: RunningSampler | None = None
        bar: ProgressBar | None = None
        stuck = False
        try:
            if algo.replay_buffer is None:
                raise RuntimeError(f"{type(algo).__name__}.initialize built no replay buffer")
            lock = threading.Lock()
            algo.replay_lock = lock
            feed = ReplayFeed(algo.replay_buffer, lock, self.plan.start_itr)
            first_throttle = max(1.0, float(algo.min_itr_learn) + 1.0)
            if child_sampler is None:
                running = self._start_thread(feed, first_throttle)
            else:
                running = self._start_process(child_sampler, feed, first_throttle)
            bar = progress_bar(self.plan, algo, self.settings.progress_bar)
            watch = ProgressWatch(running.controls.progress, self.sampler_timeout_s, running)
            self._optimize(algo, feed, running.controls, first_throttle, bar, watch)
        except SamplerStuck:
            stuck = True
            raise
        finally:
            if running is not None:
                running.stop(at_once=stuck)
            if bar is not None:
                bar.close()
            self.sampler.shutdown()
            algo.replay_lock = None
        return self.stats.last_row

    # ------------------------------------------------------------------ the optimiser
    def _optimize(
        self,
        algo: ReplayAlgorithm,
        feed: ReplayFeed,
        controls: SamplerControls,
        first_throttle: float,
        bar: ProgressBar,
        watch: ProgressWatch,
    ) -> None:
        """Optimise whenever the throttle allows, until the sampler finished.

        Round ``k`` waits until the sampler finished iteration
        ``first_throttle + k * delta``; a call that made no update (warming up) waits for
        the next batch. While it waits, ``watch`` checks that the sampler still moves.
        """
        delta = (
            algo.batch_size
            * algo.updates_per_optimize
            / (self.plan.itr_batch_size * algo.replay.replay_ratio)
        )
        throttle_itr = first_throttle
        self._opt_throttle = 0.0
        pending: list[SamplerEvent] = []
        children = [self.sampler_proc] if self.sampler_proc is not None else []
        while not self._handle_events(feed, pending, bar):
            pending = []
            if feed.sampler_itr >= throttle_itr:
                itr = feed.sampler_itr - 1
                self.agent.train_mode(itr)
                opt_info = self.guard.optimize(itr, algo, None)
                self.stats.add_opt_info(opt_info)
                if opt_info:
                    controls.weights.publish(self.agent, children)
                    throttle_itr += delta
                else:  # warming up, or no complete n-step window yet
                    throttle_itr = feed.sampler_itr + 1
                controls.throttle.value = throttle_itr
            else:
                t0 = time.perf_counter()
                with contextlib.suppress(queue.Empty):
                    pending.append(feed.events.get(timeout=_EVENT_WAIT_S))
                self._opt_throttle += time.perf_counter() - t0
                if not pending:
                    watch.check(started=feed.sampler_itr > self.plan.start_itr)

    def _handle_events(
        self, feed: ReplayFeed, pending: list[SamplerEvent], bar: ProgressBar
    ) -> bool:
        """Process what the sampler reported; True once it has finished."""
        events = list(pending)
        with contextlib.suppress(queue.Empty):
            while True:
                events.append(feed.events.get_nowait())
        done = False
        for event in events:
            if isinstance(event, SamplerFinished):
                done = True
            elif isinstance(event, SamplerFailed):
                raise RuntimeError(
                    f"the sampler {event.where} failed: {_summary(event.error)}"
                ) from event.error
            elif isinstance(event, BatchStored):
                self.sampler_weights_version = event.weights_version
                self.stats.add_batch(self.plan.itr_batch_size, event.traj_infos)
                bar.update(self.plan.itr_batch_size, Return=self.stats.recent_return())
            else:
                self._log(event, feed)
        return done

    def _log(self, event: LogPoint, feed: ReplayFeed) -> None:
        """Write the row (and snapshot) of a log point, with the sampler's evaluation."""
        if event.eval_traj_infos is not None:
            self.stats.add_eval(event.eval_traj_infos, event.eval_seconds)
        with feed.lock:  # a replay snapshot must not see a half-written batch
            log_iteration(
                event.itr,
                self.stats,
                self.agent,
                self.algo,
                self.settings,
                offline_eval=self.offline_eval,
                eval_only=event.eval_only,
                extra={
                    "Diagnostics/SamplerIteration": feed.sampler_itr,
                    "Diagnostics/OptThrottle": self._opt_throttle,
                    **self.guard.columns(),
                },
            )
        self._opt_throttle = 0.0

    # ------------------------------------------------------------------- the sampler
    def _start_thread(self, feed: ReplayFeed, first_throttle: float) -> RunningSampler:
        """Start the sampler thread, acting with its own copy of the agent."""
        self.weights = PublishedWeights.for_thread(self.agent)
        controls = SamplerControls(
            self.weights,
            throttle=Box(first_throttle),
            stop=threading.Event(),
            lead=self.max_sampler_lead_itrs,
            progress=Box(0),
        )
        self.sampler_agent = copy.deepcopy(self.agent)
        self.sampler.agent = self.sampler_agent  # the sampler acts with its own copy
        job = SamplerJob(self.sampler, self.sampler_agent, controls, self.plan, self.offline_eval)
        return start_sampler_thread(job, feed)

    def _start_process(
        self, sampler: Sampler, feed: ReplayFeed, first_throttle: float
    ) -> RunningSampler:
        """Spawn the sampler process with ``sampler``, an uninitialised copy of ours."""
        ctx = spawn_context()
        example = self.sampler.samples  # the learner's sampler only supplied the specs
        self.sampler.shutdown()
        self.weights = PublishedWeights.for_process(self.agent, ctx)
        controls = SamplerControls(  # shared numbers without locks: see async_process
            self.weights,
            throttle=ctx.Value("d", first_throttle, lock=False),
            stop=SharedFlag(ctx),
            lead=self.max_sampler_lead_itrs,
            progress=ctx.Value("q", 0, lock=False),
        )
        agent = copy.deepcopy(self.agent).cpu()
        running = start_sampler_process(
            ctx,
            SamplerJob(sampler, agent, controls, self.plan, self.offline_eval),
            feed,
            example=example,
            seed=self.settings.seed + 1,
            discount=self.algo.discount,
        )
        self.sampler_proc = running.proc
        return running


def _summary(error: BaseException) -> str:
    """One line about ``error``: a child's name and how it ended, or the exception."""
    if isinstance(error, ChildFailed):
        return error.summary()
    return (f"{type(error).__name__}: {error}".splitlines() or [""])[0]


class AsyncRlEval(AsyncRl):
    """``AsyncRl`` with offline evaluation at iteration 0 and every log point.

    The sampler evaluates, in its thread or process, with its copy of the agent; it needs
    ``eval_n_envs > 0``.
    """

    offline_eval = True
