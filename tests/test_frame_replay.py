"""FrameReplayBuffer against the full-stack ReplayBuffer on the same samples: identical
batches at the same indices (episode starts, terminal and truncated ends, wrap-around), the
rows it must never sample, its memory, save/load and memmap storage."""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch

from tdrl.agents.base import Agent
from tdrl.logging import SnapshotError
from tdrl.replays import PrioritizedSampler, ReplayBuffer, UniformSampler
from tdrl.replays.frame import FrameReplayBuffer, replay_nbytes
from tdrl.samplers import SerialSampler
from tdrl.testing import CountingEnv

B = 3
C = 4


class FrameCountingEnv(gym.Env):
    """Frame stacks ``[C, H, W]`` (uint8, oldest first) whose pixels encode (env, episode, k).

    Frame k of an episode is nonzero everywhere: pixel 0 holds ``env_id + 1``, pixel 1 the
    episode, pixel 2 ``k``, the rest a pattern of all three. A reset zeroes the stack and puts
    the first frame newest, as ``AtariEnv`` does. Episode lengths are drawn in ``[1, 8]``;
    odd episodes end truncated, even ones terminated.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, env_id: int = 0, frame_shape: tuple[int, int] = (6, 5)):
        self.env_id = env_id
        self.frame_shape = frame_shape
        self.observation_space = gym.spaces.Box(0, 255, (C, *frame_shape), np.uint8)
        self.action_space = gym.spaces.Discrete(3)
        self._stack = np.zeros((C, *frame_shape), dtype=np.uint8)
        self._episode = -1
        self._k = 0
        self._length = 1

    def _frame(self) -> np.ndarray:
        n = int(np.prod(self.frame_shape))
        ids = np.arange(n) * 7 + 13 * self.env_id + 29 * self._episode + 3 * self._k
        frame = (ids % 254 + 1).astype(np.uint8)
        frame[:3] = (self.env_id + 1, self._episode % 256, self._k % 256)
        return frame.reshape(self.frame_shape)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._episode += 1
        self._k = 0
        self._length = int(self.np_random.integers(1, 9))
        self._stack.fill(0)
        self._stack[-1] = self._frame()
        return self._stack.copy(), {}

    def step(self, action):
        self._k += 1
        self._stack[:-1] = self._stack[1:]
        self._stack[-1] = self._frame()
        end = self._k >= self._length
        truncated = end and self._episode % 2 == 1
        return (
            self._stack.copy(),
            float(self._k + int(action)),
            end and not truncated,
            truncated,
            {},
        )


class RandomAgent(Agent):
    def __init__(self):
        super().__init__(model=torch.nn.Linear(1, 1))

    def step(self, observation, prev_action, prev_reward):
        return torch.randint(3, (observation.shape[0],)), {}


class FixedIndexSampler(UniformSampler):
    """Returns the flat indices it is told to."""

    next_index: np.ndarray

    def sample(self, storage, batch_size):
        index = torch.as_tensor(self.next_index[:batch_size])
        return index, {"index": index}


def _sampler(batch_T: int = 5, frame_shape: tuple[int, int] = (6, 5), seed: int = 0):
    counter = itertools.count()

    def make():
        return FrameCountingEnv(env_id=next(counter), frame_shape=frame_shape)

    sampler = SerialSampler(make, batch_T=batch_T, batch_B=B, max_decorrelation_steps=6)
    torch.manual_seed(seed)
    sampler.initialize(RandomAgent(), seed=seed)
    return sampler


def _valid(sampler) -> np.ndarray:
    if isinstance(sampler, PrioritizedSampler):
        return np.flatnonzero(sampler.tree.leaves > 0)
    return np.flatnonzero(sampler._valid)


def _assert_same(got, expected, skip=()):
    keys_got = set(got.keys(True, True)) - set(skip)
    keys_exp = set(expected.keys(True, True)) - set(skip)
    assert keys_got == keys_exp
    for key in keys_exp:
        a, b = got.get(key), expected.get(key)
        assert a.dtype == b.dtype and a.shape == b.shape, key
        assert torch.equal(a, b), key


@pytest.mark.parametrize("prioritized", [False, True])
@pytest.mark.parametrize("n", [1, 3])
def test_same_batches_as_full_stack_buffer(n, prioritized):
    size_T = 23
    size = size_T * B
    sampler = _sampler()
    plain_sampler = FixedIndexSampler(size)
    plain = ReplayBuffer(size=size, batch_B=B, discount=0.9, n_step_return=n, sampler=plain_sampler)
    frame_sampler = (
        PrioritizedSampler(size, alpha=0.7, seed=1) if prioritized else FixedIndexSampler(size)
    )
    frame = FrameReplayBuffer(
        size=size, batch_B=B, discount=0.9, n_step_return=n, sampler=frame_sampler
    )
    written_at: dict[int, int] = {}
    checked = starts = truncated_ends = terminal_ends = 0
    for itr in range(30):  # 150 steps into 23 rows: about six wraps
        s, _ = sampler.obtain_samples(itr)
        plain.append_samples(s)
        rows = frame.append_samples(s)
        for i, row in enumerate(rows):
            written_at[int(row)] = itr * 5 + i
        # Valid: complete n-step window (plain buffer), the C - 1 earlier rows hold the C - 1
        # earlier steps and row t + n (the bootstrap stack when the episode goes on) is written.
        expected = {
            int(f)
            for f in _valid(plain_sampler)
            if all(
                written_at.get((f // B + k) % size_T) == written_at[f // B] + k
                for k in range(1 - C, n + 1)
            )
        }
        valid = _valid(frame_sampler)
        assert set(valid.tolist()) == expected
        if not expected:
            continue
        if prioritized:
            got = frame.sample_batch(64)
            index = got["index"].numpy()
            assert set(index.tolist()) <= expected
            plain_sampler.next_index = index
            _assert_same(got, plain.sample_batch(64), skip=("is_weight",))
            frame.update_priorities(got["index"], torch.rand(64) * 5)
        else:
            frame_sampler.next_index = valid
            plain_sampler.next_index = valid
            got = frame.sample_batch(len(valid))
            _assert_same(got, plain.sample_batch(len(valid)))
        checked += len(index) if prioritized else len(valid)
        starts += int((got["observation"][:, 0] == 0).flatten(1).all(1).sum())
        end_row = (got["index"] // B + got["steps_n"] - 1) % size_T
        ended = frame._done[end_row, got["index"] % B]
        terminal_ends += int((ended & got["done_n"]).sum())
        truncated_ends += int((ended & ~got["done_n"]).sum())
    assert checked > 500
    assert starts > 50 and terminal_ends > 10 and truncated_ends > 50


@pytest.mark.parametrize("prioritized", [False, True])
def test_invalid_rows_never_sampled(prioritized):
    size_T, n = 20, 2
    size = size_T * B
    sampler = _sampler(batch_T=3)
    idx_sampler = PrioritizedSampler(size, seed=0) if prioritized else UniformSampler(size, seed=0)
    rb = FrameReplayBuffer(size=size, batch_B=B, n_step_return=n, sampler=idx_sampler)
    for itr in range(17):  # 51 steps: two wraps and a half
        rb.append_samples(sampler.obtain_samples(itr)[0])
        wrapped = (itr + 1) * 3 > size_T
        rows = set((rb.sample_batch(2000)["index"] // B).tolist()) if len(rb) else set()
        newest = {(rb.t - 1 - k) % size_T for k in range(n)}  # n - 1 + lookahead rows
        oldest = {(rb.t + k) % size_T for k in range(C - 1)} if wrapped else set(range(C - 1))
        assert not rows & (newest | oldest), itr
        written = set(np.flatnonzero(rb.writer.written).tolist())
        if len(rb):
            assert rows == written - newest - oldest
    assert len(rb) == (size_T - n - (C - 1)) * B


def test_memory_ratio_atari_shapes():
    size = 64 * B
    sampler = _sampler(batch_T=16, frame_shape=(104, 80))
    plain = ReplayBuffer(size=size, batch_B=B)
    frame = FrameReplayBuffer(size=size, batch_B=B)
    for itr in range(6):
        s, _ = sampler.obtain_samples(itr)
        plain.append_samples(s)
        frame.append_samples(s)
    full = replay_nbytes(plain)
    # Two 4 x 104 x 80 stacks per transition against one frame plus the small arrays and
    # final frames (one in about 4.5 steps with these short episodes; rare on Atari).
    assert full / size > 2 * C * 104 * 80
    assert frame.bytes_per_transition() == frame.nbytes() / size
    assert full / frame.nbytes() >= 3.5
    # The side store holds one final frame per stored done step.
    live = int((frame._final_slot >= 0).sum())
    assert live == int(frame._done.sum())


@pytest.mark.parametrize("prioritized", [False, True])
def test_save_load_round_trip(tmp_path, prioritized):
    size = 15 * B

    def make():
        s = PrioritizedSampler(size, seed=3) if prioritized else UniformSampler(size, seed=3)
        return FrameReplayBuffer(size=size, batch_B=B, n_step_return=2, sampler=s)

    sampler = _sampler(batch_T=4)
    rb = make()
    for itr in range(6):
        rb.append_samples(sampler.obtain_samples(itr)[0])
    rb.save(tmp_path / "rb")
    fresh = make()
    fresh.load(tmp_path / "rb")
    assert fresh.t == rb.t and len(fresh) == len(rb) and fresh.n_frames == C
    _assert_same(fresh.sample_batch(64), rb.sample_batch(64))
    # Both go on identically (the side store's free slots were rebuilt on load).
    for itr in range(6, 10):
        s, _ = sampler.obtain_samples(itr)
        rb.append_samples(s)
        fresh.append_samples(s)
        _assert_same(fresh.sample_batch(64), rb.sample_batch(64))


def test_memmap_storage(tmp_path):
    sampler = _sampler(batch_T=4)
    mem = FrameReplayBuffer(size=12 * B, batch_B=B, n_step_return=3, seed=0)
    disk = FrameReplayBuffer(
        size=12 * B, batch_B=B, n_step_return=3, seed=0, storage="memmap", scratch_dir=tmp_path
    )
    for itr in range(7):
        s, _ = sampler.obtain_samples(itr)
        mem.append_samples(s)
        disk.append_samples(s)
        if len(mem):
            _assert_same(disk.sample_batch(32), mem.sample_batch(32))
    assert any(tmp_path.iterdir())
    assert disk.nbytes() == mem.nbytes()


def test_rejects_what_is_not_a_frame_stack():
    flat = SerialSampler(CountingEnv, batch_T=4, batch_B=B, max_decorrelation_steps=0)
    flat.initialize(RandomAgent(), seed=0)
    with pytest.raises(ValueError, match="frame stacks"):
        FrameReplayBuffer(size=10 * B, batch_B=B).append_samples(flat.obtain_samples(0)[0])
    s, _ = _sampler(batch_T=4).obtain_samples(0)
    with pytest.raises(ValueError, match="steps per env"):
        FrameReplayBuffer(size=5 * B, batch_B=B, n_step_return=1).append_samples(s)
    shuffled = s.clone()
    shuffled["observation"] = shuffled["observation"].flip(2)  # newest first
    with pytest.raises(ValueError, match="oldest to newest"):
        FrameReplayBuffer(size=10 * B, batch_B=B).append_samples(shuffled)


def test_saved_frame_layout_must_match(tmp_path):
    size = 15 * B
    rb = FrameReplayBuffer(size=size, batch_B=B, n_step_return=2, seed=0)
    sampler = _sampler(batch_T=4)
    for itr in range(4):
        rb.append_samples(sampler.obtain_samples(itr)[0])
    rb.save(tmp_path / "rb")
    state_file = str(tmp_path / "rb" / "replay_state.pt")
    # A buffer that already holds frames of another shape.
    other = FrameReplayBuffer(size=size, batch_B=B, n_step_return=2, seed=0)
    other.append_samples(_sampler(batch_T=4, frame_shape=(4, 5)).obtain_samples(0)[0])
    with pytest.raises(SnapshotError, match=r"frames \(6, 5\) torch.uint8 saved, \(4, 5\)") as err:
        other.load(tmp_path / "rb")
    assert state_file in str(err.value) and "\n" not in str(err.value)
    # A full-stack buffer's save is not a frame buffer's, and the other way round.
    with pytest.raises(SnapshotError, match="buffer 'FrameReplayBuffer' saved, 'ReplayBuffer'"):
        ReplayBuffer(size=size, batch_B=B, n_step_return=2).load(tmp_path / "rb")
    # A corrupt side store of final frames.
    state = torch.load(state_file, weights_only=True)
    state["frames"]["final_index"][0, 0] = 10_000
    torch.save(state, state_file)
    with pytest.raises(SnapshotError, match="final_index points outside"):
        FrameReplayBuffer(size=size, batch_B=B, n_step_return=2).load(tmp_path / "rb")
