"""n-step replay of ``[T, B]`` samples over a TorchRL storage.

Samples are stored as they come from a sampler, time-major: the storage has shape
``[T_capacity, B]`` (TorchRL ``LazyTensorStorage`` in memory or ``LazyMemmapStorage`` on
disk, ``ndim=2``) and a single time cursor wraps around it, so each env's column is a
contiguous history and n-step returns run along it. Which entries are drawn is decided by a
sampler object (``UniformSampler`` or ``PrioritizedSampler``) over flat indices
``t * B + b``; an entry becomes valid once its n-step window is complete.

For an entry ``(t, b)`` the n-step window stops at the first step that ended an episode:
with ``m`` the number of steps taken (``m <= n``)::

    return_n   = sum_{k<m} gamma^k r_{t+k}
    discount_n = gamma^m * (1 - terminated_{t+m-1})
    target     = agent inputs after step t+m-1: (o'_{t+m-1}, a_{t+m-1}, r_{t+m-1})

so a window cut by a time limit (``truncated``) still bootstraps from the true next
observation, and a terminal one does not. Across the buffer's wrap-around the window
follows the time index modulo the capacity.

A ``TimeMajorWriter`` (a TorchRL ``Writer``: cursor, written rows) writes batches into the
storage; the buffer keeps the per-step arrays and tells its sampler which entries are valid.
It also speaks TorchRL's replay API (``extend``, ``sample``, ...: ``tdrl.replays.torchrl_api``).

Devices: by default the buffer is on the CPU and ``sample_batch(n, device=...)`` hands out
minibatches on the training device (gathered into pinned memory and copied once,
asynchronously, to CUDA). With ``device`` (``replay_device``) storage, n-step arrays and
uniform index draws live there and minibatches are built without a host copy; prioritized
sampling keeps its sum tree on the CPU (indices and weights are copied over, the gather
runs on the device). Saved files hold CPU tensors: a save loads on any device.

Extra keys: a sampler's ``extra_keys`` (``("next", *key)`` entries beyond reward and episode
ends, e.g. a cost) are stored and returned by ``sample_batch`` under ``"next"`` at step ``t``
(one-step values, not n-step sums); the frame buffers do not keep them.

The module is over 450 lines because the buffer's writing, n-step sampling, priorities,
TorchRL API and persistence are methods of one object that share its arrays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl._compat import LazyTensorStorage, storage_tensordict, tensordict_from_trusted
from tdrl.keys import DISCOUNT_N, DONE_N, INDEX, IS_WEIGHT, RETURN_N, STEPS_N
from tdrl.replays.base import (
    STORAGES,
    IndexSampler,
    check_index_arrays_fit,
    check_replay_device,
    new_storage,
)
from tdrl.replays.storage_files import (
    check_replay_state,
    load_replay_dir,
    replay_config,
    save_replay_dir,
    saved_replay_info,
    saved_replay_versions,
)
from tdrl.replays.torchrl_api import (
    sample_size,
    time_major,
    torchrl_sample,
    torchrl_update_priority,
    torchrl_update_tensordict_priority,
)
from tdrl.replays.uniform import UniformSampler
from tdrl.replays.writer import TimeMajorWriter
from tdrl.utils.checks import ArgumentError, check_choice, check_int, check_range
from tdrl.utils.device import pinned_like, to_device


def _rows(value, rows: slice):
    """Slice the leading dim of a tensor or of every leaf of a nested dict."""
    if isinstance(value, dict):
        return {k: _rows(v, rows) for k, v in value.items()}
    return value[rows]


#: The ``("next", ...)`` entries a sampler batch always has (the others are extra keys).
NEXT_STANDARD = (keys.OBSERVATION, keys.REWARD, keys.DONE, keys.TERMINATED, keys.TRUNCATED)
#: The per-step entries kept beside the storage for the n-step returns.
NEXT_FLAGS = (keys.NEXT_REWARD, keys.NEXT_DONE, keys.NEXT_TERMINATED)


class ReplayBuffer:
    """Uniform or prioritized n-step replay buffer for ``[T, B]`` samples.

    Args:
        size: capacity in transitions (rounded up to whole time rows of ``B``).
        batch_B: the sampler's ``batch_B`` (columns of the storage).
        discount: gamma of the n-step returns.
        n_step_return: n.
        sampler: ``UniformSampler`` / ``PrioritizedSampler`` over ``T_capacity * B`` flat
            indices, or None for uniform sampling.
        storage: ``"memory"`` (``LazyTensorStorage``) or ``"memmap"``
            (``LazyMemmapStorage``, for buffers larger than RAM).
        scratch_dir: directory of the memmap files (default: a temporary directory).
        seed: seed of the default uniform sampler.
        device: where the storage, the n-step arrays and the default sampler's draws live
            (None: the CPU; see the module docstring). Memmap storage stays on the CPU.
        batch_size: what ``sample()`` draws when given no batch size (None: it needs one).
    """

    #: Extra newest rows kept invalid beyond the n-step window (a subclass that rebuilds
    #: o_{t+n} from row t+n sets 1).
    _lookahead: ClassVar[int] = 0

    def __init__(
        self,
        *,
        size: int,
        batch_B: int,
        discount: float = 0.99,
        n_step_return: int = 1,
        sampler: IndexSampler | None = None,
        storage: str = "memory",
        scratch_dir: str | Path | None = None,
        seed: int | None = None,
        device: str | torch.device | None = None,
        batch_size: int | None = None,
    ):
        self.batch_B = check_int("batch_B", batch_B, minimum=1)
        self.batch_size = None if batch_size is None else sample_size(batch_size, None)
        size = check_int("size", size, minimum=1)
        self.T_capacity = math.ceil(size / self.batch_B)
        self.size = self.T_capacity * self.batch_B
        self.n_step_return = check_int("n_step_return", n_step_return, minimum=1)
        if self.n_step_return + 1 >= self.T_capacity:
            raise ValueError(
                f"n_step_return={n_step_return} needs a buffer longer than n steps per env; "
                f"size={size} gives {self.T_capacity} steps per env"
            )
        self.discount = check_range("discount", discount, 0.0, 1.0)
        self.storage_kind = check_choice("storage", storage, STORAGES)
        self.scratch_dir = scratch_dir
        self.device = check_replay_device("device", device, storage) or torch.device("cpu")
        draw_on = None if self.device.type == "cpu" else self.device
        check_index_arrays_fit(self.size)
        if sampler is None:
            sampler = UniformSampler(self.size, seed=seed, device=draw_on)
        self.sampler = sampler
        if self.sampler.capacity != self.size:
            raise ValueError(
                f"sampler capacity {self.sampler.capacity} != buffer size {self.size} "
                f"(T_capacity={self.T_capacity} x batch_B={self.batch_B})"
            )
        self.storage: LazyTensorStorage | None = None
        self._leaves: list | None = None
        self.writer = TimeMajorWriter(size=self.size, batch_B=self.batch_B)
        # Small per-step arrays kept beside the storage for the n-step computation.
        grid, dev = (self.T_capacity, self.batch_B), self.device
        self._reward = torch.zeros(grid, device=dev)
        self._done = torch.zeros(grid, dtype=torch.bool, device=dev)
        self._terminated = torch.zeros(grid, dtype=torch.bool, device=dev)
        self._pending_priority: torch.Tensor | None = None
        self.extra_keys: list[tuple[str, ...]] | None = None  # set by the first batch

    @property
    def t(self) -> int:
        """The time cursor: the next row to write (the writer's)."""
        return self.writer.cursor

    # ------------------------------------------------------------------ writing
    def _new_storage(self, template: TensorDictBase | None = None) -> LazyTensorStorage:
        """The storage (checked to fit entries like ``template``'s), for the writer."""
        storage = new_storage(
            self.storage_kind, self.size, self.scratch_dir, self.device, template=template
        )
        self.writer.register_storage(storage)
        return storage

    def append_samples(
        self, samples: TensorDictBase, priorities: torch.Tensor | None = None
    ) -> np.ndarray:
        """Copy a ``[T, B]`` sampler batch in at the cursor.

        Args:
            samples: the sampler's batch (it may be reused by the sampler afterwards).
            priorities: optional ``[T, B]`` input priorities (prioritized sampling),
                applied once each entry's n-step window is complete; default priority
                otherwise.

        Returns:
            The time rows written.

        Raises:
            ArgumentError: ``samples`` is not ``[T, batch_B]`` with ``T <= T_capacity``.
        """
        rows = self.writer.rows(samples, name="samples")
        (T, B), rows_t = samples.batch_size, torch.from_numpy(rows)
        needed = (*keys.AGENT_INPUTS, keys.ACTION, keys.NEXT_OBSERVATION, *NEXT_FLAGS)
        if missing := [k for k in needed if k not in samples.keys(True)]:
            raise ArgumentError(f"samples lack {missing}: a sampler batch has each of {needed}")
        # [T, B] (or [T, B, 1]) before anything is written: a wrong shape changes nothing.
        reward, done, terminated = (samples.get(k).reshape(T, B) for k in NEXT_FLAGS)
        stored = self._store(samples)
        if self.storage is None:
            self.storage = self._new_storage(stored)
        self._invalidate(rows)
        dev = self.device
        try:  # a blocking copy: the sampler reuses its buffer once this returns
            self.writer.extend(stored if dev.type == "cpu" else stored.to(dev))
        except RuntimeError as err:  # another dtype or shape than the first batch's
            first = (str(err).splitlines() or [""])[0]
            raise ArgumentError(f"samples do not fit the entries stored so far: {first}") from None
        rows_d = rows_t.to(dev)
        self._reward[rows_d] = reward.to(dev, torch.float32)
        self._done[rows_d] = done.to(dev)
        self._terminated[rows_d] = terminated.to(dev)
        if priorities is not None:  # on the CPU, beside the sampler that takes them
            if self._pending_priority is None:
                self._pending_priority = torch.zeros(self.T_capacity, B)
            self._pending_priority[rows_t] = torch.as_tensor(priorities).float().cpu()
        # Rows whose n-step window just became complete.
        self._validate(self.writer.completed(T, self.n_step_return - 1 + self._lookahead))
        return rows

    def _store(self, samples: TensorDictBase) -> TensorDictBase:
        """The part of a sampler batch kept in the storage (a subclass may store less).

        Besides the agent inputs, ``action`` and the next observation: the sampler's extra
        keys (``("next", *key)`` entries other than reward and episode ends, e.g. a cost),
        returned at step ``t`` by ``sample_batch``.
        """
        if self.extra_keys is None:  # learned from the first batch
            nxt = samples.get(keys.NEXT).keys(include_nested=True, leaves_only=True)
            found = [k if isinstance(k, tuple) else (k,) for k in nxt]
            self.extra_keys = [(keys.NEXT, *k) for k in found if k[0] not in NEXT_STANDARD]
        chosen = (*keys.AGENT_INPUTS, keys.ACTION, keys.NEXT_OBSERVATION, *self.extra_keys)
        return samples.select(*chosen, strict=True)

    def _flat(self, rows: np.ndarray) -> np.ndarray:
        return (rows[:, None] * self.batch_B + np.arange(self.batch_B)[None, :]).reshape(-1)

    def _invalidate(self, rows: np.ndarray) -> None:
        self.sampler.set_invalid(self._flat(rows))

    def _validate(self, rows: np.ndarray) -> None:
        if rows.size == 0:
            return
        flat = self._flat(rows)
        self.sampler.set_default(flat)
        if self._pending_priority is not None:
            prio = self._pending_priority[torch.from_numpy(rows)].reshape(-1)
            self.sampler.update_priority(torch.from_numpy(flat), prio)

    def __len__(self) -> int:
        """Transitions that can be sampled now (TorchRL's ``len`` counts stored ones)."""
        return len(self.sampler)

    # ------------------------------------------------------------------ TorchRL's API
    def extend(self, data: TensorDictBase) -> torch.Tensor:
        """TorchRL's ``extend``: ``append_samples``; returns the flat indices ``[T, B]`` written."""
        rows = self.append_samples(time_major(data, self.batch_B))
        return torch.from_numpy(self._flat(rows)).view(-1, self.batch_B)

    #: TorchRL's ``sample``, ``update_priority``, ``update_tensordict_priority`` (shared).
    sample = torchrl_sample
    update_priority = torchrl_update_priority
    update_tensordict_priority = torchrl_update_tensordict_priority

    # ------------------------------------------------------------------ sampling
    def sample_batch(self, batch_size: int, *, device: torch.device | None = None) -> TensorDict:
        """Draw ``batch_size`` transitions with their n-step targets.

        Args:
            batch_size: transitions to draw.
            device: where the batch is returned (None: the buffer's). CPU to CUDA: gathered
                into pinned memory, then copied over once, asynchronously.

        Returns:
            A TensorDict ``[batch_size]`` with the agent inputs and ``action`` at t; under
            ``"next"`` the agent inputs to bootstrap from; ``return_n``, ``discount_n``
            (``gamma^m``, 0 when the window hit a terminal state), ``done_n``,
            ``steps_n`` (m), ``is_weight`` (importance weights; ones when uniform) and
            ``index`` (for ``update_priorities``).
        """
        dev = self.device
        target = dev if device is None else torch.device(device)
        batch_size = sample_size(batch_size, None)
        index, info = self.sampler.sample(None, batch_size)
        index = torch.as_tensor(index, dtype=torch.long, device=dev).reshape(-1)
        t_idx = torch.div(index, self.batch_B, rounding_mode="floor")
        b_idx = index % self.batch_B
        return_n, discount_n, done_n, end_t, steps = self._n_step(t_idx, b_idx)
        weight = info.get("priority_weight") if isinstance(info, dict) else None
        weight = (
            torch.ones(batch_size, device=dev)
            if weight is None
            else torch.as_tensor(weight, dtype=torch.float32).reshape(-1).to(dev)
        )
        extra = {
            RETURN_N: return_n,
            DISCOUNT_N: discount_n,
            DONE_N: done_n,
            STEPS_N: steps,
            IS_WEIGHT: weight,
            INDEX: index,
        }
        batch = self._extract(t_idx, b_idx, end_t, extra, target.type == "cuda" != dev.type)
        return batch if target == dev else to_device(batch, target)

    def _n_step(
        self, t_idx: torch.Tensor, b_idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """n-step return, bootstrap discount, terminal flag, last step and step count."""
        n, gamma = self.n_step_return, self.discount
        if n == 1:
            terminated = self._terminated[t_idx, b_idx]
            discount_n = torch.where(terminated, 0.0, gamma)
            return self._reward[t_idx, b_idx], discount_n, terminated, t_idx, torch.ones_like(t_idx)
        window = (t_idx[:, None] + torch.arange(n, device=t_idx.device)) % self.T_capacity
        cols = b_idx[:, None]
        done = self._done[window, cols]
        # Step k of the window counts if no episode ended at steps 0..k-1.
        alive = (done.long().cumsum(1) - done.long()) == 0
        steps = alive.sum(1)
        powers = gamma ** torch.arange(n, dtype=torch.float32, device=t_idx.device)
        return_n = (self._reward[window, cols] * powers * alive).sum(1)
        end_t = (t_idx + steps - 1) % self.T_capacity
        terminated = self._terminated[end_t, b_idx]
        discount_n = torch.where(terminated, 0.0, gamma ** steps.float())
        return return_n, discount_n, terminated, end_t, steps

    def _gather(self, t_idx: torch.Tensor, b_idx: torch.Tensor, pin: bool = False) -> dict:
        """Stored leaves at ``(t, b)`` as a nested dict of tensors (no TensorDict indexing).

        ``pin``: gather into pinned host memory (a CPU buffer feeding a CUDA learner).
        """
        if self._leaves is None:
            data = storage_tensordict(self.storage)
            self._leaves = [(k, data.get(k)) for k in data.keys(True, True)]
        out: dict = {}
        flat = t_idx * self.batch_B + b_idx
        for key, leaf in self._leaves:
            # index_select on a flat view is several times faster than advanced indexing.
            source = leaf.view(-1, *leaf.shape[2:])
            if pin:
                value = torch.index_select(source, 0, flat, out=pinned_like(source, len(flat)))
            else:
                value = source.index_select(0, flat)
            if isinstance(key, tuple):
                node = out
                for k in key[:-1]:
                    node = node.setdefault(k, {})
                node[key[-1]] = value
            else:
                out[key] = value
        return out

    def _extract(
        self,
        t_idx: torch.Tensor,
        b_idx: torch.Tensor,
        end_t: torch.Tensor,
        extra: dict,
        pin: bool = False,
    ) -> TensorDict:
        """One TensorDict of the inputs at ``(t, b)``, the bootstrap inputs and ``extra``.

        Agent inputs and action at ``(t, b)``, bootstrap inputs after step ``end_t``, and the
        ``extra`` entries; stored tensors gathered into pinned memory with ``pin``.
        """
        n = t_idx.shape[0]
        both = self._gather(torch.cat([t_idx, end_t]), torch.cat([b_idx, b_idx]), pin)
        batch = {k: _rows(both[k], slice(None, n)) for k in (*keys.AGENT_INPUTS, keys.ACTION)}
        batch[keys.NEXT] = {
            keys.OBSERVATION: _rows(both[keys.NEXT][keys.OBSERVATION], slice(n, None)),
            keys.PREV_ACTION: both[keys.ACTION][n:],
            keys.PREV_REWARD: self._reward[end_t, b_idx].unsqueeze(-1),
        }
        for key in self.extra_keys or ():  # the extra keys at step t
            inner, value = batch, both
            for k in key[:-1]:
                inner, value = inner.setdefault(k, {}), value[k]
            inner[key[-1]] = value[key[-1]][:n]
        batch.update(extra)
        return tensordict_from_trusted(batch, (n,))

    def update_priorities(self, index: torch.Tensor, priorities: torch.Tensor) -> None:
        """New priorities for the entries of the last batch (prioritized sampling).

        The sampler is on the CPU: from another device, indices and priorities come back in
        one copy (one synchronisation per update).
        """
        if index.device.type == "cpu" and priorities.device.type == "cpu":
            self.sampler.update_priority(index, priorities.detach().float())
            return
        prio = priorities.detach().double()  # float64 holds indices exactly up to 2**53
        both = torch.stack([index.to(prio.device, torch.float64), prio]).cpu()
        self.sampler.update_priority(both[0].long(), both[1].float())

    # ------------------------------------------------------------------ save / load
    def _config(self) -> dict[str, Any]:
        """What a saved state must share with the buffer it is loaded into."""
        return replay_config(self, ("size", "batch_B", "n_step_return"))

    def state_dict(self) -> dict[str, Any]:
        """Everything but the storage's tensors (see ``save``), as tensors and plain data."""
        return {
            "config": self._config(),
            "t": self.t,
            "written": torch.from_numpy(self.writer.written.copy()),
            "reward": self._reward.to("cpu", copy=True),
            "done": self._done.to("cpu", copy=True),
            "terminated": self._terminated.to("cpu", copy=True),
            "pending_priority": self._pending_priority,
            "sampler": self.sampler.state_dict(),
        }

    def _check_state(self, state: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming what of a saved state does not fit this buffer."""
        check_replay_state(state, self._config(), (self.T_capacity, self.batch_B))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` (into a buffer built with the same arguments).

        Raises:
            ValueError: the state does not fit this buffer (size, ``batch_B``,
                ``n_step_return``, storage or sampler kind, array shapes), named.
        """
        self._check_state(state)
        self.sampler.load_state_dict(state["sampler"])  # checks its state before changing
        self.writer.load_state_dict({"cursor": state["t"], "written": state["written"]})
        self._reward.copy_(state["reward"])
        self._done.copy_(state["done"])
        self._terminated.copy_(state["terminated"])
        self._pending_priority = state["pending_priority"]

    def save(
        self, path: str | Path, *, info: Mapping[str, Any] | None = None, atomic: bool = True
    ) -> None:
        """Write the contents, cursor and priorities to directory ``path``.

        ``path/storage`` gets the storage's memmap files; ``path/replay_state.pt``, written
        last, the rest (tensors and plain data) with every storage file's size (see
        ``tdrl.replays.storage_files.save_replay_dir`` for ``info`` and ``atomic``).

        Raises:
            OSError: a file could not be written (named); ``atomic`` keeps the previous save.
        """
        save_replay_dir(path, self.state_dict(), self.storage, info=info, atomic=atomic)

    #: The complete saves of a directory, newest first (``saved_replay_versions``).
    saved_versions = staticmethod(saved_replay_versions)
    #: The ``info`` saved in a directory (``saved_replay_info``).
    saved_info = staticmethod(saved_replay_info)

    def load(self, path: str | Path) -> dict[str, Any]:
        """Restore what ``save`` wrote (into a buffer built with the same arguments).

        Everything is checked before the buffer changes (``load_replay_dir``): the state
        file is loaded with ``weights_only``, and its configuration, its arrays and every
        storage file (present, with its saved size) must fit this buffer.

        Returns:
            The ``info`` given to ``save``.

        Raises:
            FileNotFoundError: ``path`` holds no complete save.
            SnapshotError: (a ``ValueError``) a file is corrupt, unsafe or does not fit; named.
        """
        state, data = load_replay_dir(
            Path(path),
            check=self._check_state,  # before the storage, whose checks are less telling
            restore=self.load_state_dict,
            grid=(self.T_capacity, self.batch_B),
            stored_keys=self._stored_keys(),
        )
        if data is not None:
            self.storage = self._new_storage()
            self.storage.set(torch.arange(self.T_capacity), to_device(data, self.device))
            self._leaves = None
            nxt = data.get(keys.NEXT, None)
            stored = [] if nxt is None else nxt.keys(include_nested=True, leaves_only=True)
            paths = [k if isinstance(k, tuple) else (k,) for k in stored]
            self.extra_keys = [(keys.NEXT, *p) for p in paths if p[0] not in NEXT_STANDARD]
        return dict(state.get("info") or {})

    def _stored_keys(self) -> tuple[Any, ...]:
        """Top-level storage keys (``_store``'s)."""
        return (*keys.AGENT_INPUTS, keys.ACTION, keys.NEXT)
