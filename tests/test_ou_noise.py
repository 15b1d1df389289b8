"""Ornstein-Uhlenbeck exploration of ``DdpgAgent`` / ``Td3Agent`` (``exploration_noise="ou"``).

The process against a hand-written loop, its reset where an episode begins (the sampler
carries it like an LSTM state), evaluation without noise, every sampler path that carries
state (serial, CPU workers), replay storing only
transitions, and the argument checks. TorchRL's rollout through ``AgentPolicy``: the
``ddpg_ou`` case of ``tests/test_torchrl_policy.py``.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.testing import assert_close

from tdrl import keys
from tdrl.agents.qpg import DdpgAgent, Td3Agent
from tdrl.agents.qpg.ddpg_agent import OU_NOISE
from tdrl.algos.qpg import TD3
from tdrl.envs import space_to_spec
from tdrl.samplers import CpuSampler, SerialSampler
from tdrl.testing.envs import ContinuousIdentityEnv
from tdrl.utils.checks import ArgumentError

STATE = (keys.RNN_STATE, OU_NOISE)
NEXT_STATE = (*keys.NEXT_RNN_STATE, OU_NOISE)


def make_agent(cls=DdpgAgent, dim=2, seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs.setdefault("model_kwargs", {"hidden_sizes": (8,)})
    kwargs.setdefault("q_model_kwargs", {"hidden_sizes": (8,)})
    kwargs.setdefault("exploration_noise", "ou")
    agent = cls(**kwargs)
    box = gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
    agent.initialize(space_to_spec(box), space_to_spec(box))
    return agent


def test_ou_noise_follows_the_hand_written_process():
    theta, dt, std = 0.3, 0.05, 0.7
    agent = make_agent(action_std=std, ou_theta=theta, ou_dt=dt)
    agent.sample_mode(0)
    obs = torch.randn(3, 2)
    mu = agent.model(obs)
    state = agent.initial_rnn_state(3)
    assert_close(state.get(OU_NOISE), torch.zeros(3, 2))
    x = torch.zeros(3, 2)
    torch.manual_seed(5)
    for _ in range(4):
        action, info = agent.step(obs, torch.zeros(3, 2), torch.zeros(3), state)
        state = info[keys.NEXT_RNN_STATE]
    torch.manual_seed(5)
    for _ in range(4):
        x = x + theta * (0.0 - x) * dt + std * math.sqrt(dt) * torch.randn(3, 2)
    assert_close(state.get(OU_NOISE), x)
    assert_close(action, (mu + x).clamp(-1, 1))


def test_ou_noise_is_correlated_in_time_and_gaussian_noise_is_not():
    agent = make_agent(action_std=0.5)
    agent.sample_mode(0)
    obs, n = torch.zeros(4000, 2), 50
    state, xs = agent.initial_rnn_state(4000), []
    for _ in range(n):
        _, info = agent.step(obs, torch.zeros(4000, 2), torch.zeros(4000), state)
        state = info[keys.NEXT_RNN_STATE]
        xs.append(state.get(OU_NOISE)[:, 0])
    a, b = xs[-2], xs[-1]
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.9
    gaussian = make_agent(action_std=0.5, exploration_noise="gaussian")
    gaussian.sample_mode(0)
    assert not gaussian.recurrent and gaussian.initial_rnn_state(3) is None
    first, info = gaussian.step(obs, torch.zeros(4000, 2), torch.zeros(4000))
    second, _ = gaussian.step(obs, torch.zeros(4000, 2), torch.zeros(4000))
    assert info == {}
    assert abs(float(torch.corrcoef(torch.stack([first[:, 0], second[:, 0]]))[0, 1])) < 0.1


def test_evaluation_is_deterministic_and_leaves_the_state_alone():
    agent = make_agent(action_std=1.0)
    agent.eval_mode(0)
    obs = torch.randn(5, 2)
    state = agent.initial_rnn_state(5)
    state.set(OU_NOISE, torch.full((5, 2), 0.3))
    action, info = agent.step(obs, torch.zeros(5, 2), torch.zeros(5), state)
    assert_close(action, agent.model(obs))
    assert_close(info[keys.NEXT_RNN_STATE].get(OU_NOISE), torch.full((5, 2), 0.3))


def test_pretrain_std_drives_the_process_before_learning():
    agent = make_agent(cls=Td3Agent, action_std=0.0)  # Td3Agent: pretrain_std 0.5
    agent.set_pretrain_itr(1)
    agent.sample_mode(0)
    obs = torch.zeros(100, 2)
    _, info = agent.step(obs, torch.zeros(100, 2), torch.zeros(100))
    assert float(info[keys.NEXT_RNN_STATE].get(OU_NOISE).std()) > 0.02  # 0.5 * sqrt(0.01)
    agent.sample_mode(1)
    _, info = agent.step(obs, torch.zeros(100, 2), torch.zeros(100))
    assert float(info[keys.NEXT_RNN_STATE].get(OU_NOISE).abs().max()) == 0.0  # std 0


def _check_batch(samples):
    """Each step starts from the last step's process, or from 0 where an episode began."""
    state, nxt = samples.get(STATE), samples.get(NEXT_STATE)
    begins = torch.zeros(samples.batch_size, dtype=torch.bool)
    begins[1:] = samples.get((keys.NEXT, keys.DONE))[:-1, :, 0]
    assert bool(begins.any())
    assert_close(state[begins], torch.zeros_like(state[begins]))
    assert_close(state[1:][~begins[1:]], nxt[:-1][~begins[1:]])
    assert float(nxt.abs().min()) > 0.0  # every step drew noise


@pytest.mark.parametrize("sampler_cls", [SerialSampler, CpuSampler])
def test_the_samplers_carry_the_process_and_reset_it_where_an_episode_begins(sampler_cls):
    agent = make_agent(action_std=0.5)
    extra = {"n_workers": 2} if sampler_cls is CpuSampler else {}
    sampler = sampler_cls(
        ContinuousIdentityEnv,
        {"dim": 2, "episode_length": 4},
        batch_T=10,
        batch_B=2,
        max_decorrelation_steps=0,
        **extra,
    )
    sampler.initialize(agent, seed=0)
    try:
        agent.sample_mode(0)
        first, _ = sampler.obtain_samples(0)
        _check_batch(first)
        first_last = first.get(NEXT_STATE)[-1].clone()
        second, _ = sampler.obtain_samples(1)
        _check_batch(second)
        carried = ~first.get((keys.NEXT, keys.DONE))[-1, :, 0]
        assert_close(second.get(STATE)[0][carried], first_last[carried])
    finally:
        sampler.shutdown()


def test_td3_replays_transitions_only_and_updates():
    agent = make_agent(cls=Td3Agent, action_std=0.5)
    sampler = SerialSampler(
        ContinuousIdentityEnv, {"dim": 2}, batch_T=8, batch_B=2, max_decorrelation_steps=0
    )
    sampler.initialize(agent, seed=0)
    algo = TD3(min_steps_learn=16, batch_size=8, replay_size=64, replay_ratio=8)
    algo.initialize(agent, n_itr=4, batch_spec=sampler.batch_spec)
    before = [p.clone() for p in agent.q_model.parameters()]
    try:
        for itr in range(3):
            agent.sample_mode(itr)
            samples, _ = sampler.obtain_samples(itr)
            agent.train_mode(itr)
            info = algo.optimize_agent(itr, samples)
    finally:
        sampler.shutdown()
    assert info["loss_q"]
    assert any(
        not torch.equal(a, b) for a, b in zip(before, agent.q_model.parameters(), strict=True)
    )
    batch = algo.replay_buffer.sample_batch(4)
    assert keys.RNN_STATE not in batch


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"exploration_noise": "OU"}, "exploration_noise"),
        ({"exploration_noise": "ou", "ou_theta": -0.1}, "ou_theta"),
        ({"exploration_noise": "ou", "ou_dt": 0.0}, "ou_dt"),
    ],
)
def test_bad_ou_arguments_are_refused_by_name(kwargs, name):
    with pytest.raises(ArgumentError, match=name):
        DdpgAgent(**kwargs)
