"""Sampler throughput: env steps per second of tdrl's SerialSampler against a raw gymnasium
loop and TorchRL's default collector, with the same small MLP policy, in one run.

Loops (all step ``batch_B`` envs and run the policy once per time step on the batch):

* ``raw``: ``gymnasium.vector.SyncVectorEnv`` of ``batch_B`` ``gymnasium.make`` envs (same-step
  autoreset, so every counted step is a real transition), the tdrl default PG model called
  under ``torch.no_grad`` on the batch of observations, the action sampled in torch
  (clipped to the bounds for Box actions, as tdrl's sampler does) and handed over as NumPy.
* ``tdrl``: ``tdrl.samplers.SerialSampler(batch_T=128, batch_B)`` with ``CategoricalPgAgent``
  or ``GaussianPgAgent`` (which build the same default model); timed ``obtain_samples``.
  This is the gymnasium fast path (``env_fn`` returns the gymnasium env).
* ``tdrl-torchrl``: the same sampler and agent with ``env_fn`` returning TorchRL's
  ``GymEnv(env_id)`` (``categorical_action_encoding=True`` for discrete actions) behind a
  transform, ``RewardScaling(0, 1)``: the TorchRL env path (``tdrl.samplers.torchrl_loop``),
  ``batch_B`` envs of batch size ``[]`` each stepped through its own ``step``. (A bare
  ``GymEnv`` adds nothing to the gymnasium env inside, so the samplers unwrap it and take
  the fast path: the ``tdrl`` row.)
* ``torchrl``: ``torchrl.collectors.Collector`` over ``SerialEnv(batch_B, env)``, ``env``
  the same transformed ``GymEnv``, with a ``TensorDictModule`` policy around the same model,
  ``frames_per_batch=128 * batch_B``.
* ``torchrl-1env``: the same collector over a single ``GymEnv`` (TorchRL's default path).

Every loop is built and warmed up once per env (start-up is not timed); then each loop runs
for ``--seconds`` of wall time, the loops in interleaved (rotated) order, ``--repeats`` times.
The table reports the median steps per wall second (and each run) and per CPU second of
this process; a second table gives the cost of each shared piece per batched time step.

Run: ``python benchmarks/sampler_throughput.py [--envs CartPole-v1 HalfCheetah-v5]
[--seconds 2] [--repeats 3] [--batch-B 8] [--loops ...] [--strict]``. It exits 0 even when a
target check fails unless ``--strict`` is given (shared machines are noisy). Targets: tdrl
(gymnasium path) at least ``TARGETS`` of the raw loop and not slower than TorchRL's
collector; tdrl over the TorchRL ``GymEnv`` at least ``TORCHRL_ENV_TARGET`` times TorchRL's
collector over the same envs (``torchrl``: same ``batch_B``, same MLP).
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
from torch import nn

torch.set_num_threads(1)  # every loop runs the policy on one thread

BATCH_T = 128
LOOPS = ("raw", "tdrl", "tdrl-torchrl", "torchrl", "torchrl-1env")
# Minimum tdrl / raw ratio per env (DESIGN.md, "Performance").
TARGETS = {"HalfCheetah-v5": 0.7, "CartPole-v1": 0.5}
# tdrl must not be slower than TorchRL's collector over the same batch of envs.
TORCHRL_TARGET = 1.0
# tdrl stepping TorchRL's GymEnv (its TorchRL env path) / TorchRL's collector (issue 19).
TORCHRL_ENV_TARGET = 1.5


# ------------------------------------------------------------------------------- models
def action_space(env_id: str) -> gym.Space:
    env = gym.make(env_id)
    env.close()
    return env.action_space


def make_model(env: gym.Env) -> tuple[nn.Module, bool]:
    """tdrl's default PG model for ``env`` and whether its actions are discrete."""
    from tdrl.models.pg import CategoricalPgMlpModel, GaussianPgMlpModel

    obs_size = int(np.prod(env.observation_space.shape))
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        return CategoricalPgMlpModel(obs_size, int(space.n)), True
    return GaussianPgMlpModel(obs_size, int(np.prod(space.shape))), False


def sample_action(model: nn.Module, discrete: bool, obs: torch.Tensor) -> torch.Tensor:
    """One batched policy call: multinomial over softmax, or ``mu + randn * exp(log_std)``."""
    if discrete:
        logits, _ = model(obs, None, None)
        return torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(-1)
    mu, log_std, _ = model(obs, None, None)
    return mu + torch.randn_like(mu) * log_std.exp()


# -------------------------------------------------------------------------------- loops
class Loop:
    """A built, warmed-up loop; ``run(seconds)`` steps it for that long."""

    def run_unit(self) -> int:
        """Step once (a time step or a whole batch); return the env steps taken."""
        raise NotImplementedError

    def run(self, seconds: float) -> tuple[float, float]:
        """Steps for ``seconds`` of wall time; returns steps per wall second and steps per
        CPU second of this process (the latter is robust to other processes' load)."""
        steps = 0
        start, cpu_start = time.perf_counter(), time.process_time()
        while True:
            steps += self.run_unit()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                cpu = max(time.process_time() - cpu_start, 1e-9)
                return steps / elapsed, steps / cpu

    def close(self) -> None:
        pass


class RawLoop(Loop):
    def __init__(self, env_id: str, batch_B: int):
        self.envs = gym.vector.SyncVectorEnv(
            [lambda: gym.make(env_id) for _ in range(batch_B)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
        space = self.envs.single_action_space
        self.model, self.discrete = make_model(self.envs.envs[0])
        self.low = None if self.discrete else space.low
        self.high = None if self.discrete else space.high
        self.batch_B = batch_B
        self.obs, _ = self.envs.reset(seed=0)
        for _ in range(32):
            self.run_unit()

    @torch.no_grad()
    def run_unit(self) -> int:
        action = sample_action(self.model, self.discrete, torch.as_tensor(self.obs)).numpy()
        if self.low is not None:
            action = np.clip(action, self.low, self.high)  # as tdrl's sampler does
        self.obs, _, _, _, _ = self.envs.step(action)
        return self.batch_B

    def close(self) -> None:
        self.envs.close()


def torchrl_gym_env(id: str) -> object:  # noqa: A002 - gymnasium's name
    """TorchRL's ``GymEnv(id)`` behind ``RewardScaling(0, 1)``, discrete actions as integer
    indices (what tdrl's agents use). The transform keeps the env on tdrl's TorchRL path."""
    from torchrl.envs import GymEnv, RewardScaling, TransformedEnv

    discrete = isinstance(action_space(id), gym.spaces.Discrete)
    env = GymEnv(id, categorical_action_encoding=True) if discrete else GymEnv(id)
    return TransformedEnv(env, RewardScaling(0.0, 1.0))


class TdrlLoop(Loop):
    def __init__(self, env_id: str, batch_B: int, torchrl_env: bool = False):
        from tdrl.agents import CategoricalPgAgent, GaussianPgAgent
        from tdrl.envs import make_gym_env
        from tdrl.samplers import SerialSampler

        discrete = isinstance(action_space(env_id), gym.spaces.Discrete)
        agent = CategoricalPgAgent() if discrete else GaussianPgAgent()
        env_fn = torchrl_gym_env if torchrl_env else make_gym_env
        self.sampler = SerialSampler(env_fn, {"id": env_id}, batch_T=BATCH_T, batch_B=batch_B)
        self.sampler.initialize(agent, seed=0)
        self.itr = 0
        self.run_unit()  # warm-up

    def run_unit(self) -> int:
        samples, _ = self.sampler.obtain_samples(self.itr)
        self.itr += 1
        return samples.numel()

    def close(self) -> None:
        self.sampler.shutdown()


class _TorchRLPolicy(nn.Module):
    """observation -> action with the tdrl model; actions clamped to the env's bounds."""

    def __init__(self, model: nn.Module, discrete: bool, low: np.ndarray, high: np.ndarray):
        super().__init__()
        self.model, self.discrete = model, discrete
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        action = sample_action(self.model, self.discrete, observation)
        return action if self.discrete else torch.clamp(action, self.low, self.high)


class TorchRLLoop(Loop):
    def __init__(self, env_id: str, batch_B: int, serial: bool):
        from tensordict.nn import TensorDictModule
        from torchrl.collectors import Collector
        from torchrl.envs import GymEnv, RewardScaling, SerialEnv, TransformedEnv

        space = action_space(env_id)
        discrete = isinstance(space, gym.spaces.Discrete)
        kwargs = {"categorical_action_encoding": True} if discrete else {}

        def make_one() -> TransformedEnv:
            return TransformedEnv(GymEnv(env_id, **kwargs), RewardScaling(0.0, 1.0))

        env = SerialEnv(batch_B, make_one) if serial else make_one()
        env.set_seed(0)
        probe = gym.make(env_id)
        model, discrete = make_model(probe)
        probe.close()
        low, high = (0.0, 0.0) if discrete else (space.low, space.high)
        policy = TensorDictModule(
            _TorchRLPolicy(model, discrete, low, high), in_keys=["observation"], out_keys=["action"]
        )
        self.collector = Collector(
            env,
            policy,
            frames_per_batch=BATCH_T * batch_B,
            total_frames=-1,
            auto_register_policy_transforms=False,
        )
        self.iterator = iter(self.collector)
        self.run_unit()  # warm-up

    def run_unit(self) -> int:
        return next(self.iterator).numel()

    def close(self) -> None:
        self.collector.shutdown()


def build_loop(name: str, env_id: str, batch_B: int) -> Loop:
    if name == "raw":
        return RawLoop(env_id, batch_B)
    if name == "tdrl":
        return TdrlLoop(env_id, batch_B)
    if name == "tdrl-torchrl":
        return TdrlLoop(env_id, batch_B, torchrl_env=True)
    if name == "torchrl":
        return TorchRLLoop(env_id, batch_B, serial=True)
    if name == "torchrl-1env":
        return TorchRLLoop(env_id, batch_B, serial=False)
    raise ValueError(f"unknown loop {name!r}; choose from {LOOPS}")


# ------------------------------------------------------------------------ cost breakdown
def _us_per_call(fn: Callable[[], object], seconds: float) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    return elapsed / max(n, 1) * 1e6


def cost_breakdown(env_id: str, batch_B: int, seconds: float) -> dict[str, float]:
    """Microseconds per batched time step of each piece the loops share."""
    from tdrl.agents import CategoricalPgAgent, GaussianPgAgent
    from tdrl.envs.spaces import space_to_spec

    envs = [gym.make(env_id) for _ in range(batch_B)]
    for b, env in enumerate(envs):
        env.reset(seed=b)
        env.action_space.seed(b)
    actions = [env.action_space.sample() for env in envs]

    def step_envs() -> None:
        for env, action in zip(envs, actions, strict=True):
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()

    vec = gym.vector.SyncVectorEnv(
        [lambda: gym.make(env_id) for _ in range(batch_B)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    vec.reset(seed=0)
    vec_actions = np.stack(actions)
    model, discrete = make_model(envs[0])
    obs = torch.as_tensor(np.stack([env.observation_space.sample() for env in envs]))
    agent = CategoricalPgAgent() if discrete else GaussianPgAgent()
    action_spec = space_to_spec(envs[0].action_space)
    agent.initialize(space_to_spec(envs[0].observation_space), action_spec)
    agent.sample_mode(0)
    prev_action, prev_reward = action_spec.zeros((batch_B,)), torch.zeros(batch_B, 1)
    with torch.no_grad():
        costs = {
            f"{batch_B} × env.step": _us_per_call(step_envs, seconds),
            "SyncVectorEnv.step": _us_per_call(lambda: vec.step(vec_actions), seconds),
            "model + sample": _us_per_call(lambda: sample_action(model, discrete, obs), seconds),
            "tdrl agent.step": _us_per_call(
                lambda: agent.step(obs, prev_action, prev_reward), seconds
            ),
        }
    vec.close()
    for env in envs:
        env.close()
    return costs


# -------------------------------------------------------------------------- machine info
def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks over all CPUs from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


class OtherLoad:
    """Share of all CPUs used by other processes while the benchmark measured."""

    def __init__(self) -> None:
        self.busy = self.total = 0.0
        self.own = 0.0
        self._start: tuple[tuple[int, int], float] | None = None

    def __enter__(self) -> OtherLoad:
        ticks = _cpu_ticks()
        if ticks is not None:
            self._start = (ticks, time.process_time())
        return self

    def __exit__(self, *exc: object) -> None:
        ticks = _cpu_ticks()
        if ticks is None or self._start is None:
            return
        (busy0, total0), own0 = self._start
        hz = os.sysconf("SC_CLK_TCK")
        self.busy += (ticks[0] - busy0) / hz
        self.total += (ticks[1] - total0) / hz
        self.own += time.process_time() - own0

    @property
    def share(self) -> float | None:
        if self.total <= 0:
            return None
        return max(0.0, (self.busy - self.own) / self.total)


def machine_info() -> dict[str, str]:
    import mujoco
    import tensordict
    import torchrl

    cpu_model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": f"{os.cpu_count()} logical CPUs ({usable} usable), {cpu_model}",
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "versions": (
            f"torch {torch.__version__}, torchrl {torchrl.__version__}, "
            f"tensordict {tensordict.__version__}, gymnasium {gym.__version__}, "
            f"mujoco {mujoco.__version__}, numpy {np.__version__}"
        ),
    }


# ---------------------------------------------------------------------------------- main
def _fmt(x: float) -> str:
    return f"{x:,.0f}"


def benchmark_env(
    env_id: str, loops: list[str], batch_B: int, seconds: float, repeats: int, load: OtherLoad
) -> dict[str, list[tuple[float, float]]]:
    print(f"[{env_id}] building and warming up: {', '.join(loops)}", file=sys.stderr)
    built = {name: build_loop(name, env_id, batch_B) for name in loops}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in loops}
    try:
        for r in range(repeats):
            order = loops[r % len(loops) :] + loops[: r % len(loops)]
            for name in order:
                with load:
                    sps, cpu_sps = built[name].run(seconds)
                results[name].append((sps, cpu_sps))
                print(
                    f"[{env_id}] repeat {r + 1}: {name:13s} {_fmt(sps)} steps/s, "
                    f"{_fmt(cpu_sps)} steps/CPU-s",
                    file=sys.stderr,
                )
    finally:
        for loop in built.values():
            loop.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "HalfCheetah-v5"])
    parser.add_argument("--seconds", type=float, default=2.0, help="wall time per measured run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per loop (median reported)")
    parser.add_argument("--batch-B", type=int, default=8, help="envs stepped side by side")
    parser.add_argument("--loops", nargs="+", default=list(LOOPS), choices=LOOPS)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a check fails")
    args = parser.parse_args(argv)

    info = machine_info()
    load = OtherLoad()
    breakdowns = {}
    for env_id in args.envs:
        with load:
            breakdowns[env_id] = cost_breakdown(env_id, args.batch_B, min(1.0, args.seconds))
    all_results = {
        env_id: benchmark_env(env_id, args.loops, args.batch_B, args.seconds, args.repeats, load)
        for env_id in args.envs
    }

    print(f"# Sampler throughput, batch_B={args.batch_B}, batch_T={BATCH_T}\n")
    for key, value in info.items():
        print(f"- {key}: {value}")
    share = load.share
    if share is not None:
        print(f"- CPU used by other processes while measuring: {share:.0%} of all CPUs")
    print(f"- {args.seconds:g} s per run, {args.repeats} runs per loop, interleaved order\n")

    print(
        "| env | loop | steps/s (median) | runs | ratio vs raw "
        "| steps/CPU-s (median) | CPU ratio vs raw |"
    )
    print("|---|---|---:|---|---:|---:|---:|")
    medians: dict[tuple[str, str], float] = {}
    cpu_medians: dict[tuple[str, str], float] = {}
    for env_id, results in all_results.items():
        for name, runs in results.items():
            medians[env_id, name] = statistics.median(x for x, _ in runs)
            cpu_medians[env_id, name] = statistics.median(c for _, c in runs)
        raw, cpu_raw = medians.get((env_id, "raw")), cpu_medians.get((env_id, "raw"))
        for name, runs in results.items():
            med, cpu_med = medians[env_id, name], cpu_medians[env_id, name]
            ratio = f"{med / raw:.2f}×" if raw else "–"
            cpu_ratio = f"{cpu_med / cpu_raw:.2f}×" if cpu_raw else "–"
            runs_txt = " / ".join(_fmt(x) for x, _ in runs)
            print(
                f"| {env_id} | {name} | {_fmt(med)} | {runs_txt} | {ratio} "
                f"| {_fmt(cpu_med)} | {cpu_ratio} |"
            )

    print("\nMicroseconds per batched time step (one call on all envs; steps/s = B / time):\n")
    names = list(next(iter(breakdowns.values())))
    print("| env | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for env_id, costs in breakdowns.items():
        print(f"| {env_id} | " + " | ".join(f"{costs[n]:,.0f}" for n in names) + " |")

    print()
    checks: list[tuple[str, bool]] = []
    for env_id in all_results:
        tdrl = medians.get((env_id, "tdrl"))
        raw = medians.get((env_id, "raw"))
        trl = medians.get((env_id, "torchrl"))
        if tdrl and raw and env_id in TARGETS:
            ratio = tdrl / raw
            target = TARGETS[env_id]
            cpu_ratio = cpu_medians[env_id, "tdrl"] / cpu_medians[env_id, "raw"]
            checks.append(
                (
                    f"{env_id}: tdrl/raw = {ratio:.2f} (target ≥ {target}; per CPU-s "
                    f"{cpu_ratio:.2f})",
                    ratio >= target,
                )
            )
        tdrl_trl_env = medians.get((env_id, "tdrl-torchrl"))
        if tdrl_trl_env and trl:
            ratio = tdrl_trl_env / trl
            cpu_ratio = cpu_medians[env_id, "tdrl-torchrl"] / cpu_medians[env_id, "torchrl"]
            checks.append(
                (
                    f"{env_id}: tdrl-torchrl/torchrl = {ratio:.2f} (target ≥ "
                    f"{TORCHRL_ENV_TARGET}; per CPU-s {cpu_ratio:.2f})",
                    ratio >= TORCHRL_ENV_TARGET,
                )
            )
        if tdrl and trl:
            ratio = tdrl / trl
            cpu_ratio = cpu_medians[env_id, "tdrl"] / cpu_medians[env_id, "torchrl"]
            checks.append(
                (
                    f"{env_id}: tdrl/torchrl = {ratio:.2f} (target ≥ {TORCHRL_TARGET}; "
                    f"per CPU-s {cpu_ratio:.2f})",
                    ratio >= TORCHRL_TARGET,
                )
            )
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    return 1 if args.strict and not all(ok for _, ok in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
