"""Uniform sampling over the valid entries of a replay buffer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdrl._compat import Sampler
from tdrl.logging.files import SnapshotError, load_plain, save_plain
from tdrl.utils.checks import check_int


class UniformSampler(Sampler):
    """Uniform draws (with replacement) over the entries marked valid.

    The replay buffer marks entries valid once their n-step window is complete
    (``set_default``) and invalid while they are being overwritten (``set_invalid``); this
    sampler then draws uniformly among the valid ones. It shares that small interface with
    ``tdrl.replays.sum_tree.PrioritizedSampler``, so buffers take either.

    Args:
        capacity: number of entries (flat indices ``0 .. capacity - 1``).
        seed: seed of the sampler's own generator.
    """

    def __init__(self, capacity: int, *, seed: int | None = None):
        super().__init__()
        capacity = check_int("capacity", capacity, minimum=1)
        self.capacity = capacity
        self._valid = np.zeros(capacity, dtype=bool)
        self._n_valid = 0
        self._high = 0  # one past the highest index ever validated
        self._np_rng = np.random.default_rng(
            None if seed is None else check_int("seed", seed, minimum=0)
        )

    # -- validity ---------------------------------------------------------------------
    def set_default(self, index: np.ndarray | torch.Tensor) -> None:
        """Mark entries valid."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size:
            self._valid[index] = True
            self._high = max(self._high, int(index.max()) + 1)
            self._n_valid = int(self._valid.sum())

    def set_invalid(self, index: np.ndarray | torch.Tensor) -> None:
        """Mark entries invalid (never sampled until validated again)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size:
            self._valid[index] = False
            self._n_valid = int(self._valid.sum())

    def __len__(self) -> int:
        return self._n_valid

    # -- sampling ---------------------------------------------------------------------
    def sample(self, storage: Any, batch_size: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Draw ``batch_size`` valid flat indices uniformly (rejection over the used range)."""
        if self._n_valid == 0:
            raise RuntimeError("cannot sample: the replay buffer holds no valid entry yet")
        out = np.empty(0, dtype=np.int64)
        while out.size < batch_size:
            draw = self._np_rng.integers(0, self._high, size=2 * (batch_size - out.size) + 8)
            out = np.concatenate([out, draw[self._valid[draw]]])
        index = torch.from_numpy(out[:batch_size])
        return index, {"index": index}

    # -- TorchRL Sampler interface ----------------------------------------------------
    def extend(self, index: torch.Tensor) -> None:
        """Mark entries valid (TorchRL ``Sampler`` interface)."""
        self.set_default(np.asarray(index))

    def add(self, index: int) -> None:
        """Mark one entry valid (TorchRL ``Sampler`` interface)."""
        self.set_default(np.asarray([index]))

    def update_priority(self, index: Any, priority: Any, **kwargs: Any) -> None:
        """Uniform sampling ignores priorities."""

    def mark_update(self, index: Any, **kwargs: Any) -> None:
        """Nothing to track."""

    @property
    def default_priority(self) -> float:
        """Priority of new entries: uniform sampling has one, 1."""
        return 1.0

    def _empty(self) -> None:
        self._valid[:] = False
        self._n_valid = 0
        self._high = 0

    def state_dict(self) -> dict[str, Any]:
        """Validity flags, the highest validated index and the generator state."""
        return {
            "valid": torch.from_numpy(self._valid.copy()),
            "high": self._high,
            "rng": self._np_rng.bit_generator.state,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore ``state_dict()``; nothing changes if it does not fit.

        Raises:
            ValueError: the state is of another capacity or not this sampler's.
        """
        valid = state_dict.get("valid")
        if not isinstance(valid, torch.Tensor) or tuple(valid.shape) != (self.capacity,):
            got = tuple(valid.shape) if isinstance(valid, torch.Tensor) else type(valid).__name__
            raise ValueError(
                f"uniform sampler state has valid flags {got}, capacity {self.capacity}"
            )
        high = int(state_dict["high"])
        if not 0 <= high <= self.capacity:
            raise ValueError(f"uniform sampler state has high={high} outside [0, {self.capacity}]")
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = state_dict["rng"]
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"uniform sampler state has a bad generator state: {exc}") from None
        self._valid = np.asarray(valid, dtype=bool).copy()
        self._n_valid = int(self._valid.sum())
        self._high = high
        self._np_rng = rng

    def dumps(self, path: Any) -> None:
        """Save ``state_dict()`` to ``path/uniform_sampler.pt`` (atomically)."""
        Path(path).mkdir(parents=True, exist_ok=True)
        save_plain(self.state_dict(), Path(path) / "uniform_sampler.pt", "uniform sampler state")

    def loads(self, path: Any) -> None:
        """Load what ``dumps`` saved (``weights_only``: tensors and plain data, no code).

        Raises:
            FileNotFoundError: no ``uniform_sampler.pt`` in ``path``.
            SnapshotError: the file is corrupt, unsafe or does not fit (names it).
        """
        file = Path(path) / "uniform_sampler.pt"
        state = load_plain(file, what="uniform sampler state")
        try:
            self.load_state_dict(state)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SnapshotError(f"{file} does not fit this sampler: {exc}") from None
