"""Pinning a process to CPUs: the one implementation every role uses.

The launcher pins each run it starts, a run pins its master and its sampler workers
(``tdrl.launch.apply_affinity``, ``tdrl.samplers.worker``), all through ``pin_process``.
Pinning is Linux's :func:`os.sched_setaffinity`; where it is missing or refused, a warning
says so and the process runs unpinned.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

__all__ = ["pin_process"]


def pin_process(cpus: Sequence[int], pid: int = 0) -> bool:
    """Pins process ``pid`` (0: this one) to ``cpus`` with :func:`os.sched_setaffinity`.

    Where pinning is unsupported (macOS, Windows) or refused (CPUs outside this
    container's cpuset), it warns with a :class:`RuntimeWarning` and leaves the process
    unpinned.

    Returns:
        Whether the process is now pinned.
    """
    if not hasattr(os, "sched_setaffinity"):
        warnings.warn(
            "CPU pinning is not supported on this platform; processes run unpinned",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    try:
        os.sched_setaffinity(pid, list(cpus))
    except OSError as e:
        warnings.warn(
            f"could not pin process {pid or os.getpid()} to CPUs {list(cpus)} ({e}); "
            f"it runs unpinned",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True
