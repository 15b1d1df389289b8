"""Example 10: recurrent A2C or PPO on Atari (rlpyt's ``AtariLstmAgent`` configs).

Adds to example 4 a recurrent agent: ``CategoricalPgAgent(recurrent=True)`` builds rlpyt's
``AtariLstmModel`` for pixel observations (conv ``[16, 32]`` + 512-unit layer, an LSTM of
512 units that also reads the one-hot previous action and the previous reward, then policy
and value heads). The sampler carries each env's LSTM state, resets it where an episode
begins, and records it in the batch; A2C and PPO replay each ``[T, B]`` sequence from its
stored first state (PPO's minibatches split the envs and keep whole sequences). Settings
follow rlpyt's ``atari_lstm_a2c`` / ``atari_lstm_ppo`` configs ``"0"`` (one frame per
observation: the LSTM is the memory); ``--no-recurrent`` gives the feed-forward
``AtariFfModel`` with 4-frame stacks (``atari_ff_a2c`` / ``atari_ff_ppo``).

``python tdrl_examples/example_10.py --algo a2c --game pong --n-steps 10000000``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from tdrl.agents import CategoricalPgAgent
from tdrl.algos import A2C, PPO
from tdrl.envs import AtariTrajInfo, make_atari_env
from tdrl.launch import option, parse_config, train_and_log
from tdrl.runners import MinibatchRl
from tdrl.samplers import SerialSampler


@dataclasses.dataclass
class Config:
    """Everything that defines the run; saved to ``params.json``."""

    game: str = "pong"
    algo: Literal["a2c", "ppo"] = "a2c"
    recurrent: bool = option(True, "LSTM agent (False: feed-forward, 4-frame stacks)")
    n_steps: int = 50_000_000
    seed: int = 0
    batch_T: int | None = option(None, "time steps per batch (None: a2c 20 / ppo 64)")
    batch_B: int = 32
    max_decorrelation_steps: int = 1_000
    learning_rate: float | None = option(None, "step size (None: a2c 3e-4 / ppo 1e-3)")
    device: str = option("cpu", "where the agent trains and acts: cpu, cuda or cuda:N")
    log_interval_steps: int = 1_000_000
    log_dir: str = "data/example_10"
    run_ID: int = 0

    def scaled_to_budget(self) -> Config:
        """Shrink the decorrelation and log interval for short runs."""
        n = self.n_steps
        return dataclasses.replace(
            self,
            max_decorrelation_steps=min(self.max_decorrelation_steps, n // (10 * self.batch_B)),
            log_interval_steps=min(self.log_interval_steps, max(1, n // 2)),
        )


def build_and_train(config: Config, *, progress_bar: bool | None = None) -> dict[str, float]:
    """Train with ``config``; returns the last logged row."""
    torch.set_num_threads(1)
    ppo = config.algo == "ppo"
    batch_T = config.batch_T or (64 if ppo else 20)
    env_kwargs = {"game": config.game, "num_img_obs": 1 if config.recurrent else 4}
    sampler = SerialSampler(
        make_atari_env,
        env_kwargs,
        batch_T=batch_T,
        batch_B=config.batch_B,
        max_decorrelation_steps=config.max_decorrelation_steps,
        traj_info_cls=AtariTrajInfo,
    )
    if ppo:  # rlpyt atari_lstm_ppo / atari_ff_ppo "0"
        algo: A2C | PPO = PPO(
            learning_rate=config.learning_rate or 1e-3,
            value_loss_coeff=1.0,
            entropy_loss_coeff=0.01,
            gae_lambda=0.98,
            minibatches=4,
            epochs=4,
            linear_lr_schedule=True,
        )
    else:  # rlpyt atari_lstm_a2c / atari_ff_a2c "0"
        algo = A2C(
            learning_rate=config.learning_rate or 3e-4,
            value_loss_coeff=0.5,
            entropy_loss_coeff=0.01,
            clip_grad_norm=1.0,
        )
    runner = MinibatchRl(
        algo,
        CategoricalPgAgent(recurrent=config.recurrent),
        sampler,
        n_steps=config.n_steps,
        seed=config.seed,
        log_interval_steps=config.log_interval_steps,
        progress_bar=progress_bar,
        device=config.device,
    )
    kind = "lstm" if config.recurrent else "ff"
    return train_and_log(
        config,
        runner.train,
        name="example_10",
        label=f"{config.algo} {kind} {config.game}",
        score="GameScoreAverage",
    )


if __name__ == "__main__":
    build_and_train(parse_config(Config, description=__doc__).scaled_to_budget())
