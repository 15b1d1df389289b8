"""Example 9: launch a grid of PPO CartPole runs over the machine's run slots.

Adds the launcher to example 1: ``make_variants`` crosses two learning rates with two
epoch counts, and ``run_experiments`` runs each of the 4 variants ``--runs-per-setting``
times as a separate process, one per run slot at once (one core each by default), pinned
to its slot's CPUs. This file is also the launched script: ``run_experiments`` starts it as
``example_9.py --run SLOT_AFFINITY_CODE LOG_DIR RUN_ID --n-steps N --seed S``; in that
mode it reads its variant, merges it into example 1's ``Config`` with ``update_config`` and
trains with example 1's ``build_and_train``.

The grid goes to ``LOG_DIR/run_<ID>/<lr>/<epochs>/run_<k>/`` (``k`` counts repeats); the
grid's own ``LOG_DIR/run_<ID>/progress.csv`` gets one row per finished run (its variant,
final ``ReturnAverage`` and ``Diagnostics/CumSteps``, return code and seconds).

``python tdrl_examples/example_9.py --n-steps 20000 --runs-per-setting 2``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tdrl.launch import (
    RunResult,
    VariantLevel,
    apply_affinity,
    encode_affinity,
    get_run_args,
    load_variant,
    make_variants,
    run_experiments,
    update_config,
)
from tdrl.logging import logger_context, next_run_id

#: The grid: keys are fields of example 1's ``Config``; levels are crossed.
GRID = (
    VariantLevel(keys=["learning_rate"], values=[[1e-3], [3e-4]], dir_names=["lr_1e-3", "lr_3e-4"]),
    VariantLevel(keys=["epochs"], values=[[4], [20]], dir_names=["epochs_4", "epochs_20"]),
)


def _available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@dataclasses.dataclass
class Config:
    """The launch; saved to the grid's ``params.json``."""

    n_steps: int = 20_000  # environment steps of each run
    seed: int = 0  # run k of every variant uses seed + k
    runs_per_setting: int = 1
    n_cpu_core: int = dataclasses.field(default_factory=_available_cpus)
    cpu_per_run: int = 1
    log_dir: str = "data/example_9"
    run_ID: int = 0


def _run_options(args: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="example_9.py --run ...")
    parser.add_argument("--n-steps", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    return parser.parse_args(args)


def train_one(argv: Sequence[str]) -> None:
    """The launched run: ``SLOT_AFFINITY_CODE LOG_DIR RUN_ID --n-steps N --seed S``."""
    from example_1 import Config as PpoConfig  # example 1 sits next to this file
    from example_1 import build_and_train

    run = get_run_args(argv)
    options = _run_options(run.args)
    apply_affinity(run.affinity)  # pin to the slot's cores; build_and_train uses 1 thread
    base = PpoConfig(
        n_steps=options.n_steps,
        seed=options.seed + run.run_ID,
        log_dir=run.log_dir,
        run_ID=run.run_ID,
        log_interval_steps=min(10_000, options.n_steps),
    )
    build_and_train(update_config(base, load_variant(run.log_dir)), progress_bar=False)


def _last_row(result: RunResult) -> dict[str, str]:
    path = Path(result.log_dir) / f"run_{result.run_ID}" / "progress.csv"
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[-1] if rows else {}


def launch(config: Config) -> list[RunResult]:
    """Runs the grid; logs one row per run to ``config.log_dir/run_{config.run_ID}``."""
    variants, log_dirs = make_variants(*GRID)
    affinity_code = encode_affinity(n_cpu_core=config.n_cpu_core, cpu_per_run=config.cpu_per_run)
    with logger_context(
        config.log_dir, config.run_ID, "example_9", dataclasses.asdict(config), echo=False
    ) as logger:
        exp_dir = logger.run_dir
        results = run_experiments(
            [os.path.abspath(__file__), "--run"],
            affinity_code,
            exp_dir.name,
            config.runs_per_setting,
            variants,
            log_dirs,
            log_root=exp_dir.parent,
            common_args=["--n-steps", str(config.n_steps), "--seed", str(config.seed)],
        )
        variant_of = {str(exp_dir / d): v for d, v in zip(log_dirs, variants, strict=True)}
        for result in results:
            row = _last_row(result)
            for key, value in variant_of[result.log_dir].items():
                logger.record_tabular(key, value)
            logger.record_tabular("run_ID", result.run_ID)
            logger.record_tabular("ReturnAverage", float(row.get("ReturnAverage", "nan")))
            logger.record_tabular("Diagnostics/CumSteps", int(row.get("Diagnostics/CumSteps", 0)))
            logger.record_tabular("ReturnCode", result.returncode)
            logger.record_tabular("Seconds", result.seconds)
            logger.dump_tabular()
            logger.log(
                f"{Path(result.log_dir).relative_to(exp_dir)} run {result.run_ID}: "
                f"ReturnAverage {row.get('ReturnAverage', 'n/a')} "
                f"(return code {result.returncode}, {result.seconds:.1f} s)",
                echo=True,
            )
    return results


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--run"]:  # started by run_experiments
        train_one(argv[1:])
        return
    defaults = Config()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-steps", type=int, default=defaults.n_steps, help="per run")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--runs-per-setting", type=int, default=defaults.runs_per_setting)
    parser.add_argument("--n-cpu-core", type=int, default=defaults.n_cpu_core)
    parser.add_argument("--cpu-per-run", type=int, default=defaults.cpu_per_run)
    parser.add_argument("--log-dir", default=defaults.log_dir)
    parser.add_argument("--run-ID", type=int, default=None, help="default: next free run")
    args = parser.parse_args(argv)
    run_id = args.run_ID if args.run_ID is not None else next_run_id(args.log_dir)
    config = Config(
        n_steps=args.n_steps,
        seed=args.seed,
        runs_per_setting=args.runs_per_setting,
        n_cpu_core=args.n_cpu_core,
        cpu_per_run=args.cpu_per_run,
        log_dir=args.log_dir,
        run_ID=run_id,
    )
    results = launch(config)
    if not all(r.ok for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
