"""Runners: the training loop connecting a sampler, an agent and an algorithm."""

from tdrl.runners.async_rl import AsyncRl, AsyncRlEval
from tdrl.runners.meta_presets import PearlPreset, build_pearl, iterations_for_steps, pearl_preset
from tdrl.runners.meta_rl import MetaRl
from tdrl.runners.minibatch_rl import MinibatchRl, MinibatchRlEval
from tdrl.runners.sync_rl import SyncRl, SyncRlEval

__all__ = [
    "AsyncRl",
    "AsyncRlEval",
    "MetaRl",
    "MinibatchRl",
    "MinibatchRlEval",
    "PearlPreset",
    "SyncRl",
    "SyncRlEval",
    "build_pearl",
    "iterations_for_steps",
    "pearl_preset",
]
