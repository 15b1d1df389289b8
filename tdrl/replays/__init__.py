"""Replay buffers: n-step, uniform or prioritized, frame-based for Atari, in memory or memmap.

Their index samplers (``IndexSampler``: ``UniformSampler``, ``PrioritizedSampler``) pick
stored entries; they are not the env samplers of ``tdrl.samplers``.
"""

from tdrl.replays.base import STORAGES, IndexSampler, ReplayConfig, ReplaySampler
from tdrl.replays.frame import FrameReplayBuffer, replay_nbytes
from tdrl.replays.multi_task import MultiTaskReplay
from tdrl.replays.n_step import ReplayBuffer
from tdrl.replays.prioritized import PrioritizedSampler
from tdrl.replays.sequence import SequenceReplayBuffer
from tdrl.replays.sequence_frame import SequenceFrameReplayBuffer
from tdrl.replays.sum_tree import SumTree
from tdrl.replays.uniform import UniformSampler

__all__ = [
    "STORAGES",
    "FrameReplayBuffer",
    "IndexSampler",
    "MultiTaskReplay",
    "PrioritizedSampler",
    "ReplayBuffer",
    "ReplayConfig",
    "ReplaySampler",
    "SequenceFrameReplayBuffer",
    "SequenceReplayBuffer",
    "SumTree",
    "UniformSampler",
    "replay_nbytes",
]
