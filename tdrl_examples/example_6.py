"""Example 6: PPO with parallel sampling (worker processes).

Example 1's PPO on CartPole-v1, with the envs stepped in worker processes. ``--sampler``
picks how the work is split:

* ``cpu`` (default): each worker steps a slice of the envs and runs the policy on a
  shared-memory copy of the agent, refreshed from the learner before each batch;
* ``gpu``: workers only step envs, this process runs one batched forward pass per time
  step for all envs (on the GPU when the agent is there);
* ``alternating``: two groups of workers; one steps its envs while this process computes
  the other's actions;
* ``serial``: everything in this process (example 1).

The batches are the same whichever sampler runs (for the same seeds), so the learning
curve matches example 1's up to the policy's sampling noise. Worker processes pay off for
costly envs or many cores; on two cores, CartPole runs fastest serially (see
``docs/samplers.md``). ``python tdrl_examples/example_6.py --sampler gpu --n-workers 2``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from tdrl.agents import CategoricalPgAgent
from tdrl.algos import PPO
from tdrl.launch import option, parse_config, train_and_log
from tdrl.runners import MinibatchRl
from tdrl.samplers import AlternatingSampler, CpuSampler, GpuSampler, SerialSampler

SAMPLERS = {
    "cpu": CpuSampler,
    "gpu": GpuSampler,
    "alternating": AlternatingSampler,
    "serial": SerialSampler,
}


@dataclasses.dataclass
class Config:
    """Everything that defines the run; saved to ``params.json``."""

    env_id: str = "CartPole-v1"
    sampler: Literal["cpu", "gpu", "alternating", "serial"] = "cpu"
    n_workers: int = 2
    n_steps: int = 100_000
    seed: int = 0
    batch_T: int = 32
    batch_B: int = 8
    discount: float = 0.98
    gae_lambda: float = 0.8
    learning_rate: float = 1e-3
    epochs: int = 20
    clip_grad_norm: float = 0.5
    device: str = option("cpu", "where the agent trains and acts: cpu, cuda or cuda:N")
    log_interval_steps: int = 10_000
    log_dir: str = "data/example_6"
    run_ID: int = 0


def build_and_train(config: Config, *, progress_bar: bool | None = None) -> dict[str, float]:
    """Train PPO with ``config``; returns the last logged row."""
    torch.set_num_threads(1)
    if config.sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {config.sampler!r}")
    kwargs = {"n_workers": config.n_workers} if config.sampler != "serial" else {}
    sampler = SAMPLERS[config.sampler](
        env_kwargs={"id": config.env_id},
        batch_T=config.batch_T,
        batch_B=config.batch_B,
        **kwargs,
    )
    algo = PPO(
        discount=config.discount,
        gae_lambda=config.gae_lambda,
        learning_rate=config.learning_rate,
        epochs=config.epochs,
        minibatches=1,
        entropy_loss_coeff=0.0,
        clip_grad_norm=config.clip_grad_norm,
    )
    runner = MinibatchRl(
        algo,
        CategoricalPgAgent(),
        sampler,
        n_steps=config.n_steps,
        seed=config.seed,
        log_interval_steps=config.log_interval_steps,
        progress_bar=progress_bar,
        device=config.device,
    )
    label = f"PPO {config.env_id} ({config.sampler} sampler)"
    return train_and_log(config, runner.train, name="example_6", label=label)


if __name__ == "__main__":
    build_and_train(parse_config(Config, description=__doc__))
