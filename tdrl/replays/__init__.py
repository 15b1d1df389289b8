"""Replay buffers: n-step, uniform or prioritized, frame-based for Atari, in memory or memmap.

Their index samplers (``IndexSampler``: ``UniformSampler``, ``PrioritizedSampler``) pick
stored entries; they are not the env samplers of ``tdrl.samplers``. The buffers write through a
``TimeMajorWriter`` (a TorchRL ``Writer``) and speak TorchRL's replay API (``extend``,
``sample``, ``update_priority``, ``update_tensordict_priority``; ``replays.torchrl_api``).
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
from tdrl.replays.writer import TimeMajorWriter

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
    "TimeMajorWriter",
    "UniformSampler",
    "replay_nbytes",
]
