"""A vectorised float64 sum tree and the prioritized sampler built on it.

TorchRL 0.14.1's ``PrioritizedSampler`` needs a C++ extension that does not load against the
torch tdrl runs with, so tdrl keeps its own tree in numpy. It follows rlpyt's ``SumTree``:
float64 on purpose (float32 sums occasionally sent a draw into a zero-priority leaf), batched
updates propagated level by level, and a vectorised prefix-sum descent for sampling.

Layout: ``P`` is the smallest power of two ``>= capacity``. The tree is a flat array of
``2 * P`` nodes with the root at 1, the children of node ``i`` at ``2i`` and ``2i + 1``, and
leaf ``k`` at ``P + k``. Slot 0 and the padding leaves ``capacity .. P - 1`` stay empty.
Viewing the array as ``[P, 2]`` rows makes row ``i`` the pair of children of node ``i``, so
both children of a batch of nodes come out of one gather.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdrl._compat import Sampler

__all__ = ["PrioritizedSampler", "SumTree"]

ArrayLike = np.ndarray | torch.Tensor


def _as_numpy(x: ArrayLike | float | int, dtype: type) -> np.ndarray:
    """A flat numpy copy-or-view of a tensor, array or scalar."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype).reshape(-1)


class SumTree:
    """Binary sum tree over ``capacity`` non-negative float64 leaves.

    Every operation takes a batch of indices and costs ``O(batch * log capacity)`` numpy
    work in ``log2(capacity)`` Python-level steps. Internal nodes are recomputed from their
    children (never by adding differences), so sums do not drift over millions of updates.

    Args:
        capacity: number of leaves.
    """

    def __init__(self, capacity: int):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        self.capacity = capacity
        self._depth = max(0, math.ceil(math.log2(capacity)))
        self._first_leaf = 1 << self._depth  # P
        self._tree = np.zeros(2 * self._first_leaf, dtype=np.float64)
        self._pairs = self._tree.reshape(-1, 2)  # row i = (left, right) child of node i
        # Scratch for "last write wins" deduplication; -1 everywhere between updates.
        self._stamp = np.full(capacity, -1, dtype=np.int64)
        self._num_nonzero = 0
        self._max = 0.0

    # ------------------------------------------------------------------ queries
    def total(self) -> float:
        """Sum of all leaves."""
        return float(self._tree[1])

    @property
    def leaves(self) -> np.ndarray:
        """Read-only view of the ``capacity`` leaf values."""
        view = self._tree[self._first_leaf : self._first_leaf + self.capacity]
        view.flags.writeable = False
        return view

    @property
    def num_nonzero(self) -> int:
        """Number of nonzero leaves (the entries that can be drawn)."""
        return self._num_nonzero

    @property
    def max_priority(self) -> float:
        """Largest leaf value written since construction or the last ``reset``.

        A running maximum, as in PER: lowering or zeroing that leaf later does not lower it.
        """
        return self._max

    def min_nonzero(self) -> float:
        """Smallest nonzero leaf, or 0.0 when all are zero.

        A scan over the leaves, ``O(capacity)``: meant for diagnostics and for
        normalising importance weights by the global minimum now and then, not per batch.
        """
        leaves = self.leaves
        nonzero = leaves[leaves > 0]
        return float(nonzero.min()) if nonzero.size else 0.0

    def get(self, indices: ArrayLike) -> np.ndarray:
        """Leaf values at ``indices`` (any shape, flattened)."""
        idx = self._check_indices(_as_numpy(indices, np.int64))
        return self._tree.take(idx + self._first_leaf)

    def find(self, values: ArrayLike) -> np.ndarray:
        """Leaf index of each prefix-sum value: the ``k`` with ``S(k) <= v < S(k + 1)``.

        ``S(k)`` is the sum of leaves ``0 .. k - 1``. Values are clipped into
        ``[0, total]``. A zero leaf is never returned: rounding can push a value that sits
        on the edge of a zero leaf (or equals ``total``) into it, and such rare results are
        redone with a descent that only enters children with a positive sum.

        Args:
            values: prefix-sum values, nominally in ``[0, total)``.

        Returns:
            int64 leaf indices, one per value.

        Raises:
            ValueError: if every leaf is zero.
        """
        total = self._tree[1]
        if not total > 0:
            raise ValueError("cannot search a sum tree whose leaves are all zero")
        values = np.minimum(np.maximum(_as_numpy(values, np.float64), 0.0), total)
        v = values.copy()
        node = np.ones(v.shape[0], dtype=np.int64)
        tree = self._tree
        for _ in range(self._depth):
            node <<= 1  # left child
            left = tree.take(node)
            go_right = v >= left
            v -= left * go_right
            node |= go_right  # right child
        bad = tree.take(node) == 0
        if bad.any():
            node[bad] = self._find_guarded(values[bad])
        return node - self._first_leaf

    def _find_guarded(self, v: np.ndarray) -> np.ndarray:
        """Descent that never enters a zero-sum child (tree nodes, not leaf indices)."""
        node = np.ones(v.shape[0], dtype=np.int64)
        for _ in range(self._depth):
            children = self._pairs.take(node, axis=0)
            left = children[:, 0]
            go_right = ((v >= left) | (left == 0)) & (children[:, 1] > 0)
            v = v - np.where(go_right, left, 0.0)
            node = 2 * node + go_right
        return node

    # ------------------------------------------------------------------ writes
    def update(self, indices: ArrayLike, values: ArrayLike) -> None:
        """Set leaves ``indices`` to ``values`` and recompute their ancestors.

        A repeated index takes its last value in the batch. ``values`` may be a scalar.

        Raises:
            IndexError: if an index is outside ``[0, capacity)``.
            ValueError: if a value is negative or not finite, or the sizes do not match.
        """
        idx = self._check_indices(_as_numpy(indices, np.int64))
        val = _as_numpy(values, np.float64)
        n = idx.size
        if val.size == 1 and n != 1:
            val = np.full(n, val[0])
        if val.size != n:
            raise ValueError(f"got {n} indices but {val.size} values")
        if n == 0:
            return
        if not (np.isfinite(val).all() and val.min() >= 0):
            raise ValueError("sum tree values must be finite and non-negative")
        if n > 1:
            # Last write wins: keep, per index, the position with the largest batch order.
            order = np.arange(n)
            np.maximum.at(self._stamp, idx, order)
            last = self._stamp.take(idx) == order
            self._stamp[idx] = -1
            if not last.all():
                idx, val = idx[last], val[last]
        node = idx + self._first_leaf
        tree = self._tree
        self._num_nonzero += int(np.count_nonzero(val)) - int(np.count_nonzero(tree.take(node)))
        self._max = max(self._max, float(val.max()))
        tree[node] = val
        # Parents shared by several updated leaves are recomputed once per child; each
        # recomputation reads the same finished children, so the repeats are harmless.
        pairs = self._pairs
        for _ in range(self._depth):
            node >>= 1
            children = pairs.take(node, axis=0)
            tree[node] = children[:, 0] + children[:, 1]

    def reset(self, leaves: ArrayLike | None = None) -> None:
        """Set all leaves at once (zeros when ``leaves`` is None) and rebuild the tree."""
        self._tree[:] = 0.0
        self._num_nonzero = 0
        self._max = 0.0
        if leaves is None:
            return
        val = _as_numpy(leaves, np.float64)
        if val.size != self.capacity:
            raise ValueError(f"expected {self.capacity} leaves, got {val.size}")
        if not (np.isfinite(val).all() and val.min() >= 0):
            raise ValueError("sum tree values must be finite and non-negative")
        lo = self._first_leaf
        self._tree[lo : lo + self.capacity] = val
        while lo > 1:  # level [lo / 2, lo) from its children [lo, 2 lo)
            half = lo // 2
            self._tree[half:lo] = self._pairs[half:lo, 0] + self._pairs[half:lo, 1]
            lo = half
        self._num_nonzero = int(np.count_nonzero(val))
        self._max = float(val.max())

    def _check_indices(self, idx: np.ndarray) -> np.ndarray:
        if idx.size and (idx.min() < 0 or idx.max() >= self.capacity):
            raise IndexError(f"sum tree index out of range [0, {self.capacity})")
        return idx

    def __repr__(self) -> str:
        return (
            f"SumTree(capacity={self.capacity}, total={self.total():.6g}, "
            f"num_nonzero={self.num_nonzero})"
        )


def _check_float(name: str, value: Any, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return float(value)


class PrioritizedSampler(Sampler):
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
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        self._alpha = _check_float("alpha", alpha, 0.0)
        self._beta_init = _check_float("beta", beta, 0.0, 1.0)
        self._beta_final = _check_float("beta_final", beta_final, 0.0, 1.0)
        if beta_steps is not None and (
            isinstance(beta_steps, bool) or not isinstance(beta_steps, int) or beta_steps < 1
        ):
            raise ValueError(f"beta_steps must be None or a positive int, got {beta_steps!r}")
        self._beta_steps = beta_steps
        if default_priority is not None:
            _check_float("default_priority", default_priority, 0.0)
            if default_priority <= 0 or default_priority == math.inf:
                raise ValueError(
                    f"default_priority must be positive and finite, got {default_priority!r}"
                )
            default_priority = float(default_priority)
        self._default_priority = default_priority
        self._eps = _check_float("eps", eps, 0.0)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be None or an int, got {seed!r}")
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
        return (priority + self._eps) ** self._alpha

    # ------------------------------------------------------------------ validity
    def set_default(self, index: ArrayLike | int) -> None:
        """Give entries ``index`` the default priority (makes them drawable)."""
        idx = _as_numpy(index, np.int64)
        self._tree.update(idx, np.full(idx.size, self._leaf(self.default_priority)))

    def set_invalid(self, index: ArrayLike | int) -> None:
        """Zero entries ``index`` so they are never drawn until ``set_default``."""
        idx = _as_numpy(index, np.int64)
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
        idx = _as_numpy(index, np.int64)
        prio = np.maximum(_as_numpy(priority, np.float64), 0.0)
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
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
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
        """Restore what ``state_dict`` returned; the capacity must match."""
        if int(state_dict["capacity"]) != self.capacity:
            raise ValueError(
                f"capacity mismatch: state has {state_dict['capacity']}, "
                f"sampler has {self.capacity}"
            )
        self._alpha = float(state_dict["alpha"])
        self._beta = float(state_dict["beta"])
        self._beta_init = float(state_dict["beta_init"])
        self._beta_final = float(state_dict["beta_final"])
        self._beta_steps = state_dict["beta_steps"]
        self._default_priority = state_dict["default_priority"]
        self._eps = float(state_dict["eps"])
        self._max_seen = state_dict["max_seen"]
        self._tree.reset(state_dict["leaves"])
        self._np_rng.bit_generator.state = state_dict["rng"]

    def dumps(self, path: str | Path) -> None:
        """Write ``state_dict`` into directory ``path`` (TorchRL's ``ReplayBuffer.dumps``)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), path / "prioritized_sampler.pt")

    def loads(self, path: str | Path) -> None:
        """Read what ``dumps`` wrote."""
        state = torch.load(Path(path) / "prioritized_sampler.pt", weights_only=True)
        self.load_state_dict(state)

    def _empty(self) -> None:
        """Forget every entry (TorchRL's ``ReplayBuffer.empty``); beta and RNG are kept."""
        self._tree.reset()
        self._max_seen = None

    def __repr__(self) -> str:
        return (
            f"PrioritizedSampler(capacity={self.capacity}, alpha={self._alpha}, "
            f"beta={self._beta:.4g}, valid={len(self)})"
        )
