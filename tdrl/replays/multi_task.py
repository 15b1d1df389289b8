"""Per-task replay for meta-RL (PEARL): an RL buffer and an encoder buffer per task.

Each task ``i`` owns two ``ReplayBuffer`` s (``n_step_return=1``) of ``[T, B]`` sampler
batches of that task:

- the RL buffer (``size`` transitions), which every batch of the task goes to; the
  actor-critic losses sample from it;
- the encoder buffer (``encoder_size`` transitions), which only the batches appended with
  ``to_encoder=True`` go to, and which ``clear_encoder(i)`` empties: the context of the
  task's posterior is drawn from it. Oyster clears it before each collection round of the
  task and fills it with the data collected with ``z`` from the prior (and posterior), so
  that the context is recent, on-policy data; a ring buffer of ``encoder_size`` keeps only
  the most recent transitions between clears.

TorchRL code writes a task's data with ``extend(data, task=i)`` and draws with
``sample(batch_size, tasks=[...])`` (TorchRL's names, with the task they need; uniform
draws, so nothing to update), beside ``len``; each per-task buffer is a ``ReplayBuffer``
with TorchRL's whole API (``rl_buffers[i]``, ``encoder_buffers[i]``).

``sample_batch`` and ``sample_context`` draw ``batch_size`` transitions (uniformly, with
replacement) from each of the given tasks and stack them into one ``[tasks, batch_size]``
TensorDict, the shape the meta-gradient step computes on in one batched pass. Besides the
keys of ``ReplayBuffer.sample_batch`` both carry ``("next", "reward")``, the reward ``r_t``
(``[tasks, batch_size, 1]``, the same as ``("next", "prev_reward")`` for one-step
replay), so that ``tdrl.models.qpg.context.context_from_transitions`` reads the context
directly. ``sample_meta_batch`` returns both as one ``[tasks]`` TensorDict under
``keys.META_RL`` and ``keys.CONTEXT``, the batch of a meta-algorithm's ``update``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl.logging.files import (
    SnapshotError,
    complete_dir,
    load_plain,
    save_plain,
    writing_dir,
)
from tdrl.replays.base import STORAGES
from tdrl.replays.n_step import ReplayBuffer
from tdrl.replays.torchrl_api import time_major
from tdrl.utils.checks import ArgumentError, check_bool, check_choice, check_int, check_range
from tdrl.utils.resources import check_memory

#: Written last by ``MultiTaskReplay.save``: a directory holding it is a complete save.
MARKER_FILE = "multi_task_replay.pt"


def _marker_seeds(marker: Any, file: Path) -> np.random.SeedSequence:
    """The seed sequence a ``MultiTaskReplay`` marker records, or a ``SnapshotError``."""
    if not isinstance(marker, dict):
        raise SnapshotError(f"{file} is not a multi-task replay marker (not a dict)")
    try:
        entropy, spawned = int(str(marker["entropy"])), int(str(marker["spawned"]))
    except KeyError as err:
        raise SnapshotError(f"{file} lacks its {err.args[0]!r} entry (truncated?)") from None
    except (TypeError, ValueError):
        raise SnapshotError(
            f"{file}: 'entropy' and 'spawned' must be integers, got "
            f"{marker.get('entropy')!r} and {marker.get('spawned')!r}"
        ) from None
    if entropy < 0 or spawned < 0:
        raise SnapshotError(f"{file}: 'entropy' and 'spawned' must be >= 0")
    return np.random.SeedSequence(entropy, n_children_spawned=spawned)


def check_task_buffers(n_tasks: int, entries_per_task: int) -> None:
    """Before ``n_tasks`` tasks' buffers are built: do their per-entry arrays fit in memory.

    Each entry costs at least its index arrays (8 bytes) before any observation is stored;
    the storages are checked again, with their real entry size, when first written.

    Raises:
        ArgumentError: naming ``n_train_tasks`` and ``replay_size``.
    """
    check_memory(
        8 * n_tasks * entries_per_task,
        what=f"the buffers of {n_tasks} tasks of {entries_per_task} entries each",
        setting="n_train_tasks x replay_size",
    )


class MultiTaskReplay:
    """One RL replay buffer and one encoder buffer per task (see the module docstring).

    Args:
        n_tasks: number of (train) tasks; tasks are the indices ``0 .. n_tasks - 1``.
        size: capacity of each task's RL buffer, in transitions (oyster: 1e6).
        batch_B: the sampler's ``batch_B`` (envs per task).
        encoder_size: capacity of each task's encoder buffer, in transitions.
        discount: gamma of the stored one-step targets (``discount_n``).
        storage: ``"memory"`` or ``"memmap"`` for the RL buffers (encoder buffers are small
            and stay in memory).
        seed: seed of the per-buffer samplers (None: nondeterministic).
    """

    def __init__(
        self,
        n_tasks: int,
        *,
        size: int,
        batch_B: int,
        encoder_size: int,
        discount: float = 0.99,
        storage: str = "memory",
        seed: int | None = None,
    ):
        self.n_tasks = check_int("n_tasks", n_tasks, minimum=1)
        self.size = check_int("size", size, minimum=1)
        self.batch_B = check_int("batch_B", batch_B, minimum=1)
        self.encoder_size = check_int("encoder_size", encoder_size, minimum=1)
        self.discount = check_range("discount", discount, 0.0, 1.0)
        self.storage = check_choice("storage", storage, STORAGES)
        for name, value in (("size", self.size), ("encoder_size", self.encoder_size)):
            if -(-value // self.batch_B) < 3:
                raise ArgumentError(
                    f"{name} must hold at least 3 steps of batch_B={self.batch_B} envs "
                    f"(>= {3 * self.batch_B} transitions), got {value}"
                )
        check_task_buffers(self.n_tasks, self.size + self.encoder_size)
        seed = None if seed is None else check_int("seed", seed, minimum=0)
        self._seeds = np.random.SeedSequence(seed)
        self.rl_buffers = [self._new(self.size, self.storage) for _ in range(self.n_tasks)]
        self.encoder_buffers = [self._new(self.encoder_size, "memory") for _ in range(self.n_tasks)]

    def _new(self, size: int, storage: str) -> ReplayBuffer:
        """A fresh one-step buffer with its own sampler seed."""
        seed = int(self._seeds.spawn(1)[0].generate_state(1)[0])
        return ReplayBuffer(
            size=size,
            batch_B=self.batch_B,
            discount=self.discount,
            n_step_return=1,
            storage=storage,
            seed=seed,
        )

    def _task(self, name: str, task: Any) -> int:
        return check_int(name, task, minimum=0, maximum=self.n_tasks - 1)

    def _tasks(self, tasks: Sequence[int]) -> list[int]:
        if isinstance(tasks, str | bytes) or not hasattr(tasks, "__iter__"):
            raise ArgumentError(f"tasks must be a sequence of task indices, got {tasks!r}")
        out = [self._task(f"tasks[{i}]", t) for i, t in enumerate(tasks)]
        if not out:
            raise ArgumentError("tasks must name at least one task, got an empty sequence")
        return out

    # ------------------------------------------------------------------ writing
    def append_samples(
        self,
        task: int,
        samples: TensorDictBase,
        *,
        to_encoder: bool,
        context: TensorDictBase | None = None,
    ) -> None:
        """Copy a ``[T, B]`` sampler batch of ``task`` into its RL buffer.

        Args:
            task: the task the samples were collected on.
            samples: the sampler's batch (``[T, batch_B]``).
            to_encoder: also append the batch to the task's encoder buffer (data to infer
                the posterior from); a batch longer than that buffer leaves its most recent
                steps there.
            context: what the encoder buffer gets in place of ``samples``: the same steps as
                the encoder sees them (PEARL's sparse rewards); None: ``samples``.
        """
        task = self._task("task", task)
        to_encoder = check_bool("to_encoder", to_encoder)
        self.rl_buffers[task].append_samples(samples)
        if to_encoder:
            self._to_encoder(task, samples if context is None else context)

    def _to_encoder(self, task: int, samples: TensorDictBase) -> None:
        """Append ``[T, batch_B]`` samples to ``task``'s encoder buffer (its last steps only)."""
        encoder = self.encoder_buffers[task]
        encoder.append_samples(samples[-encoder.T_capacity :])

    def clear_encoder(self, task: int) -> None:
        """Empty the encoder buffer of ``task`` (a fresh buffer; storage is allocated lazily)."""
        task = self._task("task", task)
        self.encoder_buffers[task] = self._new(self.encoder_size, "memory")

    def task_len(self, task: int) -> int:
        """Transitions of ``task`` that ``sample_batch`` can draw now."""
        return len(self.rl_buffers[self._task("task", task)])

    def encoder_len(self, task: int) -> int:
        """Transitions of ``task`` that ``sample_context`` can draw now."""
        return len(self.encoder_buffers[self._task("task", task)])

    # ------------------------------------------------------------------ sampling
    def sample_batch(
        self, tasks: Sequence[int], batch_size: int, *, device: torch.device | None = None
    ) -> TensorDict:
        """RL batches of ``batch_size`` transitions from each task, stacked.

        Args:
            tasks: task indices (repeats allowed), the leading dim of the result.
            batch_size: transitions per task.
            device: where the batch is returned (None: the CPU).

        Returns:
            A ``[len(tasks), batch_size]`` TensorDict with the keys of
            ``ReplayBuffer.sample_batch`` plus ``("next", "reward")``.

        Raises:
            RuntimeError: a task's buffer holds no transition yet.
        """
        return self._sample(self.rl_buffers, tasks, batch_size, device)

    def sample_context(
        self, tasks: Sequence[int], batch_size: int, *, device: torch.device | None = None
    ) -> TensorDict:
        """Context batches from each task's encoder buffer (recent data only), stacked.

        Same arguments and keys as ``sample_batch``; read it with
        ``tdrl.models.qpg.context.context_from_transitions``.
        """
        return self._sample(self.encoder_buffers, tasks, batch_size, device)

    def sample_meta_batch(
        self,
        tasks: Sequence[int],
        batch_size: int,
        context_size: int,
        *,
        device: torch.device | None = None,
    ) -> TensorDict:
        """One meta-RL batch of ``tasks`` (``tdrl.keys``): RL transitions and their context.

        Args:
            tasks: task indices (repeats allowed), the batch dim of the result.
            batch_size: RL transitions per task (``sample_batch``).
            context_size: context transitions per task (``sample_context``).
            device: where the batch is returned (None: the CPU).

        Returns:
            A ``[len(tasks)]`` TensorDict with ``keys.META_RL`` (``[tasks, batch_size]``)
            and ``keys.CONTEXT`` (``[tasks, context_size]``).
        """
        rl = self.sample_batch(tasks, batch_size, device=device)
        context = self.sample_context(tasks, context_size, device=device)
        return TensorDict(
            {keys.META_RL: rl, keys.CONTEXT: context}, batch_size=rl.shape[:1], device=device
        )

    def _sample(
        self,
        buffers: list[ReplayBuffer],
        tasks: Sequence[int],
        batch_size: int,
        device: torch.device | None,
    ) -> TensorDict:
        task_list = self._tasks(tasks)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        batches = []
        for task in task_list:
            if len(buffers[task]) == 0:
                raise RuntimeError(f"cannot sample task {task}: its buffer holds no data yet")
            batch = buffers[task].sample_batch(batch_size)
            batch.set(keys.NEXT_REWARD, batch.get((keys.NEXT, keys.PREV_REWARD)))
            batches.append(batch)
        out = torch.stack(batches, dim=0)
        return out if device is None else out.to(device)

    # ------------------------------------------------------------------ TorchRL's API
    def extend(self, data: TensorDictBase, *, task: int, to_encoder: bool = True) -> torch.Tensor:
        """TorchRL's ``extend``, per task: the task's RL buffer's ``extend`` (and its encoder's).

        ``data`` in any layout ``ReplayBuffer.extend`` takes (time-major ``[T, batch_B]``,
        a TorchRL collector's ``[B, T]``, or ``[N]`` steps of one env when ``batch_B`` is 1).

        Returns:
            The task's RL-buffer indices written, as ``ReplayBuffer.extend`` returns them.
        """
        task = self._task("task", task)
        to_encoder = check_bool("to_encoder", to_encoder)
        index = self.rl_buffers[task].extend(data)  # TorchRL's layouts are read there
        if to_encoder:
            self._to_encoder(task, time_major(data, self.batch_B))
        return index

    def sample(
        self,
        batch_size: int,
        *,
        tasks: Sequence[int],
        device: torch.device | None = None,
    ) -> TensorDict:
        """TorchRL's ``sample``, over tasks: ``sample_batch(tasks, batch_size)``.

        A ``[len(tasks), batch_size]`` TensorDict; uniform, so no priority weights.
        """
        return self.sample_batch(tasks, batch_size, device=device)

    # ------------------------------------------------------------------ save / load
    def __len__(self) -> int:
        """Transitions the RL buffers can draw now, over all tasks."""
        return sum(len(b) for b in self.rl_buffers)

    def save(
        self, path: str | Path, *, info: Mapping[str, Any] | None = None, atomic: bool = True
    ) -> None:
        """Write every buffer under directory ``path`` (``task_{i}/rl``, ``task_{i}/encoder``).

        The file ``multi_task_replay.pt`` (the number of tasks and ``info``) is written
        last, so a directory holding it is a complete save (``saved_versions``).

        Args:
            path: the directory.
            info: plain data saved alongside, returned by ``load`` and ``saved_info``.
            atomic: as ``tdrl.replays.storage_files.save_replay_dir``'s (a crash or a full
                disk leaves the previous save complete).

        Raises:
            OSError: a file could not be written (named); ``atomic`` keeps the previous save.
        """
        with writing_dir(Path(path), MARKER_FILE, atomic=atomic) as target:
            buffers = zip(self.rl_buffers, self.encoder_buffers, strict=True)
            for i, (rl, enc) in enumerate(buffers):
                rl.save(target / f"task_{i}" / "rl", atomic=False)
                enc.save(target / f"task_{i}" / "encoder", atomic=False)
            marker = {
                "n_tasks": self.n_tasks,
                "entropy": str(self._seeds.entropy),  # an int (of up to 128 bits)
                "spawned": self._seeds.n_children_spawned,
                "info": dict(info or {}),
            }
            save_plain(marker, target / MARKER_FILE, "multi-task replay state")

    def saved_versions(self, path: str | Path) -> list[Path]:
        """The complete saves of directory ``path``: it, then a staged ``.{name}.new``."""
        return complete_dir(Path(path), MARKER_FILE)

    def saved_info(self, path: str | Path) -> dict[str, Any] | None:
        """The ``info`` saved with the buffers in ``path`` (a ``SnapshotError`` if unsafe)."""
        marker = load_plain(Path(path) / MARKER_FILE, what="multi-task replay state")
        info = marker.get("info") if isinstance(marker, dict) else None
        return info if isinstance(info, dict) else None

    def load(self, path: str | Path) -> dict[str, Any]:
        """Restore what ``save`` wrote (into a replay built with the same arguments).

        All or nothing: every task is loaded into new buffers before any is replaced.

        Returns:
            The ``info`` given to ``save``.

        Raises:
            FileNotFoundError: ``path`` holds no complete save.
            SnapshotError: a file is corrupt or does not fit (see ``ReplayBuffer.load``),
                or the save is of another number of tasks.
        """
        path = Path(path)
        if not (path / MARKER_FILE).is_file():
            raise FileNotFoundError(f"{path} holds no complete multi-task replay save")
        marker = load_plain(path / MARKER_FILE, what="multi-task replay state")
        seeds = _marker_seeds(marker, path / MARKER_FILE)
        n_tasks = marker.get("n_tasks")
        if n_tasks != self.n_tasks:
            raise SnapshotError(
                f"the replay saved in {path} has {n_tasks} tasks, this one {self.n_tasks}"
            )
        # Into new buffers first: a task that does not load leaves this replay as it was.
        rl_buffers = [self._new(self.size, self.storage) for _ in range(self.n_tasks)]
        encoder_buffers = [self._new(self.encoder_size, "memory") for _ in range(self.n_tasks)]
        for i in range(self.n_tasks):
            rl_buffers[i].load(path / f"task_{i}" / "rl")
            encoder_buffers[i].load(path / f"task_{i}" / "encoder")
        self.rl_buffers, self.encoder_buffers = rl_buffers, encoder_buffers
        # The seeds of the encoder buffers that clear_encoder makes from now on.
        self._seeds = seeds
        info = marker.get("info")
        return dict(info) if isinstance(info, dict) else {}
