"""Vectorized env stepping: env steps per second of tdrl's ``VectorCartPole`` (N carts as one
TorchRL env of batch size ``[N]``) through TorchRL's path and bare, beside gymnasium's
CartPole-v1, for N = 1 to 16384, with torch on 1 and on 2 threads.

Loops (each steps N envs once per call with random actions, resetting the envs that are done):

* ``physics``: ``cartpole_step`` on plain tensors plus the step counter and the reset of the
  done rows (what the env computes, without TensorDicts): the ceiling.
* ``env-private``: the env's own ``_step`` and, when an env is done, ``_reset`` with a
  ``"_reset"`` mask: the env's work, without ``EnvBase``'s processing.
* ``torchrl``: ``env.step_and_maybe_reset(td)``, TorchRL's path (``EnvBase.step``, ``step_mdp``,
  ``maybe_reset``), what TorchRL's collectors and ``rollout`` run and what a sampler pays.
* ``physics-compiled`` (not run by default): ``physics`` with ``torch.compile(cartpole_step)``;
  needs a C++ compiler, compiles once per N and thread count (seconds each).
* ``gym-loop``: N ``gymnasium.make("CartPole-v1")`` envs stepped one by one in a Python loop.
* ``gym-vector``: ``gymnasium.make_vec("CartPole-v1", num_envs=N,
  vectorization_mode="vector_entry_point")``, gymnasium's NumPy ``CartPoleVectorEnv``
  (its autoreset takes one extra step per episode, counted like the others).
* ``gym-sync``: ``gymnasium.make_vec(..., vectorization_mode="sync")``, a ``SyncVectorEnv``.

The gymnasium loops do not use torch's threads and run once. Actions come from a bank of 64
pre-drawn random rows (drawing them is not timed). Every loop is built and warmed up first;
each cell is then measured ``--repeats`` times for ``--seconds`` of wall time, the loops of one
(N, threads) in rotated order, and the table gives the median env steps per second. A second
table gives what ``EnvBase``'s processing costs: the ``torchrl`` rate over the ``env-private``
rate and the microseconds per batched step of both.

Run: ``python benchmarks/vector_env.py [--num-envs 1 64 1024 4096 16384] [--threads 1 2]
[--seconds 1] [--repeats 3] [--loops ...] [--quick]``; about 3 minutes with the defaults,
seconds with ``--quick``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

from tdrl.envs import VectorCartPole
from tdrl.envs.vector_cartpole import RESET_BOUND, cartpole_step

TORCH_LOOPS = ("physics", "env-private", "torchrl")
GYM_LOOPS = ("gym-loop", "gym-vector", "gym-sync")
LOOPS = ("physics", "physics-compiled", "env-private", "torchrl", *GYM_LOOPS)  # table order
DEFAULT_LOOPS = (*TORCH_LOOPS, *GYM_LOOPS)
BANK = 64  # pre-drawn rows of random actions, cycled
MAX_EPISODE_STEPS = 500

Step = Callable[[], None]


def _bare_loop(n: int, step_fn: Callable) -> Step:
    """``cartpole_step`` with the env's counter and CPU reset on plain tensors."""
    gen = torch.Generator().manual_seed(0)
    actions = torch.randint(0, 2, (BANK, n), generator=gen)
    state = torch.empty(n, 4).uniform_(-RESET_BOUND, RESET_BOUND, generator=gen)
    steps = torch.zeros(n, dtype=torch.int64)
    t = 0

    def step() -> None:
        nonlocal state, steps, t
        state, terminated = step_fn(state, actions[t % BANK])
        steps = steps + 1
        done = terminated | (steps >= MAX_EPISODE_STEPS)
        t += 1
        if done.any():
            rows = done.nonzero().squeeze(-1)
            fresh = torch.empty(rows.numel(), 4).uniform_(-RESET_BOUND, RESET_BOUND, generator=gen)
            state = state.index_put((rows,), fresh)
            steps = steps.index_fill(0, rows, 0)

    return step


def _env_private_loop(n: int) -> Step:
    env = VectorCartPole(n, seed=0)
    actions = env.action_spec.rand((BANK,))
    td = env.reset()
    t = 0

    def step() -> None:
        nonlocal t
        td.set("action", actions[t % BANK])
        t += 1
        done = env._step(td).get("done")
        if done.any():
            env._reset(TensorDict({"_reset": done}, [n]))

    return step


def _torchrl_loop(n: int) -> Step:
    env = VectorCartPole(n, seed=0)
    actions = env.action_spec.rand((BANK,))
    td = env.reset()
    t = 0

    def step() -> None:
        nonlocal td, t
        td.set("action", actions[t % BANK])
        t += 1
        _, td = env.step_and_maybe_reset(td)

    return step


def _gym_loop(n: int) -> Step:
    envs = [gym.make("CartPole-v1") for _ in range(n)]
    for i, env in enumerate(envs):
        env.reset(seed=i)
    bank = np.random.default_rng(0).integers(0, 2, (BANK, n)).tolist()
    t = 0

    def step() -> None:
        nonlocal t
        for env, action in zip(envs, bank[t % BANK], strict=True):
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        t += 1

    return step


def _gym_vector_loop(n: int, mode: str) -> Step:
    env = gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode=mode)
    env.reset(seed=0)
    bank = np.random.default_rng(0).integers(0, 2, (BANK, n))
    t = 0

    def step() -> None:
        nonlocal t
        env.step(bank[t % BANK])
        t += 1

    return step


def build(loop: str, n: int) -> Step:
    """A function stepping ``n`` envs once, warmed up."""
    if loop == "physics":
        step = _bare_loop(n, cartpole_step)
    elif loop == "physics-compiled":
        step = _bare_loop(n, torch.compile(cartpole_step, dynamic=False))
    elif loop == "env-private":
        step = _env_private_loop(n)
    elif loop == "torchrl":
        step = _torchrl_loop(n)
    elif loop == "gym-loop":
        step = _gym_loop(n)
    elif loop == "gym-vector":
        step = _gym_vector_loop(n, "vector_entry_point")
    elif loop == "gym-sync":
        step = _gym_vector_loop(n, "sync")
    else:
        raise ValueError(f"unknown loop {loop!r}; expected one of {LOOPS}")
    for _ in range(20):
        step()
    return step


def measure(step: Step, n: int, seconds: float) -> float:
    """Env steps per second: ``step`` called in chunks until ``seconds`` have passed."""
    calls, chunk = 0, 1
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(chunk):
            step()
        calls += chunk
        chunk = min(chunk * 2, 256)
    return n * calls / elapsed


def _rate(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    return f"{value / 1e3:.1f}k"


def run(args: argparse.Namespace) -> dict[tuple[str, int, int], float]:
    """Median steps/s per ``(loop, threads, N)``; gymnasium loops under threads 0."""
    results: dict[tuple[str, int, int], float] = {}
    torch_loops = [lp for lp in args.loops if lp not in GYM_LOOPS]
    gym_loops = [lp for lp in args.loops if lp in GYM_LOOPS]
    groups = [(threads, torch_loops) for threads in args.threads] + [(0, gym_loops)]
    for threads, loops in groups:
        if not loops:
            continue
        torch.set_num_threads(max(threads, 1))
        for n in args.num_envs:
            steps = {loop: build(loop, n) for loop in loops}
            runs: dict[str, list[float]] = {loop: [] for loop in loops}
            for r in range(args.repeats):
                order = loops[r % len(loops) :] + loops[: r % len(loops)]
                for loop in order:
                    runs[loop].append(measure(steps[loop], n, args.seconds))
            for loop in loops:
                results[loop, threads, n] = statistics.median(runs[loop])
                shown = ", ".join(_rate(v) for v in runs[loop])
                print(f"  {loop} threads={threads or '-'} N={n}: {shown}", flush=True)
    return results


def report(args: argparse.Namespace, results: dict[tuple[str, int, int], float]) -> None:
    ns = args.num_envs
    print(f"\n## Env steps/s (median of {args.repeats} x {args.seconds:g} s)\n")
    print("| loop | torch threads | " + " | ".join(f"N={n}" for n in ns) + " |")
    print("|---|---|" + "---|" * len(ns))
    rows = sorted({(loop, threads) for loop, threads, _ in results}, key=_row_order)
    for loop, threads in rows:
        cells = " | ".join(_rate(results.get((loop, threads, n))) for n in ns)
        print(f"| {loop} | {threads or '—'} | {cells} |")
    pairs = [t for t in args.threads if ("torchrl", t, ns[0]) in results]
    if not pairs or ("env-private", pairs[0], ns[0]) not in results:
        return
    print("\n## EnvBase's processing: torchrl (step_and_maybe_reset) vs env-private\n")
    print("| torch threads | N | torchrl us/step | env-private us/step | torchrl / env-private |")
    print("|---|---|---|---|---|")
    for threads in pairs:
        for n in ns:
            path, own = results["torchrl", threads, n], results["env-private", threads, n]
            print(
                f"| {threads} | {n} | {n / path * 1e6:.0f} | {n / own * 1e6:.0f} | "
                f"{path / own:.2f} |"
            )


def _row_order(row: tuple[str, int]) -> tuple[int, int]:
    loop, threads = row
    return LOOPS.index(loop), threads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 64, 1024, 4096, 16384])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=1.0, help="wall time per measured run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell (median reported)")
    parser.add_argument("--loops", nargs="+", default=list(DEFAULT_LOOPS), choices=LOOPS)
    parser.add_argument("--quick", action="store_true", help="N 1 64 1024, 0.2 s, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_envs, args.seconds, args.repeats = [1, 64, 1024], 0.2, 1
    if min(args.num_envs) < 1 or min(args.threads) < 1 or args.repeats < 1 or args.seconds <= 0:
        parser.error("--num-envs and --threads must be >= 1, --repeats >= 1, --seconds > 0")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"# vector_env.py, {datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.processor() or '?'}"
        f", {os.cpu_count()} CPUs (load average {load}), torch {torch.__version__}, "
        f"gymnasium {gym.__version__}\n# {' '.join(sys.argv[1:]) or '(defaults)'}",
        flush=True,
    )
    report(args, run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
