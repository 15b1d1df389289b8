"""SumTree and PrioritizedSampler: brute-force checks, statistics, state, TorchRL use."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, ReplayBuffer, TensorDictReplayBuffer

from tdrl.replays import PrioritizedSampler, SumTree


def random_leaves(rng: np.random.Generator, capacity: int, zero_frac: float = 0.3) -> np.ndarray:
    leaves = rng.exponential(1.0, capacity)
    leaves[rng.random(capacity) < zero_frac] = 0.0
    if not leaves.any():
        leaves[capacity // 2] = 1.0
    return leaves


def brute_find(leaves: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Leaf k with cumsum[k - 1] <= v < cumsum[k]."""
    return np.searchsorted(np.cumsum(leaves), values, side="right")


# ---------------------------------------------------------------------------- SumTree
@pytest.mark.parametrize("capacity", [1, 2, 7, 100, 1000, 1024, 4099])
def test_total_and_find_match_brute_force(capacity):
    rng = np.random.default_rng(capacity)
    leaves = random_leaves(rng, capacity)
    tree = SumTree(capacity)
    # Fill in random batches, so the result comes from incremental updates.
    for chunk in np.array_split(rng.permutation(capacity), 5):
        tree.update(chunk, leaves[chunk])
    assert tree.total() == pytest.approx(leaves.sum(), rel=1e-12)
    assert tree.num_nonzero == np.count_nonzero(leaves)
    np.testing.assert_array_equal(tree.leaves, leaves)
    values = rng.random(5000) * leaves.sum()
    found = tree.find(values)
    np.testing.assert_array_equal(found, brute_find(leaves, values))
    assert (leaves[found] > 0).all()


def test_find_never_returns_zero_leaf_at_edges():
    tree = SumTree(8)
    leaves = np.array([0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    tree.update(np.arange(8), leaves)
    # 0 lies on a zero leaf's edge; 1 and 3 are prefix-sum boundaries; 3 is also the total,
    # where a plain descent goes right into the all-zero half.
    found = tree.find(np.array([0.0, 1.0, 2.999, 3.0, 10.0, -1.0]))
    np.testing.assert_array_equal(found, [1, 2, 2, 2, 2, 1])


def test_incremental_updates_equal_full_rebuild():
    rng = np.random.default_rng(0)
    capacity = 777
    tree = SumTree(capacity)
    leaves = np.zeros(capacity)
    for _ in range(200):
        idx = rng.integers(0, capacity, 64)
        val = random_leaves(rng, 64, zero_frac=0.2)
        tree.update(idx, val)
        for i, v in zip(idx, val, strict=True):  # sequential writes: the last one wins
            leaves[i] = v
    rebuilt = SumTree(capacity)
    rebuilt.reset(leaves)
    np.testing.assert_array_equal(tree._tree, rebuilt._tree)
    assert tree.num_nonzero == rebuilt.num_nonzero == np.count_nonzero(leaves)


def test_repeated_indices_last_write_wins():
    tree = SumTree(10)
    tree.update(np.array([3, 5, 3, 9, 3]), np.array([1.0, 2.0, 3.0, 0.5, 4.0]))
    np.testing.assert_array_equal(tree.get(np.array([3, 5, 9])), [4.0, 2.0, 0.5])
    assert tree.total() == 6.5
    assert tree.num_nonzero == 3
    tree.update(torch.tensor([5, 5]), torch.tensor([0.0, 7.0]))
    assert tree.get([5])[0] == 7.0
    tree.update(np.array([1, 2]), 3.0)  # scalar broadcast
    assert tree.total() == 4.0 + 7.0 + 0.5 + 6.0


def test_tree_statistics():
    tree = SumTree(6)
    assert tree.min_nonzero() == 0.0
    tree.update(np.arange(6), np.array([0.0, 3.0, 0.5, 0.0, 9.0, 2.0]))
    assert tree.min_nonzero() == 0.5
    assert tree.max_priority == 9.0
    assert tree.num_nonzero == 4
    tree.update(np.array([4]), np.array([0.0]))
    assert tree.num_nonzero == 3
    assert tree.max_priority == 9.0  # running maximum, as in PER
    tree.reset()
    assert tree.total() == 0.0
    assert tree.num_nonzero == 0


def test_tree_rejects_bad_input():
    tree = SumTree(4)
    with pytest.raises(ValueError, match="all zero"):
        tree.find(np.array([0.0]))
    with pytest.raises(IndexError):
        tree.update(np.array([4]), np.array([1.0]))
    with pytest.raises(IndexError):
        tree.update(np.array([-1]), np.array([1.0]))
    with pytest.raises(ValueError, match="non-negative"):
        tree.update(np.array([0]), np.array([-1.0]))
    with pytest.raises(ValueError, match="non-negative"):
        tree.update(np.array([0]), np.array([np.nan]))
    with pytest.raises(ValueError, match="capacity"):
        SumTree(0)


# ---------------------------------------------------------------------------- sampler
def filled_sampler(priorities, capacity=None, **kwargs) -> PrioritizedSampler:
    priorities = np.asarray(priorities, dtype=np.float64)
    sampler = PrioritizedSampler(capacity or len(priorities), **kwargs)
    sampler.extend(torch.arange(len(priorities)))
    sampler.update_priority(torch.arange(len(priorities)), torch.as_tensor(priorities))
    return sampler


def test_sampling_frequencies_match_priorities():
    p = np.array([0.1, 0.5, 1.0, 2.0, 3.0, 0.2, 5.0, 0.05, 1.5, 4.0])
    alpha, eps = 0.6, 1e-6
    sampler = filled_sampler(p, alpha=alpha, eps=eps, seed=123)
    n_batches, batch = 200, 1000
    counts = np.zeros(len(p))
    for _ in range(n_batches):
        index, _ = sampler.sample(None, batch)
        counts += np.bincount(index.numpy(), minlength=len(p))
    n = n_batches * batch
    q = (p + eps) ** alpha
    expected = q / q.sum()
    sigma = np.sqrt(n * expected * (1 - expected))  # binomial; stratified draws vary less
    assert np.all(np.abs(counts - n * expected) < 5 * sigma), (counts / n, expected)


def test_sampling_is_stratified():
    sampler = filled_sampler(np.ones(4), seed=0)
    for _ in range(20):
        index, _ = sampler.sample(None, 4)  # equal masses: one draw lands in each entry
        assert index.tolist() == [0, 1, 2, 3]
    sampler = filled_sampler(np.random.default_rng(0).random(50), seed=1)
    index, _ = sampler.sample(None, 64)
    assert (index[1:] >= index[:-1]).all()  # one draw per increasing segment


def test_invalid_entries_are_never_sampled():
    capacity = 40
    sampler = PrioritizedSampler(capacity, eps=0.01, seed=0)
    sampler.extend(torch.arange(30))  # 30 .. 39 never written
    invalid = np.array([0, 5, 6, 7, 29])
    sampler.set_invalid(invalid)
    assert len(sampler) == 25
    sampler.update_priority(torch.tensor([1, 8]), torch.tensor([10.0, 0.0]))
    seen = np.concatenate([sampler.sample(None, 512)[0].numpy() for _ in range(50)])
    assert not np.isin(seen, invalid).any()
    assert seen.max() < 30
    assert 8 in seen  # priority 0 + eps stays drawable
    sampler.set_default(invalid)
    assert len(sampler) == 30
    seen = np.concatenate([sampler.sample(None, 512)[0].numpy() for _ in range(50)])
    assert np.isin(invalid, seen).all()


def test_importance_weights_follow_formula():
    rng = np.random.default_rng(3)
    p = rng.exponential(1.0, 12)
    alpha, beta, eps = 0.7, 0.45, 1e-3
    sampler = filled_sampler(p, capacity=20, alpha=alpha, beta=beta, eps=eps, seed=5)
    sampler.set_invalid([2, 3])
    valid = np.setdiff1d(np.arange(12), [2, 3])
    q = (p[valid] + eps) ** alpha
    prob = dict(zip(valid.tolist(), q / q.sum(), strict=True))
    index, info = sampler.sample(None, 32)
    assert info["index"] is index and index.dtype == torch.int64
    weight = info["priority_weight"]
    assert weight.dtype == torch.float32 and weight.shape == (32,)
    w = np.array([(len(valid) * prob[i]) ** -beta for i in index.tolist()])
    torch.testing.assert_close(weight, torch.as_tensor(w / w.max(), dtype=torch.float32))
    assert weight.max() == 1.0


def test_beta_annealing():
    sampler = PrioritizedSampler(10, beta=0.4, beta_final=1.0, beta_steps=100)
    assert sampler.beta == 0.4
    assert sampler.anneal_beta(0) == 0.4
    assert sampler.anneal_beta(50) == pytest.approx(0.7)
    assert sampler.anneal_beta(100) == pytest.approx(1.0)
    assert sampler.anneal_beta(10_000) == pytest.approx(1.0)
    assert sampler.beta == pytest.approx(1.0)
    fixed = PrioritizedSampler(10, beta=0.5)
    assert fixed.anneal_beta(10**6) == 0.5
    with pytest.raises(ValueError, match="step"):
        sampler.anneal_beta(-1)


@pytest.mark.parametrize(
    ("default_priority", "expected_before", "expected_after"),
    [(1.0, 1.0, 1.0), (2.5, 2.5, 2.5), (None, 1.0, 7.0)],
)
def test_default_priority_for_new_indices(default_priority, expected_before, expected_after):
    alpha, eps = 0.6, 1e-6
    sampler = PrioritizedSampler(10, default_priority=default_priority, alpha=alpha, eps=eps)
    assert sampler.default_priority == expected_before
    sampler.extend(torch.arange(3))
    sampler.add(3)
    leaf = (expected_before + eps) ** alpha
    np.testing.assert_allclose(sampler.tree.get([0, 1, 2, 3]), leaf, rtol=1e-15)
    assert sampler.tree.get([4])[0] == 0.0
    sampler.update_priority(torch.tensor([0, 1]), torch.tensor([7.0, 3.0]))
    assert sampler.default_priority == expected_after
    sampler.extend(torch.tensor([5, 6]))
    sampler.mark_update(torch.tensor([1]))
    np.testing.assert_allclose(
        sampler.tree.get([5, 6, 1]), (expected_after + eps) ** alpha, rtol=1e-15
    )


def test_update_priority_shapes_and_clipping():
    sampler = filled_sampler(np.ones(6), alpha=1.0, eps=0.0)
    sampler.update_priority(torch.tensor([[0, 1], [2, 3]]), torch.tensor([[-5.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(sampler.tree.get(np.arange(6)), [0.0, 2.0, 3.0, 4.0, 1.0, 1.0])
    sampler.update_priority(np.array([4, 5]), 0.5)
    np.testing.assert_array_equal(sampler.tree.get([4, 5]), [0.5, 0.5])
    with pytest.raises(ValueError, match="indices"):
        sampler.update_priority(torch.tensor([0, 1]), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="NaN"):
        sampler.update_priority(torch.tensor([0]), torch.tensor([math.nan]))


def test_state_dict_round_trip_gives_identical_samples(tmp_path):
    rng = np.random.default_rng(0)
    sampler = filled_sampler(rng.random(100), capacity=128, seed=11, beta_steps=10)
    sampler.set_invalid([3, 4])
    sampler.anneal_beta(4)
    sampler.sample(None, 16)  # advance the generator
    state = sampler.state_dict()
    restored = PrioritizedSampler(128, seed=999)
    restored.load_state_dict(state)
    sampler.dumps(tmp_path / "sampler")
    from_disk = PrioritizedSampler(128)
    from_disk.loads(tmp_path / "sampler")
    assert restored.beta == sampler.beta == from_disk.beta
    for _ in range(3):
        index, info = sampler.sample(None, 64)
        for other in (restored, from_disk):
            other_index, other_info = other.sample(None, 64)
            assert torch.equal(index, other_index)
            assert torch.equal(info["priority_weight"], other_info["priority_weight"])
    with pytest.raises(ValueError, match="capacity"):
        PrioritizedSampler(64).load_state_dict(state)


def test_empty_resets():
    sampler = filled_sampler([1.0, 2.0, 3.0])
    sampler._empty()
    assert len(sampler) == 0
    assert sampler.tree.total() == 0.0
    with pytest.raises(RuntimeError, match="nonzero"):
        sampler.sample(None, 4)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"capacity": 0}, "capacity"),
        ({"capacity": 2.5}, "capacity"),
        ({"alpha": -0.1}, "alpha"),
        ({"beta": 1.5}, "beta"),
        ({"beta_final": -0.1}, "beta_final"),
        ({"beta_steps": 0}, "beta_steps"),
        ({"default_priority": 0.0}, "default_priority"),
        ({"default_priority": math.inf}, "default_priority"),
        ({"eps": -1e-6}, "eps"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    kwargs = {"capacity": 10, **kwargs}
    capacity = kwargs.pop("capacity")
    with pytest.raises(ValueError, match=rf"^{name} "):
        PrioritizedSampler(capacity, **kwargs)


def test_arguments_are_keyword_only_and_batch_size_checked():
    with pytest.raises(TypeError):
        PrioritizedSampler(10, 0.6)  # type: ignore[misc]
    sampler = filled_sampler([1.0])
    with pytest.raises(ValueError, match="batch_size"):
        sampler.sample(None, 0)


# ---------------------------------------------------------------------------- TorchRL
def test_inside_torchrl_replay_buffer(tmp_path):
    rb = ReplayBuffer(
        storage=LazyTensorStorage(100), sampler=PrioritizedSampler(100, seed=0), batch_size=8
    )
    data = torch.arange(50, dtype=torch.float32) * 10
    written = rb.extend(data)
    assert len(rb.sampler) == 50
    sample, info = rb.sample(return_info=True)
    index = info["index"]
    assert sample.shape == (8,) and (index < 50).all()
    torch.testing.assert_close(sample, data[index])
    assert info["priority_weight"].shape == (8,)
    rb.update_priority(written, torch.zeros(50))
    rb.update_priority(torch.tensor([7]), torch.tensor([100.0]))
    _, info = rb.sample(return_info=True)
    assert (info["index"] == 7).sum() >= 7
    # Save and resume: the restored buffer draws the same batches.
    state = rb.state_dict()
    resumed = ReplayBuffer(
        storage=LazyTensorStorage(100), sampler=PrioritizedSampler(100, seed=1), batch_size=8
    )
    resumed.load_state_dict(state)
    for _ in range(3):
        a, info_a = rb.sample(return_info=True)
        b, info_b = resumed.sample(return_info=True)
        assert torch.equal(a, b) and torch.equal(info_a["index"], info_b["index"])
    rb.empty()
    assert len(rb.sampler) == 0


def test_inside_torchrl_tensordict_replay_buffer_with_priority_key():
    sampler = PrioritizedSampler(20, alpha=1.0, eps=0.0, seed=0)
    rb = TensorDictReplayBuffer(
        storage=LazyTensorStorage(20), sampler=sampler, batch_size=4, priority_key="td_error"
    )
    td_error = torch.tensor([0.0, 1.0, 0.0, 3.0])
    rb.extend(TensorDict({"obs": torch.arange(4), "td_error": td_error}, batch_size=[4]))
    np.testing.assert_array_equal(sampler.tree.get(np.arange(4)), td_error.numpy())
    batch = rb.sample()
    assert set(batch["obs"].tolist()) <= {1, 3}
