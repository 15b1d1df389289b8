"""Run logger writing rllab/viskit-compatible output, and snapshot helpers.

A run directory holds:

- ``progress.csv``: one row per :meth:`Logger.dump_tabular`, columns in first-seen order
  (viskit and pandas read it directly; fields missing from a row are empty, read as NaN);
- ``debug.log``: every :meth:`Logger.log` line with a timestamp, flushed immediately;
- ``params.json``: the run configuration (written by :func:`tdrl.logging.logger_context`);
- snapshots ``params.pkl`` and/or ``itr_{N}.pkl`` written with :func:`torch.save`;
- TensorBoard event files when asked for.

Every file is written so that a crash loses nothing already written: csv rows are fsync'ed
after each dump and snapshots are replaced atomically.
"""

from __future__ import annotations

import csv
import datetime
import io
import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tqdm

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
LAST_SNAPSHOT_FILE = "params.pkl"
ITERATION_KEY = "Diagnostics/Iteration"

_ITR_SNAPSHOT_RE = re.compile(r"^itr_(\d+)\.pkl$")

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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temp file in the same directory and ``os.replace``.

    A crash at any point leaves either the old file or the new one, never a partial file,
    and no temp file behind (unless the process itself dies mid-write).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
            FileExistsError: ``run_dir`` already has a ``progress.csv`` and ``resume`` is False.
        """
        check_snapshot_args(snapshot_mode, snapshot_gap)
        summary_writer_cls = _import_summary_writer() if use_tensorboard else None
        self.run_dir = Path(run_dir)
        self.snapshot_mode = snapshot_mode
        self.snapshot_gap = snapshot_gap
        self._echo = echo
        self._progress_path = self.run_dir / PROGRESS_FILE
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self._progress_path.exists() and not resume:
            raise FileExistsError(
                f"Run directory {self.run_dir} already holds a {PROGRESS_FILE}; pass another "
                "run ID or resume=True to append to it."
            )
        self._columns: list[str] = []
        self._num_dumps = 0
        if self._progress_path.exists():
            with open(self._progress_path, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
            if rows:
                self._columns = rows[0]
                self._num_dumps = len(rows) - 1
        self._row: dict[str, Scalar] = {}
        self._debug_file = open(self.run_dir / DEBUG_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._tb_writer = (
            summary_writer_cls(log_dir=str(self.run_dir)) if summary_writer_cls else None
        )
        self._closed = False

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
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        elif isinstance(values, Sequence) and any(isinstance(v, torch.Tensor) for v in values):
            values = [float(v) for v in values]
        array = np.asarray(values, dtype=np.float64).reshape(-1)
        if array.size == 0:
            stats = dict.fromkeys(("Average", "Std", "Median", "Min", "Max"), math.nan)
        else:
            stats = {
                "Average": float(np.mean(array)),
                "Std": float(np.std(array)),
                "Median": float(np.median(array)),
                "Min": float(np.min(array)),
                "Max": float(np.max(array)),
            }
        for suffix, stat in stats.items():
            self._row[f"{key}{suffix}"] = float(stat)

    def dump_tabular(self, *, echo: bool | None = None) -> None:
        """Appends the current row to ``progress.csv`` (and TensorBoard) and starts a new row.

        New keys grow the header: the whole file is then rewritten atomically with old rows
        padded with empty fields. Keys missing from this row are written empty. The file is
        fsync'ed, so a crash later loses nothing dumped. Does nothing for an empty row.

        Args:
            echo: Also print the row as a two-column table (and put it in ``debug.log``);
                defaults to the logger's ``echo``.
        """
        self._check_open()
        if not self._row:
            return
        row, self._row = self._row, {}
        new_keys = [k for k in row if k not in self._columns]
        values = [_format_value(row[k]) if k in row else "" for k in self._columns + new_keys]
        if new_keys and self._columns:
            self._rewrite_with_header(self._columns + new_keys, values)
        else:
            write_header = not self._columns
            with open(self._progress_path, "a", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                if write_header:
                    writer.writerow(new_keys)
                writer.writerow(values)
                f.flush()
                os.fsync(f.fileno())
        self._columns += new_keys
        if self._tb_writer is not None:
            step = int(row.get(ITERATION_KEY, self._num_dumps))
            for key, value in row.items():
                self._tb_writer.add_scalar(key, value, step)
            self._tb_writer.flush()
        self._num_dumps += 1
        if self._echo if echo is None else echo:
            self.log(_format_table(row), echo=True)

    def _rewrite_with_header(self, columns: list[str], last_row: list[str]) -> None:
        with open(self._progress_path, newline="", encoding="utf-8") as f:
            old_rows = list(csv.reader(f))[1:]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for old in old_rows:
            writer.writerow(old + [""] * (len(columns) - len(old)))
        writer.writerow(last_row)
        atomic_write_bytes(self._progress_path, buffer.getvalue().encode("utf-8"))

    # ----------------------------------------------------------------------------- snapshots

    def save_itr_params(self, itr: int, params: dict[str, Any]) -> Path | None:
        """Saves a snapshot with :func:`torch.save` as ``snapshot_mode`` says.

        ``params`` is serialised once, then each file is written to a temp file and moved in
        place with ``os.replace``, so an interrupted save never leaves a corrupt snapshot.

        Args:
            itr: Iteration number, used in ``itr_{itr}.pkl`` and for ``snapshot_gap``.
            params: Anything :func:`torch.save` accepts, usually state dicts by name.

        Returns:
            The last file written, or None when this mode saves nothing at ``itr``.
        """
        mode = self.snapshot_mode
        paths = []
        if mode in ("last", "last+gap"):
            paths.append(self.run_dir / LAST_SNAPSHOT_FILE)
        if mode == "all" or (mode in ("gap", "last+gap") and itr % self.snapshot_gap == 0):
            paths.append(self.run_dir / f"itr_{itr}.pkl")
        if not paths:
            return None
        buffer = io.BytesIO()
        torch.save(params, buffer)
        data = buffer.getvalue()
        for path in paths:
            atomic_write_bytes(path, data)
        return paths[-1]

    # ----------------------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Closes ``debug.log`` and the TensorBoard writer; calling it again does nothing.

        A row recorded but not dumped is dropped.
        """
        if self._closed:
            return
        self._closed = True
        self._debug_file.close()
        if self._tb_writer is not None:
            self._tb_writer.close()

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


def find_snapshot(path: str | os.PathLike[str]) -> Path:
    """Finds the snapshot file to load from a file or run directory.

    Args:
        path: A snapshot file, or a run directory: there ``params.pkl`` if present, else the
            ``itr_{N}.pkl`` with the largest ``N``.

    Returns:
        Path of the snapshot file.

    Raises:
        FileNotFoundError: ``path`` does not exist or the directory holds no snapshot.
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        last = path / LAST_SNAPSHOT_FILE
        if last.is_file():
            return last
        itrs = [
            (int(m.group(1)), p)
            for p in path.iterdir()
            if p.is_file() and (m := _ITR_SNAPSHOT_RE.match(p.name))
        ]
        if itrs:
            return max(itrs)[1]
        raise FileNotFoundError(f"No snapshot (params.pkl or itr_N.pkl) in directory {path}")
    raise FileNotFoundError(f"No snapshot file or run directory at {path}")


def load_snapshot(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Loads a snapshot saved by :meth:`Logger.save_itr_params`.

    Args:
        path: A snapshot file or run directory (see :func:`find_snapshot`).
        map_location: Passed to :func:`torch.load`.

    Returns:
        The saved ``params``.

    Raises:
        FileNotFoundError: No snapshot at ``path``.
    """
    return torch.load(find_snapshot(path), map_location=map_location, weights_only=False)
