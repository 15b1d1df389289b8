"""Resource faults: absurd sizes, a full disk, killed snapshots, corrupt PEARL markers.

Each is refused in one line naming the setting or the file, before anything is allocated
or half-written, and a resumed run loses and duplicates no row.
"""

from __future__ import annotations

import csv
import errno
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from tensordict import TensorDict

from tdrl.logging import SnapshotError, logger_context
from tdrl.logging.files import as_os_error, load_plain, save_plain
from tdrl.logging.logger import Logger
from tdrl.replays import ReplayBuffer
from tdrl.replays.multi_task import MARKER_FILE, MultiTaskReplay
from tdrl.replays.sum_tree import SumTree
from tdrl.testing import NonFiniteEnv
from tdrl.utils.checks import ArgumentError
from tdrl.utils.resources import available_memory, check_disk, check_memory

HUGE = 10**14  # entries: more than any machine's memory at 8 bytes each


# ---------------------------------------------------------------- sizes, before allocation
def test_resource_checks_name_the_setting():
    assert available_memory() is None or available_memory() > 0
    with pytest.raises(ArgumentError, match=r"^replay_size needs .* of memory for x, more"):
        check_memory(8 * HUGE, what="x", setting="replay_size")
    with pytest.raises(OSError, match="No space left on device: y needs") as err:
        check_disk(2**80, Path.cwd() / "not" / "yet", what="y")
    assert err.value.errno == errno.ENOSPC


@pytest.mark.parametrize(
    "build",
    [
        lambda: ReplayBuffer(size=HUGE, batch_B=1),
        lambda: SumTree(HUGE),
        lambda: MultiTaskReplay(10**9, size=1000, batch_B=1, encoder_size=1000),
    ],
)
def test_absurd_buffer_sizes_are_refused_before_allocation(build):
    with pytest.raises(ArgumentError, match=r"(replay_size|n_train_tasks x replay_size) needs"):
        build()


def test_a_storage_too_large_for_memory_is_refused_at_its_first_batch():
    rows = max(1, (available_memory() or 2**40) // 2**20 + 1)  # 1 MiB entries, too many
    buffer = ReplayBuffer(size=rows, batch_B=1)
    samples = _samples(obs_size=2**18)  # 2**18 float32: 1 MiB an entry
    with pytest.raises(ArgumentError, match=r"replay storage of \d+ entries of [12]\.0 MiB"):
        buffer.append_samples(samples)
    assert buffer.storage is None


def test_a_memmap_storage_too_large_for_its_disk_is_refused(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=1000))
    buffer = ReplayBuffer(size=64, batch_B=1, storage="memmap", scratch_dir=str(tmp_path))
    with pytest.raises(OSError, match="No space left on device: a replay storage") as err:
        buffer.append_samples(_samples(obs_size=64))
    assert err.value.errno == errno.ENOSPC and buffer.storage is None


@pytest.mark.parametrize(
    ("algo", "arg"),
    [("r2d1", "replay_size=1e30"), ("dqn", "replay_size=1e14"), ("sac", "replay_size=1e14")],
)
def test_cli_refuses_absurd_replay_sizes_in_one_line(tmp_path, capsys, algo, arg):
    from tdrl.cli import main

    env = "Pendulum-v1" if algo == "sac" else "CartPole-v1"
    argv = ["train", "--algo", algo, "--env", env, "--algo-arg", arg, "--no-progress"]
    assert main([*argv, "--n-steps", "64", "--log-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "replay_size needs" in err, err


def test_torch_memmap_write_failures_become_named_os_errors():
    raw = RuntimeError("unable to write to file </x/s/obs.memmap>: No space left on device (28)")
    err = as_os_error(raw)
    assert isinstance(err, OSError) and err.errno == 28 and err.filename == "/x/s/obs.memmap"
    assert as_os_error(RuntimeError("other")).args == ("other",)


def _samples(*, obs_size: int, T: int = 1, B: int = 1) -> TensorDict:
    false = torch.zeros(T, B, 1, dtype=torch.bool)
    obs = torch.zeros(T, B, obs_size)
    return TensorDict(
        {
            "observation": obs,
            "prev_action": torch.zeros(T, B, dtype=torch.int64),
            "prev_reward": torch.zeros(T, B),
            "action": torch.zeros(T, B, dtype=torch.int64),
            "next": {
                "observation": obs,
                "reward": torch.zeros(T, B, 1),
                "done": false,
                "terminated": false,
                "truncated": false,
            },
        },
        batch_size=[T, B],
    )


# ---------------------------------------------------------------------- a full disk
class _FullDisk:
    """A ``debug.log`` file object whose writes, flushes and close fail with ENOSPC."""

    def __init__(self, inner):
        self.inner = inner

    def _fail(self, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    write = flush = _fail

    def close(self):
        self.inner.close()
        self._fail()


def test_a_full_disk_under_debug_log_is_named_and_not_hidden_by_closing(tmp_path):
    with pytest.raises(OSError) as err, logger_context(tmp_path, 0, "full", {}, echo=False) as log:
        log._debug_file = _FullDisk(log._debug_file)
        log.log("one line")
    assert err.value.errno == errno.ENOSPC
    assert (
        str(err.value)
        == f"[Errno 28] writing {tmp_path / 'run_0' / 'debug.log'} failed (No space left on device)"
    )


# ------------------------------------------------------------ killed snapshots, resumed
def test_resume_removes_files_staged_by_a_killed_run(tmp_path):
    run = tmp_path / "run_0"
    Logger(run).close()
    staged = [run / ".params.pkl.0123456789ab.tmp", run / ".progress.csv.abcdef012345.tmp"]
    for path in staged:
        path.write_bytes(b"half")
    (run / ".keep.tmp").write_bytes(b"not ours")
    with logger_context(tmp_path, 0, "resumed", {}, resume=True, echo=False):
        pass
    assert not any(p.exists() for p in staged) and (run / ".keep.tmp").exists()
    assert ".params.pkl.0123456789ab.tmp" in (run / "debug.log").read_text()


_KILL_AT_SECOND_SNAPSHOT = """
import os, signal, sys
real, calls = os.replace, []
def replace(src, dst, *args, **kwargs):
    if str(dst).endswith("params.pkl"):
        calls.append(dst)
        if len(calls) == 2:  # the second snapshot is staged, not yet in place
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *args, **kwargs)
os.replace = replace
from tdrl.cli import main
sys.exit(main(sys.argv[1:]))
"""

PEARL_TINY = [
    *("--algo-arg", "batch_size=16", "--algo-arg", "meta_batch=2"),
    *("--algo-arg", "embedding_batch_size=8"),
    *("--runner-arg", "n_train_tasks=2", "--runner-arg", "n_eval_tasks=1"),
    *("--runner-arg", "num_initial_steps=20", "--runner-arg", "num_tasks_sample=1"),
    *("--runner-arg", "num_train_steps_per_itr=2", "--runner-arg", "num_evals=1"),
    *("--runner-arg", "num_steps_per_eval=20", "--runner-arg", "replay_size=1000"),
    *("--runner-arg", "snapshot_replay=True", "--n-steps", "900", "--no-progress"),
]


@pytest.mark.timeout(240)
def test_pearl_killed_during_a_snapshot_resumes_without_leftovers(tmp_path):
    argv = ["train", "--algo", "pearl", "--env", "point-robot", "--log-dir", str(tmp_path)]
    argv += PEARL_TINY
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(
        [sys.executable, "-c", _KILL_AT_SECOND_SNAPSHOT, *argv], env=env, capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    run = tmp_path / "run_0"
    assert list(run.glob(".params.pkl.*.tmp")), sorted(p.name for p in run.iterdir())
    resumed = subprocess.run(
        [sys.executable, "-m", "tdrl.cli", *argv, "--resume"], env=env, capture_output=True
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert not list(run.glob(".*.tmp"))
    with open(run / "progress.csv", newline="") as f:
        itrs = [int(r["Diagnostics/Iteration"]) for r in csv.DictReader(f)]
    assert itrs == list(range(len(itrs))) and len(itrs) >= 3


# ------------------------------------------------------------ corrupt PEARL markers
@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: m.pop("entropy"), "lacks its 'entropy' entry"),
        (lambda m: m.pop("spawned"), "lacks its 'spawned' entry"),
        (lambda m: m.update(entropy="abc"), "must be integers, got 'abc'"),
        (lambda m: m.update(spawned=1.5), "must be integers"),
        (lambda m: m.update(spawned=-1), "must be >= 0"),
    ],
)
def test_a_corrupt_multi_task_marker_is_refused_naming_the_file(tmp_path, change, match):
    replay = MultiTaskReplay(2, size=20, batch_B=1, encoder_size=6, seed=3)
    replay.save(tmp_path / "r")
    marker = load_plain(tmp_path / "r" / MARKER_FILE)
    change(marker)
    save_plain(marker, tmp_path / "r" / MARKER_FILE)
    other = MultiTaskReplay(2, size=20, batch_B=1, encoder_size=6, seed=4)
    with pytest.raises(SnapshotError, match=match) as err:
        other.load(tmp_path / "r")
    assert str(tmp_path / "r" / MARKER_FILE) in str(err.value)


# -------------------------------------------------------------- the CLI, non-finite
@pytest.mark.parametrize("algo", ["ppo", "dqn", "sac"])
def test_cli_stops_a_non_finite_run_in_one_line(tmp_path, capsys, algo):
    from tdrl.cli import main

    env_id = f"tdrl-test/NonFinite-{algo}-v0"
    kwargs = {"at_step": 500, "continuous": algo == "sac", "value": math.nan}
    gym.register(env_id, entry_point=NonFiniteEnv, kwargs=kwargs)
    try:
        argv = ["train", "--algo", algo, "--env", env_id, "--n-steps", "2000", "--no-progress"]
        argv += ["--log-dir", str(tmp_path), "--batch-B", "1", "--batch-T", "16"]
        assert main(argv) == 1
    finally:
        gym.registry.pop(env_id)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "non-finite next.reward (nan)" in err, err
    assert err.startswith("tdrl train: error: iteration "), err


def test_a_run_directory_that_vanishes_mid_run_is_named(tmp_path):
    import shutil

    from tdrl.agents import CategoricalPgAgent
    from tdrl.algos import PPO
    from tdrl.runners import MinibatchRl
    from tdrl.samplers import SerialSampler
    from tdrl.testing import IdentityEnv

    class Vanishing(PPO):
        def optimize_agent(self, itr, samples):
            if itr == 2:
                shutil.rmtree(tmp_path / "run_0")
            return super().optimize_agent(itr, samples)

    sampler = SerialSampler(IdentityEnv, batch_T=8, batch_B=2)
    runner = MinibatchRl(
        Vanishing(), CategoricalPgAgent(), sampler, n_steps=80, log_interval_steps=16, seed=0
    )
    with (
        pytest.raises(FileNotFoundError, match=r"writing .*run_0/params\.pkl failed"),
        logger_context(tmp_path, 0, "gone", {}, echo=False),
    ):
        runner.train()


# ------------------------------------------------------- corrupt sequence / n-step states
def _tampered(tmp_path, build, fill, change):
    import copy

    buffer = build()
    fill(buffer)
    buffer.save(tmp_path / "rb")
    state_file = tmp_path / "rb" / "replay_state.pt"
    state = copy.deepcopy(load_plain(state_file))
    change(state)
    save_plain(state, state_file)
    return state_file


SEQUENCE_TAMPERS = [
    (lambda s: s.pop("config"), "config is NoneType"),
    (lambda s: s.update(t=1.5), "t is 1.5, not a whole number"),
    (lambda s: s.update(filled="4"), "filled is '4'"),
    (lambda s: s.pop("storage"), "'storage' entry is missing"),
    (lambda s: s.update(sampler="x"), "'sampler' entry is missing or not a dict"),
    (lambda s: s.update(info=[1]), "'info' entry is missing or not a dict"),
    (lambda s: s["rnn_template"].pop("h"), "rnn_template does not match the stored rnn_state"),
    (lambda s: s["rnn_template"].update(h=torch.zeros(5)), "rnn_template does not match"),
]


@pytest.mark.parametrize(("change", "match"), SEQUENCE_TAMPERS)
def test_a_corrupt_sequence_replay_state_is_refused_naming_the_file(tmp_path, change, match):
    from test_sequence_replay import BATCH_T, B, FakeRecurrentSource

    from tdrl.replays.sequence import SequenceReplayBuffer

    def build():
        return SequenceReplayBuffer(size=12 * B, batch_B=B, batch_T=BATCH_T, rnn_state_interval=2)

    state_file = _tampered(
        tmp_path, build, lambda rb: rb.append_samples(FakeRecurrentSource().batch()), change
    )
    with pytest.raises(SnapshotError, match=match) as err:
        build().load(tmp_path / "rb")
    assert str(state_file) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: s.pop("config"), "config is NoneType"),
        (lambda s: s.update(config=[1]), "config is list"),
        (lambda s: s.update(t=2.5), "t is 2.5"),
        (lambda s: s.update(sampler=None), "'sampler' entry is missing"),
    ],
)
def test_a_corrupt_n_step_replay_state_is_refused_naming_the_file(tmp_path, change, match):
    def build():
        return ReplayBuffer(size=12, batch_B=1, n_step_return=2)

    state_file = _tampered(
        tmp_path, build, lambda rb: rb.append_samples(_samples(obs_size=2, T=4)), change
    )
    with pytest.raises(SnapshotError, match=match) as err:
        build().load(tmp_path / "rb")
    assert str(state_file) in str(err.value) and "\n" not in str(err.value)
