"""Seeding helpers, and the global generators' state as plain data (for snapshots).

``rng_state`` holds tensors, ints, floats and lists only, so a snapshot that carries it loads
with ``torch.load(..., weights_only=True)``: NumPy's legacy state tuple is split into its
parts, Python's ``random`` state becomes a list of ints.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from tdrl.utils.checks import check_int


def make_seed() -> int:
    """A fresh seed from the clock and the process id, for runs given no seed."""
    return (int(time.time() * 1e6) ^ (os.getpid() << 16)) % (2**31)


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    seed = check_int("seed", seed, minimum=0)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The state of torch's, NumPy's and Python's global generators, as plain data.

    Returns:
        ``{"torch": uint8 tensor, "numpy": {"keys": int64 tensor [624], "pos": int,
        "has_gauss": int, "cached_gaussian": float}, "random": {"version": int,
        "state": list of ints, "gauss_next": float or None}}``, plus ``"cuda"``: the
        generator state of every visible CUDA device (uint8 tensors) when CUDA is
        initialised, so a resumed GPU run draws the same numbers on the GPU too.
    """
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    if name != "MT19937":  # pragma: no cover - NumPy's legacy generator is always MT19937
        raise RuntimeError(f"unexpected NumPy global generator {name}")
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "random": {
            "version": int(version),
            "state": [int(x) for x in internal],
            "gauss_next": None if gauss_next is None else float(gauss_next),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned.

    Raises:
        ValueError: ``state`` does not have :func:`rng_state`'s layout.
    """
    try:
        np_state = state["numpy"]
        py_state = state["random"]
        keys = np.asarray(np_state["keys"], dtype=np.int64).astype(np.uint32)
        numpy_tuple = (
            "MT19937",
            keys,
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["cached_gaussian"]),
        )
        gauss = py_state["gauss_next"]
        python_tuple = (
            int(py_state["version"]),
            tuple(int(x) for x in py_state["state"]),
            None if gauss is None else float(gauss),
        )
        torch_state = state["torch"]
        if not isinstance(torch_state, torch.Tensor):
            raise TypeError(f"torch state is a {type(torch_state).__name__}")
        np.random.set_state(numpy_tuple)
        random.setstate(python_tuple)
        torch.set_rng_state(torch_state)
        cuda_states = state.get("cuda")
        # On another machine (fewer GPUs, or none) the CUDA draws cannot be restored.
        cuda_ok = torch.cuda.is_available() and len(cuda_states or []) == torch.cuda.device_count()
        if cuda_states and cuda_ok:
            torch.cuda.set_rng_state_all(cuda_states)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"not a saved generator state: {exc!s}".splitlines()[0]) from None
