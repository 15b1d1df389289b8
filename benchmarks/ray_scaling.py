"""Ray next to tdrl's own processes, on one machine: sampler throughput and launcher throughput.

**Samplers** (``--part sampler``): env steps per second of the same ``batch_B`` envs with
tdrl's default agent for the env, as ``benchmarks/sampler_scaling.py`` measures them (its
loops are imported from there), side by side in one run:

* ``gym-sync``: gymnasium's ``SyncVectorEnv`` in this process (the raw env loop);
* ``serial``: ``SerialSampler``;
* ``cpu-N``: ``CpuSampler`` with N worker processes (shared memory, pipes);
* ``ray-N``: ``RaySampler`` with N actors, synchronous (weights through Ray's object store
  every batch, each actor's slice returned through it);
* ``rayp-N``: the same with ``prefetch=True`` (the next batch starts as one is returned).

The overhead per batch of Ray is ``batch / rate(ray-N) - batch / rate(cpu-N)``, in ms.

**Launcher** (``--part launcher``): runs per minute of ``--runs`` tiny runs (a launchable
script that parses its arguments and exits: the cost is the interpreter and the launch),
over 2 run slots with the local launcher and as Ray tasks of 1 CPU on a local Ray instance
of 2 CPUs (its start-up counted, as a user would see it).

``python benchmarks/ray_scaling.py [--part sampler launcher] [--envs CartPole-v1
HalfCheetah-v5] [--workers 2] [--batch-B 8] [--seconds 4] [--repeats 2] [--runs 8]``;
needs the ``ray`` extra; about 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from sampler_scaling import BATCH_T, GymLoop, Loop, TdrlLoop, env_fn_kwargs, make_agent

torch.set_num_threads(1)
CPU = torch.device("cpu")

TINY_RUN = """
from tdrl.launch import get_run_args
get_run_args()
"""


class RayLoop(TdrlLoop):
    """``TdrlLoop`` (its ``run_unit`` and ``close``) over a ``RaySampler``."""

    def __init__(self, env_id: str, batch_B: int, n_workers: int, prefetch: bool):
        from tdrl.samplers import RaySampler

        fn, kwargs = env_fn_kwargs(env_id)
        self.sampler = RaySampler(
            fn, kwargs, batch_T=BATCH_T, batch_B=batch_B, n_workers=n_workers, prefetch=prefetch
        )
        self.agent = make_agent(env_id)
        self.sampler.initialize(self.agent, seed=0)
        self.agent.sample_mode(1_000_000)
        self.run_unit()


def build(name: str, env_id: str, batch_B: int) -> Loop:
    kind, _, n = name.partition("-")
    if name == "gym-sync":
        return GymLoop(env_id, batch_B, asynchronous=False, device=CPU)
    if kind in ("serial", "cpu"):
        return TdrlLoop(env_id, batch_B, kind, int(n or 1), CPU)
    if kind in ("ray", "rayp"):
        return RayLoop(env_id, batch_B, int(n), prefetch=kind == "rayp")
    raise SystemExit(f"unknown loop {name!r}")


def sampler_part(args: argparse.Namespace) -> None:
    loops = ["gym-sync", "serial"]
    for n in args.workers:
        loops += [f"cpu-{n}", f"ray-{n}", f"rayp-{n}"]
    table: dict[str, dict[str, str]] = {}
    rates_by_env: dict[str, dict[str, float]] = {}
    for env_id in args.envs:
        built: dict[str, Loop] = {}
        startup: dict[str, float] = {}
        for name in loops:
            t0 = time.perf_counter()
            built[name] = build(name, env_id, args.batch_B)
            startup[name] = time.perf_counter() - t0
            print(f"  {env_id} {name}: built in {startup[name]:.1f} s", flush=True)
        rates: dict[str, list[float]] = {n: [] for n in built}
        try:
            for r in range(args.repeats):
                order = loops[r % len(loops) :] + loops[: r % len(loops)]
                for name in order:
                    rate = built[name].run(args.seconds)
                    rates[name].append(rate)
                    print(f"  run {r + 1} {env_id} {name}: {rate:,.0f} steps/s", flush=True)
        finally:
            for loop in built.values():
                loop.close()
        medians = {n: statistics.median(v) for n, v in rates.items()}
        rates_by_env[env_id] = medians
        for name in loops:
            table.setdefault(name, {})[env_id] = f"{medians[name]:,.0f} ({startup[name]:.1f})"
    batch = BATCH_T * args.batch_B
    print(f"\nsteps per second, batch {BATCH_T}x{args.batch_B} (median; start-up, s)\n")
    print("| loop | " + " | ".join(args.envs) + " |")
    print("|" + "---|" * (len(args.envs) + 1))
    for name in loops:
        print(f"| {name} | " + " | ".join(table[name][e] for e in args.envs) + " |")
    print("\nRay's overhead per batch against CpuSampler (ms; negative: Ray faster)\n")
    print("| workers | loop | " + " | ".join(args.envs) + " |")
    print("|" + "---|" * (len(args.envs) + 2))
    for n in args.workers:
        for kind in ("ray", "rayp"):
            cells = []
            for env_id in args.envs:
                rates = rates_by_env[env_id]
                extra = batch / rates[f"{kind}-{n}"] - batch / rates[f"cpu-{n}"]
                cells.append(f"{1000 * extra:+.1f}")
            print(f"| {n} | {kind}-{n} | " + " | ".join(cells) + " |")


def launcher_part(args: argparse.Namespace) -> None:
    from tdrl.launch import VariantLevel, encode_affinity, make_variants, run_experiments
    from tdrl.launch.ray_launcher import run_experiments_ray

    variants, dirs = make_variants(
        VariantLevel(["i"], [[i] for i in range(args.runs)], [f"i{i}" for i in range(args.runs)])
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "tiny.py"
        script.write_text(TINY_RUN)
        code = encode_affinity(n_cpu_core=2, cpu_per_run=1)
        for backend in ("local", "ray"):
            t0 = time.perf_counter()
            if backend == "local":
                results = run_experiments(
                    script, code, "local", 1, variants, dirs, log_root=tmp, verbose=False,
                    poll_interval=0.02,
                )  # fmt: skip
            else:
                import ray

                os.environ.setdefault("RAY_AUTH_MODE", "disabled")
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                try:
                    t_ray = time.perf_counter() - t0
                    results = run_experiments_ray(
                        script, "ray", 1, variants, dirs, log_root=tmp, verbose=False
                    )
                finally:
                    ray.shutdown()
            seconds = time.perf_counter() - t0
            assert all(r.ok for r in results), results
            note = f"Ray start-up {t_ray:.1f} s included" if backend == "ray" else ""
            rows.append((backend, seconds, 60 * args.runs / seconds, note))
            print(f"  {backend}: {args.runs} runs in {seconds:.1f} s", flush=True)
    print(f"\nlauncher throughput, {args.runs} tiny runs over 2 CPUs\n")
    print("| backend | seconds | runs/min | note |\n|---|---|---|---|")
    for backend, seconds, per_min, note in rows:
        print(f"| {backend} | {seconds:.1f} | {per_min:.0f} | {note} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--part", nargs="+", default=["sampler", "launcher"])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "HalfCheetah-v5"])
    parser.add_argument("--workers", nargs="+", type=int, default=[2])
    parser.add_argument("--batch-B", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        import ray
    except ImportError:
        raise SystemExit('ray_scaling needs Ray: pip install "tdrl[ray]"') from None
    print(
        f"# ray_scaling {datetime.datetime.now():%Y-%m-%d %H:%M} | "
        f"{platform.processor() or platform.machine()} | {os.cpu_count()} CPUs | torch "
        f"{torch.__version__} (1 thread per process) | ray {ray.__version__}",
        flush=True,
    )
    if "sampler" in args.part:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # Logical CPUs (Ray's resources are counts, not cores): enough for every Ray loop's
        # actors to stay up side by side, as CpuSampler's workers do.
        n_actors = 2 * sum(args.workers)
        ray.init(num_cpus=n_actors, include_dashboard=False, log_to_driver=False)
        try:
            sampler_part(args)
        finally:
            ray.shutdown()
    if "launcher" in args.part:
        launcher_part(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
