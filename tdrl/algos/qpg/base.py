"""What the Q-function policy-gradient algorithms (DDPG, TD3, SAC) share: the
replay-ratio update schedule around their own ``update(batch)``."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase


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
