"""Example 8: PPO across 2 processes with ``SyncRl`` (synchronous data-parallel training).

Example 1's PPO on CartPole-v1, run by ``world_size`` processes at once. Each process
(rank) steps its own envs and optimises its own copy of the agent; an all-reduce at the end
of every backward pass averages the gradients of all ranks (``tdrl.runners.grad_sync``), so
the copies stay equal. Batch sizes are per rank: 2 ranks x 4 envs x 32 steps make
example 1's 256-step batch. Only rank 0 logs, to the same ``progress.csv`` columns, with
``Diagnostics/CumSteps`` counting the steps of all ranks.

Start it as one command, which spawns ranks 1.. itself::

    python tdrl_examples/example_8.py --n-steps 100000

or under torchrun (one process per rank, on one or several machines)::

    torchrun --nproc_per_node 2 tdrl_examples/example_8.py --n-steps 100000

With ``--device cuda`` rank ``r`` trains and acts on ``cuda:LOCAL_RANK`` (one GPU per rank)
and the ranks communicate with NCCL instead of gloo.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

import torch

from tdrl.agents import CategoricalPgAgent
from tdrl.algos import PPO
from tdrl.launch import option, parse_config, train_and_log
from tdrl.runners import SyncRl
from tdrl.samplers import SerialSampler


@dataclasses.dataclass
class Config:
    """Everything that defines the run; saved to ``params.json``."""

    env_id: str = "CartPole-v1"
    world_size: int = option(2, "processes; under torchrun, its WORLD_SIZE")
    n_steps: int = option(100_000, "all ranks together")
    seed: int = option(0, "rank r seeds with seed + 100 r")
    batch_T: int = option(32, "time steps per batch")
    batch_B: int = option(4, "envs per batch, per rank")
    discount: float = 0.98
    gae_lambda: float = 0.8
    learning_rate: float = option(1e-3, "decays linearly to 0")
    ratio_clip: float = option(0.2, "decays linearly to 0")
    epochs: int = 20
    minibatches: int = 1
    entropy_loss_coeff: float = 0.0
    normalize_advantage: bool = True
    clip_grad_norm: float = 0.5
    device: Literal["cpu", "cuda"] = option("cpu", "cuda: rank r on cuda:LOCAL_RANK, NCCL")
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
        cuda=config.device == "cuda",
    )
    if SyncRl.launch_rank() != 0:  # a torchrun rank other than 0: train, log nothing
        return runner.train()
    label = f"PPO {config.env_id} on {config.world_size} ranks"
    return train_and_log(config, runner.train, name="example_8", label=label)


if __name__ == "__main__":
    config = parse_config(Config, description=__doc__)
    world_size = int(os.environ.get("WORLD_SIZE", config.world_size))  # torchrun's wins
    build_and_train(dataclasses.replace(config, world_size=world_size))
