"""What replay buffers and their index samplers provide, and the shared replay settings.

A replay buffer (``tdrl.replays.ReplayBuffer`` and its frame-based variant) stores the
sampler's ``[T, B]`` batches in a time-major TorchRL storage and hands out flat replay
batches (keys in ``tdrl.keys``). *Which* entries it draws is decided by an index sampler
(``IndexSampler``; ``ReplaySampler`` is its former name) over flat indices ``t * B + b``:
``UniformSampler`` or ``PrioritizedSampler``, both TorchRL ``Sampler`` subclasses that also
follow the small protocol below. Two things are called "sampler" in tdrl: the env samplers
of ``tdrl.samplers`` collect ``[T, B]`` batches from environments, while an index sampler
picks stored entries of a replay buffer. Replay buffers keep TorchRL's keyword for the
latter, ``sampler=``, and their ``sampler`` attribute is always an index sampler.

``ReplayConfig`` holds the hyperparameters every replay-based algorithm (DQN family, DDPG,
TD3, SAC, SAC_V) shares, checked once: the algorithms take them as flat keyword arguments
(rlpyt's names) and keep one ``ReplayConfig``, which builds the buffer and the update
schedule.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tensordict import TensorDictBase

from tdrl._compat import LazyMemmapStorage, LazyTensorStorage
from tdrl.keys import BatchSpec
from tdrl.utils.checks import ArgumentError, check_choice, check_int, check_range
from tdrl.utils.device import check_device
from tdrl.utils.resources import check_disk, check_memory, nbytes_text

#: Where a replay buffer keeps its storage: RAM, or memory-mapped files on disk.
STORAGES = ("memory", "memmap")


class IndexSampler(Protocol):
    """Draws flat indices among the entries the buffer marked valid (an *index* sampler).

    Not to be confused with the env samplers of ``tdrl.samplers``, which collect
    ``[T, B]`` batches from environments: an index sampler only decides which stored
    entries a replay buffer hands out. Replay buffers take one as ``sampler=`` (TorchRL's
    name for the same thing).
    """

    capacity: int

    def set_default(self, index: np.ndarray | torch.Tensor) -> None:
        """Mark entries valid (with the default priority)."""
        ...

    def set_invalid(self, index: np.ndarray | torch.Tensor) -> None:
        """Mark entries invalid: never drawn until validated again."""
        ...

    def update_priority(self, index: Any, priority: Any) -> None:
        """New priorities for entries (ignored by uniform sampling)."""
        ...

    def sample(self, storage: Any, batch_size: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """``batch_size`` flat indices and info (``priority_weight`` when prioritized)."""
        ...

    def __len__(self) -> int:
        """Entries that can be drawn now."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Validity flags, priorities and generator state."""
        ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        ...


#: The former name of ``IndexSampler``, kept for existing code and configs.
ReplaySampler = IndexSampler


def check_replay_device(name: str, device: Any, storage: str) -> torch.device | None:
    """``device`` as a ``torch.device`` (None stays None: the CPU), checked against ``storage``.

    Raises:
        ArgumentError: not a device, a CUDA device torch does not see, or memmap storage
            (files on disk, read through the CPU) on another device than the CPU.
    """
    checked = check_device(name, device)
    if checked is not None and checked.type != "cpu" and storage == "memmap":
        raise ArgumentError(
            f"{name}={str(checked)!r} cannot hold memmap storage (files on disk stay on the "
            f"CPU): use replay_storage='memory' on {checked.type}, or {name}=None with memmap"
        )
    return checked


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """The replay settings of an off-policy algorithm, checked once.

    Args:
        batch_size: transitions per update.
        min_steps_learn: env steps collected before the first update.
        replay_size: capacity in transitions (rounded up to whole time rows of ``B``).
        replay_ratio: transitions replayed per transition collected; sets the updates per
            iteration, ``round(replay_ratio * T * B / batch_size)`` (at least one).
        n_step_return: n of the n-step returns.
        replay_storage: ``"memory"`` or ``"memmap"`` (disk-backed, for large buffers).
        replay_scratch_dir: directory of the memmap files (None: a temporary directory).
        replay_device: where the buffer keeps its storage, n-step arrays and (uniform)
            index draws (None: the CPU). On the training device (``"cuda"``) minibatches
            need no host copy; prioritized replay keeps its sum tree on the CPU and only
            the gather runs there. Memmap storage stays on the CPU.
    """

    batch_size: int
    min_steps_learn: int
    replay_size: int
    replay_ratio: float
    n_step_return: int = 1
    replay_storage: str = "memory"
    replay_scratch_dir: str | None = None
    replay_device: str | torch.device | None = None

    @classmethod
    def from_arguments(cls, arguments: dict[str, Any]) -> ReplayConfig:
        """The config of the replay arguments among an algorithm's, picked by name.

        An off-policy algorithm declares rlpyt's flat replay arguments as its own typed
        fields and ``tdrl.algos.settings.check_replay_settings`` passes its ``vars()``
        here, so that they are checked in one place (other names are ignored).
        """
        return cls(**{f.name: arguments[f.name] for f in dataclasses.fields(cls)})

    def __post_init__(self) -> None:
        checked = {
            "batch_size": check_int("batch_size", self.batch_size, minimum=1),
            "min_steps_learn": check_int("min_steps_learn", self.min_steps_learn, minimum=0),
            "replay_size": check_int("replay_size", self.replay_size, minimum=1),
            "replay_ratio": check_range("replay_ratio", self.replay_ratio, 1e-12, 1e12),
            "n_step_return": check_int("n_step_return", self.n_step_return, minimum=1),
            "replay_storage": check_choice("replay_storage", self.replay_storage, STORAGES),
        }
        device = check_replay_device("replay_device", self.replay_device, self.replay_storage)
        for name, value in {**checked, "replay_device": device}.items():
            object.__setattr__(self, name, value)
        if self.replay_scratch_dir is not None and not isinstance(
            self.replay_scratch_dir, str | bytes
        ):
            object.__setattr__(self, "replay_scratch_dir", str(self.replay_scratch_dir))

    def capacity(self, batch_spec: BatchSpec) -> int:
        """``replay_size`` in whole rows of ``B``, at least ``n_step_return + 2`` rows."""
        size = max(self.replay_size, (self.n_step_return + 2) * batch_spec.B)
        return -(-size // batch_spec.B) * batch_spec.B

    def updates_per_optimize(self, batch_spec: BatchSpec) -> int:
        """Updates per sampler batch: ``round(replay_ratio * T * B / batch_size)``, >= 1."""
        return max(1, round(self.replay_ratio * batch_spec.size / self.batch_size))

    def min_itr_learn(self, batch_spec: BatchSpec) -> int:
        """The first iteration that updates: ``min_steps_learn // (T * B)``."""
        return self.min_steps_learn // batch_spec.size


def check_index_arrays_fit(entries: int, *, bytes_per_entry: int = 8) -> None:
    """Before a buffer allocates its per-entry arrays: do ``entries`` of them fit in memory."""
    check_memory(
        entries * bytes_per_entry,
        what=f"the per-entry arrays of a replay of {entries} entries",
        setting="replay_size",
    )


def check_storage_fits(
    template: TensorDictBase,
    steps: int,
    *,
    kind: str,
    scratch_dir: str | Path | None,
    device: torch.device,
) -> None:
    """Before a storage of ``steps`` entries like those of ``template`` is allocated.

    Args:
        template: a ``[T, B]`` batch of what each entry stores.
        steps: entries the storage holds (``T_capacity * B``).
        kind: ``"memory"`` (checked against the free memory of a CPU storage) or
            ``"memmap"`` (against the free disk where its files go).
        scratch_dir: the memmap files' directory (None: the system's temporary one).
        device: where a memory storage lives (only a CPU one is checked).

    Raises:
        ArgumentError: a memory storage does not fit (naming ``replay_size``).
        OSError: ``ENOSPC``, a memmap storage does not fit on its disk.
    """
    n = max(1, template.batch_size.numel())
    per_entry = sum(leaf.element_size() * leaf.numel() for leaf in template.values(True, True)) / n
    need = per_entry * steps
    what = f"a replay storage of {steps} entries of {nbytes_text(per_entry)}"
    if kind == "memmap":
        check_disk(need, scratch_dir or tempfile.gettempdir(), what=what, setting="replay_size")
    elif device.type == "cpu":
        check_memory(need, what=what, setting="replay_size")


def new_storage(
    kind: str,
    entries: int,
    scratch_dir: str | Path | None,
    device: torch.device,
    *,
    template: TensorDictBase | None = None,
    steps: int | None = None,
) -> LazyTensorStorage:
    """A ``[rows, B]`` (``ndim=2``) storage of ``entries``, checked to fit first.

    Args:
        kind: ``"memory"`` (``LazyTensorStorage`` on ``device``) or ``"memmap"``
            (``LazyMemmapStorage`` in ``scratch_dir``).
        entries: its capacity.
        scratch_dir: where memmap files go (None: a temporary directory).
        device: where a memory storage lives.
        template: a ``[T, B]`` batch of what it will hold: ``check_storage_fits`` first.
        steps: the env steps it holds (default ``entries``), for the check.
    """
    if template is not None:
        steps = entries if steps is None else steps
        check_storage_fits(template, steps, kind=kind, scratch_dir=scratch_dir, device=device)
    if kind == "memmap":
        return LazyMemmapStorage(entries, ndim=2, scratch_dir=scratch_dir)
    return LazyTensorStorage(entries, ndim=2, device=device)
