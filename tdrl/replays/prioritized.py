"""Proportional prioritized replay over a ``SumTree``, as a TorchRL ``Sampler``.

TorchRL 0.14.1's ``PrioritizedSampler`` needs a C++ extension that does not load against the
torch tdrl runs with; this one keeps rlpyt's semantics on tdrl's numpy ``SumTree``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tdrl.replays.storage_files import IndexSamplerBase, restore_generator
from tdrl.replays.sum_tree import ArrayLike, SumTree, as_numpy
from tdrl.utils.checks import check_int, check_range

__all__ = ["PrioritizedSampler"]


class PrioritizedSampler(IndexSamplerBase):
    """Proportional prioritized replay (Schaul et al. 2016), with rlpyt's semantics.

    Entry ``i`` is drawn with probability ``P(i) = q_i / sum_j q_j`` where the stored leaf is
    ``q_i = (p_i + eps) ** alpha`` for priority ``p_i``, and carries the importance weight
    ``w_i = (N * P(i)) ** -beta / max_batch w``, normalised by the largest weight in the
    batch as rlpyt does; ``N`` counts the entries that can be drawn (nonzero leaves).
    Draws are stratified: ``[0, total)`` is cut into ``batch_size`` equal segments with one
    uniform draw in each. Paper: https://arxiv.org/abs/1511.05952.

    Entries start at zero (never drawn). ``extend``/``add`` (called by a TorchRL
    ``ReplayBuffer`` on write) and ``set_default`` give them ``default_priority``;
    ``set_invalid`` zeroes them, e.g. for the newest ``n - 1`` steps of an n-step buffer.
    Indices are flat, ``0 .. capacity - 1``: one-dimensional storages only.

    The sampler draws from its own ``numpy`` generator (``seed``); a TorchRL replay
    buffer's ``generator`` does not affect it. Its state is part of ``state_dict``.

    Args:
        capacity: number of entries.
        alpha: priority exponent; 0 gives uniform sampling.
        beta: initial importance-sampling exponent, in ``[0, 1]``.
        beta_final: exponent reached after ``beta_steps`` steps of ``anneal_beta``.
        beta_steps: steps (optimizer updates or iterations, as the caller counts them)
            over which ``anneal_beta`` moves ``beta`` linearly to ``beta_final``; None keeps
            ``beta`` fixed.
        default_priority: priority of new entries (rlpyt's ``default_priority``). None
            means the largest priority passed to ``update_priority`` so far (1.0 before
            any), PER's "max priority" rule.
        eps: added to priorities before the exponent, so a zero error keeps the entry
            drawable. With ``eps=0`` an entry given priority 0 is never drawn.
        seed: seed of the sampler's generator.
    """

    state_file = "prioritized_sampler.pt"

    def __init__(
        self,
        capacity: int,
        *,
        alpha: float = 0.6,
        beta: float = 0.4,
        beta_final: float = 1.0,
        beta_steps: int | None = None,
        default_priority: float | None = 1.0,
        eps: float = 1e-6,
        seed: int | None = None,
    ):
        super().__init__()
        capacity = check_int("capacity", capacity, minimum=1)
        self._alpha = check_range("alpha", alpha, 0.0, 1e6)
        self._beta_init = check_range("beta", beta, 0.0, 1.0)
        self._beta_final = check_range("beta_final", beta_final, 0.0, 1.0)
        self._beta_steps = (
            None if beta_steps is None else check_int("beta_steps", beta_steps, minimum=1)
        )
        if default_priority is not None:
            default_priority = check_range("default_priority", default_priority, 1e-300, 1e300)
        self._default_priority = default_priority
        self._eps = check_range("eps", eps, 0.0, 1e6)
        if seed is not None:
            seed = check_int("seed", seed, minimum=0)
        self.capacity = capacity
        self._beta = self._beta_init
        self._max_seen: float | None = None  # largest raw priority given to update_priority
        self._tree = SumTree(capacity)
        self._np_rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ properties
    @property
    def tree(self) -> SumTree:
        """The underlying sum tree (leaves hold ``(p + eps) ** alpha``)."""
        return self._tree

    @property
    def alpha(self) -> float:
        """Priority exponent."""
        return self._alpha

    @property
    def beta(self) -> float:
        """Current importance-sampling exponent."""
        return self._beta

    @property
    def default_priority(self) -> float:
        """Raw priority given to new entries (before ``eps`` and ``alpha``)."""
        if self._default_priority is not None:
            return self._default_priority
        return 1.0 if self._max_seen is None else self._max_seen

    def __len__(self) -> int:
        """Number of entries that can be drawn."""
        return self._tree.num_nonzero

    def _leaf(self, priority: np.ndarray | float) -> np.ndarray | float:
        """The stored leaf of a priority, ``(p + eps) ** alpha``."""
        return (priority + self._eps) ** self._alpha

    # ------------------------------------------------------------------ validity
    def set_default(self, index: ArrayLike | int) -> None:
        """Give entries ``index`` the default priority (makes them drawable)."""
        idx = as_numpy(index, np.int64)
        self._tree.update(idx, np.full(idx.size, self._leaf(self.default_priority)))

    def set_invalid(self, index: ArrayLike | int) -> None:
        """Zero entries ``index`` so they are never drawn until ``set_default``."""
        idx = as_numpy(index, np.int64)
        self._tree.update(idx, np.zeros(idx.size))

    def add(self, index: int | torch.Tensor) -> None:
        """TorchRL hook on ``ReplayBuffer.add``: the new entry gets the default priority."""
        self.set_default(index)

    def extend(self, index: torch.Tensor) -> None:
        """TorchRL hook on ``ReplayBuffer.extend``: new entries get the default priority."""
        if isinstance(index, tuple):
            raise ValueError("PrioritizedSampler supports one-dimensional storages only")
        self.set_default(index)

    def mark_update(self, index: int | torch.Tensor, *, storage: Any = None) -> None:
        """TorchRL hook: overwritten entries get the default priority."""
        self.set_default(index)

    # ------------------------------------------------------------------ priorities
    def update_priority(
        self,
        index: int | ArrayLike,
        priority: float | ArrayLike,
        *,
        storage: Any = None,
    ) -> None:
        """Set new priorities (e.g. absolute TD errors) for entries ``index``.

        Args:
            index: flat indices, any shape (flattened).
            priority: one priority per index, or a scalar for all; clipped below at 0 and
                stored as ``(p + eps) ** alpha``.
            storage: unused (TorchRL passes its storage).
        """
        idx = as_numpy(index, np.int64)
        prio = np.maximum(as_numpy(priority, np.float64), 0.0)
        if idx.size == 0:
            return
        if prio.size == 1:
            prio = np.full(idx.size, prio[0])
        elif prio.size != idx.size:
            raise ValueError(f"got {idx.size} indices but {prio.size} priorities")
        if np.isnan(prio).any():
            raise ValueError("priorities must not be NaN")
        self._tree.update(idx, self._leaf(prio))
        top = float(prio.max())
        self._max_seen = top if self._max_seen is None else max(self._max_seen, top)

    def anneal_beta(self, step: int) -> float:
        """Move ``beta`` linearly to ``beta_final`` at ``step / beta_steps``; returns it.

        Does nothing when ``beta_steps`` is None.
        """
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step!r}")
        if self._beta_steps is not None:
            frac = min(1.0, step / self._beta_steps)
            self._beta = self._beta_init + frac * (self._beta_final - self._beta_init)
        return self._beta

    # ------------------------------------------------------------------ sampling
    def sample(self, storage: Any, batch_size: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Draw ``batch_size`` flat indices proportionally to their stored priority.

        Args:
            storage: ignored apart from refusing multi-dimensional TorchRL storages; may be
                None.
            batch_size: number of draws (with replacement, stratified).

        Returns:
            ``(index, info)``: int64 ``index [batch_size]``; ``info["priority_weight"]``
            float32 importance weights ``[batch_size]`` (max 1) and ``info["index"]``.
        """
        batch_size = check_int("batch_size", batch_size, minimum=1)
        if getattr(storage, "ndim", 1) > 1:
            raise ValueError("PrioritizedSampler supports one-dimensional storages only")
        total = self._tree.total()
        if not total > 0:
            raise RuntimeError("cannot sample: no entry has a nonzero priority")
        segment = total / batch_size
        values = (np.arange(batch_size) + self._np_rng.random(batch_size)) * segment
        idx = self._tree.find(values)
        prob = self._tree.get(idx) / total
        weight = (self._tree.num_nonzero * prob) ** -self._beta
        weight /= weight.max()
        index = torch.from_numpy(idx)
        return index, {
            "priority_weight": torch.from_numpy(weight.astype(np.float32)),
            "index": index,
        }

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Leaves, hyperparameters, current beta and generator state."""
        return {
            "capacity": self.capacity,
            "leaves": torch.from_numpy(self._tree.leaves.copy()),
            "alpha": self._alpha,
            "beta": self._beta,
            "beta_init": self._beta_init,
            "beta_final": self._beta_final,
            "beta_steps": self._beta_steps,
            "default_priority": self._default_priority,
            "eps": self._eps,
            "max_seen": self._max_seen,
            "rng": self._np_rng.bit_generator.state,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned; nothing changes if it does not fit.

        Raises:
            ValueError: the capacity or the leaves differ, or the generator state is bad.
        """
        if int(state_dict["capacity"]) != self.capacity:
            raise ValueError(
                f"capacity mismatch: state has {state_dict['capacity']}, "
                f"sampler has {self.capacity}"
            )
        leaves = state_dict["leaves"]
        if not isinstance(leaves, torch.Tensor) or tuple(leaves.shape) != (self.capacity,):
            raise ValueError(f"prioritized sampler state's leaves are not [{self.capacity}]")
        rng = restore_generator(state_dict.get("rng"), "prioritized sampler state")
        self._alpha = float(state_dict["alpha"])
        self._beta = float(state_dict["beta"])
        self._beta_init = float(state_dict["beta_init"])
        self._beta_final = float(state_dict["beta_final"])
        self._beta_steps = state_dict["beta_steps"]
        self._default_priority = state_dict["default_priority"]
        self._eps = float(state_dict["eps"])
        self._max_seen = state_dict["max_seen"]
        self._tree.reset(leaves)
        self._np_rng = rng

    def _empty(self) -> None:
        """Forget every entry (TorchRL's ``ReplayBuffer.empty``); beta and RNG are kept."""
        self._tree.reset()
        self._max_seen = None

    def __repr__(self) -> str:
        return (
            f"PrioritizedSampler(capacity={self.capacity}, alpha={self._alpha}, "
            f"beta={self._beta:.4g}, valid={len(self)})"
        )
