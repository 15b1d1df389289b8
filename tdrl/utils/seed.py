"""Seeding helpers."""

from __future__ import annotations

import os
import random
import time

import numpy as np
import torch

from tdrl.utils.checks import check_int


def make_seed() -> int:
    """A fresh seed from the clock and the process id, for runs given no seed."""
    return (int(time.time() * 1e6) ^ (os.getpid() << 16)) % (2**31)


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    seed = check_int("seed", seed, minimum=0)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
