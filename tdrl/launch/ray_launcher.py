"""Launch a grid of experiments as Ray tasks, on a local Ray instance or a Ray cluster.

:func:`run_experiments_ray` takes :func:`~tdrl.launch.run_experiments`'s grid and starts
every run as one Ray task, which runs the same command line as the local launcher::

    python SCRIPT 0slt_{C}cpu_{G}gpu LOG_DIR RUN_ID [COMMON_ARGS...] [RUN_ARGS...]

as a subprocess of the Ray worker, with the resources the task declares (``cpus_per_run``
CPUs, ``gpus_per_run`` GPUs, fractions allowed for GPUs). Ray places each run on a node
with those resources free, so the cluster's size bounds how many run at once; Ray chooses
the GPUs (``CUDA_VISIBLE_DEVICES``: a run's ``cuda:0`` is its first GPU) and pins no CPUs,
so the run's affinity code says ``set_affinity=False``.

Everything else is the local launcher's: ``variant_config.json`` in each variant's
directory, stdout and stderr in ``LOG_DIR/run_{RUN_ID}/launch_output.log``, one
``launch_summary.json``, failure isolation (a run that fails, or whose task is lost with its
worker or node, is recorded with its exit status or error and the others go on),
``launch_finished.json`` after a run exits with status 0 and a relaunch that skips those.
Tasks are not retried (``max_retries=0``): a run started twice would log twice.

**Stopping.** Ctrl-C or SIGTERM cancels every task: a running task stops its run's process
group (SIGTERM, then SIGKILL after ``kill_timeout``); a task that has not ended
``kill_timeout`` + 10 s later is force-cancelled (its worker killed), and its run, which
watches its stdin pipe (``tdrl.launch.get_run_args``), exits by itself.

**Clusters.** Every node must see the same paths: the script, the Python interpreter
(the same environment) and the log root (a shared filesystem), as for any Ray job whose
tasks write files. ``docs/scaling.md`` shows how to start a cluster.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tdrl.launch import runs
from tdrl.launch.affinity_codes import encode_affinity, prepend_run_slot
from tdrl.launch.launcher import sigterm_as_interrupt
from tdrl.launch.run_args import LAUNCHED_ENV
from tdrl.launch.runs import RunResult
from tdrl.launch.variants import experiment_dir, save_variant
from tdrl.utils.checks import ArgumentError, check_bool, check_positive_int, check_range
from tdrl.utils.processes import ProcessGroup, stop_processes
from tdrl.utils.ray_support import connect, import_ray

#: Seconds a cancelled task gets beyond ``kill_timeout`` before it is force-cancelled.
_CANCEL_GRACE_S = 10.0


def run_experiments_ray(
    script: str | os.PathLike[str] | Sequence[str],
    experiment_title: str,
    runs_per_setting: int,
    variants: Sequence[Mapping[str, Any]],
    log_dirs: Sequence[str],
    *,
    address: str | None = None,
    cpus_per_run: int = 1,
    gpus_per_run: float = 0.0,
    log_root: str | os.PathLike[str] = "data",
    common_args: Sequence[str] = (),
    runs_args: Sequence[Sequence[str]] | None = None,
    python_executable: str | None = None,
    kill_timeout: float = 10.0,
    verbose: bool = True,
    rerun_finished: bool = False,
) -> list[RunResult]:
    """Runs every variant ``runs_per_setting`` times, one Ray task per run.

    Args:
        script: Path of the script to launch, or a sequence whose first item is the script
            and whose other items go before the run arguments.
        experiment_title: Name of the experiment directory under ``log_root``.
        runs_per_setting: Runs of each variant (run IDs ``0 .. runs_per_setting - 1``).
        variants: One nested dict per setting (:func:`~tdrl.launch.make_variants`).
        log_dirs: One relative log directory per variant.
        address: The Ray instance: None joins the one this process joined, else starts a
            local one; ``"auto"`` the running instance of this machine; ``"HOST:PORT"``
            a cluster (see :func:`tdrl.utils.ray_support.connect`).
        cpus_per_run: CPUs each run's task declares (and its affinity code gives it).
        gpus_per_run: GPUs each run's task declares, in ``[0, 64]``; a fraction shares a GPU
            (0.5: two runs per GPU).
        log_root: Directory holding experiment directories (shared by every node).
        common_args: Extra arguments given to every run.
        runs_args: Extra arguments per variant (after ``common_args``); None: none.
        python_executable: Interpreter of the runs, on every node; None: this one.
        kill_timeout: Seconds between SIGTERM and SIGKILL when stopping a run.
        verbose: Print a line as each run is queued and ends, and a summary.
        rerun_finished: Start runs that finished in an earlier launch again.

    Returns:
        One :class:`~tdrl.launch.RunResult` per run, in queue order (``run_slot`` -1,
        ``host`` the node's name).

    Raises:
        ValueError: The checks of :func:`~tdrl.launch.run_experiments`, or a bad
            ``cpus_per_run`` / ``gpus_per_run``: nothing is written then.
        FileNotFoundError: ``script`` or ``python_executable`` does not exist (here).
        ImportError: Ray is not installed.
        KeyboardInterrupt: Ctrl-C or SIGTERM, after every run was stopped.
    """
    grid = runs.check_grid(script, runs_per_setting, variants, log_dirs, common_args, runs_args)
    script_cmd, runs_args = grid.script_cmd, grid.runs_args
    script_cmd[0] = str(Path(script_cmd[0]).resolve())  # the tasks' working dir may differ
    cpus_per_run = check_positive_int("cpus_per_run", cpus_per_run)
    gpus_per_run = check_range("gpus_per_run", gpus_per_run, 0.0, 64.0)
    kill_timeout = check_range("kill_timeout", kill_timeout, 0.0, 1e6)
    verbose = check_bool("verbose", verbose)
    rerun_finished = check_bool("rerun_finished", rerun_finished)
    if python_executable is not None and shutil.which(python_executable) is None:
        raise FileNotFoundError(f"python_executable {python_executable!r} is not a program")
    code = run_affinity_code(cpus_per_run, gpus_per_run)
    exp_dir = experiment_dir(log_root, experiment_title, log_dirs).resolve()
    python = python_executable or sys.executable
    queue, total = grid.queue, len(grid.queue)

    def say(msg: str) -> None:
        if verbose:
            print(f"tdrl launch (ray): {msg}", flush=True)

    ray = import_ray()
    started_ray = connect(address)
    try:
        _check_cluster(ray, cpus_per_run, gpus_per_run)
    except BaseException:
        if started_ray:
            ray.shutdown()
        raise
    task = ray.remote(_run_task).options(
        num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0
    )
    say(f"{total} runs of {script_cmd[0]} as Ray tasks into {exp_dir}")
    pending: dict[Any, tuple[int, str, int, Path]] = {}
    results: list[tuple[int, RunResult]] = []
    try:
        with sigterm_as_interrupt():
            try:
                for index, (run_ID, i) in enumerate(queue):
                    log_dir = str(exp_dir / log_dirs[i])
                    if not rerun_finished and runs.finished_earlier(log_dir, run_ID):
                        results.append((index, runs.skipped_result(log_dir, run_ID)))
                        n = f"[{index + 1}/{total}]"
                        say(f"{n} skipped: {log_dir} run {run_ID} finished earlier")
                        continue
                    save_variant(variants[i], log_dir)
                    output = Path(log_dir) / f"run_{run_ID}" / runs.OUTPUT_FILE
                    cmd = [python, *script_cmd, code, log_dir, str(run_ID)]
                    cmd += [*common_args, *runs_args[i]]
                    ref = task.remote(cmd, os.getcwd(), str(output), kill_timeout)
                    pending[ref] = (index, log_dir, run_ID, output)
                    say(f"[{index + 1}/{total}] queued {log_dir} run {run_ID}")
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                    for ref in done:
                        index, log_dir, run_ID, output = pending.pop(ref)
                        result = _result(ray, ref, log_dir, run_ID, output)
                        results.append((index, result))
                        _say_ended(say, result, index, total)
            except BaseException as e:
                if pending:
                    why = "interrupted" if isinstance(e, KeyboardInterrupt) else type(e).__name__
                    say(f"{why}: stopping {len(pending)} runs")
                    _cancel_all(ray, pending, results, kill_timeout)
                raise
            finally:
                ordered = [r for _, r in sorted(results, key=lambda x: x[0])]
                runs.write_summary(exp_dir, ordered, total)
                runs.report(ordered, total, say)
    finally:
        if started_ray:
            ray.shutdown()
    return ordered


def run_affinity_code(cpus: int, gpus: float) -> str:
    """The affinity code of a run given ``cpus`` CPUs and ``gpus`` GPUs by Ray (no pinning).

    A fraction of a GPU is the run's one GPU (shared); at least one CPU per GPU.
    """
    n_gpu = math.ceil(gpus)
    if n_gpu == 0:
        machine = encode_affinity(n_cpu_core=cpus, cpu_per_run=cpus, set_affinity=False)
    else:
        machine = encode_affinity(
            n_cpu_core=max(cpus, n_gpu), n_gpu=n_gpu, gpu_per_run=n_gpu, set_affinity=False
        )
    return prepend_run_slot(machine, 0)


def _check_cluster(ray: Any, cpus: int, gpus: float) -> None:
    """Refuse runs no node of the Ray instance can ever take (they would wait forever).

    Raises:
        ArgumentError: no node has ``cpus`` CPUs and ``gpus`` GPUs.
    """
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
        return
    have = ", ".join(f"{r.get('CPU', 0):g} CPUs {r.get('GPU', 0):g} GPUs" for r in nodes)
    raise ArgumentError(
        f"no Ray node can take a run of cpus_per_run={cpus} and gpus_per_run={gpus:g} "
        f"(nodes: {have or 'none'})"
    )


def _run_task(cmd: list[str], cwd: str, output: str, kill_timeout: float) -> tuple[int, float, str]:
    """A Ray task's body: run one launched run to its end; ``(status, seconds, host)``.

    The run gets its own process group, stopped (with what the run started) when the run
    exits or the task is cancelled.
    """
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    host = socket.gethostname()
    with open(path, "a") as out:
        out.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} tdrl launch (ray, {host}): ")
        out.write(" ".join(cmd) + "\n")
        out.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", LAUNCHED_ENV: "1"}
        proc = subprocess.Popen(
            cmd,
            cwd=cwd if os.path.isdir(cwd) else None,
            stdin=subprocess.PIPE,  # held by this worker: EOF tells the run it is gone
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            # Polled, not proc.wait(): Ray's cancellation raises KeyboardInterrupt between
            # bytecodes, which a blocking wait would never reach.
            while (returncode := proc.poll()) is None:
                time.sleep(0.1)
        finally:  # ended or cancelled: stop what is left of the run's group
            stop_processes([ProcessGroup(proc.pid, cmd[-1])], wait_s=0.0, terminate_s=kill_timeout)
            proc.wait()
            if proc.stdin is not None:
                proc.stdin.close()
    return returncode, time.monotonic() - start, host


def _result(ray: Any, ref: Any, log_dir: str, run_ID: int, output: Path) -> RunResult:
    """The result of a finished task; a task that raised (lost worker or node) is a failure."""
    try:
        returncode, seconds, host = ray.get(ref)
    except Exception as e:  # the task itself failed: no exit status of the run
        message = str(e).strip().splitlines()
        error = f"{type(e).__name__}: {message[0] if message else ''}"
        return RunResult(log_dir, run_ID, -1, 0.0, -1, str(output), error=error)
    result = RunResult(log_dir, run_ID, returncode, seconds, -1, str(output), host=host)
    if result.ok:
        runs.mark_finished(result)
    return result


def _say_ended(say: Any, result: RunResult, index: int, total: int) -> None:
    if result.ok:
        status = "finished"
    elif result.error:
        status = f"FAILED ({result.error})"
    else:
        status = f"FAILED (return code {result.returncode})"
    where = f" on {result.host}" if result.host else ""
    say(
        f"[{index + 1}/{total}] {status}: {result.log_dir} run {result.run_ID}{where} "
        f"in {result.seconds:.1f} s"
    )
    if not result.ok:
        say(f"  output in {result.output}, ending:\n{runs.tail(Path(result.output))}")


def _cancel_all(
    ray: Any,
    pending: dict[Any, tuple[int, str, int, Path]],
    results: list[tuple[int, RunResult]],
    kill_timeout: float,
) -> None:
    """Cancel every pending task (a running one stops its run), force after a grace period."""
    refs = list(pending)
    for ref in refs:
        ray.cancel(ref, force=False)
    _, left = ray.wait(refs, num_returns=len(refs), timeout=kill_timeout + _CANCEL_GRACE_S)
    for ref in left:
        ray.cancel(ref, force=True)
    for ref, (index, log_dir, run_ID, output) in pending.items():
        result = _result(ray, ref, log_dir, run_ID, output)
        if result.error:  # cancelled: say so rather than Ray's exception text
            result = RunResult(log_dir, run_ID, -1, 0.0, -1, str(output), error="stopped")
        results.append((index, result))
    pending.clear()
