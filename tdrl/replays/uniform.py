"""Uniform sampling over the valid entries of a replay buffer, on the CPU or on a device.

On the CPU (``device=None``) indices are drawn by rejection from a numpy generator over the
range ever validated. On a device (a buffer with ``replay_device``) the valid entries are
kept as a compact index list on that device, rebuilt (one ``nonzero``) at the first draw
after the buffer changed them, that is once per appended batch, and draws index it with a
``torch`` generator of that device: the same distribution (uniform over the valid
entries, with replacement) with no host round trip per minibatch.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch

from tdrl.replays.storage_files import IndexSamplerBase, restore_generator
from tdrl.utils.checks import check_int
from tdrl.utils.device import check_device


class UniformSampler(IndexSamplerBase):
    """Uniform draws (with replacement) over the entries marked valid.

    The replay buffer marks entries valid once their n-step window is complete
    (``set_default``) and invalid while they are being overwritten (``set_invalid``); this
    sampler then draws uniformly among the valid ones. It shares that small interface with
    ``tdrl.replays.sum_tree.PrioritizedSampler``, so buffers take either.

    Args:
        capacity: number of entries (flat indices ``0 .. capacity - 1``).
        seed: seed of the sampler's own generator.
        device: where indices are drawn (None: on the CPU with numpy; a device: with a
            ``torch`` generator there, see the module docstring).
    """

    state_file = "uniform_sampler.pt"

    def __init__(
        self,
        capacity: int,
        *,
        seed: int | None = None,
        device: str | torch.device | None = None,
    ):
        super().__init__()
        capacity = check_int("capacity", capacity, minimum=1)
        self.capacity = capacity
        self.device = check_device("device", device)
        self._valid = np.zeros(capacity, dtype=bool)
        self._n_valid = 0
        self._high = 0  # one past the highest index ever validated
        self._np_rng = np.random.default_rng(
            None if seed is None else check_int("seed", seed, minimum=0)
        )
        self._gen: torch.Generator | None = None
        self._valid_index: torch.Tensor | None = None  # device path: compact valid entries
        if self.device is not None:
            self._gen = torch.Generator(device=self.device)
            self._gen.manual_seed(int(self._np_rng.integers(2**63 - 1)))

    # -- validity ---------------------------------------------------------------------
    def set_default(self, index: np.ndarray | torch.Tensor) -> None:
        """Mark entries valid."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size:
            self._valid[index] = True
            self._high = max(self._high, int(index.max()) + 1)
            self._n_valid = int(self._valid.sum())
            self._valid_index = None

    def set_invalid(self, index: np.ndarray | torch.Tensor) -> None:
        """Mark entries invalid (never sampled until validated again)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size:
            self._valid[index] = False
            self._n_valid = int(self._valid.sum())
            self._valid_index = None

    def __len__(self) -> int:
        return self._n_valid

    # -- sampling ---------------------------------------------------------------------
    def sample(self, storage: Any, batch_size: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Draw ``batch_size`` valid flat indices uniformly (rejection over the used range)."""
        if self._n_valid == 0:
            raise RuntimeError("cannot sample: the replay buffer holds no valid entry yet")
        if self._gen is not None:
            return self._sample_on_device(batch_size)
        out = np.empty(0, dtype=np.int64)
        while out.size < batch_size:
            draw = self._np_rng.integers(0, self._high, size=2 * (batch_size - out.size) + 8)
            out = np.concatenate([out, draw[self._valid[draw]]])
        index = torch.from_numpy(out[:batch_size])
        return index, {"index": index}

    def _sample_on_device(self, batch_size: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Uniform draws over the compact list of valid entries, on ``self.device``."""
        if self._valid_index is None:
            valid = torch.from_numpy(self._valid).to(self.device)
            self._valid_index = valid.nonzero().squeeze(1)
        pos = torch.randint(self._n_valid, (batch_size,), device=self.device, generator=self._gen)
        index = self._valid_index[pos]
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
        self._valid_index = None

    def state_dict(self) -> dict[str, Any]:
        """Validity flags, the highest validated index and the generator states.

        Plain data and CPU tensors whatever the device: a state saved on one device loads
        on any (a device generator's state is restored on the same kind of device; on
        another kind the generator is reseeded from the numpy one).
        """
        return {
            "valid": torch.from_numpy(self._valid.copy()),
            "high": self._high,
            "rng": self._np_rng.bit_generator.state,
            "device_rng": None if self._gen is None else self._gen.get_state(),
            "device_type": None if self.device is None else self.device.type,
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
        rng = restore_generator(state_dict.get("rng"), "uniform sampler state")
        self._valid = np.asarray(valid, dtype=bool).copy()
        self._n_valid = int(self._valid.sum())
        self._high = high
        self._np_rng = rng
        self._valid_index = None
        if self._gen is not None and self.device is not None:
            saved = state_dict.get("device_rng")
            try:
                if state_dict.get("device_type") != self.device.type:
                    raise TypeError("saved on another kind of device")
                self._gen.set_state(cast(torch.Tensor, saved))
            except (TypeError, RuntimeError):
                self._gen.manual_seed(int(self._np_rng.integers(2**63 - 1)))
