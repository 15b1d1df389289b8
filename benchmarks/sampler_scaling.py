"""Sampler scaling: env steps per second of tdrl's serial and parallel samplers with any
number of workers, beside gymnasium's vector envs and TorchRL's multiprocess collector, in
one run, with the agent on the CPU or on a GPU.

Every loop steps the same ``batch_B`` envs with the same policy, called once per time step
on the whole batch (or on each worker's slice, for ``CpuSampler``): tdrl's default agent
for the env (``CategoricalPgAgent`` for CartPole, ``GaussianPgAgent`` for HalfCheetah,
``DqnAgent`` with rlpyt's Atari conv net for Pong; 104x80x4 uint8 frames from tdrl's
``AtariEnv``), through ``agent.step``. With ``--device cuda`` the agent is placed on the
GPU after the sampler built it (as the runners do): ``SerialSampler``, ``GpuSampler`` and
``AlternatingSampler`` then act with one batched forward pass on the GPU per time step
(rlpyt's action server); ``CpuSampler``'s workers act with a CPU copy refreshed from it
before each batch; the gymnasium loops copy observations to the GPU and actions back.

* ``gym-sync``: ``gymnasium.vector.SyncVectorEnv`` in this process (the raw loop).
* ``gym-async``: ``gymnasium.vector.AsyncVectorEnv`` (one process per env, shared memory).
* ``serial``: ``tdrl.samplers.SerialSampler``.
* ``cpu-N`` / ``gpu-N`` / ``alt-N``: ``CpuSampler`` / ``GpuSampler`` / ``AlternatingSampler``
  with N worker processes (on a CPU-only machine the "GPU" sampler's batched forward pass
  runs on the CPU). A bare ``cpu``, ``gpu`` or ``alt`` in ``--loops`` stands for one loop
  per ``--workers`` count.
* ``torchrl-2``: ``torchrl.collectors.MultiSyncCollector`` with 2 workers, each a
  ``SerialEnv`` of ``batch_B / 2`` TorchRL-wrapped envs (the same gymnasium envs through
  ``GymWrapper``), the same policy (on the CPU) in a ``TensorDictModule``.

Start-up (process spawn, imports, env construction, first batch) is timed separately and
printed as soon as a loop is built; then each loop runs for ``--seconds`` of wall time,
``--repeats`` times in rotated order, each run's rate printed the moment it is measured,
and the table gives the median. ``--budget-s`` bounds the whole script (no loop is built
or run that would end past it). Run ``python benchmarks/sampler_scaling.py [--envs
CartPole-v1 HalfCheetah-v5 pong] [--seconds 4] [--repeats 2] [--batch-B 8] [--workers 1 2]
[--device cpu|cuda] [--loops ...] [--budget-s S]``. Targets: the best tdrl sampler >= 0.8x
``gym-async`` on HalfCheetah-v5 and Pong (issue 5); with ``--device cuda``, ``GpuSampler``
with the agent on the GPU beats ``CpuSampler`` with the most workers measured on Pong
(issue 11: 32 envs, 16 workers: ``--envs pong --batch-B 32 --workers 15 16 --device
cuda``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import sys
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

torch.set_num_threads(1)

CPU = torch.device("cpu")
BATCH_T = 64
LOOPS = ("gym-sync", "gym-async", "serial", "cpu", "gpu", "alt-2", "torchrl-2")
FIXED_LOOPS = ("gym-sync", "gym-async", "serial", "torchrl-2")
WORKER_LOOP = re.compile(r"(cpu|gpu|alt)(-[1-9][0-9]*)?")
TARGET = {"HalfCheetah-v5": 0.8, "pong": 0.8}  # best tdrl / gym-async
#: Issue 11, with the agent on a GPU: GpuSampler / CpuSampler (most workers) on Pong.
GPU_TARGET = {"pong": 1.0}


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


def initialized_agent(env_id: str, device: torch.device = CPU):
    from tdrl.envs import space_to_spec

    env = make_env(env_id)
    agent = make_agent(env_id)
    agent.initialize(space_to_spec(env.observation_space), space_to_spec(env.action_space))
    agent.to(device)
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
    def __init__(self, env_id: str, batch_B: int, asynchronous: bool, device: torch.device):
        fns = [_EnvFactory(env_id) for _ in range(batch_B)]
        mode = gym.vector.AutoresetMode.SAME_STEP
        if asynchronous:
            self.envs = gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode, context="spawn")
        else:
            self.envs = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
        self.agent = initialized_agent(env_id, device)
        self.device = device
        space = self.envs.single_action_space
        self.box = isinstance(space, gym.spaces.Box)
        self.low, self.high = (space.low, space.high) if self.box else (None, None)
        self.B = batch_B
        self.obs, _ = self.envs.reset(seed=0)
        self.prev_action = self.agent.action_spec.zeros((batch_B,)).to(device)
        self.prev_reward = torch.zeros(batch_B, 1, device=device)
        self.run_unit()

    @torch.no_grad()
    def run_unit(self) -> int:
        obs = torch.as_tensor(self.obs).to(self.device)
        action, _ = self.agent.step(obs, self.prev_action, self.prev_reward)
        np_action = action.cpu().numpy()
        if self.box:
            np_action = np.clip(np_action, self.low, self.high)
        self.obs, reward, _, _, _ = self.envs.step(np_action)
        reward = torch.as_tensor(reward).float()[:, None].to(self.device)
        self.prev_action, self.prev_reward = action, reward
        return self.B

    def close(self) -> None:
        self.envs.close()


class TdrlLoop(Loop):
    def __init__(self, env_id: str, batch_B: int, kind: str, n_workers: int, device: torch.device):
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
        self.agent.to(device)  # where the runners place it: after the sampler built it
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


def build_loop(name: str, env_id: str, batch_B: int, device: torch.device) -> Loop:
    if name == "gym-sync":
        return GymLoop(env_id, batch_B, asynchronous=False, device=device)
    if name == "gym-async":
        return GymLoop(env_id, batch_B, asynchronous=True, device=device)
    if name == "torchrl-2":
        return TorchRLLoop(env_id, batch_B)
    kind, _, n = name.partition("-")
    return TdrlLoop(env_id, batch_B, kind, int(n or 0), device)


def expand_loops(loops: list[str], workers: list[int]) -> list[str]:
    """Loop names, a bare ``cpu``/``gpu``/``alt`` repeated per worker count (in order)."""
    names: list[str] = []
    for loop in loops:
        match = WORKER_LOOP.fullmatch(loop)
        if loop in FIXED_LOOPS or (match and match.group(2)):
            new = [loop]
        elif match:
            new = [f"{loop}-{n}" for n in workers]
        else:
            raise SystemExit(
                f"--loops: unknown loop {loop!r}; one of {', '.join(FIXED_LOOPS)}, "
                "cpu, gpu, alt or cpu-N, gpu-N, alt-N"
            )
        names += [n for n in new if n not in names]
    return names


# ------------------------------------------------------------------------------------- main
def startup_guess(name: str, batch_B: int, seen: dict[str, float]) -> float:
    """Seconds the loop ``name`` will take to start: the longest start-up seen of its kind,
    or a prior (spawned processes import torch: 2-4 s here, 11-15 s for 16 at once on a
    16-core machine; ``AsyncVectorEnv`` spawns one process per env)."""
    kind, _, n = name.partition("-")
    same = [v for k, v in seen.items() if k.partition("-")[0] == kind]
    if kind in ("cpu", "gpu", "alt"):
        prior = 2.0 + 0.7 * int(n)
    elif name == "gym-async":
        prior = 1.0 + 0.8 * batch_B
    elif name == "torchrl-2":
        prior = 5.0
    else:
        prior = 1.0
    return max([prior, *same])


def benchmark_env(
    env_id: str, loops: list[str], args: argparse.Namespace, device: torch.device, deadline: float
) -> dict[str, Any]:
    built: dict[str, Loop] = {}
    startup: dict[str, float] = {}
    problems: dict[str, str] = {}
    for name in loops:
        # Build only what can start and then run, with every loop built before it, in time.
        need = startup_guess(name, args.batch_B, startup)
        need += (args.seconds + 0.5) * args.repeats * (len(built) + 1)
        if time.perf_counter() + need > deadline:
            problems[name] = "skipped: budget spent"
            print(f"  {env_id} {name}: {problems[name]}", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            built[name] = build_loop(name, env_id, args.batch_B, device)
        except Exception as e:  # a peer that does not run here is reported, not fatal
            problems[name] = f"failed to build: {type(e).__name__}: {e}"
            print(f"  {env_id} {name}: {problems[name]}", flush=True)
            continue
        startup[name] = time.perf_counter() - t0
        print(f"  {env_id} {name}: built in {startup[name]:.1f} s", flush=True)
    rates: dict[str, list[float]] = {n: [] for n in built}
    names = list(built)
    try:
        for r in range(args.repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                if time.perf_counter() + args.seconds + 1 > deadline:
                    print(f"  {env_id} {name}: budget spent before run {r + 1}", flush=True)
                    continue
                try:
                    rate = built[name].run(args.seconds)
                except Exception as e:
                    problems[name] = f"failed while running: {type(e).__name__}: {e}"
                    print(f"  {env_id} {name}: {problems[name]}", flush=True)
                    continue
                rates[name].append(rate)
                print(f"  run {r + 1}/{args.repeats} {env_id} {name}: {rate:,.0f} steps/s",
                      flush=True)  # fmt: skip
    finally:
        for loop in built.values():
            loop.close()
    return {
        "rates": {n: statistics.median(v) for n, v in rates.items() if v},
        "startup": startup,
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "HalfCheetah-v5", "pong"])
    parser.add_argument("--loops", nargs="+", default=list(LOOPS), help=", ".join(LOOPS))
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2],
                        help="worker counts of the bare cpu/gpu/alt loops")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="where the agent acts: cpu, cuda, cuda:N")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-B", type=int, default=8)
    parser.add_argument("--budget-s", type=float, default=None, help="wall-time budget")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    loops = expand_loops(args.loops, args.workers)
    deadline = time.perf_counter() + (args.budget_s if args.budget_s else float("inf"))
    gpu = ""
    if device.type == "cuda":
        gpu = f", CUDA {torch.version.cuda}, {torch.cuda.get_device_name(device)}"
    print(
        f"# sampler_scaling {datetime.datetime.now():%Y-%m-%d %H:%M} | "
        f"{platform.processor() or platform.machine()} | {os.cpu_count()} CPUs | torch "
        f"{torch.__version__}{gpu} (1 thread per process) | agent on {device} | "
        f"batch_B={args.batch_B}, batch_T={BATCH_T}, {args.repeats} x {args.seconds:g} s per "
        f"loop | loops {' '.join(loops)}",
        flush=True,
    )
    results = {env_id: benchmark_env(env_id, loops, args, device, deadline) for env_id in args.envs}
    header = "| loop | " + " | ".join(results) + " |"
    print(f"\nsteps per second, agent on {device} (median; start-up in parentheses, s)\n")
    print(header)
    print("|" + "---|" * (len(results) + 1))
    for name in loops:
        cells = []
        for res in results.values():
            if name in res["rates"]:
                cells.append(f"{res['rates'][name]:,.0f} ({res['startup'][name]:.1f})")
            else:
                cells.append(res["problems"].get(name, "n/a"))
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    for env_id, res in results.items():
        rates = res["rates"]
        tdrl = {n: v for n, v in rates.items() if not n.startswith(("gym", "torchrl"))}
        if tdrl and "gym-async" in rates:
            best = max(tdrl, key=tdrl.__getitem__)
            ratio = tdrl[best] / rates["gym-async"]
            target = TARGET.get(env_id)
            verdict = "" if target is None else (" -> PASS" if ratio >= target else " -> FAIL")
            tail = f" (target >= {target})" if target else ""
            print(f"{env_id}: best tdrl = {best}, {ratio:.2f}x gym-async{tail}{verdict}")
        if device.type == "cuda" and env_id in GPU_TARGET:
            gpu_target(env_id, rates)
    broken = [
        n
        for res in results.values()
        for n, why in res["problems"].items()
        if not n.startswith(("gym", "torchrl")) and not why.startswith("skipped")
    ]
    if broken:
        print(f"tdrl loops that did not run: {', '.join(sorted(set(broken)))}")
    sys.stdout.flush()
    return 1 if broken else 0


def gpu_target(env_id: str, rates: dict[str, float]) -> None:
    """Issue 11: the action server with a GPU agent against ``CpuSampler`` (most workers)."""
    gpus = {n: v for n, v in rates.items() if n.startswith("gpu-")}
    cpus = {n: v for n, v in rates.items() if n.startswith("cpu-")}
    if not gpus or not cpus:
        print(f"Target {env_id}: GpuSampler (agent on the GPU) > CpuSampler: not measured -> FAIL")
        return
    best = max(gpus, key=gpus.__getitem__)
    most = max(cpus, key=lambda n: int(n.split("-")[1]))
    ratio = gpus[best] / cpus[most]
    verdict = "PASS" if ratio > GPU_TARGET[env_id] else "FAIL"
    print(
        f"Target {env_id}: GpuSampler with the agent on the GPU ({best}, {gpus[best]:,.0f} "
        f"steps/s) > CpuSampler ({most}, {cpus[most]:,.0f}): {ratio:.2f}x -> {verdict}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
