"""Samplers collect ``[T, B]`` batches of experience with an agent."""

from tdrl.keys import BatchSpec
from tdrl.samplers.base import Sampler
from tdrl.samplers.collector import CollectorSampler
from tdrl.samplers.parallel import AlternatingSampler, CpuSampler, GpuSampler
from tdrl.samplers.ray_sampler import RaySampler
from tdrl.samplers.serial import SerialSampler

__all__ = [
    "AlternatingSampler",
    "BatchSpec",
    "CollectorSampler",
    "CpuSampler",
    "GpuSampler",
    "RaySampler",
    "Sampler",
    "SerialSampler",
]
