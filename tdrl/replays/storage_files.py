"""A replay buffer's storage on disk: written with its file list, read back only if it fits.

``save_storage`` memmaps the storage's tensors into a directory (tensordict's format: a
``meta.json`` per level and one raw ``.memmap`` file per tensor) and returns the *layout*:
each tensor's key, file, shape, dtype and file size. The buffer keeps the layout in its
state file. ``load_storage`` checks every file against it before reading anything: a
missing, truncated or resized file, or one whose steps x envs are not the buffer's, is
refused with an error naming the file (a truncated memmap would otherwise read as zeros).
Reading uses ``TensorDict.load_memmap(..., allow_pickle=False)``: no pickled object runs.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tensordict import TensorDict

from tdrl._compat import LazyTensorStorage, storage_tensordict
from tdrl.logging.files import SnapshotError, named_write_errors, one_line

__all__ = ["load_storage", "save_storage"]


def save_storage(storage: LazyTensorStorage, where: Path) -> list[dict[str, Any]]:
    """Memmap ``storage``'s tensors into directory ``where`` (replaced) and fsync them.

    Returns:
        The layout: one ``{"key", "file", "shape", "dtype", "nbytes"}`` per tensor, plain
        data (``file`` relative to ``where``).

    Raises:
        OSError: a file could not be written (named).
    """
    layout = []
    with named_write_errors(where):
        if where.exists():
            shutil.rmtree(where)
        saved = storage_tensordict(storage).memmap(where, copy_existing=True)
        for key, leaf in saved.items(True, True):
            file = Path(leaf.filename)
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            layout.append(
                {
                    "key": list(key) if isinstance(key, tuple) else [key],
                    "file": file.relative_to(where).as_posix(),
                    "shape": list(leaf.shape),
                    "dtype": str(leaf.dtype),
                    "nbytes": file.stat().st_size,
                }
            )
    return layout


def load_storage(
    where: Path,
    layout: Any,
    *,
    state_file: Path,
    grid: tuple[int, int],
    stored_keys: Sequence[Any],
) -> TensorDict | None:
    """The storage saved in ``where``, each file checked against ``layout`` first.

    Args:
        where: the storage directory.
        layout: what ``save_storage`` returned (from the state file); empty: none saved.
        state_file: the state file the layout came from, for the messages.
        grid: ``(T_capacity, batch_B)`` of the buffer loading it.
        stored_keys: the top-level keys that buffer stores.

    Returns:
        A memory-mapped TensorDict ``[T_capacity, batch_B]``, or None.

    Raises:
        SnapshotError: a file is missing, has another size than saved, or holds another
            grid; the keys are not the buffer's; or the directory cannot be read.
    """
    if not layout:
        return None
    if not isinstance(layout, list):
        raise SnapshotError(f"replay state {state_file} has no list of storage files")
    expected = {}
    for entry in layout:
        name = str(entry["file"])
        file = where / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise SnapshotError(f"replay state {state_file} names a file outside {where}")
        if not file.is_file():
            raise SnapshotError(f"replay storage file {file} is missing")
        size = file.stat().st_size
        if size != entry["nbytes"]:
            raise SnapshotError(
                f"replay storage file {file} has {size} bytes where {entry['nbytes']} were "
                "saved (truncated or resized)"
            )
        if tuple(entry["shape"][:2]) != tuple(grid):
            raise SnapshotError(
                f"replay storage file {file} holds {tuple(entry['shape'][:2])} steps x envs, "
                f"the buffer loading it {tuple(grid)}"
            )
        expected[tuple(entry["key"])] = (list(entry["shape"]), str(entry["dtype"]))
    stored = {str(k[0]) for k in expected}
    wanted = {str(k) for k in stored_keys}
    if stored != wanted:
        raise SnapshotError(
            f"replay storage in {where} holds {sorted(stored)}, the buffer stores {sorted(wanted)}"
        )
    try:
        data = TensorDict.load_memmap(where, allow_pickle=False)
    except Exception as exc:  # tensordict raises many kinds for a bad directory
        raise SnapshotError(
            f"replay storage in {where} cannot be read: {one_line(exc)[:200]}"
        ) from None
    got = {
        k if isinstance(k, tuple) else (k,): (list(v.shape), str(v.dtype))
        for k, v in data.items(True, True)
    }
    if got != expected:
        raise SnapshotError(f"replay storage in {where} does not match {state_file}")
    return data
