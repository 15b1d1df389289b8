"""A vectorized env through tdrl's sampler, against the env's own stepping rate.

Issue 19's workload: ``tdrl.envs.VectorCartPole(N)`` (one TorchRL env of batch size
``[N]``) collected by ``SerialSampler(batch_B=N)`` with a ``CategoricalPgAgent`` on a small
MLP (tanh, tdrl's and rlpyt's default for policy-gradient MLPs, and ReLU: on the 2-core
test machine ``torch.tanh`` of a 4096 x 32 tensor took 334 us against ReLU's 13 us, so
the activation alone decides much of the rate), against the env alone stepped the way
the sampler steps it (TorchRL's ``step_and_maybe_reset`` with random actions drawn ahead
of time). Both run in this
process, interleaved, for ``--seconds`` each, ``--repeats`` times; the table gives the
median env steps per second and the ratio sampler / env. Targets (issue 19): at least
1M steps/s through the sampler and at least 0.8 of the env's own rate.

Run: ``python benchmarks/vector_sampler.py [--num-envs 1024 4096] [--threads 1 2]
[--batch-T 32] [--seconds 3] [--repeats 3] [--hidden 32] [--activations tanh relu]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tdrl.agents import CategoricalPgAgent
from tdrl.envs import VectorCartPole
from tdrl.samplers import SerialSampler

#: Issue 19's targets: steps/s through the sampler, and sampler / env.
TARGET_RATE, TARGET_RATIO = 1_000_000, 0.8


def env_rate(n: int, seconds: float) -> float:
    """Env steps/s of ``VectorCartPole(n)`` under ``step_and_maybe_reset``."""
    env = VectorCartPole(n, seed=0)
    td = env.reset()
    actions = torch.randint(0, 2, (64, n))
    steps, i, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        td.set("action", actions[i % 64])
        _, td = env.step_and_maybe_reset(td)
        steps, i = steps + n, i + 1
    return steps / (time.perf_counter() - start)


#: ``--activations`` choices: the MLP's hidden-layer activation.
ACTIVATIONS: dict[str, type[torch.nn.Module]] = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


def sampler_rate(
    n: int, batch_T: int, hidden: int, seconds: float, activation: str = "tanh"
) -> float:
    """Env steps/s of ``SerialSampler`` over ``VectorCartPole(n)`` with an MLP agent."""
    sampler = SerialSampler(
        VectorCartPole,
        {"num_envs": n},
        batch_T=batch_T,
        batch_B=n,
        max_decorrelation_steps=0,
    )
    agent = CategoricalPgAgent(
        model_kwargs={"hidden_sizes": (hidden, hidden), "nonlinearity": ACTIVATIONS[activation]}
    )
    sampler.initialize(agent, seed=0)
    sampler.obtain_samples(0)  # warm-up
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sampler.obtain_samples(0)
        steps += n * batch_T
    rate = steps / (time.perf_counter() - start)
    sampler.shutdown()
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-T", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=32, help="units of the 2 hidden layers")
    parser.add_argument(
        "--activations", nargs="+", choices=sorted(ACTIVATIONS), default=["tanh", "relu"]
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print("| N | torch threads | MLP activation | env alone (steps/s) | sampler (steps/s) "
          "| sampler / env |")  # fmt: skip
    print("|---:|---:|---|---:|---:|---:|")
    checks = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for n in args.num_envs:
            envs: list[float] = []
            samplers: dict[str, list[float]] = {a: [] for a in args.activations}
            for _ in range(args.repeats):
                envs.append(env_rate(n, args.seconds))
                for activation in args.activations:
                    samplers[activation].append(
                        sampler_rate(n, args.batch_T, args.hidden, args.seconds, activation)
                    )
            env = statistics.median(envs)
            for activation, rates in samplers.items():
                sampled = statistics.median(rates)
                print(
                    f"| {n} | {threads} | {activation} | {env:,.0f} | {sampled:,.0f} "
                    f"| {sampled / env:.2f} |"
                )
                checks.append((n, threads, activation, sampled, sampled / env))
    print()
    for n, threads, activation, sampled, ratio in checks:
        rate_ok = "PASS" if sampled >= TARGET_RATE else "FAIL"
        ratio_ok = "PASS" if ratio >= TARGET_RATIO else "FAIL"
        where = f"N={n}, {threads} thread(s), {activation}"
        print(f"{rate_ok}: {where}: {sampled:,.0f} steps/s (target ≥ 1M)")
        print(f"{ratio_ok}: {where}: sampler/env {ratio:.2f} (target ≥ 0.8)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
