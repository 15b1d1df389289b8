"""The ``tdrl launch`` subcommand: its options, and the grid of runs it starts.

``tdrl launch SCRIPT --grid KEY=V1,V2 ...`` runs every variant of the grid over the
machine's run slots with :func:`~tdrl.launch.run_experiments` (see ``docs/launching.md``).
``tdrl.cli`` adds this subcommand to the ``tdrl`` command.
"""

from __future__ import annotations

import argparse
import ast
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tdrl.launch.affinity_codes import encode_affinity
from tdrl.launch.config import float_flag, int_flag
from tdrl.launch.launcher import run_experiments
from tdrl.launch.variants import VariantLevel, make_variants, safe_dir_name


def _grid_arg(text: str) -> tuple[str, list[str]]:
    """``--grid KEY=V1,V2`` as ``(key, [v1, v2])``; the key is a dotted config name."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key or not values:
        raise argparse.ArgumentTypeError(f"expected KEY=V1,V2,..., got {text!r}")
    if not all(part.isidentifier() for part in key.split(".")):
        raise argparse.ArgumentTypeError(
            f"KEY must be a config name, dotted for nested ones (algo.learning_rate), got {key!r}"
        )
    return key, values.split(",")


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def add_launch_parser(sub: Any) -> argparse.ArgumentParser:
    """Adds the ``launch`` subcommand to the subparsers ``sub``; returns its parser."""
    launch = sub.add_parser(
        "launch",
        help="run a grid of variants of a launchable script over the machine's run slots",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Run every variant of the --grid options RUNS_PER_SETTING times, each "
        "run as 'python SCRIPT SLOT_AFFINITY_CODE LOG_DIR RUN_ID [ARGS...]', at most one "
        "per run slot at once. Arguments after '--' go to every run. Logs go to "
        "LOG_ROOT/TITLE/<variant dirs>/run_<RUN_ID>. Exits 1 if a run failed.",
    )
    launch.add_argument("script", help="the launchable script (see docs/launching.md)")
    launch.add_argument(
        "--grid",
        type=_grid_arg,
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a grid level: config key (dotted for nested) and its values, e.g. "
        "--grid algo.learning_rate=1e-3,3e-4 (repeatable; levels are crossed)",
    )
    launch.add_argument(
        "--runs-per-setting", type=int_flag(1), default=1, help="runs of each variant"
    )
    launch.add_argument("--title", default=None, help="experiment name; None: the script's name")
    launch.add_argument("--log-root", default="data", help="directory of experiment dirs")
    hw = launch.add_argument_group("hardware (see tdrl.launch.make_affinity)")
    positive, non_negative = int_flag(1), int_flag(0)
    hw.add_argument(
        "--n-cpu-core",
        type=positive,
        default=_available_cpus(),
        help="cores to use, numbered from 0 (the default: all available here)",
    )
    hw.add_argument("--n-gpu", type=non_negative, default=0, help="GPUs to use")
    hw.add_argument("--cpu-per-run", type=positive, default=1, help="cores per run (no GPU)")
    hw.add_argument("--gpu-per-run", type=positive, default=1, help="GPUs per run")
    hw.add_argument("--contexts-per-gpu", type=positive, default=1, help="runs sharing a GPU")
    hw.add_argument("--cpu-per-worker", type=positive, default=1, help="cores per sampler worker")
    hw.add_argument(
        "--cpu-reserved", type=non_negative, default=0, help="cores per run off the workers"
    )
    hw.add_argument("--hyperthread-offset", type=non_negative, default=0, help="0: no hyperthreads")
    hw.add_argument("--async-sample", action="store_true", help="asynchronous runs")
    hw.add_argument("--alternating", action="store_true", help="alternating sampler")
    hw.add_argument("--no-set-affinity", action="store_true", help="do not pin runs to their CPUs")
    hw.add_argument(
        "--affinity-code", default=None, help="an affinity code replacing the options above"
    )
    launch.add_argument("--python", default=None, help="interpreter of the runs; None: this one")
    launch.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: subprocesses over this machine's run slots; ray: one Ray task per run "
        "(pip install 'tdrl[ray]'), each declaring --cpu-per-run CPUs and, with --n-gpu > 0, "
        "--gpu-per-run / --contexts-per-gpu GPUs",
    )
    launch.add_argument(
        "--address",
        default=None,
        help="with --backend ray: the Ray instance ('auto': this machine's running one, "
        "HOST:PORT: a cluster); None: start a local one",
    )
    launch.add_argument(
        "--rerun-finished",
        action="store_true",
        help="start again the runs an earlier launch finished (skipped by default)",
    )
    launch.add_argument(
        "--kill-timeout",
        type=float_flag(0.0),
        default=10.0,
        help="seconds from SIGTERM to SIGKILL",
    )
    return launch


#: The hardware options that are ``encode_affinity``'s arguments of the same names.
_HARDWARE_OPTIONS = (
    "n_cpu_core",
    "n_gpu",
    "contexts_per_gpu",
    "gpu_per_run",
    "cpu_per_run",
    "cpu_per_worker",
    "cpu_reserved",
    "hyperthread_offset",
    "async_sample",
    "alternating",
)


def _grid_value(text: str) -> Any:
    """A grid value as a Python literal, or the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def launch(args: argparse.Namespace, script_args: Sequence[str] = ()) -> int:
    """Runs ``tdrl launch``.

    Variant directories are named ``KEY_VALUE`` from the last part of each key and each
    value, and the experiment directory from the title, all made safe with
    :func:`~tdrl.launch.safe_dir_name` (``/``, ``..``, NUL and other odd characters become
    ``_``), so no run writes outside ``LOG_ROOT/TITLE``.

    Args:
        args: The parsed ``launch`` options.
        script_args: Arguments for every run (what followed ``--``).

    Returns:
        0 if every run succeeded, 1 if one failed.

    Raises:
        ValueError: Bad hardware options, a ``--grid`` key given twice, or two values of a
            key that give the same directory name.
        FileNotFoundError: The script does not exist.
    """
    hardware = {name: getattr(args, name) for name in _HARDWARE_OPTIONS}
    code = args.affinity_code or encode_affinity(**hardware, set_affinity=not args.no_set_affinity)
    keys = [key for key, _ in args.grid]
    if len(set(keys)) != len(keys):
        raise ValueError(f"--grid: a key is given twice in {keys}")
    levels = [
        VariantLevel(
            keys=[key],
            values=[[_grid_value(v)] for v in values],
            dir_names=[safe_dir_name(f"{key.split('.')[-1]}_{v}") for v in values],
        )
        for key, values in args.grid
    ]
    variants, log_dirs = make_variants(*levels)
    title = safe_dir_name(args.title or Path(args.script).stem)
    grid = (args.script, title, args.runs_per_setting, variants, log_dirs)
    common = {
        "log_root": args.log_root,
        "common_args": script_args,
        "python_executable": args.python,
        "kill_timeout": args.kill_timeout,
        "rerun_finished": args.rerun_finished,
    }
    if args.backend == "ray":
        from tdrl.launch.ray_launcher import run_experiments_ray

        gpus = args.gpu_per_run / args.contexts_per_gpu if args.n_gpu else 0.0
        results = run_experiments_ray(
            *grid, address=args.address, cpus_per_run=args.cpu_per_run, gpus_per_run=gpus, **common
        )
    elif args.address is not None:
        raise ValueError("--address is for --backend ray")
    else:
        script, *rest = grid
        results = run_experiments(script, code, *rest, **common)
    return 0 if all(r.ok for r in results) else 1
