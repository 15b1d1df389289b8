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

import dataclasses
from typing import Literal

import torch

from tdrl.agents import DqnAgent
from tdrl.algos import DQN, CategoricalDQN
from tdrl.launch import option, parse_config, train_and_log
from tdrl.runners import MinibatchRlEval
from tdrl.samplers import SerialSampler


@dataclasses.dataclass
class Config:
    """Everything that defines the run; saved to ``params.json``."""

    env_id: str = "CartPole-v1"
    algo: Literal["dqn", "catdqn"] = "dqn"
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
    prioritized_replay: bool = option(False, aliases=("--prioritized",))
    n_step_return: int = option(1, aliases=("--n-step",))
    delta_clip: float | None = 1.0
    eval_n_envs: int = 4
    eval_max_trajectories: int = 8
    eval_max_steps: int = 20_000
    device: str = option("cpu", "where the agent trains and acts: cpu, cuda or cuda:N")
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
        device=config.device,
    )
    label = f"{config.algo} {config.env_id} (eval)"
    return train_and_log(config, runner.train, name="example_3", label=label)


if __name__ == "__main__":
    build_and_train(parse_config(Config, description=__doc__))
