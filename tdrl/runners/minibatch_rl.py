"""Serial runners: sample a batch, optimise on it, log; repeat.

``MinibatchRl`` reports online performance (the last ``log_traj_window`` training
episodes); ``MinibatchRlEval`` runs offline evaluation in separate envs at every log
point. Both log rlpyt's ``Diagnostics/*`` columns through the active
``tdrl.logging.logger_context`` and snapshot the agent and optimizer state there.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdrl.agents.base import Agent
from tdrl.algos.base import Algorithm
from tdrl.envs.traj_info import TrajInfo
from tdrl.logging import ProgressBar, get_logger, load_snapshot
from tdrl.utils.seed import make_seed, set_seed


class MinibatchRl:
    """Serial training loop with online statistics.

    Args:
        algo: the algorithm.
        agent: the agent.
        sampler: the sampler (``SerialSampler`` or any with its interface).
        n_steps: environment steps to train for (rounded up to whole batches).
        seed: seeds torch/NumPy/random and (``seed + 1``) the envs; random when None.
        log_interval_steps: environment steps between log rows (and snapshots).
        log_traj_window: number of recent training episodes the statistics cover.
        progress_bar: show a tqdm bar over the run (None: only on a terminal).
        resume_from: a snapshot file or run directory to continue from: agent and
            optimizer state, iteration and counters are restored (and the replay buffer
            when one was saved there); envs start fresh.
        snapshot_replay: with every snapshot, also save the algorithm's replay buffer
            (contents, cursor, priorities) to ``run_dir/replay`` so that a resumed
            off-policy run does not start from an empty buffer. Off by default: a large
            buffer takes long to write.
    """

    _eval = False

    def __init__(
        self,
        algo: Algorithm,
        agent: Agent,
        sampler: Any,
        *,
        n_steps: int,
        seed: int | None = None,
        log_interval_steps: int = 100_000,
        log_traj_window: int = 100,
        progress_bar: bool | None = None,
        resume_from: str | Path | None = None,
        snapshot_replay: bool = False,
    ):
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, float)) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive number of env steps, got {n_steps!r}")
        if (
            isinstance(log_interval_steps, bool)
            or not isinstance(log_interval_steps, (int, float))
            or log_interval_steps < 1
        ):
            raise ValueError(f"log_interval_steps must be >= 1, got {log_interval_steps!r}")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        self.algo = algo
        self.agent = agent
        self.sampler = sampler
        self.n_steps = int(n_steps)
        self.seed = make_seed() if seed is None else seed
        self.log_interval_steps = int(log_interval_steps)
        self.log_traj_window = int(log_traj_window)
        self.progress_bar = progress_bar
        self.resume_from = resume_from
        self.snapshot_replay = bool(snapshot_replay)

    # ------------------------------------------------------------------------- the loop
    def train(self) -> dict[str, float]:
        """Run the whole training; returns the last logged row of diagnostics."""
        n_itr = self.startup()
        bar = ProgressBar(
            n_itr * self.itr_batch_size,
            desc=type(self.algo).__name__,
            disable=None if self.progress_bar is None else not self.progress_bar,
        )
        bar.update(self.start_itr * self.itr_batch_size)
        try:
            if self._eval and self.start_itr == 0:
                self.evaluate(0)
                self.log_diagnostics(0, eval_only=True)
            for itr in range(self.start_itr, n_itr):
                self.agent.sample_mode(itr)
                samples, traj_infos = self.sampler.obtain_samples(itr)
                self.agent.train_mode(itr)
                opt_info = self.algo.optimize_agent(itr, samples)
                self.store_diagnostics(itr, traj_infos, opt_info)
                bar.update(self.itr_batch_size, Return=self._recent_return())
                if (itr + 1) % self.log_interval_itrs == 0 or itr + 1 == n_itr:
                    if self._eval:
                        self.evaluate(itr)
                    self.log_diagnostics(itr)
        finally:
            bar.close()
            self.shutdown()
        return self.last_row

    # ------------------------------------------------------------------------- set-up
    def startup(self) -> int:
        """Seed, initialise sampler/agent/algorithm, restore a snapshot; returns n_itr."""
        set_seed(self.seed)
        self.sampler.initialize(
            self.agent, seed=self.seed + 1, traj_info_kwargs={"discount": self.algo.discount}
        )
        batch_spec = self.sampler.batch_spec
        self.itr_batch_size = batch_spec.size
        self.log_interval_itrs = max(1, self.log_interval_steps // self.itr_batch_size)
        n_itr = math.ceil(self.n_steps / self.itr_batch_size)
        self.n_itr = n_itr
        self.algo.initialize(self.agent, n_itr=n_itr, batch_spec=batch_spec)
        self.start_itr = 0
        self.cum_steps = 0
        self.cum_completed_trajs = 0
        self.cum_time = 0.0
        self.cum_eval_time = 0.0
        if self.resume_from is not None:
            self._restore(load_snapshot(self.resume_from))
            replay_dir = Path(self.resume_from) / "replay"
            replay = getattr(self.algo, "replay_buffer", None)
            if replay is not None and (replay_dir / "replay_state.pt").exists():
                replay.load(replay_dir)
                get_logger().log(f"replay buffer restored from {replay_dir} ({len(replay)})")
        self._traj_window: deque[TrajInfo] = deque(maxlen=self.log_traj_window)
        self._new_trajs = 0
        self._opt_infos: dict[str, list[float]] = {}
        self._eval_traj_infos: list[TrajInfo] = []
        self._interval_eval_time = 0.0
        self._last_updates = self.algo.update_counter
        self._last_steps = self.cum_steps
        self._t_start = self._t_last = time.perf_counter()
        self.last_row: dict[str, float] = {}
        logger = get_logger()
        logger.log(
            f"{type(self).__name__}: {type(self.algo).__name__}, {n_itr} iterations of "
            f"{self.itr_batch_size} steps, logging every {self.log_interval_itrs}, seed {self.seed}"
        )
        return n_itr

    def shutdown(self) -> None:
        self.sampler.shutdown()

    # ------------------------------------------------------------------ bookkeeping
    def store_diagnostics(
        self, itr: int, traj_infos: Sequence[TrajInfo], opt_info: dict[str, list[float]]
    ) -> None:
        self.cum_steps += self.itr_batch_size
        self.cum_completed_trajs += len(traj_infos)
        self._traj_window.extend(traj_infos)
        self._new_trajs += len(traj_infos)
        for key, values in opt_info.items():
            self._opt_infos.setdefault(key, []).extend(values)

    def evaluate(self, itr: int) -> None:
        t0 = time.perf_counter()
        self._eval_traj_infos = self.sampler.evaluate_agent(itr)
        eval_time = time.perf_counter() - t0
        self.cum_eval_time += eval_time
        self._interval_eval_time += eval_time
        if not self._eval_traj_infos:
            get_logger().log("evaluation completed no episode: raise eval_max_steps")

    def _recent_return(self) -> float:
        infos = self._eval_traj_infos if self._eval and self._eval_traj_infos else self._traj_window
        return float(np.mean([t.Return for t in infos])) if infos else float("nan")

    def log_diagnostics(self, itr: int, *, eval_only: bool = False) -> None:
        """Record one ``progress.csv`` row and snapshot (rlpyt's column names)."""
        logger = get_logger()
        now = time.perf_counter()
        new_time = now - self._t_last
        self.cum_time += new_time
        new_updates = self.algo.update_counter - self._last_updates
        new_steps = self.cum_steps - self._last_steps
        train_time = max(1e-9, new_time - self._interval_eval_time)
        self._interval_eval_time = 0.0
        batch_size = getattr(self.algo, "batch_size", self.itr_batch_size)
        row: dict[str, float] = {
            "Diagnostics/Iteration": itr,
            "Diagnostics/CumTime (s)": self.cum_time,
            "Diagnostics/CumSteps": self.cum_steps,
            "Diagnostics/CumCompletedTrajs": self.cum_completed_trajs,
            "Diagnostics/CumUpdates": self.algo.update_counter,
            "Diagnostics/StepsPerSecond": new_steps / train_time,
            "Diagnostics/UpdatesPerSecond": new_updates / train_time,
            "Diagnostics/ReplayRatio": new_updates * batch_size / max(1, new_steps),
            "Diagnostics/CumReplayRatio": self.algo.update_counter
            * batch_size
            / max(1, self.cum_steps),
        }
        if self._eval:
            row["Diagnostics/CumTrainTime"] = self.cum_time - self.cum_eval_time
            row["Diagnostics/CumEvalTime"] = self.cum_eval_time
            row["Diagnostics/StepsInEval"] = sum(t.Length for t in self._eval_traj_infos)
            row["Diagnostics/TrajsInEval"] = len(self._eval_traj_infos)
            traj_infos: Sequence[TrajInfo] = self._eval_traj_infos
        else:
            row["Diagnostics/NewCompletedTrajs"] = self._new_trajs
            row["Diagnostics/StepsInTrajWindow"] = sum(t.Length for t in self._traj_window)
            traj_infos = list(self._traj_window)
        for key, value in row.items():
            logger.record_tabular(key, value)
        fields = traj_infos[0].fields().keys() if traj_infos else TrajInfo().fields().keys()
        for field in fields:
            values = [t.fields()[field] for t in traj_infos]
            logger.record_tabular_misc_stat(field, values)
            row[f"{field}Average"] = float(np.mean(values)) if values else float("nan")
        for key, values in self._opt_infos.items():
            logger.record_tabular_misc_stat(key, values)
            row[f"{key}Average"] = float(np.mean(values)) if values else float("nan")
        logger.dump_tabular()
        if not eval_only:
            logger.save_itr_params(itr, self.snapshot(itr))
            replay = getattr(self.algo, "replay_buffer", None)
            if self.snapshot_replay and replay is not None and logger.run_dir is not None:
                replay.save(Path(logger.run_dir) / "replay")
        self.last_row = row
        self._opt_infos = {}
        self._new_trajs = 0
        self._last_updates = self.algo.update_counter
        self._last_steps = self.cum_steps
        self._t_last = time.perf_counter()

    # -------------------------------------------------------------------- snapshots
    def snapshot(self, itr: int) -> dict[str, Any]:
        """What a snapshot holds: enough to resume training at ``itr + 1``."""
        return {
            "itr": itr,
            "cum_steps": self.cum_steps,
            "cum_completed_trajs": self.cum_completed_trajs,
            "cum_time": self.cum_time,
            "agent_state_dict": self.agent.state_dict(),
            "algo_state_dict": self.algo.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "random": random.getstate(),
            },
        }

    def _restore(self, snap: dict[str, Any]) -> None:
        self.agent.load_state_dict(snap["agent_state_dict"])
        self.algo.load_state_dict(snap["algo_state_dict"])
        self.start_itr = int(snap["itr"]) + 1
        self.cum_steps = int(snap["cum_steps"])
        self.cum_completed_trajs = int(snap.get("cum_completed_trajs", 0))
        self.cum_time = float(snap.get("cum_time", 0.0))
        rng = snap.get("rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["random"])
        get_logger().log(f"resumed from iteration {self.start_itr - 1} ({self.cum_steps} steps)")


class MinibatchRlEval(MinibatchRl):
    """``MinibatchRl`` with offline evaluation at iteration 0 and every log point.

    The sampler needs ``eval_n_envs > 0``. Trajectory statistics in ``progress.csv`` come
    from evaluation episodes; evaluation time is excluded from the throughput columns.
    """

    _eval = True

    def startup(self) -> int:
        if not getattr(self.sampler, "eval_n_envs", 0):
            raise ValueError("MinibatchRlEval needs a sampler built with eval_n_envs > 0")
        return super().startup()
