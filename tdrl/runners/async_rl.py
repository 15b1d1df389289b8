"""Asynchronous runners: sampling and optimisation at the same time.

A sampler thread drives the sampler (any of tdrl's samplers) with its own copy of the
agent and appends every batch to the algorithm's replay buffer; the calling thread
optimises from that buffer. With ``CpuSampler``/``GpuSampler`` the envs step in worker
processes and the sampler thread mostly waits on them, so env stepping and gradient updates
use different cores; with ``SerialSampler`` both share this process (torch kernels release
the GIL, Python env code does not).

* **Throttle.** Optimisation round ``k`` (``updates_per_optimize`` updates) starts only once
  the sampler has finished iteration ``min_itr_learn + k * delta``, with
  ``delta = batch_size * updates_per_optimize / (sampler batch * replay_ratio)``, so
  ``replay_ratio`` is an upper bound on data reuse (rlpyt's ``AsyncRl``). When the
  optimiser is the slower side, the sampler runs ahead and the ratio falls below it.
* **Weights.** After each round the learner's agent state is published; the sampler thread
  loads it into its agent before its next batch (and parallel samplers copy it on to their
  workers).
* **Replay.** Appends (sampler thread) and each draw-and-update (optimiser) hold
  ``algo.replay_lock``, so they interleave at update granularity.
* **Logging.** A row every ``log_interval_steps`` sampled steps, as ``MinibatchRl`` writes,
  plus ``Diagnostics/SamplerIteration`` and ``Diagnostics/OptThrottle`` (seconds the
  optimiser waited for the sampler in the interval). ``AsyncRlEval`` evaluates in the
  sampler thread, with the sampler's agent, at iteration 0 and every log point.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import time
from typing import Any

import torch

from tdrl.logging import ProgressBar, get_logger
from tdrl.runners.minibatch_rl import MinibatchRl

_DONE = object()


class AsyncRl(MinibatchRl):
    """Asynchronous sampling and optimisation for replay-based algorithms (DQN family,
    DDPG, TD3, SAC), with online statistics.

    Args:
        *args: ``MinibatchRl``'s arguments (``resume_from`` and ``snapshot_replay`` work
            as there).
        max_sampler_lead_itrs: how many iterations the sampler may run ahead of the
            optimiser's schedule (None: free-running, as rlpyt; the replay ratio then
            falls below ``replay_ratio`` whenever optimising is the slower side). 1
            pipelines the two: the sampler collects the next batch while the optimiser
            works on the current ones, keeping the replay ratio of a serial run.
        **kwargs: ``MinibatchRl``'s keyword arguments.

    The algorithm needs ``replay_buffer``, ``update``, ``updates_per_optimize``,
    ``min_itr_learn``, ``batch_size`` and ``replay_ratio`` (on-policy algorithms do not
    fit: they have no buffer to reuse).
    """

    def __init__(self, *args: Any, max_sampler_lead_itrs: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if max_sampler_lead_itrs is not None and (
            isinstance(max_sampler_lead_itrs, bool)
            or not isinstance(max_sampler_lead_itrs, int)
            or max_sampler_lead_itrs < 1
        ):
            raise ValueError(
                f"max_sampler_lead_itrs must be an int >= 1 or None, got {max_sampler_lead_itrs!r}"
            )
        self.max_sampler_lead_itrs = max_sampler_lead_itrs

    def train(self) -> dict[str, float]:
        """Run the whole training; returns the last logged row of diagnostics."""
        n_itr = self.startup()
        for attr in ("replay_buffer", "update", "updates_per_optimize", "replay_ratio"):
            if not hasattr(self.algo, attr):
                raise TypeError(
                    f"{type(self).__name__} needs a replay-based algorithm (with {attr!r}); "
                    f"got {type(self.algo).__name__}"
                )
        algo = self.algo
        algo.replay_lock = threading.Lock()
        self._weights_lock = threading.Lock()
        self._published = self._clone_state()
        self._version = 0  # publications so far
        self.sampler_weights_version = 0  # the publication the sampler's agent holds
        self._events: queue.Queue = queue.Queue()
        self._pending: list[tuple] = []
        self._stop = threading.Event()
        self.sampler_agent = copy.deepcopy(self.agent)
        self.sampler.agent = self.sampler_agent  # the sampler acts with its own copy
        sampler_bs = self.itr_batch_size
        delta = algo.batch_size * algo.updates_per_optimize / (sampler_bs * algo.replay_ratio)
        self._throttle_itr = max(1.0, float(algo.min_itr_learn) + 1.0)
        self._sampler_itr = self.start_itr  # iterations the sampler has completed
        self._opt_throttle = 0.0
        thread = threading.Thread(
            target=self._sample_loop, args=(n_itr,), name="tdrl-async-sampler", daemon=True
        )
        bar = ProgressBar(
            n_itr * sampler_bs,
            desc=type(algo).__name__,
            disable=None if self.progress_bar is None else not self.progress_bar,
        )
        bar.update(self.start_itr * sampler_bs)
        sampler_done = False
        try:
            thread.start()
            while True:
                sampler_done = self._handle_events(bar) or sampler_done
                if sampler_done:
                    break
                if self._sampler_itr >= self._throttle_itr:
                    itr = self._sampler_itr - 1
                    self.agent.train_mode(itr)
                    opt_info = algo.optimize_agent(itr, None)
                    for key, values in opt_info.items():
                        self._opt_infos.setdefault(key, []).extend(values)
                    if opt_info:
                        self._publish()
                        self._throttle_itr += delta
                    else:  # warming up, or no complete n-step window yet
                        self._throttle_itr = self._sampler_itr + 1
                else:
                    t0 = time.perf_counter()
                    self._wait_for_event(0.05)
                    self._opt_throttle += time.perf_counter() - t0
        finally:
            self._stop.set()
            thread.join(timeout=60)
            bar.close()
            self.shutdown()
            algo.replay_lock = None
        return self.last_row

    # ---------------------------------------------------------------- sampler thread
    def _sample_loop(self, n_itr: int) -> None:
        """Runs in the sampler thread: batches into the replay buffer, events to the
        optimiser thread."""
        try:
            agent, algo, version = self.sampler_agent, self.algo, -1
            if self._eval and self.start_itr == 0:
                self._events.put(("log", 0, self._evaluate_in_thread(0), True))
            lead = self.max_sampler_lead_itrs
            for itr in range(self.start_itr, n_itr):
                while lead is not None and itr >= self._throttle_itr + lead:
                    if self._stop.is_set():
                        return
                    time.sleep(0.0005)  # the optimiser is behind: wait for it
                if self._stop.is_set():
                    return
                if self._version != version:
                    with self._weights_lock:
                        agent.load_state_dict(self._published)
                        version = self.sampler_weights_version = self._version
                agent.sample_mode(itr)
                samples, traj_infos = self.sampler.obtain_samples(itr)
                with algo.replay_lock:
                    algo.replay_buffer.append_samples(samples)
                self._sampler_itr = itr + 1
                self._events.put(("batch", itr, traj_infos))
                if (itr + 1) % self.log_interval_itrs == 0 or itr + 1 == n_itr:
                    eval_info = self._evaluate_in_thread(itr) if self._eval else None
                    self._events.put(("log", itr, eval_info, False))
            self._events.put((_DONE,))
        except BaseException as e:  # surfaced in the optimiser thread
            self._events.put(("error", e))

    def _evaluate_in_thread(self, itr: int) -> tuple[list, float]:
        t0 = time.perf_counter()
        traj_infos = self.sampler.evaluate_agent(itr)
        return traj_infos, time.perf_counter() - t0

    # ---------------------------------------------------------------- optimiser thread
    def _clone_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.agent.state_dict().items()}

    def _publish(self) -> None:
        """Make the learner's current weights the sampler's next ones."""
        state = self.agent.state_dict()
        with self._weights_lock, torch.no_grad():
            for key, value in state.items():
                self._published[key].copy_(value)
            self._version += 1

    def _wait_for_event(self, timeout: float) -> None:
        with contextlib.suppress(queue.Empty):
            self._pending.append(self._events.get(timeout=timeout))

    def _handle_events(self, bar: ProgressBar) -> bool:
        """Process what the sampler thread reported; True once it has finished."""
        pending, self._pending = self._pending, []
        while True:
            try:
                pending.append(self._events.get_nowait())
            except queue.Empty:
                break
        done = False
        for event in pending:
            kind = event[0]
            if kind is _DONE:
                done = True
            elif kind == "error":
                raise RuntimeError("the sampler thread failed") from event[1]
            elif kind == "batch":
                _, itr, traj_infos = event
                self.store_diagnostics(itr, traj_infos, {})
                bar.update(self.itr_batch_size, Return=self._recent_return())
            elif kind == "log":
                _, itr, eval_info, eval_only = event
                if eval_info is not None:
                    self._eval_traj_infos, eval_time = eval_info
                    self.cum_eval_time += eval_time
                    self._interval_eval_time += eval_time
                self._log_async(itr, eval_only)
        return done

    def _log_async(self, itr: int, eval_only: bool) -> None:
        logger = get_logger()
        logger.record_tabular("Diagnostics/SamplerIteration", self._sampler_itr)
        logger.record_tabular("Diagnostics/OptThrottle", self._opt_throttle)
        with self.algo.replay_lock:  # a replay snapshot must not see a half-written batch
            self.log_diagnostics(itr, eval_only=eval_only)
        self.last_row["Diagnostics/SamplerIteration"] = self._sampler_itr
        self.last_row["Diagnostics/OptThrottle"] = self._opt_throttle
        self._opt_throttle = 0.0


class AsyncRlEval(AsyncRl):
    """``AsyncRl`` with offline evaluation (in the sampler thread, with the sampler's copy
    of the agent) at iteration 0 and every log point."""

    _eval = True

    def startup(self) -> int:
        if not getattr(self.sampler, "eval_n_envs", 0):
            raise ValueError("AsyncRlEval needs a sampler built with eval_n_envs > 0")
        return super().startup()
