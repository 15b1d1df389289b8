"""PEARL on cheetah-vel: meta-gradient steps/s, batched vs a per-task loop, and a learning curve.

``--part steps``: on the same ``[tasks, n]`` data (random-action cheetah-vel transitions,
``--steps-per-task`` per task, one velocity task each, in a ``MultiTaskReplay``; one RL
batch and one context batch sampled once per ``meta_batch``), times

* ``batched``: ``PEARL.update(batch)``, tdrl's step: one computation over the
  ``meta_batch`` tasks;
* ``per-task``: ``per_task_update`` below, the same optimisation work done task by task as
  an implementation that loops over the tasks would (the rlpyt PEARL fork batches chunks
  of ``n_tasks_per_update`` tasks instead, one step per chunk):
  ``PEARL.loss`` on each ``[1, n]`` slice, the losses summed with the batched loss's
  weights, one backward, each part's optimizer steps once, then the value target.

Before timing, both losses are computed on the same data with the same noise (the latent's
``eps`` and the policy's, drawn from one seeded ``torch.Generator``) and must agree, with
their gradients. The rates are meta-gradient steps per second, the median of ``--repeats``
timed runs of ``--updates`` steps each (the two ways alternate), after ``--warmup`` steps of
each. Defaults: oyster's sizes for cheetah-vel (batch 256, context 100, 300-300-300
networks, 200-200-200 encoder, latent 5) at meta_batch 4 and 16.

``--part curve``: ``MetaRl`` (PEARL) on cheetah-vel with oyster's cheetah-vel settings by
default (100 train / 30 test tasks, 2000 initial steps per task, 5 tasks of 400 prior + 600
extra posterior steps per iteration, 2000 updates of 16 tasks x 256 transitions with
contexts of 100, 600 evaluation steps, ``num_evals`` 1, ``num_exp_traj_eval`` 2, reward
scale 5, KL weight 0.1, 300x3 networks) for ``--n-iterations``; the flags scale it down for
a CPU. It writes ``progress.csv`` under ``--log-dir/run_{run_ID}`` and prints, per
iteration, the env steps, the wall time and the test and train returns (the last
trajectory of the online evaluation, oyster's ``AverageReturn_all_{test,train}_tasks``);
``--plot PATH`` also draws the test return against env steps when matplotlib is there.

Run: ``python benchmarks/pearl.py [--part steps|curve|both] [--device cpu|cuda]
[--meta-batches 4 16] [--updates 10] [--repeats 3] [--warmup 3] [--n-iterations N]
[--n-train-tasks 100] [--n-eval-tasks 30] [--num-train-steps-per-itr 2000]
[--hidden-size 300] [--log-dir data/pearl_cheetah_vel] [--plot curve.png]`` (``--help``
lists every setting). The default, ``--part steps``, takes about 40 s on one CPU thread;
there one oyster-sized update takes about 0.4 s, so the curve at oyster's settings spends
about 13 minutes per iteration on its 2000 updates.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import functools
import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl.agents.qpg import PearlAgent
from tdrl.algos.qpg import PEARL
from tdrl.algos.updates import update_targets
from tdrl.envs.meta import make_meta_env
from tdrl.envs.spaces import space_to_spec
from tdrl.replays import MultiTaskReplay
from tdrl.runners.meta_presets import build_pearl, pearl_preset
from tdrl.utils.optim import grad_norm_clip

torch.set_num_threads(1)

ENV = "cheetah-vel"
#: Oyster's cheetah-vel settings (``configs/default.py`` + ``cheetah-vel.json``), as tdrl
#: encodes them: every default below and every setting without a flag comes from here.
PRESET = pearl_preset(ENV)
#: The flags of the curve part that set ``MetaRl`` arguments of the preset.
RUNNER_FLAGS = (
    "n_train_tasks",
    "n_eval_tasks",
    "num_initial_steps",
    "num_tasks_sample",
    "num_steps_prior",
    "num_steps_posterior",
    "num_extra_rl_steps_posterior",
    "num_train_steps_per_itr",
    "num_steps_per_eval",
    "num_evals",
    "num_exp_traj_eval",
    "replay_size",
)
#: Columns of the curve table, from ``progress.csv``.
CURVE_COLUMNS = (
    ("Diagnostics/Iteration", "iteration"),
    ("Diagnostics/CumSteps", "env steps (collected)"),
    ("Diagnostics/CumTime (s)", "wall s"),
    ("AverageReturn_all_test_tasks", "test return"),
    ("AverageReturn_all_train_tasks", "train return"),
)


# ---------------------------------------------------------------------- the per-task loop
def per_task_loss(algo: PEARL, batch: TensorDictBase) -> torch.Tensor:
    """The batched ``loss`` computed task by task: ``PEARL.loss`` on each task's ``[1]`` slice.

    The batched loss averages its SAC terms over the ``tasks * n`` transitions and reduces
    the per-task KL by ``algo.kl_reduction``; a slice's loss is its own task's terms, so
    the SAC terms are summed with weight ``1 / tasks`` and the KL with weight 1 (``"sum"``)
    or ``1 / tasks`` (``"mean"``).
    """
    tasks = batch.batch_size[0]
    kl_weight = 1.0 if algo.kl_reduction == "sum" else 1.0 / tasks
    total = torch.zeros((), device=algo.device)
    for i in range(tasks):
        terms = algo.loss(batch[i : i + 1])
        kl = terms.get("loss_kl")
        total = total + (terms.get("loss") - kl) / tasks + kl_weight * kl
    return total


def per_task_update(algo: PEARL, batch: TensorDictBase) -> torch.Tensor:
    """One meta-gradient step from ``per_task_loss``: the work of ``PEARL.update``.

    One backward pass, each part's gradient norm, each part's optimizer step, the value
    target's Polyak update. Returns the detached loss.
    """
    loss = per_task_loss(algo, batch)
    optimizers = algo.optimizers()
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for params in algo.params.values():
        grad_norm_clip(params, algo.clip_grad_norm)
    for optimizer in optimizers:
        optimizer.step()
    algo.update_counter += 1
    update_targets(algo.agent, algo.target_update_tau, compiled_on=False, device=algo.device)
    return loss.detach()


# ---------------------------------------------------------------------- the same noise
@contextlib.contextmanager
def noise_tapes(latent_eps: torch.Tensor, policy_eps: torch.Tensor) -> Iterator[None]:
    """Within the block, the loss's two noise draws read rows of fixed tapes, in task order.

    ``PEARL.loss`` draws the latent's ``eps`` (``torch.randn`` of ``[tasks, latent]`` in
    ``ContextEncoder.sample``) and the policy's noise (``torch.randn_like`` of ``[tasks, n,
    action]``). A seeded ``torch.Generator`` does not give a ``[1, latent]`` slice the row
    it gives within ``[tasks, latent]``: torch's CPU normal fills 16 values at a time, from
    uniforms paired across rows. Here each call takes the next ``shape[0]`` rows of its tape
    (drawn beforehand from one generator): one call of ``tasks`` rows in the batched loss,
    ``tasks`` calls of one row in the per-task loop, the same numbers. As
    ``tests/test_pearl.py`` fixes ``randn_like``; only for ``check_same_loss``.
    """
    tapes = {"randn": latent_eps, "randn_like": policy_eps}
    cursor = dict.fromkeys(tapes, 0)

    def take(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        at = cursor[name]
        rows = tapes[name][at : at + shape[0]]
        if tuple(rows.shape) != tuple(shape):
            raise RuntimeError(f"{name}{tuple(shape)}: the tape holds {tuple(rows.shape)} here")
        cursor[name] = at + shape[0]
        return rows.clone()

    def randn(*size: Any, device: Any = None, dtype: Any = None, **_: Any) -> torch.Tensor:
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else size
        return take("randn", shape).to(device=device, dtype=dtype)

    def randn_like(like: torch.Tensor, *_: Any, **__: Any) -> torch.Tensor:
        return take("randn_like", tuple(like.shape)).to(like)

    saved = torch.randn, torch.randn_like
    setattr(torch, "randn", randn)  # noqa: B010  (a scoped swap, undone below)
    setattr(torch, "randn_like", randn_like)  # noqa: B010
    try:
        yield
    finally:
        setattr(torch, "randn", saved[0])  # noqa: B010
        setattr(torch, "randn_like", saved[1])  # noqa: B010
    for name, tape in tapes.items():
        if cursor[name] != tape.shape[0]:
            raise RuntimeError(f"{name}: {cursor[name]} of {tape.shape[0]} rows drawn")


def check_same_loss(algo: PEARL, batch: TensorDictBase, *, seed: int = 0) -> dict[str, float]:
    """Batched and per-task loss and gradients on the same data and noise (no step).

    Returns:
        ``batched_loss`` and ``per_task_loss``, ``loss_diff`` (absolute) and
        ``grad_diff`` (the largest absolute gradient difference over every trained
        parameter, relative to the largest gradient entry).
    """
    agent = algo.agent
    assert isinstance(agent, PearlAgent)
    tasks, n = batch.get(keys.META_RL).batch_size
    g = torch.Generator().manual_seed(seed)
    latent_eps = torch.randn(tasks, agent.latent_size, generator=g).to(algo.device)
    policy_eps = torch.randn(tasks, n, agent.action_size, generator=g).to(algo.device)
    params = [p for part_params in algo.params.values() for p in part_params]
    losses, grads = {}, {}
    ways: dict[str, Callable[[], torch.Tensor]] = {
        "batched": lambda: algo.loss(batch).get("loss"),
        "per_task": lambda: per_task_loss(algo, batch),
    }
    for name, loss_fn in ways.items():
        agent.zero_grad(set_to_none=True)
        with noise_tapes(latent_eps, policy_eps):
            loss = loss_fn()
        loss.backward()
        losses[name] = loss.detach()
        grads[name] = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
    agent.zero_grad(set_to_none=True)
    scale = max(float(grad.abs().max()) for grad in grads["batched"])
    grad_diff = max(
        float((a - b).abs().max()) for a, b in zip(grads["batched"], grads["per_task"], strict=True)
    )
    return {
        "batched_loss": float(losses["batched"]),
        "per_task_loss": float(losses["per_task"]),
        "loss_diff": float((losses["batched"] - losses["per_task"]).abs()),
        "grad_diff": grad_diff / max(scale, 1e-12),
    }


# ---------------------------------------------------------------------- step rates
def _column(values: list[Any], dtype: torch.dtype) -> torch.Tensor:
    """``[T, 1, size]`` tensor of ``T`` per-step values (scalars or vectors)."""
    array = np.asarray(values)
    return torch.as_tensor(array, dtype=dtype).reshape(len(array), 1, -1)


def random_samples(env: Any, steps: int, seed: int) -> TensorDict:
    """A ``[steps, 1]`` sampler batch of random actions on ``env``'s current task."""
    obs, _ = env.reset(seed=seed)
    zero_action = np.zeros(env.action_space.shape, np.float32)
    prev_action, prev_reward = zero_action, 0.0
    rows: dict[str, list[Any]] = {k: [] for k in ("o", "pa", "pr", "a", "no", "r", "te", "tr")}
    for _ in range(steps):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        values = (obs, prev_action, prev_reward, action, next_obs, reward, terminated, truncated)
        for k, v in zip(rows, values, strict=True):
            rows[k].append(v)
        obs, prev_action, prev_reward = next_obs, action, float(reward)
        if terminated or truncated:
            (obs, _), prev_action, prev_reward = env.reset(), zero_action, 0.0
    term, trunc = _column(rows["te"], torch.bool), _column(rows["tr"], torch.bool)
    return TensorDict(
        {
            keys.OBSERVATION: _column(rows["o"], torch.float32),
            keys.PREV_ACTION: _column(rows["pa"], torch.float32),
            keys.PREV_REWARD: _column(rows["pr"], torch.float32),
            keys.ACTION: _column(rows["a"], torch.float32),
            keys.NEXT: {
                keys.OBSERVATION: _column(rows["no"], torch.float32),
                keys.REWARD: _column(rows["r"], torch.float32),
                keys.DONE: term | trunc,
                keys.TERMINATED: term,
                keys.TRUNCATED: trunc,
            },
        },
        batch_size=[steps, 1],
    )


def random_replay(n_tasks: int, steps_per_task: int, seed: int) -> tuple[MultiTaskReplay, Any]:
    """A ``MultiTaskReplay`` of random-action cheetah-vel transitions, one task per index.

    Returns:
        The replay (``steps_per_task`` transitions per task in both buffers) and the env.
    """
    env: Any = make_meta_env(ENV)
    env.action_space.seed(seed)
    size = max(steps_per_task, 3)
    replay = MultiTaskReplay(
        n_tasks, size=size, batch_B=1, encoder_size=size, discount=0.99, seed=seed
    )
    for index, task in enumerate(env.sample_tasks(n_tasks, seed=seed)):
        env.set_task(task)
        replay.append_samples(
            index, random_samples(env, steps_per_task, seed + index), to_encoder=True
        )
    return replay, env


def agent_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``PearlAgent`` arguments the flags set (the rest: the preset's)."""
    return {
        "latent_size": args.latent_size,
        "hidden_sizes": (args.hidden_size,) * args.n_layers,
        "encoder_hidden_sizes": (args.encoder_hidden_size,) * args.n_layers,
    }


def algo_overrides(args: argparse.Namespace, meta_batch: int) -> dict[str, Any]:
    """The ``PEARL`` arguments the flags set (the rest: the preset's)."""
    return {
        "batch_size": args.batch_size,
        "embedding_batch_size": args.embedding_batch_size,
        "meta_batch": meta_batch,
        "reward_scale": args.reward_scale,
        "kl_lambda": args.kl_lambda,
    }


def make_agent_and_algo(args: argparse.Namespace, env: Any, meta_batch: int) -> PEARL:
    """The preset's ``PearlAgent`` on ``args.device`` and its ``PEARL`` (seeded)."""
    preset = PRESET.with_overrides(
        agent=agent_overrides(args), algo=algo_overrides(args, meta_batch)
    )
    torch.manual_seed(args.seed)
    agent = PearlAgent(**preset.agent_kwargs)
    agent.initialize(space_to_spec(env.observation_space), space_to_spec(env.action_space))
    agent.to(args.device)
    algo = PEARL(**preset.algo_kwargs)
    algo.initialize(agent)
    return algo


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], Any], n: int, device: torch.device) -> float:
    """Steps per second of ``n`` calls of ``step``."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    _sync(device)
    return n / (time.perf_counter() - t0)


def run_steps(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The step-rate rows, one per meta_batch (see the module docstring)."""
    device = torch.device(args.device)
    replay, env = random_replay(max(args.meta_batches), args.steps_per_task, args.seed)
    results = []
    for meta_batch in args.meta_batches:
        algo = make_agent_and_algo(args, env, meta_batch)
        tasks = list(range(meta_batch))
        batch = replay.sample_meta_batch(
            tasks, args.batch_size, args.embedding_batch_size, device=device
        )
        check = check_same_loss(algo, batch, seed=args.seed)
        print(
            f"  meta_batch {meta_batch}: loss batched {check['batched_loss']:.6f}, per-task "
            f"{check['per_task_loss']:.6f} (|diff| {check['loss_diff']:.1e}, largest gradient "
            f"difference {check['grad_diff']:.1e} of the largest entry)",
            flush=True,
        )
        tol = 1e-4 * max(1.0, abs(check["batched_loss"]))
        if check["loss_diff"] > tol or check["grad_diff"] > 1e-3:  # not an assert: kept by -O
            raise RuntimeError(f"batched and per-task losses or gradients differ: {check}")
        ways: dict[str, Callable[[], Any]] = {
            "batched": functools.partial(algo.update, batch),
            "per-task": functools.partial(per_task_update, algo, batch),
        }
        for step in ways.values():
            time_steps(step, args.warmup, device)
        rates: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.repeats):
            for name, step in ways.items():
                rates[name].append(time_steps(step, args.updates, device))
        median = {name: statistics.median(r) for name, r in rates.items()}
        row = {"meta_batch": meta_batch, **check, **median}
        print(
            f"  meta_batch {meta_batch}: batched {median['batched']:.2f} steps/s, per-task "
            f"{median['per-task']:.2f} steps/s (runs: "
            + ", ".join(f"{n} {[round(r, 2) for r in rs]}" for n, rs in rates.items())
            + ")",
            flush=True,
        )
        results.append(row)
    return results


def print_steps_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        "\n| meta_batch | tasks x n (context) | batched steps/s | per-task steps/s | "
        "speed-up | loss batched | loss per-task | max grad diff (rel.) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['meta_batch']} | {r['meta_batch']} x {args.batch_size} "
            f"({args.embedding_batch_size}) | {r['batched']:.2f} | {r['per-task']:.2f} | "
            f"{r['batched'] / r['per-task']:.2f}x | {r['batched_loss']:.5f} | "
            f"{r['per_task_loss']:.5f} | {r['grad_diff']:.1e} |"
        )


# ---------------------------------------------------------------------- the curve
def runner_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``MetaRl`` arguments the flags set (the rest: the preset's)."""
    overrides = {name: getattr(args, name) for name in RUNNER_FLAGS}
    overrides["env_kwargs"] = {"max_episode_steps": args.max_episode_steps}
    return overrides


def curve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Every setting of the curve run, the preset's included (saved and printed)."""
    preset = PRESET.with_overrides(
        agent=agent_overrides(args),
        algo=algo_overrides(args, args.meta_batch),
        runner=runner_overrides(args),
    )
    return {
        "env_name": ENV,
        "n_iterations": args.n_iterations,
        "seed": args.seed,
        "device": args.device,
        "env": preset.env_kwargs,
        "runner": preset.runner_kwargs,
        "algo": preset.algo_kwargs,
        "agent": preset.agent_kwargs,
    }


def run_curve(args: argparse.Namespace) -> tuple[list[dict[str, str]], Path]:
    """Train ``MetaRl`` on cheetah-vel; returns the rows of ``progress.csv`` and its path."""
    from tdrl.logging import logger_context

    runner = build_pearl(
        ENV,
        agent_overrides=agent_overrides(args),
        algo_overrides=algo_overrides(args, args.meta_batch),
        runner_overrides=runner_overrides(args),
        n_iterations=args.n_iterations,
        seed=args.seed,
        device=args.device,
    )
    name = "pearl_cheetah_vel"
    config = curve_settings(args)
    with logger_context(args.log_dir, args.run_ID, name, config, echo=False) as logger:
        runner.train()
        progress = logger.run_dir / "progress.csv"
    with open(progress, newline="") as f:
        return list(csv.DictReader(f)), progress


def print_curve_table(rows: list[dict[str, str]]) -> None:
    print("\n| " + " | ".join(label for _, label in CURVE_COLUMNS) + " |")
    print("|" + "---|" * len(CURVE_COLUMNS))
    for row in rows:
        cells = [
            f"{int(float(row[CURVE_COLUMNS[0][0]]))}",
            f"{int(float(row[CURVE_COLUMNS[1][0]])):,}",
            f"{float(row[CURVE_COLUMNS[2][0]]):.0f}",
            f"{float(row[CURVE_COLUMNS[3][0]]):.1f}",
            f"{float(row[CURVE_COLUMNS[4][0]]):.1f}",
        ]
        print("| " + " | ".join(cells) + " |")


def plot_curve(rows: list[dict[str, str]], path: str) -> None:
    """A PNG of the test return against env steps, if matplotlib is importable."""
    try:
        matplotlib = importlib.import_module("matplotlib")  # optional: not a dependency
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        print(f"--plot {path}: matplotlib is not installed, no plot written")
        return
    steps = [float(r["Diagnostics/CumSteps"]) for r in rows]
    test = [float(r["AverageReturn_all_test_tasks"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, test, marker="o")
    ax.set_xlabel("env steps")
    ax.set_ylabel("AverageReturn_all_test_tasks")
    ax.set_title(f"PEARL {ENV} (tdrl)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot written to {path}")


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    agent, algo, runner = PRESET.agent_kwargs, PRESET.algo_kwargs, PRESET.runner_kwargs
    p = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--part", choices=("steps", "curve", "both"), default="steps")
    p.add_argument("--device", default="cpu", help="where the agent trains: cpu, cuda")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("sizes, both parts (defaults: oyster's cheetah-vel)")
    g.add_argument("--batch-size", type=int, default=algo["batch_size"], help="RL per task")
    g.add_argument(
        "--embedding-batch-size",
        type=int,
        default=algo["embedding_batch_size"],
        help="context transitions per task",
    )
    g.add_argument(
        "--hidden-size",
        type=int,
        default=agent["hidden_sizes"][0],
        help="width of the policy, Q and V layers",
    )
    g.add_argument("--encoder-hidden-size", type=int, default=agent["encoder_hidden_sizes"][0])
    g.add_argument(
        "--n-layers",
        type=int,
        default=len(agent["hidden_sizes"]),
        help="hidden layers of every network (encoder included)",
    )
    g.add_argument("--latent-size", type=int, default=agent["latent_size"])
    g.add_argument("--reward-scale", type=float, default=algo["reward_scale"])
    g.add_argument("--kl-lambda", type=float, default=algo["kl_lambda"])
    g = p.add_argument_group("--part steps")
    g.add_argument("--meta-batches", type=int, nargs="+", default=[4, algo["meta_batch"]])
    g.add_argument("--updates", type=int, default=10, help="steps per timed run")
    g.add_argument("--repeats", type=int, default=3, help="timed runs (the median is shown)")
    g.add_argument("--warmup", type=int, default=3, help="untimed steps of each way first")
    g.add_argument("--steps-per-task", type=int, default=200, help="random transitions per task")
    g = p.add_argument_group("--part curve (defaults: oyster's cheetah-vel)")
    g.add_argument("--n-iterations", type=int, default=PRESET.n_iterations)
    for name in RUNNER_FLAGS:
        g.add_argument("--" + name.replace("_", "-"), type=int, default=runner[name], help=name)
    g.add_argument("--max-episode-steps", type=int, default=PRESET.max_path_length)
    g.add_argument("--meta-batch", type=int, default=algo["meta_batch"])
    g.add_argument("--log-dir", default="data/pearl_cheetah_vel")
    g.add_argument("--run-ID", type=int, default=0)
    g.add_argument("--plot", default=None, metavar="PATH", help="PNG of the test return")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(
        f"# pearl {datetime.datetime.now():%Y-%m-%d %H:%M} | "
        f"{platform.processor() or platform.machine()} | {os.cpu_count()} CPUs | torch "
        f"{torch.__version__}{gpu} | {torch.get_num_threads()} thread(s) | agent on {device}",
        flush=True,
    )
    if args.part in ("steps", "both"):
        meta_batch = args.meta_batches[-1]
        preset = PRESET.with_overrides(
            agent=agent_overrides(args), algo=algo_overrides(args, meta_batch)
        )
        print(
            f"# steps: {ENV}, meta_batch {args.meta_batches}, seed {args.seed}, agent "
            f"{preset.agent_kwargs}, algo {preset.algo_kwargs} (meta_batch: each of the "
            f"list); {args.steps_per_task} random transitions per task; {args.warmup} warm-up "
            f"steps, then {args.repeats} x {args.updates} timed steps of each way (median)",
            flush=True,
        )
        t0 = time.perf_counter()
        rows = run_steps(args)
        print_steps_table(rows, args)
        print(f"\nsteps part: {time.perf_counter() - t0:.0f} s wall", flush=True)
    if args.part in ("curve", "both"):
        settings = curve_settings(args)
        print(f"# curve: {settings}", flush=True)
        t0 = time.perf_counter()
        curve, progress = run_curve(args)
        print_curve_table(curve)
        print(f"\ncurve part: {time.perf_counter() - t0:.0f} s wall; {progress}", flush=True)
        if args.plot:
            plot_curve(curve, args.plot)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
