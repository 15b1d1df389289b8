"""Asynchronous runners: sampling and optimisation at the same time.

The sampler (any of tdrl's samplers) runs with its own copy of the agent, either in a
thread of this process (default) or, with ``sampler_process=True``, in a process of its
own, as rlpyt's async samplers do. The calling thread optimises from the algorithm's replay
buffer, into which every batch is appended (in process mode by a relay thread here, from a
double buffer of two shared-memory batches the sampler process fills in turn). A thread
shares the GIL with the optimiser, so Python env code and the learner's Python take turns;
a process does not (its start-up, importing torch and building the envs, costs a few
seconds), and neither matters for ``CpuSampler``/``GpuSampler`` workers, which step their
envs in processes of their own.

* **Throttle.** Optimisation round ``k`` (``updates_per_optimize`` updates) starts only once
  the sampler has finished iteration ``min_itr_learn + k * delta``, with
  ``delta = batch_size * updates_per_optimize / (sampler batch * replay_ratio)``, so
  ``replay_ratio`` is an upper bound on data reuse (rlpyt's ``AsyncRl``). When the
  optimiser is the slower side, the sampler runs ahead and the ratio falls below it.
* **Weights.** After each round the learner's agent state is published; the sampler
  loads it into its agent before its next batch (and parallel samplers copy it on to their
  workers).
* **Replay.** Appends (sampler or relay thread) and each draw-and-update (optimiser) hold
  ``algo.replay_lock``, so they interleave at update granularity.
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
import traceback
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
        sampler_process: run the sampler in its own (spawned) process instead of a
            thread; the script then needs an ``if __name__ == "__main__":`` guard, and the
            sampler, agent and env factory must be picklable.
        **kwargs: ``MinibatchRl``'s keyword arguments.

    The algorithm needs ``replay_buffer``, ``update``, ``updates_per_optimize``,
    ``min_itr_learn``, ``batch_size`` and ``replay_ratio`` (on-policy algorithms do not
    fit: they have no buffer to reuse).
    """

    def __init__(
        self,
        *args: Any,
        max_sampler_lead_itrs: int | None = None,
        sampler_process: bool = False,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        if not isinstance(sampler_process, bool):
            raise TypeError(f"sampler_process must be a bool, got {sampler_process!r}")
        self.sampler_process = sampler_process
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
        child_sampler = copy.deepcopy(self.sampler) if self.sampler_process else None
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
        self._version = 0  # publications so far
        self.sampler_weights_version = 0  # the publication the sampler's agent holds
        self._events: queue.Queue = queue.Queue()
        self._pending: list[tuple] = []
        self._stop = threading.Event()
        sampler_bs = self.itr_batch_size
        delta = algo.batch_size * algo.updates_per_optimize / (sampler_bs * algo.replay_ratio)
        self._throttle_itr = max(1.0, float(algo.min_itr_learn) + 1.0)
        self._sampler_itr = self.start_itr  # iterations whose batch is in the replay buffer
        self._opt_throttle = 0.0
        self._proc = None
        if self.sampler_process:
            thread = self._start_sampler_process(child_sampler, n_itr)
        else:
            self._published = self._clone_state()
            self.sampler_agent = copy.deepcopy(self.agent)
            self.sampler.agent = self.sampler_agent  # the sampler acts with its own copy
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
                        self._set_throttle(self._throttle_itr + delta)
                    else:  # warming up, or no complete n-step window yet
                        self._set_throttle(self._sampler_itr + 1)
                else:
                    t0 = time.perf_counter()
                    self._wait_for_event(0.05)
                    self._opt_throttle += time.perf_counter() - t0
        finally:
            self._stop.set()
            if self._proc is not None:
                self._stop_sampler_process()
            thread.join(timeout=60)
            bar.close()
            self.shutdown()
            algo.replay_lock = None
        return self.last_row

    def _set_throttle(self, value: float) -> None:
        self._throttle_itr = value
        if self._proc is not None:
            self._mp_throttle.value = value

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

    # ---------------------------------------------------------------- sampler process
    def _start_sampler_process(self, sampler: Any, n_itr: int) -> threading.Thread:
        """Spawn the sampler process; return the (not yet started) relay thread."""
        ctx = torch.multiprocessing.get_context("spawn")
        example = self.sampler.samples  # the learner's sampler only supplied the specs
        self.sampler.shutdown()
        self._double = [example.clone().zero_().share_memory_() for _ in range(2)]
        shared_agent = copy.deepcopy(self.agent).cpu().share_memory()
        self._published = shared_agent.state_dict()
        self._mp_weights_lock = ctx.Lock()
        self._mp_version = ctx.Value("q", 0)
        self._mp_throttle = ctx.Value("d", self._throttle_itr)
        self._mp_stop = ctx.Event()
        self._mp_events = ctx.Queue()
        self._slot_free = [ctx.Semaphore(1) for _ in range(2)]
        self._proc = ctx.Process(
            target=_sampler_process_main,
            kwargs={
                "sampler": sampler,
                "agent": copy.deepcopy(self.agent).cpu(),
                "shared_agent": shared_agent,
                "weights_lock": self._mp_weights_lock,
                "version": self._mp_version,
                "double": self._double,
                "slot_free": self._slot_free,
                "events": self._mp_events,
                "stop": self._mp_stop,
                "throttle": self._mp_throttle,
                "lead": self.max_sampler_lead_itrs,
                "seed": self.seed + 1,
                "discount": self.algo.discount,
                "start_itr": self.start_itr,
                "n_itr": n_itr,
                "log_interval_itrs": self.log_interval_itrs,
                "evaluate": self._eval,
            },
            name="tdrl-async-sampler",
        )
        self._proc.start()
        return threading.Thread(target=self._relay_loop, name="tdrl-async-relay", daemon=True)

    def _relay_loop(self) -> None:
        """In this process: append the sampler process's batches to the replay buffer and
        pass its reports on to the optimiser loop."""
        try:
            while True:
                try:
                    event = self._mp_events.get(timeout=0.5)
                except queue.Empty:
                    if self._stop.is_set():
                        return
                    if not self._proc.is_alive():
                        code = self._proc.exitcode
                        raise RuntimeError(f"the sampler process died (exit code {code})") from None
                    continue
                kind = event[0]
                if kind == "batch":
                    _, itr, slot, traj_infos, version = event
                    with self.algo.replay_lock:
                        self.algo.replay_buffer.append_samples(self._double[slot])
                    self._slot_free[slot].release()
                    self.sampler_weights_version = version
                    self._sampler_itr = itr + 1
                    self._events.put(("batch", itr, traj_infos))
                elif kind == "log":
                    self._events.put(event)
                elif kind == "done":
                    self._events.put((_DONE,))
                    return
                else:  # "error": the sampler process's traceback
                    raise RuntimeError(f"in the sampler process:\n{event[1]}")
        except BaseException as e:
            self._events.put(("error", e))

    def _stop_sampler_process(self, timeout: float = 10.0) -> None:
        self._mp_stop.set()
        for sem in self._slot_free:
            sem.release()  # a sampler waiting for a free slot wakes up and sees the stop
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(2.0)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()

    # ---------------------------------------------------------------- optimiser thread
    def _clone_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.agent.state_dict().items()}

    def _publish(self) -> None:
        """Make the learner's current weights the sampler's next ones."""
        state = self.agent.state_dict()
        lock = self._mp_weights_lock if self._proc is not None else self._weights_lock
        with lock, torch.no_grad():
            for key, value in state.items():
                self._published[key].copy_(value)
            self._version += 1
            if self._proc is not None:
                self._mp_version.value = self._version

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
                where = "process" if self._proc is not None else "thread"
                raise RuntimeError(f"the sampler {where} failed") from event[1]
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
    """``AsyncRl`` with offline evaluation (by the sampler, in its thread or process, with
    its copy of the agent) at iteration 0 and every log point."""

    _eval = True

    def startup(self) -> int:
        if not getattr(self.sampler, "eval_n_envs", 0):
            raise ValueError("AsyncRlEval needs a sampler built with eval_n_envs > 0")
        return super().startup()


def _sampler_process_main(
    *,
    sampler: Any,
    agent: Any,
    shared_agent: Any,
    weights_lock: Any,
    version: Any,
    double: list[Any],
    slot_free: list[Any],
    events: Any,
    stop: Any,
    throttle: Any,
    lead: int | None,
    seed: int,
    discount: float,
    start_itr: int,
    n_itr: int,
    log_interval_itrs: int,
    evaluate: bool,
) -> None:
    """The sampler process: collect batches into the two shared slots in turn, loading the
    learner's newest weights before each; report batches, evaluations, the end or an error
    through ``events``."""
    try:
        torch.set_num_threads(1)
        sampler.initialize(agent, seed=seed, traj_info_kwargs={"discount": discount})

        def run_eval(itr: int) -> tuple[list, float]:
            t0 = time.perf_counter()
            traj_infos = sampler.evaluate_agent(itr)
            return traj_infos, time.perf_counter() - t0

        local_version = -1
        if evaluate and start_itr == 0:
            agent.load_state_dict(shared_agent.state_dict())
            events.put(("log", 0, run_eval(0), True))
        for itr in range(start_itr, n_itr):
            while lead is not None and itr >= throttle.value + lead:
                if stop.is_set():
                    return
                time.sleep(0.0005)  # the optimiser is behind: wait for it
            if stop.is_set():
                return
            if version.value != local_version:
                with weights_lock:
                    agent.load_state_dict(shared_agent.state_dict())
                    local_version = version.value
            agent.sample_mode(itr)
            samples, traj_infos = sampler.obtain_samples(itr)
            slot = itr % 2
            while not slot_free[slot].acquire(timeout=0.5):  # the relay still copies it
                if stop.is_set():
                    return
            if stop.is_set():
                return
            double[slot].copy_(samples)
            events.put(("batch", itr, slot, traj_infos, local_version))
            if (itr + 1) % log_interval_itrs == 0 or itr + 1 == n_itr:
                events.put(("log", itr, run_eval(itr) if evaluate else None, False))
        events.put(("done",))
    except KeyboardInterrupt:
        pass
    except BaseException:
        events.put(("error", traceback.format_exc()))
    finally:
        sampler.shutdown()
