"""The launched run's side of :func:`~tdrl.launch.run_experiments`: its arguments.

A launched script is called as ``python SCRIPT SLOT_AFFINITY_CODE LOG_DIR RUN_ID
[ARGS...]``; :func:`get_run_args` parses that into :class:`RunArgs` and, in a run the
launcher started, makes the run end when its launcher is gone.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from tdrl.launch.affinity import RunAffinity
from tdrl.launch.affinity_codes import affinity_from_code
from tdrl.utils.processes import ORPHANED_EXIT_CODE

_USAGE = "usage: SCRIPT SLOT_AFFINITY_CODE LOG_DIR RUN_ID [ARGS...]"


@dataclasses.dataclass(frozen=True)
class RunArgs:
    """The arguments :func:`~tdrl.launch.run_experiments` gives a launched script.

    Attributes:
        affinity_code: The run slot's affinity code (``"0slt_2cpu_0gpu"``).
        log_dir: The variant's log directory, holding ``variant_config.json``.
        run_ID: The run's number within its variant (0 .. runs_per_setting - 1).
        args: The remaining arguments (``common_args`` then the variant's ``runs_args``).
    """

    affinity_code: str
    log_dir: str
    run_ID: int
    args: tuple[str, ...] = ()

    @property
    def affinity(self) -> RunAffinity:
        """The run slot's affinity (see :func:`~tdrl.launch.affinity_from_code`)."""
        return affinity_from_code(self.affinity_code)

    @property
    def run_dir(self) -> Path:
        """``log_dir/run_{run_ID}``: where ``logger_context(log_dir, run_ID)`` writes."""
        return Path(self.log_dir) / f"run_{self.run_ID}"


#: Set by ``run_experiments`` in each run's environment: the run's stdin is a pipe the
#: launcher holds, and ``get_run_args`` exits the run when it closes.
LAUNCHED_ENV = "TDRL_LAUNCHED_RUN"


def _exit_with_launcher() -> None:
    """End this launched run when its launcher is gone (its stdin pipe reaches EOF).

    A launched run has a session of its own, so a SIGKILLed launcher would otherwise leave
    it running to completion. A daemon thread blocks reading stdin; EOF (the launcher
    exited, however it ended) ends the run's process group (the run and what it started,
    which the launcher would otherwise have stopped), or the run alone with ``os._exit``
    where it does not lead a group of its own. What was logged is safe (see ``tdrl.logging``); the
    interval in progress is redone on resume.
    """
    fd = sys.stdin.fileno()

    def wait_for_eof() -> None:
        try:  # the raw descriptor: a buffered read would hold a lock the exit needs
            while os.read(fd, 65536):
                pass
        except OSError:
            pass
        if hasattr(os, "killpg") and os.getpgrp() == os.getpid():
            # The run leads its own process group (the launcher starts it in a new
            # session): end the group, i.e. the run and everything it started.
            os.killpg(os.getpid(), signal.SIGKILL)
        os._exit(ORPHANED_EXIT_CODE)

    threading.Thread(target=wait_for_eof, name="tdrl-launcher-watch", daemon=True).start()


def get_run_args(argv: Sequence[str] | None = None) -> RunArgs:
    """Parses a launched script's arguments: ``SLOT_AFFINITY_CODE LOG_DIR RUN_ID [ARGS...]``.

    Args:
        argv: The arguments after the script's name; None reads ``sys.argv[1:]``.

    Returns:
        The parsed :class:`RunArgs`.

    A run started by :func:`~tdrl.launch.run_experiments` also starts watching its
    launcher here: when the launcher is gone (killed, even by SIGKILL), the run exits.

    Raises:
        SystemExit: Fewer than three arguments, a malformed affinity code or a RUN_ID that
            is not an integer (the message says which).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 3:
        raise SystemExit(f"{_USAGE}\nerror: expected at least 3 arguments, got {argv!r}")
    code, log_dir, run_id, *rest = argv
    if os.environ.get(LAUNCHED_ENV) == "1":
        _exit_with_launcher()
    try:
        affinity_from_code(code)
    except ValueError as e:
        raise SystemExit(f"{_USAGE}\nerror: SLOT_AFFINITY_CODE: {e}") from e
    try:
        run_ID = int(run_id)
    except ValueError as e:
        raise SystemExit(f"{_USAGE}\nerror: RUN_ID must be an integer, got {run_id!r}") from e
    return RunArgs(affinity_code=code, log_dir=log_dir, run_ID=run_ID, args=tuple(rest))
