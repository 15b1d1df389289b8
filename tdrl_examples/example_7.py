"""Example 7: asynchronous sampling and optimisation (DQN on CartPole, or SAC on Pendulum).

``AsyncRlEval`` runs the sampler in a thread with its own copy of the agent, appending each
batch to the replay buffer while this thread optimises; new weights reach the sampler after
every optimisation round. The optimiser is throttled so that ``replay_ratio`` bounds the
data reuse, and ``--max-lead`` bounds how far the sampler may run ahead (1: collect the
next batch while the current ones are trained on, keeping the replay ratio of a serial
run; 0: free-running, as rlpyt). ``--sampler gpu`` steps the envs in worker processes
(the policy still runs here, batched), so env steps and gradient updates use different
cores.

``--algo dqn`` trains example 3's double DQN on CartPole-v1; ``--algo sac`` trains SAC on
Pendulum-v1 (example 5's agent and algorithm with 10k-step settings).
``--sampler-process`` moves the sampler from a thread to a process of its own (rlpyt's
layout: no GIL shared with the optimiser). ``--runner sync`` trains the same
configuration with ``MinibatchRlEval``, for comparison.
``python tdrl_examples/example_7.py --algo sac --n-steps 10000``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from tdrl.agents.dqn import DqnAgent
from tdrl.agents.qpg import SacAgent
from tdrl.algos.dqn import DQN
from tdrl.algos.qpg import SAC
from tdrl.logging import logger_context, next_run_id
from tdrl.runners import AsyncRlEval, MinibatchRlEval
from tdrl.samplers import GpuSampler, SerialSampler


@dataclasses.dataclass
class Config:
    """Everything that defines the run; saved to ``params.json``."""

    algo: str = "dqn"  # or "sac"
    sampler: str = "serial"  # or "gpu" (env workers)
    n_workers: int = 1
    max_lead: int = 1  # 0: free-running sampler
    runner: str = "async"  # or "sync" (MinibatchRlEval, for comparison)
    sampler_process: bool = False  # async: the sampler in its own process, not a thread
    n_steps: int = 50_000
    seed: int = 0
    log_dir: str = "data/example_7"
    run_ID: int = 0


def build(config: Config):
    """``(env_id, sampler kwargs, agent, algo, log_interval_steps)`` for ``config.algo``."""
    if config.algo == "dqn":  # example 3's settings
        agent = DqnAgent(model_kwargs={"hidden_sizes": (256, 256)}, eps_final=0.04)
        algo = DQN(
            batch_size=128,
            learning_rate=1e-3,
            replay_size=100_000,
            replay_ratio=32,
            min_steps_learn=min(1_000, config.n_steps // 2),
            target_update_tau=0.01,
            target_update_interval=1,
            optim_kwargs={"eps": 1e-8},
            eps_steps=8_000,
            double_dqn=True,
            delta_clip=1.0,
        )
        return "CartPole-v1", {"batch_T": 256, "batch_B": 1}, agent, algo, 2_500
    if config.algo == "sac":  # 200-step episodes: an update per step, 1k warm-up steps
        algo = SAC(min_steps_learn=min(1_000, config.n_steps // 2), replay_ratio=256)
        return "Pendulum-v1", {"batch_T": 1, "batch_B": 1}, SacAgent(), algo, 2_000
    raise ValueError(f"algo must be 'dqn' or 'sac', got {config.algo!r}")


def build_and_train(config: Config, *, progress_bar: bool | None = None) -> dict[str, float]:
    """Train with ``config``; returns the last logged row (evaluation statistics)."""
    torch.set_num_threads(1)
    env_id, batch, agent, algo, log_interval = build(config)
    log_interval = min(log_interval, max(1, config.n_steps // 2))
    eval_kwargs = {"eval_n_envs": 4, "eval_max_trajectories": 8, "eval_max_steps": 20_000}
    if config.sampler == "serial":
        sampler = SerialSampler(
            env_kwargs={"id": env_id}, max_decorrelation_steps=0, **batch, **eval_kwargs
        )
    elif config.sampler == "gpu":
        sampler = GpuSampler(
            env_kwargs={"id": env_id},
            n_workers=config.n_workers,
            max_decorrelation_steps=0,
            **batch,
            **eval_kwargs,
        )
    else:
        raise ValueError(f"sampler must be 'serial' or 'gpu', got {config.sampler!r}")
    common = {
        "n_steps": config.n_steps,
        "seed": config.seed,
        "log_interval_steps": log_interval,
        "progress_bar": progress_bar,
    }
    if config.runner == "async":
        lead = config.max_lead or None
        runner = AsyncRlEval(
            algo,
            agent,
            sampler,
            max_sampler_lead_itrs=lead,
            sampler_process=config.sampler_process,
            **common,
        )
    elif config.runner == "sync":
        runner = MinibatchRlEval(algo, agent, sampler, **common)
    else:
        raise ValueError(f"runner must be 'async' or 'sync', got {config.runner!r}")
    with logger_context(
        config.log_dir, config.run_ID, "example_7", dataclasses.asdict(config), echo=False
    ) as logger:
        t0 = time.time()
        row = runner.train()
        logger.log(
            f"{config.runner} {config.algo} {env_id}: eval ReturnAverage "
            f"{row['ReturnAverage']:.1f} after {row['Diagnostics/CumSteps']:.0f} steps, "
            f"{row['Diagnostics/CumUpdates']:.0f} updates in {time.time() - t0:.1f} s; "
            f"logs in {logger.run_dir}",
            echo=True,
        )
    return row


def main() -> None:
    defaults = Config()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default=defaults.algo, choices=("dqn", "sac"))
    parser.add_argument("--sampler", default=defaults.sampler, choices=("serial", "gpu"))
    parser.add_argument("--n-workers", type=int, default=defaults.n_workers)
    parser.add_argument("--max-lead", type=int, default=defaults.max_lead)
    parser.add_argument("--runner", default=defaults.runner, choices=("async", "sync"))
    parser.add_argument(
        "--sampler-process", action="store_true", help="async: sample in a separate process"
    )
    parser.add_argument("--n-steps", type=int, default=defaults.n_steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--log-dir", default=defaults.log_dir)
    parser.add_argument("--run-ID", type=int, default=None, help="default: next free run")
    args = parser.parse_args()
    config = dataclasses.replace(
        defaults,
        algo=args.algo,
        sampler=args.sampler,
        n_workers=args.n_workers,
        max_lead=args.max_lead,
        runner=args.runner,
        sampler_process=args.sampler_process,
        n_steps=args.n_steps,
        seed=args.seed,
        log_dir=args.log_dir,
        run_ID=args.run_ID if args.run_ID is not None else next_run_id(args.log_dir),
    )
    build_and_train(config)


if __name__ == "__main__":
    main()
