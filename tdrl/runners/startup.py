"""Starting a run: the device it trains on, seeding, initialising, resuming; ``start_run``.

``start_run`` is every runner's start-up: it loads and checks a snapshot to resume from
(before anything starts), seeds, initialises the sampler (which builds the envs and the
agent's default model), places the agent on the run's device, initialises the algorithm
(optimizers, schedules, replay buffer), restores the snapshot and plans the run.
``MetaRl`` builds its own start-up from the same pieces (``load_resume``, ``place_agent``,
``restore_run``, ``check_settings``).

**The device contract**, as the runners keep it:

* **Placement.** ``MinibatchRl(device=...)`` and ``AsyncRl(device=...)`` (``SyncRl(cuda=True)``:
  ``cuda:LOCAL_RANK`` on every rank) name where the agent trains (``check_device``).
  ``start_run`` moves the agent there (``place_agent``) after ``sampler.initialize``, which
  builds the default model from the env's specs, and before ``algo.initialize``, which
  builds the optimizers and the tensors the algorithm trains beside the agent (SAC's
  ``log_alpha``) on ``agent.device``. A resumed snapshot is restored after both, so the
  agent's state is copied into its parameters on the device and the optimizer state
  follows its parameters there (``torch.optim.Optimizer.load_state_dict`` casts it to
  their device). ``None`` leaves the agent where its parameters are: on the CPU for the
  default models, on the GPU for a user's model already there.
* **Data.** Samplers step envs on the CPU and return CPU batches; an agent on another
  device acts on inputs copied there (one batched forward per time step) and its outputs
  are written back into the CPU buffer. Algorithms move batches to ``agent.device``.
* **Snapshots** hold CPU tensors only (``tdrl.runners.base.cpu_state``) and are loaded with
  ``map_location="cpu"`` (``tdrl.logging.load_snapshot``): a run snapshotted on a GPU
  resumes on a CPU-only machine, and the reverse.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tdrl.agents.base import Agent
from tdrl.algos.base import Algorithm, ReplayAlgorithm
from tdrl.logging import find_snapshot, get_logger, load_snapshot
from tdrl.logging.files import SnapshotError
from tdrl.logging.snapshot import (
    SavedReplay,
    Stateful,
    check_resume,
    repair_progress,
    restore_replay,
    run_identity,
)
from tdrl.logging.snapshot import restore_state as restore  # loads a snapshot into agent, algo
from tdrl.runners.base import RunPlan, RunSettings, RunStats
from tdrl.samplers.base import Sampler
from tdrl.utils.seed import set_seed


def start_run(
    algo: Algorithm,
    agent: Agent,
    sampler: Sampler,
    settings: RunSettings,
    *,
    seed: int,
    world_size: int = 1,
    runner_name: str,
    device: torch.device | None = None,
) -> tuple[RunPlan, RunStats]:
    """Seed, initialise the sampler, place the agent, initialise the algorithm, resume.

    A snapshot to resume from is loaded (onto the CPU) and checked against the run before
    anything starts; then the state is restored (after ``algo.initialize``, onto the
    agent's device), ``progress.csv`` repaired and the replay buffer loaded.

    Args:
        algo: the algorithm (initialised here for the run's iterations).
        agent: the agent (initialised by the sampler).
        sampler: the sampler (its envs are seeded with ``seed + 1``); shut down here if
            resuming fails after it started.
        settings: the runner's settings; ``n_steps`` and ``log_interval_steps`` count the
            steps of all ranks.
        seed: this process's seed (``SyncRl`` gives each rank its own).
        world_size: number of ranks collecting one iteration together.
        runner_name: for the start-up log line.
        device: where the agent trains, set before ``algo.initialize`` builds the
            optimizers (None: where its parameters are); see the module docstring.

    Returns:
        The plan of the run and its statistics (counters restored from a snapshot when
        ``settings.resume_from`` is set).

    Raises:
        FileNotFoundError: ``resume_from`` holds no snapshot.
        SnapshotError: (a ``ValueError`` naming the file) the snapshot is corrupt, unsafe,
            of another run (``check_resume``) or finished, or does not fit.
    """
    batch_spec = sampler.batch_spec
    rank_batch = batch_spec.size
    # One rank's share of the run and of the log interval, in its own steps.
    rank_steps = -(-settings.n_steps // world_size)
    rank_log_interval = max(1, settings.log_interval_steps // world_size)
    n_itr = -(-rank_steps // rank_batch)
    identity = run_identity(
        algo=algo,
        agent=agent,
        env_fn=sampler.settings.env_fn,
        env_kwargs=sampler.settings.env_kwargs,
        batch_T=batch_spec.T,
        batch_B=batch_spec.B,
        world_size=world_size,
    )
    snap, snap_file = load_resume(
        settings.resume_from, identity=identity, n_itr=n_itr, n_steps=settings.n_steps
    )
    set_seed(seed)
    sampler.initialize(agent, seed=seed + 1, traj_info_kwargs={"discount": algo.discount})
    start_itr, counters = 0, dict[str, Any]()
    try:
        place_agent(agent, device)
        algo.initialize(agent, n_itr=n_itr, batch_spec=batch_spec)
        if snap is not None and snap_file is not None:
            replay = algo.replay_buffer if isinstance(algo, ReplayAlgorithm) else None
            start_itr, counters = restore_run(snap, snap_file, agent, algo, replay)
    except BaseException:
        sampler.shutdown()
        raise
    stats = RunStats(
        log_traj_window=settings.log_traj_window,
        update_counter=algo.update_counter,
        **counters,
        run_info=identity,
    )
    plan = RunPlan(
        batch_spec=batch_spec,
        start_itr=start_itr,
        n_itr=n_itr,
        itr_batch_size=rank_batch * world_size,
        log_interval_itrs=max(1, rank_log_interval // rank_batch),
    )
    get_logger().log(
        f"{runner_name}: {type(algo).__name__}, {n_itr} iterations of "
        f"{plan.itr_batch_size} steps, logging every {plan.log_interval_itrs}, seed {seed}, "
        f"agent on {agent.device}"
    )
    return plan, stats


def place_agent(agent: Agent, device: torch.device | None) -> None:
    """Move the agent's parameters and buffers (targets included) to ``device``.

    ``None`` leaves them where they are. Called by ``start_run`` between
    ``sampler.initialize`` and ``algo.initialize`` (see the module docstring).
    """
    if device is not None:
        agent.to(device)


def load_resume(
    resume_from: str | Path | None,
    *,
    identity: Mapping[str, Any],
    n_itr: int,
    n_steps: int,
) -> tuple[dict[str, Any] | None, Path | None]:
    """The snapshot to resume from and its file, checked against the run; ``(None, None)``.

    ``progress.csv`` is repaired to agree with the snapshot first, also when the checks
    refuse to go on (``tdrl.logging.snapshot.check_resume`` says what they compare).

    Raises:
        FileNotFoundError: ``resume_from`` holds no snapshot.
        SnapshotError: the snapshot is corrupt, unsafe, of another run or finished.
    """
    if resume_from is None:
        return None, None
    snap_file = find_snapshot(resume_from)
    snap = load_snapshot(snap_file)
    repair_progress(snap, snap_file)  # also when the checks below refuse to go on
    check_resume(snap, snap_file, identity=identity, n_itr=n_itr, n_steps=n_steps)
    return snap, snap_file


def restore_run(
    snap: Mapping[str, Any],
    file: Path,
    agent: Agent,
    algo: Stateful,
    replay: SavedReplay | None,
) -> tuple[int, dict[str, Any]]:
    """Load ``snap`` into the agent, the algorithm and (when it saved one) ``replay``.

    Returns:
        The iteration to run next and the counters, as ``RunStats`` keyword arguments
        (``cum_steps``, ``cum_completed_trajs``, ``cum_time``).
    """
    start_itr = restore(snap, agent, algo, file=file)
    counters = {
        "cum_steps": int(snap["cum_steps"]),
        "cum_completed_trajs": int(snap.get("cum_completed_trajs", 0)),
        "cum_time": float(snap.get("cum_time", 0.0)),
    }
    if replay is not None:
        restore_replay(replay, snap, file)
    get_logger().log(f"resumed from iteration {start_itr - 1} ({counters['cum_steps']} steps)")
    return start_itr, counters


def check_settings(
    snap: Mapping[str, Any],
    file: Path,
    settings: Mapping[str, Any],
    *,
    moved: Mapping[str, str] | None = None,
) -> None:
    """Refuse to resume unless the snapshot's ``settings`` equal the run's, naming each one.

    Args:
        snap: the snapshot (its ``"settings"``: names to plain data).
        file: its file, for the messages.
        settings: the run's settings (``describe``d values).
        moved: where a snapshot of an older version recorded a setting (new -> old name).

    Raises:
        SnapshotError: the snapshot records no settings, or others than ``settings``.
    """
    saved, moved = snap.get("settings"), moved or {}
    if not isinstance(saved, Mapping):
        raise SnapshotError(f"{file} does not record the run's settings: it cannot be checked")
    diffs = []
    for key, value in settings.items():
        old = saved.get(key, saved.get(moved.get(key, key)))
        if old != value:
            diffs.append(f"{key} {old!r} in the snapshot, {value!r} requested")
    if diffs:
        raise SnapshotError(f"cannot resume from {file}: " + "; ".join(diffs))
