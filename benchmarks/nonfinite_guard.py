"""What the non-finite guard costs: update and sampling time with the checks on and off.

The guard (``tdrl.utils.finite``) adds one stacked ``isfinite`` and one host read to every
gradient step (``clipped_step``) and one ``isfinite().all()`` per env key to every sampler
batch. This script times, on one CPU thread, the same work with the checks as shipped
("on") and with them replaced by no-ops ("off"):

* ``dqn update``: ``DQN.update`` on pre-drawn CartPole-v1 minibatches of 32 (MLP 64-64);
* ``sac update``: ``SAC.update`` on pre-drawn Pendulum-v1 minibatches of 256 (256-256);
* ``ppo optimize``: ``PPO.optimize_agent`` on one CartPole-v1 batch of 128 x 8 (4 epochs x
  4 minibatches: 16 gradient steps);
* ``serial batch``: ``SerialSampler.obtain_samples`` of 128 x 8 CartPole-v1 steps.

The two settings alternate in blocks of ``--seconds`` (each going first every other round),
``--rounds`` times per case; the table has the medians. Target (issue 20): under 2 % of
update time. Run: ``python benchmarks/nonfinite_guard.py [--rounds 20] [--seconds 0.2]``;
about 40 seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch

torch.set_num_threads(1)

from tdrl.agents import CategoricalPgAgent, DqnAgent, SacAgent  # noqa: E402
from tdrl.algos import DQN, PPO, SAC  # noqa: E402
from tdrl.keys import BatchSpec  # noqa: E402
from tdrl.samplers import SerialSampler  # noqa: E402
from tdrl.samplers import serial as serial_module  # noqa: E402
from tdrl.utils import optim as optim_module  # noqa: E402

TARGET = 0.02


@contextlib.contextmanager
def guard(on: bool) -> Iterator[None]:
    """The checks as shipped (``on``), or no-ops in their place."""
    step, batch = optim_module.check_finite_step, serial_module.check_env_batch
    if not on:
        optim_module.check_finite_step = lambda info, checked: None
        serial_module.check_env_batch = lambda samples: samples
    try:
        yield
    finally:
        optim_module.check_finite_step, serial_module.check_env_batch = step, batch


def _replay_case(env_id: str, algo, agent, n_draw: int) -> Callable[[], None]:
    sampler = SerialSampler(env_kwargs={"id": env_id}, batch_T=64, batch_B=4)
    sampler.initialize(agent, seed=0)
    algo.initialize(agent, n_itr=100, batch_spec=BatchSpec(64, 4))
    for itr in range(8):
        algo.replay_buffer.append_samples(sampler.obtain_samples(itr)[0])
    batches = [algo.replay_buffer.sample_batch(n_draw) for _ in range(16)]
    state = {"i": 0}

    def run() -> None:
        algo.update(batches[state["i"] % len(batches)])
        state["i"] += 1

    return run


def cases() -> dict[str, Callable[[], None]]:
    """The timed calls, built once."""
    dqn = DQN(min_steps_learn=0, batch_size=32)
    sac = SAC(min_steps_learn=0)
    out = {
        "dqn update": _replay_case("CartPole-v1", dqn, DqnAgent(), 32),
        "sac update": _replay_case("Pendulum-v1", sac, SacAgent(), 256),
    }
    sampler = SerialSampler(env_kwargs={"id": "CartPole-v1"}, batch_T=128, batch_B=8)
    agent = CategoricalPgAgent()
    sampler.initialize(agent, seed=0)
    ppo = PPO(minibatches=4, epochs=4)
    ppo.initialize(agent, n_itr=100, batch_spec=BatchSpec(128, 8))
    samples = sampler.obtain_samples(0)[0].clone()
    out["ppo optimize"] = lambda: ppo.optimize_agent(0, samples)
    out["serial batch"] = lambda: sampler.obtain_samples(0)
    return out


def timed(fn: Callable[[], None], seconds: float) -> float:
    """Mean seconds per call over at least ``seconds`` (and 3 calls)."""
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < seconds:
        fn()
        n += 1
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="on/off pairs per case")
    parser.add_argument("--seconds", type=float, default=0.2, help="per block of calls")
    args = parser.parse_args()
    calls = cases()
    print(f"torch {torch.__version__}, 1 thread, median of {args.rounds} interleaved blocks")
    print(f"{'what':<14} {'off (us)':>10} {'on (us)':>10} {'overhead':>9}")
    for name, fn in calls.items():
        timed(fn, 0.1)  # warm-up
        times: dict[bool, list[float]] = {True: [], False: []}
        for r in range(args.rounds):  # on and off alternate, each going first every other round
            for on in (True, False) if r % 2 else (False, True):
                with guard(on):
                    times[on].append(timed(fn, args.seconds))
        off, on = statistics.median(times[False]), statistics.median(times[True])
        print(f"{name:<14} {off * 1e6:>10.1f} {on * 1e6:>10.1f} {(on - off) / off:>8.1%}")
    print(f"target: overhead < {TARGET:.0%} (differences under ~1% are timing noise)")


if __name__ == "__main__":
    main()
