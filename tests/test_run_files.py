"""What tdrl writes to disk and reads back: loading runs no code, a crash at any moment
followed by a resume logs every iteration exactly once, files follow the umask, a resume
is checked against its snapshot, and a bad log directory is refused.

The runs here are tiny (PPO or DQN on ``IdentityEnv``, 16 steps per iteration, a row and a
snapshot at every iteration), so that ``Diagnostics/Iteration`` must read exactly
``0 .. N - 1``.
"""

from __future__ import annotations

import ast
import csv
import errno
import io
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import tdrl
from tdrl.agents import CategoricalPgAgent, DqnAgent, SacAgent
from tdrl.algos import A2C, DQN, PPO, SAC, rainbow_minus_noisy
from tdrl.logging import (
    LogDirError,
    Logger,
    SnapshotError,
    load_snapshot,
    logger_context,
)
from tdrl.logging.files import check_plain, load_plain
from tdrl.logging.snapshot import check_resume
from tdrl.replays import PrioritizedSampler, ReplayBuffer, UniformSampler
from tdrl.runners import AsyncRl, MinibatchRl, SyncRl
from tdrl.samplers import SerialSampler
from tdrl.testing import ContinuousIdentityEnv, IdentityEnv
from tdrl.utils.seed import rng_state, set_rng_state, set_seed

T, B = 8, 2
REPLAY = {"min_steps_learn": 0, "batch_size": 8, "replay_size": 256}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_runner(n_itr, *, algo=None, agent=None, env=IdentityEnv, env_kwargs=None, **kwargs):
    batch_B = kwargs.pop("batch_B", B)
    sampler = SerialSampler(env, env_kwargs, batch_T=T, batch_B=batch_B, max_decorrelation_steps=0)
    return MinibatchRl(
        algo if algo is not None else PPO(minibatches=1, epochs=1),
        agent if agent is not None else CategoricalPgAgent(),
        sampler,
        n_steps=n_itr * T * batch_B,
        seed=0,
        log_interval_steps=T * batch_B,
        progress_bar=False,
        **kwargs,
    )


def train(root, n_itr, *, resume=False, snapshot_mode="last", **kwargs):
    run_dir = root / "run_0"
    runner = make_runner(n_itr, resume_from=run_dir if resume else None, **kwargs)
    with logger_context(root, 0, "t", echo=False, resume=resume, snapshot_mode=snapshot_mode):
        runner.train()
    return runner


def iterations(run_dir):
    with open(run_dir / "progress.csv", newline="") as f:
        return [int(r["Diagnostics/Iteration"]) for r in csv.DictReader(f)]


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text, text
    return text


class Payload:
    """Pickles to a call that creates ``marker``: what a planted file would run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ------------------------------------------------------------------------- loading is safe
def test_a_planted_snapshot_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    train(tmp_path, 2)
    snap_file = tmp_path / "run_0" / "params.pkl"
    torch.save({"itr": 1, "cum_steps": 0, "payload": Payload(marker)}, snap_file)
    # The payload is real: an unsafe load would run it.
    torch.load(snap_file, weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(SnapshotError, match="refusing to load snapshot") as err:
        load_snapshot(tmp_path / "run_0")
    assert str(snap_file) in one_line(err) and "could run code" in str(err.value)
    with pytest.raises(SnapshotError, match="refusing to load snapshot"):
        train(tmp_path, 4, resume=True)  # the --resume path
    assert not marker.exists()


def test_a_planted_replay_state_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    train(tmp_path, 3, algo=DQN(**REPLAY), agent=DqnAgent(), snapshot_replay=True)
    state_file = tmp_path / "run_0" / "replay" / "replay_state.pt"
    assert state_file.exists()
    torch.save({"t": 0, "payload": Payload(marker)}, state_file)
    with pytest.raises(SnapshotError, match="refusing to load replay state") as err:
        train(tmp_path, 5, algo=DQN(**REPLAY), agent=DqnAgent(), resume=True)
    assert str(state_file) in one_line(err)
    with pytest.raises(SnapshotError, match="refusing to load replay state"):
        ReplayBuffer(size=32, batch_B=2).load(state_file.parent)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: UniformSampler(16), "uniform_sampler.pt"),
        (lambda: PrioritizedSampler(16), "prioritized_sampler.pt"),
    ],
)
def test_planted_sampler_state_is_refused(tmp_path, make, name):
    marker = tmp_path / "ran"
    sampler = make()
    sampler.dumps(tmp_path)
    make().loads(tmp_path)  # what it wrote loads
    torch.save({"payload": Payload(marker)}, tmp_path / name)
    with pytest.raises(SnapshotError, match="refusing to load") as err:
        make().loads(tmp_path)
    assert str(tmp_path / name) in one_line(err)
    assert not marker.exists()
    sampler_64 = UniformSampler(64) if "uniform" in name else PrioritizedSampler(64)
    sampler_64.dumps(tmp_path)
    with pytest.raises(SnapshotError, match="does not fit"):
        make().loads(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "not_a_dict"])
def test_a_corrupt_snapshot_gets_an_error_naming_it(tmp_path, damage):
    train(tmp_path, 2)
    snap_file = tmp_path / "run_0" / "params.pkl"
    data = snap_file.read_bytes()
    if damage == "truncated":
        snap_file.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        snap_file.write_bytes(b"")
    elif damage == "garbage":
        snap_file.write_bytes(b"not a snapshot" * 10)
    else:
        torch.save([1, 2, 3], snap_file)
    with pytest.raises(SnapshotError) as err:
        train(tmp_path, 4, resume=True)
    assert str(snap_file) in one_line(err)


def test_resume_without_a_snapshot_names_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="run_0") as err:
        train(tmp_path, 2, resume=True)
    one_line(err)


def test_snapshots_hold_plain_data_only(tmp_path):
    with logger_context(tmp_path, echo=False) as logger:
        for params, where in [
            ({"x": np.float64(1.0)}, r"snapshot\['x'\] is a numpy.float64"),
            ({"rng": {"numpy": np.random.get_state()}}, r"snapshot\['rng'\]\['numpy'\]\[1\]"),
            ({"f": len}, r"snapshot\['f'\] is a builtins"),
            ({Path("k"): 1}, "key PosixPath"),
        ]:
            with pytest.raises(TypeError, match=where):
                logger.save_itr_params(0, params)
        assert not (logger.run_dir / "params.pkl").exists()
    check_plain({"a": [1, 2.0, None, "s", (torch.zeros(2), torch.Size([2]))], "b": torch.int8})


@pytest.mark.parametrize("kind", ["ppo_lr_schedule", "sac", "rainbow_replay"])
def test_every_snapshot_entry_loads_with_weights_only(tmp_path, kind):
    """Optimizer state, schedules, SAC's log_alpha, RNG states, the replay and sampler state."""
    if kind == "ppo_lr_schedule":
        kwargs = {"algo": PPO(minibatches=1, epochs=1, linear_lr_schedule=True)}
    elif kind == "sac":
        algo = SAC(**REPLAY, replay_ratio=1)
        kwargs = {"algo": algo, "agent": SacAgent(), "env": ContinuousIdentityEnv}
    else:
        algo, agent = rainbow_minus_noisy(algo_kwargs=dict(REPLAY))
        kwargs = {"algo": algo, "agent": agent, "snapshot_replay": True}
    first = train(tmp_path, 3, **kwargs)
    run_dir = tmp_path / "run_0"
    snap = torch.load(run_dir / "params.pkl", weights_only=True)
    check_plain(snap)
    assert snap["itr"] == 2 and snap["run"]["algo"] == type(first.algo).__name__
    if kind == "sac":
        assert torch.equal(snap["algo_state_dict"]["log_alpha"], first.algo.log_alpha.detach())
    if kind == "rainbow_replay":
        state = torch.load(run_dir / "replay" / "replay_state.pt", weights_only=True)
        assert state["info"] == {"itr": 2} and "leaves" in state["sampler"]


def test_rng_state_is_plain_and_restores_every_generator():
    set_seed(5)
    state = rng_state()
    check_plain(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    def draws():
        return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(2)

    a = draws()
    set_rng_state(state)
    b = draws()
    assert a[:3] == b[:3] and torch.equal(a[3], b[3])
    with pytest.raises(ValueError, match="not a saved generator state"):
        set_rng_state({"torch": torch.get_rng_state()})


def test_no_load_in_tdrl_can_run_code():
    """Every torch.load passes weights_only=True; nothing unpickles a file."""
    root = Path(tdrl.__file__).parent
    wrong = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = getattr(node.func.value, "id", None)
            if owner == "torch" and node.func.attr == "load":
                flag = [k for k in node.keywords if k.arg == "weights_only"]
                if not flag or getattr(flag[0].value, "value", None) is not True:
                    wrong.append(f"{path.name}:{node.lineno} torch.load without weights_only")
            if owner == "pickle" and node.func.attr == "load":
                wrong.append(f"{path.name}:{node.lineno} pickle.load")
            if any(k.arg == "allow_pickle" and getattr(k.value, "value", 0) for k in node.keywords):
                wrong.append(f"{path.name}:{node.lineno} allow_pickle")
    assert not wrong, wrong


# ------------------------------------------------------- crashes lose nothing, duplicate nothing
def _fail_fsync_of(name, *, after):
    """An ``os.fsync`` that raises ENOSPC for the file ``name`` after ``after`` calls."""
    real = os.fsync
    calls = {"n": 0}

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if Path(target).name == name or Path(target).name.startswith(f".{name}."):
            calls["n"] += 1
            if calls["n"] > after:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    return fsync


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_full_disk_writing_a_row_after_its_snapshot(tmp_path, monkeypatch):
    """The row of iteration 2 fails (full disk) after its snapshot: resume restores it."""
    monkeypatch.setattr(os, "fsync", _fail_fsync_of("progress.csv", after=2))
    with pytest.raises(OSError, match="No space left on device") as err:
        train(tmp_path, 6)
    assert "progress.csv" in one_line(err) and err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    run_dir = tmp_path / "run_0"
    assert iterations(run_dir) == [0, 1]  # the failed append was cut off again
    assert load_snapshot(run_dir)["itr"] == 2
    train(tmp_path, 6, resume=True)
    assert iterations(run_dir) == list(range(6))
    assert "restored the snapshot's row" in (run_dir / "debug.log").read_text()


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_full_disk_writing_a_snapshot_keeps_the_previous_one(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _fail_fsync_of("params.pkl", after=2))
    with pytest.raises(OSError, match="No space left on device") as err:
        train(tmp_path, 6)
    assert "params.pkl" in one_line(err) and "unchanged" in str(err.value)
    monkeypatch.undo()
    run_dir = tmp_path / "run_0"
    assert load_snapshot(run_dir)["itr"] == 1 and iterations(run_dir) == [0, 1]
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    train(tmp_path, 6, resume=True)
    assert iterations(run_dir) == list(range(6))


def test_rows_after_the_snapshot_are_dropped_on_resume(tmp_path):
    """As a kill between a row and its snapshot would leave the files (the other order)."""
    train(tmp_path, 3)
    run_dir = tmp_path / "run_0"
    progress = run_dir / "progress.csv"
    lines = progress.read_text().splitlines(keepends=True)
    progress.write_text("".join([*lines, lines[-1].replace("2,", "3,", 1)]))
    assert iterations(run_dir) == [0, 1, 2, 3]
    train(tmp_path, 5, resume=True)
    assert iterations(run_dir) == list(range(5))
    assert "dropped 1 row(s)" in (run_dir / "debug.log").read_text()


def test_resuming_an_older_snapshot_reruns_its_later_iterations_once(tmp_path):
    train(tmp_path, 4, snapshot_mode="all")
    run_dir = tmp_path / "run_0"
    runner = make_runner(5, resume_from=run_dir / "itr_1.pkl")
    with logger_context(tmp_path, 0, "t", echo=False, resume=True, snapshot_mode="all"):
        runner.train()
    assert iterations(run_dir) == list(range(5))


def test_a_partial_last_line_is_dropped(tmp_path):
    train(tmp_path, 3)
    run_dir = tmp_path / "run_0"
    with open(run_dir / "progress.csv", "a") as f:
        f.write("3,0.12")  # a row cut off by a kill
    train(tmp_path, 5, resume=True)
    assert iterations(run_dir) == list(range(5))
    assert "partial last line" in (run_dir / "debug.log").read_text()


_CHILD = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_run_files import DQN, REPLAY, DqnAgent, train
kwargs = dict(algo=DQN(**REPLAY), agent=DqnAgent(), snapshot_replay=True)
train(Path({root!r}), 100_000, resume={resume}, **kwargs)
"""


def test_sigkill_at_any_moment_then_resume(tmp_path):
    """Two sessions killed with SIGKILL mid-run (rows, snapshots and the replay buffer are
    written at every iteration, so the kill lands in any phase), then a resume to the end."""
    env = {**os.environ, "PYTHONPATH": str(Path(tdrl.__file__).parent.parent)}
    run_dir = tmp_path / "run_0"
    rows = 0
    for resume in (False, True):
        code = _CHILD.format(tests=str(Path(__file__).parent), root=str(tmp_path), resume=resume)
        child = subprocess.Popen([sys.executable, "-c", code], env=env)
        try:
            deadline = time.monotonic() + 60
            while not (run_dir / "progress.csv").exists() or len(iterations(run_dir)) < rows + 3:
                assert child.poll() is None, "the child ended before it was killed"
                assert time.monotonic() < deadline, "the child wrote no rows"
                time.sleep(0.005)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        rows = len(iterations(run_dir))
    last = load_snapshot(run_dir)["itr"]
    train(
        tmp_path, last + 3, resume=True, algo=DQN(**REPLAY), agent=DqnAgent(), snapshot_replay=True
    )
    assert iterations(run_dir) == list(range(last + 3))


# ----------------------------------------------------------------------------- umask
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_run_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        with logger_context(tmp_path, 0, config={"a": 1}, echo=False) as logger:
            for itr in range(3):
                logger.record_tabular("a", itr)
                if itr:
                    logger.record_tabular(f"new{itr}", itr)  # rewrites progress.csv
                logger.dump_tabular()
            logger.save_itr_params(0, {"x": torch.zeros(2)})
            rb = ReplayBuffer(size=32, batch_B=2)
            rb.save(logger.run_dir / "replay")
        run_dir = tmp_path / "run_0"
        files = [p for p in run_dir.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {"params.json", "params.pkl", "progress.csv"}
        for path in files:
            assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    finally:
        os.umask(old)


# ------------------------------------------------------------------- resuming is checked
class OtherAgent(CategoricalPgAgent):
    pass


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"algo": A2C()}, "algorithm 'PPO' in the snapshot, 'A2C' requested"),
        ({"agent": OtherAgent()}, "agent 'CategoricalPgAgent' in the snapshot, 'OtherAgent'"),
        ({"env_kwargs": {"n": 3}}, r"env_kwargs \{\} in the snapshot, \{'n': 3\} requested"),
        ({"env": ContinuousIdentityEnv}, "env_fn 'IdentityEnv' in the snapshot"),
        ({"batch_B": 4}, "batch_B 2 in the snapshot, 4 requested"),
    ],
)
def test_resuming_another_run_is_refused(tmp_path, kwargs, match):
    train(tmp_path, 2)
    runner = make_runner(4, resume_from=tmp_path / "run_0", **kwargs)
    resume = logger_context(tmp_path, 0, "t", echo=False, resume=True)
    with pytest.raises(SnapshotError, match=match) as err, resume:
        runner.train()
    assert str(tmp_path / "run_0" / "params.pkl") in one_line(err)
    assert runner.sampler.envs == []  # refused before any env started
    assert iterations(tmp_path / "run_0") == [0, 1]


def test_another_world_size_is_refused(tmp_path):
    train(tmp_path, 2)
    snap = load_snapshot(tmp_path / "run_0")
    identity = {**snap["run"], "world_size": 2}
    with pytest.raises(SnapshotError, match=r"world size \(ranks\) 1 in the snapshot, 2"):
        check_resume(snap, Path("params.pkl"), identity=identity, n_itr=10, n_steps=320)


@pytest.mark.parametrize("n_itr", [2, 1])
def test_resuming_a_finished_run_is_an_error(tmp_path, n_itr):
    train(tmp_path, 2)
    with pytest.raises(SnapshotError, match="is finished") as err:
        train(tmp_path, n_itr, resume=True)
    assert f"n_steps={n_itr * T * B}" in one_line(err)
    assert iterations(tmp_path / "run_0") == [0, 1]


def test_a_state_that_does_not_fit_stops_the_sampler(tmp_path):
    train(tmp_path, 2)
    agent = CategoricalPgAgent(model_kwargs={"hidden_sizes": (8,)})
    runner = make_runner(4, resume_from=tmp_path / "run_0", agent=agent)
    resume = logger_context(tmp_path, 0, "t", echo=False, resume=True)
    match = r"agent state in .*params.pkl does not fit"
    with pytest.raises(SnapshotError, match=match) as err, resume:
        runner.train()
    one_line(err)
    assert runner.sampler.envs == []


def test_a_replay_buffer_of_another_iteration_is_refused(tmp_path):
    kwargs = {"algo": DQN(**REPLAY), "agent": DqnAgent(), "snapshot_replay": True}
    train(tmp_path, 4, snapshot_mode="last+gap", **kwargs)
    run_dir = tmp_path / "run_0"
    kwargs = {"algo": DQN(**REPLAY), "agent": DqnAgent(), "snapshot_replay": True}
    runner = make_runner(6, resume_from=run_dir / "itr_2.pkl", **kwargs)
    resume = logger_context(tmp_path, 0, "t", echo=False, resume=True)
    match = r"iteration 2.*replay of iteration 3"
    with pytest.raises(SnapshotError, match=match) as err, resume:
        runner.train()
    one_line(err)


def test_replay_commit_cut_off_by_a_crash_is_completed(tmp_path):
    """A kill between the snapshot and the replay's commit: the staged copy is used."""
    kwargs = {"algo": DQN(**REPLAY), "agent": DqnAgent(), "snapshot_replay": True}
    first = train(tmp_path, 3, **kwargs)
    run_dir = tmp_path / "run_0"
    (run_dir / "replay").rename(run_dir / ".replay.new")
    kwargs = {"algo": DQN(**REPLAY), "agent": DqnAgent(), "snapshot_replay": True}
    runner = make_runner(5, resume_from=run_dir, **kwargs)
    with logger_context(tmp_path, 0, "t", echo=False, resume=True):
        runner.startup()
        assert runner.algo.replay_buffer.t == first.algo.replay_buffer.t
        assert len(runner.algo.replay_buffer) == len(first.algo.replay_buffer) > 0
        runner.sampler.shutdown()
    assert (run_dir / "replay" / "replay_state.pt").exists()
    assert not (run_dir / ".replay.new").exists()


# ----------------------------------------------------------------------------- log directory
def test_a_log_directory_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    for where in (tmp_path / "file", tmp_path / "file" / "below"):
        with pytest.raises(LogDirError, match=f"{tmp_path / 'file'} is a file") as err:
            Logger(where, echo=False)
        one_line(err)
    with pytest.raises(ValueError, match="is a file"), logger_context(tmp_path / "file"):
        pass
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "run_0").write_text("x")
    with pytest.raises(OSError, match="run_0 is a file"), logger_context(tmp_path / "logs"):
        pass


def test_a_log_directory_that_is_not_writable_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "ro" / "run"
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if "ro" in str(p) else real_access(p, mode)
    )
    with pytest.raises(LogDirError, match=f"{target} is not writable") as err:
        Logger(target, echo=False)
    one_line(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_log_directory_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(LogDirError, match="ro"):
            Logger(ro / "run", echo=False)
    finally:
        ro.chmod(0o700)


def test_missing_values_read_as_nan(tmp_path):
    with logger_context(tmp_path, echo=False) as logger:
        logger.record_tabular("a", 1)
        logger.dump_tabular()
        logger.record_tabular("a", 2)
        logger.record_tabular("eval", 0.5)  # a column that appears later
        logger.dump_tabular()
        logger.record_tabular("eval", 0.25)  # a row without "a"
        logger.dump_tabular()
    with open(tmp_path / "run_0" / "progress.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["a", "eval"], ["1", "nan"], ["2", "0.5"], ["nan", "0.25"]]
    assert math.isnan(float(rows[1][1])) and math.isnan(float(rows[3][0]))


def test_load_plain_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.pt"):
        load_plain(tmp_path / "nothing.pt")


@pytest.mark.parametrize("runner_cls", [AsyncRl, SyncRl])
def test_async_and_sync_runs_resume_after_a_lost_row(tmp_path, runner_cls):
    """The other runners go through the same commit and repair (SyncRl with 2 ranks, each
    rank reading the snapshot and the replay buffer)."""
    ranks = 2 if runner_cls is SyncRl else 1

    def run(n_itr, resume):
        sampler = SerialSampler(IdentityEnv, batch_T=T, batch_B=B, max_decorrelation_steps=0)
        kwargs = {"world_size": ranks} if ranks > 1 else {}
        runner = runner_cls(
            DQN(**REPLAY),
            DqnAgent(),
            sampler,
            n_steps=n_itr * T * B * ranks,
            seed=0,
            log_interval_steps=T * B * ranks,
            progress_bar=False,
            resume_from=tmp_path / "run_0" if resume else None,
            snapshot_replay=True,
            **kwargs,
        )
        with logger_context(tmp_path, 0, "t", echo=False, resume=resume):
            runner.train()

    run(3, resume=False)
    progress = tmp_path / "run_0" / "progress.csv"
    progress.write_text("".join(progress.read_text().splitlines(keepends=True)[:-1]))
    run(5, resume=True)
    assert iterations(tmp_path / "run_0") == list(range(5))
    debug = (tmp_path / "run_0" / "debug.log").read_text()
    assert "restored the snapshot's row" in debug and "replay buffer restored" in debug
