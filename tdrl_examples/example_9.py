"""Example 9: launch a grid of PPO CartPole runs over the machine's run slots.

Adds the launcher to example 1: ``make_variants`` crosses two learning rates with two
epoch counts, and ``run_experiments`` runs each of the 4 variants ``--runs-per-setting``
times as a separate process, one per run slot at once (one core each by default), pinned
to its slot's CPUs.

This file is also the launched script: ``run_experiments`` starts it as
``example_9.py --run SLOT_AFFINITY_CODE LOG_DIR RUN_ID --n-steps N --seed S``. In that
mode ``get_run_args`` reads the slot, log directory and run number, ``parse_config`` the
remaining flags into ``RunConfig`` (example 1's PPO settings), ``update_config`` merges the
run's variant in, and ``build_and_train`` trains as example 1 does.

The grid goes to ``LOG_DIR/run_<ID>/<lr>/<epochs>/run_<k>/`` (``k`` counts repeats); the
grid's own ``LOG_DIR/run_<ID>/progress.csv`` gets one row per finished run (its variant,
final ``ReturnAverage`` and ``Diagnostics/CumSteps``, return code and seconds).

With ``--n-gpu N`` the runs share N GPUs instead: each run slot's affinity names its GPU
(``cuda_idx``), and the run launched in that slot trains on it.

``python tdrl_examples/example_9.py --n-steps 20000 --runs-per-setting 2``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from tdrl.agents import CategoricalPgAgent
from tdrl.algos import PPO
from tdrl.launch import (
    Affinity,
    RunResult,
    VariantLevel,
    apply_affinity,
    encode_affinity,
    get_run_args,
    load_variant,
    make_variants,
    option,
    parse_config,
    run_experiments,
    train_and_log,
    update_config,
)
from tdrl.logging import logger_context
from tdrl.runners import MinibatchRl
from tdrl.samplers import SerialSampler

#: The grid: keys are fields of ``RunConfig``; levels are crossed.
GRID = (
    VariantLevel(keys=["learning_rate"], values=[[1e-3], [3e-4]], dir_names=["lr_1e-3", "lr_3e-4"]),
    VariantLevel(keys=["epochs"], values=[[4], [20]], dir_names=["epochs_4", "epochs_20"]),
)


@dataclasses.dataclass
class RunConfig:
    """One launched run (example 1's settings); saved to the run's ``params.json``."""

    env_id: str = "CartPole-v1"
    n_steps: int = 100_000
    seed: int = 0
    batch_T: int = 32
    batch_B: int = 8
    discount: float = 0.98
    gae_lambda: float = 0.8
    learning_rate: float = 1e-3
    ratio_clip: float = 0.2
    epochs: int = 20
    minibatches: int = 1
    entropy_loss_coeff: float = 0.0
    normalize_advantage: bool = True
    clip_grad_norm: float = 0.5
    device: str = option("cpu", "where the agent trains and acts: cpu, cuda or cuda:N")
    log_interval_steps: int = 10_000
    log_dir: str = "data/example_9"
    run_ID: int = 0


def build_and_train(config: RunConfig, *, progress_bar: bool | None = None) -> dict[str, float]:
    """Train one run of PPO with ``config``; returns the last logged row."""
    torch.set_num_threads(1)
    sampler = SerialSampler(
        env_kwargs={"id": config.env_id}, batch_T=config.batch_T, batch_B=config.batch_B
    )
    algo = PPO(
        discount=config.discount,
        gae_lambda=config.gae_lambda,
        learning_rate=config.learning_rate,
        ratio_clip=config.ratio_clip,
        epochs=config.epochs,
        minibatches=config.minibatches,
        entropy_loss_coeff=config.entropy_loss_coeff,
        normalize_advantage=config.normalize_advantage,
        clip_grad_norm=config.clip_grad_norm,
    )
    runner = MinibatchRl(
        algo,
        CategoricalPgAgent(),
        sampler,
        n_steps=config.n_steps,
        seed=config.seed,
        log_interval_steps=config.log_interval_steps,
        progress_bar=progress_bar,
        device=config.device,
    )
    return train_and_log(config, runner.train, name="example_9", label=f"PPO {config.env_id}")


def train_one(argv: Sequence[str]) -> None:
    """The launched run: ``SLOT_AFFINITY_CODE LOG_DIR RUN_ID --n-steps N --seed S``."""
    run = get_run_args(argv)
    apply_affinity(run.affinity)  # pin to the slot's cores; build_and_train uses 1 thread
    options = parse_config(RunConfig, run.args)
    affinity, device = run.affinity, options.device
    if isinstance(affinity, Affinity) and affinity.cuda_idx is not None:
        device = f"cuda:{affinity.cuda_idx}"  # the slot's GPU (launched with --n-gpu)
    base = dataclasses.replace(
        options,
        device=device,
        seed=options.seed + run.run_ID,
        log_dir=run.log_dir,
        run_ID=run.run_ID,
        log_interval_steps=min(10_000, options.n_steps),
    )
    build_and_train(update_config(base, load_variant(run.log_dir)), progress_bar=False)


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclasses.dataclass
class Config:
    """The launch; saved to the grid's ``params.json``."""

    n_steps: int = option(20_000, "environment steps of each run")
    seed: int = option(0, "run k of every variant uses seed + k")
    runs_per_setting: int = 1
    n_cpu_core: int = dataclasses.field(
        default_factory=_available_cpus, metadata={"help": "default: the CPUs available here"}
    )
    cpu_per_run: int = option(1, "cores per run on a CPU-only machine (--n-gpu 0)")
    n_gpu: int = option(0, "GPUs to share: each run trains on its slot's GPU")
    log_dir: str = "data/example_9"
    run_ID: int = 0


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
    per_run = {"cpu_per_run": config.cpu_per_run} if not config.n_gpu else {}
    affinity_code = encode_affinity(n_cpu_core=config.n_cpu_core, n_gpu=config.n_gpu, **per_run)
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
    results = launch(parse_config(Config, argv, description=__doc__))
    if not all(r.ok for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
