"""Example 14: PPO on thousands of envs stepped as one tensor program (a vectorized env).

What it adds over example 13: the env is one TorchRL ``EnvBase`` of batch size ``[N]``,
``tdrl.envs.VectorCartPole`` (gymnasium's CartPole-v1 written in torch: N carts advance in
one call, episodes reset through TorchRL's ``"_reset"`` mask), the workload GPU simulators
produce. ``SerialSampler`` takes it as it is: ``batch_B`` equals ``N`` (a multiple of it
would build several such envs), each time step is one ``step_and_maybe_reset`` of all N
envs and one agent call, with no Python loop over envs. ``--env-device cuda`` steps the
env on a GPU and ``--device cuda`` trains there (written for, not yet run on a GPU).

PPO sees ``batch_T × N`` steps per iteration (16 × 1024 by default) and makes a few
large-minibatch epochs over them. The default settings reach a ``ReturnAverage`` of at
least 475 within 2M env steps on the reference CPU (500.0 on seeds 0, 1 and 2, about 27 s
each; docs/torchrl.md gives the sampler's measured steps per second on this env).

Run it: ``python tdrl_examples/example_14.py [--num-envs 4096]``.
"""

from __future__ import annotations

import dataclasses

import torch

from tdrl.agents import CategoricalPgAgent
from tdrl.algos import PPO
from tdrl.envs import VectorCartPole
from tdrl.launch import option, parse_config, train_and_log
from tdrl.runners import MinibatchRl
from tdrl.samplers import SerialSampler


@dataclasses.dataclass
class Config:
    """Everything that defines the run; saved to ``params.json``."""

    num_envs: int = option(1024, "envs in the one vectorized env (the sampler's batch_B)")
    n_steps: int = 2_000_000
    seed: int = 0
    batch_T: int = option(16, "time steps per batch")
    discount: float = 0.99
    gae_lambda: float = 0.95
    learning_rate: float = 3e-3
    ratio_clip: float = 0.2
    epochs: int = 4
    minibatches: int = 4
    entropy_loss_coeff: float = 0.0
    hidden_size: int = option(64, "units of each of the two hidden layers")
    device: str = option("cpu", "where the agent trains and acts: cpu, cuda or cuda:N")
    env_device: str = option("cpu", "where the env steps: cpu, cuda or cuda:N")
    log_interval_steps: int = 200_000
    log_dir: str = "data/example_14"
    run_ID: int = 0


def build_and_train(config: Config, *, progress_bar: bool | None = None) -> dict[str, float]:
    """Train PPO on ``VectorCartPole(num_envs)`` with ``config``; returns the last logged row."""
    torch.set_num_threads(1)
    sampler = SerialSampler(
        VectorCartPole,
        {"num_envs": config.num_envs, "device": config.env_device},
        batch_T=config.batch_T,
        batch_B=config.num_envs,
        max_decorrelation_steps=0,  # N envs start together; PPO's first batches mix them
    )
    hidden = (config.hidden_size, config.hidden_size)
    agent = CategoricalPgAgent(model_kwargs={"hidden_sizes": hidden})
    algo = PPO(
        discount=config.discount,
        gae_lambda=config.gae_lambda,
        learning_rate=config.learning_rate,
        ratio_clip=config.ratio_clip,
        epochs=config.epochs,
        minibatches=config.minibatches,
        entropy_loss_coeff=config.entropy_loss_coeff,
    )
    runner = MinibatchRl(
        algo,
        agent,
        sampler,
        n_steps=config.n_steps,
        seed=config.seed,
        log_interval_steps=config.log_interval_steps,
        progress_bar=progress_bar,
        device=config.device,
    )
    label = f"PPO VectorCartPole({config.num_envs})"
    return train_and_log(config, runner.train, name="example_14", label=label)


if __name__ == "__main__":
    build_and_train(parse_config(Config, description=__doc__))
