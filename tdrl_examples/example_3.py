"""Example 3: DQN on CartPole-v1 with a replay buffer.

Adds to example 1 the off-policy pieces: a ``DqnAgent`` acting epsilon-greedily on an MLP
Q-network (with a target network), and ``DQN``, which appends every sampler batch to an
n-step replay buffer and replays minibatches from it (``replay_ratio`` transitions replayed
per transition collected). The runner is the same ``MinibatchRl`` as for PPO. Flags switch
on DQN's variants: ``--dueling``, ``--prioritized``, ``--n-step``, or ``--algo catdqn``
for categorical DQN (C51). ``MinibatchRlEval`` evaluates the greedy policy (epsilon 0.001)
in 4 separate envs every 2,500 steps, and ``ReturnAverage`` in ``progress.csv`` is that
evaluation return.

The default settings (double DQN, Huber loss, soft target updates every update, 32
transitions replayed per transition collected) reach an evaluation ``ReturnAverage`` of
475 or more within 50k environment steps.
``python tdrl_examples/example_3.py --n-steps 50000``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from tdrl.agents.dqn import DqnAgent
from tdrl.algos.dqn import DQN, CategoricalDQN
from tdrl.logging import logger_context, next_run_id
from tdrl.runners import MinibatchRlEval
from tdrl.samplers import SerialSampler


@dataclasses.dataclass
class Config:
    """Everything that defines the run; saved to ``params.json``."""

    env_id: str = "CartPole-v1"
    algo: str = "dqn"  # or "catdqn"
    n_steps: int = 50_000
    seed: int = 0
    batch_T: int = 256
    batch_B: int = 1
    discount: float = 0.99
    batch_size: int = 128
    learning_rate: float = 1e-3
    adam_eps: float = 1e-8
    replay_size: int = 100_000
    replay_ratio: float = 32.0
    min_steps_learn: int = 1_000
    target_update_tau: float = 0.01
    target_update_interval: int = 1
    eps_steps: int = 8_000
    eps_final: float = 0.04
    hidden_sizes: tuple[int, ...] = (256, 256)
    double_dqn: bool = True
    dueling: bool = False
    prioritized_replay: bool = False
    n_step_return: int = 1
    delta_clip: float | None = 1.0
    eval_n_envs: int = 4
    eval_max_trajectories: int = 8
    eval_max_steps: int = 20_000
    log_interval_steps: int = 2_500
    log_dir: str = "data/example_3"
    run_ID: int = 0


def build_and_train(config: Config, *, progress_bar: bool | None = None) -> dict[str, float]:
    """Train DQN (or C51) with ``config``; returns the last logged row."""
    torch.set_num_threads(1)
    sampler = SerialSampler(
        env_kwargs={"id": config.env_id},
        batch_T=config.batch_T,
        batch_B=config.batch_B,
        max_decorrelation_steps=0,
        eval_n_envs=config.eval_n_envs,
        eval_max_trajectories=config.eval_max_trajectories,
        eval_max_steps=config.eval_max_steps,
    )
    model_kwargs = {"hidden_sizes": config.hidden_sizes, "dueling": config.dueling}
    algo_kwargs = {
        "discount": config.discount,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "replay_size": config.replay_size,
        "replay_ratio": config.replay_ratio,
        "min_steps_learn": config.min_steps_learn,
        "target_update_interval": config.target_update_interval,
        "target_update_tau": config.target_update_tau,
        "optim_kwargs": {"eps": config.adam_eps},
        "eps_steps": config.eps_steps,
        "double_dqn": config.double_dqn,
        "prioritized_replay": config.prioritized_replay,
        "n_step_return": config.n_step_return,
        "delta_clip": config.delta_clip,
    }
    if config.algo == "dqn":
        agent = DqnAgent(model_kwargs=model_kwargs, eps_final=config.eps_final)
        algo = DQN(**algo_kwargs)
    elif config.algo == "catdqn":
        agent = DqnAgent(n_atoms=51, model_kwargs=model_kwargs, eps_final=config.eps_final)
        algo = CategoricalDQN(V_min=0.0, V_max=100.0, **algo_kwargs)
    else:
        raise ValueError(f"algo must be 'dqn' or 'catdqn', got {config.algo!r}")
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
        config.log_dir, config.run_ID, "example_3", dataclasses.asdict(config), echo=False
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
    parser.add_argument("--algo", default=defaults.algo, choices=("dqn", "catdqn"))
    parser.add_argument("--n-steps", type=int, default=defaults.n_steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--log-dir", default=defaults.log_dir)
    parser.add_argument("--run-ID", type=int, default=None, help="default: next free run")
    parser.add_argument("--dueling", action="store_true")
    parser.add_argument("--prioritized", action="store_true")
    parser.add_argument("--n-step", type=int, default=defaults.n_step_return)
    args = parser.parse_args()
    config = dataclasses.replace(
        defaults,
        algo=args.algo,
        n_steps=args.n_steps,
        seed=args.seed,
        log_dir=args.log_dir,
        run_ID=args.run_ID if args.run_ID is not None else next_run_id(args.log_dir),
        dueling=args.dueling,
        prioritized_replay=args.prioritized,
        n_step_return=args.n_step,
    )
    build_and_train(config)


if __name__ == "__main__":
    main()
