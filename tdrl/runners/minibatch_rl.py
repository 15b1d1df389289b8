"""Serial runners: sample a batch, optimise on it, log; repeat.

``MinibatchRl`` reports online performance (the last ``log_traj_window`` training
episodes); ``MinibatchRlEval`` runs offline evaluation in separate envs at every log
point. Both log rlpyt's ``Diagnostics/*`` columns through the active
``tdrl.logging.logger_context`` and snapshot the agent and optimizer state there
(``tdrl.runners.base`` holds the bookkeeping, the row and the snapshot).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from tdrl.agents.base import Agent
from tdrl.algos.base import Algorithm
from tdrl.runners.base import (
    RunPlan,
    RunSettings,
    RunStats,
    check_offline_eval,
    evaluate,
    log_iteration,
    progress_bar,
)
from tdrl.runners.nonfinite import NonFiniteGuard
from tdrl.runners.startup import start_run
from tdrl.samplers.base import Sampler
from tdrl.utils.checks import ArgumentError, check_instance
from tdrl.utils.device import check_device

#: The ``__init__`` arguments every runner forwards to ``RunSettings``.
RUN_SETTINGS = (
    "n_steps",
    "seed",
    "log_interval_steps",
    "log_traj_window",
    "progress_bar",
    "resume_from",
    "snapshot_replay",
    "nonfinite",
)


def check_run_arguments(
    runner_name: str, arguments: Mapping[str, Any], *, offline_eval: bool
) -> tuple[RunSettings, Algorithm, Agent, Sampler]:
    """What every runner's ``__init__`` checks: its settings, algorithm, agent and sampler.

    Args:
        runner_name: the runner's class name, for messages.
        arguments: the runner's ``__init__`` arguments by name (its ``locals()``): ``algo``,
            ``agent``, ``sampler`` and the ``RUN_SETTINGS`` (others are ignored).
        offline_eval: the runner evaluates offline, so the sampler needs eval envs.

    Returns:
        ``(settings, algo, agent, sampler)``, checked.
    """
    settings = RunSettings(**{name: arguments[name] for name in RUN_SETTINGS})
    sampler = arguments["sampler"]
    if isinstance(sampler, type):
        raise ArgumentError(f"sampler must be an instance, got the class {sampler.__name__}")
    if offline_eval:
        check_offline_eval(runner_name, sampler)
    algo = check_instance("algo", arguments["algo"], Algorithm)
    return settings, algo, check_instance("agent", arguments["agent"], Agent), sampler


class MinibatchRl:
    """Serial training loop with online statistics.

    Args:
        algo: the algorithm.
        agent: the agent.
        sampler: the sampler (``SerialSampler`` or any ``Sampler``).
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
        nonfinite: ``"raise"`` (default): a NaN or infinite env value, loss, gradient or
            parameter stops the run with one line naming it and the iteration, before it
            reaches a snapshot; ``"skip"``: an update with a non-finite loss or gradient is
            not applied, the rest of that iteration's updates are skipped and counted in
            ``Diagnostics/NonFiniteSkips`` (see ``tdrl.runners.nonfinite.NonFiniteGuard``).
        device: where the agent trains: a ``torch.device`` or a string torch accepts
            (``"cpu"``, ``"cuda"``, ``"cuda:1"``). The agent is moved there after the
            sampler built its model and before the algorithm builds its optimizers; the
            sampler acts with it there (envs step on the CPU). None (default): the agent
            stays where its parameters are (the CPU for the default models). See
            ``tdrl.runners.startup``.
    """

    #: Evaluate offline (``MinibatchRlEval``) instead of reporting training episodes.
    offline_eval: ClassVar[bool] = False

    def __init__(
        self,
        algo: Algorithm,
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
        device: str | torch.device | None = None,
    ):
        self.settings, self.algo, self.agent, self.sampler = check_run_arguments(
            type(self).__name__, locals(), offline_eval=self.offline_eval
        )
        self.device = check_device("device", device)
        self.guard = NonFiniteGuard(self.settings.nonfinite)

    def train(self) -> dict[str, float]:
        """Run the whole training; returns the last logged row of diagnostics."""
        bar = None
        try:  # a start-up failure (bad agent, snapshot of another run) also stops the envs
            plan, stats = self.startup()
            bar = progress_bar(plan, self.algo, self.settings.progress_bar)
            if self.offline_eval and plan.start_itr == 0:
                stats.add_eval(*evaluate(self.sampler, 0))
                self._log(0, eval_only=True)
            for itr in range(plan.start_itr, plan.n_itr):
                self.agent.sample_mode(itr)
                samples, traj_infos = self.guard.sample(itr, self.sampler)
                self.agent.train_mode(itr)
                opt_info = self.guard.optimize(itr, self.algo, samples)
                stats.add_batch(plan.itr_batch_size, traj_infos)
                stats.add_opt_info(opt_info)
                bar.update(plan.itr_batch_size, Return=stats.recent_return())
                if plan.is_log_itr(itr):
                    if self.offline_eval:
                        stats.add_eval(*evaluate(self.sampler, itr))
                    self._log(itr)
        finally:
            if bar is not None:
                bar.close()
            self.sampler.shutdown()
        return stats.last_row

    def startup(self) -> tuple[RunPlan, RunStats]:
        """Seed, initialise sampler/agent/algorithm, restore a snapshot; plan the run.

        Sets (and returns) ``self.plan`` and ``self.stats``.
        """
        self.plan, self.stats = start_run(
            self.algo,
            self.agent,
            self.sampler,
            self.settings,
            seed=self.settings.seed,
            runner_name=type(self).__name__,
            device=self.device,
        )
        return self.plan, self.stats

    def _log(self, itr: int, *, eval_only: bool = False) -> None:
        log_iteration(
            itr,
            self.stats,
            self.agent,
            self.algo,
            self.settings,
            offline_eval=self.offline_eval,
            eval_only=eval_only,
            extra=self.guard.columns(),
        )


class MinibatchRlEval(MinibatchRl):
    """``MinibatchRl`` with offline evaluation at iteration 0 and every log point.

    The sampler needs ``eval_n_envs > 0``. Trajectory statistics in ``progress.csv`` come
    from evaluation episodes; evaluation time is excluded from the throughput columns.
    """

    offline_eval = True
