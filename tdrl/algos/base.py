"""What every algorithm provides to the runners: the contracts, and nothing else.

An algorithm never sees envs or samplers: it receives TensorDicts on its agent's device.

* ``Algorithm``: ``initialize(agent, *, n_itr, batch_spec)`` binds the agent and builds
  optimizers and schedules; ``loss(batch) -> TensorDict`` is **pure** (it changes neither
  the batch nor any parameter, and returns ``loss`` with gradient, its ``loss_*`` terms
  and detached diagnostics); ``optimize_agent(itr, samples)`` runs one iteration's updates
  and returns the diagnostics as lists of floats; ``state_dict`` / ``load_state_dict`` for
  snapshots; ``optimizers()`` lists what it steps (``SyncRl`` synchronises them).
* ``ReplayAlgorithm`` (DQN family, R2D1, DDPG, TD3, SAC, SAC_V) adds the replay buffer and
  ``update(batch)``: one gradient update on a replay batch, which ``AsyncRl`` drives. The
  schedule is ``tdrl.algos.replay``.
* ``MetaAlgorithm`` (PEARL), driven by ``MetaRl``: its batch is one ``[tasks]`` TensorDict
  holding the ``[tasks, n]`` RL batch (``keys.META_RL``) and the ``[tasks, m]`` context
  (``keys.CONTEXT``); it owns the meta-batch settings the runner reads and reports what a
  resume must match (``settings()``).

Diagnostics have one name everywhere (``DIAGNOSTICS``), logged with no per-algorithm code.
Shared pieces are functions: optimizers and the clipped gradient step in
``tdrl.utils.optim``, compiled updates (``compile=True``) in ``tdrl.utils.compile``, the
checks of the settings algorithms share and their optimizer and state helpers in
``tdrl.algos.settings``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol, runtime_checkable

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Generator

from tdrl.agents.base import Agent
from tdrl.keys import BatchSpec

__all__ = ["DIAGNOSTICS", "Algorithm", "MetaAlgorithm", "ReplayAlgorithm"]

#: The diagnostic vocabulary: every name an algorithm may return from ``loss`` /
#: ``update`` / ``optimize_agent``, and what it means. A test keeps the algorithms to it.
DIAGNOSTICS: dict[str, str] = {
    "loss": "the total objective of an update (the sum of its loss_* terms)",
    "loss_pi": "policy term: PG surrogate, or the actor loss of DDPG/TD3/SAC/SAC_V",
    "loss_value": "value-function term of A2C/PPO, c_v * E[0.5 (V - R)^2]",
    "loss_entropy": "entropy-bonus term of A2C/PPO, -c_e * E[H]",
    "loss_q": "critic (Bellman) term of DDPG/TD3/SAC/SAC_V",
    "loss_v": "state-value term of SAC_V",
    "loss_alpha": "temperature term of SAC",
    "loss_kl": "PEARL's encoder term, kl_lambda * KL(q(z | c) || N(0, I)) over tasks",
    "grad_norm": "global gradient norm before clipping (one optimizer)",
    "grad_norm_pi": "gradient norm of the policy (actor) before clipping",
    "grad_norm_q": "gradient norm of the critics before clipping",
    "grad_norm_v": "gradient norm of the value network before clipping",
    "grad_norm_context": "gradient norm of PEARL's context encoder before clipping",
    "entropy": "mean entropy of the policy",
    "perplexity": "exp(entropy)",
    "clip_fraction": "fraction of PPO ratios outside [1 - eps, 1 + eps]",
    "approx_kl": "estimate of KL(pi_old || pi), E[(rho - 1) - log rho]",
    "td_abs_err": "mean absolute TD error (C51: KL to the projected target), as prioritized",
    "priority": "mean new priority of the replayed sequences (R2D1)",
    "q_mean": "mean Q-value of the replayed actions",
    "v_mean": "mean state value",
    "log_pi": "mean log-probability of fresh policy actions",
    "pi_log_std": "mean log standard deviation of the policy",
    "alpha": "entropy temperature",
    "z_mean": "mean of PEARL's posterior means over tasks and latent dims",
    "z_var": "mean of PEARL's posterior variances over tasks and latent dims",
}


@runtime_checkable
class Algorithm(Protocol):
    """Structural type of every tdrl algorithm (see the module docstring)."""

    discount: float
    update_counter: int
    batch_size: int

    def initialize(self, agent: Agent, *, n_itr: int, batch_spec: BatchSpec) -> None:
        """Bind the agent; build optimizers and schedules over ``n_itr`` iterations."""
        ...

    def loss(self, batch: TensorDictBase) -> TensorDict:
        """Pure loss: ``loss``, its ``loss_*`` terms and detached diagnostics."""
        ...

    def optimize_agent(self, itr: int, samples: TensorDictBase) -> dict[str, list[float]]:
        """One iteration's updates on the sampler's ``[T, B]`` batch; diagnostics as lists."""
        ...

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimizer the algorithm steps (what it trains, agent or not)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Optimizer and schedule state, for snapshots."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        ...


@runtime_checkable
class ReplayAlgorithm(Algorithm, Protocol):
    """An ``Algorithm`` that learns from a replay buffer (see the module docstring).

    ``replay_lock``: None, or a lock ``AsyncRl`` sets for its appends and draw-and-updates.
    """

    replay: Any  # its ``tdrl.replays.ReplayConfig``
    replay_buffer: Any  # a ``tdrl.replays`` buffer once initialized, None before
    updates_per_optimize: int
    min_itr_learn: int
    replay_lock: contextlib.AbstractContextManager[Any] | None

    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """One gradient update on a replay batch; detached diagnostics (tensors)."""
        ...

    def optimize_agent(self, itr: int, samples: TensorDictBase | None) -> dict[str, list[float]]:
        """Append ``samples`` (None: already appended), then replay once learning started."""
        ...


@runtime_checkable
class MetaAlgorithm(Protocol):
    """Meta-RL (PEARL): per step, ``meta_batch`` tasks of ``batch_size`` RL transitions."""

    discount: float
    update_counter: int
    meta_batch: int
    batch_size: int
    embedding_batch_size: int  # context transitions per task

    def initialize(self, agent: Agent, *, n_itr: int, batch_spec: BatchSpec) -> None:
        """Bind the agent; build the optimizers."""
        ...

    def loss(self, batch: TensorDictBase, *, generator: Generator | None = None) -> TensorDict:
        """Pure loss of a meta-batch (``generator`` draws the latent)."""
        ...

    def update(
        self, batch: TensorDictBase, *, generator: Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """One meta-gradient step: ``loss`` plus optimizer steps and the target update."""
        ...

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimizer the algorithm steps."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Optimizer and schedule state, for snapshots."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        ...

    def settings(self) -> dict[str, Any]:
        """What a resumed run must match: attribute name -> value."""
        ...
