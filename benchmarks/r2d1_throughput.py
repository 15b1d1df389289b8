"""R2D1 throughput on Atari: env steps and gradient updates per second, serial against
asynchronous sampling, in one run.

Every mode trains tdrl's R2D1 (``R2D1`` + ``R2d1Agent``: rlpyt's ``AtariR2d1Model`` with a
dueling head, prioritized sequence replay storing each frame once, input priorities) on
tdrl's ``AtariEnv`` (``--game``, 4 stacked 104x80 uint8 frames) from scratch, for
``--n-steps`` env steps, with learning from the second sampler batch on:

* ``serial``: ``MinibatchRl`` — sample a batch, then ``updates_per_optimize`` updates, in turn.
* ``async``: ``AsyncRl`` with the sampler in a thread (it shares the GIL with the learner).
* ``async-process``: ``AsyncRl(sampler_process=True)``: the sampler in its own process.

``--shapes r2d1`` is rlpyt's ``r2d1`` config (80 trained + 40 burn-in steps, 32 sequences
per update, replay ratio 4); ``--shapes small`` (the default on the CPU, where one full-size
update takes seconds) keeps the network and shrinks the sequences (20 + 10 steps, 8 per
update). The rates are those of the second half of each run (``progress.csv``'s
``Diagnostics/StepsPerSecond`` and ``UpdatesPerSecond`` of its last row, logged every
``n_steps / 2``), when learning has started; the wall time includes start-up. In the
serial mode the two rates are tied by the replay ratio; asynchronously the sampler runs
ahead when the learner is the slower side (the replay ratio is an upper bound), so env
steps/s rises towards the sampler's own speed.

Run: ``python benchmarks/r2d1_throughput.py [--game pong] [--modes serial async
async-process] [--n-steps 2000] [--shapes small|r2d1] [--batch-B 8] [--device cpu|cuda]
[--budget-s S]``. Exits 1 when a mode failed; ``--budget-s`` skips modes that would start
past the budget (estimated from the runs so far).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(1)

MODES = ("serial", "async", "async-process")
#: R2D1 settings per ``--shapes`` (``small``: the sequences shrunk for the CPU).
SHAPES: dict[str, dict[str, Any]] = {
    "r2d1": {
        "batch_T": 80,
        "batch_B": 32,
        "warmup_T": 40,
        "store_rnn_state_interval": 40,
        "replay_ratio": 4,
        "input_priority_shift": 2,
    },
    "small": {
        "batch_T": 20,
        "batch_B": 8,
        "warmup_T": 10,
        "store_rnn_state_interval": 10,
        "replay_ratio": 4,
        "input_priority_shift": 1,
    },
}


def run_mode(mode: str, args: argparse.Namespace, log_dir: Path) -> dict[str, float]:
    """Train for ``args.n_steps`` in ``mode``; the last row's rates and the wall time."""
    from tdrl.agents import R2d1Agent
    from tdrl.algos import R2D1
    from tdrl.envs import AtariTrajInfo, make_atari_env
    from tdrl.logging import logger_context
    from tdrl.runners import AsyncRl, MinibatchRl
    from tdrl.samplers import SerialSampler

    shapes = SHAPES[args.shapes]
    sampler_T = shapes["store_rnn_state_interval"]
    sampler = SerialSampler(
        make_atari_env,
        {"game": args.game, "clip_reward": False},
        batch_T=sampler_T,
        batch_B=args.batch_B,
        max_decorrelation_steps=0,
        traj_info_cls=AtariTrajInfo,
    )
    size = sampler_T * args.batch_B
    algo = R2D1(
        **shapes,
        pri_alpha=0.9,
        pri_beta_init=0.6,
        pri_beta_final=0.6,
        min_steps_learn=size,
        replay_size=max(20 * size, args.n_steps),
    )
    agent = R2d1Agent(model_kwargs={"dueling": True})
    common = {
        "n_steps": args.n_steps,
        "seed": 0,
        "log_interval_steps": max(size, args.n_steps // 2),
        "progress_bar": False,
        "device": args.device,
    }
    if mode == "serial":
        runner: Any = MinibatchRl(algo, agent, sampler, **common)
    else:
        runner = AsyncRl(algo, agent, sampler, sampler_process=mode == "async-process", **common)
    t0 = time.perf_counter()
    with logger_context(str(log_dir), 0, f"r2d1_{mode}", {"mode": mode}, echo=False) as logger:
        runner.train()
        progress = logger.run_dir / "progress.csv"
    wall = time.perf_counter() - t0
    with open(progress, newline="") as f:
        last = list(csv.DictReader(f))[-1]
    return {
        "steps_s": float(last["Diagnostics/StepsPerSecond"]),
        "updates_s": float(last["Diagnostics/UpdatesPerSecond"]),
        "replay_ratio": float(last["Diagnostics/CumReplayRatio"]),
        "updates": float(last["Diagnostics/CumUpdates"]),
        "wall": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--game", default="pong")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--n-steps", type=int, default=None, help="default: cpu 2000, cuda 40000")
    parser.add_argument("--shapes", choices=tuple(SHAPES), default=None,
                        help="default: small on the CPU, r2d1 on CUDA")  # fmt: skip
    parser.add_argument("--batch-B", type=int, default=None, help="envs (default cpu 8, cuda 32)")
    parser.add_argument("--device", default="cpu", help="where the agent trains: cpu, cuda")
    parser.add_argument("--budget-s", type=float, default=None, help="wall-time budget")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    cuda = device.type == "cuda"
    args.shapes = args.shapes or ("r2d1" if cuda else "small")
    args.n_steps = args.n_steps or (40_000 if cuda else 2_000)
    args.batch_B = args.batch_B or (32 if cuda else 8)
    deadline = time.perf_counter() + (args.budget_s or float("inf"))
    gpu = f", {torch.cuda.get_device_name(device)}" if cuda else ""
    print(
        f"# r2d1_throughput {datetime.datetime.now():%Y-%m-%d %H:%M} | "
        f"{platform.processor() or platform.machine()} | {os.cpu_count()} CPUs | torch "
        f"{torch.__version__}{gpu} (1 thread) | agent on {device} | {args.game}, "
        f"{args.batch_B} envs, shapes {args.shapes} {SHAPES[args.shapes]} | "
        f"{args.n_steps} steps per mode",
        flush=True,
    )
    results: dict[str, dict[str, float] | str] = {}
    longest = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            if time.perf_counter() + longest > deadline:
                results[mode] = "skipped: budget spent"
                print(f"  {mode}: {results[mode]}", flush=True)
                continue
            try:
                res = run_mode(mode, args, Path(tmp) / mode)
            except Exception as e:  # reported in the table; the exit status says it failed
                results[mode] = f"failed: {type(e).__name__}: {e}"
                print(f"  {mode}: {results[mode]}", flush=True)
                continue
            results[mode] = res
            longest = max(longest, res["wall"])
            print(
                f"  {mode}: {res['steps_s']:,.0f} env steps/s, {res['updates_s']:,.2f} "
                f"updates/s ({res['wall']:.1f} s)",
                flush=True,
            )
    print("\n| mode | env steps/s | updates/s | replay ratio | updates | wall s |")
    print("|---|---|---|---|---|---|")
    for mode, res in results.items():
        if isinstance(res, str):
            print(f"| {mode} | {res} | | | | |")
        else:
            print(
                f"| {mode} | {res['steps_s']:,.0f} | {res['updates_s']:,.2f} | "
                f"{res['replay_ratio']:.2f} | {res['updates']:.0f} | {res['wall']:.1f} |"
            )
    sys.stdout.flush()
    failed = [m for m, r in results.items() if isinstance(r, str) and r.startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
