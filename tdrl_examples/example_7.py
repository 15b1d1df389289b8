"""Example 7: asynchronous sampling and optimisation (DQN on CartPole, or SAC on Pendulum).

``AsyncRlEval`` runs the sampler in a thread with its own copy of the agent, appending each
batch to the replay buffer while this thread optimises; new weights reach the sampler after
every optimisation round. The optimiser is throttled so that ``replay_ratio`` bounds the
data reuse, and ``--max-lead`` bounds how far the sampler may run ahead (1: collect the
next batch while the current ones are trained on, keeping the replay ratio of a serial
run; 0: free-running, as rlpyt). ``--sampler gpu`` steps the envs in worker processes
(the policy still runs here, batched), so env steps and gradient updates use different
cores.

``--algo dqn`` trains example 3's double DQN on CartPole-v1; ``--algo sac`` trains SAC on
Pendulum-v1 (example 5's agent and algorithm with 10k-step settings).
``--sampler-process`` moves the sampler from a thread to a process of its own (rlpyt's
layout: no GIL shared with the optimiser). ``--runner sync`` trains the same
configuration with ``MinibatchRlEval``, for comparison.
``python tdrl_examples/example_7.py --algo sac --n-steps 10000``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from tdrl.agents import DqnAgent, SacAgent
from tdrl.algos import DQN, SAC
from tdrl.launch import option, parse_config, train_and_log
from tdrl.runners import AsyncRlEval, MinibatchRlEval
from tdrl.samplers import GpuSampler, SerialSampler


@dataclasses.dataclass
class Config:
    """Everything that defines the run; saved to ``params.json``."""

    algo: Literal["dqn", "sac"] = "dqn"
    sampler: Literal["serial", "gpu"] = option("serial", "gpu: envs in worker processes")
    n_workers: int = 1
    max_lead: int = option(1, "0: free-running sampler")
    runner: Literal["async", "sync"] = option("async", "sync: MinibatchRlEval, to compare")
    sampler_process: bool = option(False, "async: sample in a separate process")
    n_steps: int = 50_000
    seed: int = 0
    device: str = option("cpu", "where the learner trains: cpu, cuda or cuda:N")
    log_dir: str = "data/example_7"
    run_ID: int = 0


def build(config: Config):
    """``(env_id, sampler kwargs, agent, algo, log_interval_steps)`` for ``config.algo``."""
    if config.algo == "dqn":  # example 3's settings
        agent = DqnAgent(model_kwargs={"hidden_sizes": (256, 256)}, eps_final=0.04)
        algo = DQN(
            batch_size=128,
            learning_rate=1e-3,
            replay_size=100_000,
            replay_ratio=32,
            min_steps_learn=min(1_000, config.n_steps // 2),
            target_update_tau=0.01,
            target_update_interval=1,
            optim_kwargs={"eps": 1e-8},
            eps_steps=8_000,
            double_dqn=True,
            delta_clip=1.0,
        )
        return "CartPole-v1", {"batch_T": 256, "batch_B": 1}, agent, algo, 2_500
    if config.algo == "sac":  # 200-step episodes: an update per step, 1k warm-up steps
        algo = SAC(min_steps_learn=min(1_000, config.n_steps // 2), replay_ratio=256)
        return "Pendulum-v1", {"batch_T": 1, "batch_B": 1}, SacAgent(), algo, 2_000
    raise ValueError(f"algo must be 'dqn' or 'sac', got {config.algo!r}")


def build_and_train(config: Config, *, progress_bar: bool | None = None) -> dict[str, float]:
    """Train with ``config``; returns the last logged row (evaluation statistics)."""
    torch.set_num_threads(1)
    env_id, batch, agent, algo, log_interval = build(config)
    log_interval = min(log_interval, max(1, config.n_steps // 2))
    eval_kwargs = {"eval_n_envs": 4, "eval_max_trajectories": 8, "eval_max_steps": 20_000}
    if config.sampler == "serial":
        sampler = SerialSampler(
            env_kwargs={"id": env_id}, max_decorrelation_steps=0, **batch, **eval_kwargs
        )
    elif config.sampler == "gpu":
        sampler = GpuSampler(
            env_kwargs={"id": env_id},
            n_workers=config.n_workers,
            max_decorrelation_steps=0,
            **batch,
            **eval_kwargs,
        )
    else:
        raise ValueError(f"sampler must be 'serial' or 'gpu', got {config.sampler!r}")
    common = {
        "n_steps": config.n_steps,
        "seed": config.seed,
        "log_interval_steps": log_interval,
        "progress_bar": progress_bar,
        "device": config.device,
    }
    if config.runner == "async":
        lead = config.max_lead or None
        runner = AsyncRlEval(
            algo,
            agent,
            sampler,
            max_sampler_lead_itrs=lead,
            sampler_process=config.sampler_process,
            **common,
        )
    elif config.runner == "sync":
        runner = MinibatchRlEval(algo, agent, sampler, **common)
    else:
        raise ValueError(f"runner must be 'async' or 'sync', got {config.runner!r}")
    label = f"{config.runner} {config.algo} {env_id} (eval)"
    return train_and_log(config, runner.train, name="example_7", label=label)


if __name__ == "__main__":
    build_and_train(parse_config(Config, description=__doc__))
