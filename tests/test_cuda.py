"""GPU checks of the device contract (issue 11): every test is marked ``cuda`` and skipped
without a CUDA device, never faked.

What a CPU-only suite cannot prove: every algorithm trains on CUDA through ``MinibatchRl``;
``GpuSampler`` (the action server) and ``CpuSampler`` (workers with a CPU copy refreshed from
the GPU learner) act with a CUDA agent; ``AsyncRl`` (sampler thread and process) with a CUDA
learner; ``SyncRl`` with NCCL at world size 1; a GPU snapshot resumed on the CPU and back;
``replay_device="cuda"`` (storage, n-step arrays and index sampling on the device, frame
replay included); bf16 autocast of the Atari model; ``tdrl train --device``; compiled
updates (CUDA graphs) equal to eager ones on the same inputs. Tiny networks and budgets:
meant to take well under 3 minutes on one H200, most of it compiling (the compiled-vs-eager
tests come last, so the plumbing reports first).

Run on a CUDA machine: ``python -m pytest -m cuda tests/test_cuda.py -v`` (or, as
``benchmarks/gpu_check.sh`` does, ``-x -k "not compiled"`` and then ``-k compiled``).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from tdrl import keys
from tdrl.agents import (
    CategoricalPgAgent,
    DdpgAgent,
    DqnAgent,
    SacAgent,
    SacVAgent,
    Td3Agent,
)
from tdrl.algos import (
    A2C,
    DDPG,
    DQN,
    PPO,
    SAC,
    SAC_V,
    TD3,
    CategoricalDQN,
    rainbow_minus_noisy,
)
from tdrl.envs import space_to_spec
from tdrl.keys import BatchSpec
from tdrl.logging import load_snapshot, logger_context
from tdrl.runners import AsyncRl, MinibatchRl, SyncRl
from tdrl.samplers import CpuSampler, GpuSampler, SerialSampler
from tdrl.testing import ContinuousIdentityEnv, CountingEnv, IdentityEnv

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SMALL = {"hidden_sizes": (16,)}
T, B = 8, 4  # 32 env steps per iteration
#: Replay settings of every replay algorithm here: learning from iteration 1, 16 updates
#: of 16 transitions per iteration.
REPLAY = {"batch_size": 16, "min_steps_learn": 32, "replay_size": 512, "replay_ratio": 8}
ALGOS = ("a2c", "ppo", "dqn", "catdqn", "rainbow", "ddpg", "td3", "sac", "sac_v")
#: Every algorithm with a compiled update (``compile=True``); Rainbow is CategoricalDQN.
COMPILED = ("a2c", "ppo", "dqn", "catdqn", "ddpg", "td3", "sac", "sac_v")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------ helpers
def make(name: str, **algo_kwargs: Any) -> tuple[Any, Any, type[gym.Env]]:
    """``(algo, agent, env class)`` for ``name`` with tiny networks; ``algo_kwargs`` added."""
    dqn = {**REPLAY, "eps_steps": 64, "target_update_interval": 2}
    if name == "a2c":
        return A2C(**algo_kwargs), CategoricalPgAgent(model_kwargs=SMALL), IdentityEnv
    if name == "ppo":
        algo = PPO(minibatches=2, epochs=2, **algo_kwargs)
        return algo, CategoricalPgAgent(model_kwargs=SMALL), IdentityEnv
    if name == "dqn":
        algo = DQN(**dqn, double_dqn=True, **algo_kwargs)
        return algo, DqnAgent(model_kwargs=SMALL), IdentityEnv
    if name == "catdqn":
        algo = CategoricalDQN(**dqn, prioritized_replay=True, **algo_kwargs)
        return algo, DqnAgent(n_atoms=11, model_kwargs=SMALL), IdentityEnv
    if name == "rainbow":
        algo, agent = rainbow_minus_noisy(
            algo_kwargs={**dqn, **algo_kwargs}, agent_kwargs={"model_kwargs": SMALL}, n_atoms=11
        )
        return algo, agent, IdentityEnv
    nets = {"model_kwargs": SMALL, "q_model_kwargs": SMALL}
    if name == "ddpg":
        return DDPG(**REPLAY, **algo_kwargs), DdpgAgent(**nets), ContinuousIdentityEnv
    if name == "td3":
        return TD3(**REPLAY, **algo_kwargs), Td3Agent(**nets), ContinuousIdentityEnv
    if name == "sac":
        return SAC(**REPLAY, **algo_kwargs), SacAgent(**nets), ContinuousIdentityEnv
    if name == "sac_v":
        agent = SacVAgent(**nets, v_model_kwargs=SMALL)
        return SAC_V(**REPLAY, **algo_kwargs), agent, ContinuousIdentityEnv
    raise KeyError(name)


def tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor in nested dicts, lists and tuples (optimizer and snapshot states)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from tensors(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from tensors(value)


def assert_on(device_type: str, agent: Any, algo: Any) -> None:
    """The agent's parameters and buffers, and everything each optimizer holds and steps
    (SAC's temperature included), are on ``device_type``."""
    where = {t.device.type for t in (*agent.parameters(), *agent.buffers())}
    assert where == {device_type}, f"agent tensors on {where}"
    for opt in algo.optimizers():
        params = {p.device.type for group in opt.param_groups for p in group["params"]}
        assert params == {device_type}, f"{type(opt).__name__} steps tensors on {params}"
        # Adam's scalar "step" may stay on the CPU (non-fused, non-capturable): the moments
        # are what must follow the parameters.
        state = {t.device.type for t in tensors(list(opt.state.values())) if t.dim() > 0}
        assert state <= {device_type}, f"{type(opt).__name__} state on {state}"


def assert_finite_losses(row: dict[str, float]) -> None:
    """The logged row has loss averages (``loss``, ``loss_q``, ...), all finite."""
    losses = {k: v for k, v in row.items() if k.startswith("loss") and k.endswith("Average")}
    assert losses and all(math.isfinite(v) for v in losses.values()), row


def record_batches(monkeypatch: pytest.MonkeyPatch, algo: Any) -> list[dict[str, Any]]:
    """Record, per ``optimize_agent`` call, where the sampler's batch is (CPU by contract)."""
    seen: list[dict[str, Any]] = []
    original = algo.optimize_agent

    def optimize_agent(itr, samples):
        if samples is not None:
            obs = samples.get(keys.OBSERVATION)
            seen.append({"itr": itr, "device": obs.device.type, "pinned": obs.is_pinned()})
        return original(itr, samples)

    monkeypatch.setattr(algo, "optimize_agent", optimize_agent)
    return seen


def train(runner: Any, tmp_path: Any, *, resume: bool = False) -> dict[str, float]:
    with logger_context(str(tmp_path), 0, "cuda", {}, echo=False, resume=resume):
        return runner.train()


def serial(env_cls: type[gym.Env], **kwargs: Any) -> SerialSampler:
    return SerialSampler(env_cls, {}, batch_T=T, batch_B=B, **kwargs)


# --------------------------------------------------------------- every algorithm, serial
@pytest.mark.parametrize("name", ALGOS)
def test_every_algorithm_trains_on_cuda_through_minibatch_rl(name, tmp_path, monkeypatch):
    algo, agent, env_cls = make(name)
    seen = record_batches(monkeypatch, algo)
    runner = MinibatchRl(
        algo,
        agent,
        serial(env_cls),
        n_steps=8 * T * B,
        seed=0,
        log_interval_steps=4 * T * B,
        progress_bar=False,
        device="cuda",
    )
    row = train(runner, tmp_path)
    assert algo.update_counter > 0
    assert_on("cuda", agent, algo)
    assert_finite_losses(row)
    assert seen and all(s["device"] == "cpu" for s in seen), seen  # samplers return CPU batches


def test_serial_sampler_batches_are_pinned_for_a_cuda_agent(tmp_path, monkeypatch):
    algo, agent, env_cls = make("ppo")
    seen = record_batches(monkeypatch, algo)
    runner = MinibatchRl(
        algo, agent, serial(env_cls), n_steps=2 * T * B, seed=0, progress_bar=False, device="cuda"
    )
    train(runner, tmp_path)
    assert [s["pinned"] for s in seen] == [True, True], seen


def test_to_device_moves_once_and_is_a_no_op_on_the_same_device():
    from tdrl.utils.device import to_device

    td = TensorDict({"a": torch.arange(6.0).reshape(3, 2)}, [3]).pin_memory()
    out = to_device(td, torch.device("cuda"))
    assert out.device.type == "cuda" and out["a"].device.type == "cuda"
    torch.testing.assert_close(out["a"].cpu(), td["a"])
    assert to_device(out, out["a"].device) is out


# ------------------------------------------------------------------ parallel samplers
@pytest.mark.parametrize("sampler_cls", [GpuSampler, CpuSampler], ids=["gpu", "cpu"])
def test_parallel_samplers_act_with_the_cuda_learner(sampler_cls, tmp_path, monkeypatch):
    """Once epsilon reaches 0 (iteration 2), every batch's actions are the learner's greedy
    actions at the time the batch was collected: the action server uses the CUDA agent
    itself, ``CpuSampler``'s workers a CPU copy refreshed before each batch."""
    algo = DQN(**REPLAY, eps_steps=32, learning_rate=1e-2, target_update_interval=4)
    agent = DqnAgent(model_kwargs=SMALL, eps_final=0.0)
    agreement: list[tuple[int, float]] = []
    original = algo.optimize_agent

    def optimize_agent(itr, samples):
        if itr >= 3:
            flat = samples.reshape(-1)
            with torch.no_grad():
                q = agent.model(
                    flat[keys.OBSERVATION].to("cuda"),
                    flat[keys.PREV_ACTION].to("cuda"),
                    flat[keys.PREV_REWARD].to("cuda"),
                )
            greedy = q.argmax(-1).cpu()
            agreement.append((itr, (greedy == flat[keys.ACTION]).float().mean().item()))
        return original(itr, samples)

    monkeypatch.setattr(algo, "optimize_agent", optimize_agent)
    sampler = sampler_cls(IdentityEnv, {}, batch_T=T, batch_B=B, n_workers=2)
    runner = MinibatchRl(
        algo, agent, sampler, n_steps=8 * T * B, seed=0, progress_bar=False, device="cuda"
    )
    train(runner, tmp_path)
    assert algo.update_counter > 0
    assert_on("cuda", agent, algo)
    assert len(agreement) == 5
    assert all(share >= 0.97 for _, share in agreement), agreement
    assert not sampler.worker_processes  # shut down


# ------------------------------------------------------------------- recurrent agents
@pytest.mark.parametrize("sampler_cls", [SerialSampler, GpuSampler], ids=["serial", "gpu"])
def test_recurrent_agent_acts_and_trains_on_cuda(sampler_cls, tmp_path):
    """The states travel to the CUDA agent and back with its inputs; the training forward
    on CUDA reproduces the sampled log-probabilities; recurrent PPO trains there."""
    agent = CategoricalPgAgent(recurrent=True, model_kwargs={"hidden_sizes": (8,), "lstm_size": 8})
    kwargs = {} if sampler_cls is SerialSampler else {"n_workers": 2}
    sampler = sampler_cls(CountingEnv, {"episode_length": 5}, batch_T=T, batch_B=B, **kwargs)
    algo = PPO(minibatches=2, epochs=1)
    checked: list[float] = []
    original = algo.optimize_agent

    def optimize_agent(itr, samples):
        on_device = samples.to("cuda")
        with torch.no_grad():
            out = agent(on_device)
        log_prob = agent.distribution(out).log_prob(on_device[keys.ACTION])
        checked.append((log_prob - on_device[keys.LOG_PROB]).abs().max().item())
        return original(itr, samples)

    algo.optimize_agent = optimize_agent  # type: ignore[method-assign]
    runner = MinibatchRl(
        algo, agent, sampler, n_steps=4 * T * B, seed=0, progress_bar=False, device="cuda"
    )
    train(runner, tmp_path)
    assert_on("cuda", agent, algo)
    assert checked and max(checked) < 1e-4, checked


# --------------------------------------------------------------------------- AsyncRl
@pytest.mark.parametrize("sampler_process", [False, True], ids=["thread", "process"])
def test_async_rl_with_a_cuda_learner(sampler_process, tmp_path):
    algo = DQN(batch_size=16, replay_ratio=4, min_steps_learn=64, replay_size=1000, eps_steps=200)
    agent = DqnAgent(model_kwargs=SMALL)
    sampler = SerialSampler(CountingEnv, {"episode_length": 6}, batch_T=8, batch_B=2)
    runner = AsyncRl(
        algo,
        agent,
        sampler,
        n_steps=640,
        seed=0,
        log_interval_steps=320,
        max_sampler_lead_itrs=1,
        sampler_process=sampler_process,
        device="cuda",
    )
    row = train(runner, tmp_path)
    assert row["Diagnostics/CumSteps"] == 640 and algo.update_counter > 0
    assert_on("cuda", agent, algo)
    assert_finite_losses(row)


# ---------------------------------------------------------------------------- SyncRl
@pytest.mark.parametrize("name", ["a2c", "dqn", "sac"])
def test_sync_rl_world_size_1_with_nccl(name, tmp_path):
    import torch.distributed as dist

    algo, agent, env_cls = make(name)
    runner = SyncRl(
        algo,
        agent,
        serial(env_cls),
        n_steps=4 * T * B,
        world_size=1,
        seed=0,
        progress_bar=False,
        cuda=True,
        timeout_s=60,
    )
    row = train(runner, tmp_path)
    assert algo.update_counter > 0
    assert_finite_losses(row)
    assert_on("cuda", agent, algo)
    assert not dist.is_initialized()


# ------------------------------------------------------------------------ snapshots
def test_gpu_snapshot_resumes_on_the_cpu_and_back(tmp_path):
    """SAC (three optimizers and a temperature) trained on CUDA, resumed on the CPU with its
    replay buffer, then resumed on CUDA again: each leg trains on."""
    counters = []
    for leg, device in enumerate(("cuda", "cpu", "cuda")):
        algo, agent, env_cls = make("sac")
        runner = MinibatchRl(
            algo,
            agent,
            serial(env_cls),
            n_steps=4 * (leg + 1) * T * B,
            seed=0,
            log_interval_steps=2 * T * B,
            progress_bar=False,
            resume_from=tmp_path / "run_0" if leg else None,
            snapshot_replay=True,
            device=device,
        )
        train(runner, tmp_path, resume=leg > 0)
        assert_on(device, agent, algo)
        counters.append(algo.update_counter)
        snap = load_snapshot(tmp_path / "run_0")  # map_location="cpu"
        assert {t.device.type for t in tensors(snap)} == {"cpu"}
    assert counters[0] < counters[1] < counters[2], counters


# ------------------------------------------------------------------------ replay_device
@pytest.mark.parametrize("name", ["dqn", "sac"])
def test_replay_buffer_on_the_device(name, tmp_path):
    from tdrl._compat import storage_tensordict

    algo, agent, env_cls = make(name, replay_device="cuda")
    runner = MinibatchRl(
        algo, agent, serial(env_cls), n_steps=6 * T * B, seed=0, progress_bar=False, device="cuda"
    )
    row = train(runner, tmp_path)
    assert algo.update_counter > 0
    assert_finite_losses(row)
    stored = storage_tensordict(algo.replay_buffer.storage)
    assert {leaf.device.type for leaf in stored.values(True, True)} == {"cuda"}
    batch = algo.replay_buffer.sample_batch(8)
    assert {leaf.device.type for leaf in batch.values(True, True)} == {"cuda"}


class FrameStackEnv(gym.Env):
    """Atari-shaped: ``[4, 16, 16]`` uint8 stacks of random frames, oldest first, zeroed at a
    reset; 3 actions; episodes of 7 steps, alternately terminated and truncated."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(0, 255, (4, 16, 16), np.uint8)
        self.action_space = gym.spaces.Discrete(3)
        self._stack = np.zeros((4, 16, 16), np.uint8)
        self._t = self._episode = 0

    def _push(self):
        self._stack = np.roll(self._stack, -1, axis=0)
        self._stack[-1] = self.np_random.integers(0, 256, (16, 16), dtype=np.uint8)
        return self._stack.copy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._stack[:] = 0
        self._t, self._episode = 0, self._episode + 1
        return self._push(), {}

    def step(self, action):
        self._t += 1
        end = self._t >= 7
        terminated, truncated = end and self._episode % 2 == 0, end and self._episode % 2 == 1
        return self._push(), float(action), terminated, truncated, {}


def test_frame_replay_on_the_device(tmp_path):
    from tdrl.replays import FrameReplayBuffer

    algo = DQN(**REPLAY, eps_steps=64, n_step_return=3, replay_device="cuda")
    agent = DqnAgent(model_kwargs={"fc_sizes": 16, "channels": (8, 8, 8)})
    runner = MinibatchRl(
        algo,
        agent,
        serial(FrameStackEnv),
        n_steps=6 * T * B,
        seed=0,
        progress_bar=False,
        device="cuda",
    )
    row = train(runner, tmp_path)
    assert isinstance(algo.replay_buffer, FrameReplayBuffer)
    assert algo.update_counter > 0
    assert_finite_losses(row)
    batch = algo.replay_buffer.sample_batch(8)
    obs = batch.get(keys.OBSERVATION)
    assert obs.device.type == "cuda" and obs.dtype == torch.uint8
    assert tuple(obs.shape) == (8, 4, 16, 16)


def test_bf16_autocast_dqn_trains_on_cuda(tmp_path):
    """The Atari model's bf16 autocast: bfloat16 convolutions, float32 Q-values, training."""
    algo = DQN(**REPLAY, eps_steps=64)
    agent = DqnAgent(model_kwargs={"fc_sizes": 16, "channels": (8, 8, 8), "autocast": True})
    runner = MinibatchRl(
        algo,
        agent,
        serial(FrameStackEnv),
        n_steps=4 * T * B,
        seed=0,
        progress_bar=False,
        device="cuda",
    )
    row = train(runner, tmp_path)
    assert algo.update_counter > 0
    assert_finite_losses(row)
    obs = torch.randint(0, 256, (5, 4, 16, 16), dtype=torch.uint8, device="cuda")
    q = agent.model(obs, torch.zeros(5, device="cuda"), torch.zeros(5, 1, device="cuda"))
    assert q.dtype == torch.float32 and q.shape == (5, 3)
    conv_out = []
    first_conv = next(m for m in agent.model.modules() if isinstance(m, torch.nn.Conv2d))
    handle = first_conv.register_forward_hook(lambda m, i, o: conv_out.append(o.dtype))
    agent.model(obs, torch.zeros(5, device="cuda"), torch.zeros(5, 1, device="cuda"))
    handle.remove()
    assert conv_out == [torch.bfloat16]


# ------------------------------------------------------------------------------- CLI
DQN_CLI_ARGS = ("--algo-arg", "min_steps_learn=64", "--algo-arg", "replay_size=1000")


@pytest.mark.parametrize(
    ("algo", "device", "extra"),
    [
        ("ppo", "cuda", ["--batch-T", "16", "--batch-B", "4", "--n-steps", "128"]),
        (
            "dqn",
            "cuda:0",
            [*("--batch-T", "4", "--batch-B", "8", "--n-steps", "512"), *DQN_CLI_ARGS],
        ),
    ],
)
def test_cli_trains_with_device_cuda(algo, device, extra, tmp_path):
    from tdrl.cli import main

    argv = ["train", "--algo", algo, "--env", "CartPole-v1", "--device", device]
    argv += ["--log-dir", str(tmp_path), "--no-progress", "--log-interval-steps", "64", *extra]
    assert main(argv) == 0
    run_dir = tmp_path / "run_0"
    assert "cuda" in str(json.loads((run_dir / "params.json").read_text())["device"])
    snap = load_snapshot(run_dir)
    assert {t.device.type for t in tensors(snap)} == {"cpu"}


# ------------------------------------------------------------- compiled == eager (last)
@pytest.fixture
def _eager_random():
    """Compiled code draws random numbers as eager code does (``fallback_random``), so a
    compiled and an eager update can be compared on the same random draws."""
    import torch._dynamo
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()  # each test compiles afresh, far from dynamo's recompile limit
    with inductor_config.patch(fallback_random=True):
        yield
    torch._dynamo.reset()


def _replay_batch(agent: Any, action_space: gym.Space, n: int = 16) -> TensorDict:
    """A replay batch (the keys ``sample_batch`` returns) on the agent's device."""
    g = torch.Generator().manual_seed(1)
    obs_shape = agent.observation_spec.shape

    def action():
        if isinstance(action_space, gym.spaces.Discrete):
            return torch.randint(int(action_space.n), (n,), generator=g)
        return torch.rand(n, *action_space.shape, generator=g) * 2 - 1

    def inputs():
        return {
            keys.OBSERVATION: torch.rand(n, *obs_shape, generator=g),
            keys.PREV_ACTION: action(),
            keys.PREV_REWARD: torch.randn(n, 1, generator=g),
        }

    batch = TensorDict(
        {
            **inputs(),
            keys.ACTION: action(),
            keys.NEXT: inputs(),
            keys.RETURN_N: torch.randn(n, generator=g),
            keys.DISCOUNT_N: torch.where(torch.rand(n, generator=g) < 0.2, 0.0, 0.99),
            keys.DONE_N: torch.zeros(n, dtype=torch.bool),
            keys.STEPS_N: torch.ones(n, dtype=torch.long),
            keys.IS_WEIGHT: torch.rand(n, generator=g) + 0.5,
            keys.INDEX: torch.arange(n),
        },
        batch_size=[n],
    )
    return batch.to(agent.device)


def _twins(name: str) -> tuple[list[tuple[Any, Any]], type[gym.Env]]:
    """An eager and a compiled ``(algo, agent)`` with equal initial weights, on CUDA."""
    pairs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        algo, agent, env_cls = make(name, compile=compiled)
        pairs.append((algo, agent))
    env = env_cls()
    specs = space_to_spec(env.observation_space), space_to_spec(env.action_space)
    for algo, agent in pairs:
        torch.manual_seed(0)
        agent.initialize(*specs)
        agent.to("cuda")
        algo.initialize(agent, n_itr=10, batch_spec=BatchSpec(T, B))
    pairs[1][1].load_state_dict(pairs[0][1].state_dict())
    return pairs, env_cls


def _assert_same_agents(eager: Any, compiled: Any) -> None:
    compiled_state = compiled.state_dict()
    for name, e in eager.state_dict().items():
        torch.testing.assert_close(
            compiled_state[name], e, rtol=1e-3, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.usefixtures("_eager_random")
@pytest.mark.parametrize("name", [n for n in COMPILED if n not in ("a2c", "ppo")])
def test_compiled_replay_update_equals_eager(name):
    pairs, env_cls = _twins(name)
    (eager, e_agent), (compiled, c_agent) = pairs
    space = env_cls().action_space
    for k in range(3):  # DQN's target network is updated at the 2nd update
        batch = _replay_batch(e_agent, space)
        e_agent.train_mode(k)
        c_agent.train_mode(k)
        torch.manual_seed(10 + k)
        info_e = eager.update(batch.clone())
        torch.manual_seed(10 + k)
        info_c = compiled.update(batch.clone())
        assert info_c.keys() == info_e.keys()
        for key in info_e:
            torch.testing.assert_close(info_c[key], info_e[key], rtol=1e-3, atol=1e-4)
    assert compiled.update_counter == eager.update_counter == 3
    _assert_same_agents(e_agent, c_agent)


@pytest.mark.usefixtures("_eager_random")
@pytest.mark.parametrize("name", ["a2c", "ppo"])
def test_compiled_minibatch_step_equals_eager(name):
    pairs, env_cls = _twins(name)
    (eager, e_agent), (compiled, c_agent) = pairs
    sampler = SerialSampler(env_cls, {}, batch_T=T, batch_B=B)
    behaviour = copy.deepcopy(e_agent).to("cpu")
    sampler.initialize(behaviour, seed=0)
    try:
        for itr in range(2):
            behaviour.load_state_dict(e_agent.state_dict())
            behaviour.sample_mode(itr)
            samples, _ = sampler.obtain_samples(itr)
            infos = []
            for algo, agent in pairs:
                agent.train_mode(itr)
                torch.manual_seed(10 + itr)
                infos.append(algo.optimize_agent(itr, samples.clone()))
            info_e, info_c = infos
            assert info_c.keys() == info_e.keys()
            for key in info_e:
                assert info_c[key] == pytest.approx(info_e[key], rel=1e-3, abs=1e-4), key
    finally:
        sampler.shutdown()
    assert compiled.update_counter == eager.update_counter > 0
    _assert_same_agents(e_agent, c_agent)


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_pearl_meta_trains_on_cuda_and_resumes_on_the_cpu(variant, tmp_path):
    """A tiny PEARL meta-run with the agent on CUDA (acting, posterior, batched meta-step),
    snapshotted with its replay, then resumed on the CPU."""
    from tdrl.agents.qpg import PearlAgent
    from tdrl.algos.qpg import PEARL
    from tdrl.runners.meta_rl import MetaRl

    settings = {
        "env_name": "point-robot",
        "env_kwargs": {"max_episode_steps": 5},
        "n_train_tasks": 3,
        "n_eval_tasks": 2,
        "num_initial_steps": 10,
        "num_tasks_sample": 2,
        "num_steps_prior": 5,
        "num_extra_rl_steps_posterior": 5,
        "num_train_steps_per_itr": 3,
        "num_steps_per_eval": 10,
        "num_evals": 1,
        "replay_size": 200,
        "snapshot_replay": True,
        "seed": 0,
    }
    for leg, device in enumerate(("cuda", "cpu")):
        agent = PearlAgent(hidden_sizes=(16,), encoder_hidden_sizes=(16,), sac_variant=variant)
        algo = PEARL(batch_size=8, embedding_batch_size=4, meta_batch=2, sac_variant=variant)
        runner = MetaRl(
            algo,
            agent,
            n_iterations=2 * (leg + 1),
            device=device,
            resume_from=tmp_path / "run_0" if leg else None,
            **settings,
        )
        with logger_context(tmp_path, 0, "pearl", {}, echo=False, resume=leg > 0):
            row = runner.train()
        assert {p.device.type for p in agent.parameters()} == {device}
        assert math.isfinite(row["AverageReturn_all_test_tasks"])
        assert algo.update_counter == 3 * 2 * (leg + 1)
