"""The device contract as far as a CPU can prove it (issue 11): ``device`` is checked, the
runner places the agent before the algorithm builds its optimizers, a resumed optimizer state
follows its parameters, snapshots hold CPU tensors, samplers copy each step's agent inputs
to the agent's device (and nothing else), look the device up once per batch, pin their
buffer once, and ``tdrl train --device`` refuses what this machine cannot run.

torch's "meta" device stands in for a GPU: a meta tensor has no data, and mixing it with a
non-scalar CPU tensor raises, so an agent moved to "meta" that acts without error proves
its inputs were moved. What only a GPU can show is in ``tests/test_cuda.py``.
"""

from __future__ import annotations

import collections

import pytest
import torch
import torch.distributed as dist
from tensordict import TensorDict

from tdrl.agents import CategoricalPgAgent
from tdrl.agents.base import Agent
from tdrl.agents.dqn import DqnAgent
from tdrl.algos import PPO
from tdrl.algos.dqn import DQN
from tdrl.logging import files, load_snapshot, logger_context
from tdrl.runners import AsyncRl, MinibatchRl, MinibatchRlEval, SyncRl
from tdrl.runners.base import cpu_state
from tdrl.runners.grad_sync import Replicas, collective_device
from tdrl.samplers import CpuSampler, GpuSampler, SerialSampler
from tdrl.testing import CountingEnv, IdentityEnv
from tdrl.utils.checks import ArgumentError
from tdrl.utils.device import check_device

META = torch.device("meta")
T, B = 8, 4
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class PlacementSpy(PPO):
    """PPO that records where the agent is when ``initialize`` builds the optimizer."""

    def initialize(self, agent, *, n_itr, batch_spec):
        self.seen_device = agent.device
        self.seen_param_devices = {p.device for p in agent.parameters()}
        super().initialize(agent, n_itr=n_itr, batch_spec=batch_spec)


class MetaActor(CategoricalPgAgent):
    """Acts with its real model wherever it is (on "meta" it would raise on a CPU input),
    records where its inputs were, and hands the sampler CPU zeros of the output's shape
    (a meta tensor has no data to copy into the buffer)."""

    def __init__(self):
        super().__init__(model_kwargs={"hidden_sizes": (8,)})
        self.input_devices: list[tuple[str, str, str]] = []

    def step(self, observation, prev_action, prev_reward):
        self.input_devices.append(
            (observation.device.type, prev_action.device.type, prev_reward.device.type)
        )
        action, info = super().step(observation, prev_action, prev_reward)
        assert action.device == self.device  # the real forward ran on the agent's device
        return torch.zeros(action.shape, dtype=action.dtype), {
            k: torch.zeros(v.shape, dtype=v.dtype) for k, v in info.items()
        }


def _ppo_runner(cls=MinibatchRl, algo=None, agent=None, *, n_batches=2, eval_envs=0, **kwargs):
    sampler = SerialSampler(
        IdentityEnv,
        batch_T=16,
        batch_B=4,
        eval_n_envs=eval_envs,
        eval_max_trajectories=4 if eval_envs else None,
    )
    return cls(
        algo or PPO(minibatches=2, epochs=2),
        agent or CategoricalPgAgent(),
        sampler,
        n_steps=n_batches * 64,
        seed=0,
        log_interval_steps=64,
        progress_bar=False,
        **kwargs,
    )


# ------------------------------------------------------------------------ the argument
@pytest.mark.parametrize(
    ("value", "want"),
    [(None, None), ("cpu", "cpu"), (torch.device("cpu"), "cpu"), ("meta", "meta")],
)
def test_check_device_accepts_what_torch_accepts(value, want):
    got = check_device("device", value)
    assert (got is None) if want is None else (got == torch.device(want))


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("gpu", "device must be a device string torch accepts, such as 'cpu', 'cuda' or"),
        ("", "device must be a device string torch accepts"),
        (0, "device must be a torch.device or a device string"),
        (True, "device must be a torch.device or a device string"),
    ],
)
def test_check_device_refuses_non_devices_in_one_line(value, match):
    with pytest.raises(ArgumentError, match=match) as info:
        check_device("device", value)
    assert "\n" not in str(info.value)


@NO_CUDA
@pytest.mark.parametrize("value", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_cuda_without_cuda_is_refused_naming_the_argument(value):
    with pytest.raises(ArgumentError, match=r"^device 'cuda(:\d)?' needs a CUDA device, but"):
        check_device("device", value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_beyond_the_devices_is_refused():
    n = torch.cuda.device_count()
    with pytest.raises(ArgumentError, match=f"torch sees {n}"):
        check_device("device", f"cuda:{n}")


@pytest.mark.parametrize("cls", [MinibatchRl, MinibatchRlEval, AsyncRl])
def test_runners_check_device_at_construction(cls):
    sampler = SerialSampler(IdentityEnv, batch_T=4, batch_B=2, eval_n_envs=1, eval_max_steps=8)
    algo = DQN() if cls is AsyncRl else PPO()
    agent = DqnAgent() if cls is AsyncRl else CategoricalPgAgent()
    with pytest.raises(ArgumentError, match=r"^device must be"):
        cls(algo, agent, sampler, n_steps=100, device="gpu")
    assert cls(algo, agent, sampler, n_steps=100, device="meta").device == META
    assert cls(algo, agent, sampler, n_steps=100).device is None


# --------------------------------------------------------------------- placement, resume
def test_runner_places_the_agent_before_the_algorithm_builds_its_optimizer():
    algo = PlacementSpy(minibatches=2, epochs=2)
    runner = _ppo_runner(algo=algo, device="meta")
    try:
        runner.startup()
        # The default model was built by the sampler (on the CPU), then moved, then the
        # optimizer was built over the moved parameters.
        assert algo.seen_device == META and algo.seen_param_devices == {META}
        assert runner.agent.device == META
        params = [p for g in algo.optimizer.param_groups for p in g["params"]]
        assert {id(p) for p in params} == {id(p) for p in runner.agent.parameters()}
        assert all(p.device == META for p in params)
    finally:
        runner.sampler.shutdown()


def test_async_runner_places_the_learner_before_algo_initialize():
    seen = []

    class Spy(DQN):
        def initialize(self, agent, **kwargs):
            seen.append(agent.device)
            raise KeyboardInterrupt  # stop here: the run itself cannot go on with no data

    sampler = SerialSampler(CountingEnv, {"episode_length": 6}, batch_T=4, batch_B=2)
    runner = AsyncRl(Spy(), DqnAgent(), sampler, n_steps=64, seed=0, device="meta")
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    assert seen == [META]
    assert sampler.envs == []  # the failed start-up closed the envs


def test_no_device_leaves_the_agent_where_it_is():
    algo = PlacementSpy(minibatches=2, epochs=2)
    runner = _ppo_runner(algo=algo)
    try:
        runner.startup()
        assert algo.seen_device == torch.device("cpu") == runner.agent.device
    finally:
        runner.sampler.shutdown()


def test_explicit_cpu_trains_exactly_as_the_default(tmp_path):
    def last(**kwargs):
        row = _ppo_runner(n_batches=3, **kwargs).train()
        return {k: v for k, v in row.items() if "Time" not in k and "PerSecond" not in k}

    assert last(device="cpu") == last() == last(device=torch.device("cpu"))


@pytest.mark.filterwarnings("ignore:for .* copying from a non-meta parameter")
def test_resumed_state_is_restored_onto_the_device_and_optimizer_state_follows(tmp_path):
    """A snapshot taken on one device (here the CPU) restores onto another ("meta")."""
    with logger_context(tmp_path, 0, "t", echo=False):
        first = _ppo_runner()
        first.train()
    snap = load_snapshot(tmp_path / "run_0")
    saved = snap["algo_state_dict"]["optimizer"]["state"]
    assert saved and all(
        v.device.type == "cpu" for s in saved.values() for v in s.values() if torch.is_tensor(v)
    )
    resumed = _ppo_runner(n_batches=4, resume_from=tmp_path / "run_0", device="meta")
    with logger_context(tmp_path, 0, "t", echo=False, resume=True):
        try:
            resumed.startup()
            assert resumed.plan.start_itr == 2
            optimizer = resumed.algo.optimizer
            assert optimizer.state, "no optimizer state was restored"
            for param, state in optimizer.state.items():
                assert param.device == META
                for key, value in state.items():
                    if key != "step":  # torch keeps Adam's step count on the CPU
                        assert value.device == param.device, key
            assert resumed.algo.update_counter == first.algo.update_counter
        finally:
            resumed.sampler.shutdown()


def test_snapshots_are_loaded_onto_the_cpu(tmp_path, monkeypatch):
    with logger_context(tmp_path, 0, "t", echo=False):
        _ppo_runner(n_batches=1).train()
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("map_location"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(files.torch, "load", spy)
    load_snapshot(tmp_path / "run_0")
    assert calls == ["cpu"]


class _OnDevice(torch.Tensor):
    """A tensor "on a GPU" for ``cpu_state``: its ``cpu()`` is a copy, as a GPU tensor's."""

    def cpu(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor).clone()


def test_cpu_state_copies_only_what_is_not_on_the_cpu():
    model = torch.nn.BatchNorm1d(3)
    state = model.state_dict()
    assert cpu_state(state) is state  # a CPU run's snapshot: nothing copied
    nested = {"a": [state, (torch.zeros(2), 3)], "b": "x"}
    assert cpu_state(nested) is nested
    on_device = torch.ones(3).as_subclass(_OnDevice)
    state["weight"] = on_device
    moved = cpu_state(state)
    assert moved is not state and type(moved) is collections.OrderedDict
    assert moved._metadata == state._metadata  # module versions survive the copy
    assert type(moved["weight"]) is torch.Tensor and torch.equal(moved["weight"], torch.ones(3))
    assert all(moved[k] is v for k, v in state.items() if k != "weight")
    out = cpu_state({"opt": {"state": {0: {"exp_avg": on_device}}, "groups": [1, 2]}})
    assert type(out["opt"]["state"][0]["exp_avg"]) is torch.Tensor


def test_async_rl_with_an_explicit_cpu_device_trains(tmp_path):
    sampler = SerialSampler(CountingEnv, {"episode_length": 6}, batch_T=8, batch_B=2)
    algo = DQN(batch_size=16, replay_ratio=4, min_steps_learn=64, replay_size=500, eps_steps=100)
    runner = AsyncRl(
        algo,
        DqnAgent(model_kwargs={"hidden_sizes": (16,)}),
        sampler,
        n_steps=320,
        seed=0,
        log_interval_steps=160,
        max_sampler_lead_itrs=1,
        device="cpu",
    )
    with logger_context(tmp_path, 0, "t", echo=False):
        row = runner.train()
    assert row["Diagnostics/CumSteps"] == 320 and algo.update_counter > 0
    assert runner.sampler_agent.device == runner.agent.device == torch.device("cpu")


# ------------------------------------------------------------------------------ SyncRl
@NO_CUDA
def test_sync_rl_cuda_needs_cuda():
    sampler = SerialSampler(IdentityEnv, batch_T=4, batch_B=2)
    with pytest.raises(ValueError, match="cuda=True but torch sees no CUDA device"):
        SyncRl(PPO(), CategoricalPgAgent(), sampler, n_steps=64, world_size=1, cuda=True)


def test_collectives_run_on_the_backends_device(tmp_path):
    """gloo: the CPU (NCCL's case, the rank's GPU, is in tests/test_cuda.py)."""
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        assert collective_device() == torch.device("cpu")
        agent = CategoricalPgAgent(model_kwargs={"hidden_sizes": (4,)})
        runner = _ppo_runner(agent=agent)
        runner.startup()
        runner.sampler.shutdown()
        replicas = Replicas(agent, runner.algo, 1)
        assert replicas.device == replicas.averager.device == torch.device("cpu")
        replicas.check_equal(0)
        replicas.close()
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------- sampling
def _meta_sampler(cls=SerialSampler, **kwargs):
    agent = MetaActor()
    sampler = cls(
        CountingEnv,
        {"episode_length": 5},
        batch_T=T,
        batch_B=B,
        max_decorrelation_steps=3,
        **kwargs,
    )
    sampler.initialize(agent, seed=1)  # builds the model on the CPU, as in a run
    agent.to("meta")  # then the runner's placement
    agent.input_devices.clear()
    return sampler, agent


def test_serial_sampler_moves_each_steps_inputs_to_the_agent_and_only_those(monkeypatch):
    sampler, agent = _meta_sampler(eval_n_envs=2, eval_max_steps=6)
    moves = []
    real_to = torch.Tensor.to

    def counting_to(self, *args, **kwargs):
        out = real_to(self, *args, **kwargs)
        if out.device != self.device:
            moves.append((self.device.type, out.device.type, tuple(self.shape)))
        return out

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    try:
        agent.sample_mode(0)
        samples, _ = sampler.obtain_samples(0)
        # Every step's observation, previous action and previous reward went to the agent's
        # device (its real forward would have raised on a CPU input); one agent call per step.
        assert agent.input_devices == [("meta", "meta", "meta")] * T
        # Per step exactly those three rows moved, and the batch stayed on the CPU.
        assert len(moves) == 3 * T
        assert {(a, b) for a, b, _ in moves} == {("cpu", "meta")}
        assert {s for *_, s in moves} == {(B, *CountingEnv().observation_space.shape), (B,), (B, 1)}
        assert samples.device is None or samples.device.type == "cpu"
        assert samples.get("observation").device.type == "cpu"
        agent.input_devices.clear()
        sampler.evaluate_agent(0)  # the evaluation envs act through the same path
        assert agent.input_devices and set(agent.input_devices) == {("meta", "meta", "meta")}
    finally:
        sampler.shutdown()


def test_gpu_sampler_action_server_moves_inputs_to_the_agent():
    sampler, agent = _meta_sampler(GpuSampler, n_workers=2)
    try:
        agent.sample_mode(0)
        sampler.obtain_samples(0)
        assert agent.input_devices == [("meta", "meta", "meta")] * T  # one forward for all B
    finally:
        sampler.shutdown()


def test_cpu_agent_costs_no_copy_and_one_device_lookup_per_batch(monkeypatch):
    agent = CategoricalPgAgent(model_kwargs={"hidden_sizes": (8,)})
    sampler = SerialSampler(CountingEnv, {"episode_length": 5}, batch_T=T, batch_B=B)
    sampler.initialize(agent, seed=1)
    lookups, moves = [], []
    real_device = Agent.device
    real_to = torch.Tensor.to

    def counting_device(self):
        lookups.append(1)
        return real_device.fget(self)

    def counting_to(self, *args, **kwargs):
        out = real_to(self, *args, **kwargs)
        if out.device != self.device:
            moves.append(1)
        return out

    monkeypatch.setattr(Agent, "device", property(counting_device))
    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    try:
        agent.sample_mode(0)
        for itr in range(3):
            sampler.obtain_samples(itr)
        assert len(lookups) == 3  # once per batch, not per step
        assert moves == []
    finally:
        sampler.shutdown()


def test_cpu_sampler_refreshes_its_workers_copy_once_per_batch(monkeypatch):
    """The learner's state reaches the workers' shared CPU copy once per batch: one copy per
    state tensor (from any device), none per step."""
    agent = CategoricalPgAgent(model_kwargs={"hidden_sizes": (8,)})
    sampler = CpuSampler(CountingEnv, {"episode_length": 5}, batch_T=T, batch_B=2, n_workers=1)
    sampler.initialize(agent, seed=1)
    copies = []
    real_copy = torch.Tensor.copy_

    def counting_copy(self, src, *args, **kwargs):
        if self.is_shared():
            copies.append(self.shape)
        return real_copy(self, src, *args, **kwargs)

    try:
        agent.sample_mode(0)
        sampler.obtain_samples(0)  # starts the worker
        monkeypatch.setattr(torch.Tensor, "copy_", counting_copy)
        for itr in range(1, 4):
            sampler.obtain_samples(itr)
        assert len(copies) == 3 * len(agent.state_dict())
    finally:
        sampler.shutdown()


def test_serial_sampler_pins_its_buffer_once_for_a_cuda_agent(monkeypatch):
    """The decision, faked: the agent claims CUDA and pinning is a copy (no CUDA here)."""
    agent = CategoricalPgAgent(model_kwargs={"hidden_sizes": (8,)})
    sampler = SerialSampler(CountingEnv, {"episode_length": 5}, batch_T=T, batch_B=B)
    sampler.initialize(agent, seed=1)
    pinned = []

    def fake_pin(self):
        pinned.append(self)
        return self.clone()

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(TensorDict, "pin_memory", fake_pin)
    monkeypatch.setattr(Agent, "device", property(lambda self: torch.device("cuda")))
    collected = []
    monkeypatch.setattr(sampler._runner, "collect", lambda a, d: collected.append(d) or [])
    try:
        before = sampler.samples
        for itr in range(3):
            samples, _ = sampler.obtain_samples(itr)
            assert samples is sampler.samples is not before
        assert pinned == [before]  # once, not per batch
        assert collected == [torch.device("cuda")] * 3  # the one look-up, handed down
        assert samples.names == before.names
    finally:
        sampler.shutdown()


def test_envs_write_into_the_pinned_buffer(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.Tensor, "pin_memory", torch.Tensor.clone)  # pinning copies
    agent = CategoricalPgAgent(model_kwargs={"hidden_sizes": (8,)})
    sampler = SerialSampler(CountingEnv, {"episode_length": 5}, batch_T=T, batch_B=B)
    sampler.initialize(agent, seed=1)
    try:
        agent.sample_mode(0)
        old, _ = sampler.obtain_samples(0)
        old = old.clone()
        kept = sampler.samples
        sampler.pin_buffer()  # a new buffer: the envs must write into it from now on
        new, _ = sampler.obtain_samples(1)
        assert new is sampler.samples is not kept
        assert new.names == kept.names and new.batch_size == kept.batch_size
        assert (kept == old).all()  # the old buffer is no longer written
        # CountingEnv's observation [k, episode, env] moves on: the new batch was written.
        assert not torch.equal(new.get("observation"), old.get("observation"))
        k, action = new.get("observation")[..., 0], new.get("action").float()
        torch.testing.assert_close(new.get(("next", "reward"))[..., 0], k + 1 + action / 10)
    finally:
        sampler.shutdown()


# ---------------------------------------------------------------------- the command line
@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cli_refuses_cuda_without_cuda(device, capsys, tmp_path):
    from tdrl.cli import main

    argv = ["train", "--algo", "ppo", "--env", "CartPole-v1", "--log-dir", str(tmp_path)]
    assert main([*argv, "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tdrl train: error: --device '{device}' needs a CUDA device, but")
    assert err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("device", ["gpu", "meta", "cuda:x"])
def test_cli_refuses_unknown_devices(device, capsys, tmp_path):
    from tdrl.cli import main

    argv = ["train", "--algo", "ppo", "--env", "CartPole-v1", "--log-dir", str(tmp_path)]
    assert main([*argv, "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tdrl train: error: --device must be") and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())


def test_cli_passes_the_device_to_the_runner(monkeypatch, tmp_path):
    from tdrl import cli, runners

    seen = []

    class Spy(runners.MinibatchRl):
        def train(self):
            seen.append(self.device)
            return {}

    monkeypatch.setattr(runners, "MinibatchRl", Spy)
    argv = ["train", "--algo", "ppo", "--env", "CartPole-v1", "--log-dir", str(tmp_path)]
    assert cli.main([*argv, "--device", "cpu", "--no-progress"]) == 0
    assert seen == [torch.device("cpu")]
