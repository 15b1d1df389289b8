"""Gymnasium spaces to TorchRL specs, with rlpyt's float32 convention."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from tdrl._compat import Bounded, Categorical, Composite, MultiCategorical, TensorSpec

_DTYPES = {
    np.dtype(np.float64): torch.float32,  # rlpyt's force_float32
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.bool_): torch.bool,
}


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    """The torch dtype tdrl stores a NumPy dtype as (float64 becomes float32)."""
    try:
        return _DTYPES[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"unsupported observation/action dtype {dtype!r}") from None


def space_to_spec(space: gym.Space) -> TensorSpec:
    """Convert a gymnasium space to the TorchRL spec tdrl stores it with.

    ``Box`` becomes ``Bounded`` (float64 stored as float32), ``Discrete`` a ``Categorical``
    of integer indices (``start`` is honoured by the env, not the spec), ``MultiDiscrete`` a
    ``MultiCategorical``, ``MultiBinary`` a bool ``Bounded`` and ``Dict`` a ``Composite`` of
    the converted sub-spaces, nested as in the space.

    Args:
        space: a gymnasium space.

    Returns:
        The spec, with an empty batch shape.

    Raises:
        TypeError: for spaces tdrl cannot store (Tuple, Text, Graph, Sequence).
    """
    if isinstance(space, gym.spaces.Box):
        dtype = torch_dtype(space.dtype)
        low = torch.as_tensor(np.asarray(space.low, dtype=np.float64)).to(dtype)
        high = torch.as_tensor(np.asarray(space.high, dtype=np.float64)).to(dtype)
        return Bounded(low=low, high=high, shape=space.shape, dtype=dtype)
    if isinstance(space, gym.spaces.Discrete):
        return Categorical(n=int(space.n), shape=(), dtype=torch.int64)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return MultiCategorical(nvec=torch.as_tensor(space.nvec), dtype=torch.int64)
    if isinstance(space, gym.spaces.MultiBinary):
        return Bounded(low=0, high=1, shape=space.shape, dtype=torch.bool)
    if isinstance(space, gym.spaces.Dict):
        return Composite({k: space_to_spec(s) for k, s in space.spaces.items()}, shape=())
    raise TypeError(
        f"space_to_spec: unsupported gymnasium space {type(space).__name__}; tdrl stores "
        "Box, Discrete, MultiDiscrete, MultiBinary and Dict spaces"
    )
