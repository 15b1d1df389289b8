"""Run logging: viskit-compatible ``progress.csv``, ``debug.log``, ``params.json``, snapshots.

Example::

    from tdrl.logging import get_logger, logger_context

    with logger_context("data/ppo", run_ID=0, config=cfg, snapshot_mode="last") as logger:
        logger.record_tabular("Diagnostics/Iteration", itr)
        logger.record_tabular_misc_stat("Return", returns)
        logger.dump_tabular()
        logger.save_itr_params(itr, {"agent_state_dict": agent.state_dict()})
"""

from __future__ import annotations

from tdrl.logging.context import get_logger, logger_context, next_run_id
from tdrl.logging.files import LogDirError, SnapshotError
from tdrl.logging.logger import (
    SNAPSHOT_MODES,
    Logger,
    NullLogger,
    find_snapshot,
    load_snapshot,
)
from tdrl.logging.progress import ProgressBar

__all__ = [
    "SNAPSHOT_MODES",
    "LogDirError",
    "Logger",
    "NullLogger",
    "ProgressBar",
    "SnapshotError",
    "find_snapshot",
    "get_logger",
    "load_snapshot",
    "logger_context",
    "next_run_id",
]
