"""Time limits: seconds a collective, a child process or a sampler batch may take.

The runners and the parallel samplers take their timeouts as arguments (``timeout_s``,
``worker_timeout_s``, ``sampler_timeout_s``); these check them, with the one-line errors
of ``tdrl.utils.checks``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tdrl.utils.checks import ArgumentError

__all__ = ["check_seconds", "check_timeout"]


def check_seconds(name: str, value: Any) -> float:
    """``value`` as a positive finite number of seconds."""
    ok = (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool | np.bool_)
        and math.isfinite(value)
        and value > 0
    )
    if not ok:
        raise ArgumentError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def check_timeout(name: str, value: Any) -> float | None:
    """``value`` as a positive finite number of seconds, or None (no timeout)."""
    if value is None:
        return None
    try:
        return check_seconds(name, value)
    except ArgumentError:
        raise ArgumentError(
            f"{name} must be a positive number of seconds or None, got {value!r}"
        ) from None
