"""A vectorised float64 sum tree (the index structure of ``PrioritizedSampler``).

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

import numpy as np
import torch

from tdrl.utils.checks import check_int
from tdrl.utils.resources import check_memory

__all__ = ["SumTree", "as_numpy"]

ArrayLike = np.ndarray | torch.Tensor


def as_numpy(x: ArrayLike | float | int, dtype: type) -> np.ndarray:
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
        capacity = check_int("capacity", capacity, minimum=1)
        self.capacity = capacity
        self._depth = max(0, math.ceil(math.log2(capacity)))
        check_memory(  # the tree and the stamps, before NumPy tries
            16 * (1 << self._depth) + 8 * capacity,
            what=f"the priority sum tree over {capacity} entries",
            setting="replay_size",
        )
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
        idx = self._check_indices(as_numpy(indices, np.int64))
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
        values = np.minimum(np.maximum(as_numpy(values, np.float64), 0.0), total)
        assert isinstance(values, np.ndarray)
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
    def update(self, indices: ArrayLike, values: ArrayLike | float) -> None:
        """Set leaves ``indices`` to ``values`` and recompute their ancestors.

        A repeated index takes its last value in the batch. ``values`` may be a scalar.

        Raises:
            IndexError: if an index is outside ``[0, capacity)``.
            ValueError: if a value is negative or not finite, or the sizes do not match.
        """
        idx = self._check_indices(as_numpy(indices, np.int64))
        val = as_numpy(values, np.float64)
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
        val = as_numpy(leaves, np.float64)
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
