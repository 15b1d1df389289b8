"""Sequence replay of frame-stacked observations that stores each frame once.

``SequenceFrameReplayBuffer`` is ``SequenceReplayBuffer`` for Atari-style observations,
stacks ``[C, H, W]`` of the last C frames (oldest first, zero frames before an episode's
first one, as ``tdrl.envs.AtariEnv`` makes them). It stores only the newest frame of each
step (``("steps", "frame")`` in the storage's blocks, ``[H, W]`` per step) and rebuilds the
stacks of a sampled window with the rule of ``tdrl.replays.frame`` (``d_s``: ``done`` of
step s)::

    observation_t[C - 1 - k] = frame_{t-k}   if no d_s for s in [t-k, t-1]   else 0

so ``sample_batch`` returns exactly what ``SequenceReplayBuffer`` returns for the same
samples and starts. A window of L steps from row s reads the frames of rows
``s - C + 1 .. s + L - 1``: they are gathered once (``L + C - 1`` frames per sequence, not
``L * C``), copied to the batch's device, and the stacks are built there as a strided view
of them, copied once and zeroed before episode starts (``frame.zero_before_episode_start``).

Starts are valid when the C - 1 rows before them hold the C - 1 earlier steps too, so the
start at row 0 is never drawn in the first pass, nor, once the buffer has wrapped, a start
among the oldest C - 1 rows (even when an episode began inside its stack: one rule for all,
as ``FrameReplayBuffer``). No final frames are needed: a sequence never bootstraps from
``("next", "observation")``; the step after an episode end is the next episode's first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl._compat import LazyTensorStorage, storage_tensordict
from tdrl.replays.frame import (
    FRAME,
    check_stacks_ordered,
    frame_stacks,
    zero_before_episode_start,
)
from tdrl.replays.sequence import STEPS, SequenceReplayBuffer, gather_entries
from tdrl.utils.checks import ArgumentError

__all__ = ["SequenceFrameReplayBuffer"]


class SequenceFrameReplayBuffer(SequenceReplayBuffer):
    """``SequenceReplayBuffer`` for frame stacks that stores the newest frame of each step.

    Same arguments, sampling and outputs as ``SequenceReplayBuffer``; ``keys_to_store`` must
    include ``observation`` (stored as its newest frame) and ``("next", "done")``.
    Observations must be tensors ``[T, B, C, *frame_shape]``; the first batch is checked to
    hold stacks ordered oldest to newest, and ``size`` must then give more than
    ``L + C - 1`` steps per env.

    Args:
        size: capacity in transitions (see ``SequenceReplayBuffer``).
        batch_B: the sampler's ``batch_B``.
        batch_T: steps trained on per sequence, warm-up included.
        n_step_return: extra steps per sequence for n-step targets.
        rnn_state_interval: store ``rnn_state`` every k rows (0: never).
        input_priority_shift: start rows between a batch row and its input priority's start.
        priority_fn: computes input priorities when ``append_samples`` gets none.
        keys_to_store: step keys kept (default ``SEQUENCE_KEYS``).
        sampler: ``UniformSampler`` / ``PrioritizedSampler`` over the starts, or None.
        storage: ``"memory"`` or ``"memmap"``.
        scratch_dir: directory of the memmap files.
        seed: seed of the default uniform sampler.
        device: where storage and default draws live (None: the CPU).
    """

    required_keys = (keys.OBSERVATION, keys.NEXT_DONE)
    _per_window = (FRAME,)
    #: C, known from the first batch.
    n_frames: int | None = None

    def append_samples(
        self, samples: TensorDictBase, priorities: torch.Tensor | None = None
    ) -> np.ndarray:
        """Copy a ``[T, B]`` sampler batch in at the cursor (see ``SequenceReplayBuffer``)."""
        obs = frame_stacks(samples, type(self).__name__)
        if self.n_frames is not None and obs.shape[2] != self.n_frames:
            raise ArgumentError(f"observation stacks of {obs.shape[2]} frames, not {self.n_frames}")
        return super().append_samples(samples, priorities)

    def _first_batch(self, samples: TensorDictBase) -> LazyTensorStorage:
        """Learn C; check that observations are stacks ordered oldest to newest."""
        obs = samples.get(keys.OBSERVATION)
        C = obs.shape[2]
        if self.T_capacity < self.L + C - 1:
            raise ArgumentError(
                f"size={self.size} gives {self.T_capacity} steps per env; sequences of "
                f"{self.L} steps with stacks of {C} frames need {self.L + C - 1}"
            )
        check_stacks_ordered(samples, obs)
        self.n_frames, self._back = C, C - 1
        return super()._first_batch(samples)

    def _store(self, samples: TensorDictBase) -> TensorDictBase:
        """The stored step keys, with the newest frame of each observation as ``frame``."""
        stored = samples.select(*(k for k in self.keys_to_store if k != keys.OBSERVATION))
        stored.set(FRAME, samples.get(keys.OBSERVATION)[:, :, -1])
        return stored

    def _gather_parts(
        self, start: torch.Tensor, col: torch.Tensor, index: torch.Tensor, pin: bool
    ) -> TensorDict:
        """The base parts, plus the frames and dones of rows ``start - C + 1 .. start + L - 1``."""
        parts = super()._gather_parts(start, col, index, pin)
        C, N = self._frames(), start.shape[0]
        W = self.L + C - 1
        steps = storage_tensordict(self.storage).get(STEPS).select(FRAME, keys.NEXT_DONE)
        window = self._window(start - (C - 1), col, W)
        parts.set("window", gather_entries(steps, window, (W, N), pin))
        return parts

    def _assemble(self, parts: TensorDictBase) -> TensorDictBase:
        """Rebuild the ``[L, N, C, ...]`` stacks (on the batch's device), then the sequence."""
        C, L, window = self._frames(), self.L, parts.pop("window")
        frames, dones = window.get(FRAME), window.get(keys.NEXT_DONE)[..., 0]
        N = frames.shape[1]
        # stacks[l, n, j] = frames[l + j, n]: a strided view, copied once.
        stacks = frames.unfold(0, C, 1).movedim(-1, 2).contiguous()
        # The done of the step of frame j (j < C - 1) of stack l: dones[l + j].
        before = dones.unfold(0, C, 1)[..., : C - 1].reshape(L * N, C - 1)
        sync_free = stacks.device.type != "cpu"
        zero_before_episode_start(stacks.view(L * N, C, *stacks.shape[3:]), before, sync_free)
        seq = super()._assemble(parts)
        seq.set(keys.OBSERVATION, stacks)
        return seq

    def _frames(self) -> int:
        if self.n_frames is None:
            raise RuntimeError("the frame layout is known once a batch was appended")
        return self.n_frames

    # ------------------------------------------------------------------ save / load
    def state_dict(self) -> dict[str, Any]:
        """The base state plus C."""
        return {**super().state_dict(), "n_frames": self.n_frames}

    def _check_state(self, state: Any) -> None:
        """The base checks, plus C."""
        super()._check_state(state)
        saved = state.get("n_frames")
        if saved is not None and not isinstance(saved, int):
            raise ValueError(f"n_frames is {saved!r}")
        if self.n_frames is not None and saved is not None and saved != self.n_frames:
            raise ValueError(f"stacks of {saved} frames saved, {self.n_frames} here")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``, C included."""
        super().load_state_dict(state)
        saved = state.get("n_frames")
        if saved is not None:
            self.n_frames, self._back = saved, saved - 1
            self._valid_rows = self._valid_now()
