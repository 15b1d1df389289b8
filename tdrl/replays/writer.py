"""Time-major writing of ``[T, B]`` batches, as a TorchRL ``Writer``.

A sampler batch is ``[T, B]``: T consecutive steps of B envs. ``TimeMajorWriter`` keeps it
that way in a storage of ``T_capacity`` time rows of B columns: one time cursor wraps around
the rows, a batch fills rows ``cursor .. cursor + T - 1`` (modulo ``T_capacity``), so each
env's column is a contiguous history (what n-step returns and sequences read along). Entry
``(t, b)`` has the flat index ``t * B + b``, the index tdrl's index samplers draw::

    rows  = (cursor + [0 .. T - 1]) mod T_capacity
    index = rows[:, None] * B + [0 .. B - 1]          # [T, B]

The storage is a TorchRL ``LazyTensorStorage`` / ``LazyMemmapStorage`` of either layout, the
same memory order: ``ndim=2`` (``[T_capacity, B]``, rows written as they are; tdrl's
``ReplayBuffer``) or ``ndim=1`` (``T_capacity * B`` entries, written at the flat indices;
what a TorchRL buffer with one of tdrl's index samplers needs, since they draw flat indices).

The writer also records which rows hold data (``written``) and answers which rows became
complete, that is which have their next ``lag`` rows written too (``completed``): an n-step
buffer validates an entry once its n-step window is written. It does not touch the index
sampler. Inside a TorchRL ``ReplayBuffer`` the buffer calls ``sampler.extend(index)`` with
the indices ``extend`` returns, so every written entry is drawable at once: right for the
one-step transitions TorchRL hands out (n-step targets are tdrl's ``ReplayBuffer``'s, which
computes them at sample time and validates entries ``n - 1`` rows late).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase

from tdrl._compat import Writer
from tdrl.replays.storage_files import load_sampler_state, save_sampler_state
from tdrl.utils.checks import ArgumentError, check_int

__all__ = ["TimeMajorWriter"]


class TimeMajorWriter(Writer):
    """Writes ``[T, B]`` batches at a time cursor wrapping around ``T_capacity`` rows.

    Use it in a TorchRL buffer as ``TensorDictReplayBuffer(storage=LazyTensorStorage(size),
    sampler=UniformSampler(size) or PrioritizedSampler(size), writer=TimeMajorWriter(
    size=size, batch_B=B))``; tdrl's ``ReplayBuffer`` writes through one too (see the module
    docstring for the layouts and what differs).

    Args:
        size: capacity in entries, a whole number of rows of ``batch_B``.
        batch_B: columns (envs) of every batch.
    """

    #: The file ``dumps`` writes in its directory.
    state_file = "time_major_writer.pt"

    def __init__(self, *, size: int, batch_B: int):
        super().__init__()
        self.batch_B = check_int("batch_B", batch_B, minimum=1)
        size = check_int("size", size, minimum=1)
        if size % self.batch_B:
            raise ArgumentError(f"size={size} must be a multiple of batch_B={self.batch_B}")
        self.T_capacity = size // self.batch_B
        self.cursor = 0  # the next row to write
        self.written = np.zeros(self.T_capacity, dtype=bool)  # rows holding data
        self._write_count = 0  # entries written, overwrites included (TorchRL's write_count)

    def rows(self, data: Any, *, name: str = "data") -> np.ndarray:
        """The rows a write of ``data`` fills, from the cursor on (nothing changes).

        Raises:
            ArgumentError: ``data`` (called ``name`` in the message) is not a TensorDict
                ``[T, batch_B]`` with ``1 <= T <= T_capacity``.
        """
        size = list(data.batch_size) if isinstance(data, TensorDictBase) else []
        if len(size) != 2 or size[1] != self.batch_B or not 0 < size[0] <= self.T_capacity:
            raise ArgumentError(
                f"{name} must be a TensorDict [T, batch_B={self.batch_B}] of 1 to "
                f"{self.T_capacity} steps per env, got {type(data).__name__} of batch size {size}"
            )
        return (self.cursor + np.arange(size[0])) % self.T_capacity

    def extend(self, data: TensorDictBase) -> torch.Tensor:
        """Write ``data`` ``[T, B]`` at the cursor; returns the flat indices ``[T, B]``."""
        rows = self.rows(data)
        index = torch.from_numpy(rows[:, None] * self.batch_B + np.arange(self.batch_B))
        if self._storage.ndim == 1:
            self._storage.set(index.view(-1), data.reshape(-1))
        else:
            self._storage.set(torch.from_numpy(rows), data)
        self.written[rows] = True
        self.cursor = int((self.cursor + rows.size) % self.T_capacity)
        self._write_count += index.numel()
        return index

    def add(self, data: TensorDictBase) -> torch.Tensor:
        """Write one step ``[B]`` of every env; returns its flat indices ``[B]``."""
        return self.extend(data.unsqueeze(0))[0]

    def completed(self, T: int, lag: int) -> np.ndarray:
        """After a write of ``T`` rows, the rows whose next ``lag`` rows are now written."""
        ready = (self.cursor - lag - T + np.arange(T)) % self.T_capacity
        return ready[self.written[ready]]

    def _empty(self, empty_write_count: bool = True) -> None:
        """Forget every row (TorchRL's ``ReplayBuffer.empty``)."""
        self.cursor = 0
        self.written[:] = False
        self._write_count = 0 if empty_write_count else self._write_count

    def state_dict(self) -> dict[str, Any]:
        """The cursor, the written flags and the write count (plain data and a CPU tensor)."""
        written = torch.from_numpy(self.written.copy())
        return {"cursor": self.cursor, "written": written, "write_count": self._write_count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore ``state_dict()``; a ``ValueError`` if it does not fit (nothing changes)."""
        cursor, written = int(state_dict["cursor"]), state_dict["written"]
        if getattr(written, "shape", None) != (self.T_capacity,) or not 0 <= cursor < len(written):
            raise ValueError(f"writer state does not fit {self.T_capacity} rows")
        self.cursor, self.written = cursor, np.asarray(written, dtype=bool).copy()
        self._write_count = int(state_dict.get("write_count", 0))

    def dumps(self, path: str | Path) -> None:
        """Write ``state_dict()`` to ``path/state_file`` (TorchRL's ``dumps``)."""
        save_sampler_state(self, path, self.state_file)

    def loads(self, path: str | Path) -> None:
        """Read what ``dumps`` wrote (``weights_only``); a ``SnapshotError`` if it does not fit."""
        load_sampler_state(self, path, self.state_file)

    def __repr__(self) -> str:
        return f"TimeMajorWriter(T_capacity={self.T_capacity}, batch_B={self.batch_B})"
