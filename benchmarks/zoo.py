"""The presets trained for their budgets over seeds, beside rl-zoo3's published results.

Every CPU-feasible preset of ``tdrl.presets`` (the classic-control ones: the MuJoCo,
Atari and PEARL budgets are hours to days on a 2-core machine and are left out unless
named with ``--presets``) is trained with ``tdrl train --algo A --env E --seed S`` (one
process per run, ``--jobs`` at once, one torch thread each). The table has, per preset,
the final logged ``ReturnAverage`` (the evaluation return where the preset evaluates,
else the mean of the last 100 training episodes) as mean ± std over the seeds and each
seed's value, the env steps, the wall time per run, and rl-zoo3's published result for the
same algorithm and env (``benchmark.md`` of DLR-RM/rl-baselines3-zoo: *one* trained agent
evaluated deterministically after its own, often longer, budget, so it is a reference
point, not a like-for-like number). ``--plot FILE`` draws the learning curves with
``tdrl plot``'s code (mean ± std over the seeds).

Run: ``python benchmarks/zoo.py [--seeds 0 1 2] [--jobs 2] [--plot zoo.png]``. Measured
with ``--jobs 1`` beside other work on 2 cores (2026-12-07): 94 minutes for the default
presets but ``td3-mountaincarcontinuous``, whose three runs took 10 minutes each more; the
DQN Acrobot, LunarLander and MountainCar runs and TD3 MountainCarContinuous are the longest
(3-14 minutes each); LunarLander needs the ``box2d`` extra.
``--n-steps N`` overrides every budget (a smoke run, not a result).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tdrl.presets import PRESETS

#: rl-zoo3's benchmark.md: (mean, std, training steps) of its trained agent per (algo, env).
ZOO_RESULTS = {
    ("ppo", "CartPole-v1"): (500.0, 0.0, "100k"),
    ("dqn", "CartPole-v1"): (500.0, 0.0, "50k"),
    ("ppo", "Acrobot-v1"): (-73.5, 18.2, "1M"),
    ("dqn", "Acrobot-v1"): (-76.6, 11.8, "100k"),
    ("dqn", "MountainCar-v0"): (-100.8, 9.9, "120k"),
    ("dqn", "LunarLander-v3"): (154.4, 79.2, "100k (LunarLander-v2)"),
    ("sac", "Hopper-v5"): (2325.5, 1129.7, "1M (Hopper-v3)"),
    ("sac", "Swimmer-v5"): (345.6, 3.1, "1M (Swimmer-v3)"),
    ("sac", "HalfCheetah-v5"): (9535.5, 100.5, "1M (HalfCheetah-v3)"),
    ("sac", "Pendulum-v1"): (-157.0, 88.7, "20k (Pendulum-v0)"),
    ("td3", "Pendulum-v1"): (-151.9, 90.2, "20k (Pendulum-v0)"),
    ("td3", "MountainCarContinuous-v0"): (93.5, 0.1, "300k"),
}

#: Presets trained by default: those whose budget fits a 2-core CPU in minutes.
CPU_PRESETS = (
    "ppo-cartpole",
    "dqn-cartpole",
    "ppo-acrobot",
    "dqn-acrobot",
    "dqn-mountaincar",
    "dqn-lunarlander",
    "ppo-cartpolenovel-lstm",
    "r2d1-cartpolenovel",
    "sac-pendulum",
    "td3-pendulum",
    "td3-mountaincarcontinuous",
)


def train(preset: str, seed: int, root: Path, n_steps: int | None) -> dict[str, object]:
    """One ``tdrl train`` run of ``preset``; its final row and wall time."""
    p = PRESETS[preset]
    log_dir = root / preset
    cmd = [sys.executable, "-m", "tdrl.cli", "train", "--algo", p.algo, "--env", p.envs[0]]
    cmd += ["--seed", str(seed), "--run-ID", str(seed), "--log-dir", str(log_dir)]
    cmd += ["--no-progress", "--preset", preset]
    if n_steps is not None:
        cmd += ["--n-steps", str(n_steps)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:], "seconds": seconds}
    with open(log_dir / f"run_{seed}" / "progress.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    return {
        "return": float(last["ReturnAverage"]),
        "steps": int(float(last["Diagnostics/CumSteps"])),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(CPU_PRESETS), choices=PRESETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs at once")
    parser.add_argument("--n-steps", type=int, default=None, help="override every budget")
    parser.add_argument("--log-dir", default=None, help="keep the runs here (default: a tmp)")
    parser.add_argument("--plot", default=None, help="learning curves image (tdrl[plot])")
    args = parser.parse_args()
    root = Path(args.log_dir or tempfile.mkdtemp(prefix="tdrl_zoo_"))
    print(
        f"# zoo {time.strftime('%Y-%m-%d %H:%M')} | {platform.machine()} | "
        f"{len(__import__('os').sched_getaffinity(0))} CPUs | seeds {args.seeds} | "
        f"{args.jobs} runs at once | runs in {root}",
        flush=True,
    )
    jobs = [(p, s) for p in args.presets for s in args.seeds]
    results: dict[tuple[str, int], dict[str, object]] = {}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(train, p, s, root, args.n_steps): (p, s) for p, s in jobs}
        for future in concurrent.futures.as_completed(futures):
            key = futures[future]
            results[key] = future.result()
            print(f"  {key[0]} seed {key[1]}: {results[key]}", flush=True)
    print("\n| preset | env | seeds: final ReturnAverage | mean ± std | env steps | s per run "
          "| rl-zoo3 (one agent, its budget) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name in args.presets:
        p = PRESETS[name]
        runs = [results[(name, s)] for s in args.seeds]
        done = [r for r in runs if "return" in r]
        values = [float(r["return"]) for r in done]  # type: ignore[arg-type]
        cells = ", ".join(f"{v:.1f}" for v in values) or "failed: " + str(runs[0].get("error"))
        spread = (
            f"{statistics.mean(values):.1f} ± {statistics.pstdev(values):.1f}" if values else "-"
        )
        steps = done[0]["steps"] if done else "-"
        secs = statistics.mean(float(r["seconds"]) for r in runs)  # type: ignore[arg-type]
        zoo = ZOO_RESULTS.get((p.algo, p.envs[0]))
        ref = f"{zoo[0]:.1f} ± {zoo[1]:.1f} at {zoo[2]}" if zoo else "-"
        print(f"| {name} | {p.envs[0]} | {cells} | {spread} | {steps} | {secs:.0f} | {ref} |")
    if args.plot:
        from tdrl.logging.curves import find_runs, learning_curves, plot_curves

        runs = find_runs([root / name for name in args.presets])
        curves = learning_curves(runs, ["ReturnAverage"])
        plot_curves(curves, args.plot, title="tdrl presets", panel_per_group=True)
        print(f"\nlearning curves: {args.plot}")


if __name__ == "__main__":
    main()
