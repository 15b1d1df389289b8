"""Run logger writing rllab/viskit-compatible output, and snapshot helpers.

A run directory holds:

- ``progress.csv``: one row per :meth:`Logger.dump_tabular`, columns in first-seen order
  (viskit and pandas read it directly). A value a row does not have, in a row written
  before its column first appeared or in a later row that lacks it, is written ``nan``:
  missing reads as missing, never as zero;
- ``debug.log``: every :meth:`Logger.log` line with a timestamp, flushed immediately;
- ``params.json``: the run configuration (written by :func:`tdrl.logging.logger_context`);
- snapshots ``params.pkl`` and/or ``itr_{N}.pkl`` written with :func:`torch.save`, tensors
  and plain data only, read back with ``weights_only=True`` (:func:`load_snapshot`);
- ``replay/``: the replay buffer, when the runner saves it with its snapshots;
- TensorBoard event files when asked for.

Files follow the umask like any file the user creates. How each is written so that a crash
loses nothing and duplicates nothing:

* ``params.pkl``, ``itr_{N}.pkl``, ``params.json`` and a rewritten ``progress.csv`` are
  written whole beside their place and moved in with ``os.replace``
  (:mod:`tdrl.logging.files`): a kill or a full disk leaves the old complete file.
* A ``progress.csv`` row is appended and fsync'ed. A failed append is cut off again (the
  file is truncated to its old length); a kill in the middle of one can leave a partial last
  line, which a resuming :class:`Logger` drops.
* **Commit order of a log point** (``tdrl.runners.base.log_iteration``): (1) the replay
  buffer, when saved, is written whole to ``.replay.new``; (2) the snapshot is written; it
  records the iteration, the number of ``progress.csv`` rows up to and including this log
  point's row, and that row itself; (3) the row is appended to ``progress.csv``; (4)
  ``.replay.new`` is moved to ``replay``. The snapshot is the commit: what it counts is the
  run.
* **Repair on resume** (:meth:`Logger.repair_progress`, called by ``start_run``):
  ``progress.csv`` is made to agree with the snapshot resumed from: rows after the
  snapshot's count are dropped (their iterations run again), and a missing row of the
  snapshot's own log point is appended from the snapshot. The replay buffer is taken from
  ``replay`` or ``.replay.new``, whichever was saved with the snapshot's iteration.

A kill at any moment (SIGINT, SIGTERM, SIGKILL, a full disk) followed by a resume therefore
leaves ``progress.csv`` with every log point exactly once.
"""

from __future__ import annotations

import datetime
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tqdm

from tdrl.logging.files import (
    LAST_SNAPSHOT_FILE,
    check_plain,
    check_run_dir,
    named_write_errors,
)
from tdrl.logging.files import atomic_write_bytes as atomic_write_bytes  # re-exported
from tdrl.logging.files import find_snapshot as find_snapshot
from tdrl.logging.files import load_snapshot as load_snapshot
from tdrl.logging.table import ProgressTable, misc_stats
from tdrl.utils.checks import check_choice, check_int

SNAPSHOT_MODES = ("none", "last", "all", "gap", "last+gap")
"""Allowed values of ``snapshot_mode``:

- ``"none"``: never save;
- ``"last"``: overwrite ``params.pkl`` at every save;
- ``"all"``: keep ``itr_{N}.pkl`` for every save;
- ``"gap"``: keep ``itr_{N}.pkl`` when ``N % snapshot_gap == 0``;
- ``"last+gap"``: both ``"last"`` and ``"gap"``.
"""

PROGRESS_FILE = "progress.csv"
DEBUG_FILE = "debug.log"
PARAMS_FILE = "params.json"
ITERATION_KEY = "Diagnostics/Iteration"

Scalar = int | float


def check_snapshot_args(snapshot_mode: str, snapshot_gap: int) -> None:
    """Validates snapshot arguments.

    Args:
        snapshot_mode: One of :data:`SNAPSHOT_MODES`.
        snapshot_gap: Positive int.

    Raises:
        ValueError: Naming the bad argument and its allowed values.
    """
    check_choice("snapshot_mode", snapshot_mode, SNAPSHOT_MODES)
    check_int("snapshot_gap", snapshot_gap, minimum=1)


def _to_scalar(key: str, value: Any) -> Scalar:
    """Converts a python / numpy / one-element torch number to ``int`` or ``float``."""
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        size = value.numel() if isinstance(value, torch.Tensor) else np.size(value)
        if size != 1:
            raise ValueError(
                f"record_tabular({key!r}) needs a single number, got shape {tuple(value.shape)}"
            )
        value = value.item()
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float):
        return value
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"record_tabular({key!r}) needs a number, got {type(value).__name__}: {value!r}"
        ) from e


def _format_value(value: Scalar) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"


class Logger:
    """Writes one run's progress table, debug log, snapshots and optional TensorBoard scalars.

    Usually made by :func:`tdrl.logging.logger_context` and reached with
    :func:`tdrl.logging.get_logger`.

    Attributes:
        run_dir: Directory all files are written to.
        snapshot_mode: One of :data:`SNAPSHOT_MODES`.
        snapshot_gap: Keep ``itr_{N}.pkl`` when ``N % snapshot_gap == 0`` (gap modes).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        snapshot_mode: str = "last",
        snapshot_gap: int = 1,
        use_tensorboard: bool = False,
        resume: bool = False,
        echo: bool = True,
    ) -> None:
        """Opens (creating if needed) a run directory.

        Args:
            run_dir: Directory to write into; created with parents.
            snapshot_mode: One of :data:`SNAPSHOT_MODES`.
            snapshot_gap: Positive int, used by the ``"gap"`` modes.
            use_tensorboard: Also write scalars to TensorBoard event files in ``run_dir``
                (needs ``pip install "tdrl[tb]"``).
            resume: Append to an existing ``progress.csv`` and ``debug.log`` instead of
                refusing to touch them.
            echo: Default for echoing :meth:`log` and :meth:`dump_tabular` to the console.

        Raises:
            ValueError: Bad ``snapshot_mode`` or ``snapshot_gap``.
            ImportError: ``use_tensorboard`` without tensorboard installed.
            LogDirError: ``run_dir`` (or a parent) is a file, or it cannot be created or
                written (an ``OSError`` and a ``ValueError``).
            FileExistsError: ``run_dir`` already has a ``progress.csv`` and ``resume`` is False.
        """
        check_snapshot_args(snapshot_mode, snapshot_gap)
        summary_writer_cls = _import_summary_writer() if use_tensorboard else None
        self.run_dir = Path(run_dir)
        self.snapshot_mode = snapshot_mode
        self.snapshot_gap = snapshot_gap
        self._echo = echo
        check_run_dir(self.run_dir)
        progress_path = self.run_dir / PROGRESS_FILE
        if progress_path.exists() and not resume:
            raise FileExistsError(
                f"Run directory {self.run_dir} already holds a {PROGRESS_FILE}; pass another "
                "run ID, or resume=True (tdrl train: --resume) to append to it."
            )
        self._table = ProgressTable(progress_path)
        self._row: dict[str, Scalar] = {}
        self._debug_file = open(self.run_dir / DEBUG_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._tb_writer = (
            summary_writer_cls(log_dir=str(self.run_dir)) if summary_writer_cls else None
        )
        self._closed = False
        if self._table.repaired:
            self.log(self._table.repaired, echo=False)

    # ----------------------------------------------------------------------------- text log

    def log(self, msg: str, *, echo: bool | None = None) -> None:
        """Appends ``msg`` to ``debug.log`` with a timestamp, and echoes it to the console.

        Args:
            msg: Text; every line gets the timestamp prefix.
            echo: Print with ``tqdm.tqdm.write`` (safe alongside progress bars); defaults to the
                logger's ``echo``.
        """
        self._check_open()
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        text = "\n".join(f"{stamp} | {line}" for line in str(msg).splitlines() or [""])
        with named_write_errors(self.run_dir / DEBUG_FILE, kept=False):
            self._debug_file.write(text + "\n")
            self._debug_file.flush()
        if self._echo if echo is None else echo:
            tqdm.tqdm.write(text)

    # ----------------------------------------------------------------------------- tabular

    def record_tabular(self, key: str, value: Any) -> None:
        """Stores a scalar in the current row (a later value for the same key replaces it).

        Args:
            key: Column name, e.g. ``"Diagnostics/Iteration"`` or ``"loss"``.
            value: Python number, numpy scalar or one-element tensor; bools and ints are kept
                as ints, everything else becomes a float.

        Raises:
            TypeError: ``value`` is not a number.
            ValueError: ``value`` is an array or tensor with more than one element.
        """
        self._row[key] = _to_scalar(key, value)

    def record_tabular_misc_stat(self, key: str, values: Any) -> None:
        """Records ``{key}Average``, ``Std`` (population), ``Median``, ``Min`` and ``Max``.

        Args:
            key: Prefix, e.g. ``"Return"`` gives ``ReturnAverage``, ``ReturnStd``, ...
            values: Sequence, numpy array or tensor (flattened); all five stats are NaN when
                it is empty.
        """
        for suffix, stat in misc_stats(values).items():
            self._row[f"{key}{suffix}"] = stat

    def dump_tabular(self, *, echo: bool | None = None) -> None:
        """Appends the current row to ``progress.csv`` (and TensorBoard) and starts a new row.

        New keys grow the header: the whole file is then rewritten atomically with ``nan``
        in the new columns of the old rows. Keys missing from this row are written ``nan``.
        The file is fsync'ed, so a crash later loses nothing dumped; a failed write leaves
        the file as it was. Does nothing for an empty row.

        Args:
            echo: Also print the row as a two-column table (and put it in ``debug.log``);
                defaults to the logger's ``echo``.

        Raises:
            OSError: ``progress.csv`` could not be written (the message names it); the row
                is dropped and the file is unchanged.
        """
        self._check_open()
        if not self._row:
            return
        row, self._row = self._row, {}
        self._table.append({k: _format_value(v) for k, v in row.items()})
        if self._tb_writer is not None:
            step = int(row.get(ITERATION_KEY, self._table.num_rows - 1))
            for key, value in row.items():
                self._tb_writer.add_scalar(key, value, step)
            self._tb_writer.flush()
        if self._echo if echo is None else echo:
            self.log(_format_table(row), echo=True)

    @property
    def num_rows(self) -> int:
        """Rows in ``progress.csv`` (the current, undumped row not counted)."""
        return self._table.num_rows

    def pending_row(self) -> dict[str, Scalar]:
        """A copy of the row recorded since the last :meth:`dump_tabular`."""
        return dict(self._row)

    def repair_progress(self, n_rows: int, last_row: Mapping[str, Scalar] | None = None) -> str:
        """Make ``progress.csv`` agree with a snapshot that counts ``n_rows`` rows.

        Rows after the first ``n_rows`` are dropped (they were logged after the snapshot and
        their iterations run again); if the file holds ``n_rows - 1`` rows, ``last_row`` (the
        snapshot's own row) is appended. See the module docstring for the protocol.

        Args:
            n_rows: rows up to and including the snapshot's own.
            last_row: the snapshot's row, as recorded.

        Returns:
            What was changed, for the log ("" when nothing).
        """
        self._check_open()
        done = []
        dropped = self._table.keep(n_rows)
        if dropped:
            done.append(f"dropped {dropped} row(s) of progress.csv logged after the snapshot")
        if self._table.num_rows == n_rows - 1 and last_row:
            pending, self._row = self._row, dict(last_row)
            self.dump_tabular(echo=False)
            self._row = pending
            done.append("restored the snapshot's row of progress.csv (lost in a crash)")
        elif self._table.num_rows < n_rows:
            done.append(
                f"progress.csv holds {self._table.num_rows} rows where the snapshot counts "
                f"{n_rows}: rows are missing (left as they are)"
            )
        return "; ".join(done)

    # ----------------------------------------------------------------------------- snapshots

    def snapshot_files(self, itr: int) -> list[Path]:
        """The files :meth:`save_itr_params` writes at ``itr`` (none: no snapshot then)."""
        mode = self.snapshot_mode
        paths = []
        if mode in ("last", "last+gap"):
            paths.append(self.run_dir / LAST_SNAPSHOT_FILE)
        if mode == "all" or (mode in ("gap", "last+gap") and itr % self.snapshot_gap == 0):
            paths.append(self.run_dir / f"itr_{itr}.pkl")
        return paths

    def save_itr_params(self, itr: int, params: dict[str, Any]) -> Path | None:
        """Saves a snapshot with :func:`torch.save` as ``snapshot_mode`` says.

        ``params`` must be tensors and plain data (checked first), so that
        :func:`load_snapshot` reads it back without running code. It is serialised once,
        then each file is written to a temp file and moved in place with ``os.replace``, so
        an interrupted or failed save never leaves a corrupt snapshot.

        Args:
            itr: Iteration number, used in ``itr_{itr}.pkl`` and for ``snapshot_gap``.
            params: Tensors and plain data (numbers, strings, None, lists, tuples, dicts),
                usually state dicts by name.

        Returns:
            The last file written, or None when this mode saves nothing at ``itr``.

        Raises:
            TypeError: ``params`` holds another object (the message names the entry).
            OSError: A file could not be written (the message names it); the previous
                snapshot is unchanged.
        """
        paths = self.snapshot_files(itr)
        if not paths:
            return None
        check_plain(params)
        buffer = io.BytesIO()
        torch.save(params, buffer)
        for path in paths:
            atomic_write_bytes(path, buffer.getvalue())
        return paths[-1]

    # ----------------------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Closes ``debug.log`` and the TensorBoard writer; calling it again does nothing.

        A row recorded but not dumped is dropped.
        """
        if self._closed:
            return
        self._closed = True
        if self._tb_writer is not None:
            self._tb_writer.close()
        with named_write_errors(self.run_dir / DEBUG_FILE, kept=False):
            self._debug_file.close()  # flushes what is buffered

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"Logger for {self.run_dir} is closed")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(run_dir={str(self.run_dir)!r}, "
            f"snapshot_mode={self.snapshot_mode!r}, snapshot_gap={self.snapshot_gap})"
        )


class NullLogger:
    """Logger used outside any :func:`tdrl.logging.logger_context`: writes no files.

    :meth:`log` still prints to the console, everything else does nothing.
    """

    run_dir: Path | None = None
    snapshot_mode: str = "none"
    snapshot_gap: int = 1

    def log(self, msg: str, *, echo: bool | None = None) -> None:
        """Prints ``msg`` with ``tqdm.tqdm.write`` unless ``echo`` is False."""
        if echo is not False:
            tqdm.tqdm.write(str(msg))

    def record_tabular(self, key: str, value: Any) -> None:
        """Does nothing."""

    def record_tabular_misc_stat(self, key: str, values: Any) -> None:
        """Does nothing."""

    def dump_tabular(self, *, echo: bool | None = None) -> None:
        """Does nothing."""

    num_rows: int = 0

    def pending_row(self) -> dict[str, Scalar]:
        """An empty row."""
        return {}

    def repair_progress(self, n_rows: int, last_row: Mapping[str, Scalar] | None = None) -> str:
        """Does nothing and returns ""."""
        return ""

    def snapshot_files(self, itr: int) -> list[Path]:
        """No files."""
        return []

    def save_itr_params(self, itr: int, params: dict[str, Any]) -> Path | None:
        """Does nothing and returns None."""
        return None

    def close(self) -> None:
        """Does nothing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _format_table(row: dict[str, Scalar]) -> str:
    width = max(len(k) for k in row)
    texts = {k: _format_value(v) for k, v in row.items()}
    value_width = max(len(t) for t in texts.values())
    rule = "-" * (width + 2 + value_width)
    lines = [f"{k:<{width}}  {t:>{value_width}}" for k, t in texts.items()]
    return "\n".join([rule, *lines, rule])


def _import_summary_writer() -> type:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError('use_tensorboard=True needs TensorBoard: pip install "tdrl[tb]"') from e
    return SummaryWriter
