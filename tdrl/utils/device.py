"""Device helpers.

``check_device`` (an argument naming a device), ``to_device`` (a TensorDict moved once,
non-blocking, a no-op where it already is), ``on_device`` and ``pinned_like`` (host memory
a CUDA copy can read asynchronously).
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase

from tdrl.utils.checks import ArgumentError


def check_device(name: str, value: Any) -> torch.device | None:
    """``value`` as a ``torch.device`` that exists here, or None.

    Args:
        name: the argument's name, for the message (``device``, ``--device``, ...).
        value: None, a ``torch.device`` or a string torch accepts (``"cpu"``, ``"cuda"``,
            ``"cuda:1"``).

    Raises:
        ArgumentError: (one line, naming ``name``) not a device; or a CUDA device while
            torch sees none, or fewer than its index needs.
    """
    if value is None:
        return None
    if not isinstance(value, str | torch.device):
        raise ArgumentError(
            f"{name} must be a torch.device or a device string such as 'cpu', 'cuda' or "
            f"'cuda:1' (or None), got {value!r}"
        )
    try:
        device = torch.device(value)
    except RuntimeError:
        raise ArgumentError(
            f"{name} must be a device string torch accepts, such as 'cpu', 'cuda' or "
            f"'cuda:1', got {value!r}"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "" if torch.version.cuda else f" (torch {torch.__version__} has no CUDA)"
            raise ArgumentError(
                f"{name} {str(device)!r} needs a CUDA device, but torch sees none{build}"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ArgumentError(
                f"{name} {str(device)!r} is not a CUDA device here: torch sees {count} "
                f"(cuda:0 to cuda:{count - 1})"
            )
    return device


def on_device(td: TensorDictBase, device: torch.device) -> bool:
    """Whether every tensor of ``td`` is on ``device``."""
    if td.device is not None:
        return td.device == device
    return all(leaf.device == device for leaf in td.values(True, True))


def to_device(td: TensorDictBase, device: torch.device | str) -> TensorDictBase:
    """``td`` on ``device``: ``td`` itself when every tensor is there already, else one copy.

    Host-to-CUDA copies are non-blocking (asynchronous from pinned memory, which the
    samplers and the replay buffers allocate for a CUDA learner); the copy is ordered
    before any later kernel on the current stream, so the result can be used at once. The
    source must not change until the copy has run: the algorithms synchronise once per
    iteration (``stack_diagnostics``), before a sampler writes its next batch.
    """
    device = torch.device(device)
    if on_device(td, device):
        return td
    return td.to(device, non_blocking=device.type == "cuda")


def pinned_like(source: torch.Tensor, rows: int) -> torch.Tensor:
    """An empty CPU tensor of ``rows`` rows shaped like ``source``'s, in pinned memory.

    A host-to-CUDA copy from pinned (page-locked) memory runs asynchronously; torch's
    caching host allocator keeps the block until that copy has finished.
    """
    return torch.empty((rows, *source.shape[1:]), dtype=source.dtype, pin_memory=True)
