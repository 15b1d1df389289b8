"""TorchRL's replay API on tdrl's buffers: the argument handling they all share.

TorchRL code drives a replay buffer with ``rb.extend(data)``, ``rb.sample(batch_size)``,
``len(rb)``, ``rb.update_priority(index, priority)`` and
``rb.update_tensordict_priority(td)``. ``ReplayBuffer``, ``FrameReplayBuffer``,
``SequenceReplayBuffer`` and ``SequenceFrameReplayBuffer`` offer these methods beside their
own (``append_samples``, ``sample_batch``, ``update_priorities``), which they call. The
methods are written once, here, as functions of the buffer (``torchrl_sample``,
``torchrl_update_priority``, ``torchrl_update_tensordict_priority``, which the buffer classes
take as their ``sample``, ``update_priority`` and ``update_tensordict_priority``), with the
argument checks they share; each buffer writes its own ``extend``, whose returned indices
depend on its layout. Where tdrl's buffers differ from TorchRL's:

* ``extend(data)`` takes a time-major ``[T, B]`` batch (``B = batch_B``), what tdrl's
  samplers make. A ``[B, T]`` batch whose dim 1 is named ``"time"`` (TorchRL collectors')
  is transposed first. A flat ``[N]`` batch of transitions is taken as N consecutive steps
  of the one env when ``batch_B`` is 1, and refused otherwise: which env each transition
  belongs to, and so its n-step window, is lost. ``extend`` returns the sampler indices of
  what it wrote (``[T, B]`` flat indices ``t * B + b``; sequence buffers: the starts).
* ``len(rb)`` counts the entries ``sample`` can draw now; TorchRL's counts stored items.
  tdrl's is smaller by the entries whose window is not complete yet (the newest
  ``n_step_return - 1`` rows per env, frame rows without their earlier frames, sequence
  starts without ``L`` steps).
* ``sample(batch_size)`` returns ``sample_batch``'s TensorDict (n-step targets, or
  sequences) with ``index`` and the importance weights twice: ``is_weight`` (tdrl's
  algorithms) and ``priority_weight`` (TorchRL's name, read by its losses); ones when
  uniform. ``batch_size=None`` takes the buffer's ``batch_size``, as TorchRL's does.
* ``update_tensordict_priority(td)`` reads ``td["index"]`` and ``td["td_error"]``
  (TorchRL's default ``priority_key``), reducing trailing dims by their max (TorchRL's
  default reduction). A uniform buffer checks the call and changes nothing, where TorchRL
  returns without reading ``td``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from tensordict import TensorDictBase

from tdrl.keys import INDEX, IS_WEIGHT, TIME_DIM_NAME
from tdrl.replays.base import IndexSampler
from tdrl.utils.checks import ArgumentError, check_int

__all__ = [
    "PRIORITY_KEY",
    "PRIORITY_WEIGHT",
    "SampledBuffer",
    "checked_priorities",
    "sample_size",
    "tensordict_priorities",
    "time_major",
    "torchrl_sample",
    "torchrl_update_priority",
    "torchrl_update_tensordict_priority",
]

#: TorchRL's name of the importance weights in a sampled batch.
PRIORITY_WEIGHT = "priority_weight"
#: TorchRL's default ``priority_key``: where its losses write the new priorities.
PRIORITY_KEY = "td_error"


class SampledBuffer(Protocol):
    """What the shared methods use of a buffer (``ReplayBuffer``, ``SequenceReplayBuffer``)."""

    #: ``sample()``'s batch size when given none (None: it needs one).
    batch_size: int | None
    sampler: IndexSampler

    def sample_batch(self, batch_size: int, /) -> TensorDictBase:
        """Draw ``batch_size`` entries (tdrl's keys, ``index`` and ``is_weight`` included)."""
        ...

    def update_priorities(self, index: torch.Tensor, priorities: torch.Tensor, /) -> None:
        """New priorities of entries ``index`` (a no-op for uniform sampling)."""
        ...


def torchrl_sample(self: SampledBuffer, batch_size: int | None = None) -> TensorDictBase:
    """TorchRL's ``sample``: ``sample_batch``, with ``priority_weight`` (``is_weight``) added.

    Args:
        self: the buffer.
        batch_size: entries to draw (None: the buffer's ``batch_size``).
    """
    batch = self.sample_batch(sample_size(batch_size, self.batch_size))
    batch.set(PRIORITY_WEIGHT, batch.get(IS_WEIGHT))  # the same tensor, TorchRL's name
    return batch


def torchrl_update_priority(self: SampledBuffer, index: Any, priority: Any) -> None:
    """TorchRL's ``update_priority``: ``update_priorities``, arguments checked.

    Args:
        self: the buffer.
        index: the sampler's indices, as ``sample`` returns them (any shape).
        priority: one per index, or one for all.
    """
    self.update_priorities(*checked_priorities(index, priority, self.sampler.capacity))


def torchrl_update_tensordict_priority(
    self: SampledBuffer, data: TensorDictBase, *, priority_key: Any = PRIORITY_KEY
) -> None:
    """TorchRL's ``update_tensordict_priority``: ``update_priority`` from a TensorDict.

    Args:
        self: the buffer.
        data: holds ``index`` and ``priority_key`` (trailing dims reduced by their max).
        priority_key: where ``data`` holds the priorities (TorchRL's default key).
    """
    self.update_priorities(*tensordict_priorities(data, priority_key, self.sampler.capacity))


def time_major(data: Any, batch_B: int) -> TensorDictBase:
    """``data`` as the time-major ``[T, batch_B]`` batch ``extend`` writes.

    Raises:
        ArgumentError: not a TensorDict, or of another layout (module docstring).
    """
    if not isinstance(data, TensorDictBase):
        raise ArgumentError(
            f"data must be a TensorDict [T, B={batch_B}], got {type(data).__name__}"
        )
    if data.batch_dims == 2 and data.names == [None, TIME_DIM_NAME]:
        data = data.transpose(0, 1)  # a TorchRL collector's [B, T]
    elif data.batch_dims == 1 and batch_B == 1:
        data = data.unsqueeze(1)
    if data.batch_dims != 2 or data.batch_size[1] != batch_B:
        raise ArgumentError(
            f"data must be a time-major TensorDict [T, B={batch_B}], got batch size "
            f"{list(data.batch_size)} (a flat [N] batch is taken only when batch_B=1)"
        )
    return data


def sample_size(batch_size: Any, default: int | None) -> int:
    """``sample``'s batch size: ``batch_size``, or the buffer's ``default`` when None.

    Raises:
        ArgumentError: not a positive int, or None without a default.
    """
    if batch_size is None and default is None:
        raise ArgumentError("batch_size is needed: the buffer was built without batch_size")
    return check_int("batch_size", default if batch_size is None else batch_size, minimum=1)


def checked_priorities(
    index: Any, priority: Any, capacity: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``update_priority``'s arguments as flat ``[K]`` tensors (on their own devices).

    Args:
        index: integer indices in ``[0, capacity)``, any shape.
        priority: one priority per index, or one for all.
        capacity: the index sampler's capacity.

    Raises:
        ArgumentError: non-integer or out-of-range indices, or a count of priorities that
            is neither 1 nor the number of indices.
    """
    index = torch.as_tensor(index)
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise ArgumentError(f"index must hold integer indices, got dtype {index.dtype}")
    index = index.reshape(-1).long()
    if index.numel() and not 0 <= int(index.min()) <= int(index.max()) < capacity:
        raise ArgumentError(f"index holds entries outside [0, {capacity})")
    priority = torch.as_tensor(priority, dtype=torch.float32).reshape(-1)
    if priority.numel() == 1:
        priority = priority.expand(index.numel())
    if priority.numel() != index.numel():
        raise ArgumentError(f"priority has {priority.numel()} values for {index.numel()} indices")
    return index, priority


def tensordict_priorities(
    data: Any, priority_key: Any, capacity: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``data["index"]`` and ``data[priority_key]`` (max over its trailing dims), checked.

    Raises:
        ArgumentError: ``data`` is not a TensorDict, lacks either key, or holds priorities
            that are not a whole number per index.
    """
    if not isinstance(data, TensorDictBase):
        raise ArgumentError(f"data must be a TensorDict, got {type(data).__name__}")
    index, priority = data.get(INDEX, None), data.get(priority_key, None)
    if not isinstance(index, torch.Tensor) or not isinstance(priority, torch.Tensor):
        raise ArgumentError(f"data needs tensors {INDEX!r} and priority_key={priority_key!r}")
    n = index.numel()
    if n == 0 or priority.numel() % n:
        raise ArgumentError(f"data[{priority_key!r}] has {priority.numel()} values for {n} indices")
    return checked_priorities(index, priority.detach().reshape(n, -1).amax(1), capacity)
