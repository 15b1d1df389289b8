"""Example 1: PPO on CartPole-v1, serial sampling, online statistics.

The smallest complete tdrl program: a ``SerialSampler`` steps 8 CartPole envs in this
process, a ``CategoricalPgAgent`` (separate 64-64 tanh policy and value MLPs) acts, ``PPO``
optimises, and ``MinibatchRl`` connects them, logging ``progress.csv`` in rlpyt's format.
The default settings (rl-zoo's tuned CartPole PPO hyperparameters) reach a
``ReturnAverage`` over the last 100 episodes of at least 475 within 100k steps.

Run it with ``make run`` or ``python tdrl_examples/example_1.py --n-steps 100000``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from tdrl.agents import CategoricalPgAgent
from tdrl.algos import PPO
from tdrl.logging import logger_context, next_run_id
from tdrl.runners import MinibatchRl
from tdrl.samplers import SerialSampler


@dataclasses.dataclass
class Config:
    """Everything that defines the run; saved to ``params.json``."""

    env_id: str = "CartPole-v1"
    n_steps: int = 100_000
    seed: int = 0
    batch_T: int = 32  # time steps per batch
    batch_B: int = 8  # envs per batch
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
    log_dir: str = "data/example_1"
    run_ID: int = 0


def build_and_train(config: Config, *, progress_bar: bool | None = None) -> dict[str, float]:
    """Train PPO with ``config``; returns the last logged row."""
    torch.set_num_threads(1)  # one thread is fastest for small MLPs on few cores
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
    runner = MinibatchRl(
        algo,
        agent,
        sampler,
        n_steps=config.n_steps,
        seed=config.seed,
        log_interval_steps=config.log_interval_steps,
        progress_bar=progress_bar,
    )
    with logger_context(
        config.log_dir, config.run_ID, "example_1", dataclasses.asdict(config), echo=False
    ) as logger:
        t0 = time.time()
        row = runner.train()
        logger.log(
            f"PPO {config.env_id}: ReturnAverage {row['ReturnAverage']:.1f} after "
            f"{row['Diagnostics/CumSteps']:.0f} steps in {time.time() - t0:.1f} s; "
            f"logs in {logger.run_dir}",
            echo=True,
        )
    return row


def main() -> None:
    defaults = Config()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-steps", type=int, default=defaults.n_steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--log-dir", default=defaults.log_dir)
    parser.add_argument("--run-ID", type=int, default=None, help="default: next free run")
    args = parser.parse_args()
    run_id = args.run_ID if args.run_ID is not None else next_run_id(args.log_dir)
    build_and_train(
        dataclasses.replace(
            defaults, n_steps=args.n_steps, seed=args.seed, log_dir=args.log_dir, run_ID=run_id
        )
    )


if __name__ == "__main__":
    main()
