"""Every algorithm keeps the declared contracts (``tdrl.algos.base``).

* ``loss(batch)`` is pure: it changes neither the batch nor any parameter, buffer or
  optimizer state, and returns ``loss`` with gradient plus detached diagnostics;
* ``update(batch)`` (replay algorithms) is ``loss`` plus an optimizer step: with the same
  random draws its ``loss`` equals what ``loss(batch)`` gave before it, and it moves the
  parameters;
* every diagnostic name is in the one vocabulary, ``DIAGNOSTICS``;
* replay algorithms satisfy ``ReplayAlgorithm``; the policy-gradient agents ``PgAgent``;
* every algorithm takes ``compile`` (off by default) and every replay algorithm
  ``replay_device`` (None: the CPU), keyword-only.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from tdrl import keys
from tdrl.agents import (
    Agent,
    CategoricalPgAgent,
    DdpgAgent,
    DqnAgent,
    GaussianPgAgent,
    PgAgent,
    SacAgent,
    SacVAgent,
    Td3Agent,
)
from tdrl.algos import (
    A2C,
    DDPG,
    DIAGNOSTICS,
    DQN,
    PPO,
    R2D1,
    SAC,
    SAC_V,
    TD3,
    CategoricalDQN,
    ReplayAlgorithm,
)
from tdrl.algos.pg.base import process_returns
from tdrl.envs import space_to_spec
from tdrl.keys import BatchSpec

N = 16
OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
DISCRETE = gym.spaces.Discrete(3)
BOX = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
SMALL = {"hidden_sizes": (8,)}
REPLAY = {"replay_size": 64, "min_steps_learn": 0}


def _replay_setups():
    """``(name, algo, agent, action space)`` of every replay algorithm, tiny networks."""
    return [
        ("dqn", DQN(**REPLAY, double_dqn=True), DqnAgent(model_kwargs=SMALL), DISCRETE),
        (
            "catdqn",
            CategoricalDQN(**REPLAY, prioritized_replay=True),
            DqnAgent(n_atoms=5, model_kwargs=SMALL),
            DISCRETE,
        ),
        ("ddpg", DDPG(**REPLAY), DdpgAgent(model_kwargs=SMALL, q_model_kwargs=SMALL), BOX),
        ("td3", TD3(**REPLAY), Td3Agent(model_kwargs=SMALL, q_model_kwargs=SMALL), BOX),
        ("sac", SAC(**REPLAY), SacAgent(model_kwargs=SMALL, q_model_kwargs=SMALL), BOX),
        (
            "sac_v",
            SAC_V(**REPLAY),
            SacVAgent(model_kwargs=SMALL, q_model_kwargs=SMALL, v_model_kwargs=SMALL),
            BOX,
        ),
    ]


REPLAY_NAMES = [s[0] for s in _replay_setups()]


def _setup(name):
    for n, algo, agent, space in _replay_setups():
        if n == name:
            torch.manual_seed(0)
            agent.initialize(space_to_spec(OBS), space_to_spec(space))
            algo.initialize(agent, n_itr=10, batch_spec=BatchSpec(4, 2))
            return algo, agent, space
    raise KeyError(name)


def _action(space, n):
    if isinstance(space, gym.spaces.Discrete):
        return torch.randint(space.n, (n,))
    low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
    return low + (high - low) * torch.rand(n, *space.shape)


def _replay_batch(space, n=N) -> TensorDict:
    """A random batch with the keys ``ReplayBuffer.sample_batch`` returns."""
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)

    def inputs():
        return {
            keys.OBSERVATION: torch.rand(n, *OBS.shape, generator=g) * 2 - 1,
            keys.PREV_ACTION: _action(space, n),
            keys.PREV_REWARD: torch.randn(n, 1, generator=g),
        }

    return TensorDict(
        {
            **inputs(),
            keys.ACTION: _action(space, n),
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


def _state(algo, agent):
    """Every tensor the update may change: the agent's state, optimizer state, temperature."""
    out = {f"agent.{k}": v.detach().clone() for k, v in agent.state_dict().items()}
    for k, v in algo.state_dict().items():
        if isinstance(v, torch.Tensor):
            out[f"algo.{k}"] = v.detach().clone()
    return out


def _assert_vocabulary(names, where):
    unknown = set(names) - set(DIAGNOSTICS)
    assert not unknown, f"{where} returns names outside DIAGNOSTICS: {sorted(unknown)}"


@pytest.mark.parametrize("name", REPLAY_NAMES)
def test_replay_algorithm_loss_is_pure_and_update_is_loss_plus_step(name):
    algo, agent, space = _setup(name)
    assert isinstance(algo, ReplayAlgorithm)
    batch = _replay_batch(space)
    batch_before = batch.clone()
    before = _state(algo, agent)

    torch.manual_seed(7)
    terms = algo.loss(batch)
    assert terms["loss"].requires_grad and torch.isfinite(terms["loss"])
    assert [k for k in terms.keys() if k.startswith("loss")], name  # noqa: SIM118
    for key, value in terms.items():
        if key != "loss" and not key.startswith("loss_"):
            assert not value.requires_grad, f"{name}: diagnostic {key} is not detached"
    _assert_vocabulary(terms.keys(), f"{name}.loss")
    for key, value in _state(algo, agent).items():  # nothing moved
        assert torch.equal(value, before[key]), f"{name}.loss changed {key}"
    assert (batch == batch_before).all()

    # update = loss + step: with the same draws, its loss terms are loss(batch)'s (DDPG
    # and TD3 take the actor's term after the critic step, rlpyt's order: their critic
    # term is compared).
    torch.manual_seed(7)
    info = algo.update(batch)
    _assert_vocabulary(info.keys(), f"{name}.update")
    staged = ("loss_pi",) if name in ("ddpg", "td3") else ()
    loss_terms = terms.keys()  # iterating a TensorDict walks its batch dim, not its keys
    compared = [k for k in loss_terms if k.startswith("loss_") and k not in staged]
    assert compared or "loss" in info, name
    for key in compared:
        assert torch.allclose(info[key], terms[key].detach()), (name, key)
    if "loss" in info and not staged:
        assert torch.allclose(info["loss"], terms["loss"].detach()), name
    moved = [k for k, v in _state(algo, agent).items() if not torch.equal(v, before[k])]
    assert any(k.startswith("agent.model.") for k in moved) or name in ("ddpg", "td3"), moved
    assert algo.update_counter == 1
    assert (batch == batch_before).all()


@pytest.mark.parametrize("name", REPLAY_NAMES)
def test_replay_algorithm_diagnostics_stay_in_the_vocabulary(name):
    algo, agent, space = _setup(name)
    samples = _sampler_batch(agent, space, BatchSpec(4, 2))
    info = {}
    for itr in range(3):
        info.update(algo.optimize_agent(itr, samples))
    assert info, name
    _assert_vocabulary(info.keys(), f"{name}.optimize_agent")
    assert all(isinstance(v, list) and v for v in info.values())


def _sampler_batch(agent: Agent, space, spec: BatchSpec) -> TensorDict:
    """A ``[T, B]`` sampler batch with random env data and the agent's own step info."""
    T, B = spec
    torch.manual_seed(3)
    obs = torch.rand(T + 1, B, *OBS.shape) * 2 - 1
    agent.sample_mode(0)
    action, info = agent.step(obs[0], _action(space, B), torch.zeros(B, 1))
    done = torch.rand(T, B, 1) < 0.2
    td = TensorDict(
        {
            keys.OBSERVATION: obs[:-1],
            keys.PREV_ACTION: torch.stack([_action(space, B) for _ in range(T)]),
            keys.PREV_REWARD: torch.randn(T, B, 1),
            keys.ACTION: torch.stack([_action(space, B) for _ in range(T)]).to(action.dtype),
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
    for key, value in info.items():
        td.set(key, value.expand(T, *value.shape).clone())
    return td


@pytest.mark.parametrize("algo_cls", [A2C, PPO])
@pytest.mark.parametrize("agent_cls", [CategoricalPgAgent, GaussianPgAgent])
def test_pg_algorithm_contracts(algo_cls, agent_cls):
    space = DISCRETE if agent_cls is CategoricalPgAgent else BOX
    torch.manual_seed(0)
    agent = agent_cls(model_kwargs={"hidden_sizes": (8,)})
    agent.initialize(space_to_spec(OBS), space_to_spec(space))
    assert isinstance(agent, PgAgent)
    algo = algo_cls()
    algo.initialize(agent, n_itr=4, batch_spec=BatchSpec(4, 2))
    assert not isinstance(algo, ReplayAlgorithm)
    samples = _sampler_batch(agent, space, BatchSpec(4, 2))
    batch = process_returns(
        agent, samples, discount=0.99, gae_lambda=0.95, normalize_advantage=True
    )
    before = _state(algo, agent)
    terms = algo.loss(batch)
    _assert_vocabulary(terms.keys(), f"{algo_cls.__name__}.loss")
    assert all(torch.equal(v, before[k]) for k, v in _state(algo, agent).items())
    info = algo.optimize_agent(0, samples)
    _assert_vocabulary(info.keys(), f"{algo_cls.__name__}.optimize_agent")
    assert "grad_norm" in info and "loss" in info


def test_algorithms_refuse_agents_they_cannot_train():
    pg = CategoricalPgAgent()
    pg.initialize(space_to_spec(OBS), space_to_spec(DISCRETE))
    for algo in (DQN(**REPLAY), DDPG(**REPLAY), SAC(**REPLAY), SAC_V(**REPLAY)):
        with pytest.raises(TypeError, match=type(algo).__name__):
            algo.initialize(pg, n_itr=1, batch_spec=BatchSpec(1, 1))
    dqn = DqnAgent(model_kwargs=SMALL)
    dqn.initialize(space_to_spec(OBS), space_to_spec(DISCRETE))
    for algo in (A2C(), PPO(minibatches=1)):
        with pytest.raises(TypeError, match="policy-gradient agent"):
            algo.initialize(dqn, n_itr=1, batch_spec=BatchSpec(1, 1))
    sac = SacAgent(model_kwargs=SMALL, q_model_kwargs=SMALL)
    sac.initialize(space_to_spec(OBS), space_to_spec(BOX))
    with pytest.raises(TypeError, match="SacVAgent"):
        SAC_V(**REPLAY).initialize(sac, n_itr=1, batch_spec=BatchSpec(1, 1))
    sac_v = copy.deepcopy(SacVAgent(model_kwargs=SMALL, q_model_kwargs=SMALL))
    sac_v.initialize(space_to_spec(OBS), space_to_spec(BOX))
    with pytest.raises(TypeError, match="SacAgent"):
        SAC(**REPLAY).initialize(sac_v, n_itr=1, batch_spec=BatchSpec(1, 1))


def test_presets_are_their_base_with_the_preset_defaults():
    td3 = Td3Agent()
    assert type(td3) is DdpgAgent and td3.n_q == 2 and td3.pretrain_std == 0.5
    sac_v = SacVAgent()
    assert type(sac_v) is SacAgent and sac_v.value_network
    assert TD3().batch_size == 100 and TD3().policy_update_interval == 2
    assert DDPG().batch_size == 64 and DDPG().policy_update_interval == 1


@pytest.mark.parametrize("algo_cls", [A2C, PPO, DQN, CategoricalDQN, R2D1, DDPG, TD3, SAC, SAC_V])
def test_every_algorithm_takes_compile_and_replay_algorithms_replay_device(algo_cls):
    import inspect

    params = inspect.signature(algo_cls).parameters
    assert params["compile"].default is False
    assert params["compile"].kind is inspect.Parameter.KEYWORD_ONLY
    assert algo_cls().compile is False
    if algo_cls not in (A2C, PPO):
        assert params["replay_device"].default is None
        assert params["replay_device"].kind is inspect.Parameter.KEYWORD_ONLY
        assert algo_cls().replay.replay_device is None
