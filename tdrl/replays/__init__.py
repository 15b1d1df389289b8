"""Replay buffers: n-step, uniform or prioritized, in memory or memmap."""

from tdrl.replays.base import ReplayBuffer
from tdrl.replays.frame import FrameReplayBuffer
from tdrl.replays.sum_tree import PrioritizedSampler, SumTree
from tdrl.replays.uniform import UniformSampler

__all__ = ["FrameReplayBuffer", "PrioritizedSampler", "ReplayBuffer", "SumTree", "UniformSampler"]
