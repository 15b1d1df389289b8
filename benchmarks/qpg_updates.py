"""Off-policy update rate: gradient updates per second of SAC/TD3 at HalfCheetah-v5 shapes.

Every implementation trains the same sizes (observation 17, action 6, batch 256, 256-256
MLPs for the actor and each of two critics) from a replay buffer holding the same ~10k
*real* HalfCheetah-v5 transitions (10 episodes of 1,000 steps, uniform random actions,
collected once with gymnasium), on one device (``--device cpu|cuda``). One timed "update"
includes drawing the batch from that implementation's own replay buffer and moving it to
the device.

* ``tdrl-sac``: ``tdrl.agents.qpg.SacAgent()`` + ``tdrl.algos.qpg.SAC(min_steps_learn=0)``,
  the agent placed on the device before ``algo.initialize`` (as the runners do); timed
  ``algo.optimize_agent(itr, None)``, the runners' path: ``--chunk`` replayed updates per
  call (draw from the CPU buffer, move to the device, update) and one diagnostics
  synchronisation per call.
* ``tdrl-sac-compiled``: the same with ``SAC(compile=True)`` (the opt-in compiled update).
* ``...-devreplay``: the same with ``replay_device=<device>`` (storage, n-step arrays and
  index sampling on the device); on the CPU it is the default buffer.
* ``tdrl-td3`` (``-compiled``, ``-devreplay``): ``Td3Agent`` (256-256 actor and critics
  instead of rlpyt's 400-300) + ``TD3(min_steps_learn=0, batch_size=256,
  policy_update_interval=2)``; one update is one critic update (actor and targets every
  2nd).
* ``sb3-sac`` / ``sb3-td3``: Stable-Baselines3 on the same device, ``net_arch=[256, 256]``
  (TD3's default would be 400-300), buffer filled with ``replay_buffer.add`` (SB3 keeps it
  in NumPy and copies each batch to the device), timed ``model.train(gradient_steps=N,
  batch_size=256)``; TD3 counts critic updates (``policy_delay=2``).
* ``torchrl-sac``: ``torchrl.objectives.SACLoss`` (``ProbabilisticActor`` + ``TanhNormal``,
  ``ValueOperator`` Q with ``num_qvalue_nets=2``), ``SoftUpdate(tau=0.005)``, one Adam per
  loss-term group, batches from ``ReplayBuffer(storage=LazyTensorStorage(...,
  device=<device>))`` (TorchRL's own scripts keep the storage on the training device);
  timed sample + loss + backward + steps + target update, eager.

Each implementation is built and warmed up once (``--warmup`` updates; this is where a
compiled update compiles, and its time is printed); then every repeat runs each
implementation for at least ``--updates`` updates and ``--seconds`` seconds, in rotated
(interleaved) order; the device is synchronised before the clock stops. Every run's rate is
printed the moment it is measured, the table (median over repeats) at the end.
``--budget-s`` bounds the whole script: builds get at most ``--build-timeout-s`` each (a
compile that takes longer is cut off and its row says so), and no run starts that would
end past the budget. Exit status 1 when a tdrl implementation failed to build or run (a
peer that does not run is reported, not fatal), and with ``--strict`` when a target is
missed.

Targets: on the CPU tdrl SAC (eager) >= 2x SB3 SAC; on CUDA tdrl SAC compiled >= 10x SB3
SAC and tdrl SAC eager >= 1.5x (issue 11). Run: ``python benchmarks/qpg_updates.py
[--device cpu|cuda] [--updates 300] [--seconds 0] [--repeats 3] [--warmup 30]
[--budget-s S] [--impls ...]``; about 1.5-2 minutes on the CPU with the defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

torch.set_num_threads(1)

ENV_ID = "HalfCheetah-v5"
BATCH = 256
HIDDEN = [256, 256]
N_EPISODES = 10  # x 1000 steps = 10k transitions
CPU_TARGET = 2.0  # earlier issue: tdrl SAC >= 2x SB3 SAC's update rate on the CPU
CUDA_TARGETS = {"compiled": 10.0, "eager": 1.5}  # issue 11, on one GPU
CPU_IMPLS = ("tdrl-sac", "tdrl-td3", "sb3-sac", "sb3-td3", "torchrl-sac")
CUDA_IMPLS = (
    "tdrl-sac",
    "tdrl-sac-devreplay",
    "tdrl-sac-compiled",
    "tdrl-sac-compiled-devreplay",
    "tdrl-td3",
    "tdrl-td3-compiled",
    "sb3-sac",
    "sb3-td3",
    "torchrl-sac",
)
IMPLS = (*CUDA_IMPLS, "tdrl-td3-devreplay", "tdrl-td3-compiled-devreplay")

#: A step runs one chunk of updates and returns how many it made.
Step = Callable[[], int]


# --------------------------------------------------------------------- shared machinery
# (benchmarks/dqn_updates.py imports these.)
class OverBudgetError(Exception):
    """A build or a run went past its share of the budget."""


class Budget:
    """The script's wall-time budget (None: unlimited), from its start."""

    def __init__(self, seconds: float | None):
        self.t0 = time.perf_counter()
        self.total = seconds

    def left(self) -> float:
        if self.total is None:
            return math.inf
        return self.total - (time.perf_counter() - self.t0)

    @contextlib.contextmanager
    def limit(self, seconds: float) -> Iterator[None]:
        """Raise ``OverBudgetError`` in this (main) thread after ``seconds`` (inf: no limit)."""
        if math.isinf(seconds):
            yield
            return

        def expire(signum: int, frame: Any) -> None:
            raise OverBudgetError(f"cut off after {seconds:.0f} s")

        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_device(device: torch.device) -> str:
    """One line: torch, CUDA and GPU versions, or the CPU."""
    text = f"torch {torch.__version__}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        text += (
            f", CUDA {torch.version.cuda}, {props.name} "
            f"({props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor})"
        )
    else:
        text += f", CPU {platform.processor() or platform.machine()}"
    return text


def header(script: str, device: torch.device, extra: str) -> None:
    print(
        f"# {script} {datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.node()}, "
        f"{os.cpu_count()} CPUs, {describe_device(device)}, 1 torch thread; {extra}",
        flush=True,
    )


def short_error(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def measure(
    names: Sequence[str],
    build: Callable[[str], Step],
    args: argparse.Namespace,
    device: torch.device,
    budget: Budget,
    *,
    unit: str = "updates/s",
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Build and warm up each implementation, then run them interleaved.

    Returns:
        ``(rates, problems)``: each built implementation's rates (one per run), and for
        each one that was skipped, failed or timed out, why.
    """
    steps: dict[str, Step] = {}
    problems: dict[str, str] = {}
    # Time kept for the timed runs of everything (a build may not eat into it).
    reserve = args.repeats * (max(args.seconds, 0.5) + 0.5) * len(names)
    for name in names:
        if budget.left() - reserve < 5:
            problems[name] = "skipped: budget spent"
            print(f"# {name}: {problems[name]}", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            with budget.limit(min(args.build_timeout_s, budget.left() - reserve)):
                step = build(name)
                torch.manual_seed(0)
                done = 0
                while done < args.warmup:
                    done += step()
                sync(device)
        except OverBudgetError as exc:
            problems[name] = f"timed out building/warming up ({exc})"
        except Exception as exc:  # a peer (or an API) that does not run here is reported
            problems[name] = f"failed to build: {short_error(exc)}"
            if name.startswith("tdrl") and not isinstance(exc, NotImplementedError):
                traceback.print_exc(limit=-8, file=sys.stdout)
        else:
            steps[name] = step
            print(
                f"# built {name} in {time.perf_counter() - t0:.1f} s "
                f"(incl. {args.warmup} warm-up updates)",
                flush=True,
            )
            continue
        print(f"# {name}: {problems[name]}", flush=True)

    rates: dict[str, list[float]] = {name: [] for name in steps}
    last: dict[str, float] = {}
    live = list(steps)
    for r in range(args.repeats):
        order = live[r % len(live) :] + live[: r % len(live)] if live else []
        for name in order:
            if name not in live:
                continue
            expected = max(last.get(name, args.seconds), args.seconds, 0.5)
            if budget.left() < expected + 1:
                print(f"# budget spent: stopped before repeat {r + 1} of {name}", flush=True)
                continue
            try:
                with budget.limit(budget.left()):
                    done, seconds = timed_run(steps[name], args, device, budget)
            except Exception as exc:
                problems[name] = f"failed while running: {short_error(exc)}"
                print(f"# {name}: {problems[name]}", flush=True)
                if name.startswith("tdrl") and not isinstance(exc, OverBudgetError):
                    traceback.print_exc(limit=-8, file=sys.stdout)
                live.remove(name)
                continue
            last[name] = seconds
            rates[name].append(done / seconds)
            print(
                f"  run {r + 1}/{args.repeats} {name}: {done / seconds:,.1f} {unit} "
                f"({done} in {seconds:.2f} s)",
                flush=True,
            )
    return {n: v for n, v in rates.items() if v}, problems


def timed_run(
    step: Step, args: argparse.Namespace, device: torch.device, budget: Budget
) -> tuple[int, float]:
    """At least ``args.updates`` updates and ``args.seconds`` seconds (or until the budget
    ends); the device is synchronised before the clock starts and before it stops."""
    sync(device)
    start = time.perf_counter()
    done = 0
    while True:
        done += step()
        elapsed = time.perf_counter() - start
        if (done >= args.updates and elapsed >= args.seconds) or budget.left() < 1:
            break
    sync(device)
    return done, time.perf_counter() - start


def print_table(
    names: Sequence[str],
    rates: dict[str, list[float]],
    problems: dict[str, str],
    ref: str,
    *,
    unit: str = "updates/s",
) -> dict[str, float]:
    """The markdown table of median rates; returns the medians."""
    median = {n: statistics.median(v) for n, v in rates.items()}
    base = median.get(ref)
    print(f"\n| impl | {unit} (median) | ms/update | runs ({unit}) | ratio vs {ref} |")
    print("|---|---:|---:|---|---:|")
    for name in names:
        if name not in median:
            why = problems.get(name, "not measured")
            print(f"| {name} | n/a | n/a | {why} | n/a |")
            continue
        runs = ", ".join(f"{x:,.1f}" for x in rates[name])
        ratio = f"{median[name] / base:.2f}x" if base else "n/a"
        print(f"| {name} | {median[name]:,.1f} | {1e3 / median[name]:.2f} | {runs} | {ratio} |")
    return median


def check_target(label: str, value: float | None, ref: float | None, target: float) -> bool:
    """Print one target line (``Target ...: 3.2x -> PASS``); False when missed or unmeasured."""
    if value is None or ref is None:
        print(f"Target {label} >= {target:g}x: not measured -> FAIL", flush=True)
        return False
    ratio = value / ref
    verdict = "PASS" if ratio >= target else "FAIL"
    print(f"Target {label} >= {target:g}x: {ratio:.2f}x -> {verdict}", flush=True)
    return ratio >= target


def add_common_args(parser: argparse.ArgumentParser, *, updates: int, warmup: int) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--updates", type=int, default=updates, help="minimum updates per timed run"
    )
    parser.add_argument("--seconds", type=float, default=0.0, help="minimum seconds per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=warmup, help="updates before timing")
    parser.add_argument(
        "--budget-s", type=float, default=None, help="wall-time budget of the whole script"
    )
    parser.add_argument(
        "--build-timeout-s",
        type=float,
        default=300.0,
        help="longest build + warm-up (compile) of one implementation",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")


def pick_device(text: str) -> torch.device:
    device = torch.device(text)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {text}: torch {torch.__version__} sees no CUDA device")
    return device


def flags(name: str) -> tuple[str, str, dict[str, bool]]:
    """``tdrl-sac-compiled-devreplay`` -> ``("tdrl", "sac", {"compiled": True, ...})``."""
    lib, kind, *rest = name.split("-")
    return lib, kind, {"compiled": "compiled" in rest, "devreplay": "devreplay" in rest}


def tdrl_algo_kwargs(opts: dict[str, bool], device: torch.device) -> dict[str, Any]:
    """The issue-11 arguments a tdrl variant adds (``compile``, ``replay_device``)."""
    kwargs: dict[str, Any] = {}
    if opts["compiled"]:
        kwargs["compile"] = True
    if opts["devreplay"]:
        kwargs["replay_device"] = str(device)
    return kwargs


# ------------------------------------------------------------------------------- data
def collect(seed: int = 0) -> dict[str, np.ndarray]:
    """``N_EPISODES`` random-action episodes as ``[T, B]`` arrays (column b = episode b)."""
    import gymnasium as gym

    env = gym.make(ENV_ID)
    env.action_space.seed(seed)
    cols: list[dict[str, np.ndarray]] = []
    for ep in range(N_EPISODES):
        obs, _ = env.reset(seed=seed + ep)
        rows: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "next_obs", "term", "trunc")}
        done = False
        while not done:
            act = env.action_space.sample()
            nobs, rew, term, trunc, _ = env.step(act)
            for k, v in zip(rows, (obs, act, rew, nobs, term, trunc), strict=True):
                rows[k].append(v)
            obs, done = nobs, term or trunc
        cols.append({k: np.asarray(v) for k, v in rows.items()})
    env.close()
    T = min(len(c["rew"]) for c in cols)
    data = {k: np.stack([c[k][:T] for c in cols], axis=1) for k in cols[0]}
    data["trunc"][-1] |= ~data["term"][-1]  # the buffer ends every column
    return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in data.items()}


def flat(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Episode-major ``[T * B, ...]`` view for the flat buffers."""
    return {
        k: np.ascontiguousarray(v.swapaxes(0, 1)).reshape(-1, *v.shape[2:]) for k, v in data.items()
    }


# ------------------------------------------------------------------------------- tdrl
def sampler_td(data: dict[str, np.ndarray]) -> TensorDict:
    """The data as a ``[T, B]`` sampler batch (tdrl's ``build_samples_buffer`` keys)."""
    act = torch.from_numpy(data["act"])
    rew = torch.from_numpy(data["rew"]).unsqueeze(-1)
    term = torch.from_numpy(data["term"]).unsqueeze(-1)
    trunc = torch.from_numpy(data["trunc"]).unsqueeze(-1)
    prev_act = torch.cat([torch.zeros_like(act[:1]), act[:-1]])
    prev_rew = torch.cat([torch.zeros_like(rew[:1]), rew[:-1]])
    T, B = act.shape[:2]
    td = TensorDict(
        {
            "observation": torch.from_numpy(data["obs"]),
            "prev_action": prev_act,
            "prev_reward": prev_rew,
            "action": act,
            "next": TensorDict(
                {
                    "observation": torch.from_numpy(data["next_obs"]),
                    "reward": rew,
                    "done": term | trunc,
                    "terminated": term,
                    "truncated": trunc,
                },
                batch_size=(T, B),
            ),
        },
        batch_size=(T, B),
    )
    td.names = ["time", None]
    return td


def make_tdrl(
    kind: str, opts: dict[str, bool], data: dict[str, np.ndarray], device: torch.device, chunk: int
) -> Step:
    import gymnasium as gym

    from tdrl.envs import space_to_spec
    from tdrl.samplers import BatchSpec

    env = gym.make(ENV_ID)
    spec_o = space_to_spec(env.observation_space)
    spec_a = space_to_spec(env.action_space)
    env.close()
    td = sampler_td(data)
    batch_spec = BatchSpec(*td.batch_size)
    # optimize_agent(itr, None) then makes exactly `chunk` updates per call.
    ratio = {"replay_ratio": chunk * BATCH / batch_spec.size, "min_steps_learn": 0}
    extra = tdrl_algo_kwargs(opts, device)
    if kind == "sac":
        from tdrl.agents.qpg import SacAgent
        from tdrl.algos.qpg import SAC

        agent, algo = SacAgent(), SAC(batch_size=BATCH, **ratio, **extra)
    else:
        from tdrl.agents.qpg import Td3Agent
        from tdrl.algos.qpg import TD3

        nets = {"hidden_sizes": tuple(HIDDEN)}  # Td3Agent's default is rlpyt's 400-300
        agent = Td3Agent(model_kwargs=nets, q_model_kwargs=nets)
        algo = TD3(batch_size=BATCH, policy_update_interval=2, **ratio, **extra)
    agent.initialize(spec_o, spec_a)
    agent.to(device)  # where the runners place it: before algo.initialize
    algo.initialize(agent, n_itr=1, batch_spec=batch_spec)
    algo.replay_buffer.append_samples(td)
    agent.train_mode(0)
    assert algo.updates_per_optimize == chunk, algo.updates_per_optimize

    def step() -> int:
        before = algo.update_counter
        algo.optimize_agent(1, None)
        return algo.update_counter - before

    return step


# ------------------------------------------------------------------------------- SB3
def make_sb3(kind: str, data: dict[str, np.ndarray], device: torch.device, chunk: int) -> Step:
    from stable_baselines3 import SAC, TD3
    from stable_baselines3.common.logger import configure

    cls = SAC if kind == "sac" else TD3
    model = cls(
        "MlpPolicy",
        ENV_ID,
        batch_size=BATCH,
        policy_kwargs={"net_arch": HIDDEN},
        learning_starts=0,
        buffer_size=100_000,
        device=str(device),
        seed=0,
    )
    model.set_logger(configure(None, []))
    d = flat(data)
    rb = model.replay_buffer
    for i in range(len(d["rew"])):
        trunc = bool(d["trunc"][i])
        rb.add(
            d["obs"][i][None],
            d["next_obs"][i][None],
            d["act"][i][None],
            d["rew"][i : i + 1],
            np.array([bool(d["term"][i]) or trunc]),
            [{"TimeLimit.truncated": trunc and not bool(d["term"][i])}],
        )

    def step() -> int:
        model.train(gradient_steps=chunk, batch_size=BATCH)
        return chunk

    return step


# ------------------------------------------------------------------------------- TorchRL
def make_torchrl(data: dict[str, np.ndarray], device: torch.device, chunk: int) -> Step:
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torch import nn
    from torchrl.data import Bounded, LazyTensorStorage, ReplayBuffer
    from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
    from torchrl.objectives import SACLoss, SoftUpdate

    n_obs, n_act = data["obs"].shape[-1], data["act"].shape[-1]
    actor_net = nn.Sequential(
        MLP(in_features=n_obs, out_features=2 * n_act, num_cells=HIDDEN, activation_class=nn.ReLU),
        NormalParamExtractor(),
    ).to(device)
    actor = ProbabilisticActor(
        TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=Bounded(-1.0, 1.0, (n_act,), device=device),
        distribution_class=TanhNormal,
        distribution_kwargs={
            "low": -torch.ones(n_act, device=device),
            "high": torch.ones(n_act, device=device),
        },
        return_log_prob=False,
    )
    qnet = MLP(
        in_features=n_obs + n_act, out_features=1, num_cells=HIDDEN, activation_class=nn.ReLU
    ).to(device)
    qvalue = ValueOperator(qnet, in_keys=["observation", "action"])
    loss = SACLoss(actor_network=actor, qvalue_network=qvalue, num_qvalue_nets=2).to(device)
    loss.make_value_estimator(gamma=0.99)
    target = SoftUpdate(loss, tau=0.005)
    opt_actor = torch.optim.Adam(loss.actor_network_params.flatten_keys().values(), lr=3e-4)
    opt_critic = torch.optim.Adam(loss.qvalue_network_params.flatten_keys().values(), lr=3e-4)
    opt_alpha = torch.optim.Adam([loss.log_alpha], lr=3e-4)
    optims = (opt_actor, opt_critic, opt_alpha)

    d = flat(data)
    n = len(d["rew"])
    term = torch.from_numpy(d["term"]).reshape(n, 1)
    trunc = torch.from_numpy(d["trunc"]).reshape(n, 1)
    td = TensorDict(
        {
            "observation": torch.from_numpy(d["obs"]),
            "action": torch.from_numpy(d["act"]),
            "next": {
                "observation": torch.from_numpy(d["next_obs"]),
                "reward": torch.from_numpy(d["rew"]).reshape(n, 1),
                "done": term | trunc,
                "terminated": term,
                "truncated": trunc,
            },
        },
        batch_size=[n],
    )
    rb = ReplayBuffer(storage=LazyTensorStorage(100_000, device=device), batch_size=BATCH)
    rb.extend(td)

    def step() -> int:
        for _ in range(chunk):
            out = loss(rb.sample())
            total = out["loss_actor"] + out["loss_qvalue"] + out["loss_alpha"]
            total.backward()
            for opt in optims:
                opt.step()
                opt.zero_grad(set_to_none=True)
            target.step()
        return chunk

    return step


# ------------------------------------------------------------------------------- main
def targets(device: torch.device, median: dict[str, float]) -> bool:
    """Print the issue's target lines; True when all are met."""
    ref = median.get("sb3-sac")
    if device.type != "cuda":
        return check_target("tdrl SAC (eager) vs SB3 SAC updates/s", median.get("tdrl-sac"), ref,
                            CPU_TARGET)  # fmt: skip
    compiled = [v for n, v in median.items() if n.startswith("tdrl-sac-compiled")]
    eager = [v for n, v in median.items() if n in ("tdrl-sac", "tdrl-sac-devreplay")]
    ok = check_target(
        "tdrl SAC compiled (best) vs SB3 SAC updates/s",
        max(compiled, default=None),
        ref,
        CUDA_TARGETS["compiled"],
    )
    return ok & check_target(
        "tdrl SAC eager (best) vs SB3 SAC updates/s",
        max(eager, default=None),
        ref,
        CUDA_TARGETS["eager"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_common_args(parser, updates=300, warmup=30)
    parser.add_argument("--chunk", type=int, default=50, help="updates per call")
    parser.add_argument(
        "--impls", nargs="+", default=None, choices=IMPLS, help="default: by device"
    )
    args = parser.parse_args(argv)
    budget = Budget(args.budget_s)
    device = pick_device(args.device)
    names = args.impls or list(CUDA_IMPLS if device.type == "cuda" else CPU_IMPLS)
    header(
        "qpg_updates",
        device,
        f"batch {BATCH}, 256-256 MLPs, >= {args.updates} updates and >= {args.seconds:g} s x "
        f"{args.repeats} repeats (interleaved), warm-up {args.warmup}, chunks of {args.chunk}, "
        f"budget {args.budget_s or 'none'} s",
    )
    t0 = time.perf_counter()
    data = collect()
    T, B = data["rew"].shape
    print(
        f"# {ENV_ID}: {T * B} real transitions ({B} random-action episodes x {T}) "
        f"collected in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )

    def build(name: str) -> Step:
        lib, kind, opts = flags(name)
        if lib == "tdrl":
            return make_tdrl(kind, opts, data, device, args.chunk)
        if lib == "sb3":
            return make_sb3(kind, data, device, args.chunk)
        return make_torchrl(data, device, args.chunk)

    rates, problems = measure(names, build, args, device, budget)
    print(f"\n{ENV_ID} shapes on {device} ({describe_device(device)}); load average "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    median = print_table(names, rates, problems, "sb3-sac")
    if any("td3" in n for n in rates):
        print("\nTD3 rows count critic updates (actor and targets every 2nd, policy delay 2).")
    print()
    met = targets(device, median)
    broken = [
        n
        for n in names
        if n.startswith("tdrl") and not problems.get(n, "skipped").startswith("skipped")
    ]
    if broken:
        print(f"tdrl implementations that did not run: {', '.join(broken)}")
    return 1 if broken or (args.strict and not met) else 0


if __name__ == "__main__":
    raise SystemExit(main())
