"""The off-policy schedule: replay buffer, replayed updates, target updates.

Every ``ReplayAlgorithm`` (DQN, CategoricalDQN, R2D1, DDPG, TD3, SAC, SAC_V) runs the same
skeleton, written here once, around its own ``loss``:

* ``check_replay_settings`` checks, when an algorithm is built, the settings they all have
  (discount, compile, target updates, optimizer) and builds its ``ReplayConfig``;
* ``start_replay`` sets the number of updates per iteration and the first learning
  iteration from the ``ReplayConfig`` and the sampler's batch;
* ``make_replay_buffer`` builds the buffer from the algorithm's ``ReplayConfig``;
* ``replay_updates`` is ``optimize_agent``: append the sampler's batch, then, once learning
  started, ``updates_per_optimize`` calls of ``algo.update`` on drawn minibatches;
* ``update`` is a gradient step (``tdrl.utils.optim.clipped_step``, compiled with
  ``compile=True``) followed by ``tdrl.algos.updates.finish_update``: the new priorities
  of a prioritized buffer, the update counter, and the target update when due.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Protocol

import torch
from tensordict import TensorDictBase

from tdrl import keys
from tdrl.algos.base import ReplayAlgorithm
from tdrl.algos.settings import check_optimizer_args, check_target_args
from tdrl.keys import BatchSpec
from tdrl.replays.base import ReplayConfig, ReplaySampler
from tdrl.replays.n_step import ReplayBuffer
from tdrl.utils.checks import check_bool, check_range
from tdrl.utils.optim import stack_diagnostics

__all__ = [
    "ReplaySettings",
    "check_replay_settings",
    "make_replay_buffer",
    "replay_updates",
    "start_replay",
]


class ReplaySettings(Protocol):
    """The hyperparameters every replay algorithm has (besides ``ReplayConfig``'s)."""

    discount: float
    compile: bool
    target_update_tau: float
    target_update_interval: int
    learning_rate: float
    optim_cls: type[torch.optim.Optimizer]
    optim_kwargs: dict[str, Any]


def check_replay_settings(algo: ReplaySettings) -> ReplayConfig:
    """Check, in place, the settings every replay algorithm has; returns its ``ReplayConfig``.

    ``discount`` in ``[0, 1]``, a bool ``compile``, ``check_target_args`` and
    ``check_optimizer_args``; the ``ReplayConfig`` is built from the algorithm's fields of
    the same names (``batch_size``, ``replay_size``, ...), which it checks.
    """
    algo.discount = check_range("discount", algo.discount, 0.0, 1.0)
    config = ReplayConfig.from_arguments(vars(algo))
    for field in dataclasses.fields(config):  # the checked values, back on the algorithm
        setattr(algo, field.name, getattr(config, field.name))
    algo.compile = check_bool("compile", algo.compile)
    algo.target_update_tau, algo.target_update_interval = check_target_args(
        algo.target_update_tau, algo.target_update_interval
    )
    algo.learning_rate, algo.optim_cls, algo.optim_kwargs = check_optimizer_args(
        algo.learning_rate, algo.optim_cls, algo.optim_kwargs
    )
    return config


def start_replay(algo: ReplayAlgorithm, batch_spec: BatchSpec) -> int:
    """Set ``algo``'s ``updates_per_optimize`` and ``min_itr_learn`` for the sampler's batch.

    Both follow from ``algo.replay`` (a ``ReplayConfig``) and ``batch_spec``; ``initialize``
    calls this before building the buffer. Returns ``min_itr_learn`` (the iteration of the
    first update: where random or pretraining exploration ends).
    """
    algo.updates_per_optimize = algo.replay.updates_per_optimize(batch_spec)
    algo.min_itr_learn = algo.replay.min_itr_learn(batch_spec)
    return algo.min_itr_learn


def make_replay_buffer(
    config: ReplayConfig,
    batch_spec: BatchSpec,
    *,
    discount: float,
    sampler: ReplaySampler | None = None,
    buffer_cls: type[ReplayBuffer] = ReplayBuffer,
    seed: int | None = None,
) -> ReplayBuffer:
    """The replay buffer of an off-policy algorithm.

    Args:
        config: the algorithm's replay settings.
        batch_spec: the sampler's batch shape (the buffer keeps ``B`` columns).
        discount: gamma of the n-step returns.
        sampler: index sampler over ``config.capacity(batch_spec)`` entries (None:
            uniform, seeded with ``seed``).
        buffer_cls: ``ReplayBuffer``, or ``FrameReplayBuffer`` to store each frame of
            ``[C, H, W]`` frame stacks once.
        seed: seed of the default uniform sampler (None: drawn from torch's generator, so a
            seeded run replays the same minibatches).
    """
    return buffer_cls(
        size=config.capacity(batch_spec),
        batch_B=batch_spec.B,
        discount=discount,
        n_step_return=config.n_step_return,
        sampler=sampler,
        storage=config.replay_storage,
        scratch_dir=config.replay_scratch_dir,
        seed=int(torch.randint(2**31 - 1, ()).item()) if seed is None else seed,
        device=config.replay_device,
    )


def replay_updates(
    algo: ReplayAlgorithm,
    itr: int,
    samples: TensorDictBase | None,
    *,
    device: torch.device | None = None,
    draw: int | None = None,
) -> dict[str, list[float]]:
    """The replay schedule of the off-policy algorithms.

    Append the sampler's batch (``None``: the caller stored it, as ``AsyncRl`` does), then,
    from ``algo.min_itr_learn`` on and once the buffer holds a complete n-step window, make
    ``algo.updates_per_optimize`` calls of ``algo.update`` on minibatches of ``draw`` items
    (default ``algo.batch_size`` transitions; R2D1 draws ``batch_B`` sequences), each
    drawn onto ``device`` (the agent's; None: where the buffer is). When
    ``algo.replay_lock`` is set, each append and each draw-and-update holds it, so appends
    from another thread land between updates.

    Returns:
        The updates' diagnostics as lists (``{}`` when no update was made).

    Raises:
        ValueError: ``samples`` came from wait-reset collection (it has a ``valid`` mask):
            replay stores every transition.
    """
    lock = algo.replay_lock or contextlib.nullcontext()
    buffer = algo.replay_buffer
    if buffer is None:
        raise RuntimeError(f"call {type(algo).__name__}.initialize before optimize_agent")
    if samples is not None:
        if samples.get(keys.VALID, None) is not None:
            raise ValueError(
                f"{type(algo).__name__} stores every transition of a batch; wait-reset "
                "collection (mid_batch_reset=False) is for on-policy algorithms"
            )
        with lock:
            buffer.append_samples(samples)
    if itr < algo.min_itr_learn or len(buffer) == 0:
        return {}
    steps, n = [], algo.batch_size if draw is None else draw
    for _ in range(algo.updates_per_optimize):
        with lock:
            steps.append(algo.update(buffer.sample_batch(n, device=device)))
    return stack_diagnostics(steps)
