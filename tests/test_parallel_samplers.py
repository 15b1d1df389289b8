"""Contract tests of the parallel samplers: the same batches as the serial sampler, the
learner's weights in the workers, worker failures, argument checks and clean shutdown.

Worker processes are spawned, so each sampler costs a few seconds of start-up; the tests
share samplers where they can.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from tdrl.agents import CategoricalPgAgent
from tdrl.agents.dqn import DqnAgent
from tdrl.samplers import AlternatingSampler, CpuSampler, GpuSampler, SerialSampler
from tdrl.testing import CountingEnv, FixedActionAgent

PARALLEL = (CpuSampler, GpuSampler, AlternatingSampler)
ENV_KW = {"episode_length": 5, "n_actions": 3}
T, B = 9, 4


def _children_alive(pids):
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        try:  # a zombie (exited, not yet reaped) counts as gone
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split()[2] == "Z":
                    continue
        except FileNotFoundError:
            continue
        alive.append(pid)
    return alive


def _batches(cls, agent, n_batches=3, **kwargs):
    kw = {"batch_T": T, "batch_B": B, "max_decorrelation_steps": 7}
    if cls is not SerialSampler:
        kw["n_workers"] = 2
    kw.update(kwargs)
    sampler = cls(CountingEnv, ENV_KW, **kw)
    sampler.initialize(agent, seed=3, traj_info_kwargs={"discount": 0.9})
    out = []
    try:
        for itr in range(n_batches):
            agent.sample_mode(itr)
            samples, trajs = sampler.obtain_samples(itr)
            out.append((samples.clone(), sorted((tr.Length, tr.Return) for tr in trajs)))
            agent.model.offset.data += 1.0  # a learner update: must reach the workers
    finally:
        sampler.shutdown()
    return out


@pytest.fixture(scope="module")
def serial_reference():
    return _batches(SerialSampler, FixedActionAgent())


@pytest.mark.parametrize("cls", PARALLEL, ids=lambda c: c.__name__)
def test_same_batches_as_serial(cls, serial_reference):
    """Same seeds, same fixed-action agent: identical [T, B] batches and episode records,
    batch after batch, while the agent's parameter changes between batches."""
    batches = _batches(cls, FixedActionAgent())
    assert len(batches) == len(serial_reference)
    for (got, trajs), (want, want_trajs) in zip(batches, serial_reference, strict=True):
        assert got.batch_size == want.batch_size
        assert (got == want).all(), cls.__name__
        assert trajs == want_trajs
        assert want_trajs  # episodes end within the batches: the check can fail
    # The parameter changes moved the actions (so the refresh is visible in the batch).
    assert not torch.equal(batches[0][0]["action"], batches[1][0]["action"])


def test_per_env_state_in_cpu_workers(serial_reference):
    """Per-env agent state (the env rank here) is set per worker slice."""
    want = _batches(SerialSampler, FixedActionAgent(per_env=True), n_batches=1)
    got = _batches(CpuSampler, FixedActionAgent(per_env=True), n_batches=1)
    assert (got[0][0] == want[0][0]).all()
    assert not (want[0][0]["action"] == serial_reference[0][0]["action"]).all()


def test_shared_agent_equals_learner_after_refresh():
    torch.manual_seed(0)
    agent = CategoricalPgAgent()
    sampler = CpuSampler(env_kwargs={"id": "CartPole-v1"}, batch_T=4, batch_B=2, n_workers=2)
    sampler.initialize(agent, seed=0)
    try:
        agent.sample_mode(0)
        sampler.obtain_samples(0)
        with torch.no_grad():
            for p in agent.parameters():
                p.add_(torch.randn_like(p))
        shared = sampler._shared_agent.state_dict()
        assert any(not torch.equal(v, shared[k]) for k, v in agent.state_dict().items())
        sampler.obtain_samples(1)  # refreshes before collecting
        shared = sampler._shared_agent.state_dict()
        for k, v in agent.state_dict().items():
            assert torch.equal(v, shared[k]), k
            assert shared[k].is_shared() or shared[k].numel() == 0, k
    finally:
        sampler.shutdown()


class _BrokenEnv(CountingEnv):
    def step(self, action):
        if self._k >= 2:
            raise RuntimeError("env exploded on purpose")
        return super().step(action)


@pytest.mark.parametrize("cls", [CpuSampler, GpuSampler], ids=lambda c: c.__name__)
def test_worker_error_reaches_the_parent_and_no_process_is_left(cls):
    sampler = cls(_BrokenEnv, {}, batch_T=5, batch_B=2, n_workers=2, max_decorrelation_steps=0)
    agent = FixedActionAgent()
    sampler.initialize(agent, seed=0)
    agent.sample_mode(0)
    with pytest.raises(RuntimeError, match="env exploded on purpose"):
        sampler.obtain_samples(0)
    pids = [p.pid for p in sampler.worker_processes]
    sampler.shutdown()
    assert not _children_alive(pids)


def test_alternating_rejects_per_env_agents_and_odd_workers():
    with pytest.raises(ValueError, match="n_workers must be a multiple of 2"):
        AlternatingSampler(CountingEnv, {}, batch_T=2, batch_B=4, n_workers=3)
    agent = DqnAgent(eps_final_min=0.0005, model_kwargs={"hidden_sizes": (8,)})
    sampler = AlternatingSampler(CountingEnv, {}, batch_T=2, batch_B=4, n_workers=2)
    with pytest.raises(ValueError, match="per-env state"):
        sampler.initialize(agent, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_workers": 5}, "n_workers"),
        ({"n_workers": 0}, "n_workers"),
        ({"worker_cpus": [[0]]}, "worker_cpus"),
        ({"torch_threads": 0}, "torch_threads"),
        ({"worker_timeout_s": 0}, "worker_timeout_s"),
        ({"worker_timeout_s": -5.0}, "worker_timeout_s"),
        ({"worker_timeout_s": float("nan")}, "worker_timeout_s"),
        ({"batch_T": 0}, "batch_T"),
        ({"eval_n_envs": 1}, "eval_max_steps"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match):
    kw = {"batch_T": 2, "batch_B": 4, "n_workers": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        CpuSampler(CountingEnv, {}, **kw)


def test_evaluation_in_parent_counts_completed_episodes():
    agent = FixedActionAgent()
    sampler = GpuSampler(
        CountingEnv,
        {"episode_length": 4},
        batch_T=2,
        batch_B=2,
        n_workers=2,
        eval_n_envs=2,
        eval_max_steps=10,
    )
    sampler.initialize(agent, seed=0)
    try:
        trajs = sampler.evaluate_agent(0)  # 5 steps per env: one whole episode each
        assert [tr.Length for tr in trajs] == [4, 4]
        assert not sampler.worker_processes  # evaluation alone starts no worker
    finally:
        sampler.shutdown()


SCRIPT = textwrap.dedent(
    """
    import sys, time
    from tdrl.samplers import {cls}
    from tdrl.testing import CountingEnv, FixedActionAgent

    if __name__ == "__main__":
        agent = FixedActionAgent()
        sampler = {cls}(CountingEnv, {{}}, batch_T=50, batch_B=2, n_workers=2)
        sampler.initialize(agent, seed=0)
        agent.sample_mode(0)
        sampler.obtain_samples(0)
        print(" ".join(str(p.pid) for p in sampler.worker_processes), flush=True)
        while True:
            sampler.obtain_samples(1)
    """
)


@pytest.mark.parametrize("cls", ["CpuSampler", "GpuSampler"])
def test_ctrl_c_leaves_no_worker_behind(cls, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(cls=cls))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2, proc.stderr.read()
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10
    while _children_alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _children_alive(pids)
