"""Example 11: R2D1 (recurrent replay DQN) on Atari with offline evaluation.

Adds to example 4 (DQN on Atari) and example 10 (a recurrent agent) the recurrent
off-policy pieces: ``R2d1Agent`` acts epsilon-greedily with rlpyt's ``AtariR2d1Model``
(conv + 512-unit layer, an LSTM of 512 units that also reads the one-hot previous action
and reward, a dueling head); the sampler carries and records its LSTM state; ``R2D1``
stores the batches in a prioritized sequence replay buffer that keeps each frame once and
the LSTM state every 40 steps (``SequenceFrameReplayBuffer``), with input priorities from
the Q-values the sampler recorded, and trains on sequences of 40 burn-in and 80 trained
steps with 5-step double-DQN targets under value rescaling. Settings follow rlpyt's
``atari_r2d1`` config ``r2d1``, except the sampler's ``batch_T`` of 40 (rlpyt: 30), as the
sequence buffer takes batches of whole ``store_rnn_state_interval`` chunks.

Short runs shrink the budget-bound settings (warm-up, replay size, epsilon schedule,
evaluation, decorrelation); under 100k steps (smoke runs) they also switch to small
sequences and batches, like rlpyt's ``r2d1_test`` config, so every stage runs in seconds.
``python tdrl_examples/example_11.py --game pong --n-steps 10000000``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from tdrl.agents import R2d1Agent
from tdrl.algos import R2D1
from tdrl.envs import AtariTrajInfo, make_atari_env
from tdrl.launch import option, parse_config, train_and_log
from tdrl.runners import MinibatchRlEval
from tdrl.samplers import SerialSampler


@dataclasses.dataclass
class Config:
    """Everything that defines the run; saved to ``params.json``."""

    game: str = "pong"
    n_steps: int = 100_000_000
    seed: int = 0
    batch_T: int = option(40, "sampler steps per batch (a multiple of the state interval)")
    batch_B: int = 32
    max_decorrelation_steps: int = 1_000
    train_T: int = option(80, "trained steps per sequence (R2D1's batch_T)")
    train_B: int = option(32, "sequences per update (R2D1's batch_B)")
    warmup_T: int = 40
    store_rnn_state_interval: int = 40
    learning_rate: float = 1e-4
    replay_size: int = 1_000_000
    replay_ratio: float = 4.0
    min_steps_learn: int = 100_000
    target_update_interval: int = 2_500
    eps_steps: int = 1_000_000
    pri_alpha: float = 0.9
    pri_beta: float = option(0.6, "importance-sampling exponent (fixed)")
    input_priority_shift: int = 2
    replay_storage: Literal["memory", "memmap"] = option("memory", "memmap: on disk")
    eval_n_envs: int = 4
    eval_max_steps: int = 161_000
    eval_max_trajectories: int = 100
    device: str = option("cpu", "where the agent trains and acts: cpu, cuda or cuda:N")
    log_interval_steps: int = 1_000_000
    log_dir: str = "data/example_11"
    run_ID: int = 0

    def scaled_to_budget(self) -> Config:
        """Shrink budget-bound settings for runs much shorter than rlpyt's 100M steps."""
        n = self.n_steps
        config = self
        if n < 100_000:  # smoke runs: rlpyt's r2d1_test shapes, smaller still
            config = dataclasses.replace(
                config,
                batch_T=10,
                batch_B=4,
                train_T=10,
                train_B=4,
                warmup_T=5,
                store_rnn_state_interval=5,
                input_priority_shift=1,
            )
        size = config.batch_T * config.batch_B
        return dataclasses.replace(
            config,
            min_steps_learn=min(config.min_steps_learn, max(size, n // 10)),
            replay_size=min(config.replay_size, max(20 * size, n)),
            eps_steps=min(config.eps_steps, max(1, n // 2)),
            eval_max_steps=min(config.eval_max_steps, max(200, n // 4)),
            max_decorrelation_steps=min(config.max_decorrelation_steps, n // (10 * config.batch_B)),
            log_interval_steps=min(config.log_interval_steps, max(1, n // 2)),
        )


def build_and_train(config: Config, *, progress_bar: bool | None = None) -> dict[str, float]:
    """Train with ``config``; returns the last logged row (evaluation statistics)."""
    torch.set_num_threads(1)
    env_kwargs = {"game": config.game, "clip_reward": False, "horizon": 27_000}
    sampler = SerialSampler(
        make_atari_env,
        env_kwargs,
        batch_T=config.batch_T,
        batch_B=config.batch_B,
        max_decorrelation_steps=config.max_decorrelation_steps,
        eval_n_envs=config.eval_n_envs,
        eval_env_kwargs={**env_kwargs, "episodic_lives": False},
        eval_max_steps=config.eval_max_steps,
        eval_max_trajectories=config.eval_max_trajectories,
        traj_info_cls=AtariTrajInfo,
    )
    algo = R2D1(
        batch_T=config.train_T,
        batch_B=config.train_B,
        warmup_T=config.warmup_T,
        store_rnn_state_interval=config.store_rnn_state_interval,
        learning_rate=config.learning_rate,
        replay_size=config.replay_size,
        replay_ratio=config.replay_ratio,
        min_steps_learn=config.min_steps_learn,
        target_update_interval=config.target_update_interval,
        eps_steps=config.eps_steps,
        pri_alpha=config.pri_alpha,
        pri_beta_init=config.pri_beta,
        pri_beta_final=config.pri_beta,
        input_priority_shift=config.input_priority_shift,
        replay_storage=config.replay_storage,
    )
    runner = MinibatchRlEval(
        algo,
        R2d1Agent(model_kwargs={"dueling": True}),
        sampler,
        n_steps=config.n_steps,
        seed=config.seed,
        log_interval_steps=config.log_interval_steps,
        progress_bar=progress_bar,
        device=config.device,
    )
    return train_and_log(
        config,
        runner.train,
        name="example_11",
        label=f"r2d1 {config.game} (eval)",
        score="GameScoreAverage",
    )


if __name__ == "__main__":
    build_and_train(parse_config(Config, description=__doc__).scaled_to_budget())
