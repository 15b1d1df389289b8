"""What the Q-function policy-gradient algorithms (DDPG, TD3, SAC) share: their replay
buffer and the replay-ratio update schedule around their own ``update(batch)``."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase

from tdrl.replays.base import ReplayBuffer
from tdrl.samplers.base import BatchSpec


def make_replay_buffer(algo: Any, batch_spec: BatchSpec) -> ReplayBuffer:
    """An n-step ``ReplayBuffer`` sized by ``algo.replay_size`` (at least a few rows),
    seeded from torch's generator so a seeded run replays the same minibatches."""
    size = max(algo.replay_size, (algo.n_step_return + 2) * batch_spec.B)
    return ReplayBuffer(
        size=-(-size // batch_spec.B) * batch_spec.B,
        batch_B=batch_spec.B,
        discount=algo.discount,
        n_step_return=algo.n_step_return,
        storage=algo.replay_storage,
        scratch_dir=algo.replay_scratch_dir,
        seed=int(torch.randint(2**31 - 1, ()).item()),
    )


def replay_updates(algo: Any, itr: int, samples: TensorDictBase) -> dict[str, list[float]]:
    """Append the sampler's batch, then (past ``algo.min_itr_learn``) make
    ``algo.updates_per_optimize`` calls of ``algo.update`` on replayed minibatches.

    Returns the updates' diagnostics as lists (one synchronisation per iteration).
    """
    algo.replay_buffer.append_samples(samples)
    if itr < algo.min_itr_learn or len(algo.replay_buffer) == 0:
        return {}
    info: dict[str, list[torch.Tensor]] = {}
    for _ in range(algo.updates_per_optimize):
        step_info = algo.update(algo.replay_buffer.sample_batch(algo.batch_size))
        for key, value in step_info.items():
            info.setdefault(key, []).append(value)
    return {k: torch.stack(v).tolist() for k, v in info.items()}
