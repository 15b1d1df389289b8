"""A ``RaySampler`` actor: its envs, its slice of the ``[T, B]`` batch, its agent copy.

The actor builds the envs of its column slice ``[b0, b1)`` (env ``b`` seeded ``seed + b``;
gymnasium or TorchRL envs, stepped by ``make_env_runner``'s loop, as in every sampler),
starts them (decorrelated) and then collects one batch of its slice per ``collect`` call
with its own CPU copy of the agent, set for its global env ranks
(``collector_initialize``). Tensors cross Ray as NumPy arrays (``to_wire`` /
``copy_from_wire``, one copy into the destination): Ray moves those without pickling them.
"""

from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDict

from tdrl.agents.base import Agent
from tdrl.envs.traj_info import TrajInfo
from tdrl.samplers.base import SamplerSettings
from tdrl.samplers.worker import prepare_agent, start_env_runner


class RaySamplerWorker:
    """One Ray actor of ``RaySampler`` (built by the sampler; see the module docstring).

    Args:
        settings: the sampler's settings.
        columns: ``(b0, b1)``, the envs (and buffer columns) this actor steps.
        samples: a zeroed ``[T, b1 - b0]`` buffer of the sampler's layout.
        agent: a CPU copy of the agent, configured by the algorithm.
        batch_B: all the sampler's envs (for the agent's per-env state).
        seed: the envs' seed (env ``b`` gets ``seed + b``).
        discount: for ``TrajInfo.DiscountedReturn``.
        torch_threads: torch threads of this actor.
    """

    def __init__(
        self,
        settings: SamplerSettings,
        columns: tuple[int, int],
        samples: TensorDict,
        agent: Agent,
        batch_B: int,
        seed: int,
        discount: float,
        torch_threads: int,
    ):
        torch.set_num_threads(torch_threads)
        env_ranks = list(range(*columns))
        self.runner = start_env_runner(settings, env_ranks, seed=seed, discount=discount)
        self.runner.bind(samples)
        self.leaves = list(samples.values(include_nested=True, leaves_only=True))
        self.agent = agent
        self.modes = prepare_agent(agent, batch_B, env_ranks, seed)

    def collect(
        self, mode: str, itr: int, state: dict[str, np.ndarray | torch.Tensor] | None
    ) -> tuple[list[np.ndarray | torch.Tensor], list[TrajInfo]]:
        """Load ``state`` (unless None), set ``mode`` and collect one batch of the slice.

        Returns:
            The slice's buffer as NumPy arrays, one per leaf in the buffer's order (Ray
            moves NumPy arrays without pickling them; a TensorDict took 3x as long per
            call here), and the episodes that ended.
        """
        if state is not None:
            for name, value in self.agent.state_dict().items():  # in place, as CpuSampler's
                copy_from_wire(value, state[name])
        self.modes[mode](itr)
        with torch.no_grad():
            completed = self.runner.collect(self.agent)
        return [to_wire(leaf) for leaf in self.leaves], completed

    def close(self) -> None:
        """Close the envs."""
        self.runner.close()


def to_wire(tensor: torch.Tensor) -> np.ndarray | torch.Tensor:
    """A CPU tensor as Ray moves it fastest: a NumPy array (a tensor NumPy cannot hold)."""
    try:
        return tensor.numpy()
    except TypeError:  # bfloat16, ...
        return tensor


def copy_from_wire(dst: torch.Tensor, value: np.ndarray | torch.Tensor) -> None:
    """Write ``value`` into the CPU tensor ``dst`` (a batch view, a parameter) in one copy."""
    if isinstance(value, np.ndarray):
        np.copyto(dst.numpy(), value)
    else:
        dst.copy_(value)
