"""Synchronous multi-process training: one full sampler + agent + algorithm per rank.

``SyncRl`` is ``MinibatchRl`` run by several processes (ranks) at once, rlpyt's ``SyncRl``.
Each rank collects its own batches and optimises its own replica of the agent; the
gradients are averaged across ranks at the end of every backward pass, so all replicas take
the same optimizer steps and stay equal. ``DistributedDataParallel`` does it when only
``agent.model`` is trained (A2C, PPO, the DQN family); when the algorithm trains more (the
critics and temperature of DDPG, TD3, SAC, SAC-V) a hook on every trained parameter does
it for all of them. Batch sizes are per rank (weak scaling): ``N`` ranks collect ``N``
times the sampler's batch per iteration, and ``n_steps`` counts the steps of all ranks.
Running observation statistics are merged across ranks. Rank 0 logs, evaluates
(``SyncRlEval``) and snapshots exactly as ``MinibatchRl(Eval)`` does, with the other
ranks' episodes gathered into its statistics.

Two ways to start (see ``docs/sync_rl.md``):

* one command: ``SyncRl(algo, agent, sampler, n_steps=..., world_size=2).train()`` runs
  rank 0 in this process and spawns ranks ``1..N-1``; each receives a pickled copy of the
  not yet initialised algorithm, agent and sampler, and all meet at a TCP store that rank
  0 hosts on a free port of 127.0.0.1;
* ``torchrun --nproc_per_node N script.py`` (or ``--nnodes`` for several machines): every
  process runs the script, and ``train()`` joins the group given by ``RANK``,
  ``WORLD_SIZE`` and ``MASTER_ADDR``/``MASTER_PORT`` (``env://``) without spawning.
"""

from __future__ import annotations

import copy
import datetime
import functools
import os
import pickle
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tdrl.agents.base import Agent
from tdrl.algos.base import Algorithm
from tdrl.envs.traj_info import TrajInfo
from tdrl.logging import get_logger
from tdrl.models.running_mean_std import RunningMeanStd
from tdrl.runners.minibatch_rl import MinibatchRl
from tdrl.utils.seed import set_seed

#: Store key counting the spawned ranks that reached rank 0.
_JOINED_KEY = "tdrl_sync_rl/joined"
#: Seconds a spawned rank gets to end by itself after rank 0 finished or failed.
_GRACE_S = 10.0


class SyncRl(MinibatchRl):
    """``MinibatchRl`` over several processes, gradients averaged across ranks.

    When the algorithm trains ``agent.model`` only (A2C, PPO and the DQN family: DQN,
    CategoricalDQN, Rainbow), ``agent.model`` is wrapped in ``DistributedDataParallel``.
    When it trains more (DDPG and TD3: ``agent.q_model``; SAC: ``agent.q_model`` and the
    algorithm's ``log_alpha``; SAC-V: ``agent.q_model`` and ``agent.v_model``), every
    trained parameter (the agent's trainable ones and those of the algorithm's optimizers)
    gets a hook that averages, at the end of each backward pass, the gradients that pass
    produced, before the algorithm clips them and steps (see ``_GradAverager``).

    Rank ``r`` seeds with ``seed + 100 * r`` (its envs with ``seed + 100 * r + 1``); at
    start all ranks take rank 0's parameters and buffers (target networks included) and
    the trained tensors the algorithm holds outside the agent (SAC's ``log_alpha``). After
    every iteration the ranks compare all these parameters (targets included) and raise if
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
        cuda: put rank ``r``'s agent on ``cuda:LOCAL_RANK`` (``cuda:r`` when spawned) and
            all-reduce with NCCL instead of gloo; needs one GPU per rank. The algorithm must
            then move its batches to the agent's device.
        timeout_s: how long a collective operation waits for the other ranks before the run
            fails (covers rank 0's evaluation and snapshot time, during which the others
            wait).
    """

    def __init__(
        self,
        algo: Algorithm,
        agent: Agent,
        sampler: Any,
        *,
        n_steps: int,
        world_size: int | None = None,
        seed: int | None = None,
        log_interval_steps: int = 100_000,
        log_traj_window: int = 100,
        progress_bar: bool | None = None,
        resume_from: str | Path | None = None,
        snapshot_replay: bool = False,
        cuda: bool = False,
        timeout_s: float = 1800.0,
    ):
        super().__init__(
            algo,
            agent,
            sampler,
            n_steps=n_steps,
            seed=seed,
            log_interval_steps=log_interval_steps,
            log_traj_window=log_traj_window,
            progress_bar=progress_bar,
            resume_from=resume_from,
            snapshot_replay=snapshot_replay,
        )
        if world_size is not None and (
            isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1
        ):
            raise ValueError(f"world_size must be a positive int or None, got {world_size!r}")
        given = _given_world_size()
        if given is None and world_size is None:
            raise ValueError(
                "world_size is needed unless the process is started by torchrun (RANK and "
                "WORLD_SIZE set) or a torch.distributed process group is initialised"
            )
        if given is not None and world_size is not None and given != world_size:
            raise ValueError(
                f"world_size={world_size} but this process belongs to a group of {given} "
                "ranks (torchrun's WORLD_SIZE or the initialised process group)"
            )
        if cuda and not torch.cuda.is_available():
            raise ValueError("cuda=True but torch sees no CUDA device")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        self.world_size = given if world_size is None else world_size
        self.cuda = bool(cuda)
        self.backend = "nccl" if self.cuda else "gloo"
        self.timeout_s = float(timeout_s)
        self.rank = 0
        self._ddp_model: DistributedDataParallel | None = None
        self._grad_averager: _GradAverager | None = None
        self._replica_tensors: list[torch.Tensor] = []
        self._synced_rms: list[RunningMeanStd] = []

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
            RuntimeError: a spawned rank failed or did not end (its traceback is in the
                message); any exception of rank 0 itself propagates unchanged.
        """
        if dist.is_available() and dist.is_initialized():  # the caller's group
            rank = dist.get_rank()
            return self._train_rank(rank, int(os.environ.get("LOCAL_RANK", rank)), join=None)
        if _launched_by_torchrun():
            rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
            return self._train_rank(rank, local_rank, join={"init_method": "env://"})
        return self._train_spawned()

    def _train_spawned(self) -> dict[str, float]:
        """Rank 0 here, ranks 1..N-1 spawned; they meet at a TCP store hosted here."""
        timeout = datetime.timedelta(seconds=self.timeout_s)
        store = dist.TCPStore(
            "127.0.0.1", 0, self.world_size, is_master=True, timeout=timeout, wait_for_workers=False
        )
        # Plain pickle copies tensors (a process argument would share their memory), so
        # every rank gets its own copy of the runner, still uninitialised.
        try:
            runner = pickle.dumps(self)
        except Exception as exc:
            raise TypeError(
                "SyncRl copies the algorithm, agent and sampler into each spawned rank with "
                "pickle, which failed; define env functions and custom classes at module "
                "level, or start the ranks with torchrun"
            ) from exc
        ctx = torch.multiprocessing.get_context("spawn")
        reports = ctx.SimpleQueue()
        procs = []
        try:
            for rank in range(1, self.world_size):
                proc = ctx.Process(
                    target=_spawned_rank,
                    args=(runner, rank, store.port, torch.get_num_threads(), reports),
                    name=f"SyncRl-rank{rank}",
                )
                proc.start()
                procs.append(proc)
            self._wait_for_spawned(store, procs, reports)
            try:
                row = self._train_rank(0, 0, join={"store": store})
            except BaseException as exc:
                # A communication error in rank 0 is usually a spawned rank that died first.
                if isinstance(exc, dist.DistError) or "gloo" in str(exc).lower():
                    failure = _failures(procs, reports, wait_s=_GRACE_S)
                    if failure:
                        raise RuntimeError(failure) from exc
                raise
            failure = _failures(procs, reports, wait_s=self.timeout_s)
            if failure:
                raise RuntimeError(failure)
            return row
        finally:
            _stop(procs)

    def _wait_for_spawned(self, store: Any, procs: Sequence[Any], reports: Any) -> None:
        """Wait until every spawned rank reached the store; fail as soon as one died."""
        deadline = time.monotonic() + self.timeout_s
        while store.add(_JOINED_KEY, 0) < len(procs):
            if any(not proc.is_alive() for proc in procs) or time.monotonic() > deadline:
                raise RuntimeError(
                    _failures(procs, reports, wait_s=0.0)
                    or f"SyncRl: the spawned ranks did not start within {self.timeout_s:.0f} s"
                )
            time.sleep(0.05)

    def _train_rank(
        self, rank: int, local_rank: int, *, join: dict[str, Any] | None
    ) -> dict[str, float]:
        """Run this process's rank; ``join``: how to join the process group (None: joined
        already), which it then also leaves."""
        self.rank = rank
        if self.cuda:
            torch.cuda.set_device(local_rank)
        if join is not None:
            dist.init_process_group(
                self.backend,
                rank=rank,
                world_size=self.world_size,
                timeout=datetime.timedelta(seconds=self.timeout_s),
                **join,
            )
        try:
            base_seed = [self.seed]
            dist.broadcast_object_list(base_seed, src=0)  # rank 0's, also when it was random
            self.seed = base_seed[0] + 100 * rank
            if rank > 0:
                self.progress_bar = False
            return super().train()
        finally:
            if join is not None and dist.is_initialized():
                dist.destroy_process_group()

    # ------------------------------------------------------------------------- set-up
    def startup(self) -> int:
        """``MinibatchRl.startup`` for this rank's share of the run, then replicate."""
        n_steps, log_interval_steps = self.n_steps, self.log_interval_steps
        # MinibatchRl sizes the run in this process's steps: give it this rank's share.
        self.n_steps = -(-n_steps // self.world_size)
        self.log_interval_steps = max(1, log_interval_steps // self.world_size)
        try:
            n_itr = super().startup()
        finally:
            self.n_steps, self.log_interval_steps = n_steps, log_interval_steps
        rank_batch = self.itr_batch_size
        self.itr_batch_size = rank_batch * self.world_size  # one iteration, all ranks
        if self.start_itr and self.rank:
            set_seed(self.seed + self.start_itr)  # not the snapshot's RNG state of rank 0
        self._replicate()
        if self.rank == 0:
            get_logger().log(
                f"{type(self).__name__}: {self.world_size} ranks x {rank_batch} steps per "
                f"iteration ({self.backend}), rank r seeded with {self.seed} + 100 r"
            )
        return n_itr

    def _replicate(self) -> None:
        """Start the replicas equal and synchronise their gradients: through DDP around
        ``agent.model`` when only it is trained, else with a ``_GradAverager``."""
        agent = self.agent
        model = agent.model
        agent_params = {id(p) for p in agent.parameters()}
        extra = _optimized_outside(self.algo, agent_params)
        trained = [p for p in agent.parameters() if p.requires_grad] + extra
        if not trained:
            raise ValueError(
                f"{type(agent).__name__} has no trainable parameter to synchronise "
                f"({type(self.algo).__name__})"
            )
        in_model = {id(p) for p in model.parameters()}
        ddp = all(id(p) in in_model for p in trained)
        device = None
        if self.cuda:
            device = torch.device("cuda", torch.cuda.current_device())
            agent.to(device)
            if self.start_itr:  # optimizer state restored on the CPU follows its parameters
                self.algo.load_state_dict(self.algo.state_dict())
        with torch.no_grad():  # rank 0's parameters and buffers, targets included
            for tensor in [*agent.state_dict().values(), *extra]:
                if isinstance(tensor, torch.Tensor):
                    _broadcast_inplace(tensor)
        # Checked after every iteration: all agent parameters (targets too) and log_alpha.
        self._replica_tensors = [*agent.parameters(), *extra]
        self._synced_rms = [m for m in model.modules() if isinstance(m, RunningMeanStd)]
        for rms in self._synced_rms:
            vars(rms)["update"] = rms.update_across_ranks
        if not ddp:  # critics, value network, temperature: average at the end of backward
            self._grad_averager = _GradAverager(trained, self.world_size)
            return
        self._ddp_model = _DdpModel(
            model,
            device_ids=None if device is None else [device.index],
            forward_sync_buffers=False,  # observation statistics are merged explicitly
            init_sync=False,  # done above for the whole agent
        )
        # Shadow the registered submodule: agent.model(...) now runs DDP, while the module
        # tree (parameters(), state_dict(), to(), train()) still holds the plain model.
        vars(agent)["model"] = self._ddp_model

    def _unreplicate(self) -> None:
        """Give the agent back its plain model and statistics, remove the gradient hooks."""
        vars(self.agent).pop("model", None)
        for rms in self._synced_rms:
            vars(rms).pop("update", None)
        if self._grad_averager is not None:
            self._grad_averager.remove()
        self._synced_rms = []
        self._replica_tensors = []
        self._grad_averager = None
        self._ddp_model = None

    def shutdown(self) -> None:
        self._unreplicate()
        super().shutdown()

    # ------------------------------------------------------------------ bookkeeping
    def store_diagnostics(
        self, itr: int, traj_infos: Sequence[TrajInfo], opt_info: dict[str, list[float]]
    ) -> None:
        """Check the replicas; rank 0 receives every rank's completed episodes."""
        self._check_replicas_equal(itr)
        gathered: list[Any] | None = [None] * self.world_size if self.rank == 0 else None
        dist.gather_object(list(traj_infos), gathered, dst=0)
        if gathered is None:  # ranks > 0 keep no statistics
            self.cum_steps += self.itr_batch_size
            return
        super().store_diagnostics(itr, [t for infos in gathered for t in infos], opt_info)

    def _check_replicas_equal(self, itr: int) -> None:
        params = [p.detach().double() for p in self._replica_tensors]
        local = torch.stack([s for p in params for s in (p.sum(), p.square().sum())])
        gathered = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(gathered, local)
        for rank, other in enumerate(gathered[1:], start=1):
            if not torch.allclose(other, gathered[0], rtol=1e-5, atol=1e-8):
                raise RuntimeError(
                    f"SyncRl: the parameters of rank {rank} differ from rank 0's after "
                    f"iteration {itr}: {type(self.algo).__name__} changed them outside the "
                    "synchronised backward passes (e.g. several gradient-enabled "
                    "agent.model calls per backward under DDP, a parameter updated without "
                    "its gradient, or backward passes that differ between ranks), so it is "
                    "not supported by SyncRl"
                )

    def evaluate(self, itr: int) -> None:
        if self.rank == 0:
            super().evaluate(itr)

    def log_diagnostics(self, itr: int, *, eval_only: bool = False) -> None:
        if self.rank != 0:
            return
        # ReplayRatio counts the samples replayed by all ranks (as rlpyt's SyncRl does).
        algo = self.algo
        batch_size = getattr(algo, "batch_size", None)
        if batch_size is not None:
            algo.batch_size = batch_size * self.world_size
        try:
            super().log_diagnostics(itr, eval_only=eval_only)
        finally:
            if batch_size is not None:
                algo.batch_size = batch_size


class SyncRlEval(SyncRl):
    """``SyncRl`` with offline evaluation by rank 0 at iteration 0 and every log point.

    The sampler needs ``eval_n_envs > 0``. Trajectory statistics in ``progress.csv`` come
    from rank 0's evaluation episodes; the other ranks wait during evaluation.
    """

    _eval = True

    def __init__(self, algo: Algorithm, agent: Agent, sampler: Any, **kwargs: Any):
        if not getattr(sampler, "eval_n_envs", 0):
            raise ValueError("SyncRlEval needs a sampler built with eval_n_envs > 0")
        super().__init__(algo, agent, sampler, **kwargs)


class _DdpModel(DistributedDataParallel):
    """DDP around ``agent.model`` that stays out of the way where it has nothing to do.

    Forward passes without gradient (acting, bootstrap values, targets) call the module
    directly, and attributes DDP does not have (``value``, ``obs_rms``, ...) are the
    module's, so agent code written for the plain model runs unchanged. Copies and pickles
    of the agent (a parallel sampler's copy for its workers) get the plain model.
    """

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled():
            return super().forward(*args, **kwargs)
        return self.module(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)

    def __deepcopy__(self, memo: dict[int, Any]) -> torch.nn.Module:
        return copy.deepcopy(self.module, memo)  # the agent's copy of its plain model

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return _unwrapped, (self.module,)


def _unwrapped(module: torch.nn.Module) -> torch.nn.Module:
    return module


class _GradAverager:
    """Averages across ranks the gradients that every backward pass leaves on ``params``.

    A post-accumulate-grad hook on each parameter records which ones received a gradient;
    the first one of a backward pass queues a callback that autograd runs once that whole
    pass has finished (DDP's own mechanism). The callback all-reduces those gradients, in
    one flat bucket per dtype and device, and divides by the world size. The average is
    thus taken inside ``backward()``, before the algorithm clips the gradient norms and
    steps its optimizers: with the same clip and step code on equal gradients, the ranks
    stay equal, exactly as under DDP. Parameters without gradient in a pass (the critics
    frozen for the actor's loss) are left alone; all ranks run the same code, so the same
    parameters receive gradients everywhere. A gradient already present before the pass
    (accumulated over several passes) was averaged by its own pass and is equal on all
    ranks, so averaging the sum is still exact.

    Args:
        params: the trained parameters, in the same order on every rank.
        world_size: number of ranks.
    """

    def __init__(self, params: Sequence[torch.Tensor], world_size: int):
        self.params = list(params)
        self.world_size = world_size
        self._received: set[int] = set()
        self._queued = False
        self._handles = [
            p.register_post_accumulate_grad_hook(functools.partial(self._on_grad, i))
            for i, p in enumerate(self.params)
        ]

    def _on_grad(self, index: int, param: torch.Tensor) -> None:
        self._received.add(index)
        if not self._queued:
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._average)

    def _average(self) -> None:
        received = sorted(self._received)  # the parameters' order, not autograd's
        self._received.clear()
        self._queued = False
        buckets: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
        for index in received:
            grad = self.params[index].grad
            buckets.setdefault((grad.device, grad.dtype), []).append(grad)
        for grads in buckets.values():
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat.div_(self.world_size)
            for grad, mean in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
                grad.copy_(mean.view_as(grad))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


# ---------------------------------------------------------------------------- helpers
def _optimized_outside(algo: Any, agent_params: set[int]) -> list[torch.Tensor]:
    """Trainable tensors held by the algorithm's optimizers (its attributes) but not by the
    agent, such as SAC's ``log_alpha``, in attribute and parameter-group order."""
    found: dict[int, torch.Tensor] = {}
    for value in vars(algo).values():
        if isinstance(value, torch.optim.Optimizer):
            for group in value.param_groups:
                for p in group["params"]:
                    if p.requires_grad and id(p) not in agent_params:
                        found.setdefault(id(p), p)
    return list(found.values())


def _launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _given_world_size() -> int | None:
    """The world size fixed from outside: an initialised group's, or torchrun's."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    if _launched_by_torchrun():
        return int(os.environ["WORLD_SIZE"])
    return None


def _broadcast_inplace(tensor: torch.Tensor) -> None:
    if tensor.is_contiguous():
        dist.broadcast(tensor, src=0)
    else:
        buffer = tensor.contiguous()
        dist.broadcast(buffer, src=0)
        tensor.copy_(buffer)


def _spawned_rank(payload: bytes, rank: int, port: int, num_threads: int, reports: Any) -> None:
    """Body of a spawned rank: train, and report a failure to rank 0 before exiting."""
    torch.set_num_threads(num_threads)
    try:
        runner: SyncRl = pickle.loads(payload)
        timeout = datetime.timedelta(seconds=runner.timeout_s)
        store = dist.TCPStore(
            "127.0.0.1", port, runner.world_size, is_master=False, timeout=timeout
        )
        store.add(_JOINED_KEY, 1)
        runner._train_rank(rank, rank, join={"store": store})
    except BaseException:
        # Rank 0 raises it when it is the cause; kept short enough not to fill the pipe.
        reports.put((rank, traceback.format_exc()[-20_000:]))
        raise SystemExit(1) from None


def _failures(procs: Sequence[Any], reports: Any, *, wait_s: float) -> str | None:
    """Wait up to ``wait_s`` for the spawned ranks to end; describe those that failed."""
    deadline = time.monotonic() + wait_s
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    tracebacks = {}
    while not reports.empty():
        rank, text = reports.get()
        tracebacks[rank] = text
    lines = []
    for rank, proc in enumerate(procs, start=1):
        if proc.is_alive():
            if wait_s > 0:
                lines.append(f"rank {rank} did not end within {wait_s:.0f} s")
        elif proc.exitcode != 0 or rank in tracebacks:
            lines.append(
                f"rank {rank} failed (exit code {proc.exitcode})"
                + (f":\n{tracebacks[rank].rstrip()}" if rank in tracebacks else "")
            )
    return "SyncRl: " + "\n".join(lines) if lines else None


def _stop(procs: Sequence[Any]) -> None:
    """End the spawned ranks: they normally have; terminate, then kill, the others."""
    deadline = time.monotonic() + _GRACE_S
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
            proc.join(5.0)
        if proc.is_alive():
            proc.kill()
            proc.join()
