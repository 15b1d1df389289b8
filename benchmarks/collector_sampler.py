"""CollectorSampler throughput: env steps per second of tdrl's SerialSampler (gymnasium fast
path), tdrl's CollectorSampler over TorchRL's Collector, and TorchRL's Collector on its own,
on CartPole-v1 with the same tiny MLP, in one run.

Loops (all step ``batch_B`` envs and run the policy once per time step on the batch):

* ``serial``: ``tdrl.samplers.SerialSampler(make_gym_env, batch_T, batch_B)`` with a
  ``CategoricalPgAgent``; timed ``obtain_samples`` (gymnasium envs, tdrl's own loop).
* ``collector``: ``tdrl.samplers.CollectorSampler("CartPole-v1", batch_T, batch_B)`` (the
  ``"sync"`` collector: TorchRL's ``Collector`` over ``SerialEnv(batch_B, make_env)``, the
  agent as ``AgentPolicy``); timed ``obtain_samples``, which includes the copy into tdrl's
  ``[T, B]`` buffer and the episode statistics.
* ``torchrl``: TorchRL's ``Collector`` over ``SerialEnv(batch_B, GymEnv("CartPole-v1"))``
  with a ``TensorDictModule`` around the same model (logits sampled with
  ``torch.multinomial``), ``frames_per_batch = batch_T * batch_B``; timed ``next(iterator)``.
* ``multi_sync`` (not run by default): ``CollectorSampler(collector="multi_sync",
  n_workers=2)``; start-up (a few seconds per worker) is not timed.

Every loop is built and warmed up with one batch (not timed); then each runs for
``--seconds`` of wall time, in rotated order, ``--repeats`` times; the table gives the
median steps per second and every run. ``torch.set_num_threads(1)``.

Run: ``python benchmarks/collector_sampler.py [--seconds 3] [--repeats 3] [--batch-B 8]
[--batch-T 128] [--hidden 32] [--loops serial collector torchrl multi_sync]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from tensordict.nn import TensorDictModule
from torch import nn

torch.set_num_threads(1)

LOOPS = ("serial", "collector", "torchrl", "multi_sync")
DEFAULT_LOOPS = ("serial", "collector", "torchrl")
ENV_ID = "CartPole-v1"


class SampleAction(nn.Module):
    """``observation -> action`` with a tdrl PG model: logits sampled as the agent does."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        logits, _ = self.model(observation, None, None)
        return torch.multinomial(torch.softmax(logits, -1), 1).squeeze(-1)


def tdrl_loop(kind: str, args: argparse.Namespace) -> tuple[Callable[[], int], Callable[[], None]]:
    """A tdrl sampler's ``obtain_samples`` as a step function, and its shutdown."""
    from tdrl.agents import CategoricalPgAgent
    from tdrl.envs import make_gym_env
    from tdrl.samplers import CollectorSampler, SerialSampler

    agent = CategoricalPgAgent(model_kwargs={"hidden_sizes": (args.hidden, args.hidden)})
    shape = {"batch_T": args.batch_T, "batch_B": args.batch_B}
    if kind == "serial":
        sampler: SerialSampler | CollectorSampler = SerialSampler(
            make_gym_env, {"id": ENV_ID}, max_decorrelation_steps=0, **shape
        )
    elif kind == "collector":
        sampler = CollectorSampler(ENV_ID, **shape)
    else:
        sampler = CollectorSampler(ENV_ID, collector="multi_sync", n_workers=2, **shape)
    sampler.initialize(agent, seed=0)
    agent.sample_mode(0)
    itr = [0]

    def step() -> int:
        sampler.obtain_samples(itr[0])
        itr[0] += 1
        return args.batch_T * args.batch_B

    return step, sampler.shutdown


def torchrl_loop(args: argparse.Namespace) -> tuple[Callable[[], int], Callable[[], None]]:
    """TorchRL's ``Collector`` over a ``SerialEnv`` with the same model."""
    from tdrl._compat import Collector, GymEnv, SerialEnv
    from tdrl.models.pg import CategoricalPgMlpModel

    def make_env() -> SerialEnv:
        return SerialEnv(args.batch_B, lambda: GymEnv(ENV_ID, categorical_action_encoding=True))

    model = CategoricalPgMlpModel(4, 2, hidden_sizes=(args.hidden, args.hidden))
    policy = TensorDictModule(SampleAction(model), in_keys=["observation"], out_keys=["action"])
    collector = Collector(
        make_env,
        policy,
        frames_per_batch=args.batch_T * args.batch_B,
        total_frames=-1,
        auto_register_policy_transforms=False,
    )
    collector.set_seed(0)
    batches = iter(collector)

    def step() -> int:
        with torch.no_grad():
            return next(batches).numel()

    return step, collector.shutdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-B", type=int, default=8)
    parser.add_argument("--batch-T", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=32, help="MLP hidden units (2 layers)")
    parser.add_argument("--loops", nargs="+", choices=LOOPS, default=list(DEFAULT_LOOPS))
    args = parser.parse_args()

    loops: dict[str, tuple[Callable[[], int], Callable[[], None]]] = {}
    try:
        for name in args.loops:
            loops[name] = torchrl_loop(args) if name == "torchrl" else tdrl_loop(name, args)
            loops[name][0]()  # warm-up batch
        runs: dict[str, list[float]] = {name: [] for name in loops}
        order = list(loops)
        for r in range(args.repeats):
            for name in order[r % len(order) :] + order[: r % len(order)]:
                step = loops[name][0]
                steps, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < args.seconds:
                    steps += step()
                runs[name].append(steps / (time.perf_counter() - t0))
    finally:
        for _, shutdown in loops.values():
            shutdown()

    print(
        f"\n{ENV_ID}, batch_B={args.batch_B}, batch_T={args.batch_T}, MLP "
        f"{args.hidden}-{args.hidden}, torch threads 1, {os.cpu_count()} CPUs, "
        f"{args.repeats} x {args.seconds:g} s per loop\n"
    )
    serial = statistics.median(runs["serial"]) if "serial" in runs else None
    print("| loop | steps/s (median) | runs | vs serial |")
    print("|---|---:|---|---:|")
    for name, values in runs.items():
        median = statistics.median(values)
        ratio = f"{median / serial:.2f}x" if serial else "-"
        each = ", ".join(f"{v:,.0f}" for v in values)
        print(f"| {name} | {median:,.0f} | {each} | {ratio} |")


if __name__ == "__main__":
    main()
