"""Algorithms, agents and replay buffers keep to the device contract, proven on a CPU.

A GPU is not needed to find a tensor created on the wrong device: torch's ``meta`` device
refuses to mix with non-scalar CPU tensors, so an agent moved to ``meta`` before
``algo.initialize`` (as the runners place it) makes any CPU tensor created inside a loss, an
update, a step or a draw fail the test. What ``meta`` cannot run (values, ``nonzero``,
``tolist``) is replaced by small stand-ins, each named where it is used. Copies from the
CPU to the device are counted with a dispatch mode: on-policy algorithms copy the sampler
batch once per batch, replay algorithms each minibatch once. ``replay_device="cpu"`` is the
default buffer exactly; the device sampler draws the same distribution; saves load across.
What only CUDA can check is in ``tests/test_cuda.py``.
"""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torch.utils._python_dispatch import TorchDispatchMode

import tdrl.algos.pg.base as pg_base
import tdrl.algos.replay as algo_replay
from tdrl import keys
from tdrl.agents import (
    CategoricalPgAgent,
    DdpgAgent,
    DqnAgent,
    GaussianPgAgent,
    SacAgent,
    SacVAgent,
    Td3Agent,
)
from tdrl.agents.base import Agent
from tdrl.algos import A2C, DDPG, DQN, PPO, SAC, SAC_V, TD3, CategoricalDQN
from tdrl.envs import space_to_spec
from tdrl.keys import BatchSpec
from tdrl.replays import ReplayBuffer, ReplayConfig, UniformSampler
from tdrl.samplers import SerialSampler
from tdrl.testing import CountingEnv
from tdrl.utils.checks import ArgumentError
from tdrl.utils.device import to_device

META = torch.device("meta")
OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
DISCRETE = gym.spaces.Discrete(3)
BOX = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
SMALL = {"hidden_sizes": (8,)}
REPLAY = {"replay_size": 64, "min_steps_learn": 0}
SPEC = BatchSpec(4, 2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _replay_setups():
    """``name: (algo class, its preset arguments, agent factory)``, tiny networks."""
    return {
        "dqn": (DQN, {"double_dqn": True}, lambda: DqnAgent(model_kwargs=SMALL)),
        "catdqn": (
            CategoricalDQN,
            {"double_dqn": True},
            lambda: DqnAgent(n_atoms=5, model_kwargs=SMALL),
        ),
        "ddpg": (DDPG, {}, lambda: DdpgAgent(model_kwargs=SMALL, q_model_kwargs=SMALL)),
        "td3": (
            TD3,
            {"policy_update_interval": 1},
            lambda: Td3Agent(model_kwargs=SMALL, q_model_kwargs=SMALL),
        ),
        "sac": (SAC, {}, lambda: SacAgent(model_kwargs=SMALL, q_model_kwargs=SMALL)),
        "sac_v": (
            SAC_V,
            {},
            lambda: SacVAgent(model_kwargs=SMALL, q_model_kwargs=SMALL, v_model_kwargs=SMALL),
        ),
    }


REPLAY_NAMES = list(_replay_setups())


def _space(name):
    return DISCRETE if "dqn" in name else BOX


def _on(device, name, **algo_kwargs):
    """An initialized replay algorithm whose agent was placed on ``device`` first.

    On ``meta`` the optimizers use their plain loop (the fused kernel has no meta version).
    """
    algo_cls, preset, make_agent = _replay_setups()[name]
    torch.manual_seed(0)
    agent = make_agent()
    agent.initialize(space_to_spec(OBS), space_to_spec(_space(name)))
    agent.to(device)  # the runner's placement: after set-up, before algo.initialize
    if torch.device(device) == META:
        algo_kwargs.setdefault("optim_kwargs", {"foreach": False})
    algo = algo_cls(**REPLAY, **preset, **algo_kwargs)
    algo.initialize(agent, n_itr=10, batch_spec=SPEC)
    return algo, agent


def _action(space, n):
    if isinstance(space, gym.spaces.Discrete):
        return torch.randint(space.n, (n,))
    low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
    return low + (high - low) * torch.rand(n, *space.shape)


def _replay_batch(space, n=8) -> TensorDict:
    """A CPU batch with the keys ``ReplayBuffer.sample_batch`` returns."""
    torch.manual_seed(1)

    def inputs():
        return {
            keys.OBSERVATION: torch.rand(n, *OBS.shape) * 2 - 1,
            keys.PREV_ACTION: _action(space, n),
            keys.PREV_REWARD: torch.randn(n, 1),
        }

    return TensorDict(
        {
            **inputs(),
            keys.ACTION: _action(space, n),
            keys.NEXT: inputs(),
            keys.RETURN_N: torch.randn(n),
            keys.DISCOUNT_N: torch.full((n,), 0.99),
            keys.DONE_N: torch.zeros(n, dtype=torch.bool),
            keys.STEPS_N: torch.ones(n, dtype=torch.long),
            keys.IS_WEIGHT: torch.rand(n) + 0.5,
            keys.INDEX: torch.arange(n),
        },
        batch_size=[n],
    )


def _sampler_batch(agent: Agent, space, spec: BatchSpec = SPEC) -> TensorDict:
    """A CPU ``[T, B]`` sampler batch (with PG step info when the agent gives it)."""
    T, B = spec
    torch.manual_seed(3)
    obs = torch.rand(T + 1, B, *OBS.shape) * 2 - 1
    done = torch.rand(T, B, 1) < 0.2
    td = TensorDict(
        {
            keys.OBSERVATION: obs[:-1],
            keys.PREV_ACTION: torch.stack([_action(space, B) for _ in range(T)]),
            keys.PREV_REWARD: torch.randn(T, B, 1),
            keys.ACTION: torch.stack([_action(space, B) for _ in range(T)]),
            keys.NEXT: {
                keys.OBSERVATION: obs[1:],
                keys.REWARD: torch.randn(T, B, 1),
                keys.DONE: done,
                keys.TERMINATED: done,
                keys.TRUNCATED: torch.zeros(T, B, 1, dtype=torch.bool),
            },
        },
        batch_size=[T, B],
    )
    if isinstance(agent, CategoricalPgAgent | GaussianPgAgent):
        agent.sample_mode(0)
        _, info = agent.step(obs[0], td[keys.PREV_ACTION][0], td[keys.PREV_REWARD][0])
        for key, value in info.items():
            td.set(key, value.expand(T, *value.shape).clone())
    return td


class DeviceSpy(TorchDispatchMode):
    """Counts tensors copied from the CPU to ``device`` (``.to``, ``copy_``) and tensors that
    ops make on the CPU (0-dim ones aside: scalars mix with any device)."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device
        self.copies = 0
        self.made_on_cpu: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else [out]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dim() > 0:
                self.made_on_cpu.append(str(func))
        if func is torch.ops.aten._to_copy.default:
            src, dst = args[0], out
        elif func is torch.ops.aten.copy_.default:
            src, dst = args[1], args[0]
        else:
            return out
        if src.device.type == "cpu" and dst.device == self.device and src.dim() > 0:
            self.copies += 1
        return out


def _leaves(td) -> int:
    return len(list(td.values(True, True)))


def _on_meta(tensors) -> bool:
    return all(t.device == META for t in tensors)


def _moments(optimizer):
    """The optimizer's state tensors (a non-capturable ``step`` count stays a CPU scalar)."""
    return [t for state in optimizer.state.values() for t in state.values() if t.dim() > 0]


def _no_tolist(steps):
    """``stack_diagnostics`` for meta tensors (``tolist`` needs values): the names only."""
    names: dict[str, list] = {}
    for step in steps:
        for key, value in step.items():
            assert value.device == META, key
            names.setdefault(key, []).append(0.0)
    return names


# ---------------------------------------------------------------- replay algorithms on meta
@pytest.mark.parametrize("name", REPLAY_NAMES)
def test_replay_loss_and_update_run_on_the_agents_device(name):
    algo, _ = _on(META, name)
    batch = _replay_batch(_space(name)).to(META)
    spy = DeviceSpy(META)
    with spy:
        terms = algo.loss(batch)
        info = algo.update(batch)  # backward and optimizer step on meta: no CPU tensor trains
    assert _on_meta(terms.values()) and _on_meta(info.values()), name
    assert algo.update_counter == 1 and spy.made_on_cpu == [] and spy.copies == 0, name
    for optimizer in algo.optimizers():
        for group in optimizer.param_groups:
            assert _on_meta(group["params"]), name
        assert _on_meta(_moments(optimizer)), name
    if name == "sac":
        assert algo.log_alpha.device == META


@pytest.mark.parametrize("name", REPLAY_NAMES)
def test_replay_minibatches_are_copied_to_the_device_once_each(name, monkeypatch):
    algo, agent = _on(META, name)
    monkeypatch.setattr(algo_replay, "stack_diagnostics", _no_tolist)
    samples = _sampler_batch(agent, _space(name))
    algo.optimize_agent(0, samples)  # appends (CPU buffer) and replays
    assert algo.replay_buffer.device.type == "cpu"
    n_leaves = _leaves(algo.replay_buffer.sample_batch(algo.batch_size))
    spy = DeviceSpy(META)
    with spy:
        info = algo.optimize_agent(1, samples)
    assert info and algo.updates_per_optimize >= 2
    assert spy.copies == algo.updates_per_optimize * n_leaves, (spy.copies, n_leaves)


# ---------------------------------------------------------------- on-policy algorithms on meta
def _meta_gae(reward, value, next_value, done, terminated, *, discount, gae_lambda):
    """GAE's shapes on the input's device (TorchRL's kernel calls ``nonzero``: no meta)."""
    assert reward.device == value.device == next_value.device == done.device == META
    return torch.zeros_like(reward), torch.zeros_like(reward)


@pytest.mark.parametrize("algo_cls", [A2C, PPO])
@pytest.mark.parametrize("agent_cls", [CategoricalPgAgent, GaussianPgAgent])
def test_on_policy_batch_is_copied_to_the_device_once_per_batch(algo_cls, agent_cls, monkeypatch):
    space = DISCRETE if agent_cls is CategoricalPgAgent else BOX
    torch.manual_seed(0)
    agent = agent_cls(model_kwargs=SMALL)
    agent.initialize(space_to_spec(OBS), space_to_spec(space))
    samples = _sampler_batch(agent, space)  # CPU, as the samplers return it
    agent.to(META)
    kwargs = {"minibatches": 2, "epochs": 3} if algo_cls is PPO else {}
    algo = algo_cls(**kwargs, optim_kwargs={"foreach": False})
    algo.initialize(agent, n_itr=4, batch_spec=SPEC)
    monkeypatch.setattr(pg_base, "generalized_advantage_estimate", _meta_gae)
    monkeypatch.setattr(f"{algo_cls.__module__}.stack_diagnostics", _no_tolist)
    spy = DeviceSpy(META)
    with spy:
        info = algo.optimize_agent(0, samples)
    assert spy.copies == _leaves(samples)  # once, not once per minibatch or epoch
    assert spy.made_on_cpu == []  # minibatch indices, masks, advantages: all on the device
    assert len(info["loss"]) == (6 if algo_cls is PPO else 1)
    assert _on_meta(_moments(algo.optimizer))


def test_to_device_is_a_no_op_on_the_same_device():
    td = _replay_batch(DISCRETE)
    assert to_device(td, "cpu") is td
    moved = to_device(td, META)
    assert moved is not td and _on_meta(moved.values(True, True))
    assert to_device(moved, META) is moved


# ---------------------------------------------------------------- agents on meta
@pytest.mark.parametrize(
    ("make", "space"),
    [
        (lambda: DqnAgent(model_kwargs=SMALL, eps_final_min=0.001), DISCRETE),
        (lambda: DqnAgent(n_atoms=5, model_kwargs=SMALL), DISCRETE),
        (lambda: DdpgAgent(model_kwargs=SMALL, q_model_kwargs=SMALL, pretrain_std=0.5), BOX),
        (lambda: SacAgent(model_kwargs=SMALL, q_model_kwargs=SMALL), BOX),
        (lambda: CategoricalPgAgent(model_kwargs=SMALL), DISCRETE),
        (lambda: GaussianPgAgent(model_kwargs=SMALL), BOX),
    ],
)
def test_agent_steps_draw_on_the_agents_device(make, space):
    agent = make()
    agent.initialize(space_to_spec(OBS), space_to_spec(space))
    agent.collector_initialize(global_B=4, env_ranks=range(4))
    if isinstance(agent, DqnAgent) and agent.n_atoms:
        agent.set_support(-1.0, 1.0)
    agent.to(META)
    obs = torch.zeros(4, *OBS.shape, device=META)
    prev_action = _action(space, 4).to(META)
    for mode in (agent.sample_mode, agent.eval_mode):
        mode(0)
        action, info = agent.step(obs, prev_action, torch.zeros(4, 1, device=META))
        assert action.device == META and _on_meta(info.values())
    if isinstance(agent, DqnAgent):
        agent.sample_mode(0)
        assert not isinstance(agent.epsilon, torch.Tensor) or agent.epsilon.device == META


def test_default_parts_follow_a_users_model_device():
    """A user's actor already on a device: default critics and the action map join it."""
    for agent in (
        DdpgAgent(model=torch.nn.Linear(3, 2).to(META), q_model_kwargs=SMALL),
        SacVAgent(model=_Pi().to(META), q_model_kwargs=SMALL, v_model_kwargs=SMALL),
    ):
        agent.initialize(space_to_spec(OBS), space_to_spec(BOX))
        tensors = [*agent.parameters(), *agent.buffers()]
        assert _on_meta(tensors), type(agent).__name__
    dqn = DqnAgent(model=_Q().to(META), n_atoms=5)
    dqn.initialize(space_to_spec(OBS), space_to_spec(DISCRETE))
    dqn.set_support(-1.0, 1.0)
    assert dqn.support.device == META


class _Pi(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(3, 4)

    def forward(self, observation, prev_action=None, prev_reward=None):
        return self.net(observation).chunk(2, -1)


class _Q(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(3, 15)

    def forward(self, observation, prev_action, prev_reward):
        return self.net(observation).unflatten(-1, (3, 5))


# ---------------------------------------------------------------- replay_device
class RandomAgent(Agent):
    def __init__(self):
        super().__init__(model=torch.nn.Linear(1, 1))

    def step(self, observation, prev_action, prev_reward):
        return torch.randint(3, (observation.shape[0],)), {}


def _counting_batches(n_itr, T=4, B=3, seed=0):
    counter = itertools.count()

    def make():
        i = next(counter)
        return CountingEnv(episode_length=[3, 5, 7][i % 3], truncate=i % 3 == 1, env_id=i)

    sampler = SerialSampler(make, batch_T=T, batch_B=B, max_decorrelation_steps=0)
    sampler.initialize(RandomAgent(), seed=seed)
    return [sampler.obtain_samples(itr)[0].clone() for itr in range(n_itr)]


def test_replay_device_cpu_is_the_default_buffer():
    batches = _counting_batches(4)
    default = ReplayBuffer(size=12 * 3, batch_B=3, n_step_return=2, seed=5)
    explicit = ReplayBuffer(size=12 * 3, batch_B=3, n_step_return=2, seed=5, device="cpu")
    assert type(explicit.sampler) is type(default.sampler) and explicit.sampler.device is None
    for s in batches:
        default.append_samples(s)
        explicit.append_samples(s)
    for _ in range(3):
        assert (default.sample_batch(16) == explicit.sample_batch(16, device="cpu")).all()


def test_replay_device_cpu_gives_the_same_dqn_run():
    def run(**kwargs):
        torch.manual_seed(0)
        agent = DqnAgent(model_kwargs=SMALL)
        agent.initialize(space_to_spec(OBS), space_to_spec(DISCRETE))
        algo = DQN(**REPLAY, **kwargs)
        algo.initialize(agent, n_itr=10, batch_spec=SPEC)
        samples = _sampler_batch(agent, DISCRETE)
        return [algo.optimize_agent(itr, samples) for itr in range(3)]

    assert run() == run(replay_device="cpu")


def test_replay_device_is_checked():
    with pytest.raises(ArgumentError, match="replay_device='meta' cannot hold memmap"):
        ReplayConfig(4, 0, 64, 1.0, replay_storage="memmap", replay_device="meta")
    with pytest.raises(ArgumentError, match="replay_device must be"):
        DQN(replay_device=3)
    if not torch.cuda.is_available():
        with pytest.raises(ArgumentError, match="needs a CUDA device"):
            SAC(replay_device="cuda")
    assert DQN(replay_device="cpu").replay.replay_device == torch.device("cpu")


class _MetaIndex:
    """Index sampler for a ``meta`` buffer (``torch.Generator`` has no meta device)."""

    def __init__(self, capacity):
        self.capacity = capacity

    def set_default(self, index):
        pass

    def set_invalid(self, index):
        pass

    def update_priority(self, index, priority):
        pass

    def sample(self, storage, batch_size):
        index = torch.zeros(batch_size, dtype=torch.long, device=META)
        return index, {"index": index, "priority_weight": torch.ones(batch_size)}

    def __len__(self):
        return self.capacity


@pytest.mark.parametrize("n", [1, 3])
def test_a_buffer_on_the_device_builds_batches_there(n):
    rb = ReplayBuffer(size=12 * 3, batch_B=3, n_step_return=n, sampler=_MetaIndex(36), device=META)
    for s in _counting_batches(3):
        rb.append_samples(s)
    assert _on_meta([rb._reward, rb._done, rb._terminated])
    batch = rb.sample_batch(8)
    assert _on_meta(batch.values(True, True)) and batch.batch_size == (8,)
    assert _on_meta(rb.sample_batch(8, device=META).values(True, True))


def test_device_uniform_sampler_draws_the_same_distribution():
    capacity = 40
    valid = np.r_[3:17, 25:31]
    cpu, dev = UniformSampler(capacity, seed=1), UniformSampler(capacity, seed=1, device="cpu")
    for sampler in (cpu, dev):
        sampler.set_default(np.arange(capacity))
        sampler.set_invalid(np.setdiff1d(np.arange(capacity), valid))
    n = 40_000
    counts = {}
    for name, sampler in (("cpu", cpu), ("device", dev)):
        index, info = sampler.sample(None, n)
        assert index.dtype == torch.long and (info["index"] == index).all()
        counts[name] = np.bincount(index.numpy(), minlength=capacity)
        assert set(np.flatnonzero(counts[name])) == set(valid)  # valid entries only, all
        expected = n / len(valid)
        chi2 = ((counts[name][valid] - expected) ** 2 / expected).sum()
        assert chi2 < 60, (name, chi2)  # 19 degrees of freedom: p < 1e-5 above 60
    # A change reaches the device list at the next draw.
    dev.set_invalid(np.r_[25:31])
    assert set(dev.sample(None, 2000)[0].tolist()) == set(range(3, 17))


def test_device_sampler_buffer_keeps_the_contracts(tmp_path):
    """The n-step buffer with draws made by the device sampler (on the CPU device)."""
    batches = _counting_batches(4)

    def buffer(seed=3):
        sampler = UniformSampler(12 * 3, seed=seed, device="cpu")
        return ReplayBuffer(size=12 * 3, batch_B=3, n_step_return=2, sampler=sampler)

    rb = buffer()
    for s in batches:
        rb.append_samples(s)
    batch = rb.sample_batch(4000)
    rows = set((batch["index"] // 3).tolist())
    assert rows == set(range(12)) - {3}  # 16 steps into 12 rows: the newest row waits
    assert (batch["is_weight"] == 1).all()
    # Save / load round trip: the same draws follow, on a buffer of either kind.
    rb.save(tmp_path / "rb")
    expected = rb.sample_batch(64)
    fresh = buffer(seed=99)
    fresh.load(tmp_path / "rb")
    assert (fresh.sample_batch(64) == expected).all()
    default = ReplayBuffer(size=12 * 3, batch_B=3, n_step_return=2, seed=99)
    default.load(tmp_path / "rb")  # a device save loads into a CPU buffer
    assert len(default) == len(rb) and default.t == rb.t
    assert set((default.sample_batch(500)["index"] // 3).tolist()) == rows
    default.save(tmp_path / "cpu")
    back = buffer(seed=7)
    back.load(tmp_path / "cpu")  # and the reverse: flags restored, generator reseeded
    assert set((back.sample_batch(500)["index"] // 3).tolist()) == rows


def test_frame_stacks_built_without_host_synchronisation_are_the_same():
    """Off the CPU, ``FrameReplayBuffer`` rebuilds stacks with selects and masks instead of
    reading flags on the host; both ways give the same stacks (run here on the CPU)."""
    from tdrl.replays.frame import _put_final_frames, zero_before_episode_start

    g = torch.Generator().manual_seed(0)
    N, C = 64, 4
    stacks = torch.randint(1, 255, (N, C, 3, 3), dtype=torch.uint8, generator=g)
    dones = torch.rand(N, C - 1, generator=g) < 0.3
    host, device = stacks.clone(), stacks.clone()
    zero_before_episode_start(host, dones, False)
    zero_before_episode_start(device, dones, True)
    assert torch.equal(host, device) and not torch.equal(host, stacks)
    ended = torch.rand(N, generator=g) < 0.3
    final_frames = torch.randint(1, 255, (10, 3, 3), dtype=torch.uint8, generator=g)
    slot = torch.where(ended, torch.randint(10, (N,), generator=g), -1).int()
    host, device = stacks.clone(), stacks.clone()
    _put_final_frames(host, ended, slot, final_frames, False)
    _put_final_frames(device, ended, slot, final_frames, True)
    assert torch.equal(host, device)
    assert torch.equal(host[ended, -1], final_frames[slot[ended].long()])
    assert torch.equal(host[~ended], stacks[~ended])
    with pytest.raises(RuntimeError, match="final frame is missing"):
        _put_final_frames(host, ended, torch.full_like(slot, -1), final_frames, False)


# ---------------------------------------------------------------- bf16 autocast (Atari)
def test_bf16_autocast_is_a_no_op_with_a_warning_off_cuda():
    from tdrl.models.dqn import AtariCatDqnModel, AtariDqnModel

    obs = torch.randint(0, 256, (3, 4, 36, 36), dtype=torch.uint8)
    for cls, kwargs in ((AtariDqnModel, {}), (AtariCatDqnModel, {"n_atoms": 5})):
        torch.manual_seed(0)
        plain = cls((4, 36, 36), 3, fc_sizes=8, **kwargs)
        torch.manual_seed(0)
        cast = cls((4, 36, 36), 3, fc_sizes=8, autocast=True, **kwargs)
        with pytest.warns(UserWarning, match="autocast=True has no effect on cpu"):
            out = cast(obs, None, None)
        assert out.dtype == torch.float32
        assert torch.equal(out, plain(obs, None, None))
    with pytest.raises(ValueError, match="autocast"):
        AtariDqnModel((4, 36, 36), 3, autocast="bf16")
    agent = DqnAgent(model_kwargs={"fc_sizes": 8, "autocast": True})
    agent.initialize(
        space_to_spec(gym.spaces.Box(0, 255, (4, 36, 36), np.uint8)), space_to_spec(DISCRETE)
    )
    assert agent.model.autocast
