"""The one place tdrl imports TorchRL from.

TorchRL renames and removes public symbols every couple of minor releases (0.13 removed
``SyncDataCollector``); tdrl pins ``torchrl==0.14.1`` and routes every import through this
module so that a version bump touches one file. Import TorchRL names from here, never from
``torchrl`` directly. Every import below is a re-export (ruff's F401 is off for this file);
``_LAZY`` lists the names imported only when first used.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import torch
from tensordict import TensorDict
from torchrl.data import (
    Bounded,
    Categorical,
    Composite,
    LazyMemmapStorage,
    LazyTensorStorage,
    MultiCategorical,
    MultiOneHot,
    TensorSpec,
    Unbounded,
)
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.envs import (
    Compose,
    DoubleToFloat,
    EnvBase,
    GymWrapper,
    RenameTransform,
    Transform,
    TransformedEnv,
)
from torchrl.objectives.value.functional import vec_generalized_advantage_estimate

# TorchRL logs an INFO line each time a storage is allocated; keep the console for tdrl's
# own progress bar and messages (set the "torchrl" logger's level to see them again).
logging.getLogger("torchrl").setLevel(logging.WARNING)

#: Imported on first use (module ``__getattr__``): the interop pieces most of tdrl never
#: touches (collectors alone add ~0.1 s to an import).
_LAZY = {
    "torchrl.collectors": ("Collector", "MultiAsyncCollector", "MultiSyncCollector"),
    "torchrl.collectors.distributed": ("RayCollector",),
    "torchrl.data": ("Binary", "NonTensor", "OneHot", "Writer"),
    "torchrl.envs": ("GymEnv", "InitTracker", "ParallelEnv", "SerialEnv", "TensorDictPrimer"),
}


def __getattr__(name: str) -> Any:
    """A name of ``_LAZY``, imported from its TorchRL module."""
    for module, names in _LAZY.items():
        if name in names:
            return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def storage_tensordict(storage: LazyTensorStorage):
    """The TensorDict a TorchRL tensor storage keeps its data in (``None`` before a write).

    TorchRL exposes it only as a private attribute; reading it here keeps that
    version-sensitive detail in this module. Indexing its leaves directly costs a few
    microseconds where ``storage.get`` costs ~100 us of TensorDict indexing.
    """
    return storage._storage if storage.initialized else None


def tensordict_from_trusted(
    source: dict, batch_size: tuple[int, ...], device: torch.device | None = None
) -> TensorDict:
    """A TensorDict from a (nested) dict of tensors that already agree with ``batch_size``.

    Skips the per-entry validation (~10 us per key). Only for tensors tdrl itself just
    created with the right shapes (and on ``device``, when one is given).
    """
    return TensorDict._new_unsafe(source, batch_size=torch.Size(batch_size), device=device)
