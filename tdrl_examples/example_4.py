"""Example 4: DQN (or the Rainbow-minus-Noisy preset) on Atari with offline evaluation.

Adds to example 3 pixels: ``tdrl.envs.AtariEnv`` (rlpyt's Atari options: frame skip 4,
4-frame stacks of 104x80 grayscale max-pooled frames, clipped rewards, episodic lives for
the learner, up to 30 no-op starts, uint8 end to end), the Atari conv Q-network, a replay
buffer that stores each frame once (``FrameReplayBuffer``, chosen automatically for frame
stacks) and ``MinibatchRlEval``, which evaluates in separate envs that play whole games
(``episodic_lives=False``) and logs the raw ``GameScore``. Settings follow rlpyt's
``atari_dqn`` config; ``--rainbow`` switches to ``rainbow_minus_noisy`` (C51 + double +
dueling + 3-step + prioritized replay).

Short runs shrink the budget-bound settings (warm-up, replay size, evaluation and
decorrelation steps) so that every stage still runs.
``python tdrl_examples/example_4.py --game pong --n-steps 10000000 [--rainbow]``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from tdrl.agents import DqnAgent
from tdrl.algos import DQN, rainbow_minus_noisy
from tdrl.envs import AtariTrajInfo, make_atari_env
from tdrl.launch import option, parse_config, train_and_log
from tdrl.runners import MinibatchRlEval
from tdrl.samplers import SerialSampler


@dataclasses.dataclass
class Config:
    """Everything that defines the run; saved to ``params.json``."""

    game: str = "pong"
    rainbow: bool = option(False, "Rainbow-minus-Noisy preset")
    n_steps: int = 50_000_000
    seed: int = 0
    batch_T: int = 2
    batch_B: int = 16
    max_decorrelation_steps: int = 1_000
    batch_size: int = 32
    learning_rate: float = 1e-4
    replay_size: int = 1_000_000
    replay_ratio: float = 8.0
    min_steps_learn: int = 50_000
    target_update_interval: int = 312
    eps_steps: int = 1_000_000
    double_dqn: bool = False
    replay_storage: Literal["memory", "memmap"] = option("memory", "memmap: on disk")
    eval_n_envs: int = 4
    eval_max_steps: int = 125_000
    eval_max_trajectories: int = 100
    device: str = option("cpu", "where the agent trains and acts: cpu, cuda or cuda:N")
    log_interval_steps: int = 1_000_000
    log_dir: str = "data/example_4"
    run_ID: int = 0

    def scaled_to_budget(self) -> Config:
        """Shrink budget-bound settings for runs much shorter than rlpyt's 50M steps."""
        n = self.n_steps
        return dataclasses.replace(
            self,
            min_steps_learn=min(self.min_steps_learn, max(self.batch_T * self.batch_B, n // 10)),
            replay_size=min(self.replay_size, max(1_000, n)),
            eps_steps=min(self.eps_steps, max(1, n // 2)),
            eval_max_steps=min(self.eval_max_steps, max(200, n // 4)),
            max_decorrelation_steps=min(self.max_decorrelation_steps, n // (10 * self.batch_B)),
            log_interval_steps=min(self.log_interval_steps, max(1, n // 2)),
        )


def build_and_train(config: Config, *, progress_bar: bool | None = None) -> dict[str, float]:
    """Train with ``config``; returns the last logged row (evaluation statistics)."""
    torch.set_num_threads(1)
    sampler = SerialSampler(
        make_atari_env,
        {"game": config.game},
        batch_T=config.batch_T,
        batch_B=config.batch_B,
        max_decorrelation_steps=config.max_decorrelation_steps,
        eval_n_envs=config.eval_n_envs,
        eval_env_kwargs={"game": config.game, "episodic_lives": False},
        eval_max_steps=config.eval_max_steps,
        eval_max_trajectories=config.eval_max_trajectories,
        traj_info_cls=AtariTrajInfo,
    )
    algo_kwargs = {
        "batch_size": config.batch_size,
        "replay_size": config.replay_size,
        "replay_ratio": config.replay_ratio,
        "min_steps_learn": config.min_steps_learn,
        "target_update_interval": config.target_update_interval,
        "eps_steps": config.eps_steps,
        "replay_storage": config.replay_storage,
    }
    if config.rainbow:
        algo, agent = rainbow_minus_noisy(algo_kwargs=algo_kwargs)
    else:
        algo = DQN(learning_rate=config.learning_rate, double_dqn=config.double_dqn, **algo_kwargs)
        agent = DqnAgent()
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
    label = f"{'rainbow' if config.rainbow else 'dqn'} {config.game} (eval)"
    return train_and_log(
        config, runner.train, name="example_4", label=label, score="GameScoreAverage"
    )


if __name__ == "__main__":
    build_and_train(parse_config(Config, description=__doc__).scaled_to_budget())
