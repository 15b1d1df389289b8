"""Replay memory and speed: tdrl's FrameReplayBuffer against buffers of full frame stacks.

Data: Atari-shaped stacks of 4 uint8 frames of 104 x 80 (rlpyt's default processing),
``batch_B=8`` envs, synthetic random frames, episodes ending about every 500 steps (half
terminated, half truncated). Buffers are filled by writing ready-made ``[T, B]`` TensorDicts
with the sampler's keys (no env stepping), until they have wrapped once.

Buffers:

* ``tdrl frame``: ``tdrl.replays.frame.FrameReplayBuffer`` (one frame per step, stacks
  rebuilt when sampling), with ``UniformSampler`` and with ``PrioritizedSampler`` (the same
  buffer, filled once, measured with each sampler holding the same valid entries);
* ``tdrl full``: ``tdrl.replays.ReplayBuffer``, storing ``observation`` and
  ``("next", "observation")`` stacks, uniform;
* ``torchrl full``: ``torchrl.data.ReplayBuffer(storage=LazyTensorStorage(size))`` storing
  full stacks of observation and next observation (what TorchRL's sota DQN stores), default
  ``RandomSampler``. TorchRL's own prioritized sampler needs its C++ extension, which does
  not load against this torch (the script tries it and prints the error).

Memory: bytes per transition count everything the buffer holds for its capacity (storage,
per-step reward/done arrays, sampler arrays, side store of final frames); transitions per
GB use 1 GB = 1e9 bytes. A buffer that would not fit in the available memory is not built:
its row says how much it needs (bytes per transition then come from a small instance).

Speed: batches per second of ``sample_batch(batch_size)`` (uniform), of ``sample_batch``
plus ``update_priorities`` (prioritized), and of TorchRL's ``rb.sample(batch_size)``; each
measured for ``--seconds`` of wall time after two warm-up calls, one torch thread.

Run: ``python benchmarks/replay.py [--quick] [--sizes 100000 1000000] [--batch-sizes 32 256]
[--seconds 2]``. ``--quick`` is a smoke run (size 1e4, short timings).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tensordict
import torch
import torchrl
from tensordict import TensorDict

# The comparison target, imported from TorchRL itself (tdrl's _compat exports no buffer).
from torchrl.data import LazyTensorStorage
from torchrl.data import ReplayBuffer as TorchRLReplayBuffer

from tdrl.replays import PrioritizedSampler, ReplayBuffer, UniformSampler
from tdrl.replays.frame import FrameReplayBuffer, replay_nbytes

torch.set_num_threads(1)
logging.getLogger("torchrl").setLevel(logging.WARNING)  # no "Initialized storage" lines

C, H, W = 4, 104, 80
B = 8
EPISODE = 500
CHUNK_T = 256
N_ACTIONS = 6
MEMORY_FRACTION = 0.8  # build a buffer only if it needs less than this share of free RAM


# --------------------------------------------------------------------------------- data
def synthetic_chunk(T: int, seed: int = 0) -> TensorDict:
    """A ``[T, B]`` sampler-like batch of consistent frame stacks (random frames)."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (T + C, B, H, W), dtype=torch.uint8, generator=g)
    obs = torch.stack([frames[k : k + T] for k in range(C)], dim=2)  # oldest first
    next_obs = torch.stack([frames[k + 1 : k + 1 + T] for k in range(C)], dim=2)
    done = torch.rand(T, B, 1, generator=g) < 1 / EPISODE
    terminated = done & (torch.rand(T, B, 1, generator=g) < 0.5)
    action = torch.randint(0, N_ACTIONS, (T, B), generator=g)
    reward = torch.randn(T, B, 1, generator=g)
    return TensorDict(
        {
            "observation": obs,
            "prev_action": torch.roll(action, 1, 0),
            "prev_reward": torch.roll(reward, 1, 0),
            "action": action,
            "next": {
                "observation": next_obs,
                "reward": reward,
                "done": done,
                "terminated": terminated,
                "truncated": done & ~terminated,
            },
        },
        batch_size=[T, B],
    )


def torchrl_rows(chunk: TensorDict) -> TensorDict:
    """The chunk as ``[T * B]`` transitions with the keys TorchRL's DQN stores."""
    keys = [
        "observation",
        "action",
        ("next", "observation"),
        ("next", "reward"),
        ("next", "done"),
        ("next", "terminated"),
    ]
    return chunk.select(*keys).reshape(-1)


# ----------------------------------------------------------------------------- helpers
def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (physical memory elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def rate(fn: Callable[[], Any], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (two warm-up calls first)."""
    fn()
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 3:
            return n / elapsed


def fill_tdrl(rb: ReplayBuffer, chunk: TensorDict) -> float:
    """Append ``chunk`` until the buffer has wrapped; returns transitions written per second."""
    rows, start = 0, time.perf_counter()
    while rows < rb.T_capacity + CHUNK_T:
        rb.append_samples(chunk)
        rows += chunk.batch_size[0]
    return rows * B / (time.perf_counter() - start)


def fill_torchrl(rb: TorchRLReplayBuffer, flat: TensorDict, size: int) -> float:
    written, start = 0, time.perf_counter()
    while written < size + flat.shape[0]:
        rb.extend(flat)
        written += flat.shape[0]
    return written / (time.perf_counter() - start)


def torchrl_nbytes(rb: TorchRLReplayBuffer) -> int:
    data = rb._storage._storage  # TorchRL keeps the storage's TensorDict privately
    return int(sum(leaf.nbytes for leaf in data.values(True, True)))


def small_bytes_per_transition(kind: str) -> float:
    """Bytes per transition of a buffer layout, from a small instance (no big allocation)."""
    size = 64 * B
    chunk = synthetic_chunk(16, seed=1)
    if kind == "torchrl full":
        rb = TorchRLReplayBuffer(storage=LazyTensorStorage(size))
        rb.extend(torchrl_rows(chunk))
        return torchrl_nbytes(rb) / size
    rb = ReplayBuffer(size=size, batch_B=B)
    rb.append_samples(chunk)
    return replay_nbytes(rb) / size


# --------------------------------------------------------------------------------- runs
def run_size(size: int, batch_sizes: list[int], seconds: float, chunk: TensorDict) -> list[dict]:
    rows: list[dict] = []
    free = available_bytes()

    # (a) tdrl FrameReplayBuffer: filled once with a prioritized sampler; the uniform
    # sampler gets the same valid entries.
    prio = PrioritizedSampler(size, seed=0)
    rb = FrameReplayBuffer(size=size, batch_B=B, sampler=prio)
    write = fill_tdrl(rb, chunk)
    uniform = UniformSampler(size, seed=0)
    uniform.set_default(np.flatnonzero(prio.tree.leaves > 0))
    for name, sampler in (("tdrl frame, uniform", uniform), ("tdrl frame, prioritized", prio)):
        rb.sampler = sampler
        row = {"buffer": name, "size": size, "bytes": rb.nbytes() / rb.size, "write": write}
        for bs in batch_sizes:
            if sampler is prio:

                def step(bs=bs):
                    batch = rb.sample_batch(bs)
                    rb.update_priorities(batch["index"], torch.rand(bs))

            else:

                def step(bs=bs):
                    rb.sample_batch(bs)

            row[bs] = rate(step, seconds)
        rows.append(row)
    del rb, prio, uniform
    gc.collect()

    # (b) tdrl ReplayBuffer of full stacks.
    est = small_bytes_per_transition("tdrl full")
    row = {"buffer": "tdrl full, uniform", "size": size, "bytes": est}
    if est * size > MEMORY_FRACTION * free:
        row["na"] = f"n/a: needs {est * size / 1e9:.1f} GB, {free / 1e9:.1f} GB available"
    else:
        rb = ReplayBuffer(size=size, batch_B=B, seed=0)
        row["write"] = fill_tdrl(rb, chunk)
        row["bytes"] = replay_nbytes(rb) / rb.size
        for bs in batch_sizes:
            row[bs] = rate(lambda bs=bs: rb.sample_batch(bs), seconds)
        del rb
        gc.collect()
    rows.append(row)

    # (c) TorchRL ReplayBuffer + LazyTensorStorage of full stacks.
    est = small_bytes_per_transition("torchrl full")
    row = {"buffer": "torchrl full, uniform", "size": size, "bytes": est}
    if est * size > MEMORY_FRACTION * free:
        row["na"] = f"n/a: needs {est * size / 1e9:.1f} GB, {free / 1e9:.1f} GB available"
    else:
        trb = TorchRLReplayBuffer(storage=LazyTensorStorage(size))
        row["write"] = fill_torchrl(trb, torchrl_rows(chunk), size)
        row["bytes"] = torchrl_nbytes(trb) / size
        for bs in batch_sizes:
            row[bs] = rate(lambda bs=bs: trb.sample(bs), seconds)
        del trb
        gc.collect()
    rows.append(row)
    return rows


def torchrl_prioritized_status() -> str:
    """Whether TorchRL's own prioritized buffer can sample here."""
    from torchrl.data import PrioritizedReplayBuffer

    try:
        rb = PrioritizedReplayBuffer(alpha=0.6, beta=0.4, storage=LazyTensorStorage(16))
        rb.extend(TensorDict({"x": torch.zeros(8)}, batch_size=[8]))
        rb.sample(4)
    except Exception as err:  # report whatever the extension raises
        return f"not available ({type(err).__name__}: {err})"
    return "available (not measured)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: size 1e4, 0.2 s")
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--seconds", type=float, default=2.0, help="per rate measurement")
    args = parser.parse_args()
    sizes = [int(s) for s in ([1e4] if args.quick else args.sizes)]
    seconds = 0.2 if args.quick else args.seconds
    bss = args.batch_sizes

    print(f"date: {datetime.date.today()}; machine: {os.cpu_count()} CPUs, {platform.machine()}")
    print(
        f"python {sys.version.split()[0]}, torch {torch.__version__}, torchrl "
        f"{torchrl.__version__}, tensordict {tensordict.__version__}, numpy {np.__version__}; "
        f"one torch thread; {available_bytes() / 1e9:.1f} GB available at start"
    )
    print(f"data: {C}x{H}x{W} uint8 stacks, B={B}, episodes ~{EPISODE} steps\n")
    chunk = synthetic_chunk(CHUNK_T)
    rows = []
    for size in sizes:
        t0 = time.perf_counter()
        rows += run_size(size, bss, seconds, chunk)
        print(f"size {size:.0e}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    head = "| size | buffer | bytes / transition | transitions / GB | total GB | write (tr/s) |"
    head += "".join(f" batch {bs} (batches/s) |" for bs in bss)
    print(head)
    print("|---|---|---:|---:|---:|---:|" + "---:|" * len(bss))
    for r in rows:
        cells = [
            f"{r['size']:.0e}",
            r["buffer"],
            f"{r['bytes']:,.0f}",
            f"{1e9 / r['bytes']:,.0f}",
            f"{r['bytes'] * r['size'] / 1e9:.2f}",
        ]
        if "na" in r:
            cells += [r["na"]] + ["n/a"] * len(bss)
        else:
            cells += [f"{r['write']:,.0f}"] + [f"{r[bs]:,.0f}" for bs in bss]
        print("| " + " | ".join(cells) + " |")

    frame = next(r for r in rows if r["buffer"] == "tdrl frame, uniform")
    full = next(r for r in rows if r["buffer"] == "tdrl full, uniform")
    ratio = full["bytes"] / frame["bytes"]
    verdict = "PASS" if ratio >= 3.5 else "FAIL"
    print(
        f"\n{verdict}: tdrl full / tdrl frame bytes per transition = {ratio:.2f}x "
        f"(target >= 3.5x) at size {frame['size']:.0e}"
    )
    print(f"TorchRL PrioritizedReplayBuffer: {torchrl_prioritized_status()}")


if __name__ == "__main__":
    main()
