"""Sequence replay for recurrent agents (R2D1): windows of consecutive steps and their states.

Samples are kept time-major as the sampler makes them, like ``ReplayBuffer``: one time cursor
``t`` wraps around ``T_capacity`` rows of ``B`` env columns. The recurrent state before a step
(``rnn_state``) is kept every ``k = rnn_state_interval`` rows (rlpyt's
``store_rnn_state_interval``): rows ``0, k, 2k, ...``, where sequences start; ``k = 0`` keeps
none, and sequences then start at any row from a zero state. The TorchRL storage (memory or
memmap) holds blocks ``[T_capacity // k, B]``: block ``(j, b)`` has ``steps`` (``[k, ...]``,
``keys_to_store`` of rows ``jk .. jk + k - 1`` of column b; not ``("next", "observation")``,
the next step's observation) and the ``rnn_state`` of row ``jk`` (k = 0: single steps).

Start ``j`` of column ``b`` (row ``s = j * max(k, 1)``, flat index ``j * B + b``, one of
``start_capacity`` for the sampler: ``UniformSampler`` or ``PrioritizedSampler``) is drawn
once valid. With ``filled`` rows written and the oldest at ``o = (t - filled) mod T_capacity``::

    valid(s)  <=>  back <= (s - o) mod T_capacity  and  (s - o) mod T_capacity + L <= filled

all ``L = batch_T + n_step_return`` rows of the window (and ``back`` rows before it: 0 here,
C - 1 for frame stacks) are consecutive steps, none overwritten: a window never crosses the
cursor, across wrap-around too. Windows may hold episode ends (the learner masks them).

Input priorities (rlpyt's ``input_priorities``): ``append_samples(samples, priorities)``
takes ``[T // max(k, 1), B]``, one per start row of the batch. Priority ``i`` goes to the
start ``input_priority_shift`` start rows earlier in its column (rlpyt aligns a segment's
priority with the start of its warm-up); it is dropped if that start's data is not in the
buffer. A valid start takes it at once; another keeps it pending until it becomes valid, or
loses it when its row is overwritten. Starts becoming valid without one get the default.

Writing goes through a ``TimeMajorWriter`` over the blocks (cursor ``t / max(k, 1)``), and the
buffer speaks TorchRL's replay API (``extend``, ``sample``, ``len``, ``update_priority``,
``update_tensordict_priority``; ``tdrl.replays.torchrl_api``): its entries are the starts.

Devices as ``ReplayBuffer``: storage on the CPU (batches gathered into pinned memory, copied
once to ``device``) or on the device. Saves hold CPU tensors and load without running code.

The module runs over 450 lines because validity, pending input priorities and the saved state
are one piece of bookkeeping about the same cursor; split, each part would need the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl._compat import (
    LazyTensorStorage,
    storage_tensordict,
    tensordict_from_trusted,
)
from tdrl.replays.base import (
    STORAGES,
    IndexSampler,
    check_index_arrays_fit,
    check_replay_device,
    new_storage,
)
from tdrl.replays.storage_files import (
    check_cursor,
    check_rnn_template,
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
from tdrl.utils.checks import ArgumentError, check_callable, check_choice, check_int
from tdrl.utils.device import pinned_like, to_device

__all__ = ["SEQUENCE_KEYS", "STEPS", "SequenceReplayBuffer", "gather_entries"]

_FLAGS = (keys.NEXT_REWARD, keys.NEXT_DONE, keys.NEXT_TERMINATED, keys.NEXT_TRUNCATED)
#: What the sequence buffer stores of each step by default.
SEQUENCE_KEYS = (*keys.AGENT_INPUTS, keys.ACTION, *_FLAGS, keys.IS_INIT)
#: Storage key of the blocks of steps.
STEPS = "steps"


def _key(key: Any) -> str | tuple[str, ...]:
    """A step key as a string or a tuple of strings (the recurrent state is kept apart)."""
    key = key[0] if isinstance(key, tuple) and len(key) == 1 else key
    nested = isinstance(key, tuple) and key and all(isinstance(k, str) for k in key)
    if not (isinstance(key, str) or nested) or key in (keys.RNN_STATE, keys.NEXT_RNN_STATE):
        raise ArgumentError(f"keys_to_store must hold step keys (str or tuple), got {key!r}")
    return key


def gather_entries(
    data: TensorDictBase, flat: torch.Tensor, shape: tuple[int, ...], pin: bool, skip: Any = ()
) -> TensorDict:
    """Entries ``flat`` of ``data``'s contiguous leaves (batch dims flattened) as ``[*shape]``.

    ``index_select`` copies whole entries (faster than advanced indexing); ``pin``: pinned.
    """
    out = TensorDict({}, batch_size=shape)
    for key, leaf in data.items(True, True):
        if key not in skip:
            source = leaf.view(-1, *leaf.shape[data.batch_dims :])
            pinned = pinned_like(source, flat.numel()) if pin else None
            value = torch.index_select(source, 0, flat, out=pinned)
            out.set(key, value.view(*shape, *source.shape[1:]))
    return out


class SequenceReplayBuffer:
    """Uniform or prioritized replay of ``[L, N]`` sequences for recurrent agents.

    Args:
        size: capacity in transitions, rounded up so that ``T_capacity`` (steps per env)
            is a whole number of ``rnn_state_interval``; it must hold ``L`` steps per env.
        batch_B: the sampler's ``batch_B`` (env columns).
        batch_T: steps trained on per sequence, warm-up included (rlpyt's
            ``batch_T + warmup_T``).
        n_step_return: extra steps at the end of each sequence for n-step targets;
            ``L = batch_T + n_step_return``.
        rnn_state_interval: keep ``rnn_state`` every k rows (0: never, sequences start from
            zeros at any row); appended batches need ``T`` a multiple of k.
        input_priority_shift: start rows between a batch row and the start its input
            priority goes to (see the module docstring).
        priority_fn: computes the input priorities of a sampler batch when
            ``append_samples`` is given none (R2D1's, from the recorded Q-values), so that
            every append gets them, the asynchronous runner's included (None: defaults).
        keys_to_store: step keys kept (default ``SEQUENCE_KEYS``); samples must have them.
        sampler: ``UniformSampler`` / ``PrioritizedSampler`` over ``start_capacity(...)``
            flat sequence starts, or None for uniform sampling.
        storage: ``"memory"`` or ``"memmap"`` (``LazyMemmapStorage``).
        scratch_dir: directory of the memmap files (default: a temporary directory).
        seed: seed of the default uniform sampler.
        device: where storage and default draws live (None: the CPU); memmap stays there.
        batch_size: sequences ``sample()`` draws when given no number (None: it needs one).
    """

    #: Step keys ``keys_to_store`` must include (a frame-stacking subclass needs some).
    required_keys: ClassVar[tuple[Any, ...]] = ()
    #: Step keys gathered per window rather than per sequence (frames).
    _per_window: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        size: int,
        batch_B: int,
        batch_T: int,
        n_step_return: int = 1,
        rnn_state_interval: int = 1,
        input_priority_shift: int = 0,
        priority_fn: Callable[[TensorDictBase], torch.Tensor] | None = None,
        keys_to_store: Sequence[Any] | None = None,
        sampler: IndexSampler | None = None,
        storage: str = "memory",
        scratch_dir: str | Path | None = None,
        seed: int | None = None,
        device: str | torch.device | None = None,
        batch_size: int | None = None,
    ):
        self.batch_B = check_int("batch_B", batch_B, minimum=1)
        self.batch_size = None if batch_size is None else sample_size(batch_size, None)
        self.batch_T = check_int("batch_T", batch_T, minimum=1)
        self.n_step_return = check_int("n_step_return", n_step_return, minimum=0)
        self.L = self.batch_T + self.n_step_return
        self.rnn_state_interval = check_int("rnn_state_interval", rnn_state_interval, minimum=0)
        self.stride = max(self.rnn_state_interval, 1)
        shift = check_int("input_priority_shift", input_priority_shift, minimum=0)
        self.input_priority_shift = shift
        self.priority_fn = priority_fn and check_callable("priority_fn", priority_fn)
        n_starts = self.start_capacity(size=size, batch_B=batch_B, rnn_state_interval=self.stride)
        self.start_rows = n_starts // self.batch_B
        self.T_capacity = self.start_rows * self.stride
        self.size = self.T_capacity * self.batch_B
        if self.T_capacity < self.L:
            raise ArgumentError(f"size={size} gives fewer steps per env than L={self.L}")
        check_index_arrays_fit(self.size)
        chosen = SEQUENCE_KEYS if keys_to_store is None else keys_to_store
        if isinstance(chosen, str) or not isinstance(chosen, Sequence) or not chosen:
            raise ArgumentError(f"keys_to_store must be a list of keys, got {keys_to_store!r}")
        self.keys_to_store = tuple(dict.fromkeys(_key(k) for k in chosen))
        if not set(self.required_keys) <= set(self.keys_to_store):
            needed = " and ".join(repr(k) for k in self.required_keys)
            raise ArgumentError(f"keys_to_store must include {needed}")
        self.storage_kind = check_choice("storage", storage, STORAGES)
        self.scratch_dir = scratch_dir
        self.device = check_replay_device("device", device, storage) or torch.device("cpu")
        if sampler is None:
            draw_on = None if self.device.type == "cpu" else self.device
            sampler = UniformSampler(n_starts, seed=seed, device=draw_on)
        if getattr(sampler, "capacity", None) != n_starts:
            raise ArgumentError(f"sampler must have capacity start_capacity(...) = {n_starts}")
        self.sampler = sampler
        self.storage: LazyTensorStorage | None = None
        self._rnn_zero: TensorDictBase | None = None  # a zero state [] (None: no rnn_state)
        self.writer = TimeMajorWriter(size=n_starts, batch_B=self.batch_B)  # over the blocks
        self.filled = 0  # rows holding data, at most T_capacity
        self._back = 0  # rows before a start that its window needs (frame stacks: C - 1)
        self._valid_rows = np.zeros(self.start_rows, dtype=bool)
        self._pending: torch.Tensor | None = None  # input priorities [start_rows, B], NaN: none

    @staticmethod
    def start_capacity(*, size: int, batch_B: int, rnn_state_interval: int) -> int:
        """Sequence starts, the sampler's capacity: ``ceil(ceil(size / B) / max(k, 1)) * B``."""
        size = check_int("size", size, minimum=1)
        B = check_int("batch_B", batch_B, minimum=1)
        k = max(check_int("rnn_state_interval", rnn_state_interval, minimum=0), 1)
        return math.ceil(math.ceil(size / B) / k) * B

    @property
    def t(self) -> int:
        """The time cursor: the next row to write (the writer's block cursor times k)."""
        return self.writer.cursor * self.stride

    # ------------------------------------------------------------------ writing
    def _new_storage(self, template: TensorDictBase | None = None) -> LazyTensorStorage:
        """The storage of the starts' blocks (checked to fit ``T_capacity * B`` steps)."""
        n, steps = self.start_rows * self.batch_B, self.T_capacity * self.batch_B
        storage = new_storage(
            self.storage_kind, n, self.scratch_dir, self.device, template=template, steps=steps
        )
        self.writer.register_storage(storage)
        return storage

    def append_samples(
        self, samples: TensorDictBase, priorities: torch.Tensor | None = None
    ) -> np.ndarray:
        """Copy a ``[T, B]`` sampler batch in at the cursor; returns the time rows written.

        Args:
            samples: ``keys_to_store`` and ``rnn_state`` (the sampler may reuse it after).
            priorities: input priorities ``[T // max(k, 1), B]`` (module docstring), or None
                (``priority_fn``'s, if any).

        Raises:
            ArgumentError: another ``B``, ``T`` not a multiple of k or over ``T_capacity``,
                missing keys, or ``priorities`` of another shape.
        """
        if not isinstance(samples, TensorDictBase) or samples.batch_dims != 2:
            raise ArgumentError("samples must be a [T, B] TensorDict")
        (T, B), k, cap = samples.batch_size, self.stride, self.T_capacity
        missing = [key for key in self.keys_to_store if key not in samples.keys(True)]
        if self.batch_B != B or T % k or cap < T or missing:
            raise ArgumentError(
                f"samples [T={T}, B={B}] need B={self.batch_B}, T <= {cap} a multiple of "
                f"rnn_state_interval={self.rnn_state_interval} and keys_to_store (lacking "
                f"{missing})"
            )
        n_new = T // k
        if priorities is None and self.priority_fn is not None:
            priorities = self.priority_fn(samples)
        if priorities is not None:
            priorities = torch.as_tensor(priorities).detach().to("cpu", torch.float32)
            if tuple(priorities.shape) != (n_new, B):
                raise ArgumentError(f"priorities must be [{n_new}, {B}], one per start row")
        if self.storage is None:
            self.storage = self._first_batch(samples)
        rows, j0 = (self.t + np.arange(T)) % cap, self.t // k
        blocks = torch.from_numpy((j0 + np.arange(n_new)) % self.start_rows)
        if self._pending is not None:
            self._pending[blocks] = float("nan")  # their old data is overwritten
        data = {STEPS: self._store(samples).reshape(n_new, k, B).transpose(1, 2)}
        if self.rnn_state_interval:
            data[keys.RNN_STATE] = samples.get(keys.RNN_STATE)[::k]
        stored = TensorDict(data, batch_size=[n_new, B]).contiguous()  # contiguous leaves
        self.writer.extend(stored.to(self.device))  # at ``blocks``; a blocking copy
        self.filled = min(self.filled + T, cap)
        targets = None if priorities is None else self._input_priorities(priorities, j0, n_new)
        self._update_validity(targets)
        return rows

    def _first_batch(self, samples: TensorDictBase) -> LazyTensorStorage:
        """Learn the recurrent state's layout; a new storage."""
        state, k = samples.get(keys.RNN_STATE, None), self.rnn_state_interval
        if not isinstance(state, TensorDictBase | None) or (state is None and k):
            raise ArgumentError("samples need a TensorDict rnn_state [T, B] (interval > 0)")
        if state is not None:
            self._rnn_zero = state[0, 0].clone().zero_().to(self.device)
        return self._new_storage(self._store(samples))

    def _store(self, samples: TensorDictBase) -> TensorDictBase:
        """The step keys kept (a subclass may keep less)."""
        return samples.select(*self.keys_to_store, strict=True)

    def _stored_keys(self) -> tuple[str, ...]:
        """Top-level storage keys."""
        return (STEPS, keys.RNN_STATE) if self.rnn_state_interval else (STEPS,)

    def _input_priorities(self, prio: torch.Tensor, j0: int, n_new: int) -> np.ndarray:
        """Keep each input priority for its start (shifted back); the start rows it reached."""
        if self._pending is None:
            self._pending = torch.full((self.start_rows, self.batch_B), float("nan"))
        # The target's age in start rows (0: the oldest data); the new ones are the last n_new.
        shifted = np.arange(n_new) - self.input_priority_shift
        keep = self.filled // self.stride - n_new + shifted >= 0
        target = (j0 + shifted[keep]) % self.start_rows
        self._pending[torch.from_numpy(target)] = prio[torch.from_numpy(keep)]
        return target

    def _flat(self, start_rows: np.ndarray) -> np.ndarray:
        return (start_rows[:, None] * self.batch_B + np.arange(self.batch_B)).reshape(-1)

    def _valid_now(self) -> np.ndarray:
        """Start rows whose window (and the ``_back`` rows before it) holds intact data."""
        oldest = (self.t - self.filled) % self.T_capacity
        offset = (np.arange(self.start_rows) * self.stride - oldest) % self.T_capacity
        return (offset >= self._back) & (offset + self.L <= self.filled)

    def _update_validity(self, targets: np.ndarray | None = None) -> None:
        """Tell the sampler which starts changed; apply pending priorities to valid starts."""
        now = self._valid_now()
        lost, gained = (
            np.flatnonzero(self._valid_rows > now),
            np.flatnonzero(now > self._valid_rows),
        )
        self._valid_rows = now
        if lost.size:
            self.sampler.set_invalid(self._flat(lost))
        if gained.size:
            self.sampler.set_default(self._flat(gained))
        if self._pending is None:
            return
        ready = gained if targets is None else np.union1d(gained, targets[now[targets]])
        rows = torch.from_numpy(ready)
        prio = self._pending[rows].reshape(-1)
        has = ~prio.isnan()
        if has.any():
            flat = torch.from_numpy(self._flat(ready))
            self.sampler.update_priority(flat[has], prio[has])
            self._pending[rows] = float("nan")

    def __len__(self) -> int:
        """Sequence starts that can be drawn now (TorchRL's ``len`` counts stored items)."""
        return len(self.sampler)

    # ------------------------------------------------------------------ TorchRL's API
    def extend(self, data: TensorDictBase) -> torch.Tensor:
        """TorchRL's ``extend``: ``append_samples``; returns the starts written ``[T / k, B]``."""
        rows = self.append_samples(time_major(data, self.batch_B))[:: self.stride]
        return torch.from_numpy(self._flat(rows // self.stride)).view(-1, self.batch_B)

    #: TorchRL's ``sample``, ``update_priority``, ``update_tensordict_priority`` (shared).
    sample = torchrl_sample
    update_priority = torchrl_update_priority
    update_tensordict_priority = torchrl_update_tensordict_priority

    # ------------------------------------------------------------------ sampling
    def sample_batch(self, batch_B: int, *, device: str | torch.device | None = None) -> TensorDict:
        """Draw ``batch_B`` sequences, returned on ``device`` (None: the buffer's).

        Returns:
            A TensorDict ``[]`` with ``sequence`` (``[L, batch_B]``, dim 0 named ``"time"``:
            the stored keys of the L steps from each start), ``rnn_state`` (``[batch_B]``,
            the stored state before the first step; zeros when ``rnn_state_interval`` is 0;
            absent when the samples had none), ``is_weight`` (ones when uniform) and
            ``index`` (the starts, for ``update_priorities``), both ``[batch_B]``.
        """
        N, dev = check_int("batch_B", batch_B, minimum=1), self.device
        target = dev if device is None else torch.device(device)
        index, info = self.sampler.sample(None, N)
        index = torch.as_tensor(index, dtype=torch.long, device=dev).reshape(-1)
        weight = info.get("priority_weight") if isinstance(info, dict) else None
        weight = torch.ones(N) if weight is None else torch.as_tensor(weight).float().reshape(-1)
        start = torch.div(index, self.batch_B, rounding_mode="floor") * self.stride
        pin = target.type == "cuda" and dev.type == "cpu"
        parts = self._gather_parts(start, index % self.batch_B, index, pin)
        parts.update({keys.IS_WEIGHT: weight.to(dev), keys.INDEX: index})
        batch = to_device(parts, target)
        batch.set(keys.SEQUENCE, self._assemble(batch))
        if keys.RNN_STATE not in batch and self._rnn_zero is not None:
            batch.set(keys.RNN_STATE, self._rnn_zero.expand(N).to(target).clone())
        return batch

    def _window(self, start: torch.Tensor, col: torch.Tensor, length: int) -> torch.Tensor:
        """Flat step indices ``[length * N]`` of rows ``start .. start + length - 1``."""
        rows = (start + torch.arange(length, device=start.device)[:, None]) % self.T_capacity
        blocks, k = torch.div(rows, self.stride, rounding_mode="floor"), self.stride
        return ((blocks * self.batch_B + col) * k + rows % k).view(-1)

    def _gather_parts(
        self, start: torch.Tensor, col: torch.Tensor, index: torch.Tensor, pin: bool
    ) -> TensorDict:
        """Stored steps of the windows ``[L, N]`` and the starting states ``[N]``."""
        data, N = storage_tensordict(self.storage), start.shape[0]
        flat = self._window(start, col, self.L)
        out = {STEPS: gather_entries(data.get(STEPS), flat, (self.L, N), pin, self._per_window)}
        if self.rnn_state_interval:
            out[keys.RNN_STATE] = gather_entries(data.get(keys.RNN_STATE), index, (N,), pin)
        return tensordict_from_trusted(out, ())

    def _assemble(self, parts: TensorDictBase) -> TensorDictBase:
        """The ``[L, N]`` sequence from the gathered parts (on the batch's device)."""
        seq = parts.pop(STEPS)
        seq.names = [keys.TIME_DIM_NAME, None]
        return seq

    def update_priorities(self, index: torch.Tensor, priorities: torch.Tensor) -> None:
        """New priorities for the starts ``index`` of a batch (those still valid)."""
        index = torch.as_tensor(index).detach().to("cpu", torch.long).reshape(-1)
        prio = torch.as_tensor(priorities).detach().to("cpu", torch.float32).reshape(-1)
        keep = torch.from_numpy(self._valid_rows[(index // self.batch_B).numpy()])
        self.sampler.update_priority(index[keep], prio[keep] if prio.numel() > 1 else prio)

    # ------------------------------------------------------------------ save / load
    def _config(self) -> dict[str, Any]:
        """What a saved state must share with the buffer it is loaded into."""
        names = ("size", "batch_B", "batch_T", "n_step_return", "rnn_state_interval")
        stored = [list(k) if isinstance(k, tuple) else [k] for k in self.keys_to_store]
        return replay_config(self, names, keys_to_store=stored)

    def state_dict(self) -> dict[str, Any]:
        """Everything but the storage's tensors (see ``save``), as tensors and plain data."""
        return {
            "config": self._config(),
            "t": self.t,
            "filled": self.filled,
            "pending_priority": None if self._pending is None else self._pending.clone(),
            "rnn_template": None if self._rnn_zero is None else self._rnn_zero.cpu().to_dict(),
            "sampler": self.sampler.state_dict(),
        }

    def _check_state(self, state: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming what of a saved state does not fit this buffer."""
        saved, grid = state.get("config"), (self.start_rows, self.batch_B)
        if not isinstance(saved, dict):
            raise ValueError(f"its config is {type(saved).__name__}, not a dict")
        check_cursor(state, "t", "filled")
        mine = self._config().items()
        diffs = [f"{k} {saved.get(k)!r} saved, {v!r} here" for k, v in mine if saved.get(k) != v]
        if diffs:
            raise ValueError("; ".join(diffs))
        t, filled, cap = int(state["t"]), int(state["filled"]), self.T_capacity
        if t % self.stride or not 0 <= t < cap or filled != (cap if filled >= cap else t):
            raise ValueError(f"cursor t={t} / filled={filled} do not fit {cap} rows")
        pending = state.get("pending_priority")
        if pending is not None and getattr(pending, "shape", None) != grid:
            raise ValueError(f"pending_priority is not a tensor {grid}")
        check_rnn_template(state, keys.RNN_STATE)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``; a ``ValueError`` names what does not fit this buffer."""
        self._check_state(state)
        self.sampler.load_state_dict(state["sampler"])  # checks its state before changing
        t, self.filled = int(state["t"]), int(state["filled"])
        written = torch.arange(self.start_rows) * self.stride < self.filled  # filled: t or all
        self.writer.load_state_dict({"cursor": t // self.stride, "written": written})
        pending = state.get("pending_priority")
        self._pending = None if pending is None else pending.clone().float()
        template = state.get("rnn_template")
        if template is not None:
            self._rnn_zero = TensorDict(template, batch_size=[]).to(self.device)
        self._valid_rows = self._valid_now()

    def save(
        self, path: str | Path, *, info: Mapping[str, Any] | None = None, atomic: bool = True
    ) -> None:
        """Write everything to directory ``path`` as ``ReplayBuffer.save`` does.

        ``storage/`` gets the memmap files, then ``replay_state.pt`` the rest; ``info``: plain
        data ``load`` returns; ``atomic``: write beside ``path`` and swap it in (a crash keeps
        the previous save). Raises ``OSError`` naming a file that could not be written.
        """
        save_replay_dir(path, self.state_dict(), self.storage, info=info, atomic=atomic)

    saved_versions = staticmethod(saved_replay_versions)
    saved_info = staticmethod(saved_replay_info)

    def load(self, path: str | Path) -> dict[str, Any]:
        """Restore what ``save`` wrote into a buffer built alike; returns the saved ``info``.

        All is checked before the buffer changes (``weights_only`` state, every file's size):
        ``FileNotFoundError`` without a complete save, ``SnapshotError`` (a ``ValueError``)
        naming a file that is corrupt, unsafe or does not fit.
        """
        state, data = load_replay_dir(
            Path(path),
            check=self._check_state,
            restore=self.load_state_dict,
            grid=(self.start_rows, self.batch_B),
            stored_keys=self._stored_keys(),
        )
        if data is not None:
            self.storage = self._new_storage()
            self.storage.set(torch.arange(self.start_rows), data.to(self.device))
        return dict(state.get("info") or {})
