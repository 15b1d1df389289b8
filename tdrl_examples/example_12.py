"""Example 12: meta-RL with PEARL on point-robot.

Adds to example 5 (SAC) meta-learning over a family of tasks: each point-robot task is a
goal in [-1, 1]², the observation is the position only, so the policy must infer the goal
from experience. A ``PearlAgent`` encodes a context of transitions into a posterior over a
latent ``z`` that the SAC networks take beside the observation; ``PEARL`` trains the
encoder through the critic's Bellman loss plus a KL term; ``MetaRl`` runs oyster's
schedule (collection with ``z`` from the prior and the posterior, per-task replay,
meta-batched updates) and evaluates on held-out test tasks from the prior, inferring the
posterior online after the first trajectory (``AverageReturn_all_test_tasks``, logged as
``ReturnAverage``; ``AverageReturn_rollout_{k}`` shows the gain from trajectory to
trajectory).

The schedule is oyster's point-robot config (200 initial steps per task, 200 prior and
200 extra posterior steps for 5 tasks per iteration, 60 evaluation steps, KL weight 0.1),
scaled to run in minutes on a small CPU: 80 train and 20 test tasks as oyster, 64-64
networks (oyster 300-300-300, encoder 200-200-200), 200 updates of 8 tasks x 128
transitions per iteration (oyster 1000 of 16 x 256), and reward scale 5 instead of 100:
on this budget the reference's 100 did not learn (docs/meta_rl.md has the numbers).
``--no-use-context`` runs the context-free baseline (the same SAC with z fixed at zero).

``n_steps`` is the budget of collected env steps: the run takes the fewest iterations
whose collection (``n_train_tasks x 200`` steps at iteration 0, then
``num_tasks_sample x 400`` per iteration, every trajectory 20 steps) reaches it, at least
one. Budgets under 20 x ``num_train_steps_per_itr`` steps take ``n_steps // 20`` updates
per iteration (the smoke run: 2048 steps, one iteration of 102 updates).
``python tdrl_examples/example_12.py`` (120k steps: 52 iterations, minutes on one core).
"""

from __future__ import annotations

import dataclasses

import torch

from tdrl.agents.qpg import PearlAgent
from tdrl.algos.qpg import PEARL
from tdrl.launch import option, parse_config, train_and_log
from tdrl.runners.meta_rl import MetaRl

#: Steps of every point-robot trajectory (oyster's ``max_path_length``).
PATH_LENGTH = 20


def _whole_paths(n: int) -> int:
    """Steps a phase of ``n`` steps collects: whole trajectories of ``PATH_LENGTH``."""
    return -(-n // PATH_LENGTH) * PATH_LENGTH


@dataclasses.dataclass
class Config:
    """Everything that defines the run; saved to ``params.json``."""

    n_steps: int = option(120_000, "env steps to collect (sets the iterations)")
    seed: int = 0
    use_context: bool = option(True, "False: the context-free baseline (z fixed at zero)")
    n_train_tasks: int = 80
    n_eval_tasks: int = 20
    num_initial_steps: int = 200
    num_tasks_sample: int = 5
    num_steps_prior: int = 200
    num_steps_posterior: int = 0
    num_extra_rl_steps_posterior: int = 200
    num_train_steps_per_itr: int = 200
    meta_batch: int = 8
    batch_size: int = 128
    embedding_batch_size: int = 64
    num_steps_per_eval: int = 60
    num_evals: int = 1
    reward_scale: float = 5.0
    kl_lambda: float = 0.1
    sac_variant: str = option("v1", "v1: oyster's SAC with V; v2: twin-Q learned temperature")
    hidden_sizes: tuple[int, ...] = (64, 64)
    encoder_hidden_sizes: tuple[int, ...] = (64, 64)
    replay_size: int = 100_000
    device: str = option("cpu", "where the agent trains and acts: cpu, cuda or cuda:N")
    log_dir: str = "data/example_12"
    run_ID: int = 0

    def n_iterations(self) -> int:
        """The fewest iterations whose collected steps reach ``n_steps`` (at least 1)."""
        initial = self.n_train_tasks * _whole_paths(self.num_initial_steps)
        phases = (self.num_steps_prior, self.num_steps_posterior, self.num_extra_rl_steps_posterior)
        per_itr = self.num_tasks_sample * sum(_whole_paths(n) for n in phases)
        if per_itr == 0:
            return 1
        return max(1, -(-(self.n_steps - initial) // per_itr))

    def scaled_to_budget(self) -> Config:
        """Fewer updates per iteration (``n_steps // 20``) for short budgets."""
        updates = min(self.num_train_steps_per_itr, max(1, self.n_steps // 20))
        return dataclasses.replace(self, num_train_steps_per_itr=updates)


def make_runner(config: Config) -> MetaRl:
    """The agent, the algorithm and the ``MetaRl`` runner of ``config`` (not started)."""
    agent = PearlAgent(
        hidden_sizes=config.hidden_sizes,
        encoder_hidden_sizes=config.encoder_hidden_sizes,
        use_context=config.use_context,
        sac_variant=config.sac_variant,
    )
    algo = PEARL(
        batch_size=config.batch_size,
        embedding_batch_size=config.embedding_batch_size,
        meta_batch=config.meta_batch,
        reward_scale=config.reward_scale,
        kl_lambda=config.kl_lambda,
        sac_variant=config.sac_variant,
    )
    return MetaRl(
        algo,
        agent,
        env_name="point-robot",
        env_kwargs={"max_episode_steps": PATH_LENGTH},
        n_train_tasks=config.n_train_tasks,
        n_eval_tasks=config.n_eval_tasks,
        n_iterations=config.n_iterations(),
        seed=config.seed,
        device=config.device,
        num_initial_steps=config.num_initial_steps,
        num_tasks_sample=config.num_tasks_sample,
        num_steps_prior=config.num_steps_prior,
        num_steps_posterior=config.num_steps_posterior,
        num_extra_rl_steps_posterior=config.num_extra_rl_steps_posterior,
        num_train_steps_per_itr=config.num_train_steps_per_itr,
        num_steps_per_eval=config.num_steps_per_eval,
        num_evals=config.num_evals,
        replay_size=config.replay_size,
    )


def build_and_train(config: Config, *, progress_bar: bool | None = None) -> dict[str, float]:
    """Train with ``config``; returns the last logged row.

    ``progress_bar`` is accepted for the examples' common signature; ``MetaRl`` shows none.
    """
    torch.set_num_threads(1)
    runner = make_runner(config)
    return train_and_log(config, runner.train, name="example_12", label="PEARL point-robot")


if __name__ == "__main__":
    build_and_train(parse_config(Config, description=__doc__).scaled_to_budget())
