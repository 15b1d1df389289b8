"""Example 5: SAC on a MuJoCo task with offline evaluation.

Adds to examples 2 and 3 continuous-action Q-learning: a ``SacAgent`` (tanh-squashed
Gaussian policy and twin Q-functions, 256-256 each, with a Polyak-averaged target) and
``SAC`` with rlpyt's defaults (learned entropy temperature with target entropy ``-|A|``,
one update of batch 256 per environment step, 10k warm-up steps with fixed-std
exploration). Time-limit cuts bootstrap from the true next observation. ``--algo td3``
runs TD3 instead. ``MinibatchRlEval`` evaluates the deterministic policy (``tanh`` of the
mean) in separate envs.

Short runs shrink the warm-up, evaluation budget and log interval so that every stage still
runs. ``python tdrl_examples/example_5.py --env-id HalfCheetah-v5 --n-steps 1000000``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from tdrl.agents import SacAgent, Td3Agent
from tdrl.algos import SAC, TD3
from tdrl.launch import option, parse_config, train_and_log
from tdrl.runners import MinibatchRlEval
from tdrl.samplers import SerialSampler


@dataclasses.dataclass
class Config:
    """Everything that defines the run; saved to ``params.json``."""

    env_id: str = "HalfCheetah-v5"
    algo: Literal["sac", "td3"] = "sac"
    n_steps: int = 1_000_000
    seed: int = 0
    batch_T: int = 1
    batch_B: int = 1
    min_steps_learn: int = 10_000
    replay_size: int = 1_000_000
    eval_n_envs: int = 5
    eval_max_steps: int = 50_000
    eval_max_trajectories: int = 10
    device: str = option("cpu", "where the agent trains and acts: cpu, cuda or cuda:N")
    log_interval_steps: int = 10_000
    log_dir: str = "data/example_5"
    run_ID: int = 0

    def scaled_to_budget(self) -> Config:
        """Shrink budget-bound settings for runs much shorter than 1M steps."""
        n = self.n_steps
        return dataclasses.replace(
            self,
            min_steps_learn=min(self.min_steps_learn, max(1, n // 2)),
            eval_max_steps=min(self.eval_max_steps, max(200, n // 2)),
            log_interval_steps=min(self.log_interval_steps, max(1, n // 2)),
        )


def build_and_train(config: Config, *, progress_bar: bool | None = None) -> dict[str, float]:
    """Train with ``config``; returns the last logged row (evaluation statistics)."""
    torch.set_num_threads(1)
    sampler = SerialSampler(
        env_kwargs={"id": config.env_id},
        batch_T=config.batch_T,
        batch_B=config.batch_B,
        max_decorrelation_steps=0,
        eval_n_envs=config.eval_n_envs,
        eval_max_steps=config.eval_max_steps,
        eval_max_trajectories=config.eval_max_trajectories,
    )
    kwargs = {"min_steps_learn": config.min_steps_learn, "replay_size": config.replay_size}
    if config.algo == "sac":
        algo, agent = SAC(**kwargs), SacAgent()
    elif config.algo == "td3":
        algo, agent = TD3(**kwargs), Td3Agent()
    else:
        raise ValueError(f"algo must be 'sac' or 'td3', got {config.algo!r}")
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
    return train_and_log(config, runner.train, name="example_5", label=label)


if __name__ == "__main__":
    build_and_train(parse_config(Config, description=__doc__).scaled_to_budget())
