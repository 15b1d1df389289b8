"""What the runners share: settings, bookkeeping, the log row and snapshots.

A runner connects a ``Sampler``, an ``Agent`` and an ``Algorithm`` in a loop. The three
runners (``MinibatchRl``, ``AsyncRl``, ``SyncRl``) differ in how they drive that loop and
share everything else through the plain pieces of this module:

* ``RunSettings``: the constructor arguments every runner takes, checked once;
* ``RunPlan``: which iterations a session runs, how many steps each counts, when to log
  (``tdrl.runners.startup.start_run`` makes it, with the ``RunStats``, when a run starts:
  seeding, initialising, placing the agent on the run's device, resuming);
* ``RunStats``: counters, the window of recent episodes, the optimiser diagnostics and
  evaluation episodes of the current log interval;
* ``log_iteration``: one ``progress.csv`` row with rlpyt's ``Diagnostics/*`` columns, plus
  the snapshot (``snapshot``, CPU tensors only: ``cpu_state``; ``start_run`` checks it
  against the run and restores it).

A log point is committed in a crash-safe order and resuming repairs ``progress.csv`` to
agree with the snapshot (``tdrl.logging.logger``); what a snapshot records and what
resuming checks is in ``tdrl.logging.snapshot``.

In a run over ``N`` ranks (``SyncRl``) an iteration counts the steps of all ranks and an
update replays ``N`` minibatches: ``RunPlan`` and ``log_iteration`` take ``world_size`` /
``ranks`` for that, so nothing is rescaled in the algorithm or the settings.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from tdrl.agents.base import Agent
from tdrl.algos.base import Algorithm, MetaAlgorithm, ReplayAlgorithm
from tdrl.envs.traj_info import TrajInfo
from tdrl.keys import BatchSpec
from tdrl.logging import ProgressBar, get_logger
from tdrl.logging.snapshot import commit_log_point
from tdrl.samplers.base import Sampler
from tdrl.utils.checks import NonFiniteError, check_bool, check_choice, check_int
from tdrl.utils.finite import nonfinite_parameters
from tdrl.utils.seed import make_seed, rng_state


class Runner(Protocol):
    """What every runner does: train, and return the last logged row."""

    def train(self) -> dict[str, float]:
        """Run the whole training; returns the last logged row of diagnostics."""
        ...


class RunSettings:
    """The arguments every runner takes, checked once (see ``MinibatchRl`` for them).

    Args:
        n_steps: environment steps to train for (all ranks together).
        seed: the base seed; a fresh random one when None.
        log_interval_steps: environment steps between log rows (and snapshots).
        log_traj_window: number of recent training episodes the statistics cover.
        progress_bar: show a tqdm bar (None: only on a terminal).
        resume_from: a snapshot file or run directory to continue from.
        snapshot_replay: save the replay buffer with every snapshot.
        nonfinite: what a NaN or infinite loss or gradient does (``NonFiniteGuard``):
            ``"raise"`` stops the run, ``"skip"`` skips the rest of the iteration's updates
            and counts it in ``Diagnostics/NonFiniteSkips``.
    """

    def __init__(
        self,
        *,
        n_steps: int,
        seed: int | None = None,
        log_interval_steps: int = 100_000,
        log_traj_window: int = 100,
        progress_bar: bool | None = None,
        resume_from: str | Path | None = None,
        snapshot_replay: bool = False,
        nonfinite: str = "raise",
    ):
        self.n_steps = check_int("n_steps", n_steps, minimum=1)
        self.seed = make_seed() if seed is None else check_int("seed", seed, minimum=0)
        self.log_interval_steps = check_int("log_interval_steps", log_interval_steps, minimum=1)
        self.log_traj_window = check_int("log_traj_window", log_traj_window, minimum=1)
        self.progress_bar = (
            None if progress_bar is None else check_bool("progress_bar", progress_bar)
        )
        self.resume_from = resume_from
        self.snapshot_replay = check_bool("snapshot_replay", snapshot_replay)
        self.nonfinite = check_choice("nonfinite", nonfinite, NONFINITE_POLICIES)


#: The ``nonfinite`` settings of a runner (``tdrl.runners.nonfinite.NonFiniteGuard``).
NONFINITE_POLICIES = ("raise", "skip")


def check_finite_agent(itr: int, agent: Agent) -> None:
    """Raise ``NonFiniteError`` if a parameter or buffer of ``agent`` is not finite."""
    named = [*agent.named_parameters(), *agent.named_buffers()]
    bad = nonfinite_parameters((n, t) for n, t in named if t.is_floating_point())
    if bad is not None:
        raise NonFiniteError(
            f"iteration {itr}: {bad} of the agent is not finite; no log row or snapshot of "
            "it was written (the last snapshot on disk is the last good one)"
        )


@dataclass(frozen=True)
class RunPlan:
    """How a run is cut into iterations.

    Attributes:
        batch_spec: the sampler's batch (one rank's).
        start_itr: the first iteration of this session (after a resumed snapshot's).
        n_itr: the number of iterations of the whole run.
        itr_batch_size: env steps one iteration collects, all ranks together.
        log_interval_itrs: iterations between log rows.
    """

    batch_spec: BatchSpec
    start_itr: int
    n_itr: int
    itr_batch_size: int
    log_interval_itrs: int

    def is_log_itr(self, itr: int) -> bool:
        """Whether iteration ``itr`` ends with a log row (every interval, and the last)."""
        return (itr + 1) % self.log_interval_itrs == 0 or itr + 1 == self.n_itr


class RunStats:
    """The counters of a run and what the current log interval collected.

    Args:
        log_traj_window: number of recent training episodes the statistics cover.
        update_counter: the algorithm's update counter at the start.
        cum_steps: env steps so far (restored from a snapshot).
        cum_completed_trajs: completed training episodes so far.
        cum_time: seconds of logged training so far.
        run_info: what the run is (``tdrl.logging.snapshot.run_identity``), kept in its
            snapshots so that a resume can be checked against it.
    """

    def __init__(
        self,
        *,
        log_traj_window: int,
        update_counter: int,
        cum_steps: int = 0,
        cum_completed_trajs: int = 0,
        cum_time: float = 0.0,
        run_info: Mapping[str, Any] | None = None,
    ):
        self.run_info = dict(run_info or {})
        self.cum_steps = cum_steps
        self.cum_completed_trajs = cum_completed_trajs
        self.cum_time = cum_time
        self.cum_eval_time = 0.0
        self.traj_window: deque[TrajInfo] = deque(maxlen=log_traj_window)
        self.new_trajs = 0
        self.opt_infos: dict[str, list[float]] = {}
        self.eval_traj_infos: list[TrajInfo] = []
        self.interval_eval_time = 0.0
        self.last_row: dict[str, float] = {}
        self._last_updates = update_counter
        self._last_steps = cum_steps
        self._t_last = time.perf_counter()

    def add_batch(self, n_steps: int, traj_infos: Sequence[TrajInfo]) -> None:
        """Count one iteration's ``n_steps`` and the episodes completed in it."""
        self.cum_steps += n_steps
        self.cum_completed_trajs += len(traj_infos)
        self.traj_window.extend(traj_infos)
        self.new_trajs += len(traj_infos)

    def add_opt_info(self, opt_info: Mapping[str, list[float]]) -> None:
        """Keep an optimisation round's diagnostics until the next row."""
        for key, values in opt_info.items():
            self.opt_infos.setdefault(key, []).extend(values)

    def add_eval(self, traj_infos: list[TrajInfo], seconds: float) -> None:
        """Keep an evaluation's episodes for the next row; its time is not training time."""
        self.eval_traj_infos = traj_infos
        self.cum_eval_time += seconds
        self.interval_eval_time += seconds
        if not traj_infos:
            get_logger().log("evaluation completed no episode: raise eval_max_steps")

    def recent_return(self) -> float:
        """Mean return of the latest evaluation, else of the training episode window."""
        infos = self.eval_traj_infos or self.traj_window
        return float(np.mean([t.Return for t in infos])) if infos else float("nan")

    def write_row(
        self,
        itr: int,
        *,
        update_counter: int,
        samples_per_update: int,
        offline_eval: bool,
        extra: Mapping[str, float],
        dump: bool = True,
    ) -> dict[str, float]:
        """Record and dump one ``progress.csv`` row (rlpyt's column names); returns it.

        Args:
            itr: the iteration just finished.
            update_counter: the algorithm's updates so far.
            samples_per_update: samples one update replays, all ranks together.
            offline_eval: trajectory columns from the evaluation episodes (else from the
                window of training episodes).
            extra: runner-specific ``Diagnostics/*`` columns, recorded first.
            dump: write the row now; False leaves it recorded in the logger, for the caller
                to dump (``log_iteration`` saves the snapshot in between).
        """
        logger = get_logger()
        new_time = time.perf_counter() - self._t_last
        self.cum_time += new_time
        new_updates = update_counter - self._last_updates
        new_steps = self.cum_steps - self._last_steps
        train_time = max(1e-9, new_time - self.interval_eval_time)
        self.interval_eval_time = 0.0
        for key, value in extra.items():
            logger.record_tabular(key, value)
        row: dict[str, float] = {
            "Diagnostics/Iteration": itr,
            "Diagnostics/CumTime (s)": self.cum_time,
            "Diagnostics/CumSteps": self.cum_steps,
            "Diagnostics/CumCompletedTrajs": self.cum_completed_trajs,
            "Diagnostics/CumUpdates": update_counter,
            "Diagnostics/StepsPerSecond": new_steps / train_time,
            "Diagnostics/UpdatesPerSecond": new_updates / train_time,
            "Diagnostics/ReplayRatio": new_updates * samples_per_update / max(1, new_steps),
            "Diagnostics/CumReplayRatio": update_counter
            * samples_per_update
            / max(1, self.cum_steps),
        }
        traj_infos: Sequence[TrajInfo]
        if offline_eval:
            row["Diagnostics/CumTrainTime"] = self.cum_time - self.cum_eval_time
            row["Diagnostics/CumEvalTime"] = self.cum_eval_time
            row["Diagnostics/StepsInEval"] = sum(t.Length for t in self.eval_traj_infos)
            row["Diagnostics/TrajsInEval"] = len(self.eval_traj_infos)
            traj_infos = self.eval_traj_infos
        else:
            row["Diagnostics/NewCompletedTrajs"] = self.new_trajs
            row["Diagnostics/StepsInTrajWindow"] = sum(t.Length for t in self.traj_window)
            traj_infos = list(self.traj_window)
        for key, value in row.items():
            logger.record_tabular(key, value)
        fields = traj_infos[0].fields().keys() if traj_infos else TrajInfo().fields().keys()
        for name in fields:
            values = [t.fields()[name] for t in traj_infos]
            logger.record_tabular_misc_stat(name, values)
            row[f"{name}Average"] = float(np.mean(values)) if values else float("nan")
        for key, values in self.opt_infos.items():
            logger.record_tabular_misc_stat(key, values)
            row[f"{key}Average"] = float(np.mean(values)) if values else float("nan")
        if dump:
            logger.dump_tabular()
        self.last_row = {**extra, **row}
        return self.last_row

    def end_interval(self, update_counter: int) -> None:
        """Start the next log interval (after the row and its snapshot were written)."""
        self.opt_infos = {}
        self.new_trajs = 0
        self._last_updates = update_counter
        self._last_steps = self.cum_steps
        self._t_last = time.perf_counter()


def progress_bar(plan: RunPlan, algo: Algorithm, show: bool | None) -> ProgressBar:
    """A bar over the run's env steps, advanced to where this session starts."""
    bar = ProgressBar(
        plan.n_itr * plan.itr_batch_size,
        desc=type(algo).__name__,
        disable=None if show is None else not show,
    )
    bar.update(plan.start_itr * plan.itr_batch_size)
    return bar


def check_offline_eval(runner_name: str, sampler: Sampler) -> None:
    """Raise unless ``sampler`` has evaluation envs (the ``*Eval`` runners need them)."""
    if not sampler.eval_n_envs:
        raise ValueError(f"{runner_name} needs a sampler built with eval_n_envs > 0")


def evaluate(sampler: Sampler, itr: int) -> tuple[list[TrajInfo], float]:
    """The sampler's evaluation episodes and the seconds they took."""
    t0 = time.perf_counter()
    traj_infos = sampler.evaluate_agent(itr)
    return traj_infos, time.perf_counter() - t0


# ------------------------------------------------------------------------ log and snapshot
def log_iteration(
    itr: int,
    stats: RunStats,
    agent: Agent,
    algo: Algorithm,
    settings: RunSettings,
    *,
    offline_eval: bool,
    eval_only: bool = False,
    ranks: int = 1,
    extra: Mapping[str, float] | None = None,
) -> None:
    """Write the row of ``itr`` and its snapshot (``commit_log_point``'s crash-safe order).

    Args:
        itr: the iteration just finished.
        stats: the run's statistics (its interval restarts here).
        agent: the agent, for the snapshot.
        algo: the algorithm (update counter, minibatch size, state, replay buffer).
        settings: the runner's settings (``snapshot_replay``).
        offline_eval: trajectory columns from the evaluation episodes.
        eval_only: the row of the evaluation before training (no snapshot).
        ranks: ranks replaying a minibatch per update (``ReplayRatio`` counts them all).
        extra: runner-specific ``Diagnostics/*`` columns.
    """
    if not eval_only:  # a NaN never reaches a log row or a snapshot
        check_finite_agent(itr, agent)
    stats.write_row(
        itr,
        update_counter=algo.update_counter,
        samples_per_update=algo.batch_size * ranks,
        offline_eval=offline_eval,
        extra=extra or {},
        dump=False,
    )
    replay = algo.replay_buffer if isinstance(algo, ReplayAlgorithm) else None

    def make_snapshot(progress: dict[str, Any]) -> dict[str, Any]:
        return snapshot(itr, stats, agent, algo, progress=progress)

    commit_log_point(
        itr, None if eval_only else make_snapshot, replay if settings.snapshot_replay else None
    )
    stats.end_interval(algo.update_counter)


def snapshot(
    itr: int,
    stats: RunStats,
    agent: Agent,
    algo: Algorithm | MetaAlgorithm,
    *,
    progress: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A snapshot, plain data on the CPU (``tdrl.logging.snapshot``): resumes at ``itr + 1``.

    ``progress`` is ``{"rows": n, "row": {...}}`` of ``progress.csv``.
    """
    return {
        "itr": itr,
        "cum_steps": stats.cum_steps,
        "cum_completed_trajs": stats.cum_completed_trajs,
        "cum_time": stats.cum_time,
        "agent_state_dict": cpu_state(agent.state_dict()),
        "algo_state_dict": cpu_state(algo.state_dict()),
        "rng": rng_state(),
        "run": dict(stats.run_info),
        "progress": dict(progress) if progress is not None else None,
    }


def cpu_state(state: Any) -> Any:
    """``state`` with every tensor in it on the CPU (through nested dicts, lists, tuples).

    What holds CPU tensors only is returned as it is (no copy: a CPU run's snapshot costs
    nothing more); a dict with a tensor to move is copied with its type and attributes (a
    ``state_dict``'s ``_metadata``). Saving a GPU tensor would copy it to the CPU anyway.
    """
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        moved = {k: cpu_state(v) for k, v in state.items()}
        if all(moved[k] is v for k, v in state.items()):
            return state
        out = copy.copy(state)
        out.update(moved)
        return out
    if isinstance(state, list) or type(state) is tuple:
        items = [cpu_state(v) for v in state]
        if all(a is b for a, b in zip(items, state, strict=True)):
            return state
        return type(state)(items)
    return state
