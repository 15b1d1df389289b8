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

import argparse
import dataclasses
import time

import torch

from tdrl.agents.qpg import SacAgent, Td3Agent
from tdrl.algos.qpg import SAC, TD3
from tdrl.logging import logger_context, next_run_id
from tdrl.runners import MinibatchRlEval
from tdrl.samplers import SerialSampler


@dataclasses.dataclass
class Config:
    """Everything that defines the run; saved to ``params.json``."""

    env_id: str = "HalfCheetah-v5"
    algo: str = "sac"  # or "td3"
    n_steps: int = 1_000_000
    seed: int = 0
    batch_T: int = 1
    batch_B: int = 1
    min_steps_learn: int = 10_000
    replay_size: int = 1_000_000
    eval_n_envs: int = 5
    eval_max_steps: int = 50_000
    eval_max_trajectories: int = 10
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
    )
    with logger_context(
        config.log_dir, config.run_ID, "example_5", dataclasses.asdict(config), echo=False
    ) as logger:
        t0 = time.time()
        row = runner.train()
        logger.log(
            f"{config.algo} {config.env_id}: eval ReturnAverage {row['ReturnAverage']:.1f} after "
            f"{row['Diagnostics/CumSteps']:.0f} steps in {time.time() - t0:.1f} s; "
            f"logs in {logger.run_dir}",
            echo=True,
        )
    return row


def main() -> None:
    defaults = Config()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default=defaults.env_id)
    parser.add_argument("--algo", default=defaults.algo, choices=("sac", "td3"))
    parser.add_argument("--n-steps", type=int, default=defaults.n_steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--log-dir", default=defaults.log_dir)
    parser.add_argument("--run-ID", type=int, default=None, help="default: next free run")
    args = parser.parse_args()
    config = dataclasses.replace(
        defaults,
        env_id=args.env_id,
        algo=args.algo,
        n_steps=args.n_steps,
        seed=args.seed,
        log_dir=args.log_dir,
        run_ID=args.run_ID if args.run_ID is not None else next_run_id(args.log_dir),
    ).scaled_to_budget()
    build_and_train(config)


if __name__ == "__main__":
    main()
