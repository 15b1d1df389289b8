"""No child process outlives its run, and a dead or stuck child is named.

* The parent is SIGKILLed while its children wait (parallel sampler workers, ``AsyncRl``'s
  sampler process and the workers of the sampler inside it, ``SyncRl``'s spawned rank):
  every child, and multiprocessing's resource tracker, is gone within seconds.
* A worker, a sampler process or a rank is SIGKILLed, SIGSTOPped or hangs in its env
  mid-batch: the error names it and how it ended (the signal), or that it is stuck (with
  a short timeout), and no process is left after the run.

Faults are injected by ``FaultyEnv`` from inside the child that steps it, at a chosen
step, so each test is deterministic. Every spawned process costs a few seconds of
start-up on a small machine, so the tests start as few as they can.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import operator
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from tdrl.agents.dqn import DqnAgent
from tdrl.algos.dqn import DQN
from tdrl.runners import AsyncRl
from tdrl.runners.async_sampler import PublishedWeights
from tdrl.samplers import AlternatingSampler, CpuSampler, GpuSampler, SerialSampler
from tdrl.testing import CountingEnv, FixedActionAgent
from tdrl.utils.processes import ChildFailed, start_child

pytestmark = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")


class FaultyEnv(CountingEnv):
    """A ``CountingEnv`` that, when reset with seed ``fault_seed``, does ``fault`` at its
    ``at_step``-th step: ``"kill"`` (SIGKILL itself), ``"stop"`` (SIGSTOP itself) or
    ``"hang"`` (sleep ``hang_s`` seconds). Kill and stop act only in a child process."""

    def __init__(self, fault=None, at_step=3, fault_seed=1, hang_s=3600.0, **kwargs):
        super().__init__(**kwargs)
        self.fault, self.at_step, self.fault_seed, self.hang_s = fault, at_step, fault_seed, hang_s
        self._seed, self._steps = None, 0

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._seed = seed
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self._steps += 1
        if self.fault and self._seed == self.fault_seed and self._steps == self.at_step:
            in_child = multiprocessing.parent_process() is not None
            if self.fault == "hang":
                time.sleep(self.hang_s)
            elif in_child:
                os.kill(os.getpid(), signal.SIGKILL if self.fault == "kill" else signal.SIGSTOP)
        return super().step(action)


def _alive(pids):
    """Those of ``pids`` still running (a zombie counts as gone)."""
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
        except (OSError, IndexError):
            pass
    return alive


def _marked(marker):
    """Live processes (not zombies) whose environment carries ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker.encode() in environ and _alive([int(entry.name)]):
                found.append(int(entry.name))
    return found


def _describe(pids):
    out = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmd = "?"
        out.append(f"{pid}: {cmd[:120]}")
    return "\n".join(out)


def _wait_gone(pids_or_marker, within):
    find = _marked if isinstance(pids_or_marker, str) else _alive
    deadline = time.monotonic() + within
    while (left := find(pids_or_marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _kill_leftovers(pids):
    """SIGKILL (which a stopped process receives too) what a failed test left behind."""
    for pid in _alive(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------- the parent killed
PARENT = textwrap.dedent(
    """
    import threading, time
    import torch
    import torch.distributed as dist
    from tdrl.agents import CategoricalPgAgent
    from tdrl.agents.dqn import DqnAgent
    from tdrl.algos import A2C
    from tdrl.algos.dqn import DQN
    from tdrl.runners import AsyncRl, SyncRl
    from tdrl.samplers import CpuSampler, GpuSampler, SerialSampler
    from tdrl.testing import CountingEnv, FixedActionAgent


    class BlockingAgent(FixedActionAgent):
        # Acts in iteration 0, then blocks in step (in the parent or in the workers).

        def sample_mode(self, itr):
            super().sample_mode(itr)
            self.block = itr >= 1

        def step(self, *args):
            if getattr(self, "block", False):
                time.sleep(3600)
            return super().step(*args)


    class StuckDQN(DQN):
        def optimize_agent(self, itr, samples):
            print("READY async", flush=True)
            time.sleep(3600)


    class StuckA2C(A2C):
        def optimize_agent(self, itr, samples):
            if dist.get_rank() == 0 and itr == 1:
                print("READY sync", flush=True)
                time.sleep(3600)
            return super().optimize_agent(itr, samples)


    def sample(sampler):
        agent = BlockingAgent()
        sampler.initialize(agent, seed=0)
        agent.sample_mode(0)
        sampler.obtain_samples(0)  # starts the workers
        agent.sample_mode(1)
        print("READY", type(sampler).__name__, flush=True)
        sampler.obtain_samples(1)  # blocks


    def async_rl():
        sampler = GpuSampler(CountingEnv, {}, batch_T=4, batch_B=1, n_workers=1)
        agent = DqnAgent(model_kwargs={"hidden_sizes": (8,)})
        algo = StuckDQN(batch_size=4, min_steps_learn=4, replay_size=100)
        AsyncRl(algo, agent, sampler, n_steps=10_000, progress_bar=False,
                sampler_process=True, max_sampler_lead_itrs=1).train()


    def sync_rl():
        sampler = SerialSampler(CountingEnv, {}, batch_T=4, batch_B=1)
        agent = CategoricalPgAgent(model_kwargs={"hidden_sizes": (8,)})
        SyncRl(StuckA2C(), agent, sampler, n_steps=10_000, world_size=2,
               progress_bar=False, timeout_s=600).train()


    if __name__ == "__main__":
        torch.set_num_threads(1)
        # All start from threads, as AsyncRl's sampler thread starts its workers.
        jobs = [
            (sample, GpuSampler(CountingEnv, {}, batch_T=4, batch_B=1, n_workers=1)),
            (sample, CpuSampler(CountingEnv, {}, batch_T=4, batch_B=1, n_workers=1)),
            (async_rl,),
            (sync_rl,),
        ]
        for target, *args in jobs:
            threading.Thread(target=target, args=args, daemon=True).start()
        time.sleep(3600)
    """
)


def _read_until_ready(proc, expected, within=180.0):
    """Read ``proc``'s output until it printed ``READY <x>`` for every ``x`` expected.

    A thread reads (``select`` on a buffered pipe would miss lines already buffered)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    deadline, seen, missing = time.monotonic() + within, [], set(expected)
    while missing and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        if line.startswith("READY"):
            missing.discard(line.split()[1])
        if proc.poll() is not None and lines.empty():
            break
    if missing:
        proc.kill()
        pytest.fail(f"not ready: {missing}\n{''.join(seen)}\n{proc.stderr.read()[-3000:]}")


def test_killing_the_parent_leaves_no_child(tmp_path):
    """A parent SIGKILLed while its children wait: a GpuSampler worker waiting for actions
    (AlternatingSampler's workers run the same loop), a CpuSampler worker busy in a batch,
    AsyncRl's sampler process spinning in its throttle loop and the worker of the
    GpuSampler inside it, SyncRl's rank 1 waiting in a collective (with a 600 s timeout).
    All were started from threads of the parent (one process, to start as few as we can);
    all are gone within seconds, and so is multiprocessing's resource tracker."""
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    marker = f"TDRL_PROCESS_TEST_{uuid.uuid4().hex}"
    env = {**os.environ, marker: "1", "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
        text=True,
    )
    try:
        _read_until_ready(parent, {"GpuSampler", "CpuSampler", "async", "sync"})
        time.sleep(0.5)  # the blocked ones are blocked by now
        children = [pid for pid in _marked(marker) if pid != parent.pid]
        spawned = [p for p in children if "spawn_main" in _describe([p])]
        assert len(spawned) == 5, _describe(children)  # 2 workers, process + worker, rank
        assert len(children) == 6, _describe(children)  # and the resource tracker
        parent.kill()
        parent.wait(10)
        left = _wait_gone(marker, within=5.0)
        assert not left, "outlived their parent:\n" + _describe(left)
    finally:
        if parent.poll() is None:
            parent.kill()
        _kill_leftovers(_marked(marker))


# -------------------------------------------------------------- a worker dies or hangs
KW = {"batch_T": 5, "batch_B": 2, "max_decorrelation_steps": 0}
STUCK = r"is stuck: sent no {} within 1 s \(worker_timeout_s\); its process is {}"


@pytest.mark.parametrize(
    ("cls", "fault", "n_workers", "match"),
    [
        pytest.param(
            GpuSampler, "kill", 1, "^tdrl-sampler-0 was killed by SIGKILL$", id="gpu-kill"
        ),
        pytest.param(
            AlternatingSampler,
            "stop",
            2,
            "^tdrl-sampler-1 " + STUCK.format("observation", "stopped"),
            id="alternating-stop",
        ),
        pytest.param(
            CpuSampler, "kill", 1, "^tdrl-sampler-0 was killed by SIGKILL$", id="cpu-kill"
        ),
        pytest.param(
            CpuSampler,
            "hang",
            1,
            "^tdrl-sampler-0 " + STUCK.format("message", "sleeping"),
            id="cpu-hang",
        ),
    ],
)
def test_dead_or_stuck_worker_is_named_and_no_process_is_left(cls, fault, n_workers, match):
    """The worker stepping env 1 dies, stops or hangs at its third step: ``obtain_samples``
    raises ``ChildFailed`` naming it and the signal, or (after ``worker_timeout_s``) that
    it is stuck and what its process is doing; ``shutdown`` then ends every worker at
    once, the stopped one included. (GpuSampler and AlternatingSampler wait on a
    semaphore per time step, CpuSampler on a pipe per batch.)"""
    env_kwargs = {"fault": fault, "fault_seed": 1}
    sampler = cls(FaultyEnv, env_kwargs, n_workers=n_workers, worker_timeout_s=1, **KW)
    agent = FixedActionAgent()
    sampler.initialize(agent, seed=0)
    agent.sample_mode(0)
    try:
        with pytest.raises(ChildFailed, match=match) as info:
            sampler.obtain_samples(0)
        assert info.value.stuck == (fault != "kill")
        pids = [p.pid for p in sampler.worker_processes]
        t0 = time.monotonic()
        sampler.shutdown()
        assert time.monotonic() - t0 < 3.5
        assert not _alive(pids)
    finally:
        _kill_leftovers([p.pid for p in sampler.worker_processes])
        sampler.shutdown()


def test_worker_killed_between_batches_is_named():
    """A worker that died while the parent was busy elsewhere: the next batch's command
    cannot reach it, and the error names it (no BrokenPipeError)."""
    sampler = GpuSampler(CountingEnv, {}, n_workers=1, **KW)
    agent = FixedActionAgent()
    sampler.initialize(agent, seed=0)
    agent.sample_mode(0)
    try:
        sampler.obtain_samples(0)
        victim = sampler.worker_processes[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(5)
        with pytest.raises(ChildFailed, match=r"^tdrl-sampler-0 was killed by SIGKILL$"):
            sampler.obtain_samples(1)
    finally:
        pids = [p.pid for p in sampler.worker_processes]
        sampler.shutdown()
    assert not _alive(pids)


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, "10"])
def test_timeouts_are_checked(value):
    with pytest.raises(ValueError, match=r"^worker_timeout_s must be a positive number of seconds"):
        CpuSampler(CountingEnv, {}, batch_T=2, batch_B=2, worker_timeout_s=value)
    with pytest.raises(
        ValueError, match=r"^sampler_timeout_s must be a positive number of seconds"
    ):
        AsyncRl(
            DQN(),
            DqnAgent(),
            SerialSampler(CountingEnv, {}, batch_T=2, batch_B=1),
            n_steps=8,
            sampler_timeout_s=value,
        )


def test_timeouts_default_to_half_an_hour_and_none_disables_them():
    sampler = CpuSampler(CountingEnv, {}, batch_T=2, batch_B=2)
    assert sampler.worker_timeout_s == 1800.0
    assert (
        CpuSampler(CountingEnv, {}, batch_T=2, batch_B=2, worker_timeout_s=None).worker_timeout_s
        is None
    )
    runner = AsyncRl(
        DQN(), DqnAgent(), SerialSampler(CountingEnv, {}, batch_T=2, batch_B=1), n_steps=8
    )
    assert runner.sampler_timeout_s == 1800.0


# ------------------------------------------------------------ AsyncRl's sampler dies
def _async_run(fault, *, process, **runner_kwargs):
    env_kwargs = {"fault": fault, "fault_seed": 1, "at_step": 20, "hang_s": 4.0}
    sampler = SerialSampler(FaultyEnv, env_kwargs, batch_T=4, batch_B=1, max_decorrelation_steps=0)
    agent = DqnAgent(model_kwargs={"hidden_sizes": (8,)})
    algo = DQN(batch_size=4, min_steps_learn=8, replay_size=100, replay_ratio=1)
    return AsyncRl(
        algo,
        agent,
        sampler,
        n_steps=400,
        seed=0,
        progress_bar=False,
        sampler_process=process,
        **runner_kwargs,
    )


@pytest.mark.parametrize(
    ("fault", "process", "match"),
    [
        pytest.param(
            "kill",
            True,
            r"^the sampler process failed: tdrl-async-sampler was killed by SIGKILL$",
            id="process-kill",
        ),
        pytest.param(
            "stop",
            True,
            r"^the sampler process tdrl-async-sampler is stuck: made no progress within 1 s "
            r"\(sampler_timeout_s\); its process is stopped",
            id="process-stop",
        ),
        pytest.param(
            "hang",
            False,
            r"^the sampler thread is stuck: made no progress within 1 s \(sampler_timeout_s\)$",
            id="thread-hang",
        ),
    ],
)
def test_async_sampler_death_or_hang_is_named(fault, process, match):
    """The env of AsyncRl's sampler (seeded 1: seed 0 + 1) kills or stops the sampler
    process, or hangs the sampler thread, at its 20th step (the 5th batch)."""
    runner = _async_run(fault, process=process, sampler_timeout_s=1)
    t0 = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match=match):
            runner.train()
        assert time.monotonic() - t0 < 30
        if process:
            assert not _alive([runner.sampler_proc.pid])
    finally:
        if runner.sampler_proc is not None:
            _kill_leftovers([runner.sampler_proc.pid])


# ------------------------------------------------------------------ a SyncRl rank dies
def _own_children(marker):
    """Processes marked ``marker``, other than multiprocessing's resource tracker (which
    serves this test process until it exits)."""
    return [pid for pid in _marked(marker) if "resource_tracker" not in _describe([pid])]


@pytest.mark.parametrize(
    ("fault", "match"),
    [
        pytest.param("kill", r"^SyncRl rank 1 failed \(was killed by SIGKILL\)$", id="kill"),
        pytest.param(
            "stop",
            r"^SyncRl rank 1 is stuck: it did not end after the run failed; its process is "
            r"stopped",
            id="stop",
        ),
    ],
)
def test_sync_rl_rank_death_or_stop_is_named(fault, match, monkeypatch):
    """Rank 1's env (seed 0 + 100 * 1 + 1) kills or stops rank 1 in its second iteration:
    rank 0's next collective fails at once (death) or after ``timeout_s`` (stop), and the
    error names rank 1 and how it ended; no rank is left."""
    from tdrl.agents import CategoricalPgAgent
    from tdrl.algos import A2C
    from tdrl.runners import SyncRl

    marker = f"TDRL_PROCESS_TEST_{uuid.uuid4().hex}"
    monkeypatch.setenv(marker, "1")
    env_kwargs = {"fault": fault, "fault_seed": 101, "at_step": 6}
    sampler = SerialSampler(FaultyEnv, env_kwargs, batch_T=4, batch_B=1, max_decorrelation_steps=0)
    agent = CategoricalPgAgent(model_kwargs={"hidden_sizes": (8,)})
    runner = SyncRl(
        A2C(), agent, sampler, n_steps=64, world_size=2, seed=0, progress_bar=False, timeout_s=3
    )
    t0 = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match=match):
            runner.train()
        assert time.monotonic() - t0 < 40
        deadline = time.monotonic() + 5.0
        while _own_children(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _own_children(marker), "a rank outlived the run"
    finally:
        _kill_leftovers(_own_children(marker))


# ------------------------------------------------------------------- the building blocks
ORPHAN = textwrap.dedent(
    """
    import multiprocessing, os, sys, time
    from tdrl.utils.processes import start_child

    if __name__ == "__main__":
        ctx = multiprocessing.get_context("spawn")
        child = start_child(ctx, time.sleep, args=(60,), name="tdrl-test-child")
        if sys.argv[1] == "forked" and os.fork() == 0:  # holds the parent's pipe ends
            time.sleep(60)
            os._exit(0)
        print(child.pid, flush=True)
        os._exit(0)  # gone before the child has even imported its target
    """
)


@pytest.mark.parametrize("how", ["plain", "forked"])
def test_a_child_whose_parent_is_already_gone_exits(how, tmp_path):
    """The race: the parent exits while its child still starts (``plain``: the child's
    first check sees the pipe's end of file). ``forked``: a forked copy of the parent
    keeps that pipe open, so the child must notice from ``os.getppid()``."""
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN)
    marker = f"TDRL_PROCESS_TEST_{uuid.uuid4().hex}"
    env = {**os.environ, marker: "1"}
    out = tmp_path / "out.txt"
    with open(out, "w") as f:  # not a pipe: the forked copy and the resource tracker hold it
        subprocess.run([sys.executable, str(script), how], stdout=f, env=env, timeout=60)
    try:
        child = int(out.read_text().split()[0])
        assert not _wait_gone([child], within=15.0), "the orphan kept running"
    finally:
        _kill_leftovers(_marked(marker))


def test_publishing_weights_does_not_wait_for_a_dead_lock_holder():
    """A sampler process that ends while it holds the published weights' lock (it cannot
    release it any more): the learner's next publication raises, naming it, instead of
    waiting for ever."""
    ctx = multiprocessing.get_context("spawn")
    agent = FixedActionAgent()
    weights = PublishedWeights.for_process(agent, ctx)
    take = operator.methodcaller("acquire")  # the child takes the lock, then exits
    holder = start_child(ctx, take, args=(weights.lock,), name="tdrl-async-sampler")
    holder.join(30)
    t0 = time.monotonic()
    with pytest.raises(ChildFailed, match=r"^tdrl-async-sampler exited normally$"):
        weights.publish(agent, [holder])
    assert time.monotonic() - t0 < 5


def test_every_child_process_is_started_by_start_child():
    """A child started any other way would not watch for its parent's death."""
    root = Path(__file__).resolve().parents[1] / "tdrl"
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "processes.py" and re.search(r"\bProcess\(|\.Pool\(", path.read_text())
    ]
    assert offenders == []
