"""Compiled updates (``compile=True``) keep the eager semantics, here on the CPU.

Each test builds an eager and a compiled copy of an algorithm from the same initial weights
and feeds both the same batches under the same seeds (``fallback_random`` makes compiled
random draws use the eager generator), then compares parameters, targets, optimizer state,
diagnostics, priorities and schedules after a few updates that include target updates and
actor updates at their intervals. After the first updates a recompilation is an error:
counters, schedules and Python-side conditions are not baked into the graphs.

Compiling takes seconds to a minute per function on this CPU, so all but one smoke test are
marked ``slow``. CUDA graphs (``mode="reduce-overhead"``) and capturable optimizers need a
GPU: ``tests/test_cuda.py`` runs the same comparison there.
"""

from __future__ import annotations

import copy
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch._dynamo
import torch._inductor.config
from tensordict import TensorDict

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
from tdrl.algos import A2C, DDPG, DQN, PPO, SAC, SAC_V, TD3, CategoricalDQN
from tdrl.envs import space_to_spec
from tdrl.keys import BatchSpec
from tdrl.utils.compile import compile_mode
from tdrl.utils.optim import make_optimizer

OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
DISCRETE = gym.spaces.Discrete(3)
BOX = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
SMALL = {"hidden_sizes": (8,)}
REPLAY = {"replay_size": 64, "min_steps_learn": 0, "target_update_interval": 2}
TOL = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(autouse=True)
def _compile_setup():
    """One thread, fresh dynamo caches, eager random draws inside compiled graphs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch._dynamo.reset()
    with torch._inductor.config.patch(fallback_random=True):
        yield
    torch._dynamo.reset()
    torch.set_num_threads(n)


def _replay_setups():
    return {
        "dqn": (DQN, {"double_dqn": True}, lambda: DqnAgent(model_kwargs=SMALL), DISCRETE),
        "catdqn": (
            CategoricalDQN,
            {"prioritized_replay": True, "n_step_return": 1},
            lambda: DqnAgent(n_atoms=5, model_kwargs=SMALL),
            DISCRETE,
        ),
        "ddpg": (
            DDPG,
            {"policy_update_interval": 2},
            lambda: DdpgAgent(model_kwargs=SMALL, q_model_kwargs=SMALL),
            BOX,
        ),
        "td3": (TD3, {}, lambda: Td3Agent(model_kwargs=SMALL, q_model_kwargs=SMALL), BOX),
        "sac": (SAC, {}, lambda: SacAgent(model_kwargs=SMALL, q_model_kwargs=SMALL), BOX),
        "sac_v": (
            SAC_V,
            {},
            lambda: SacVAgent(model_kwargs=SMALL, q_model_kwargs=SMALL, v_model_kwargs=SMALL),
            BOX,
        ),
    }


def _pair(name):
    """Eager and compiled algorithms over agents with the same initial weights."""
    algo_cls, preset, make_agent, space = _replay_setups()[name]
    torch.manual_seed(0)
    agent = make_agent()
    agent.initialize(space_to_spec(OBS), space_to_spec(space))
    twin = copy.deepcopy(agent)
    out = []
    for a, compile_ in ((agent, False), (twin, True)):
        torch.manual_seed(1)  # the replay buffer's seed
        algo = algo_cls(**REPLAY, **preset, compile=compile_)
        algo.initialize(a, n_itr=10, batch_spec=BatchSpec(4, 2))
        out.append((algo, a))
    return out, space


def _action(space, n, g):
    if isinstance(space, gym.spaces.Discrete):
        return torch.randint(space.n, (n,), generator=g)
    low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
    return low + (high - low) * torch.rand(n, *space.shape, generator=g)


def _batch(space, seed, n=16) -> TensorDict:
    g = torch.Generator().manual_seed(seed)

    def inputs():
        return {
            keys.OBSERVATION: torch.rand(n, *OBS.shape, generator=g) * 2 - 1,
            keys.PREV_ACTION: _action(space, n, g),
            keys.PREV_REWARD: torch.randn(n, 1, generator=g),
        }

    return TensorDict(
        {
            **inputs(),
            keys.ACTION: _action(space, n, g),
            keys.NEXT: inputs(),
            keys.RETURN_N: torch.randn(n, generator=g),
            keys.DISCOUNT_N: torch.where(torch.rand(n, generator=g) < 0.2, 0.0, 0.99),
            keys.DONE_N: torch.zeros(n, dtype=torch.bool),
            keys.STEPS_N: torch.ones(n, dtype=torch.long),
            keys.IS_WEIGHT: torch.rand(n, generator=g) + 0.5,
            keys.INDEX: torch.randperm(64, generator=g)[:n],
        },
        batch_size=[n],
    )


def _assert_same_state(eager, compiled, what):
    (algo_e, agent_e), (algo_c, agent_c) = eager, compiled
    sd_e, sd_c = agent_e.state_dict(), agent_c.state_dict()
    assert sd_e.keys() == sd_c.keys()
    for key in sd_e:  # online networks and targets
        torch.testing.assert_close(sd_c[key], sd_e[key], **TOL, msg=f"{what}: {key}")
    for opt_e, opt_c in zip(algo_e.optimizers(), algo_c.optimizers(), strict=True):
        for state_e, state_c in zip(opt_e.state.values(), opt_c.state.values(), strict=True):
            for k in state_e:
                torch.testing.assert_close(
                    state_c[k].float(), state_e[k].float(), **TOL, msg=f"{what}: optimizer {k}"
                )
    assert algo_e.update_counter == algo_c.update_counter


def _run_replay(name, n_updates=4):
    (eager, compiled), space = _pair(name)
    for step in range(n_updates):
        if step == 2:  # both graphs (and the target update's) exist: no more compiling
            torch._dynamo.config.error_on_recompile = True
        batch = _batch(space, seed=10 + step)
        infos = []
        for algo, _ in (eager, compiled):
            torch.manual_seed(100 + step)
            infos.append(algo.update(batch.clone()))
        assert infos[0].keys() == infos[1].keys(), (name, step)
        for key in infos[0]:
            torch.testing.assert_close(infos[1][key], infos[0][key], **TOL, msg=f"{name} {key}")
        _assert_same_state(eager, compiled, f"{name} after update {step + 1}")
    torch._dynamo.config.error_on_recompile = False
    return eager, compiled


def test_compiled_dqn_update_matches_eager():
    """The fast smoke test: DQN, target updates every second update (hard copies)."""
    start = time.perf_counter()
    _, (algo_c, agent_c) = _run_replay("dqn")
    assert algo_c.update_counter == 4
    target = dict(agent_c.target_model.named_parameters())
    online = dict(agent_c.model.named_parameters())
    assert all(torch.equal(target[k], online[k]) for k in online)  # copied at update 4
    print(f"compiled DQN: {time.perf_counter() - start:.1f} s with compilation")


@pytest.mark.slow
@pytest.mark.timeout(900)  # compiles: up to 30 s measured under load
@pytest.mark.parametrize("name", ["catdqn", "ddpg", "td3", "sac", "sac_v"])
def test_compiled_replay_update_matches_eager(name):
    (algo_e, _), (algo_c, _) = _run_replay(name)
    if name == "catdqn":  # priorities went to the (CPU) sum tree alike
        np.testing.assert_allclose(
            algo_c.replay_buffer.sampler.tree.leaves,
            algo_e.replay_buffer.sampler.tree.leaves,
            rtol=1e-4,
        )
    if name == "sac":
        torch.testing.assert_close(algo_c.log_alpha, algo_e.log_alpha, **TOL)


def _pg_pair(algo_cls, agent_cls, space, **kwargs):
    torch.manual_seed(0)
    agent = agent_cls(model_kwargs=SMALL)
    agent.initialize(space_to_spec(OBS), space_to_spec(space))
    out = []
    for a, compile_ in ((agent, False), (copy.deepcopy(agent), True)):
        algo = algo_cls(**kwargs, compile=compile_)
        algo.initialize(a, n_itr=4, batch_spec=BatchSpec(4, 2))
        out.append((algo, a))
    return out


def _pg_samples(agent, space, seed, T=4, B=2):
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(T + 1, B, *OBS.shape, generator=g) * 2 - 1
    done = torch.rand(T, B, 1, generator=g) < 0.2
    td = TensorDict(
        {
            keys.OBSERVATION: obs[:-1],
            keys.PREV_ACTION: torch.stack([_action(space, B, g) for _ in range(T)]),
            keys.PREV_REWARD: torch.randn(T, B, 1, generator=g),
            keys.ACTION: torch.stack([_action(space, B, g) for _ in range(T)]),
            keys.NEXT: {
                keys.OBSERVATION: obs[1:],
                keys.REWARD: torch.randn(T, B, 1, generator=g),
                keys.DONE: done,
                keys.TERMINATED: done,
                keys.TRUNCATED: torch.zeros(T, B, 1, dtype=torch.bool),
            },
        },
        batch_size=[T, B],
    )
    agent.sample_mode(0)
    torch.manual_seed(seed)
    _, info = agent.step(obs[0], td[keys.PREV_ACTION][0], td[keys.PREV_REWARD][0])
    for key, value in info.items():
        td.set(key, value.expand(T, *value.shape).clone())
    return td


@pytest.mark.slow
@pytest.mark.timeout(900)  # compiles: up to 30 s measured under load
@pytest.mark.parametrize(
    ("algo_cls", "agent_cls", "space"),
    [(PPO, CategoricalPgAgent, DISCRETE), (PPO, GaussianPgAgent, BOX), (A2C, GaussianPgAgent, BOX)],
)
def test_compiled_pg_step_matches_eager_with_its_schedules(algo_cls, agent_cls, space):
    """PPO's linear learning-rate and clip schedules keep working without recompiling."""
    kwargs = {"minibatches": 2, "epochs": 2} if algo_cls is PPO else {}
    eager, compiled = _pg_pair(algo_cls, agent_cls, space, **kwargs)
    for itr in range(3):
        if itr == 1:
            torch._dynamo.config.error_on_recompile = True  # new lr and eps: same graphs
        samples = _pg_samples(eager[1], space, seed=itr)
        infos = []
        for algo, _ in (eager, compiled):
            torch.manual_seed(50 + itr)
            infos.append(algo.optimize_agent(itr, samples.clone()))
        assert infos[0].keys() == infos[1].keys()
        for key in infos[0]:
            np.testing.assert_allclose(infos[1][key], infos[0][key], rtol=1e-4, atol=1e-5)
        _assert_same_state(eager, compiled, f"{algo_cls.__name__} itr {itr}")
        if algo_cls is PPO:
            lr_e = eager[0].optimizer.param_groups[0]["lr"]
            lr_c = compiled[0].optimizer.param_groups[0]["lr"]
            assert isinstance(lr_c, torch.Tensor) and float(lr_c) == pytest.approx(lr_e)
            assert compiled[0].ratio_clip == pytest.approx(eager[0].ratio_clip)
    torch._dynamo.config.error_on_recompile = False
    if algo_cls is PPO:  # the snapshot holds numbers and loads into either kind of run
        state = compiled[0].state_dict()
        assert isinstance(state["optimizer"]["param_groups"][0]["lr"], float)
        eager[0].load_state_dict(state)
        compiled[0].load_state_dict(eager[0].state_dict())
        assert isinstance(compiled[0].optimizer.param_groups[0]["lr"], torch.Tensor)


def test_compile_mode_and_optimizer_choices_by_device():
    assert compile_mode(torch.device("cuda")) == "reduce-overhead"
    assert compile_mode(torch.device("cpu")) is None
    params = [torch.nn.Parameter(torch.zeros(2))]
    eager = make_optimizer(torch.optim.Adam, params, 1e-3, {})
    assert not eager.defaults["capturable"] and eager.defaults["fused"]
    on_cuda = make_optimizer(torch.optim.Adam, params, 1e-3, {}, compile_on=torch.device("cuda"))
    assert on_cuda.defaults["capturable"]  # step counters on the device, as CUDA graphs need
    on_cpu = make_optimizer(torch.optim.Adam, params, 1e-3, {}, compile_on=torch.device("cpu"))
    assert not on_cpu.defaults["capturable"]
    scheduled = make_optimizer(
        torch.optim.Adam, params, 1e-3, {}, compile_on=torch.device("cpu"), tensor_lr=True
    )
    assert isinstance(scheduled.param_groups[0]["lr"], torch.Tensor)
    user = make_optimizer(
        torch.optim.Adam, params, 1e-3, {"capturable": False}, compile_on=torch.device("cuda")
    )
    assert not user.defaults["capturable"]  # the user's choice wins
    sgd = make_optimizer(torch.optim.SGD, params, 1e-3, {}, compile_on=torch.device("cuda"))
    assert "capturable" not in sgd.defaults or not sgd.defaults.get("capturable")


def test_compile_argument_is_checked():
    for cls in (DQN, CategoricalDQN, DDPG, TD3, SAC, SAC_V, PPO, A2C):
        assert cls().compile is False
        with pytest.raises(ValueError, match="compile"):
            cls(compile="yes")


def _pearl_batches(n_updates: int) -> list[TensorDict]:
    g = torch.Generator().manual_seed(1)

    def batch(tasks: int, n: int) -> TensorDict:
        return TensorDict(
            {
                "observation": torch.randn(tasks, n, 3, generator=g),
                "action": torch.rand(tasks, n, 2, generator=g) * 2 - 1,
                "next": {
                    "observation": torch.randn(tasks, n, 3, generator=g),
                    "reward": torch.randn(tasks, n, 1, generator=g),
                },
                "return_n": torch.randn(tasks, n, generator=g),
                "discount_n": torch.full((tasks, n), 0.99),
            },
            [tasks, n],
        )

    return [
        TensorDict({keys.META_RL: batch(3, 8), keys.CONTEXT: batch(3, 5)}, [3])
        for _ in range(n_updates)
    ]


@pytest.mark.parametrize("variant", ["v1", pytest.param("v2", marks=pytest.mark.slow)])
def test_compiled_pearl_meta_step_matches_eager(variant):
    """PEARL's batched meta-step (four optimizers, encoder, target) compiled = eager."""
    from tdrl.agents.qpg import PearlAgent
    from tdrl.algos.qpg import PEARL

    obs, act = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), gym.spaces.Box(-1, 1, (2,))
    pairs = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        agent = PearlAgent(
            latent_size=3, hidden_sizes=(8,), encoder_hidden_sizes=(8,), sac_variant=variant
        )
        agent.initialize(space_to_spec(obs), space_to_spec(act))
        # v1: no clip (oyster's; the norms alone, one foreach kernel); v2: clipped.
        clip = None if variant == "v1" else 1.0
        algo = PEARL(sac_variant=variant, compile=compile_, clip_grad_norm=clip)
        algo.initialize(agent)
        pairs.append((algo, agent))
    (eager, e_agent), (comp, c_agent) = pairs
    for k, batch in enumerate(_pearl_batches(3)):
        torch.manual_seed(10 + k)
        info_e = eager.update(batch.clone())
        torch.manual_seed(10 + k)
        info_c = comp.update(batch.clone())
        assert info_c.keys() == info_e.keys()
        for key in info_e:
            torch.testing.assert_close(info_c[key], info_e[key], **TOL, msg=key)
    c_state = c_agent.state_dict()
    assert c_state.keys() == e_agent.state_dict().keys()
    for name, value in e_agent.state_dict().items():
        torch.testing.assert_close(c_state[name], value, **TOL, msg=name)
    assert comp.update_counter == eager.update_counter == 3
