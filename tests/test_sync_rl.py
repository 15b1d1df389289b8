"""SyncRl: replicas in several processes, gradients all-reduced, rank 0 logs.

Each multi-process test starts 2 ranks (about 4 s on 2 cores, mostly imports).
"""

from __future__ import annotations

import copy
import csv
import functools
import os
import pickle
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import gymnasium as gym
import pytest
import torch
import torch.distributed as dist

from tdrl.agents import CategoricalPgAgent
from tdrl.agents.qpg import SacAgent, Td3Agent
from tdrl.algos import A2C
from tdrl.algos.pg.base import process_returns
from tdrl.algos.qpg import SAC, TD3
from tdrl.envs import space_to_spec
from tdrl.logging import logger_context
from tdrl.models.pg.mlp import CategoricalPgMlpModel
from tdrl.models.running_mean_std import RunningMeanStd
from tdrl.runners import MinibatchRl, SyncRl, SyncRlEval
from tdrl.samplers import SerialSampler
from tdrl.samplers.base import BatchSpec

ROOT = Path(__file__).resolve().parents[1]
T, B = 8, 2
A2C_KWARGS = {"clip_grad_norm": None, "gae_lambda": 0.95, "normalize_advantage": True}


def _sampler(**kwargs):
    return SerialSampler(env_kwargs={"id": "CartPole-v1"}, batch_T=T, batch_B=B, **kwargs)


def _agent():
    return CategoricalPgAgent(model_kwargs={"normalize_observation": True})


class RecordingA2C(A2C):
    """A2C that saves, per rank, its batch, parameters and (all-reduced) gradients."""

    def __init__(self, record_dir, **kwargs):
        super().__init__(**kwargs)
        self.record_dir = str(record_dir)

    def optimize_agent(self, itr, samples):
        before = {k: v.clone() for k, v in self.agent.state_dict().items()}
        info = super().optimize_agent(itr, samples)
        record = {
            "before": before,
            "samples": samples.clone(),
            "grads": [p.grad.clone() for p in self.agent.model.parameters()],
            "after": {k: v.clone() for k, v in self.agent.state_dict().items()},
        }
        torch.save(record, Path(self.record_dir) / f"rank{dist.get_rank()}_itr{itr}.pt")
        return info


class FailingA2C(A2C):
    """A2C whose rank ``fail_rank`` raises (``"raise"``) or silently changes its
    parameters (``"desync"``) in iteration 1."""

    def __init__(self, fail_rank, how, **kwargs):
        super().__init__(**kwargs)
        self.fail_rank, self.how = fail_rank, how

    def optimize_agent(self, itr, samples):
        info = super().optimize_agent(itr, samples)
        if itr == 1 and dist.get_rank() == self.fail_rank:
            if self.how == "raise":
                raise ValueError(f"planned failure in rank {self.fail_rank}")
            with torch.no_grad():
                next(self.agent.parameters()).add_(1.0)
        return info


def _local_gradient(record, synced_rms):
    """One rank's A2C gradient computed alone in this process (no all-reduce)."""
    model = CategoricalPgMlpModel(4, 2, normalize_observation=True)
    agent = CategoricalPgAgent(model=model)
    agent.load_state_dict(record["before"])
    algo = A2C(**A2C_KWARGS)
    algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(T, B))
    batch = process_returns(
        agent, record["samples"], discount=algo.discount, gae_lambda=0.95, normalize_advantage=True
    )
    # The rank normalised its loss inputs with the statistics merged across ranks.
    model.obs_rms.load_state_dict(synced_rms)
    algo.loss(batch)["loss"].backward()
    return [p.grad for p in model.parameters()]


def _marked_processes(marker):
    """Live processes (other than this one and multiprocessing's resource tracker, which
    serves this process until it exits) whose environment carries ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if (
            marker.encode() in environ
            and "State:\tZ" not in status
            and b"resource_tracker" not in cmdline
        ):
            found.append(int(entry.name))
    return found


@pytest.fixture
def process_marker(monkeypatch):
    """Tags the ranks this test spawns, to check that none outlives the run."""
    marker = f"TDRL_SYNC_TEST_{uuid.uuid4().hex}"
    monkeypatch.setenv(marker, "1")
    yield marker
    deadline = time.monotonic() + 5.0
    while _marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _marked_processes(marker) == [], "a rank outlived the run"


def test_one_update_on_two_ranks_averages_gradients(tmp_path, process_marker):
    record_dir = tmp_path / "records"
    record_dir.mkdir()
    # A model passed in (not built per rank): each rank must get a copy, not shared memory.
    agent = CategoricalPgAgent(model=CategoricalPgMlpModel(4, 2, normalize_observation=True))
    runner = SyncRl(
        RecordingA2C(record_dir, **A2C_KWARGS),
        agent,
        _sampler(),
        n_steps=2 * T * B,  # one iteration of both ranks
        world_size=2,
        seed=5,
        progress_bar=False,
        timeout_s=60,
    )
    with logger_context(tmp_path / "logs", 0, "sync", {"seed": 5}, echo=False):
        row = runner.train()
    r0, r1 = (torch.load(record_dir / f"rank{r}_itr0.pt", weights_only=False) for r in (0, 1))

    # Replicas start equal, end equal, and moved.
    for key in r0["before"]:
        assert torch.equal(r0["before"][key], r1["before"][key]), key
        assert torch.equal(r0["after"][key], r1["after"][key]), key
    assert not torch.equal(
        r0["before"]["model.pi.net.0.weight"], r0["after"]["model.pi.net.0.weight"]
    )
    assert not torch.equal(r0["samples"]["observation"], r1["samples"]["observation"])

    # The all-reduced gradient is the mean of the ranks' own gradients.
    synced_rms = {k[len("model.obs_rms.") :]: v for k, v in r0["after"].items() if "obs_rms" in k}
    g0 = _local_gradient(r0, synced_rms)
    g1 = _local_gradient(r1, synced_rms)
    for synced, a, b in zip(r0["grads"], g0, g1, strict=True):
        torch.testing.assert_close(synced, (a + b) / 2, rtol=1e-4, atol=1e-6)
    for s0, s1 in zip(r0["grads"], r1["grads"], strict=True):
        assert torch.equal(s0, s1)
    assert any(not torch.allclose(s, a, atol=1e-6) for s, a in zip(r0["grads"], g0, strict=True))

    # Each rank took exactly one Adam step with the averaged gradient.
    model = CategoricalPgMlpModel(4, 2, normalize_observation=True)
    model.load_state_dict({k[len("model.") :]: v for k, v in r0["before"].items()})
    for p, g in zip(model.parameters(), r0["grads"], strict=True):
        p.grad = g.clone()
    torch.optim.Adam(model.parameters(), lr=A2C().learning_rate).step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), r0["after"][f"model.{name}"])

    # Observation statistics: equal on both ranks, over both ranks' observations.
    obs = torch.cat([r["samples"]["observation"].reshape(-1, 4) for r in (r0, r1)]).double()
    assert synced_rms["count"].item() == 2 * T * B
    torch.testing.assert_close(synced_rms["mean"], obs.mean(0))
    torch.testing.assert_close(synced_rms["var"], obs.var(0, unbiased=False))

    # Only rank 0 logged; CumSteps counts both ranks; the agent is plain again.
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["run_0"]
    with open(tmp_path / "logs" / "run_0" / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["Diagnostics/CumSteps"]) for r in rows] == [2 * T * B]
    assert row["Diagnostics/CumSteps"] == 2 * T * B
    assert type(agent.model) is CategoricalPgMlpModel
    assert set(agent.state_dict()) == set(r0["after"])
    for key, value in agent.state_dict().items():
        assert torch.equal(value, r0["after"][key]), key


@pytest.mark.parametrize(
    ("fail_rank", "how", "match"),
    [
        (1, "raise", "(?s)rank 1 failed.*planned failure in rank 1"),
        (0, "raise", "planned failure in rank 0"),
        (1, "desync", "parameters of rank 1 differ"),
    ],
)
def test_failing_rank_ends_the_run(fail_rank, how, match, process_marker):
    runner = SyncRl(
        FailingA2C(fail_rank, how),
        _agent(),
        _sampler(),
        n_steps=20 * T * B,
        world_size=2,
        seed=1,
        progress_bar=False,
        timeout_s=30,
    )
    t0 = time.monotonic()
    with pytest.raises((RuntimeError, ValueError), match=match) as info:
        runner.train()
    assert time.monotonic() - t0 < 25
    expected = RuntimeError if how == "desync" or fail_rank else ValueError
    assert type(info.value) is expected
    assert not dist.is_initialized()


TORCHRUN_SCRIPT = """
import contextlib, sys
import torch
from tdrl.agents import DqnAgent
from tdrl.algos import DQN
from tdrl.logging import logger_context
from tdrl.runners import SyncRlEval
from tdrl.samplers import SerialSampler

torch.set_num_threads(1)
sampler = SerialSampler(
    env_kwargs={"id": "CartPole-v1"}, batch_T=8, batch_B=2, eval_n_envs=1, eval_max_steps=100
)
agent = DqnAgent(model_kwargs={"hidden_sizes": (32,)})
algo = DQN(batch_size=32, min_steps_learn=64, replay_size=1000, replay_ratio=2,
           double_dqn=True, target_update_interval=5)
runner = SyncRlEval(algo, agent, sampler, n_steps=256, seed=3, log_interval_steps=128,
                    timeout_s=60)
rank = SyncRlEval.launch_rank()
log = logger_context(sys.argv[1], 0, "dqn", {"seed": 3}, echo=False)
with log if rank == 0 else contextlib.nullcontext():
    row = runner.train()
state = [repr(v.double().sum().item()) for v in agent.state_dict().values()]
print("RESULT", rank, algo.update_counter, row.get("Diagnostics/CumSteps"), *state)
"""


def test_torchrun_style_start_with_dqn_and_eval(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(TORCHRUN_SCRIPT))
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "OMP_NUM_THREADS": "1",
        }
        cmd = [sys.executable, str(script), str(tmp_path / "logs")]
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        outputs.append(next(line.split() for line in out.splitlines() if line.startswith("RESULT")))
    (_, rank0, updates0, steps0, *state0), (_, rank1, updates1, steps1, *state1) = outputs
    assert (rank0, rank1) == ("0", "1")
    assert int(updates0) == int(updates1) > 0
    assert state0 == state1  # online and target networks equal on both ranks
    assert float(steps0) == 256 and steps1 == "None"  # rank 1 returns no row
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["run_0"]
    with open(tmp_path / "logs" / "run_0" / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["Diagnostics/CumSteps"]) for r in rows] == [0, 128, 256]
    assert all(float(r["Diagnostics/TrajsInEval"]) > 0 for r in rows)


def test_agent_without_trainable_parameters_is_refused():
    model = CategoricalPgMlpModel(4, 2).requires_grad_(False)
    runner = SyncRl(
        A2C(),
        CategoricalPgAgent(model=model),
        _sampler(),
        n_steps=T * B,
        world_size=1,
        progress_bar=False,
        timeout_s=30,
    )
    with pytest.raises(ValueError, match=r"no trainable parameter.*A2C"):
        runner.train()
    assert not dist.is_initialized()


def test_arguments_are_checked(monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="world_size is needed"):
        SyncRl(A2C(), _agent(), _sampler(), n_steps=100)
    with pytest.raises(ValueError, match="world_size must be"):
        SyncRl(A2C(), _agent(), _sampler(), n_steps=100, world_size=0)
    with pytest.raises(ValueError, match="timeout_s"):
        SyncRl(A2C(), _agent(), _sampler(), n_steps=100, world_size=2, timeout_s=0)
    with pytest.raises(ValueError, match="eval_n_envs"):
        SyncRlEval(A2C(), _agent(), _sampler(), n_steps=100, world_size=2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert SyncRl.launch_rank() == 1
    assert SyncRl(A2C(), _agent(), _sampler(), n_steps=100).world_size == 4
    with pytest.raises(ValueError, match="group of 4 ranks"):
        SyncRl(A2C(), _agent(), _sampler(), n_steps=100, world_size=2)


class CopyingA2C(A2C):
    """A2C that copies and pickles its agent mid-training (as parallel samplers do)."""

    copies_checked = 0

    def optimize_agent(self, itr, samples):
        for copied in (copy.deepcopy(self.agent), pickle.loads(pickle.dumps(self.agent))):
            assert type(copied.model) is CategoricalPgMlpModel
            assert copied.model is copied._modules["model"]
        self.copies_checked += 1
        return super().optimize_agent(itr, samples)


def test_one_rank_matches_minibatch_rl_and_agent_copies_are_plain():
    rows, states = [], []
    for runner_cls in (MinibatchRl, SyncRl):
        algo = CopyingA2C(**A2C_KWARGS)
        agent = _agent()
        kwargs = {"world_size": 1, "timeout_s": 30} if runner_cls is SyncRl else {}
        runner = runner_cls(algo, agent, _sampler(), n_steps=4 * T * B, seed=2, **kwargs)
        rows.append(runner.train())
        states.append(agent.state_dict())
        assert algo.copies_checked == 4
    assert not dist.is_initialized()
    assert rows[0]["Diagnostics/CumSteps"] == rows[1]["Diagnostics/CumSteps"] == 4 * T * B
    assert rows[0]["ReturnAverage"] == rows[1]["ReturnAverage"]
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, rtol=1e-6, atol=1e-7)


def test_rms_update_across_ranks_without_a_group_is_update():
    x = torch.randn(5, 3, 3)
    a, b = RunningMeanStd((3,)), RunningMeanStd((3,))
    for _ in range(2):
        a.update(x)
        b.update_across_ranks(x)
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value)


# ------------------------------------------- algorithms training more than agent.model
QT = 8  # Pendulum steps per rank and iteration (batch_B=1); also the replay batch size
QPG_KWARGS = {"min_steps_learn": 0, "replay_size": 100, "batch_size": QT}
SMALL = {"model_kwargs": {"hidden_sizes": (16,)}, "q_model_kwargs": {"hidden_sizes": (16,)}}


def _trained(algo):
    """(name, tensor) of the parameters the algorithm trains, SAC's log_alpha included."""
    named = [(n, p) for n, p in algo.agent.named_parameters() if p.requires_grad]
    return named + ([("log_alpha", algo.log_alpha)] if hasattr(algo, "log_alpha") else [])


def _values(algo):
    """The agent's state (targets included) and SAC's log_alpha, cloned."""
    state = {k: v.clone() for k, v in algo.agent.state_dict().items()}
    if hasattr(algo, "log_alpha"):
        state["log_alpha"] = algo.log_alpha.detach().clone()
    return state


def _recorded_update(algo, update, batch):
    """Run ``update(batch)``, saving its inputs, (averaged, clipped) gradients and results."""
    record = {
        "counter": algo.update_counter,
        "rng": torch.get_rng_state(),
        "batch": batch.clone(),
        "before": _values(algo),
    }
    info = update(batch)
    record["grads"] = {n: p.grad.clone() for n, p in _trained(algo) if p.grad is not None}
    record["after"] = _values(algo)
    name = f"rank{dist.get_rank()}_update{algo.update_counter}.pt"
    torch.save(record, Path(algo.record_dir) / name)
    return info


class RecordingSAC(SAC):
    def __init__(self, record_dir, **kwargs):
        super().__init__(**kwargs)
        self.record_dir = str(record_dir)

    def update(self, batch):
        return _recorded_update(self, super().update, batch)


class RecordingTD3(TD3):
    def __init__(self, record_dir, **kwargs):
        super().__init__(**kwargs)
        self.record_dir = str(record_dir)

    def update(self, batch):
        return _recorded_update(self, super().update, batch)


def _run_qpg(tmp_path, algo_cls, agent_cls, algo_kwargs):
    """One iteration of 2 ranks; returns {(rank, update): record}."""
    record_dir = tmp_path / "records"
    record_dir.mkdir()
    sampler = SerialSampler(env_kwargs={"id": "Pendulum-v1"}, batch_T=QT, batch_B=1)
    runner = SyncRl(
        algo_cls(record_dir, **algo_kwargs),
        agent_cls(**SMALL),
        sampler,
        n_steps=2 * QT,
        world_size=2,
        seed=7,
        progress_bar=False,
        timeout_s=60,
    )
    runner.train()
    return {
        (int(f.stem[4]), int(f.stem.split("update")[1])): torch.load(f, weights_only=False)
        for f in record_dir.iterdir()
    }


def _set_values(params, values):
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            p.copy_(v)


def _local_grads(algo_cls, agent_cls, algo_kwargs, record):
    """One rank's update recomputed alone in this process (no all-reduce, no clipping):
    the rank's parameters, batch and RNG state; each optimizer step sets the rank's values
    after that step (so TD3's actor loss sees the stepped critic) instead of stepping."""
    env = gym.make("Pendulum-v1")
    agent = agent_cls(**SMALL)
    agent.initialize(space_to_spec(env.observation_space), space_to_spec(env.action_space))
    algo = algo_cls(**{**algo_kwargs, "clip_grad_norm": 1e9})
    algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(QT, 1))
    named = dict(_trained(algo))
    _set_values(list(named.values()), [record["before"][n] for n in named])
    agent.load_state_dict({k: v for k, v in record["before"].items() if k != "log_alpha"})
    for optimizer in (v for v in vars(algo).values() if isinstance(v, torch.optim.Optimizer)):
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        names = [n for n, p in named.items() if id(p) in held]
        after = [record["after"][n] for n in names]
        optimizer.step = functools.partial(_set_values, [named[n] for n in names], after)
    algo.update_counter = record["counter"]
    with torch.random.fork_rng():
        torch.set_rng_state(record["rng"])
        algo.update(record["batch"])
    return {n: p.grad for n, p in named.items() if p.grad is not None}


def _assert_replicas_equal_and_moved(records, last_update):
    first, last = records[0, 1]["before"], records[0, last_update]["after"]
    for key in first:
        for update in range(1, last_update + 1):
            for when in ("before", "after"):
                a, b = records[0, update][when][key], records[1, update][when][key]
                assert torch.equal(a, b), (key, update, when)
        if key not in ("action_scale", "action_bias"):
            assert not torch.equal(first[key], last[key]), key  # pi, q, alpha and targets
    assert not torch.equal(
        records[0, 1]["batch"]["observation"], records[1, 1]["batch"]["observation"]
    )


def _clipped(grads, max_norm):
    clipped = [g.clone().requires_grad_() for g in grads]
    for c, g in zip(clipped, grads, strict=True):
        c.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(clipped, max_norm)
    return [c.grad for c in clipped]


@pytest.mark.parametrize("clip_grad_norm", [1e9, 1e-2])
def test_sac_on_two_ranks_averages_gradients_before_clipping(
    tmp_path, process_marker, clip_grad_norm
):
    kwargs = {**QPG_KWARGS, "replay_ratio": 1.0, "clip_grad_norm": clip_grad_norm}
    records = _run_qpg(tmp_path, RecordingSAC, SacAgent, kwargs)
    assert sorted(records) == [(0, 1), (1, 1)]  # one update per rank
    _assert_replicas_equal_and_moved(records, 1)
    synced = records[0, 1]["grads"]
    assert (
        synced.keys()
        == records[1, 1]["grads"].keys()
        == records[0, 1]["before"].keys()
        - {
            "action_scale",
            "action_bias",
            *(k for k in records[0, 1]["before"] if k.startswith("target_")),
        }
    )
    for name, grad in records[1, 1]["grads"].items():
        assert torch.equal(grad, synced[name]), name
    g0, g1 = (_local_grads(SAC, SacAgent, kwargs, records[r, 1]) for r in (0, 1))
    mean = {n: (g0[n] + g1[n]) / 2 for n in synced}
    assert any(not torch.allclose(mean[n], g0[n], atol=1e-6) for n in synced)
    expected = dict(mean)  # log_alpha is not clipped; each network is clipped on its own
    for prefix in ("model.", "q_model."):
        names = [n for n in mean if n.startswith(prefix)]
        expected.update(zip(names, _clipped([mean[n] for n in names], clip_grad_norm), strict=True))
        if clip_grad_norm < 1:  # the clip acted on the average, not on each rank's gradient
            norm = torch.linalg.vector_norm(torch.cat([synced[n].flatten() for n in names]))
            torch.testing.assert_close(norm, torch.tensor(clip_grad_norm), rtol=1e-4, atol=0)
            per_rank = [_clipped([g[n] for n in names], clip_grad_norm) for g in (g0, g1)]
            assert not all(
                torch.allclose((a + b) / 2, synced[n], atol=1e-6)
                for n, a, b in zip(names, *per_rank, strict=True)
            )
    for name in synced:
        torch.testing.assert_close(synced[name], expected[name], rtol=1e-4, atol=1e-6)


def test_td3_on_two_ranks_averages_critic_and_delayed_actor_gradients(tmp_path, process_marker):
    kwargs = {**QPG_KWARGS, "replay_ratio": 2.0}
    records = _run_qpg(tmp_path, RecordingTD3, Td3Agent, kwargs)
    assert sorted(records) == [(0, 1), (0, 2), (1, 1), (1, 2)]  # two updates per rank
    _assert_replicas_equal_and_moved(records, 2)
    for key in records[0, 1]["before"]:  # the actor and the targets wait for update 2
        if key.startswith(("model.", "target_")):
            assert torch.equal(records[0, 1]["after"][key], records[0, 1]["before"][key])
    for update in (1, 2):
        synced = records[0, update]["grads"]
        actor = [n for n in synced if n.startswith("model.")]
        assert (actor != []) == (update == 2)
        g0, g1 = (_local_grads(TD3, Td3Agent, kwargs, records[r, update]) for r in (0, 1))
        assert synced.keys() == g0.keys() == g1.keys()
        for name, grad in synced.items():
            assert torch.equal(grad, records[1, update]["grads"][name]), name
            mean = (g0[name] + g1[name]) / 2
            torch.testing.assert_close(grad, mean, rtol=1e-4, atol=1e-6)
        assert any(not torch.allclose(synced[n], g0[n], atol=1e-6) for n in actor or synced)
