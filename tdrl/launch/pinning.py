"""Applying an affinity to a process: pinning it to its CPUs and setting its torch threads.

The launcher pins each run it starts with :func:`pin_process`; inside a run the master,
each sampler worker and each asynchronous optimizer call :func:`apply_affinity` with their
part of the run's :mod:`~tdrl.launch.affinity`. Pinning is Linux's
:func:`os.sched_setaffinity`; where it is missing or refused, a warning says so and the
process runs unpinned. ``pin_process`` lives in ``tdrl.utils.cpu`` (re-exported here), so
that roles below this package (the sampler workers) pin through the same function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from tdrl.launch.affinity import Affinity, AsyncAffinity, Cpus, OptimizerAffinity
from tdrl.utils.checks import check_int
from tdrl.utils.cpu import pin_process

__all__ = ["apply_affinity", "pin_process"]


def apply_affinity(
    affinity: Affinity | OptimizerAffinity | Mapping[str, Any], *, worker: int | None = None
) -> Cpus | None:
    """Pins the calling process to its CPUs and sets its torch threads.

    Runners call this for the master (``worker=None``), sampler workers with their index
    and asynchronous optimizers with ``affinity.optimizer[i]``.

    Args:
        affinity: An :class:`Affinity`, an :class:`OptimizerAffinity`, or a plain dict with
            rlpyt's keys (``master_cpus`` or ``cpus``, ``workers_cpus``,
            ``master_torch_threads`` or ``torch_threads``, ``worker_torch_threads``,
            ``set_affinity``); missing keys leave that setting alone.
        worker: Index of the sampler worker calling; None for the master.

    Returns:
        The CPUs the process is pinned to, or None when pinning was off or failed (a
        :class:`RuntimeWarning` says why).

    Raises:
        TypeError: An :class:`AsyncAffinity` or a tuple (pass one of its parts).
        IndexError: ``worker`` beyond the affinity's workers.
    """
    if isinstance(affinity, AsyncAffinity | tuple):
        raise TypeError(
            "apply_affinity needs one process's affinity: pass affinity.optimizer[i] or "
            "affinity.sampler of an AsyncAffinity, or one element of a multi-GPU tuple"
        )
    if isinstance(affinity, Affinity | OptimizerAffinity):
        affinity = dataclasses.asdict(affinity)
    if worker is None:
        cpus = affinity.get("master_cpus", affinity.get("cpus"))
        threads = affinity.get("master_torch_threads", affinity.get("torch_threads"))
    else:
        workers = affinity.get("workers_cpus") or ()
        if not 0 <= worker < len(workers):
            raise IndexError(f"worker {worker} out of range: the affinity has {len(workers)}")
        cpus = workers[worker]
        threads = affinity.get("worker_torch_threads", len(cpus))
    pinned = None
    if cpus and affinity.get("set_affinity", True) and pin_process(cpus):
        pinned = tuple(cpus)
    if threads:
        import torch  # only here: the launcher itself never needs torch

        torch.set_num_threads(check_int("torch_threads", threads, minimum=1))
    return pinned
