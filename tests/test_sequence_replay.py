"""SequenceReplayBuffer and SequenceFrameReplayBuffer against a plain loop over the appended
batches: the sequences and states they return, which starts may be drawn (never across the
write cursor, across wrap-around), priorities (updates, input priorities with a shift,
importance weights), the frame variant against full stacks, memmap storage, save/load and
bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from tdrl._compat import storage_tensordict
from tdrl.logging import SnapshotError
from tdrl.replays import (
    PrioritizedSampler,
    SequenceFrameReplayBuffer,
    SequenceReplayBuffer,
    UniformSampler,
)
from tdrl.utils.checks import ArgumentError

B, T, C = 3, 4, 3
BATCH_T, N_STEP = 3, 2
L = BATCH_T + N_STEP
FRAME_SHAPE = (2, 3)


class FakeRecurrentSource:
    """``[T, B]`` batches of a recurrent agent whose data encode (env, global step).

    Episodes last 1 to 6 steps (odd ones end truncated, even ones terminated). The
    recurrent state before step g of env b is ``g * B + b + 1`` (zeros at an episode's
    first step). With ``frames``, observations are uint8 stacks ``[C, 2, 3]`` (oldest
    first, zeros before the episode's first frame) like ``AtariEnv``'s; otherwise a nested
    TensorDict.
    """

    def __init__(self, *, frames: bool = False, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.frames, self.g = frames, 0
        self.k = np.zeros(B, dtype=int)
        self.episode = np.zeros(B, dtype=int)
        self.length = self.rng.integers(1, 7, size=B)
        self.stack = torch.zeros(B, C, *FRAME_SHAPE, dtype=torch.uint8)
        self.last = torch.zeros(B, dtype=torch.long), torch.zeros(B)
        for b in range(B):
            self.stack[b, -1] = self._frame(b)

    def _frame(self, b: int) -> torch.Tensor:
        n = int(np.prod(FRAME_SHAPE))
        return (
            ((torch.arange(n) * 7 + 11 * b + 3 * self.g) % 250 + 1)
            .to(torch.uint8)
            .view(FRAME_SHAPE)
        )

    def batch(self) -> TensorDict:
        steps = [self._step() for _ in range(T)]
        return torch.stack(steps, 0)

    def _step(self) -> TensorDict:
        g, is_init = self.g, torch.from_numpy(self.k == 0)
        action = torch.from_numpy(self.rng.integers(0, 3, size=B))
        reward = torch.arange(B) + 10.0 * g
        done = torch.from_numpy(self.k + 1 >= self.length)
        odd = torch.from_numpy(self.episode % 2 == 1)
        h = torch.arange(B, dtype=torch.float32) + g * B + 1
        h = torch.where(is_init, 0.0, h)[:, None, None].expand(B, 1, 2)
        obs = (
            self.stack.clone()
            if self.frames
            else TensorDict(
                {
                    "pos": torch.stack([torch.arange(B), torch.full((B,), g)], 1).float(),
                    "k": torch.from_numpy(self.k.copy()),
                },
                batch_size=[B],
            )
        )
        step = TensorDict(
            {
                "observation": obs,
                "prev_action": torch.where(is_init, 0, self.last[0]),
                "prev_reward": torch.where(is_init, 0.0, self.last[1])[:, None],
                "action": action,
                "is_init": is_init,
                "rnn_state": {"h": h.clone(), "c": -h},
                "q": torch.randn(B, 3),
                "next": {
                    "reward": reward[:, None],
                    "done": done[:, None],
                    "terminated": (done & ~odd)[:, None],
                    "truncated": (done & odd)[:, None],
                },
            },
            batch_size=[B],
        )
        self.last = action, reward
        self.g += 1
        self.k += 1
        for b in np.flatnonzero(done.numpy()):
            self.k[b], self.episode[b] = 0, self.episode[b] + 1
            self.length[b] = self.rng.integers(1, 7)
            self.stack[b] = 0
        self.stack[:, :-1] = self.stack[:, 1:].clone()
        for b in range(B):
            self.stack[b, -1] = self._frame(b)
        return step


class FixedIndexSampler(UniformSampler):
    """A uniform sampler (tracking validity) that returns the indices it is told to."""

    next_index: np.ndarray

    def sample(self, storage, batch_size):
        index = torch.as_tensor(self.next_index[:batch_size])
        return index, {"index": index}


def _valid(sampler) -> set[int]:
    if isinstance(sampler, PrioritizedSampler):
        return set(np.flatnonzero(sampler.tree.leaves > 0).tolist())
    return set(np.flatnonzero(sampler._valid).tolist())


def _expected_valid(rb, written_at: dict[int, int], back: int = 0) -> set[int]:
    """Starts whose rows ``-back .. L - 1`` hold consecutive steps, from the write log."""
    out = set()
    for j in range(rb.start_rows):
        s = j * rb.stride
        if s not in written_at:
            continue
        ok = all(
            written_at.get((s + i) % rb.T_capacity) == written_at[s] + i for i in range(-back, L)
        )
        out |= {j * B + b for b in range(B)} if ok else set()
    return out


def _fill(rb, source, n, written_at, history, **append):
    for _ in range(n):
        batch = source.batch()
        rows = rb.append_samples(batch, **append)
        for i, row in enumerate(rows):
            written_at[int(row)] = len(history) * T + i
        history.append(batch)


def _assert_same(got, expected):
    assert set(got.keys(True, True)) == set(expected.keys(True, True))
    for key in expected.keys(True, True):
        a, b = got.get(key), expected.get(key)
        assert a.dtype == b.dtype and a.shape == b.shape, key
        assert torch.equal(a, b), key


@pytest.mark.parametrize("k", [0, 1, 2])
def test_sequences_match_plain_loop_across_wrap_and_episode_ends(k):
    sampler = FixedIndexSampler(
        SequenceReplayBuffer.start_capacity(size=12 * B, batch_B=B, rnn_state_interval=k)
    )
    rb = SequenceReplayBuffer(
        size=12 * B,
        batch_B=B,
        batch_T=BATCH_T,
        n_step_return=N_STEP,
        rnn_state_interval=k,
        sampler=sampler,
    )
    source, written_at, history = FakeRecurrentSource(), {}, []
    checked = ends = inits = 0
    for _ in range(10):  # 40 steps into 12 rows: three wraps
        _fill(rb, source, 1, written_at, history)
        expected = _expected_valid(rb, written_at)
        assert _valid(sampler) == expected and len(rb) == len(expected)
        if not expected:
            continue
        sampler.next_index = np.array(sorted(expected))
        got = rb.sample_batch(len(expected))
        seq, full = got["sequence"], torch.cat(history, 0)
        assert seq.batch_size == (L, len(expected)) and seq.names[0] == "time"
        assert torch.equal(got["index"], torch.as_tensor(sampler.next_index))
        assert torch.equal(got["is_weight"], torch.ones(len(expected)))
        for n, index in enumerate(sampler.next_index):
            j, b = divmod(int(index), B)  # start row j * k of column b
            tau = written_at[j * max(k, 1)]
            ref = full[tau : tau + L, b].exclude("rnn_state", "q")
            _assert_same(seq[:, n], ref)
            state = full[tau, b]["rnn_state"] if k else full[tau, b]["rnn_state"].zero_()
            _assert_same(got["rnn_state"][n], state)
        checked += len(expected)
        ends += int(seq["next", "done"].sum())
        inits += int(seq["is_init"][1:].sum())
    assert checked > 30 and ends > 10 and inits > 10
    assert "q" not in seq and ("next", "observation") not in seq.keys(True)


@pytest.mark.parametrize("k", [0, 2])
def test_starts_crossing_the_write_cursor_are_never_drawn(k):
    rb = SequenceReplayBuffer(
        size=14 * B, batch_B=B, batch_T=BATCH_T, n_step_return=N_STEP, rnn_state_interval=k, seed=1
    )
    source, written_at, history, drawn = FakeRecurrentSource(seed=2), {}, [], set()
    for _ in range(12):
        _fill(rb, source, 1, written_at, history)
        expected = _expected_valid(rb, written_at)
        if not expected:
            continue
        index = set(rb.sample_batch(600)["index"].tolist())
        assert index <= expected
        # No window runs from the newest row (t - 1) on into the cursor's row t (the oldest
        # data once wrapped, unwritten before).
        for i in index:
            rows = [(i // B * rb.stride + s) % rb.T_capacity for s in range(L)]
            assert (rb.t - 1) % rb.T_capacity not in rows[:-1], (rb.t, rows)
            assert rb.filled == rb.T_capacity or max(rows) < rb.t
        drawn |= index
        assert len(drawn & expected) > 0.9 * len(expected)


def test_interval_one_stores_every_state_and_interval_zero_none():
    every = SequenceReplayBuffer(size=12 * B, batch_B=B, batch_T=BATCH_T, rnn_state_interval=1)
    never = SequenceReplayBuffer(size=12 * B, batch_B=B, batch_T=BATCH_T, rnn_state_interval=0)
    assert every.start_rows == 12 == never.start_rows
    batch = FakeRecurrentSource().batch()
    every.append_samples(batch)
    never.append_samples(batch)
    assert storage_tensordict(every.storage)["rnn_state", "h"].shape == (12, B, 1, 2)
    assert "rnn_state" not in storage_tensordict(never.storage)
    got = never.sample_batch(8)
    assert not got["rnn_state"]["h"].any() and got["rnn_state"].batch_size == (8,)
    # Without rnn_state in the samples, interval 0 hands out none.
    bare = SequenceReplayBuffer(size=12 * B, batch_B=B, batch_T=BATCH_T, rnn_state_interval=0)
    bare.append_samples(batch.exclude("rnn_state"))
    assert "rnn_state" not in bare.sample_batch(4)


def test_prioritized_update_priorities_frequencies_and_is_weight():
    cap = SequenceReplayBuffer.start_capacity(size=20 * B, batch_B=B, rnn_state_interval=2)
    sampler = PrioritizedSampler(cap, alpha=1.0, beta=0.5, eps=0.0, seed=0)
    rb = SequenceReplayBuffer(
        size=20 * B, batch_B=B, batch_T=BATCH_T, rnn_state_interval=2, sampler=sampler
    )
    _fill(rb, FakeRecurrentSource(), 6, {}, [])
    valid = sorted(_valid(sampler))
    assert len(valid) == len(rb) > 10
    # All valid starts at 1, one at 9: it is drawn 9 / (n + 8) of the time.
    favourite = valid[3]
    prio = torch.where(torch.tensor(valid) == favourite, 9.0, 1.0)
    rb.update_priorities(torch.tensor(valid), prio)
    counts = np.zeros(cap)
    for _ in range(40):
        index = rb.sample_batch(100)["index"].numpy()
        np.add.at(counts, index, 1)
    assert set(np.flatnonzero(counts).tolist()) <= set(valid)
    expected = 9 / (len(valid) + 8)
    assert abs(counts[favourite] / 4000 - expected) < 0.03
    # is_weight = (N P(i)) ** -beta / max over the batch.
    got = rb.sample_batch(64)
    p = torch.where(got["index"] == favourite, 9.0, 1.0)
    w = (len(valid) * p / prio.sum()) ** -0.5
    assert torch.allclose(got["is_weight"], w / w.max())


@pytest.mark.parametrize("shift", [0, 1, 3])
def test_input_priorities_land_on_shifted_starts(shift):
    k, size_T = 2, 16
    cap = SequenceReplayBuffer.start_capacity(size=size_T * B, batch_B=B, rnn_state_interval=k)
    sampler = PrioritizedSampler(cap, alpha=1.0, eps=0.0, default_priority=0.5, seed=0)
    rb = SequenceReplayBuffer(
        size=size_T * B,
        batch_B=B,
        batch_T=BATCH_T,
        n_step_return=N_STEP,
        rnn_state_interval=k,
        input_priority_shift=shift,
        sampler=sampler,
    )
    source, written_at, history = FakeRecurrentSource(), {}, []
    given: dict[tuple[int, int], float] = {}  # (global step of a start row, b) -> priority
    for itr in range(12):  # two wraps
        prio = torch.rand(T // k, B) + 1.0
        g0 = len(history) * T
        for i in range(T // k):
            for b in range(B):
                given[(g0 + i * k, b)] = float(prio[i, b])
        _fill(rb, source, 1, written_at, history, priorities=prio)
        leaves = sampler.tree.leaves
        valid = _expected_valid(rb, written_at)
        assert _valid(sampler) == valid
        for index in valid:
            row, b = divmod(index, B)
            tau = written_at[row * k]
            # The start of step tau got the priority given with batch row tau + shift * k.
            want = given.get((tau + shift * k, b), 0.5)
            assert leaves[index] == pytest.approx(want), (itr, index)
    assert len(valid) > 10


def test_pending_input_priority_dies_with_its_row():
    k = 2
    cap = SequenceReplayBuffer.start_capacity(size=8 * B, batch_B=B, rnn_state_interval=k)
    sampler = PrioritizedSampler(cap, alpha=1.0, eps=0.0, default_priority=0.5, seed=0)
    rb = SequenceReplayBuffer(  # L = 8 = T_capacity: only the oldest row's start is valid
        size=8 * B, batch_B=B, batch_T=8, n_step_return=0, rnn_state_interval=k, sampler=sampler
    )
    source = FakeRecurrentSource()
    rb.append_samples(source.batch(), priorities=torch.full((2, B), 7.0))  # starts 0 and 1
    assert len(rb) == 0 and not torch.isnan(rb._pending[:2]).any()
    rb.append_samples(source.batch())  # start 0 (rows 0..7) is complete, start 1 not
    assert sampler.tree.leaves[:B].tolist() == [7.0] * B and len(rb) == B
    assert not torch.isnan(rb._pending[1]).any()
    rb.append_samples(source.batch())  # rows 0..3 overwritten: start 1's 7 is forgotten
    assert torch.isnan(rb._pending).all()
    rb.append_samples(source.batch())
    assert sorted(_valid(sampler)) == [0, 1, 2] and sampler.tree.leaves[:B].tolist() == [0.5] * B


@pytest.mark.parametrize("k", [0, 2])
def test_frame_variant_returns_what_full_stacks_return(k):
    size = 15 * B
    cap = SequenceReplayBuffer.start_capacity(size=size, batch_B=B, rnn_state_interval=k)
    plain_sampler, frame_sampler = FixedIndexSampler(cap), FixedIndexSampler(cap)
    args = dict(size=size, batch_B=B, batch_T=BATCH_T, n_step_return=N_STEP, rnn_state_interval=k)
    plain = SequenceReplayBuffer(**args, sampler=plain_sampler)
    frame = SequenceFrameReplayBuffer(**args, sampler=frame_sampler)
    source, written_at, history = FakeRecurrentSource(frames=True, seed=3), {}, []
    checked = zeroed = 0
    for _ in range(14):
        batch = source.batch()
        plain.append_samples(batch)
        _fill(frame, _Once(batch), 1, written_at, history)
        expected = _expected_valid(frame, written_at, back=C - 1)
        assert _valid(frame_sampler) == expected
        assert expected <= _valid(plain_sampler)
        if not expected:
            continue
        plain_sampler.next_index = frame_sampler.next_index = np.array(sorted(expected))
        got = frame.sample_batch(len(expected))
        _assert_same(got, plain.sample_batch(len(expected)))
        checked += len(expected)
        zeroed += int((got["sequence", "observation"][:, :, 0] == 0).all(-1).all(-1).sum())
    assert checked > 50 and zeroed > 30
    stored = storage_tensordict(frame.storage)["steps"]
    assert "frame" in stored and "observation" not in stored


class _Once:
    """A source that hands out one given batch."""

    def __init__(self, batch):
        self._batch = batch

    def batch(self):
        return self._batch


def test_frame_variant_rejects_what_is_not_a_frame_stack():
    rb = SequenceFrameReplayBuffer(size=12 * B, batch_B=B, batch_T=BATCH_T)
    with pytest.raises(ArgumentError, match="frame stacks"):
        rb.append_samples(FakeRecurrentSource().batch())
    shuffled = FakeRecurrentSource(frames=True).batch()
    shuffled["observation"] = shuffled["observation"].flip(2)
    with pytest.raises(ArgumentError, match="oldest to newest"):
        rb.append_samples(shuffled)
    with pytest.raises(ArgumentError, match="size=18 gives 6 steps per env"):
        SequenceFrameReplayBuffer(size=6 * B, batch_B=B, batch_T=4).append_samples(
            FakeRecurrentSource(frames=True).batch()
        )


@pytest.mark.parametrize("frames", [False, True])
@pytest.mark.parametrize("prioritized", [False, True])
@pytest.mark.parametrize("storage", ["memory", "memmap"])
def test_save_load_round_trip(tmp_path, storage, prioritized, frames):
    size, k = 14 * B, 2
    cap = SequenceReplayBuffer.start_capacity(size=size, batch_B=B, rnn_state_interval=k)
    cls = SequenceFrameReplayBuffer if frames else SequenceReplayBuffer

    def make(scratch):
        s = PrioritizedSampler(cap, seed=3) if prioritized else UniformSampler(cap, seed=3)
        return cls(
            size=size,
            batch_B=B,
            batch_T=BATCH_T,
            n_step_return=N_STEP,
            rnn_state_interval=k,
            input_priority_shift=1,
            sampler=s,
            storage=storage,
            scratch_dir=tmp_path / scratch,
        )

    source = FakeRecurrentSource(frames=frames)
    rb = make("a")
    for _ in range(5):
        rb.append_samples(source.batch(), priorities=torch.rand(T // k, B) + 0.1)
    rb.save(tmp_path / "rb", info={"itr": 4})
    fresh = make("b")
    assert fresh.load(tmp_path / "rb") == {"itr": 4} == rb.saved_info(tmp_path / "rb")
    assert (fresh.t, fresh.filled, len(fresh)) == (rb.t, rb.filled, len(rb))
    _assert_same(fresh.sample_batch(16), rb.sample_batch(16))
    for _ in range(4):  # both go on identically
        batch, prio = source.batch(), torch.rand(T // k, B) + 0.1
        rb.append_samples(batch, priorities=prio)
        fresh.append_samples(batch, priorities=prio)
        got = fresh.sample_batch(16)
        _assert_same(got, rb.sample_batch(16))
        new = torch.rand(16)
        rb.update_priorities(got["index"], new)
        fresh.update_priorities(got["index"], new)
    if storage == "memmap":
        assert (tmp_path / "b" / "steps").is_dir() and (tmp_path / "b" / "rnn_state").is_dir()


def test_load_refuses_another_configuration(tmp_path):
    rb = SequenceReplayBuffer(size=12 * B, batch_B=B, batch_T=BATCH_T, rnn_state_interval=2)
    rb.append_samples(FakeRecurrentSource().batch())
    rb.save(tmp_path / "rb")
    other = SequenceReplayBuffer(size=12 * B, batch_B=B, batch_T=BATCH_T + 1, rnn_state_interval=2)
    with pytest.raises(SnapshotError, match="batch_T 3 saved, 4 here") as err:
        other.load(tmp_path / "rb")
    assert "\n" not in str(err.value)
    with pytest.raises(SnapshotError, match="buffer 'SequenceReplayBuffer' saved"):
        SequenceFrameReplayBuffer(
            size=12 * B, batch_B=B, batch_T=BATCH_T, rnn_state_interval=2
        ).load(tmp_path / "rb")
    (tmp_path / "rb" / "storage" / "rnn_state" / "h.memmap").write_bytes(b"")
    with pytest.raises(SnapshotError, match=r"rnn_state/h\.memmap has 0 bytes"):
        SequenceReplayBuffer(size=12 * B, batch_B=B, batch_T=BATCH_T, rnn_state_interval=2).load(
            tmp_path / "rb"
        )


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"size": 4 * B}, "size"),
        ({"size": 0}, "size"),
        ({"batch_T": 0}, "batch_T"),
        ({"batch_B": 0}, "batch_B"),
        ({"n_step_return": -1}, "n_step_return"),
        ({"rnn_state_interval": -1}, "rnn_state_interval"),
        ({"input_priority_shift": -2}, "input_priority_shift"),
        ({"storage": "disk"}, "storage"),
        ({"keys_to_store": "observation"}, "keys_to_store"),
        ({"keys_to_store": ["observation", "rnn_state"]}, "keys_to_store"),
        ({"sampler": UniformSampler(7)}, "sampler"),
        ({"device": "tpu:9"}, "device"),
    ],
)
def test_bad_arguments(kwargs, name):
    args = {"size": 12 * B, "batch_B": B, "batch_T": BATCH_T, "n_step_return": N_STEP, **kwargs}
    with pytest.raises(ArgumentError, match=name) as err:
        SequenceReplayBuffer(**args)
    assert "\n" not in str(err.value)


def test_bad_samples():
    rb = SequenceReplayBuffer(size=12 * B, batch_B=B, batch_T=BATCH_T, rnn_state_interval=3)
    batch = FakeRecurrentSource().batch()
    for bad, match in [
        (batch, r"T=4, B=3\] need B=3, T <= 12 a multiple of rnn_state_interval=3"),
        (batch[:3, :2], "B=2"),
        (batch[:3].exclude("is_init"), r"lacking \['is_init'\]"),
        (batch[:3].exclude("rnn_state"), "rnn_state"),
        (batch[0], r"\[T, B\]"),
    ]:
        with pytest.raises(ArgumentError, match=match):
            rb.append_samples(bad)
    with pytest.raises(ArgumentError, match="priorities must be"):
        rb.append_samples(batch[:3], priorities=torch.ones(3, B))
    with pytest.raises(ArgumentError, match="batch_B"):
        rb.append_samples(batch[:3])
        rb.sample_batch(0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("where", ["host", "device"])
def test_cuda_batches_equal_cpu_batches(where):
    size, k = 14 * B, 2
    cap = SequenceReplayBuffer.start_capacity(size=size, batch_B=B, rnn_state_interval=k)
    samplers = FixedIndexSampler(cap), FixedIndexSampler(cap)
    args = dict(size=size, batch_B=B, batch_T=BATCH_T, n_step_return=N_STEP, rnn_state_interval=k)
    cpu = SequenceFrameReplayBuffer(**args, sampler=samplers[0])
    gpu = SequenceFrameReplayBuffer(
        **args, sampler=samplers[1], device="cuda" if where == "device" else None
    )
    source = FakeRecurrentSource(frames=True)
    for _ in range(6):
        batch = source.batch()
        cpu.append_samples(batch)
        gpu.append_samples(batch)
    samplers[0].next_index = samplers[1].next_index = np.array(sorted(_valid(samplers[0])))
    got = gpu.sample_batch(len(samplers[0].next_index), device="cuda")
    assert got["sequence", "observation"].is_cuda
    _assert_same(got.cpu(), cpu.sample_batch(len(samplers[0].next_index)))
