"""Tiny deterministic environments and agents shared by tests and users."""

from tdrl.testing.agents import FixedActionAgent
from tdrl.testing.envs import ContinuousIdentityEnv, CountingEnv, IdentityEnv, NonFiniteEnv

__all__ = [
    "ContinuousIdentityEnv",
    "CountingEnv",
    "FixedActionAgent",
    "IdentityEnv",
    "NonFiniteEnv",
]
