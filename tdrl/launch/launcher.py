"""Launch a grid of experiments as subprocesses over a machine's run slots.

:func:`run_experiments` queues every (variant, run) and starts each as::

    python SCRIPT SLOT_AFFINITY_CODE LOG_DIR RUN_ID [COMMON_ARGS...] [RUN_ARGS...]

at most one run per run slot of the affinity at once. Before a run starts, its variant is
saved to ``LOG_DIR/variant_config.json``; its stdout and stderr go to
``LOG_DIR/run_{RUN_ID}/launch_output.log``. The launched script reads its arguments with
:func:`~tdrl.launch.get_run_args`, its variant with :func:`~tdrl.launch.load_variant` and logs into
``LOG_DIR/run_{RUN_ID}`` (what ``tdrl.logging.logger_context(LOG_DIR, RUN_ID)`` opens)::

    from tdrl.launch import apply_affinity, get_run_args, load_variant, update_config

    run = get_run_args()
    affinity = run.affinity
    apply_affinity(affinity)
    config = update_config(DEFAULT_CONFIG, load_variant(run.log_dir))
    with logger_context(run.log_dir, run.run_ID, "my_experiment", config):
        ...
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from tdrl.launch.affinity import RunAffinity
from tdrl.launch.affinity_codes import affinity_from_code, get_n_run_slots, prepend_run_slot
from tdrl.launch.pinning import pin_process
from tdrl.launch.run_args import LAUNCHED_ENV
from tdrl.launch.runs import (
    OUTPUT_FILE,
    RunResult,
    check_grid,
    finished_earlier,
    mark_finished,
    report,
    skipped_result,
    tail,
    write_summary,
)
from tdrl.launch.variants import experiment_dir, save_variant
from tdrl.utils.checks import check_bool, check_range
from tdrl.utils.processes import ProcessGroup, stop_processes


@dataclasses.dataclass
class _Running:
    index: int  # position in the queue, to return results in queue order
    log_dir: str
    run_ID: int
    run_slot: int
    proc: subprocess.Popen
    out: TextIO
    output: Path
    start: float

    def group(self) -> ProcessGroup:
        """The run's process group: the run and whatever it started."""
        return ProcessGroup(self.proc.pid, f"{self.log_dir} run {self.run_ID}")

    def close_files(self) -> None:
        """Close the run's output file and its stdin pipe (the run has ended)."""
        self.out.close()
        if self.proc.stdin is not None:
            self.proc.stdin.close()

    def result(self) -> RunResult:
        """How the run ended."""
        return RunResult(
            log_dir=self.log_dir,
            run_ID=self.run_ID,
            returncode=self.proc.returncode,
            seconds=time.monotonic() - self.start,
            run_slot=self.run_slot,
            output=str(self.output),
        )


def run_experiments(
    script: str | os.PathLike[str] | Sequence[str],
    affinity_code: str,
    experiment_title: str,
    runs_per_setting: int,
    variants: Sequence[Mapping[str, Any]],
    log_dirs: Sequence[str],
    *,
    log_root: str | os.PathLike[str] = "data",
    common_args: Sequence[str] = (),
    runs_args: Sequence[Sequence[str]] | None = None,
    python_executable: str | None = None,
    poll_interval: float = 0.2,
    kill_timeout: float = 10.0,
    verbose: bool = True,
    rerun_finished: bool = False,
) -> list[RunResult]:
    """Runs every variant ``runs_per_setting`` times, one subprocess per run, over run slots.

    Runs are queued run ID first (every variant's run 0, then every run 1, ...) and each
    starts as soon as a run slot is free, with that slot's affinity code; at most
    ``get_n_run_slots(affinity_code)`` run at once. Each run is started in its own process
    group, pinned to its slot's CPUs (skipped with a warning where unsupported, see
    :func:`~tdrl.launch.pin_process`) and given its variant in
    ``log_root/experiment_title/LOG_DIR/variant_config.json``. A run that fails is reported
    (printed, with the tail of its output) and the others go on.

    No process is left behind: when a run exits, what it started in its process group is
    terminated; on Ctrl-C (``KeyboardInterrupt``) or SIGTERM every running run is sent
    SIGTERM, then SIGKILL after ``kill_timeout`` seconds, and ``KeyboardInterrupt`` is
    raised again. ``log_root/experiment_title/launch_summary.json`` lists every run that
    ended. A run that exits with status 0 gets ``LOG_DIR/run_{RUN_ID}/launch_finished.json``;
    launching the same grid again skips those runs (``RunResult.skipped``), so an
    interrupted grid is completed by running the same command again.

    Args:
        script: Path of the script to launch, or a sequence whose first item is the script
            and whose other items go before the run arguments (``[path, "--run"]``).
        affinity_code: The machine's affinity code (:func:`~tdrl.launch.encode_affinity`);
            any run-slot prefix is replaced by each run's slot.
        experiment_title: Name of the experiment directory under ``log_root``.
        runs_per_setting: Runs of each variant (run IDs ``0 .. runs_per_setting - 1``).
        variants: One nested dict per setting (:func:`~tdrl.launch.make_variants`).
        log_dirs: One relative log directory per variant.
        log_root: Directory holding experiment directories.
        common_args: Extra arguments given to every run.
        runs_args: Extra arguments per variant (after ``common_args``); None: none.
        python_executable: Interpreter to run ``script`` with; None: this one.
        poll_interval: Seconds between checks for finished runs.
        kill_timeout: Seconds between SIGTERM and SIGKILL when stopping runs.
        verbose: Print a line as each run starts and ends, and a summary.
        rerun_finished: Start runs that finished in an earlier launch again.

    Returns:
        One :class:`RunResult` per run, in queue order.

    Raises:
        ValueError: Mismatched ``variants``/``log_dirs``/``runs_args`` lengths, duplicate
            log dirs, ``runs_per_setting < 1``, a bad affinity code, a negative or
            non-finite ``kill_timeout`` or ``poll_interval``, arguments that are not
            strings, or an ``experiment_title`` or log dir that would lead outside
            ``log_root/experiment_title`` (``..``, an absolute path, a symbolic link
            pointing out): nothing is written then.
        FileNotFoundError: ``script`` or ``python_executable`` does not exist.
        KeyboardInterrupt: Ctrl-C or SIGTERM, after every run was stopped.
    """
    grid = check_grid(script, runs_per_setting, variants, log_dirs, common_args, runs_args)
    script_cmd, runs_args = grid.script_cmd, grid.runs_args
    poll_interval = check_range("poll_interval", poll_interval, 1e-3, 3600.0)
    kill_timeout = check_range("kill_timeout", kill_timeout, 0.0, 1e6)
    verbose = check_bool("verbose", verbose)
    rerun_finished = check_bool("rerun_finished", rerun_finished)
    if python_executable is not None and shutil.which(python_executable) is None:
        raise FileNotFoundError(f"python_executable {python_executable!r} is not a program")
    n_slots = get_n_run_slots(affinity_code)
    exp_dir = experiment_dir(log_root, experiment_title, log_dirs)
    queue, total = grid.queue, len(grid.queue)
    python = python_executable or sys.executable
    say: Callable[[str], None] = (
        (lambda msg: print(f"tdrl launch: {msg}", flush=True)) if verbose else (lambda msg: None)
    )
    say(f"{total} runs of {script_cmd[0]} over {n_slots} run slots into {exp_dir}")

    running: dict[int, _Running] = {}
    results: list[tuple[int, RunResult]] = []
    pin = True
    with sigterm_as_interrupt():
        try:
            for index, (run_ID, i) in enumerate(queue):
                log_dir = str(exp_dir / log_dirs[i])
                if not rerun_finished and finished_earlier(log_dir, run_ID):
                    results.append((index, skipped_result(log_dir, run_ID)))
                    say(f"[{index + 1}/{total}] skipped: {log_dir} run {run_ID} finished earlier")
                    continue
                _reap(running, results, say, total, kill_timeout)
                while len(running) >= n_slots:
                    time.sleep(poll_interval)
                    _reap(running, results, say, total, kill_timeout)
                slot = min(set(range(n_slots)) - set(running))
                save_variant(variants[i], log_dir)
                code = prepend_run_slot(affinity_code, slot)
                cmd = [python, *script_cmd, code, log_dir, str(run_ID)]
                cmd += [*common_args, *runs_args[i]]
                running[slot] = _start(index, log_dir, run_ID, slot, cmd)
                say(f"[{index + 1}/{total}] started {log_dir} run {run_ID} in slot {slot}")
                cpus = _cpus_to_pin(affinity_from_code(code))
                if pin and cpus:
                    pin = pin_process(cpus, running[slot].proc.pid)
            while running:
                _reap(running, results, say, total, kill_timeout)
                if running:
                    time.sleep(poll_interval)
        except BaseException as e:
            if running:
                why = "interrupted" if isinstance(e, KeyboardInterrupt) else type(e).__name__
                say(f"{why}: stopping {len(running)} running runs")
                _stop_all(running, results, kill_timeout)
            raise
        finally:
            ordered = [r for _, r in sorted(results, key=lambda x: x[0])]
            write_summary(exp_dir, ordered, total)
            report(ordered, total, say)
    return ordered


def _start(index: int, log_dir: str, run_ID: int, slot: int, cmd: list[str]) -> _Running:
    output = Path(log_dir) / f"run_{run_ID}" / OUTPUT_FILE
    output.parent.mkdir(parents=True, exist_ok=True)
    out = open(output, "a")  # noqa: SIM115  (closed when the run ends)
    out.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} tdrl launch: {shlex.join(cmd)}\n")
    out.flush()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", LAUNCHED_ENV: "1"}
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,  # held open by this process: EOF tells the run it is gone
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stopped as a whole
        )
    except BaseException:
        out.close()
        raise
    return _Running(index, log_dir, run_ID, slot, proc, out, output, time.monotonic())


def _cpus_to_pin(affinity: RunAffinity) -> tuple[int, ...]:
    """Every CPU of a run's processes; none when its affinity says not to pin."""
    parts = affinity if isinstance(affinity, tuple) else (affinity,)
    if not all(part.set_affinity for part in parts):
        return ()
    return tuple(sorted({c for part in parts for c in part.all_cpus}))


def _reap(
    running: dict[int, _Running],
    results: list[tuple[int, RunResult]],
    say: Callable[[str], None],
    total: int,
    kill_timeout: float,
) -> None:
    """Collects runs that exited, stopping what they left in their process groups."""
    for slot, run in list(running.items()):
        if run.proc.poll() is None:
            continue
        result = run.result()
        # what the run left behind: SIGTERM now, SIGKILL after kill_timeout
        stop_processes([run.group()], wait_s=0.0, terminate_s=kill_timeout)
        run.close_files()
        del running[slot]
        results.append((run.index, result))
        if result.ok:
            mark_finished(result)
        status = "finished" if result.ok else f"FAILED (return code {result.returncode})"
        say(
            f"[{run.index + 1}/{total}] {status}: {run.log_dir} run {run.run_ID} "
            f"in {result.seconds:.1f} s"
        )
        if not result.ok:
            say(f"  output in {result.output}, ending:\n{tail(run.output)}")


def _stop_all(
    running: dict[int, _Running], results: list[tuple[int, RunResult]], kill_timeout: float
) -> None:
    """SIGTERM every run's process group, SIGKILL after ``kill_timeout``, then reap."""
    with ignore_sigint():
        groups = [run.group() for run in running.values()]
        stop_processes(groups, wait_s=0.0, terminate_s=kill_timeout)
        for run in running.values():
            run.proc.wait()
            run.close_files()
            results.append((run.index, run.result()))
        running.clear()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turns SIGTERM into ``KeyboardInterrupt`` (main thread only), so runs get stopped."""
    if not _in_main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def ignore_sigint() -> Iterator[None]:
    """Ignores further Ctrl-C / SIGTERM while runs are being stopped (main thread only)."""
    if not _in_main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
