"""Example 2: PPO on a MuJoCo task with offline evaluation and observation normalisation.

Adds to example 1: a continuous action space (``GaussianPgAgent``: tanh-squashed mean,
learned state-independent log std), running observation normalisation inside the model
(its statistics are saved with the agent), and ``MinibatchRlEval``, which evaluates the
agent in separate envs at iteration 0 and at every log point and logs those episodes
(deterministic actions, only completed episodes counted). Hyperparameters follow rlpyt's
``ppo_1M_cpu`` MuJoCo config (lr 3e-4, GAE 0.95, 32 minibatches x 10 epochs, ratio clip
0.2, normalised advantages).

``python tdrl_examples/example_2.py --env-id HalfCheetah-v5 --n-steps 1000000``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from tdrl.agents import GaussianPgAgent
from tdrl.algos import A2C, PPO
from tdrl.launch import option, parse_config, train_and_log
from tdrl.runners import MinibatchRlEval
from tdrl.samplers import SerialSampler


@dataclasses.dataclass
class Config:
    """Everything that defines the run; saved to ``params.json``."""

    env_id: str = "HalfCheetah-v5"
    algo: Literal["ppo", "a2c"] = "ppo"
    n_steps: int = 1_000_000
    seed: int = 0
    batch_T: int = 256
    batch_B: int = 8
    discount: float = 0.99
    gae_lambda: float = 0.95
    learning_rate: float = 3e-4
    ratio_clip: float = 0.2
    epochs: int = 10
    minibatches: int = 32
    entropy_loss_coeff: float = 0.0
    normalize_observation: bool = True
    eval_n_envs: int = 4
    eval_max_steps: int = 8_000
    eval_max_trajectories: int = 8
    device: str = option("cpu", "where the agent trains and acts: cpu, cuda or cuda:N")
    log_interval_steps: int = 20_000
    log_dir: str = "data/example_2"
    run_ID: int = 0


def build_and_train(config: Config, *, progress_bar: bool | None = None) -> dict[str, float]:
    """Train with ``config``; returns the last logged row (evaluation statistics)."""
    torch.set_num_threads(1)
    sampler = SerialSampler(
        env_kwargs={"id": config.env_id},
        batch_T=config.batch_T,
        batch_B=config.batch_B,
        eval_n_envs=config.eval_n_envs,
        eval_max_steps=config.eval_max_steps,
        eval_max_trajectories=config.eval_max_trajectories,
    )
    agent = GaussianPgAgent(
        model_kwargs={"normalize_observation": config.normalize_observation},
        eval_deterministic=True,
    )
    if config.algo == "ppo":
        algo = PPO(
            discount=config.discount,
            gae_lambda=config.gae_lambda,
            learning_rate=config.learning_rate,
            ratio_clip=config.ratio_clip,
            epochs=config.epochs,
            minibatches=config.minibatches,
            entropy_loss_coeff=config.entropy_loss_coeff,
            normalize_advantage=True,
        )
    elif config.algo == "a2c":
        algo = A2C(
            discount=config.discount,
            gae_lambda=config.gae_lambda,
            learning_rate=config.learning_rate,
            entropy_loss_coeff=config.entropy_loss_coeff,
            normalize_advantage=True,
        )
    else:
        raise ValueError(f"algo must be 'ppo' or 'a2c', got {config.algo!r}")
    runner = MinibatchRlEval(
        algo,
        agent,
        sampler,
        n_steps=config.n_steps,
        seed=config.seed,
        log_interval_steps=config.log_interval_steps,
        progress_bar=progress_bar,
        device=config.device,
    )
    label = f"{config.algo} {config.env_id} (eval)"
    return train_and_log(config, runner.train, name="example_2", label=label)


if __name__ == "__main__":
    build_and_train(parse_config(Config, description=__doc__))
