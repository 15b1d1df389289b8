"""Sampler scaling: env steps per second of tdrl's serial and parallel samplers with 1 and 2
workers, beside gymnasium's vector envs and TorchRL's multiprocess collector, in one run.

Every loop steps the same ``batch_B`` envs with the same policy, called once per time step
on the whole batch (or on each worker's slice, for ``CpuSampler``): tdrl's default agent
for the env (``CategoricalPgAgent`` for CartPole, ``GaussianPgAgent`` for HalfCheetah,
``DqnAgent`` with rlpyt's Atari conv net for Pong; 104x80x4 uint8 frames from tdrl's
``AtariEnv``), through ``agent.step``.

* ``gym-sync``: ``gymnasium.vector.SyncVectorEnv`` in this process (the raw loop).
* ``gym-async``: ``gymnasium.vector.AsyncVectorEnv`` (one process per env, shared memory).
* ``serial``: ``tdrl.samplers.SerialSampler``.
* ``cpu-N`` / ``gpu-N`` / ``alt-2``: ``CpuSampler`` / ``GpuSampler`` / ``AlternatingSampler``
  with N worker processes (on this CPU-only machine the "GPU" sampler's batched forward
  pass runs on the CPU).
* ``torchrl-2``: ``torchrl.collectors.MultiSyncCollector`` with 2 workers, each a
  ``SerialEnv`` of ``batch_B / 2`` TorchRL-wrapped envs (the same gymnasium envs through
  ``GymWrapper``), the same policy in a ``TensorDictModule``.

Start-up (process spawn, imports, env construction, first batch) is timed separately and
reported; then each loop runs for ``--seconds`` of wall time, ``--repeats`` times in
rotated order, and the table gives the median. Run ``python benchmarks/sampler_scaling.py
[--envs CartPole-v1 HalfCheetah-v5 pong] [--seconds 4] [--repeats 2] [--batch-B 8]
[--loops ...]``. Target (issue 5): the best tdrl sampler >= 0.8x ``gym-async`` on
HalfCheetah-v5 and Pong.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

torch.set_num_threads(1)

BATCH_T = 64
LOOPS = ("gym-sync", "gym-async", "serial", "cpu-1", "cpu-2", "gpu-1", "gpu-2", "alt-2",
         "torchrl-2")  # fmt: skip
TARGET = {"HalfCheetah-v5": 0.8, "pong": 0.8}  # best tdrl / gym-async


# ------------------------------------------------------------------------------ env + agent
def env_fn_kwargs(env_id: str) -> tuple[Any, dict[str, Any]]:
    from tdrl.envs import make_atari_env, make_gym_env

    if env_id == "pong":
        return make_atari_env, {"game": "pong"}
    return make_gym_env, {"id": env_id}


def make_env(env_id: str) -> gym.Env:
    from tdrl.envs import unwrap_gym_env

    fn, kwargs = env_fn_kwargs(env_id)
    return unwrap_gym_env(fn(**kwargs))


class _EnvFactory:
    """Picklable ``() -> env`` for gymnasium's and TorchRL's worker processes."""

    def __init__(self, env_id: str, torchrl: bool = False):
        self.env_id, self.torchrl = env_id, torchrl

    def __call__(self):
        env = make_env(self.env_id)
        if self.torchrl:
            from torchrl.envs import GymWrapper

            return GymWrapper(env, categorical_action_encoding=True)
        return env


def make_agent(env_id: str):
    from tdrl.agents import CategoricalPgAgent, GaussianPgAgent
    from tdrl.agents.dqn import DqnAgent

    if env_id == "pong":
        return DqnAgent()
    if env_id == "CartPole-v1":
        return CategoricalPgAgent()
    return GaussianPgAgent()


def initialized_agent(env_id: str):
    from tdrl.envs import space_to_spec

    env = make_env(env_id)
    agent = make_agent(env_id)
    agent.initialize(space_to_spec(env.observation_space), space_to_spec(env.action_space))
    agent.sample_mode(1_000_000)  # DQN: final epsilon
    env.close()
    return agent


# ------------------------------------------------------------------------------------ loops
class Loop:
    def run_unit(self) -> int:
        raise NotImplementedError

    def run(self, seconds: float) -> float:
        steps, start = 0, time.perf_counter()
        while True:
            steps += self.run_unit()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return steps / elapsed

    def close(self) -> None:
        pass


class GymLoop(Loop):
    def __init__(self, env_id: str, batch_B: int, asynchronous: bool):
        fns = [_EnvFactory(env_id) for _ in range(batch_B)]
        mode = gym.vector.AutoresetMode.SAME_STEP
        if asynchronous:
            self.envs = gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode, context="spawn")
        else:
            self.envs = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
        self.agent = initialized_agent(env_id)
        space = self.envs.single_action_space
        self.box = isinstance(space, gym.spaces.Box)
        self.low, self.high = (space.low, space.high) if self.box else (None, None)
        self.B = batch_B
        self.obs, _ = self.envs.reset(seed=0)
        self.prev_action = self.agent.action_spec.zeros((batch_B,))
        self.prev_reward = torch.zeros(batch_B, 1)
        self.run_unit()

    @torch.no_grad()
    def run_unit(self) -> int:
        action, _ = self.agent.step(torch.as_tensor(self.obs), self.prev_action, self.prev_reward)
        np_action = action.numpy()
        if self.box:
            np_action = np.clip(np_action, self.low, self.high)
        self.obs, reward, _, _, _ = self.envs.step(np_action)
        self.prev_action, self.prev_reward = action, torch.as_tensor(reward).float()[:, None]
        return self.B

    def close(self) -> None:
        self.envs.close()


class TdrlLoop(Loop):
    def __init__(self, env_id: str, batch_B: int, kind: str, n_workers: int):
        from tdrl.samplers import AlternatingSampler, CpuSampler, GpuSampler, SerialSampler

        cls = {
            "serial": SerialSampler,
            "cpu": CpuSampler,
            "gpu": GpuSampler,
            "alt": AlternatingSampler,
        }[kind]
        fn, kwargs = env_fn_kwargs(env_id)
        extra = {} if kind == "serial" else {"n_workers": n_workers}
        self.sampler = cls(fn, kwargs, batch_T=BATCH_T, batch_B=batch_B, **extra)
        self.agent = make_agent(env_id)
        self.sampler.initialize(self.agent, seed=0)
        self.agent.sample_mode(1_000_000)
        self.run_unit()

    def run_unit(self) -> int:
        samples, _ = self.sampler.obtain_samples(1_000_000)
        return samples.numel()

    def close(self) -> None:
        self.sampler.shutdown()


class _Policy(torch.nn.Module):
    def __init__(self, agent: Any):
        super().__init__()
        self.agent = agent

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        n = observation.shape[0]
        prev_action = self.agent.action_spec.zeros((n,))
        action, _ = self.agent.step(observation, prev_action, torch.zeros(n, 1))
        return action


class TorchRLLoop(Loop):
    def __init__(self, env_id: str, batch_B: int):
        from tensordict.nn import TensorDictModule
        from torchrl.collectors import MultiSyncCollector
        from torchrl.envs import SerialEnv

        per_worker = batch_B // 2
        factory = _EnvFactory(env_id, torchrl=True)
        policy = TensorDictModule(
            _Policy(initialized_agent(env_id)), in_keys=["observation"], out_keys=["action"]
        )
        self.collector = MultiSyncCollector(
            [_SerialFactory(per_worker, factory, SerialEnv)] * 2,
            policy,
            frames_per_batch=BATCH_T * batch_B,
            total_frames=-1,
            auto_register_policy_transforms=False,
        )
        self.iterator = iter(self.collector)
        self.run_unit()

    def run_unit(self) -> int:
        return next(self.iterator).numel()

    def close(self) -> None:
        self.collector.shutdown()
        # TorchRL 0.14.1: a weight-sync scheme left to its __del__ at interpreter exit starts
        # a queue thread there and hangs; shut the schemes down while threads can start.
        for scheme in (getattr(self.collector, "_weight_sync_schemes", None) or {}).values():
            scheme.shutdown()


class _SerialFactory:
    def __init__(self, n: int, factory: _EnvFactory, serial_cls: Any):
        self.n, self.factory, self.serial_cls = n, factory, serial_cls

    def __call__(self):
        return self.serial_cls(self.n, self.factory)


def build_loop(name: str, env_id: str, batch_B: int) -> Loop:
    if name == "gym-sync":
        return GymLoop(env_id, batch_B, asynchronous=False)
    if name == "gym-async":
        return GymLoop(env_id, batch_B, asynchronous=True)
    if name == "torchrl-2":
        return TorchRLLoop(env_id, batch_B)
    kind, _, n = name.partition("-")
    return TdrlLoop(env_id, batch_B, kind, int(n or 0))


# ------------------------------------------------------------------------------------- main
def benchmark_env(env_id: str, loops: list[str], args: argparse.Namespace) -> dict[str, Any]:
    built: dict[str, Loop] = {}
    startup: dict[str, float] = {}
    for name in loops:
        t0 = time.perf_counter()
        try:
            built[name] = build_loop(name, env_id, args.batch_B)
        except Exception as e:  # a peer that does not run here is reported, not fatal
            print(f"  {env_id} {name}: failed to build: {type(e).__name__}: {e}")
            continue
        startup[name] = time.perf_counter() - t0
    rates: dict[str, list[float]] = {n: [] for n in built}
    names = list(built)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            rates[name].append(built[name].run(args.seconds))
    for loop in built.values():
        loop.close()
    return {"rates": {n: statistics.median(v) for n, v in rates.items()}, "startup": startup}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "HalfCheetah-v5", "pong"])
    parser.add_argument("--loops", nargs="+", default=list(LOOPS), choices=LOOPS)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-B", type=int, default=8)
    args = parser.parse_args(argv)
    print(
        f"# sampler_scaling {datetime.datetime.now():%Y-%m-%d %H:%M} | "
        f"{platform.processor() or platform.machine()} | {os.cpu_count()} CPUs | torch "
        f"{torch.__version__} (1 thread per process) | batch_B={args.batch_B}, "
        f"batch_T={BATCH_T}, {args.repeats} x {args.seconds:g} s per loop"
    )
    results = {env_id: benchmark_env(env_id, args.loops, args) for env_id in args.envs}
    header = "| loop | " + " | ".join(results) + " |"
    print("\nsteps per second (median; start-up in parentheses, s)\n")
    print(header)
    print("|" + "---|" * (len(results) + 1))
    for name in args.loops:
        cells = []
        for res in results.values():
            if name in res["rates"]:
                cells.append(f"{res['rates'][name]:,.0f} ({res['startup'][name]:.1f})")
            else:
                cells.append("n/a")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    for env_id, res in results.items():
        rates = res["rates"]
        tdrl = {n: v for n, v in rates.items() if not n.startswith(("gym", "torchrl"))}
        if not tdrl or "gym-async" not in rates:
            continue
        best = max(tdrl, key=tdrl.get)
        ratio = tdrl[best] / rates["gym-async"]
        target = TARGET.get(env_id)
        verdict = "" if target is None else (" PASS" if ratio >= target else " FAIL")
        tail = f" (target >= {target})" if target else ""
        print(f"{env_id}: best tdrl = {best}, {ratio:.2f}x gym-async{tail}{verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
