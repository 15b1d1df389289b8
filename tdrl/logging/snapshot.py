"""Runner snapshots: what they record beside the state dicts, and what resuming checks.

A runner snapshot (written by ``tdrl.runners.base.log_iteration``) is a dict of tensors and
plain data, loaded back with ``weights_only=True``:

==========================  ==========================================================
``itr``                     the iteration just finished; a resume starts at ``itr + 1``
``cum_steps``, ...          the run's counters (``cum_completed_trajs``, ``cum_time``)
``agent_state_dict``        ``agent.state_dict()``
``algo_state_dict``         ``algo.state_dict()``: optimizers, schedules, temperatures
``rng``                     ``tdrl.utils.seed.rng_state()``: torch, NumPy and Python
``run``                     what the run is, :func:`run_identity`
``progress``                ``{"rows": n, "row": {...}}``: the ``progress.csv`` rows up to
                            and including this log point's, and that row (see
                            ``tdrl.logging.logger`` for the commit protocol)
``replay_itr``              the iteration of the replay buffer saved with it, or None
==========================  ==========================================================

Resuming (:func:`check_resume`) refuses a snapshot whose run differs from the requested one
in what changes the run's meaning: the algorithm's and the agent's classes, the env
(``env_fn``'s name and ``env_kwargs``), ``batch_T``, ``batch_B`` and the number of ranks;
and a snapshot that already reached the requested ``n_steps``. There is no override: to
start a different run from a snapshot's weights, load them by hand (:func:`load_snapshot`,
then ``agent.load_state_dict``), which starts a new run with its own counters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from tdrl.logging.context import get_logger
from tdrl.logging.files import SnapshotError, commit_dir, one_line, staging_dir
from tdrl.utils.seed import set_rng_state

__all__ = [
    "IDENTITY_FIELDS",
    "REPLAY_DIR",
    "SavedReplay",
    "Stateful",
    "check_resume",
    "commit_log_point",
    "describe",
    "load_state",
    "repair_progress",
    "restore_replay",
    "restore_state",
    "run_identity",
]

#: Where ``snapshot_replay`` keeps the replay buffer, in the run directory.
REPLAY_DIR = "replay"

#: What :func:`check_resume` compares, with the name the message gives each.
IDENTITY_FIELDS = {
    "algo": "algorithm",
    "agent": "agent",
    "env_fn": "env_fn",
    "env_kwargs": "env_kwargs",
    "batch_T": "batch_T",
    "batch_B": "batch_B",
    "world_size": "world size (ranks)",
}
_REQUIRED = ("itr", "cum_steps", "agent_state_dict", "algo_state_dict")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class Stateful(Protocol):
    """Anything with ``load_state_dict`` (agents, algorithms)."""

    def load_state_dict(self, state: dict[str, Any]) -> Any:
        """Restore a state dict."""
        ...


class SavedReplay(Protocol):
    """What saving and resuming need of a replay buffer (``tdrl.replays.ReplayBuffer``)."""

    def save(
        self, path: Path, *, info: Mapping[str, Any] | None = None, atomic: bool = True
    ) -> None:
        """Write the buffer to directory ``path``, with ``info``."""
        ...

    def saved_versions(self, path: Path) -> list[Path]:
        """The complete saved versions of directory ``path`` (it, then its staged copy)."""
        ...

    def saved_info(self, path: Path) -> dict[str, Any] | None:
        """The ``info`` saved with the buffer in ``path``."""
        ...

    def load(self, path: Path) -> Any:
        """Restore the buffer saved in ``path``."""
        ...

    def __len__(self) -> int:
        """Transitions that can be sampled."""
        ...


def describe(value: Any) -> Any:
    """``value`` as plain data that is equal between two runs given the same thing.

    Numbers, strings and None stay; lists, tuples and dicts are described item by item;
    classes and functions become their qualified name; anything else its ``repr`` without
    memory addresses.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [describe(v) for v in value]
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        return value.__qualname__
    return _ADDRESS.sub("", repr(value))


def run_identity(
    *,
    algo: object,
    agent: object,
    env_fn: Callable[..., Any] | None,
    env_kwargs: Mapping[str, Any] | None,
    batch_T: int,
    batch_B: int,
    world_size: int,
) -> dict[str, Any]:
    """What a resumed run must share with its snapshot, as plain data.

    Args:
        algo: the algorithm (its class name is kept).
        agent: the agent (its class name is kept).
        env_fn: the sampler's env factory (its name is kept); None when unknown.
        env_kwargs: its keyword arguments; None when unknown.
        batch_T: time steps per batch.
        batch_B: envs per batch (one rank's).
        world_size: ranks collecting each iteration.
    """
    return {
        "algo": type(algo).__qualname__,
        "agent": type(agent).__qualname__,
        "env_fn": None if env_fn is None else describe(env_fn),
        "env_kwargs": None if env_kwargs is None else describe(dict(env_kwargs)),
        "batch_T": int(batch_T),
        "batch_B": int(batch_B),
        "world_size": int(world_size),
    }


def check_resume(
    snap: Mapping[str, Any],
    file: Path,
    *,
    identity: Mapping[str, Any],
    n_itr: int,
    n_steps: int,
) -> None:
    """Refuse to resume from ``snap`` a run that is not its continuation.

    Args:
        snap: the loaded snapshot.
        file: its file, named in the messages.
        identity: the requested run's :func:`run_identity`.
        n_itr: the requested run's iterations.
        n_steps: the requested run's environment steps.

    Raises:
        SnapshotError: a runner snapshot's entry is missing; the snapshot's run differs
            (every difference is named, the snapshot's value first); or it already reached
            ``n_steps``.
    """
    missing = [key for key in _REQUIRED if key not in snap]
    if missing:
        raise SnapshotError(f"{file} is not a tdrl runner snapshot: it has no {missing}")
    saved = snap.get("run")
    if not isinstance(saved, Mapping):
        raise SnapshotError(
            f"{file} does not record what run it belongs to (saved by an older tdrl?): "
            "it cannot be checked against this run"
        )
    diffs = []
    for key, label in IDENTITY_FIELDS.items():
        old, new = saved.get(key), identity.get(key)
        if old is not None and new is not None and old != new and repr(old) != repr(new):
            diffs.append(f"{label} {old!r} in the snapshot, {new!r} requested")
    if diffs:
        raise SnapshotError(f"cannot resume from {file}: " + "; ".join(diffs))
    itr = int(snap["itr"])
    if itr + 1 >= n_itr:
        raise SnapshotError(
            f"the run in {file} is finished: its snapshot is of iteration {itr} "
            f"({int(snap['cum_steps'])} steps), which reaches n_steps={n_steps}; pass a larger "
            "n_steps to train it further"
        )


def load_state(file: Path, name: str, target: Stateful, state: Any) -> None:
    """``target.load_state_dict(state)``, a failure named as the snapshot not fitting.

    Raises:
        SnapshotError: the state does not fit ``target`` (names ``file`` and ``name``).
    """
    try:
        target.load_state_dict(state)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as exc:
        detail = one_line(exc)[:300]
        raise SnapshotError(
            f"the {name} state in {file} does not fit this {type(target).__name__}: {detail}"
        ) from None


def repair_progress(snap: Mapping[str, Any], file: Path) -> None:
    """Make the active logger's ``progress.csv`` agree with the snapshot ``file`` resumed from.

    Only when the logger writes to the snapshot's own run directory (a new directory that
    starts from another run's snapshot is left alone). See ``Logger.repair_progress``.
    """
    logger = get_logger()
    progress = snap.get("progress")
    if logger.run_dir is None or not isinstance(progress, Mapping):
        return
    if Path(logger.run_dir).resolve() != Path(file).parent.resolve():
        return
    done = logger.repair_progress(int(progress["rows"]), progress.get("row"))
    if done:
        logger.log(f"resuming from {file}: {done}")


def restore_replay(replay: SavedReplay, snap: Mapping[str, Any], file: Path) -> None:
    """Load the replay buffer saved with snapshot ``file``, if it was saved with one.

    It is ``replay`` beside the snapshot or, when a crash cut the commit short,
    ``.replay.new``; the process that logs to that run directory then completes the commit
    (other ``SyncRl`` ranks only read, and look again if it moved under them).

    Raises:
        SnapshotError: a saved buffer is there, but of another iteration, or it does not
            fit the buffer.
    """
    replay_itr = snap.get("replay_itr")
    if replay_itr is None:
        return
    replay_dir = Path(file).parent / REPLAY_DIR
    logger = get_logger()
    owner = (
        logger.run_dir is not None and Path(logger.run_dir).resolve() == replay_dir.parent.resolve()
    )
    found: dict[Path, Any] = {}
    for attempt in range(2):
        found = {
            p: (replay.saved_info(p) or {}).get("itr") for p in replay.saved_versions(replay_dir)
        }
        match = next((p for p, itr in found.items() if itr == replay_itr), None)
        if match is None:
            break
        if match != replay_dir and owner:
            commit_dir(replay_dir)
            match = replay_dir
        try:
            replay.load(match)
        except (FileNotFoundError, SnapshotError):
            if match == replay_dir or attempt:  # not a commit that moved it under us
                raise
            continue
        logger.log(f"replay buffer restored from {match} ({len(replay)})")
        return
    if not found:
        logger.log(f"no saved replay buffer in {replay_dir}: starting with an empty one")
        return
    saved = ", ".join(f"{p.name} of iteration {i}" for p, i in found.items())
    raise SnapshotError(
        f"the replay buffer saved with {file} (iteration {replay_itr}) is not in {replay_dir}, "
        f"which holds {saved}; resume from the snapshot of that iteration, or remove the "
        "replay directory to start with an empty buffer"
    )


def commit_log_point(
    itr: int,
    make_snapshot: Callable[[dict[str, Any]], dict[str, Any]] | None,
    replay: SavedReplay | None = None,
) -> None:
    """Write the row recorded in the active logger and its snapshot, in the crash-safe order.

    The order of ``tdrl.logging.logger``: ``replay`` staged in ``.replay.new``, the snapshot
    (with the row count, the row and ``replay_itr``), the row, ``.replay.new`` moved to
    ``replay``. Without a snapshot at ``itr`` (``snapshot_mode``) only the row is written.

    Args:
        itr: the iteration of the log point.
        make_snapshot: builds the snapshot from its ``progress`` entry; None writes the
            row only (the evaluation row before training).
        replay: the replay buffer to save with the snapshot; None saves none.
    """
    logger = get_logger()
    staged = None
    if make_snapshot is not None and logger.snapshot_files(itr):
        if replay is not None and logger.run_dir is not None:
            staged = staging_dir(Path(logger.run_dir) / REPLAY_DIR)
            replay.save(staged, info={"itr": itr}, atomic=False)
        row = logger.pending_row()
        params = make_snapshot({"rows": logger.num_rows + (1 if row else 0), "row": row})
        params["replay_itr"] = itr if staged is not None else None
        logger.save_itr_params(itr, params)
    logger.dump_tabular()
    if staged is not None:
        commit_dir(staged.parent / REPLAY_DIR)


def restore_state(
    snap: Mapping[str, Any], agent: Stateful, algo: Stateful, *, file: Path | None = None
) -> int:
    """Load a runner snapshot into the agent, the algorithm and the global RNGs.

    Args:
        snap: the loaded snapshot.
        agent: the (initialised) agent.
        algo: the (initialised) algorithm.
        file: the snapshot's file, for the messages.

    Returns:
        The iteration to continue from, ``itr + 1``.

    Raises:
        SnapshotError: a state does not fit (names the file and the state).
    """
    where = file if file is not None else Path("<snapshot>")
    load_state(where, "agent", agent, snap["agent_state_dict"])
    load_state(where, "algorithm", algo, snap["algo_state_dict"])
    if snap.get("rng") is not None:
        try:
            set_rng_state(snap["rng"])
        except ValueError as exc:
            raise SnapshotError(f"the RNG state in {where}: {one_line(exc)}") from None
    return int(snap["itr"]) + 1
