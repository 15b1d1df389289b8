"""Tiny deterministic environments and helpers shared by tests and users."""

from tdrl.testing.envs import ContinuousIdentityEnv, CountingEnv, IdentityEnv

__all__ = ["ContinuousIdentityEnv", "CountingEnv", "IdentityEnv"]
