"""Example 1: PPO on CartPole-v1, serial sampling, online statistics.

The smallest complete tdrl program: a ``SerialSampler`` steps 8 CartPole envs in this
process, a ``CategoricalPgAgent`` (separate 64-64 tanh policy and value MLPs) acts, ``PPO``
optimises, and ``MinibatchRl`` connects them, logging ``progress.csv`` in rlpyt's format.
The default settings (rl-zoo's tuned CartPole PPO hyperparameters) reach a
``ReturnAverage`` over the last 100 episodes of at least 475 within 100k steps.

``Config`` holds every setting; ``parse_config`` turns each field into a flag
(``--n-steps``, ``--batch-T``, ...) and ``train_and_log`` saves it to ``params.json`` in the
run's log directory and logs the summary; every later example uses both the same way.

With ``--recurrent`` the agent is an LSTM (``CategoricalPgAgent(recurrent=True)``: the LSTM
reads the observation, the one-hot previous action and the previous reward; 64-unit heads)
and PPO's minibatches keep whole sequences. On ``CartPoleNoVel-v1`` (the velocities hidden:
a memory task) ``--env-id CartPoleNoVel-v1 --recurrent --normalize-observation --critic-lstm
--reward-scale 0.1`` usually reaches a ``ReturnAverage`` of at least 450 within 100k steps
(4 of 5 seeds on the reference CPU; the exact numbers depend on the CPU's kernels, see
docs/recurrent.md), which the feed-forward agent cannot (about 50).

Run it with ``make run`` or ``python tdrl_examples/example_1.py --n-steps 100000``; add
``--device cuda`` to train and act on a GPU (the envs step on the CPU; every example that
trains a network takes ``--device``).
"""

from __future__ import annotations

import dataclasses

import torch

from tdrl.agents import CategoricalPgAgent
from tdrl.algos import PPO
from tdrl.launch import option, parse_config, train_and_log
from tdrl.runners import MinibatchRl
from tdrl.samplers import SerialSampler


@dataclasses.dataclass
class Config:
    """Everything that defines the run; saved to ``params.json``."""

    env_id: str = "CartPole-v1"
    n_steps: int = 100_000
    seed: int = 0
    batch_T: int = option(32, "time steps per batch")
    batch_B: int = option(8, "envs per batch")
    discount: float = 0.98
    gae_lambda: float = 0.8
    learning_rate: float = option(1e-3, "decays linearly to 0")
    ratio_clip: float = option(0.2, "decays linearly to 0")
    epochs: int = 20
    minibatches: int = 1
    entropy_loss_coeff: float = 0.0
    normalize_advantage: bool = True
    clip_grad_norm: float = 0.5
    recurrent: bool = option(False, "an LSTM agent (for partially observed envs)")
    lstm_size: int = option(64, "LSTM units (--recurrent)")
    critic_lstm: bool = option(False, "the value head gets an LSTM of its own (--recurrent)")
    normalize_observation: bool = option(False, "running mean/std observation normalisation")
    reward_scale: float = option(1.0, "rewards times this in the returns and value targets")
    device: str = option("cpu", "where the agent trains and acts: cpu, cuda or cuda:N")
    log_interval_steps: int = 10_000
    log_dir: str = "data/example_1"
    run_ID: int = 0


def build_and_train(config: Config, *, progress_bar: bool | None = None) -> dict[str, float]:
    """Train PPO with ``config``; returns the last logged row."""
    torch.set_num_threads(1)  # one thread is fastest for small MLPs on few cores
    sampler = SerialSampler(
        env_kwargs={"id": config.env_id}, batch_T=config.batch_T, batch_B=config.batch_B
    )
    if config.recurrent:  # the LSTM reads the observation; 64-unit policy and value heads
        model_kwargs: dict = {"hidden_sizes": (), "lstm_size": config.lstm_size}
        model_kwargs["critic_lstm"] = config.critic_lstm
        model_kwargs["head_sizes"] = (64,)
    else:  # separate 64-64 tanh MLPs
        model_kwargs = {}
    model_kwargs["normalize_observation"] = config.normalize_observation
    agent = CategoricalPgAgent(recurrent=config.recurrent, model_kwargs=model_kwargs)
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
        reward_scale=config.reward_scale,
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
    label = f"{'recurrent ' if config.recurrent else ''}PPO {config.env_id}"
    return train_and_log(config, runner.train, name="example_1", label=label)


if __name__ == "__main__":
    build_and_train(parse_config(Config, description=__doc__))
