"""A replay buffer's storage on disk: written with its file list, read back only if it fits.

``save_storage`` memmaps the storage's tensors into a directory (tensordict's format: a
``meta.json`` per level and one raw ``.memmap`` file per tensor) and returns the *layout*:
each tensor's key, file, shape, dtype and file size. The buffer keeps the layout in its
state file. ``load_storage`` checks every file against it before reading anything: a
missing, truncated or resized file, or one whose steps x envs are not the buffer's, is
refused with an error naming the file (a truncated memmap would otherwise read as zeros).
Reading uses ``TensorDict.load_memmap(..., allow_pickle=False)``: no pickled object runs.

``load_replay_dir`` reads a whole save (``ReplayBuffer.save``: the storage directory and
the state file written last) and checks it (``check_replay_state``) before the buffer
changes. Saved tensors are CPU tensors whatever the buffer's device.

An index sampler (``UniformSampler``, ``PrioritizedSampler``) keeps its state in one file
of its own (``IndexSamplerBase``: TorchRL's ``dumps``/``loads``), read the same way.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tensordict import TensorDict

from tdrl._compat import LazyTensorStorage, Sampler, storage_tensordict
from tdrl.logging.files import (
    SnapshotError,
    as_os_error,
    complete_dir,
    load_plain,
    named_write_errors,
    one_line,
    save_plain,
    writing_dir,
)

__all__ = [
    "REPLAY_STATE_FILE",
    "IndexSamplerBase",
    "check_frame_layout",
    "check_replay_state",
    "load_replay_dir",
    "load_sampler_state",
    "load_storage",
    "replay_config",
    "restore_generator",
    "save_replay_dir",
    "save_sampler_state",
    "save_storage",
    "saved_replay_info",
    "saved_replay_versions",
]

#: The file ``ReplayBuffer.save`` writes last: a save is complete when it is there.
REPLAY_STATE_FILE = "replay_state.pt"


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
        try:
            saved = storage_tensordict(storage).memmap(where, copy_existing=True)
        except RuntimeError as err:  # torch.from_file's "unable to write to file <...>"
            raise as_os_error(err) from None
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


def check_cursor(state: Mapping[str, Any], *names: str) -> None:
    """Raise ``ValueError`` unless each of ``state[name]`` is a whole number (not a bool)."""
    for name in names:
        value = state.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} is {value!r}, not a whole number")


def check_rnn_template(state: Mapping[str, Any], key: str) -> None:
    """Raise ``ValueError`` unless a saved ``rnn_template`` fits the stored ``key`` leaves.

    The template is a dict of tensors (or None); each stored ``[rows, B, *shape]`` leaf
    under ``key`` needs a template leaf of ``shape`` at the same path.
    """
    template = state.get("rnn_template")
    if not isinstance(template, dict | None):
        raise ValueError("rnn_template is not a dict of tensors")
    stored = {
        tuple(e["key"][1:]): list(e["shape"][2:])
        for e in state.get("storage") or []
        if isinstance(e, dict) and e.get("key", [None])[0] == key
    }
    try:
        leaves = TensorDict(template or {}, batch_size=[]).items(True, True)
        shapes = {k if isinstance(k, tuple) else (k,): list(v.shape) for k, v in leaves}
    except (TypeError, ValueError, RuntimeError):
        shapes = None
    if stored and shapes != stored:
        raise ValueError(f"rnn_template does not match the stored {key}")


def check_replay_state(
    state: Mapping[str, Any], config: Mapping[str, Any], grid: tuple[int, int]
) -> None:
    """Raise ``ValueError`` naming what of a saved replay state does not fit a buffer.

    Args:
        state: the saved ``ReplayBuffer.state_dict()``.
        config: the loading buffer's configuration (``ReplayBuffer._config()``).
        grid: its ``(T_capacity, batch_B)``.
    """
    saved = state.get("config")
    if not isinstance(saved, dict):
        raise ValueError(f"its config is {type(saved).__name__}, not a dict")
    diffs = [
        f"{k} {saved.get(k)!r} saved, {v!r} here" for k, v in config.items() if saved.get(k) != v
    ]
    if diffs:
        raise ValueError("; ".join(diffs))
    check_cursor(state, "t")
    shapes = {"written": grid[:1], "reward": grid, "done": grid, "terminated": grid}
    if state.get("pending_priority") is not None:
        shapes["pending_priority"] = grid
    for key, shape in shapes.items():
        value = state.get(key)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
            raise ValueError(f"{key} is {got}, expected shape {shape}")
    if not 0 <= int(state.get("t", -1)) < grid[0]:
        raise ValueError(f"cursor t={state.get('t')!r} outside [0, {grid[0]})")


def check_frame_layout(
    state: Mapping[str, Any],
    n_frames: int | None,
    final_frames: torch.Tensor | None,
    grid: tuple[int, int],
    frame_key: str,
) -> None:
    """Raise ``ValueError`` naming what of a saved frame layout does not fit a buffer.

    Args:
        state: the saved ``FrameReplayBuffer.state_dict()``.
        n_frames: the loading buffer's stack depth C (None: not known yet).
        final_frames: its side store of final frames (None: not allocated yet).
        grid: its ``(T_capacity, batch_B)``.
        frame_key: the storage key of the frames.
    """
    side = state.get("frames")
    if not isinstance(side, dict):
        raise ValueError("it has no frame layout (saved by a ReplayBuffer?)")
    saved_n, frames, index = side.get("n_frames"), side.get("final_frames"), side.get("final_index")
    if n_frames is not None and saved_n != n_frames:
        raise ValueError(f"stacks of {saved_n!r} frames saved, {n_frames} here")
    if frames is None:
        return
    if not isinstance(frames, torch.Tensor) or not isinstance(index, torch.Tensor):
        raise ValueError("the side store of final frames is not tensors")
    if tuple(index.shape) != (2, frames.shape[0]):
        raise ValueError(f"final_index {tuple(index.shape)} for {frames.shape[0]} frames")
    if index.numel() and (
        index.min() < 0 or index[0].max() >= grid[0] or index[1].max() >= grid[1]
    ):
        raise ValueError("final_index points outside the buffer")
    if final_frames is not None and (
        frames.shape[1:] != final_frames.shape[1:] or frames.dtype != final_frames.dtype
    ):
        raise ValueError(
            f"frames {tuple(frames.shape[1:])} {frames.dtype} saved, "
            f"{tuple(final_frames.shape[1:])} {final_frames.dtype} here"
        )
    for entry in state.get("storage") or []:
        if entry.get("key") == [frame_key] and (
            list(entry["shape"][2:]) != list(frames.shape[1:])
            or entry["dtype"] != str(frames.dtype)
        ):
            raise ValueError("the stored frames and the side store's differ in shape or dtype")


def load_replay_dir(
    path: Path,
    *,
    check: Callable[[dict[str, Any]], None],
    restore: Callable[[dict[str, Any]], None],
    grid: tuple[int, int],
    stored_keys: Sequence[Any],
) -> tuple[dict[str, Any], TensorDict | None]:
    """The state and storage of the newest complete save in ``path``, checked, then restored.

    ``check(state)`` runs before the storage files are checked; ``restore(state)`` (the
    buffer's ``load_state_dict``) only once everything fits.

    Returns:
        ``(state, storage)``; the storage is a memory-mapped CPU TensorDict, or None when
        nothing was stored.

    Raises:
        FileNotFoundError: ``path`` holds no complete save.
        SnapshotError: a file is corrupt, unsafe, missing, truncated or resized, or the save
            does not match the buffer; the message names the file.
    """
    versions = complete_dir(path, REPLAY_STATE_FILE)
    if not versions:
        raise FileNotFoundError(f"no saved replay buffer in {path} (no {REPLAY_STATE_FILE})")
    state_file = versions[0] / REPLAY_STATE_FILE
    state = load_plain(state_file, what="replay state")
    try:
        if not isinstance(state, dict):
            raise ValueError(f"it holds a {type(state).__name__}, not a dict")
        for key, kind in (("storage", list), ("sampler", dict), ("info", dict)):
            if not isinstance(state.get(key, {} if key == "info" else None), kind):
                raise ValueError(f"its {key!r} entry is missing or not a {kind.__name__}")
        check(state)
        data = load_storage(
            versions[0] / "storage",
            state.get("storage"),
            state_file=state_file,
            grid=grid,
            stored_keys=stored_keys,
        )
        restore(state)
    except SnapshotError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        msg = f"replay state {state_file} does not match this buffer: {one_line(exc)}"
        raise SnapshotError(msg) from None
    return state, data


def replay_config(buffer: Any, names: Sequence[str], **extra: Any) -> dict[str, Any]:
    """What a buffer's saved state must share with the buffer it is loaded into.

    The buffer's class, its attributes ``names``, ``extra``, its storage kind and its index
    sampler's class (``check_replay_state`` compares them).
    """
    return {
        "buffer": type(buffer).__qualname__,
        **{name: getattr(buffer, name) for name in names},
        **extra,
        "storage": buffer.storage_kind,
        "sampler": type(buffer.sampler).__qualname__,
    }


def save_replay_dir(
    path: str | Path,
    state: Mapping[str, Any],
    storage: LazyTensorStorage | None,
    *,
    info: Mapping[str, Any] | None = None,
    atomic: bool = True,
) -> None:
    """Write a buffer's save to directory ``path``: its storage, then its state file.

    ``path/storage`` gets the storage's memmap files; ``path/replay_state.pt``, written
    last, ``state`` (a ``state_dict``) with ``info`` and every storage file's size.

    Args:
        path: the directory.
        state: the buffer's ``state_dict()`` (tensors and plain data).
        storage: the buffer's storage (None: nothing stored yet).
        info: plain data saved alongside (the runner records its iteration), returned by
            the buffer's ``load`` and by ``saved_replay_info``.
        atomic: write the whole directory beside ``path`` and swap it in
            (``tdrl.logging.files.commit_dir``), so that a crash or a full disk leaves
            the previous save complete; False writes into ``path`` directly.

    Raises:
        OSError: a file could not be written (named); ``atomic`` keeps the previous save.
    """
    with writing_dir(Path(path), REPLAY_STATE_FILE, atomic=atomic) as target:
        saved = {**state, "info": dict(info or {})}
        saved["storage"] = [] if storage is None else save_storage(storage, target / "storage")
        save_plain(saved, target / REPLAY_STATE_FILE, "replay state")


def saved_replay_versions(path: str | Path) -> list[Path]:
    """The complete saves of directory ``path``: it, then a staged ``.{name}.new``."""
    return complete_dir(Path(path), REPLAY_STATE_FILE)


def saved_replay_info(path: str | Path) -> dict[str, Any] | None:
    """The ``info`` saved with the replay buffer in ``path`` (a ``SnapshotError`` if unsafe)."""
    state = load_plain(Path(path) / REPLAY_STATE_FILE, what="replay state")
    info = state.get("info") if isinstance(state, dict) else None
    return info if isinstance(info, dict) else None


# ------------------------------------------------------------- index sampler state
class IndexSamplerBase(Sampler):
    """A TorchRL ``Sampler`` that saves its ``state_dict`` in one file (``dumps``/``loads``).

    ``UniformSampler`` and ``PrioritizedSampler`` derive from it; ``state_file`` names
    their file.
    """

    #: The file ``dumps`` writes in its directory.
    state_file: ClassVar[str]

    def dumps(self, path: str | Path) -> None:
        """Write ``state_dict()`` to ``path/state_file`` (TorchRL's ``dumps``; atomic)."""
        save_sampler_state(self, path, self.state_file)

    def loads(self, path: str | Path) -> None:
        """Read what ``dumps`` wrote (``weights_only``: tensors and plain data, no code).

        Raises:
            FileNotFoundError: no ``state_file`` in ``path``.
            SnapshotError: the file is corrupt, unsafe or does not fit (names it).
        """
        load_sampler_state(self, path, self.state_file)


def save_sampler_state(sampler: Any, path: str | Path, file_name: str) -> None:
    """Write ``sampler.state_dict()`` to ``path/file_name`` (TorchRL's ``dumps``; atomic)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    what = file_name.removesuffix(".pt").replace("_", " ")
    save_plain(sampler.state_dict(), path / file_name, f"{what} state")


def load_sampler_state(sampler: Any, path: str | Path, file_name: str) -> None:
    """Restore what ``save_sampler_state`` wrote (``weights_only``: tensors and plain data).

    Raises:
        FileNotFoundError: no ``file_name`` in ``path``.
        SnapshotError: the file is corrupt, unsafe or does not fit the sampler (names it).
    """
    file = Path(path) / file_name
    state = load_plain(file, what=f"{file_name.removesuffix('.pt').replace('_', ' ')} state")
    try:
        sampler.load_state_dict(state)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SnapshotError(f"{file} does not fit: {exc}") from None


def restore_generator(state: Any, what: str) -> np.random.Generator:
    """A numpy generator in the saved bit-generator ``state``.

    Raises:
        ValueError: ``state`` is not a generator state (the message starts with ``what``).
    """
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{what} has a bad generator state: {exc}") from None
    return rng
