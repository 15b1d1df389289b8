"""tdrl's replay buffers speak TorchRL's replay API, and a TorchRL buffer composed of TorchRL's
storage, tdrl's index sampler and tdrl's ``TimeMajorWriter`` draws what tdrl's buffer draws.

``extend``/``sample`` against ``append_samples``/``sample_batch`` (same seeds, same batches) on
every buffer class; ``update_priority`` and ``update_tensordict_priority`` against the sum
tree's leaves and the draws; ``len``; memmap storage; bad input refused in one line.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, TensorDictReplayBuffer

from tdrl.replays import (
    FrameReplayBuffer,
    PrioritizedSampler,
    ReplayBuffer,
    SequenceFrameReplayBuffer,
    SequenceReplayBuffer,
    UniformSampler,
)
from tdrl.replays.writer import TimeMajorWriter
from tdrl.utils.checks import ArgumentError

B, T, C, FRAME = 3, 4, 3, (2, 3)


def batches(n: int, *, frames: bool = False, seed: int = 0) -> list[TensorDict]:
    """``n`` consecutive ``[T, B]`` sampler batches with episode ends (terminated or truncated).

    Observations are frame stacks ``[C, 2, 3]`` (oldest first, zeros before an episode's first
    frame) with ``frames``, else vectors; ``rnn_state`` and ``is_init`` ride along.
    """
    g = torch.Generator().manual_seed(seed)
    stack = torch.zeros(B, C, *FRAME, dtype=torch.uint8)
    stack[:, -1] = torch.randint(1, 256, (B, *FRAME), dtype=torch.uint8, generator=g)
    is_init = torch.ones(B, dtype=torch.bool)
    out = []
    for _ in range(n):
        steps = []
        for _ in range(T):
            action = torch.randint(0, 4, (B,), generator=g)
            reward = torch.randn(B, 1, generator=g)
            done = torch.rand(B, 1, generator=g) < 0.2
            term = done & (torch.rand(B, 1, generator=g) < 0.5)
            new = torch.randint(1, 256, (B, *FRAME), dtype=torch.uint8, generator=g)
            nxt = torch.cat([stack[:, 1:], new[:, None]], 1)
            obs = (stack, nxt) if frames else (stack.flatten(1).float(), nxt.flatten(1).float())
            steps.append(
                TensorDict(
                    {
                        "observation": obs[0].clone(),
                        "prev_action": torch.zeros(B, dtype=torch.long),
                        "prev_reward": torch.zeros(B, 1),
                        "action": action,
                        "is_init": is_init.clone(),
                        "rnn_state": TensorDict({"h": torch.randn(B, 1, 2, generator=g)}, [B]),
                        "next": {
                            "observation": obs[1].clone(),
                            "reward": reward,
                            "done": done,
                            "terminated": term,
                            "truncated": done & ~term,
                        },
                    },
                    [B],
                )
            )
            stack, is_init = nxt.clone(), done[:, 0].clone()
            stack[is_init] = 0
            stack[is_init, -1] = new[is_init]
        out.append(torch.stack(steps, 0))
    return out


SIZE = 12 * B


def _sequence_starts() -> int:
    return SequenceReplayBuffer.start_capacity(size=SIZE, batch_B=B, rnn_state_interval=2)


#: name -> (a fresh buffer, prioritized?, frame stacks?)
BUFFERS = {
    "uniform": (lambda: ReplayBuffer(size=SIZE, batch_B=B, n_step_return=2, seed=1), False, 0),
    "prioritized": (
        lambda: ReplayBuffer(
            size=SIZE, batch_B=B, n_step_return=2, sampler=PrioritizedSampler(SIZE, seed=1)
        ),
        True,
        0,
    ),
    "frame": (lambda: FrameReplayBuffer(size=SIZE, batch_B=B, seed=1), False, 1),
    "frame prioritized": (
        lambda: FrameReplayBuffer(size=SIZE, batch_B=B, sampler=PrioritizedSampler(SIZE, seed=1)),
        True,
        1,
    ),
    "sequence": (
        lambda: SequenceReplayBuffer(
            size=SIZE, batch_B=B, batch_T=2, n_step_return=1, rnn_state_interval=2, seed=1
        ),
        False,
        0,
    ),
    "sequence prioritized": (
        lambda: SequenceReplayBuffer(
            size=SIZE,
            batch_B=B,
            batch_T=2,
            n_step_return=1,
            rnn_state_interval=2,
            sampler=PrioritizedSampler(_sequence_starts(), seed=1),
        ),
        True,
        0,
    ),
    "sequence frame": (
        lambda: SequenceFrameReplayBuffer(
            size=SIZE, batch_B=B, batch_T=2, n_step_return=1, rnn_state_interval=2, seed=1
        ),
        False,
        1,
    ),
}


@pytest.mark.parametrize("name", sorted(BUFFERS))
def test_extend_and_sample_are_append_samples_and_sample_batch(name):
    make, prioritized, frames = BUFFERS[name]
    tdrl_api, torchrl_api = make(), make()
    for i, batch in enumerate(batches(6, frames=bool(frames))):
        rows = tdrl_api.append_samples(batch)
        index = torchrl_api.extend(batch)
        stride = getattr(tdrl_api, "stride", 1)
        starts = rows[::stride] // stride
        assert index.tolist() == [[r * B + b for b in range(B)] for r in starts]
        assert len(torchrl_api) == len(tdrl_api)
        if len(tdrl_api) == 0:
            continue
        expected, got = tdrl_api.sample_batch(5), torchrl_api.sample(5)
        assert torch.equal(got["priority_weight"], got["is_weight"])
        assert prioritized or (got["is_weight"] == 1).all()
        assert (got.exclude("priority_weight") == expected).all()
        if prioritized:
            priority = torch.rand(5, generator=torch.Generator().manual_seed(i)) + 0.1
            tdrl_api.update_priorities(expected["index"], priority)
            torchrl_api.update_priority(got["index"], priority)
            assert np.array_equal(tdrl_api.sampler.tree.leaves, torchrl_api.sampler.tree.leaves)


def test_len_counts_what_can_be_sampled():
    rb = ReplayBuffer(size=SIZE, batch_B=B, n_step_return=3)
    written = 0
    for batch in batches(5):
        rb.extend(batch)
        written = min(written + T, SIZE // B)
        # TorchRL counts stored items; tdrl leaves out the n - 1 newest rows per env.
        assert len(rb) == (written - 2) * B


def test_update_priority_moves_the_draws_as_the_sum_tree_says():
    rb = ReplayBuffer(
        size=SIZE, batch_B=B, sampler=PrioritizedSampler(SIZE, alpha=1.0, eps=0.0, seed=0)
    )
    for batch in batches(3):
        rb.extend(batch)
    rb.update_priority(torch.arange(SIZE), torch.ones(SIZE))
    rb.update_priority(torch.tensor([[7]]), 25.0)  # any shape; one priority for all
    draws = torch.cat([rb.sample(32)["index"] for _ in range(40)])
    share = (draws == 7).float().mean().item()
    assert abs(share - 25 / (25 + SIZE - 1)) < 0.05, share
    # update_tensordict_priority reads index and td_error (max over trailing dims).
    batch = rb.sample(8)
    batch["td_error"] = torch.stack([torch.zeros(8), torch.arange(8.0) + 1], 1)
    rb.update_tensordict_priority(batch)
    assert rb.sampler.tree.leaves[batch["index"][-1]] == 8.0  # the last write of an index wins
    rb.update_tensordict_priority(batch.set("loss", torch.full((8, 1), 3.0)), priority_key="loss")
    assert set(rb.sampler.tree.leaves[batch["index"].numpy()].tolist()) == {3.0}


def test_uniform_buffers_check_priority_updates_and_ignore_them():
    rb, twin = (ReplayBuffer(size=SIZE, batch_B=B, seed=3) for _ in range(2))
    for batch in batches(3):
        rb.extend(batch)
        twin.extend(batch)
    for _ in range(3):
        got, expected = rb.sample(6), twin.sample(6)
        assert torch.equal(got["index"], expected["index"])
        assert torch.equal(got["priority_weight"], torch.ones(6))
        rb.update_tensordict_priority(got.set("td_error", torch.rand(6)))
        rb.update_priority(got["index"], torch.rand(6))
    with pytest.raises(ArgumentError, match="index holds entries outside"):
        rb.update_priority(torch.tensor([SIZE]), 1.0)


def test_sequence_priorities_are_one_per_start():
    make = BUFFERS["sequence prioritized"][0]
    rb = make()
    for batch in batches(4):
        rb.extend(batch)
    got = rb.sample(4)
    assert got.batch_size == () and got["sequence"].shape[:2] == (3, 4)
    got["td_error"] = torch.arange(4.0) + 1
    rb.update_tensordict_priority(got)
    leaves = rb.sampler.tree.leaves[got["index"].numpy()]
    expected = (got["td_error"].numpy() + rb.sampler._eps) ** rb.sampler.alpha
    # A start drawn twice keeps its last priority (as the sum tree's update does).
    last = {i: e for i, e in zip(got["index"].tolist(), expected, strict=True)}
    assert np.allclose(leaves, [last[i] for i in got["index"].tolist()])


def test_batch_size_default_and_layouts():
    rb = ReplayBuffer(size=SIZE, batch_B=B, batch_size=7, seed=0)
    data = batches(2)
    collector_layout = data[0].transpose(0, 1)  # [B, T], dim 1 named "time" (TorchRL's)
    collector_layout.names = [None, "time"]
    rb.extend(collector_layout)
    rb.extend(data[1])
    twin = ReplayBuffer(size=SIZE, batch_B=B, seed=0)
    twin.append_samples(data[0])
    twin.append_samples(data[1])
    assert (rb.sample().exclude("priority_weight") == twin.sample_batch(7)).all()
    one_env = ReplayBuffer(size=10, batch_B=1, seed=0)
    flat = data[0][:, 0]  # [T] steps of one env: taken as [T, 1]
    assert one_env.extend(flat).shape == (T, 1) and len(one_env) == T


def test_memmap_storage_through_the_api(tmp_path):
    rb = ReplayBuffer(
        size=SIZE,
        batch_B=B,
        storage="memmap",
        scratch_dir=tmp_path,
        sampler=PrioritizedSampler(SIZE, seed=0),
    )
    ram = ReplayBuffer(size=SIZE, batch_B=B, sampler=PrioritizedSampler(SIZE, seed=0))
    for batch in batches(4):
        rb.extend(batch)
        ram.extend(batch)
        got, expected = rb.sample(5), ram.sample(5)
        assert (got == expected).all()
        rb.update_tensordict_priority(got.set("td_error", got["next", "prev_reward"].abs()))
        ram.update_tensordict_priority(expected.set("td_error", got["td_error"]))
    assert any(tmp_path.rglob("*.memmap")) and len(rb) == len(ram) == SIZE


@pytest.mark.parametrize("prioritized", [False, True])
@pytest.mark.parametrize("storage_cls", [LazyTensorStorage, LazyMemmapStorage])
def test_torchrl_buffer_with_tdrl_writer_and_sampler_draws_what_tdrl_draws(
    prioritized, storage_cls, tmp_path
):
    def sampler():
        if prioritized:
            return PrioritizedSampler(SIZE, seed=5)
        return UniformSampler(SIZE, seed=5)

    kwargs = {"scratch_dir": tmp_path} if storage_cls is LazyMemmapStorage else {}
    torchrl_rb = TensorDictReplayBuffer(
        storage=storage_cls(SIZE, **kwargs),
        sampler=sampler(),
        writer=TimeMajorWriter(size=SIZE, batch_B=B),
        batch_size=6,
    )
    tdrl_rb = ReplayBuffer(size=SIZE, batch_B=B, sampler=sampler())  # n_step_return=1
    for i, batch in enumerate(batches(7)):
        index = torchrl_rb.extend(batch.clone())
        assert torch.equal(index, tdrl_rb.extend(batch))
        got, expected = torchrl_rb.sample(), tdrl_rb.sample(6)
        assert torch.equal(got["index"], expected["index"])
        for key in ("observation", "action", ("next", "observation")):
            assert torch.equal(got[key], expected[key])
        # One-step targets: what tdrl computes at sample time, TorchRL stores.
        assert torch.equal(got["next", "reward"][:, 0], expected["return_n"])
        assert torch.equal(got["next", "terminated"][:, 0], expected["done_n"])
        if prioritized:
            assert torch.equal(got["priority_weight"], expected["priority_weight"])
            priority = torch.rand(6, generator=torch.Generator().manual_seed(i))
            torchrl_rb.update_priority(got["index"], priority)
            tdrl_rb.update_priority(expected["index"], priority)
    assert len(torchrl_rb) == len(tdrl_rb) == SIZE
    assert torchrl_rb.write_count == 7 * T * B


def test_time_major_writer_state_round_trip(tmp_path):
    rb = TensorDictReplayBuffer(
        storage=LazyTensorStorage(SIZE),
        sampler=UniformSampler(SIZE, seed=0),
        writer=TimeMajorWriter(size=SIZE, batch_B=B),
    )
    for batch in batches(2):
        rb.extend(batch)
    rb.dumps(tmp_path)
    fresh = TensorDictReplayBuffer(
        storage=LazyTensorStorage(SIZE),
        sampler=UniformSampler(SIZE, seed=1),
        writer=TimeMajorWriter(size=SIZE, batch_B=B),
    )
    fresh.loads(tmp_path)
    assert fresh.writer.cursor == rb.writer.cursor == 2 * T
    assert np.array_equal(fresh.writer.written, rb.writer.written)
    assert torch.equal(fresh.sample(4)["index"], rb.sample(4)["index"])
    rb.empty()
    assert rb.writer.cursor == 0 and not rb.writer.written.any() and rb.write_count == 0


def test_bad_input_is_refused_in_one_line():
    rb = ReplayBuffer(size=SIZE, batch_B=B, sampler=PrioritizedSampler(SIZE))
    batch = batches(1)[0]
    cases = [
        (lambda: rb.extend(batch.reshape(-1)), r"data must be a time-major TensorDict \[T, B=3\]"),
        (lambda: rb.extend(batch[:, :2]), r"got batch size \[4, 2\]"),
        (lambda: rb.extend({"observation": 1}), "data must be a TensorDict"),
        (lambda: rb.extend(batches(4)[0].expand(13, T, B)[:, 0]), "1 to 12 steps per env"),
        (lambda: rb.sample(), "batch_size is needed"),
        (lambda: rb.sample(0), "batch_size"),
        (lambda: rb.update_priority(torch.tensor([0.5]), 1.0), "index must hold integer"),
        (lambda: rb.update_priority(torch.tensor([-1]), 1.0), "index holds entries outside"),
        (lambda: rb.update_priority(torch.tensor([1, 2]), [1.0, 2.0, 3.0]), "priority has 3"),
        (lambda: rb.update_tensordict_priority(batch[0]), "priority_key='td_error'"),
        (
            lambda: rb.update_tensordict_priority(
                TensorDict({"index": torch.arange(3), "td_error": torch.ones(4)}, [])
            ),
            r"data\['td_error'\] has 4 values for 3 indices",
        ),
        (lambda: ReplayBuffer(size=SIZE, batch_B=B, batch_size=-1), "batch_size"),
        (lambda: TimeMajorWriter(size=10, batch_B=3), "size=10 must be a multiple"),
    ]
    for call, match in cases:
        with pytest.raises(ArgumentError, match=match) as info:
            call()
        assert "\n" not in str(info.value)
    assert len(rb) == 0 and rb.storage is None  # nothing was written
