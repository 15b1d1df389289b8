"""n-step replay of frame-stacked observations that stores each frame once.

Atari-style observations are stacks ``[C, H, W]`` of the last C frames, oldest first, with
zero frames before an episode's first one (``tdrl.envs.AtariEnv``). Consecutive stacks share
C - 1 frames, and ``("next", "observation")`` repeats the next row's stack, so a buffer of
full stacks holds every frame about 2C times. ``FrameReplayBuffer`` keeps only the newest
frame of each observation (key ``frame``, ``[T, B, H, W]`` in the storage) and rebuilds
stacks when sampling; ``sample_batch`` returns exactly what ``ReplayBuffer`` returns for
the same samples and indices.

Rebuilding the stack of row t in column b (``d_s`` = ``done`` of step s)::

    observation_t[C - 1 - k] = frame_{t-k}   if no d_s for s in [t-k, t-1]   else 0

that is, a frame from a row at or before an episode end is zeroed, as the env zeroes the
stack at a reset. The bootstrap observation after step ``end_t`` of the n-step window is the
stack of row ``end_t + 1`` when the episode goes on, so that row must be written already
(``_lookahead = 1``). When the episode ended at ``end_t`` the stack is the final one:
row ``end_t``'s stack shifted by one with the final frame (the newest frame of
``("next", "observation")[end_t]``) appended. Final frames are kept in a small side store,
one per ``done`` step (rare); an entry dies when its row is overwritten.

Rows that cannot rebuild their stack are never sampled:

* once the buffer has wrapped, the oldest ``C - 1`` rows (just after the cursor), whose
  earlier frames were overwritten by the newest rows;
* in the first pass, rows ``0 .. C - 2``: the frames before row 0 were never given to the
  buffer. They stay invalid even when an episode started inside their stack (which would make
  the missing frames zeros): that saves a per-entry rule for ``C - 1`` rows per buffer.

The newest rows are kept invalid by the base class (``n - 1 + _lookahead`` rows).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl._compat import storage_tensordict
from tdrl.replays.n_step import ReplayBuffer
from tdrl.replays.storage_files import check_frame_layout
from tdrl.utils.checks import ArgumentError
from tdrl.utils.device import pinned_like

__all__ = [
    "FRAME",
    "FrameReplayBuffer",
    "check_stacks_ordered",
    "frame_stacks",
    "replay_nbytes",
    "zero_before_episode_start",
]

#: Storage key of the newest frame of each observation.
FRAME = "frame"
_SMALL_KEYS = (keys.PREV_ACTION, keys.PREV_REWARD, keys.ACTION)


def _arrays_nbytes(obj: Any, depth: int = 1) -> int:
    """Bytes of the numpy arrays and tensors among an object's attributes (``depth`` levels)."""
    total = 0
    for value in vars(obj).values():
        if isinstance(value, np.ndarray | torch.Tensor):
            total += value.nbytes
        elif depth > 0 and type(value).__module__.startswith("tdrl."):
            total += _arrays_nbytes(value, depth - 1)
    return total


def replay_nbytes(buffer: ReplayBuffer) -> int:
    """Bytes a replay buffer holds for its whole capacity (allocated at the first append).

    Counts the storage (``size`` entries of what ``_store`` keeps, in RAM or on disk), the
    per-step reward/done arrays, the input priorities and the sampler's arrays (validity
    flags or sum tree). Works for any ``ReplayBuffer``; ``FrameReplayBuffer.nbytes`` adds
    its side store of final frames.

    Raises:
        RuntimeError: nothing was appended yet (the storage's layout is unknown).
    """
    data = None if buffer.storage is None else storage_tensordict(buffer.storage)
    if data is None:
        raise RuntimeError("append samples first: the storage layout is not known yet")
    total = sum(leaf.nbytes for leaf in data.values(True, True))
    for array in (buffer._reward, buffer._done, buffer._terminated, buffer._pending_priority):
        if array is not None:
            total += array.nbytes
    total += buffer.writer.written.nbytes
    total += _arrays_nbytes(buffer.sampler)
    return int(total)


class FrameReplayBuffer(ReplayBuffer):
    """``ReplayBuffer`` for frame stacks that stores the newest frame of each step only.

    Same arguments, sampling and outputs as ``ReplayBuffer``: ``sample_batch`` returns
    ``observation`` ``[N, C, H, W]`` and ``("next", "observation")`` stacks rebuilt from the
    stored frames (see the module docstring for the rule and for which rows are never
    sampled). Observations must be a tensor ``[T, B, C, *frame_shape]`` of stacks ordered
    oldest to newest with zero frames before an episode start; the first batch is checked.

    The storage (memory or memmap) keeps ``frame``, ``prev_action``, ``prev_reward`` and
    ``action`` per step; the final frames of ended episodes live in memory beside it and are
    part of ``state_dict`` / ``save``.

    Args:
        size: capacity in transitions (rounded up to whole time rows of ``B``); it must hold
            more than ``C + n_step_return`` rows.
        batch_B: the sampler's ``batch_B``.
        discount: gamma of the n-step returns.
        n_step_return: n.
        sampler: ``UniformSampler`` / ``PrioritizedSampler`` or None (uniform).
        storage: ``"memory"`` or ``"memmap"``.
        scratch_dir: directory of the memmap files.
        seed: seed of the default uniform sampler.
        device: where storage, side store and draws live (see ``ReplayBuffer``).
    """

    #: The bootstrap stack after step t is row t + 1's stack.
    _lookahead = 1
    #: C, known from the first batch.
    n_frames: int | None = None
    #: The side store of final frames (grown by doubling; None before the first batch) and
    #: its free slots (reused).
    _final_frames: torch.Tensor | None = None
    _free: list[int]

    @functools.cached_property
    def _final_slot(self) -> torch.Tensor:
        """``[T_capacity, B]`` slots of the side store (-1: the row ended no episode)."""
        grid = (self.T_capacity, self.batch_B)
        return torch.full(grid, -1, dtype=torch.int32, device=self.device)

    # ------------------------------------------------------------------ writing
    def append_samples(
        self, samples: TensorDictBase, priorities: torch.Tensor | None = None
    ) -> np.ndarray:
        """Copy a ``[T, B]`` sampler batch in at the cursor (see ``ReplayBuffer``).

        Returns:
            The time rows written.
        """
        obs = frame_stacks(samples, type(self).__name__)
        if self.n_frames is None:
            self._first_batch(samples, obs)
        n_frames, final_frames = self._layout()
        if obs.shape[2] != n_frames or obs.shape[3:] != final_frames.shape[1:]:
            raise ValueError(
                f"observation stacks {tuple(obs.shape[2:])} differ from the first batch's "
                f"({n_frames}, {tuple(final_frames.shape[1:])})"
            )
        rows = super().append_samples(samples, priorities)
        self._store_final_frames(samples, torch.from_numpy(rows))
        # The oldest C - 1 rows lost their earlier frames to the newest rows.
        oldest = (self.t + np.arange(n_frames - 1)) % self.T_capacity
        oldest = oldest[self.writer.written[oldest]]
        if oldest.size:
            self._invalidate(oldest)
        return rows

    def _layout(self) -> tuple[int, torch.Tensor]:
        """C and the side store, known once the first batch was appended (or loaded)."""
        if self.n_frames is None or self._final_frames is None:
            raise RuntimeError("the frame layout is known once a batch was appended")
        return self.n_frames, self._final_frames

    def _first_batch(self, samples: TensorDictBase, obs: torch.Tensor) -> None:
        """Learn C and the frame shape; check that observations really are frame stacks."""
        C = obs.shape[2]
        if self.T_capacity <= C + self.n_step_return:
            raise ValueError(
                f"size={self.size} gives {self.T_capacity} steps per env; stacks of {C} frames "
                f"with n_step_return={self.n_step_return} need more than "
                f"{C + self.n_step_return}"
            )
        check_stacks_ordered(samples, obs)
        self.n_frames = C
        self._final_frames = torch.zeros(
            (self.batch_B, *obs.shape[3:]), dtype=obs.dtype, device=self.device
        )
        self._free = list(range(self.batch_B - 1, -1, -1))

    def _store(self, samples: TensorDictBase) -> TensorDictBase:
        """The newest frame of each observation, ``prev_action``, ``prev_reward``, ``action``."""
        return TensorDict(
            {
                FRAME: samples.get(keys.OBSERVATION)[:, :, -1],
                keys.PREV_ACTION: samples.get(keys.PREV_ACTION),
                keys.PREV_REWARD: samples.get(keys.PREV_REWARD),
                keys.ACTION: samples.get(keys.ACTION),
            },
            batch_size=samples.batch_size[:2],
        )

    def _store_final_frames(self, samples: TensorDictBase, rows: torch.Tensor) -> None:
        """Free the side-store slots of the overwritten rows; keep this batch's final frames."""
        rows = rows.to(self.device)
        old = self._final_slot[rows]
        self._free.extend(old[old >= 0].tolist())
        self._final_slot[rows] = -1
        t, b = samples.get(keys.NEXT_DONE)[..., 0].nonzero(as_tuple=True)
        if t.numel() == 0:
            return
        slots = self._allocate(t.numel())
        final = samples.get(keys.NEXT_OBSERVATION)[t, b, -1]
        self._layout()[1][slots] = final.to(self.device)
        t, b = t.to(self.device), b.to(self.device)
        self._final_slot[rows[t], b] = slots.int()

    def _allocate(self, count: int) -> torch.Tensor:
        """``count`` free slots of the side store, growing it (doubling) when needed."""
        if len(self._free) < count:
            old = self._layout()[1]
            K = old.shape[0]
            new_K = max(2 * K, K + count - len(self._free))
            self._final_frames = old.new_zeros((new_K, *old.shape[1:]))
            self._final_frames[:K] = old
            self._free.extend(range(new_K - 1, K - 1, -1))
        slots = self._free[-count:]
        del self._free[-count:]
        return torch.tensor(slots, dtype=torch.long, device=self.device)

    def _validate(self, rows: np.ndarray) -> None:
        """Validate only rows whose C - 1 earlier rows were written.

        Not so in the first pass for rows ``0 .. C - 2``, whose earlier frames the buffer never
        saw.
        """
        n_frames = self.n_frames or 1
        if rows.size and n_frames > 1:
            back = (rows[:, None] - np.arange(1, n_frames)[None, :]) % self.T_capacity
            rows = rows[self.writer.written[back].all(axis=1)]
        super()._validate(rows)

    # ------------------------------------------------------------------ sampling
    def _extract(
        self,
        t_idx: torch.Tensor,
        b_idx: torch.Tensor,
        end_t: torch.Tensor,
        extra: dict | None = None,
        pin: bool = False,
    ) -> TensorDict:
        """Rebuild the stack of row t and the bootstrap stack after step ``end_t``.

        The stack at t takes the frames of rows ``t - C + 1 .. t``; the bootstrap stack those
        of rows ``end_t - C + 2 .. end_t + 1``, except that when the episode ended at
        ``end_t`` its newest frame is the side-stored final frame (row ``end_t + 1`` then
        belongs to the next episode). ``extra`` entries are added to the batch as they are;
        ``pin`` gathers the stacks into pinned memory (for a copy to CUDA).
        """
        (C, final_frames), N, cap = self._layout(), t_idx.shape[0], self.T_capacity
        offsets = torch.arange(1 - C, 1, device=t_idx.device)[None, :]
        rows = torch.cat([t_idx[:, None] + offsets, end_t[:, None] + 1 + offsets]) % cap
        cols = torch.cat([b_idx, b_idx])[:, None]
        frames = self._frames_leaf()
        flat = frames.view(-1, *frames.shape[2:])  # [T_capacity * B, *frame_shape]
        # index_select copies whole frames (memcpy per frame): several times faster than
        # advanced indexing ``frames[rows, cols]``.
        index = (rows * self.batch_B + cols).reshape(-1)
        pinned = pinned_like(flat, index.shape[0]) if pin else None
        stacks = torch.index_select(flat, 0, index, out=pinned)
        stacks = stacks.view(2 * N, C, *frames.shape[2:])
        obs, next_obs = stacks[:N], stacks[N:]
        # dones[:, j]: the step of frame j ended an episode (the newest frame's done unused).
        dones = self._done[rows[:, :-1], cols]
        # The done at end_t (the last one of the bootstrap rows) ended the episode of the
        # *final* frame, so it zeroes nothing; if there was none, it is False anyway.
        if C > 1:
            dones[N:, -1] = False
        ended, sync_free = self._done[end_t, b_idx], self.device.type != "cpu"
        slot = self._final_slot[end_t, b_idx]
        _put_final_frames(next_obs, ended, slot, final_frames, sync_free)
        zero_before_episode_start(stacks, dones, sync_free)

        small = self._gather_keys(torch.cat([t_idx, end_t]), cols[:, 0], _SMALL_KEYS)
        batch = {
            keys.OBSERVATION: obs,
            keys.PREV_ACTION: small[keys.PREV_ACTION][:N],
            keys.PREV_REWARD: small[keys.PREV_REWARD][:N],
            keys.ACTION: small[keys.ACTION][:N],
            keys.NEXT: {
                keys.OBSERVATION: next_obs,
                keys.PREV_ACTION: small[keys.ACTION][N:],
                keys.PREV_REWARD: self._reward[end_t, b_idx].unsqueeze(-1),
            },
        }
        if extra:
            batch.update(extra)
        return TensorDict(batch, batch_size=[N])

    def _frames_leaf(self) -> torch.Tensor:
        """The storage's ``frame`` tensor ``[T_capacity, B, *frame_shape]`` (RAM or memmap)."""
        return storage_tensordict(self.storage).get(FRAME)

    def _gather_keys(
        self, t_idx: torch.Tensor, b_idx: torch.Tensor, names: tuple[str, ...]
    ) -> dict[str, torch.Tensor]:
        """Stored tensors ``names`` at ``(t, b)``, indexing the storage's leaves directly."""
        data = storage_tensordict(self.storage)
        return {name: data.get(name)[t_idx, b_idx] for name in names}

    # ------------------------------------------------------------------ memory
    def nbytes(self) -> int:
        """Bytes held for the whole capacity: storage, per-step arrays, sampler, side store."""
        side = self._final_slot.nbytes
        if self._final_frames is not None:
            side += self._final_frames.nbytes
        return replay_nbytes(self) + side

    def bytes_per_transition(self) -> float:
        """``nbytes() / size``."""
        return self.nbytes() / self.size

    # ------------------------------------------------------------------ save / load
    def state_dict(self) -> dict[str, Any]:
        """The base state plus C and the live final frames (compacted)."""
        state = super().state_dict()
        live = self._final_slot >= 0
        t, b = live.nonzero(as_tuple=True)
        state["frames"] = {
            "n_frames": self.n_frames,
            "final_index": torch.stack([t, b]).cpu(),
            "final_frames": None
            if self._final_frames is None
            else self._final_frames[self._final_slot[t, b].long()].cpu(),
        }
        return state

    def _stored_keys(self) -> tuple[Any, ...]:
        """Top-level storage keys (``_store``'s)."""
        return (FRAME, *_SMALL_KEYS)

    def _check_state(self, state: dict[str, Any]) -> None:
        """The base checks, plus the frame layout: C, frame shape and the side store."""
        super()._check_state(state)
        grid = (self.T_capacity, self.batch_B)
        check_frame_layout(state, self.n_frames, self._final_frames, grid, FRAME)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``, the side store of final frames included.

        Raises:
            ValueError: the state does not fit this buffer (see ``ReplayBuffer``), or its
                frame layout differs from the one this buffer already holds.
        """
        super().load_state_dict(state)
        side = state["frames"]
        self.n_frames = side["n_frames"]
        frames = side["final_frames"]
        self._final_slot.fill_(-1)
        if frames is None:
            self._final_frames, self._free = None, []
            return
        count = frames.shape[0]
        capacity = max(count, self.batch_B)
        self._final_frames = torch.zeros(
            (capacity, *frames.shape[1:]), dtype=frames.dtype, device=self.device
        )
        self._final_frames[:count] = frames.to(self.device)
        t, b = side["final_index"].to(self.device)
        self._final_slot[t, b] = torch.arange(count, dtype=torch.int32, device=self.device)
        self._free = list(range(capacity - 1, count - 1, -1))


def frame_stacks(samples: TensorDictBase, buffer: str) -> torch.Tensor:
    """The observations of a ``[T, B]`` batch, which must be frame stacks ``[T, B, C, ...]``.

    Raises:
        ArgumentError: ``samples`` holds no observation tensor with a frame dimension; the
            message names ``buffer``.
    """
    obs = samples.get(keys.OBSERVATION, None) if isinstance(samples, TensorDictBase) else None
    if not isinstance(obs, torch.Tensor) or obs.ndim < 4:
        raise ArgumentError(
            f"{buffer} needs observations [T, B, C, *frame_shape] (frame stacks); "
            f"got {type(obs).__name__} of shape {tuple(getattr(obs, 'shape', ()))}"
        )
    return obs


def check_stacks_ordered(samples: TensorDictBase, obs: torch.Tensor) -> None:
    """Refuse observations ``obs`` ``[T, B, C, ...]`` that are not stacks oldest to newest.

    Where an episode went on, stack ``t + 1`` must be stack ``t`` shifted by one frame.

    Raises:
        ArgumentError: a stack that is not its predecessor shifted.
    """
    if obs.shape[2] > 1 and obs.shape[0] > 1:
        cont = ~samples.get(keys.NEXT_DONE)[:-1, :, 0]
        if not torch.equal(obs[1:, :, :-1][cont], obs[:-1, :, 1:][cont]):
            raise ArgumentError(
                "observations are not frame stacks ordered oldest to newest: "
                "observation[t + 1, :, :-1] != observation[t, :, 1:] within an episode"
            )


def _put_final_frames(
    next_obs: torch.Tensor,
    ended: torch.Tensor,
    slot: torch.Tensor,
    final_frames: torch.Tensor,
    sync_free: bool,
) -> None:
    """Where the episode ended (``ended [N]``), the newest frame of ``next_obs`` is the final one.

    It is taken from the side store, ``final_frames[slot]``. ``sync_free`` (off the CPU): a
    select on every row instead of reading ``ended`` on the host.
    """
    if sync_free:
        keep = ended.view(-1, *[1] * (next_obs.dim() - 2))
        picked = final_frames[slot.long().clamp_min(0)]
        next_obs[:, -1] = torch.where(keep, picked, next_obs[:, -1])
    elif ended.any():
        slot = slot[ended].long()
        if (slot < 0).any():
            raise RuntimeError("a final frame is missing from the side store")
        next_obs[ended, -1] = final_frames[slot]


def zero_before_episode_start(stack: torch.Tensor, dones: torch.Tensor, sync_free: bool) -> None:
    """Zero, in place, the frames of ``stack`` ``[N, C, ...]`` from earlier episodes.

    ``dones[:, j]`` ``[N, C - 1]`` is the done flag of the step of frame j: frame j is zeroed
    when any of frames ``j .. C - 2`` ended an episode (the newest frame is always kept).
    ``sync_free`` (off the CPU): a masked fill, with no host synchronisation.
    """
    if dones.shape[1] == 0 or (not sync_free and not dones.any()):
        return
    ended_after = dones.flip(1).cummax(1).values.flip(1)  # any(dones[:, j:])
    drop = torch.cat([ended_after, torch.zeros_like(ended_after[:, :1])], dim=1)
    if sync_free:
        stack.masked_fill_(drop.view(*drop.shape, *[1] * (stack.dim() - 2)), 0)
        return
    # index_fill_ on the few dropped frames (a boolean-mask write scans the whole stack).
    frames = stack.view(-1, *stack.shape[2:])
    frames.index_fill_(0, drop.view(-1).nonzero().squeeze(1), 0)
