"""``progress.csv``: the header, the rows, and how each change reaches the disk.

The header lists the columns in first-seen order; each row has one field per column. A row
written before a column first appeared, or a row that lacks a column, holds ``nan`` there
(:data:`MISSING`), which pandas, viskit and ``float()`` read as NaN, never as zero.

``misc_stats`` gives the five statistics a row holds per logged quantity (``Average``,
``Std``, ``Median``, ``Min``, ``Max``).

A row with known columns is appended and fsync'ed; if the append fails (a full disk), the
file is cut back to its old length, so it never keeps half a row. A row with new columns
rewrites the whole file atomically (``tdrl.logging.files.atomic_write_bytes``). A kill in the
middle of an append can still leave a partial last line: opening the table drops it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdrl.logging.files import atomic_write_bytes, named_write_errors

__all__ = ["MISSING", "ProgressTable", "misc_stats"]

#: What a row holds where it has no value (rlpyt's padding; pandas and viskit read NaN).
MISSING = "nan"


def _csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


class ProgressTable:
    """The rows of one ``progress.csv``, appended to and, on resume, cut back.

    Args:
        path: the file; read if it exists (a partial last line is dropped, see
            ``repaired``).

    Attributes:
        path: the file.
        columns: the header, in first-seen order.
        num_rows: data rows in the file.
        repaired: what opening the file had to fix ("" when nothing).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.columns: list[str] = []
        self.num_rows = 0
        self.repaired = ""
        if self.path.exists():
            rows = self._read()
            if rows:
                self.columns = rows[0]
                self.num_rows = len(rows) - 1

    def _read(self) -> list[list[str]]:
        """All lines as lists of fields, after dropping a partial last line from the file."""
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            atomic_write_bytes(self.path, data)
            self.repaired = f"dropped the partial last line of {self.path} (cut off by a crash)"
        return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))

    def append(self, row: Mapping[str, str]) -> None:
        """Write one row of formatted values (new keys become new columns, at the end).

        Raises:
            OSError: the write failed; the file is as it was (the message names it).
        """
        new_keys = [k for k in row if k not in self.columns]
        columns = self.columns + new_keys
        values = [row.get(k, MISSING) for k in columns]
        if new_keys and self.columns:
            old = self._read()[1:]
            padded = [r + [MISSING] * (len(columns) - len(r)) for r in old]
            text = _csv_text([columns, *padded, values])
            atomic_write_bytes(self.path, text.encode("utf-8"))
        else:
            text = _csv_text([columns, values] if not self.columns else [values])
            self._append_text(text)
        self.columns = columns
        self.num_rows += 1

    def _append_text(self, text: str) -> None:
        size = self.path.stat().st_size if self.path.exists() else 0
        with named_write_errors(self.path):
            try:
                with open(self.path, "a", newline="", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:
                with contextlib.suppress(OSError):
                    os.truncate(self.path, size)
                raise

    def keep(self, n_rows: int) -> int:
        """Drop the rows after the first ``n_rows`` (rewritten atomically); returns how many."""
        if self.num_rows <= n_rows:
            return 0
        rows = self._read()
        dropped = len(rows) - 1 - n_rows
        atomic_write_bytes(self.path, _csv_text(rows[: n_rows + 1]).encode("utf-8"))
        self.num_rows = n_rows
        return dropped


def misc_stats(values: Any) -> dict[str, float]:
    """``Average``, ``Std`` (population), ``Median``, ``Min`` and ``Max`` of ``values``.

    ``values``: a sequence, numpy array or tensor (flattened); every stat is NaN when it is
    empty. What ``Logger.record_tabular_misc_stat`` logs (and ``tdrl eval`` prints).
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    elif isinstance(values, Sequence) and any(isinstance(v, torch.Tensor) for v in values):
        values = [float(v) for v in values]
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        return dict.fromkeys(("Average", "Std", "Median", "Min", "Max"), math.nan)
    return {
        "Average": float(np.mean(array)),
        "Std": float(np.std(array)),
        "Median": float(np.median(array)),
        "Min": float(np.min(array)),
        "Max": float(np.max(array)),
    }
