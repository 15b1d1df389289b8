"""What both launchers share: the grid's checks, each run's result, the summary, the markers.

:func:`~tdrl.launch.run_experiments` (local run slots) and
:func:`~tdrl.launch.ray_launcher.run_experiments_ray` (Ray tasks) check a grid with
:func:`check_grid`, return one :class:`RunResult` per run, mark a run that exited with
status 0 (:func:`mark_finished`) so that a relaunch skips it (:func:`finished_earlier`),
and write and print the same summary (:func:`write_summary`, :func:`report`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tdrl.utils.checks import ArgumentError, check_positive_int

#: File in ``LOG_DIR/run_{RUN_ID}`` receiving a launched run's stdout and stderr.
OUTPUT_FILE = "launch_output.log"
#: File in the experiment directory summarising every launched run.
SUMMARY_FILE = "launch_summary.json"
#: File the launcher writes in ``LOG_DIR/run_{RUN_ID}`` once the run exited with status 0;
#: a relaunch skips such runs (unless told to rerun them).
FINISHED_FILE = "launch_finished.json"


@dataclasses.dataclass(frozen=True)
class RunResult:
    """How one launched run ended.

    Attributes:
        log_dir: The variant's log directory given to the run.
        run_ID: The run's number within its variant.
        returncode: Exit status (negative: killed by that signal).
        seconds: Wall-clock time from start to exit.
        run_slot: The run slot it ran in (-1: a Ray task, which has no slot).
        output: Path of the file holding its stdout and stderr.
        skipped: The run had finished in an earlier launch and was not started again.
        host: The machine it ran on ("" for the local launcher).
        error: Why it could not run to its end when that is not its exit status (a Ray
            task whose worker or node died); "" otherwise.
    """

    log_dir: str
    run_ID: int
    returncode: int
    seconds: float
    run_slot: int
    output: str
    skipped: bool = False
    host: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether the run exited with status 0."""
        return self.returncode == 0


@dataclasses.dataclass(frozen=True)
class Grid:
    """A checked grid of runs (:func:`check_grid`).

    Attributes:
        script_cmd: The script and the arguments before the run arguments.
        runs_args: Extra arguments per variant.
        queue: ``(run_ID, variant index)`` of every run, run ID first.
    """

    script_cmd: list[str]
    runs_args: list[Sequence[str]]
    queue: list[tuple[int, int]]


def check_grid(
    script: str | os.PathLike[str] | Sequence[str],
    runs_per_setting: int,
    variants: Sequence[Mapping[str, Any]],
    log_dirs: Sequence[str],
    common_args: Sequence[str],
    runs_args: Sequence[Sequence[str]] | None,
) -> Grid:
    """The launchers' shared checks of a grid (see :func:`run_experiments`'s arguments).

    Raises:
        FileNotFoundError: ``script`` is not a file.
        ValueError: Mismatched lengths, duplicate log dirs, ``runs_per_setting < 1`` or
            arguments that are not strings.
    """
    script_cmd = [os.fspath(script)] if isinstance(script, str | os.PathLike) else list(script)
    if not script_cmd or not Path(script_cmd[0]).is_file():
        raise FileNotFoundError(f"script {script_cmd[0] if script_cmd else None!r} is not a file")
    runs_per_setting = check_positive_int("runs_per_setting", runs_per_setting)
    if len(variants) != len(log_dirs):
        raise ValueError(f"{len(variants)} variants but {len(log_dirs)} log_dirs")
    if len(set(log_dirs)) != len(log_dirs):
        raise ValueError("log_dirs must be unique")
    per_variant: list[Sequence[str]] = (
        [()] * len(variants) if runs_args is None else list(runs_args)
    )
    if len(per_variant) != len(variants):
        raise ValueError(f"{len(variants)} variants but {len(per_variant)} runs_args")
    check_args("common_args", common_args)
    for i, args in enumerate(per_variant):
        check_args(f"runs_args[{i}]", args)
    queue = [(run_ID, i) for run_ID in range(runs_per_setting) for i in range(len(variants))]
    return Grid(script_cmd, per_variant, queue)


def finished_earlier(log_dir: str, run_ID: int) -> bool:
    """Whether an earlier launch ran ``log_dir``'s run ``run_ID`` to a successful end."""
    return (Path(log_dir) / f"run_{run_ID}" / FINISHED_FILE).is_file()


def skipped_result(log_dir: str, run_ID: int, run_slot: int = -1) -> RunResult:
    """The result of a run not started again because it had finished earlier."""
    output = Path(log_dir) / f"run_{run_ID}" / OUTPUT_FILE
    return RunResult(log_dir, run_ID, 0, 0.0, run_slot, str(output), skipped=True)


def mark_finished(result: RunResult) -> None:
    """Record that ``result``'s run ended with status 0, for later launches to skip it."""
    path = Path(result.log_dir) / f"run_{result.run_ID}" / FINISHED_FILE
    record = {"seconds": result.seconds, "host": result.host, "time": time.time()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, path)


def check_args(name: str, args: Sequence[str]) -> None:
    """Refuses run arguments that are not strings (or contain NUL), naming them."""
    if isinstance(args, str | bytes):
        raise ArgumentError(f"{name} must be a sequence of strings, got the string {args!r}")
    for i, arg in enumerate(args):
        if not isinstance(arg, str) or "\0" in arg:
            raise ArgumentError(f"{name}[{i}] must be a string without NUL, got {arg!r}")


def tail(path: Path, n_lines: int = 8) -> str:
    """The last ``n_lines`` of a run's output file, indented, for a failure report."""
    try:
        lines = path.read_text(errors="replace").splitlines()[-n_lines:]
    except OSError:
        return "    (no output)"
    return "\n".join(f"    {line}" for line in lines)


def write_summary(exp_dir: Path, results: list[RunResult], total: int) -> None:
    """Write ``launch_summary.json`` (counts, and every run that ended) in ``exp_dir``."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "n_runs": total,
        "n_ended": len(results),
        "n_failed": sum(not r.ok for r in results),
        "n_skipped": sum(r.skipped for r in results),
        "runs": [dataclasses.asdict(r) for r in results],
    }
    (exp_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")


def report(results: list[RunResult], total: int, say: Callable[[str], None]) -> None:
    """Say how many runs succeeded, failed, were skipped or not started, and which failed."""
    failed = [r for r in results if not r.ok]
    skipped = sum(r.skipped for r in results)
    not_run = total - len(results)
    msg = f"{len(results) - len(failed)} of {total} runs succeeded"
    if skipped:
        msg += f" ({skipped} skipped: finished earlier)"
    if failed:
        msg += f", {len(failed)} failed"
    if not_run:
        msg += f", {not_run} not started"
    say(msg)
    for r in failed:
        say(f"  failed (return code {r.returncode}): {r.log_dir} run {r.run_ID}: {r.output}")
