"""Synchronous multi-process training: one full sampler + agent + algorithm per rank.

``SyncRl`` runs ``MinibatchRl``'s loop in several processes (ranks) at once, rlpyt's
``SyncRl``. Each rank collects its own batches and optimises its own replica of the agent;
``tdrl.runners.grad_sync`` keeps the replicas equal (equal start, gradients averaged
across ranks at the end of every backward pass, shared observation statistics, a check
after every iteration). Batch sizes are per rank (weak scaling): ``N`` ranks collect ``N``
times the sampler's batch per iteration, and ``n_steps`` counts the steps of all ranks.
Rank 0 logs, evaluates (``SyncRlEval``) and snapshots as ``MinibatchRl(Eval)`` does,
with every rank's episodes in its statistics.

Two ways to start (see ``docs/sync_rl.md``):

* one command: ``SyncRl(..., world_size=2).train()`` runs rank 0 here and spawns ranks
  ``1..N-1``, each with its own copy of the uninitialised algorithm, agent and sampler;
  all meet at a TCP store rank 0 hosts on a free port of 127.0.0.1;
* ``torchrun --nproc_per_node N script.py`` (or ``--nnodes`` for several machines): every
  process runs the script, and ``train()`` joins the group given by ``RANK``,
  ``WORLD_SIZE`` and ``MASTER_ADDR``/``MASTER_PORT`` (``env://``) without spawning.

Spawned ranks exit once rank 0's process is gone (``start_child``). A rank that dies or
hangs past ``timeout_s`` fails rank 0's next collective; rank 0 raises, naming it.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import os
import pickle
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed as dist

from tdrl.agents.base import Agent
from tdrl.algos.base import Algorithm
from tdrl.envs.traj_info import TrajInfo
from tdrl.logging import get_logger
from tdrl.runners.base import (
    RunStats,
    evaluate,
    log_iteration,
    progress_bar,
)
from tdrl.runners.grad_sync import Replicas
from tdrl.runners.minibatch_rl import check_run_arguments
from tdrl.runners.nonfinite import NonFiniteGuard
from tdrl.runners.startup import start_run
from tdrl.samplers.base import Sampler
from tdrl.utils.checks import check_bool, check_int
from tdrl.utils.device import check_device
from tdrl.utils.processes import (
    Child,
    ChildFailed,
    exit_description,
    is_stopped,
    report_failure,
    spawn_context,
    start_child,
    startup_timeout,
    stop_processes,
    stuck_description,
    wait_for,
)
from tdrl.utils.seed import set_seed
from tdrl.utils.timeouts import check_seconds

#: Store key counting the spawned ranks that reached rank 0.
_JOINED_KEY = "tdrl_sync_rl/joined"
#: Seconds a spawned rank gets to end by itself after rank 0 finished or failed.
_GRACE_S = 10.0


class SyncRl:
    """``MinibatchRl`` over several processes, gradients averaged across ranks.

    Rank ``r`` seeds with ``seed + 100 * r`` (its envs with ``seed + 100 * r + 1``); at
    start all ranks take rank 0's parameters and buffers (target networks included) and
    the trained tensors the algorithm holds outside the agent (SAC's ``log_alpha``). Every
    backward pass averages the gradients it produced across ranks before the algorithm
    clips and steps (``tdrl.runners.grad_sync``), for every algorithm alike. After every
    iteration the ranks compare all these parameters (targets included) and raise if
    they drifted apart, so an algorithm that updates parameters outside the synchronised
    backward pass fails loudly instead of training unsynchronised replicas.

    Args:
        algo: the algorithm (not initialised); every rank gets its own copy.
        agent: the agent (not initialised); every rank gets its own copy.
        sampler: the sampler (not initialised); its batch is per rank.
        n_steps: environment steps to train for, all ranks together (rounded up to whole
            iterations of ``world_size`` batches).
        world_size: number of ranks. None under ``torchrun`` (taken from ``WORLD_SIZE``) or
            in an already initialised process group; required otherwise.
        seed: base seed (rank ``r`` uses ``seed + 100 * r``); random when None, chosen by
            rank 0.
        log_interval_steps: environment steps (all ranks) between log rows and snapshots.
        log_traj_window: number of recent training episodes (all ranks) the statistics
            cover.
        progress_bar: show a tqdm bar in rank 0 (None: only on a terminal).
        resume_from: a snapshot file or run directory to continue from; every rank reads
            it, so it must be reachable from every machine.
        snapshot_replay: save rank 0's replay buffer with every snapshot (on resume every
            rank starts from that buffer).
        nonfinite: ``"raise"`` or ``"skip"`` (see ``MinibatchRl``); the ranks average their
            gradients inside the backward pass, so they all skip the same updates.
        cuda: put rank ``r``'s agent on ``cuda:LOCAL_RANK`` (``cuda:r`` when spawned) before
            the algorithm builds its optimizers (as ``MinibatchRl``'s ``device``), and
            communicate with NCCL instead of gloo; needs one GPU per rank. False: gloo, and
            the agent stays where its parameters are.
        timeout_s: how long a collective operation waits for the other ranks before the run
            fails (covers rank 0's evaluation and snapshot time, during which the others
            wait).
    """

    #: Evaluate offline on rank 0 (``SyncRlEval``) instead of reporting training episodes.
    offline_eval: ClassVar[bool] = False

    def __init__(
        self,
        algo: Algorithm,
        agent: Agent,
        sampler: Sampler,
        *,
        n_steps: int,
        world_size: int | None = None,
        seed: int | None = None,
        log_interval_steps: int = 100_000,
        log_traj_window: int = 100,
        progress_bar: bool | None = None,
        resume_from: str | Path | None = None,
        snapshot_replay: bool = False,
        nonfinite: str = "raise",
        cuda: bool = False,
        timeout_s: float = 1800.0,
    ):
        self.settings, self.algo, self.agent, self.sampler = check_run_arguments(
            type(self).__name__, locals(), offline_eval=self.offline_eval
        )
        if world_size is not None:
            world_size = check_int("world_size", world_size, minimum=1)
        given = _given_world_size()
        if given is None:
            if world_size is None:
                raise ValueError(
                    "world_size is needed unless the process is started by torchrun (RANK "
                    "and WORLD_SIZE set) or a torch.distributed process group is initialised"
                )
            given = world_size
        elif world_size is not None and given != world_size:
            raise ValueError(
                f"world_size={world_size} but this process belongs to a group of {given} "
                "ranks (torchrun's WORLD_SIZE or the initialised process group)"
            )
        self.world_size = given
        self.guard = NonFiniteGuard(self.settings.nonfinite)
        self.cuda = check_bool("cuda", cuda)
        if self.cuda and not torch.cuda.is_available():
            raise ValueError("cuda=True but torch sees no CUDA device")
        self.backend = "nccl" if self.cuda else "gloo"
        self.timeout_s = check_seconds("timeout_s", timeout_s)

    @staticmethod
    def launch_rank() -> int:
        """This process's rank under ``torchrun`` (its ``RANK``), else 0.

        A script started by ``torchrun`` runs in every rank; open the logger (which writes
        the run directory) only where this is 0.
        """
        return int(os.environ.get("RANK", 0))

    # ------------------------------------------------------------------------ launching
    def train(self) -> dict[str, float]:
        """Run the whole training on all ranks.

        Returns:
            In rank 0, the last logged row of diagnostics; ``{}`` in the other ranks.

        Raises:
            RuntimeError: a spawned rank failed, died or is stuck (named, with how it ended
                and its traceback); rank 0's own exceptions propagate unchanged.
        """
        if dist.is_available() and dist.is_initialized():  # the caller's group
            rank = dist.get_rank()
            # Without LOCAL_RANK (a group set up by hand), ranks fill each machine's GPUs in turn.
            n_gpus = torch.cuda.device_count() if self.cuda else 0
            local = int(os.environ.get("LOCAL_RANK", rank % n_gpus if n_gpus else rank))
            return self._train_rank(rank, local, join=False)
        if _launched_by_torchrun():
            rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
            return self._train_rank(rank, local_rank, join=True)
        return self._train_spawned()

    def _train_spawned(self) -> dict[str, float]:
        """Rank 0 here, ranks 1..N-1 spawned; they meet at a TCP store hosted here."""
        timeout = datetime.timedelta(seconds=self.timeout_s)
        store = dist.TCPStore(
            "127.0.0.1", 0, self.world_size, is_master=True, timeout=timeout, wait_for_workers=False
        )
        ctx = spawn_context()
        ranks: list[_SpawnedRank] = []
        # A copy of this (uninitialised) runner per rank: its tensors reach the rank in shared
        # memory shared with that copy alone, kept (unused) until the ranks have joined.
        copies: list[SyncRl] = []
        try:
            for rank in range(1, self.world_size):
                receiver, sender = ctx.Pipe(duplex=False)
                try:
                    copies.append(copy.deepcopy(self))
                    proc = start_child(
                        ctx,
                        _spawned_rank_main,
                        args=(copies[-1], rank, store.port, torch.get_num_threads(), sender),
                        name=f"SyncRl rank {rank}",
                        daemon=False,  # a parallel sampler in it starts worker processes
                    )
                except (pickle.PicklingError, AttributeError, TypeError) as exc:
                    raise TypeError(
                        "SyncRl copies the algorithm, agent and sampler into each spawned "
                        "rank, which failed; define env functions and custom classes at "
                        "module level, or start the ranks with torchrun"
                    ) from exc
                sender.close()  # the rank holds its end
                ranks.append(_SpawnedRank(proc, receiver))
            self._wait_for_spawned(store, ranks)
            copies.clear()  # every rank holds its own now
            try:
                row = self._train_rank(0, 0, join=True, store=store)
            except BaseException as exc:
                # A communication error in rank 0 is usually a spawned rank that died first.
                if isinstance(exc, dist.DistError) or "gloo" in str(exc).lower():
                    _raise_failures(ranks, wait_s=_GRACE_S, cause=exc)
                raise
            _raise_failures(ranks, wait_s=self.timeout_s)
            return row
        finally:
            stop_processes([r.proc for r in ranks], wait_s=_GRACE_S)

    def _wait_for_spawned(self, store: dist.TCPStore, ranks: Sequence[_SpawnedRank]) -> None:
        """Wait until every spawned rank reached the store; fail as soon as one died."""

        def all_joined(wait_s: float) -> bool:
            deadline = time.monotonic() + wait_s
            while store.add(_JOINED_KEY, 0) < len(ranks) and time.monotonic() < deadline:
                time.sleep(0.05)
            return store.add(_JOINED_KEY, 0) >= len(ranks)

        timeout = startup_timeout(self.timeout_s)  # importing torch may take a while
        try:
            wait_for(all_joined, [r.proc for r in ranks], timeout=timeout, timeout_name="timeout_s")
        except ChildFailed as exc:
            _raise_failures(ranks, wait_s=0.0, cause=exc)
            raise RuntimeError(
                f"SyncRl: the spawned ranks did not start within {timeout:g} s"
            ) from exc

    def _train_rank(
        self, rank: int, local_rank: int, *, join: bool, store: dist.Store | None = None
    ) -> dict[str, float]:
        """Run this process's rank.

        Args:
            rank: this process's rank.
            local_rank: its index on this machine (its GPU with ``cuda``).
            join: join the process group here (through ``store``, else ``env://``) and
                leave it at the end; False: it is the caller's, already initialised.
            store: the TCP store of a spawned group.
        """
        device = None
        if self.cuda:  # NCCL's object collectives run on the current device: set it first
            device = check_device(f"rank {rank}'s cuda:LOCAL_RANK", f"cuda:{local_rank}")
            torch.cuda.set_device(device)
        if join:
            dist.init_process_group(
                self.backend,
                init_method=None if store is not None else "env://",
                store=store,
                rank=rank,
                world_size=self.world_size,
                timeout=datetime.timedelta(seconds=self.timeout_s),
            )
        try:
            base_seed = [self.settings.seed]
            dist.broadcast_object_list(base_seed, src=0)  # rank 0's, also when it was random
            return self._run(rank, base_seed[0], device)
        finally:
            if join and dist.is_initialized():
                dist.destroy_process_group()

    # ------------------------------------------------------------------------- the loop
    def _run(self, rank: int, base_seed: int, device: torch.device | None) -> dict[str, float]:
        """This rank's share of the run: ``MinibatchRl``'s loop with equal replicas."""
        seed = base_seed + 100 * rank
        agent, algo, sampler = self.agent, self.algo, self.sampler
        plan, stats = start_run(
            algo,
            agent,
            sampler,
            self.settings,
            seed=seed,
            world_size=self.world_size,
            runner_name=type(self).__name__,
            device=device,
        )
        replicas: Replicas | None = None
        bar = progress_bar(plan, algo, self.settings.progress_bar if rank == 0 else False)
        try:
            if plan.start_itr and rank:
                set_seed(seed + plan.start_itr)  # not the snapshot's RNG state of rank 0
            replicas = Replicas(agent, algo, self.world_size)
            if rank == 0:
                get_logger().log(
                    f"{type(self).__name__}: {self.world_size} ranks x {plan.batch_spec.size} "
                    f"steps per iteration ({self.backend}), rank r seeded with {seed} + 100 r"
                )
            if self.offline_eval and plan.start_itr == 0 and rank == 0:
                stats.add_eval(*evaluate(sampler, 0))
                self._log(0, stats, eval_only=True)
            for itr in range(plan.start_itr, plan.n_itr):
                agent.sample_mode(itr)
                samples, traj_infos = self.guard.sample(itr, sampler)
                agent.train_mode(itr)
                opt_info = self.guard.optimize(itr, algo, samples)
                replicas.check_equal(itr)
                stats.add_batch(plan.itr_batch_size, _gather_on_rank0(traj_infos, rank))
                if rank == 0:  # the other ranks keep no statistics
                    stats.add_opt_info(opt_info)
                    bar.update(plan.itr_batch_size, Return=stats.recent_return())
                    if plan.is_log_itr(itr):
                        if self.offline_eval:
                            stats.add_eval(*evaluate(sampler, itr))
                        self._log(itr, stats)
        finally:
            bar.close()
            if replicas is not None:
                replicas.close()
            sampler.shutdown()
        return stats.last_row

    def _log(self, itr: int, stats: RunStats, *, eval_only: bool = False) -> None:
        # ReplayRatio counts the samples replayed by all ranks (as rlpyt's SyncRl does).
        log_iteration(
            itr,
            stats,
            self.agent,
            self.algo,
            self.settings,
            offline_eval=self.offline_eval,
            eval_only=eval_only,
            ranks=self.world_size,
            extra=self.guard.columns(),
        )


class SyncRlEval(SyncRl):
    """``SyncRl`` with offline evaluation by rank 0 at iteration 0 and every log point.

    The sampler needs ``eval_n_envs > 0``. Trajectory statistics in ``progress.csv`` come
    from rank 0's evaluation episodes; the other ranks wait during evaluation.
    """

    offline_eval = True


# ---------------------------------------------------------------------------- helpers
def _gather_on_rank0(traj_infos: list[TrajInfo], rank: int) -> list[TrajInfo]:
    """Every rank's completed episodes, in rank 0 (a collective); ``[]`` in the others."""
    gathered: list[Any] | None = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(list(traj_infos), gathered, dst=0)
    return [] if gathered is None else [t for infos in gathered for t in infos]


def _launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _given_world_size() -> int | None:
    """The world size fixed from outside: an initialised group's, or torchrun's."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    if _launched_by_torchrun():
        return int(os.environ["WORLD_SIZE"])
    return None


class _SpawnedRank:
    """A spawned rank's process and the pipe on which it reports its failure."""

    def __init__(self, proc: Child, reports: Connection):
        self.proc = proc
        self.reports = reports
        self.traceback: str | None = None

    def read_report(self) -> None:
        """Keep the traceback the rank sent, if it sent one."""
        with contextlib.suppress(EOFError, OSError):  # it exited without reporting
            while self.reports.poll():
                _, self.traceback = self.reports.recv()


def _spawned_rank_main(
    runner: SyncRl, rank: int, port: int, num_threads: int, conn: Connection
) -> None:
    """Body of a spawned rank: train, and report a failure to rank 0 before exiting."""
    torch.set_num_threads(num_threads)
    with report_failure(conn):
        timeout = datetime.timedelta(seconds=runner.timeout_s)
        store = dist.TCPStore(
            "127.0.0.1", port, runner.world_size, is_master=False, timeout=timeout
        )
        store.add(_JOINED_KEY, 1)
        runner._train_rank(rank, rank, join=True, store=store)
        return
    raise SystemExit(1)  # reported: rank 0 raises it when it is the cause


def _raise_failures(
    ranks: Sequence[_SpawnedRank], *, wait_s: float, cause: BaseException | None = None
) -> None:
    """Wait up to ``wait_s`` for the spawned ranks to end (a stopped one cannot); raise.

    Raises:
        RuntimeError: naming each rank that failed (how it ended, its traceback) or, with
            ``wait_s > 0``, did not end in time (stuck).
    """
    deadline = time.monotonic() + wait_s
    for rank in ranks:
        rank.read_report()  # a long report must not keep the rank from exiting
        while rank.proc.is_alive() and not is_stopped(rank.proc) and time.monotonic() < deadline:
            rank.proc.join(min(max(0.0, deadline - time.monotonic()), 0.5))
            rank.read_report()
    failed = []
    for rank in ranks:
        rank.read_report()
        if rank.proc.is_alive():
            if wait_s > 0:
                how = stuck_description(rank.proc, "it did not end after the run failed")
                failed.append(ChildFailed(rank.proc.name, how))
        elif rank.proc.exitcode != 0 or rank.traceback is not None:
            how = f"failed ({exit_description(rank.proc.exitcode)})"
            failed.append(ChildFailed(rank.proc.name, how, rank.traceback))
    if failed:
        raise RuntimeError("\n".join(str(f) for f in failed)) from cause
