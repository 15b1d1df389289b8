"""n-step replay: returns and bootstrap targets against a plain loop over the full history,
across episode ends (terminated and truncated) and the buffer's wrap-around."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch

from tdrl.agents.base import Agent
from tdrl.logging import SnapshotError
from tdrl.replays import ReplayBuffer, UniformSampler
from tdrl.samplers import SerialSampler
from tdrl.testing import CountingEnv

B = 3


class RandomAgent(Agent):
    def __init__(self):
        super().__init__(model=torch.nn.Linear(1, 1))

    def step(self, observation, prev_action, prev_reward):
        return torch.randint(3, (observation.shape[0],)), {}


class FixedIndexSampler(UniformSampler):
    """Returns the flat indices it is told to (to inspect chosen entries)."""

    next_index: np.ndarray

    def sample(self, storage, batch_size):
        index = torch.as_tensor(self.next_index[:batch_size])
        return index, {"index": index}


def _env_factory():
    """CountingEnvs of different lengths; env 1 truncates instead of terminating."""
    counter = itertools.count()

    def make():
        i = next(counter)
        return CountingEnv(episode_length=[3, 5, 7][i % 3], truncate=i % 3 == 1, env_id=i)

    return make


def _history(batches):
    """Concatenate [T, B] batches along time: the full, unwrapped history."""
    return torch.cat([b.clone() for b in batches], dim=0)


def _reference(hist, tau, b, n, gamma):
    """Plain loop: n-step return, discount, bootstrap step of absolute time tau."""
    ret, disc, end = 0.0, gamma**n, tau + n - 1
    for k in range(n):
        r = hist["next", "reward"][tau + k, b, 0].item()
        ret += gamma**k * r
        if hist["next", "done"][tau + k, b, 0].item():
            term = hist["next", "terminated"][tau + k, b, 0].item()
            disc = 0.0 if term else gamma ** (k + 1)
            end = tau + k
            break
    return ret, disc, end


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("size_T", [9, 12])
def test_n_step_targets_match_plain_loop(n, size_T):
    gamma = 0.9
    sampler = SerialSampler(_env_factory(), batch_T=4, batch_B=B, max_decorrelation_steps=0)
    sampler.initialize(RandomAgent(), seed=0)
    index_sampler = FixedIndexSampler(size_T * B)
    rb = ReplayBuffer(
        size=size_T * B, batch_B=B, discount=gamma, n_step_return=n, sampler=index_sampler
    )
    batches, written_at = [], {}
    checked = 0
    for itr in range(8):  # 32 steps: the buffer wraps 2-3 times
        s, _ = sampler.obtain_samples(itr)
        batches.append(s.clone())
        rows = rb.append_samples(s)
        for i, row in enumerate(rows):
            written_at[int(row)] = itr * 4 + i
        hist = _history(batches)
        newest = itr * 4 + 3
        valid = np.flatnonzero(index_sampler._valid)
        assert len(valid) > 0
        index_sampler.next_index = valid
        batch = rb.sample_batch(len(valid))
        for j, flat in enumerate(valid):
            t, b = divmod(int(flat), B)
            tau = written_at[t]
            assert tau + n - 1 <= newest, "an entry whose window is not complete was valid"
            ret, disc, end = _reference(hist, tau, b, n, gamma)
            assert batch["return_n"][j].item() == pytest.approx(ret, abs=1e-5)
            assert batch["discount_n"][j].item() == pytest.approx(disc, abs=1e-6)
            assert batch["steps_n"][j].item() == end - tau + 1
            torch.testing.assert_close(batch["observation"][j], hist["observation"][tau, b])
            torch.testing.assert_close(batch["action"][j], hist["action"][tau, b])
            torch.testing.assert_close(
                batch["next", "observation"][j], hist["next", "observation"][end, b]
            )
            assert batch["next", "prev_action"][j].item() == hist["action"][end, b].item()
            checked += 1
        # Every entry with a complete window (and not yet overwritten) is valid.
        expected = {
            (row, b) for row, tau in written_at.items() for b in range(B) if tau + n - 1 <= newest
        }
        assert {divmod(int(f), B) for f in valid} == expected
    assert checked > 100


def test_truncated_window_bootstraps_terminal_does_not():
    sampler = SerialSampler(_env_factory(), batch_T=10, batch_B=B, max_decorrelation_steps=0)
    sampler.initialize(RandomAgent(), seed=1)
    rb = ReplayBuffer(size=40 * B, batch_B=B, discount=0.5, n_step_return=2)
    s, _ = sampler.obtain_samples(0)
    rb.append_samples(s)
    batch = rb.sample_batch(500)
    # Env 0 (3-step episodes) terminates; env 1 (5-step) truncates.
    last_of_ep = batch["observation"][:, 0] == torch.tensor([2.0, 4.0, 6.0])[batch["index"] % B]
    env0 = (batch["index"] % B == 0) & last_of_ep
    env1 = (batch["index"] % B == 1) & last_of_ep
    assert env0.any() and env1.any()
    assert (batch["discount_n"][env0] == 0).all() and batch["done_n"][env0].all()
    assert (batch["discount_n"][env1] == 0.5).all() and not batch["done_n"][env1].any()
    assert (batch["steps_n"][env0 | env1] == 1).all()


def test_uniform_sampling_covers_valid_entries_only():
    sampler = SerialSampler(_env_factory(), batch_T=5, batch_B=B, max_decorrelation_steps=0)
    sampler.initialize(RandomAgent(), seed=0)
    rb = ReplayBuffer(size=10 * B, batch_B=B, n_step_return=3, seed=0)
    for itr in range(3):
        rb.append_samples(sampler.obtain_samples(itr)[0])
    batch = rb.sample_batch(4000)
    rows = set((batch["index"] // B).tolist())
    # After 15 steps into 10 rows the cursor is at row 5; rows 3 and 4 lack 2 future steps.
    assert rows == set(range(10)) - {3, 4}
    assert len(rb) == 8 * B
    assert (batch["is_weight"] == 1).all()


def test_save_load_round_trip(tmp_path):
    sampler = SerialSampler(_env_factory(), batch_T=4, batch_B=B, max_decorrelation_steps=0)
    sampler.initialize(RandomAgent(), seed=0)
    rb = ReplayBuffer(size=12 * B, batch_B=B, n_step_return=2, seed=3)
    for itr in range(4):
        rb.append_samples(sampler.obtain_samples(itr)[0])
    rb.save(tmp_path / "rb")
    expected = rb.sample_batch(64)
    fresh = ReplayBuffer(size=12 * B, batch_B=B, n_step_return=2, seed=99)
    fresh.load(tmp_path / "rb")
    assert fresh.t == rb.t and len(fresh) == len(rb)
    # The sampler's generator state came back too: the same draws follow.
    rb2 = ReplayBuffer(size=12 * B, batch_B=B, n_step_return=2, seed=99)
    rb2.load(tmp_path / "rb")
    got = fresh.sample_batch(64)
    assert (got == expected).all()
    assert (rb2.sample_batch(64) == expected).all()
    with pytest.raises(FileNotFoundError):
        ReplayBuffer(size=12 * B, batch_B=B).load(tmp_path / "nothing")


def test_memmap_storage(tmp_path):
    sampler = SerialSampler(_env_factory(), batch_T=4, batch_B=B, max_decorrelation_steps=0)
    sampler.initialize(RandomAgent(), seed=0)
    mem = ReplayBuffer(size=8 * B, batch_B=B, seed=0)
    disk = ReplayBuffer(size=8 * B, batch_B=B, seed=0, storage="memmap", scratch_dir=tmp_path)
    for itr in range(3):
        s, _ = sampler.obtain_samples(itr)
        mem.append_samples(s)
        disk.append_samples(s)
    assert (mem.sample_batch(32) == disk.sample_batch(32)).all()
    assert any(tmp_path.iterdir())


def test_input_priorities_reach_sampler():
    class Recorder(UniformSampler):
        def __init__(self, capacity):
            super().__init__(capacity)
            self.updates = []

        def update_priority(self, index, priority, **kwargs):
            self.updates.append((np.asarray(index), np.asarray(priority)))

    sampler = SerialSampler(_env_factory(), batch_T=4, batch_B=B, max_decorrelation_steps=0)
    sampler.initialize(RandomAgent(), seed=0)
    rec = Recorder(10 * B)
    rb = ReplayBuffer(size=10 * B, batch_B=B, n_step_return=2, sampler=rec)
    s, _ = sampler.obtain_samples(0)
    prio = torch.arange(4 * B, dtype=torch.float32).view(4, B)
    rb.append_samples(s, priorities=prio)
    # Rows 0..2 have complete 2-step windows: their input priorities were applied.
    index, values = rec.updates[-1]
    assert sorted(index.tolist()) == list(range(3 * B))
    np.testing.assert_allclose(values, prio[:3].reshape(-1).numpy())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 0}, "size"),
        ({"batch_B": 0}, "batch_B"),
        ({"n_step_return": 0}, "n_step_return"),
        ({"n_step_return": 10}, "n_step_return"),
        ({"discount": 1.5}, "discount"),
        ({"storage": "disk"}, "storage"),
        ({"sampler": UniformSampler(7)}, "capacity"),
    ],
)
def test_bad_arguments(kwargs, match):
    base = {"size": 30, "batch_B": 3}
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ReplayBuffer(**base)


def test_wrong_batch_width():
    rb = ReplayBuffer(size=30, batch_B=3)
    sampler = SerialSampler(CountingEnv, batch_T=2, batch_B=2, max_decorrelation_steps=0)
    sampler.initialize(RandomAgent(), seed=0)
    with pytest.raises(ValueError, match="batch_B"):
        rb.append_samples(sampler.obtain_samples(0)[0])
    with pytest.raises(RuntimeError, match="no valid entry"):
        rb.sample_batch(4)


@pytest.mark.parametrize(
    "drop", ["action", "prev_reward", ("next", "observation"), ("next", "done")], ids=str
)
def test_a_batch_without_a_needed_key_is_refused_naming_it(drop):
    sampler = SerialSampler(CountingEnv, batch_T=4, batch_B=2, max_decorrelation_steps=0)
    sampler.initialize(RandomAgent(), seed=0)
    rb = ReplayBuffer(size=30, batch_B=2)
    samples = sampler.obtain_samples(0)[0].exclude(drop)
    with pytest.raises(ValueError, match=rf"^samples lack \[{re.escape(repr(drop))}\]"):
        rb.append_samples(samples)


def test_flat_reward_and_done_columns_are_taken_and_batch_sizes_checked():
    sampler = SerialSampler(CountingEnv, batch_T=4, batch_B=2, max_decorrelation_steps=0)
    sampler.initialize(RandomAgent(), seed=0)
    samples = sampler.obtain_samples(0)[0]
    flat = samples.clone()
    for key in ("reward", "done", "terminated", "truncated"):  # [T, B] instead of [T, B, 1]
        flat.set(("next", key), samples.get(("next", key)).reshape(4, 2), inplace=False)
    a, b = ReplayBuffer(size=30, batch_B=2, seed=0), ReplayBuffer(size=30, batch_B=2, seed=0)
    a.append_samples(samples)
    b.append_samples(flat)
    assert (a.sample_batch(8)["return_n"] == b.sample_batch(8)["return_n"]).all()
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            a.sample_batch(bad)


def test_a_batch_of_another_dtype_is_refused_in_one_line():
    sampler = SerialSampler(CountingEnv, batch_T=4, batch_B=2, max_decorrelation_steps=0)
    sampler.initialize(RandomAgent(), seed=0)
    rb = ReplayBuffer(size=30, batch_B=2)
    samples = sampler.obtain_samples(0)[0]
    rb.append_samples(samples)
    other = samples.clone()
    other.set("action", samples.get("action").double(), inplace=False)
    with pytest.raises(ValueError, match=r"^samples do not fit the entries stored so far: ") as err:
        rb.append_samples(other)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ files on disk are checked
def _saved_buffer(path, *, storage="memory", scratch_dir=None, **kwargs):
    sampler = SerialSampler(_env_factory(), batch_T=4, batch_B=B, max_decorrelation_steps=0)
    sampler.initialize(RandomAgent(), seed=0)
    rb = ReplayBuffer(
        size=12 * B, batch_B=B, n_step_return=2, seed=3, storage=storage, scratch_dir=scratch_dir
    )
    for itr in range(4):
        rb.append_samples(sampler.obtain_samples(itr)[0])
    rb.save(path, **kwargs)
    return rb


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("storage", ["memory", "memmap"])
def test_truncated_resized_or_missing_storage_file_is_refused(tmp_path, storage):
    _saved_buffer(tmp_path / "rb", storage=storage, scratch_dir=tmp_path / "scratch")
    obs_file = tmp_path / "rb" / "storage" / "observation.memmap"
    size = obs_file.stat().st_size
    fresh = ReplayBuffer(size=12 * B, batch_B=B, n_step_return=2, storage=storage)
    # Truncated: today's loader read the missing tail as zeros.
    with open(obs_file, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(SnapshotError, match="truncated or resized") as err:
        fresh.load(tmp_path / "rb")
    assert str(obs_file) in _one_line(err)
    assert fresh.storage is None and fresh.t == 0  # nothing changed
    # Resized (grown).
    with open(obs_file, "r+b") as f:
        f.truncate(size + 64)
    with pytest.raises(SnapshotError, match="truncated or resized"):
        fresh.load(tmp_path / "rb")
    # Missing.
    obs_file.unlink()
    with pytest.raises(SnapshotError, match="missing") as err:
        fresh.load(tmp_path / "rb")
    assert str(obs_file) in _one_line(err)
    # No state file at all.
    with pytest.raises(FileNotFoundError, match="nothing"):
        fresh.load(tmp_path / "nothing")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 15 * B}, "size 36 saved, 45 here"),
        ({"batch_B": 4, "size": 12 * 4}, "batch_B 3 saved, 4 here"),
        ({"n_step_return": 1}, "n_step_return 2 saved, 1 here"),
        ({"storage": "memmap"}, "storage 'memory' saved, 'memmap' here"),
        ({"sampler": "prioritized"}, "sampler 'UniformSampler' saved, 'PrioritizedSampler' here"),
    ],
)
def test_state_of_another_configuration_is_refused(tmp_path, kwargs, match):
    from tdrl.replays import PrioritizedSampler

    _saved_buffer(tmp_path / "rb")
    args = {"size": 12 * B, "batch_B": B, "n_step_return": 2, **kwargs}
    if args.pop("sampler", None) == "prioritized":
        args["sampler"] = PrioritizedSampler(args["size"])
    with pytest.raises(SnapshotError, match=match) as err:
        ReplayBuffer(**args).load(tmp_path / "rb")
    assert str(tmp_path / "rb" / "replay_state.pt") in _one_line(err)


def test_save_is_atomic_and_a_cut_off_commit_is_found(tmp_path, monkeypatch):
    import tdrl.replays.storage_files as n_step  # where ReplayBuffer.save writes its state

    rb = _saved_buffer(tmp_path / "rb", info={"itr": 1})
    first = rb.sample_batch(16)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(n_step, "save_plain", full_disk)
    with pytest.raises(OSError, match="No space left"):
        rb.save(tmp_path / "rb", info={"itr": 2})
    monkeypatch.undo()
    fresh = ReplayBuffer(size=12 * B, batch_B=B, n_step_return=2, seed=3)
    assert fresh.load(tmp_path / "rb") == {"itr": 1}  # the previous save, complete
    assert (fresh.sample_batch(16) == first).all()
    # A kill between the two renames of the commit: only the staged copy is complete.
    rb.save(tmp_path / "rb", info={"itr": 3}, atomic=True)
    (tmp_path / "rb").rename(tmp_path / ".rb.new")
    fresh = ReplayBuffer(size=12 * B, batch_B=B, n_step_return=2)
    assert fresh.load(tmp_path / "rb") == {"itr": 3}
    assert fresh.saved_versions(tmp_path / "rb") == [tmp_path / ".rb.new"]


def test_memmap_buffer_round_trip_keeps_its_own_files(tmp_path):
    rb = _saved_buffer(tmp_path / "rb", storage="memmap", scratch_dir=tmp_path / "a")
    fresh = ReplayBuffer(
        size=12 * B, batch_B=B, n_step_return=2, storage="memmap", scratch_dir=tmp_path / "b"
    )
    fresh.load(tmp_path / "rb")
    assert (fresh.sample_batch(32) == rb.sample_batch(32)).all()
    import shutil

    shutil.rmtree(tmp_path / "rb")  # the loaded buffer does not live in the saved files
    assert (fresh.sample_batch(32) == rb.sample_batch(32)).all()


def test_extra_keys_are_stored_sampled_and_saved(tmp_path):
    """A sampler's extra keys (a cost, a nested success flag) come back at step t."""
    from tdrl.testing.torchrl_envs import NestedCountingEnv, NestedFixedAgent

    sampler = SerialSampler(
        NestedCountingEnv, {}, batch_T=4, batch_B=2, extra_keys=["cost"], max_decorrelation_steps=0
    )
    sampler.initialize(NestedFixedAgent(), seed=0)
    rb = ReplayBuffer(size=16, batch_B=2, n_step_return=2, seed=0)
    for itr in range(3):
        samples = sampler.obtain_samples(itr)[0]
        rb.append_samples(samples)
    assert rb.extra_keys == [("next", "cost")]
    batch = rb.sample_batch(32)
    # NestedCountingEnv's cost is the action: the one of the sampled step, not an n-step sum
    torch.testing.assert_close(batch["next", "cost"][:, 0], batch["action"].float())
    rb.save(tmp_path / "rb")
    other = ReplayBuffer(size=16, batch_B=2, n_step_return=2, seed=0)
    other.load(tmp_path / "rb")
    assert other.extra_keys == [("next", "cost")]
    assert ("next", "cost") in other.sample_batch(4).keys(include_nested=True)
