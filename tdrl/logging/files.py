"""Run files written so that a crash leaves complete files, and read back without running code.

Writing. A file is written whole to a temporary file beside it, flushed to disk, then moved
over the old one with ``os.replace`` (:func:`atomic_write_bytes`): a kill or a full disk at any
moment leaves the old complete file or the new one, never a mix. A directory (a saved replay
buffer) is written whole beside its final place, ``.{name}.new``, and swapped in with two
renames (:func:`staging_dir`, :func:`commit_dir`); a reader that finds no complete ``name``
finds the complete ``.{name}.new`` (:func:`complete_dir`). Files are created with mode
``0o666`` less the process's umask, like any file the user's programs create, so a teammate
or a plotting server can read them when the umask allows it. A write that fails raises an
``OSError`` (the same errno) naming the file and saying that the previous version is kept.

Reading. Snapshots and replay state are loaded with ``torch.load(..., weights_only=True)``
(:func:`load_plain`): tensors and plain containers only, so a planted file cannot run code.
What tdrl saves is checked to be such data before it is written (:func:`check_plain`), so a
run that could not be resumed fails at its first snapshot, not at the resume. A file that is
corrupt, truncated or holds other objects raises :class:`SnapshotError` naming it.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import struct
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "LogDirError",
    "SnapshotError",
    "atomic_write_bytes",
    "check_plain",
    "check_run_dir",
    "commit_dir",
    "complete_dir",
    "load_plain",
    "named_write_errors",
    "one_line",
    "save_plain",
    "staging_dir",
    "writing_dir",
]

_PLAIN_SCALARS = (bool, int, float, complex, str, bytes, type(None))
#: Exact types saved as they are (subclasses, e.g. ``numpy.float64`` of ``float``, are not).
_PLAIN_TYPES: tuple[type, ...] = (*_PLAIN_SCALARS, torch.Size, torch.dtype, torch.device)
_PLAIN_TYPES += (torch.Tensor, torch.nn.Parameter)


class SnapshotError(ValueError):
    """A snapshot or saved replay buffer that cannot be used; the message names the file.

    Raised for a file that is corrupt or truncated, that holds objects other than tensors
    and plain data (loading it could run code), or whose contents do not match the run or
    buffer it is loaded into.
    """


class LogDirError(OSError, ValueError):
    """A log directory that is a file, cannot be created or is not writable (names it)."""


def one_line(text: object) -> str:
    """``text`` on one line: whitespace runs (newlines included) become single spaces."""
    return re.sub(r"\s+", " ", str(text)).strip()


# ----------------------------------------------------------------------------- directories
def check_run_dir(path: Path) -> None:
    """Create directory ``path`` (with parents) and check that files can be written there.

    Raises:
        LogDirError: ``path`` or one of its parents is a file, or it cannot be created or
            written (the message names the path).
    """
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise LogDirError(f"log directory {path} cannot be used: {parent} is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LogDirError(
            f"log directory {path} cannot be created: {exc.strerror or one_line(exc)}"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise LogDirError(f"log directory {path} is not writable")


def _fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename in it) to disk, where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def as_os_error(err: RuntimeError) -> Exception:
    """Torch's ``unable to write to file <f>: No space left on device (28)`` as an OSError."""
    found = re.search(r"unable to write to file <(.+?)>: (.+) \((\d+)\)", str(err))
    if found is None:
        return err
    file, reason, errno = found.groups()
    return OSError(int(errno), reason, file)


@contextmanager
def named_write_errors(path: Path, *, kept: bool = True) -> Iterator[None]:
    """Re-raise an ``OSError`` as one naming ``path``, with the same errno.

    With ``kept``, the message also says that the old version of the file is unchanged.
    """
    try:
        yield
    except OSError as exc:
        if getattr(exc, "_tdrl_named", False):
            raise
        detail = exc.strerror or one_line(exc) or type(exc).__name__
        msg = f"writing {path} failed ({detail})"
        if kept:
            msg += "; its previous version, if any, is unchanged"
        new = OSError(exc.errno, msg) if exc.errno is not None else OSError(msg)
        new._tdrl_named = True  # type: ignore[attr-defined]
        raise new from exc


#: The names ``_create_temp`` gives: ``.{name}.{12 hex digits}.tmp``.
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def remove_stale_temps(directory: Path) -> list[str]:
    """Delete the staged files a killed writer left in ``directory``; returns their names.

    A write stages ``.{name}.{hex}.tmp`` beside its target and renames it over the target
    (``atomic_write_bytes``); a process killed in between leaves the staged file. Call this
    only when no other process writes there (a run being resumed).
    """
    removed = []
    for entry in directory.iterdir() if directory.is_dir() else ():
        if _TEMP_NAME.match(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return sorted(removed)


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new, empty file beside ``path`` (mode ``0o666`` less the umask) and its name."""
    while True:
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file beside it, fsync, and ``os.replace``.

    A kill or a failed write at any point leaves either the old file or the new one, never
    a partial file; no temp file is left behind unless the process itself dies mid-write.
    The file gets mode ``0o666`` less the umask.

    Raises:
        OSError: the write failed (same errno); the message names ``path``.
    """
    path = Path(path)
    with named_write_errors(path):
        fd, tmp = _create_temp(path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)


def staging_dir(path: Path) -> Path:
    """The empty directory ``.{name}.new`` beside ``path`` to write a new version into.

    A stale one (from a crash) is removed first. Move it into place with :func:`commit_dir`.
    """
    path = Path(path)
    staged = path.parent / f".{path.name}.new"
    with named_write_errors(staged):
        if staged.exists():
            shutil.rmtree(staged)
        staged.mkdir(parents=True)
    return staged


def commit_dir(path: Path) -> None:
    """Replace directory ``path`` by its complete staged version ``.{name}.new``.

    Two renames (old out of the way, new into place), then the old version is deleted. A
    kill between them leaves no ``path`` but the complete ``.{name}.new``, which
    :func:`complete_dir` finds.
    """
    path = Path(path)
    staged, old = path.parent / f".{path.name}.new", path.parent / f".{path.name}.old"
    with named_write_errors(path):
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(staged, path)
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)


def complete_dir(path: Path, marker: str) -> list[Path]:
    """The complete versions of directory ``path``: itself, then its staged version.

    A version is complete when it holds ``marker``, the file its writer writes last.
    """
    path = Path(path)
    staged = path.parent / f".{path.name}.new"
    return [p for p in (path, staged) if (p / marker).is_file()]


@contextmanager
def writing_dir(path: Path, marker: str, *, atomic: bool = True) -> Iterator[Path]:
    """The directory a new version of ``path`` is written into; committed when the block ends.

    The block writes the version's files, ``marker`` last (a version holding it is
    complete, :func:`complete_dir`). With ``atomic`` the block writes into the staged
    ``.{name}.new`` (:func:`staging_dir`), which replaces ``path`` (:func:`commit_dir`)
    only if the block ends without an error, so a failure leaves the previous version
    complete; without it the block writes into ``path``, whose old ``marker`` is removed
    first (the directory is incomplete until the block rewrites it).
    """
    path = Path(path)
    target = staging_dir(path) if atomic else path
    target.mkdir(parents=True, exist_ok=True)
    (target / marker).unlink(missing_ok=True)
    yield target
    if atomic:
        commit_dir(path)


# ----------------------------------------------------------------------------- plain data
def check_plain(obj: Any, name: str = "snapshot") -> None:
    """Check that ``obj`` is tensors and plain data, which ``weights_only`` loading accepts.

    Plain data: ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``None``,
    ``torch.Size``, ``torch.dtype``, ``torch.device``, and lists, tuples, sets and dicts
    (``OrderedDict`` included) of them; tensors are plain ``torch.Tensor`` or
    ``nn.Parameter``.

    Raises:
        TypeError: naming the first entry that is not (e.g. ``snapshot['rng']['numpy']``).
    """
    stack: list[tuple[str, Any]] = [(name, obj)]
    while stack:
        where, value = stack.pop()
        kind = type(value)
        if kind in _PLAIN_TYPES:
            continue
        if kind in (dict, OrderedDict):
            for key, item in value.items():
                if type(key) not in _PLAIN_SCALARS:
                    raise _not_plain(f"{where} key {key!r}", key)
                stack.append((f"{where}[{key!r}]", item))
        elif kind in (list, tuple, set):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
        else:
            raise _not_plain(where, value)


def _not_plain(where: str, value: Any) -> TypeError:
    kind = type(value)
    return TypeError(
        f"{where} is a {kind.__module__}.{kind.__qualname__}; tdrl saves tensors and plain "
        "data only (numbers, strings, None, lists, tuples, dicts), so that loading runs no code"
    )


def save_plain(obj: Any, path: Path, name: str = "snapshot") -> None:
    """Check ``obj`` with :func:`check_plain`, then :func:`torch.save` it atomically to ``path``.

    Raises:
        TypeError: ``obj`` holds something other than tensors and plain data.
        OSError: the write failed; the previous file at ``path`` is unchanged.
    """
    check_plain(obj, name)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_plain(path: Path, *, what: str = "snapshot", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data, never code.

    Args:
        path: the file.
        what: what the file is, for the messages (``"snapshot"``, ``"replay state"``, ...).
        map_location: passed to :func:`torch.load`.

    Raises:
        FileNotFoundError: no file at ``path``.
        SnapshotError: the file is truncated or corrupt, or holds objects other than tensors
            and plain data (refused without running them); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickling_reason(exc)
        if "global" in reason.lower():
            raise SnapshotError(
                f"refusing to load {what} {path}: it holds objects other than tensors and plain "
                f"data ({reason}), which could run code when loaded"
            ) from None
        raise SnapshotError(
            f"{what} {path} cannot be read as tensors and plain data (corrupt, or not written "
            f"by tdrl: {reason}); it is not loaded"
        ) from None
    except (
        RuntimeError,
        EOFError,
        ValueError,
        OSError,
        zipfile.BadZipFile,
        KeyError,
        struct.error,  # a few bytes of junk where torch reads a header
    ) as exc:
        detail = one_line(exc).split(". ")[0][:200] or type(exc).__name__
        if path.stat().st_size == 0:
            detail = "the file is empty"
        raise SnapshotError(
            f"{what} {path} cannot be read (truncated or corrupt?): {detail}"
        ) from None


def _unpickling_reason(exc: BaseException) -> str:
    """The short reason inside torch's long weights-only error message."""
    text = str(exc)
    _, found, after = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in after.splitlines() if line.strip()] if found else []
    reason = lines[0] if lines else one_line(text)
    return one_line(reason.split(". ")[0])[:160]


# ----------------------------------------------------------------------------- snapshots
LAST_SNAPSHOT_FILE = "params.pkl"
_ITR_SNAPSHOT_RE = re.compile(r"^itr_(\d+)\.pkl$")


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
    """Loads a snapshot saved by :meth:`~tdrl.logging.Logger.save_itr_params`, running no code.

    Args:
        path: A snapshot file or run directory (see :func:`find_snapshot`).
        map_location: Passed to :func:`torch.load`.

    Returns:
        The saved ``params``.

    Raises:
        FileNotFoundError: No snapshot at ``path``.
        SnapshotError: The file is truncated or corrupt, is not a dict, or holds objects
            other than tensors and plain data (refused, nothing in it is run).
    """
    file = find_snapshot(path)
    snap = load_plain(file, what="snapshot", map_location=map_location)
    if not isinstance(snap, dict):
        raise SnapshotError(f"snapshot {file} holds a {type(snap).__name__}, not a dict")
    return snap
