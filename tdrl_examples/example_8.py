"""Example 8: PPO across 2 processes with ``SyncRl`` (synchronous data-parallel training).

Example 1's PPO on CartPole-v1, run by ``world_size`` processes at once. Each process
(rank) steps its own envs and optimises its own copy of the agent; PyTorch's
``DistributedDataParallel`` averages the gradients of all ranks in every backward pass, so
the copies stay equal. Batch sizes are per rank: 2 ranks x 4 envs x 32 steps make
example 1's 256-step batch. Only rank 0 logs, to the same ``progress.csv`` columns, with
``Diagnostics/CumSteps`` counting the steps of all ranks.

Start it as one command, which spawns ranks 1.. itself::

    python tdrl_examples/example_8.py --n-steps 100000

or under torchrun (one process per rank, on one or several machines)::

    torchrun --nproc_per_node 2 tdrl_examples/example_8.py --n-steps 100000
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import torch

from tdrl.agents import CategoricalPgAgent
from tdrl.algos import PPO
from tdrl.logging import logger_context, next_run_id
from tdrl.runners import SyncRl
from tdrl.samplers import SerialSampler


@dataclasses.dataclass
class Config:
    """Everything that defines the run; saved to ``params.json``."""

    env_id: str = "CartPole-v1"
    world_size: int = 2  # processes; under torchrun, its WORLD_SIZE
    n_steps: int = 100_000  # all ranks together
    seed: int = 0  # rank r seeds with seed + 100 r
    batch_T: int = 32  # time steps per batch
    batch_B: int = 4  # envs per batch, per rank
    discount: float = 0.98
    gae_lambda: float = 0.8
    learning_rate: float = 1e-3  # decays linearly to 0
    ratio_clip: float = 0.2  # decays linearly to 0
    epochs: int = 20
    minibatches: int = 1
    entropy_loss_coeff: float = 0.0
    normalize_advantage: bool = True
    clip_grad_norm: float = 0.5
    log_interval_steps: int = 10_000
    log_dir: str = "data/example_8"
    run_ID: int = 0


def build_and_train(config: Config, *, progress_bar: bool | None = None) -> dict[str, float]:
    """Train PPO with ``config`` on all ranks; returns rank 0's last logged row."""
    torch.set_num_threads(1)  # spawned ranks use as many threads as this process
    sampler = SerialSampler(
        env_kwargs={"id": config.env_id}, batch_T=config.batch_T, batch_B=config.batch_B
    )
    agent = CategoricalPgAgent()
    algo = PPO(
        discount=config.discount,
        gae_lambda=config.gae_lambda,
        learning_rate=config.learning_rate,
        ratio_clip=config.ratio_clip,
        epochs=config.epochs,
        minibatches=config.minibatches,
        entropy_loss_coeff=config.entropy_loss_coeff,
        normalize_advantage=config.normalize_advantage,
        clip_grad_norm=config.clip_grad_norm,
    )
    runner = SyncRl(
        algo,
        agent,
        sampler,
        n_steps=config.n_steps,
        world_size=config.world_size,
        seed=config.seed,
        log_interval_steps=config.log_interval_steps,
        progress_bar=progress_bar,
    )
    if SyncRl.launch_rank() != 0:  # a torchrun rank other than 0: train, log nothing
        return runner.train()
    with logger_context(
        config.log_dir, config.run_ID, "example_8", dataclasses.asdict(config), echo=False
    ) as logger:
        t0 = time.time()
        row = runner.train()
        logger.log(
            f"PPO {config.env_id} on {config.world_size} ranks: ReturnAverage "
            f"{row['ReturnAverage']:.1f} after {row['Diagnostics/CumSteps']:.0f} steps in "
            f"{time.time() - t0:.1f} s; logs in {logger.run_dir}",
            echo=True,
        )
    return row


def main() -> None:
    defaults = Config()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-steps", type=int, default=defaults.n_steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--world-size", type=int, default=defaults.world_size)
    parser.add_argument("--log-dir", default=defaults.log_dir)
    parser.add_argument("--run-ID", type=int, default=None, help="default: next free run")
    args = parser.parse_args()
    world_size = int(os.environ.get("WORLD_SIZE", args.world_size))  # torchrun's wins
    run_id = args.run_ID
    if run_id is None:
        run_id = next_run_id(args.log_dir) if SyncRl.launch_rank() == 0 else 0
    build_and_train(
        dataclasses.replace(
            defaults,
            n_steps=args.n_steps,
            seed=args.seed,
            world_size=world_size,
            log_dir=args.log_dir,
            run_ID=run_id,
        )
    )


if __name__ == "__main__":
    main()
