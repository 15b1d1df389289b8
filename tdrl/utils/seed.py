"""Seeding helpers."""

from __future__ import annotations

import os
import random
import time

import numpy as np
import torch


def make_seed() -> int:
    """A fresh seed from the clock and the process id, for runs given no seed."""
    return (int(time.time() * 1e6) ^ (os.getpid() << 16)) % (2**31)


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
