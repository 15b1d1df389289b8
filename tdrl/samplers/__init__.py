"""Samplers collect ``[T, B]`` batches of experience with an agent."""

from tdrl.samplers.base import BatchSpec
from tdrl.samplers.serial import SerialSampler

__all__ = ["BatchSpec", "SerialSampler"]
