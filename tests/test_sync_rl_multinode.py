"""SyncRl over two "nodes" on one machine: two torchrun agents meet at a static rendezvous.

The same script runs once as ``torchrun --nnodes 2 --nproc_per_node 1`` (two torchrun
processes, one rank each, like two machines) and once as ``torchrun --nnodes 1
--nproc_per_node 2``; the trained parameters must agree. About 13 s on a 2-core machine,
mostly the imports of three torchrun processes and four ranks.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

N_STEPS, LOG_INTERVAL = 256, 64  # 2 ranks x 8 x 2 steps: 8 iterations, a row every 2

SCRIPT = """
import contextlib, os, sys
from pathlib import Path

out_dir = Path(sys.argv[2])
out_dir.mkdir(parents=True, exist_ok=True)
# Written first, so that the test can kill this rank if its torchrun is gone.
(out_dir / f"pid_rank{os.environ['RANK']}.txt").write_text(str(os.getpid()))

import torch
from tdrl.agents import CategoricalPgAgent
from tdrl.algos import A2C
from tdrl.logging import logger_context
from tdrl.runners import SyncRl
from tdrl.samplers import SerialSampler

torch.set_num_threads(1)
sampler = SerialSampler(env_kwargs={"id": "CartPole-v1"}, batch_T=8, batch_B=2)
agent = CategoricalPgAgent(
    model_kwargs={"hidden_sizes": (32,), "normalize_observation": True}
)
algo = A2C(gae_lambda=0.95, normalize_advantage=True)
runner = SyncRl(algo, agent, sampler, n_steps=N_STEPS, seed=7,
                log_interval_steps=LOG_INTERVAL, progress_bar=False, timeout_s=60)
rank = SyncRl.launch_rank()
log = logger_context(sys.argv[1], 0, "a2c", {"seed": 7}, echo=False)
with log if rank == 0 else contextlib.nullcontext():
    row = runner.train()
names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "LOCAL_WORLD_SIZE")
torch.save(
    {
        "env": {k: os.environ.get(k) for k in names},
        "agent": agent.state_dict(),
        "optim": [o.state_dict() for o in algo.optimizers()],
        "row": row,
    },
    out_dir / f"state_rank{rank}.pt",
)
print("RESULT", rank, os.environ["LOCAL_RANK"], flush=True)
"""

#: torchrun settings of the calling environment that would change the runs.
_LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")


def _torchrun() -> list[str]:
    exe = Path(sys.executable).parent / "torchrun"
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", "torch.distributed.run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _LAUNCH_VARS and not k.startswith(("PET_", "TORCHELASTIC_"))
    }
    env["OMP_NUM_THREADS"] = "1"
    return env


def _kill_ranks(out_dir: Path, script: Path) -> None:
    """Kill the ranks (their pid files) that outlived their torchrun; torchrun starts
    each rank in a session of its own, out of reach of its process group."""
    for pid_file in out_dir.glob("pid_rank*.txt"):
        pid = int(pid_file.read_text())
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # gone
            continue
        if str(script).encode() in cmdline:  # still our rank, not a reused pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _run(name: str, cmds: list[list[str]], out_dir: Path, script: Path, timeout_s: float):
    """Start the torchrun commands at once, wait for all; stop everything left over.

    Returns the exit codes and the output of each command. A command that fails stops
    the wait (the others would wait for its ranks until their timeout).
    """
    procs, logs = [], []
    try:
        for i, cmd in enumerate(cmds):
            logs.append(out_dir.parent / f"{name}_{i}.log")
            with open(logs[-1], "w") as out:
                procs.append(
                    subprocess.Popen(
                        cmd,
                        cwd=out_dir.parent,
                        env=_env(),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            codes = [p.poll() for p in procs]
            if all(c is not None for c in codes) or any(c for c in codes):
                break
            time.sleep(0.1)
    finally:
        for p in procs:  # torchrun stops its ranks on SIGTERM
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        _kill_ranks(out_dir, script)
    return [p.returncode for p in procs], [log.read_text() for log in logs]


def _load(out_dir: Path) -> list[dict]:
    return [torch.load(out_dir / f"state_rank{r}.pt", weights_only=False) for r in (0, 1)]


def _cum_steps(log_dir: Path) -> list[int]:
    with open(log_dir / "run_0" / "progress.csv", newline="") as f:
        return [int(row["Diagnostics/CumSteps"]) for row in csv.DictReader(f)]


@pytest.mark.timeout(420)  # ~15 s alone on 2 cores (imports); the waits stop at 150 + 120 s
def test_two_nodes_train_as_one_node_with_two_ranks(tmp_path):
    script = tmp_path / "train.py"
    body = SCRIPT.replace("N_STEPS", str(N_STEPS)).replace("LOG_INTERVAL", str(LOG_INTERVAL))
    script.write_text(textwrap.dedent(body))
    torchrun = _torchrun()

    # Two nodes of one rank each: node 0 hosts the rendezvous store at the master port.
    two = tmp_path / "two_nodes"
    two.mkdir()
    port = _free_port()
    master = f"--master_addr 127.0.0.1 --master_port {port}"
    cmds = [
        [
            *torchrun,
            *f"--nnodes 2 --nproc_per_node 1 --node_rank {node} {master}".split(),
            *(str(script), str(two / f"logs_node{node}"), str(two / "out")),
        ]
        for node in (0, 1)
    ]
    codes, outputs = _run("two_nodes", cmds, two / "out", script, timeout_s=150)
    for code, out in zip(codes, outputs, strict=True):
        assert code == 0, out[-4000:]

    # One node with two ranks.
    one = tmp_path / "one_node"
    one.mkdir()
    master = f"--master_addr 127.0.0.1 --master_port {_free_port()}"
    cmd = [
        *torchrun,
        *f"--nnodes 1 --nproc_per_node 2 {master}".split(),
        *(str(script), str(one / "logs"), str(one / "out")),
    ]
    (code,), (out,) = _run("one_node", [cmd], one / "out", script, timeout_s=120)
    assert code == 0, out[-4000:]

    two_states, one_states = _load(two / "out"), _load(one / "out")
    # Each node ran one rank, LOCAL_RANK 0, with the global RANK of its node.
    assert [s["env"]["RANK"] for s in two_states] == ["0", "1"]
    assert [s["env"]["LOCAL_RANK"] for s in two_states] == ["0", "0"]
    assert [s["env"]["GROUP_RANK"] for s in two_states] == ["0", "1"]
    assert [s["env"]["WORLD_SIZE"] for s in two_states] == ["2", "2"]
    assert [s["env"]["LOCAL_WORLD_SIZE"] for s in two_states] == ["1", "1"]
    assert [s["env"]["LOCAL_RANK"] for s in one_states] == ["0", "1"]
    assert [s["env"]["RANK"] for s in one_states] == ["0", "1"]

    for states in (two_states, one_states):
        # Trained: 8 updates each, observation statistics over both ranks' steps.
        assert [o["state"][0]["step"].item() for o in states[0]["optim"]] == [8]
        rms_count = next(v for k, v in states[0]["agent"].items() if k.endswith("count"))
        assert rms_count.item() == pytest.approx(N_STEPS, abs=1)
        # The ranks' replicas are equal within a run.
        torch.testing.assert_close(states[1]["agent"], states[0]["agent"], atol=0, rtol=0)
        assert states[0]["row"]["Diagnostics/CumSteps"] == N_STEPS and states[1]["row"] == {}
    for rank in (0, 1):  # and two nodes train as one node does
        torch.testing.assert_close(
            two_states[rank]["agent"], one_states[rank]["agent"], atol=1e-6, rtol=0
        )

    # Only rank 0 (node 0) logs: node 1 did not even create its log directory.
    expected_steps = list(range(LOG_INTERVAL, N_STEPS + 1, LOG_INTERVAL))
    assert sorted(p.name for p in (two / "logs_node0").iterdir()) == ["run_0"]
    assert not (two / "logs_node1").exists()
    assert _cum_steps(two / "logs_node0") == expected_steps
    assert sorted(p.name for p in (one / "logs").iterdir()) == ["run_0"]
    assert _cum_steps(one / "logs") == expected_steps
