"""SAC_V: losses by hand on a two-sample batch, value target, checks."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_sac import ACTIONS, NEXT_OBS, OBS, RETURNS, FixedNoise, two_sample_batch
from torch.testing import assert_close

from tdrl.agents.qpg import SacAgent, SacVAgent
from tdrl.algos.qpg import SAC_V
from tdrl.envs import space_to_spec
from tdrl.samplers import BatchSpec


def make_agent(seed=0) -> SacVAgent:
    torch.manual_seed(seed)
    agent = SacVAgent(
        model_kwargs={"hidden_sizes": (8,)},
        q_model_kwargs={"hidden_sizes": (8, 8)},
        v_model_kwargs={"hidden_sizes": (8,)},
    )
    obs_box = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    act_box = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
    agent.initialize(space_to_spec(obs_box), space_to_spec(act_box))
    with torch.no_grad():  # a target that differs from the online value network
        for p in agent.target_v_model.parameters():
            p.add_(0.1)
    return agent


def make_algo(agent, **kwargs) -> SAC_V:
    kwargs.setdefault("replay_size", 64)
    algo = SAC_V(**kwargs)
    algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(1, 1))
    return algo


@pytest.mark.parametrize("reward_scale", [1.0, 5.0])
def test_losses_match_hand_computation(reward_scale, monkeypatch):
    torch.set_num_threads(1)
    agent = make_agent()
    algo = make_algo(agent, reward_scale=reward_scale, policy_output_regularization=0.1)
    before = copy.deepcopy(agent)
    noise = torch.tensor([[0.3, -1.2], [0.8, 0.1]])
    monkeypatch.setattr(torch, "randn_like", FixedNoise([noise]))
    info = algo.update(two_sample_batch())
    obs, next_obs = torch.tensor(OBS), torch.tensor(NEXT_OBS)
    actions, returns = torch.tensor(ACTIONS), torch.tensor(RETURNS)
    discounts = torch.tensor([0.0, 0.9])
    with torch.no_grad():
        # Critics: bootstrapped from the target value network.
        y = reward_scale * returns + discounts * before.target_v_model(next_obs)
        q = before.q_model(obs, actions)
        assert_close(info["loss_q"], (0.5 * ((q - y) ** 2).mean(1).sum()), atol=1e-5, rtol=0)
        # Value and actor: all networks as before the update (rlpyt's order).
        mean, log_std = before.model(obs)
        log_std = log_std.clamp(-20, 2)
        u = mean + log_std.exp() * noise
        log_pi = (
            torch.distributions.Normal(mean, log_std.exp()).log_prob(u)
            - torch.log(1 - torch.tanh(u) ** 2)
        ).sum(-1)
        new_action = torch.tanh(u) * agent.action_scale + agent.action_bias
        q_pi = before.q_model(obs, new_action).min(0).values
        v_target = q_pi - log_pi
        v = before.v_model(obs)
        assert_close(info["loss_v"], (0.5 * (v - v_target) ** 2).mean(), atol=1e-5, rtol=0)
        reg = 0.5 * (mean.pow(2).mean() + log_std.pow(2).mean())
        assert_close(info["loss_pi"], (log_pi - q_pi).mean() + 0.1 * reg, atol=1e-4, rtol=0)


def test_terminal_row_ignores_next_observation():
    agent = make_agent()
    algo = make_algo(agent)
    other = [[9.0, 9.0, 9.0], NEXT_OBS[1]]
    with torch.no_grad():
        v1 = agent.target_v(torch.tensor(NEXT_OBS))
        v2 = agent.target_v(torch.tensor(other))
    assert v1[0] != v2[0]  # the terminal row's next state differs ...
    a = copy.deepcopy(algo)
    b = copy.deepcopy(algo)
    # ... yet with discount 0 the critic loss is the same when only that row changes.
    torch.manual_seed(0)
    la = a.update(two_sample_batch())["loss_q"]
    torch.manual_seed(0)
    lb = b.update(two_sample_batch([other[0], NEXT_OBS[1]]))["loss_q"]
    assert_close(la, lb)
    torch.manual_seed(0)
    lc = copy.deepcopy(algo).update(two_sample_batch([NEXT_OBS[0], other[0]]))["loss_q"]
    assert not torch.allclose(la, lc)


def test_value_target_moves_by_tau():
    agent = make_agent()
    algo = make_algo(agent, target_update_tau=0.1)
    target_old = [p.detach().clone() for p in agent.target_v_model.parameters()]
    algo.update(two_sample_batch())
    for t_old, t_new, online in zip(
        target_old, agent.target_v_model.parameters(), agent.v_model.parameters(), strict=True
    ):
        assert_close(t_new, t_old + 0.1 * (online - t_old))


def test_checks():
    with pytest.raises(ValueError, match="policy_output_regularization"):
        SAC_V(policy_output_regularization=-1.0)
    obs_box = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    plain = SacAgent(model_kwargs={"hidden_sizes": (8,)})
    plain.initialize(space_to_spec(obs_box), space_to_spec(gym.spaces.Box(-1, 1, (2,))))
    with pytest.raises(TypeError, match="SacVAgent"):
        SAC_V().initialize(plain, n_itr=1, batch_spec=BatchSpec(1, 1))
    agent = make_agent()
    algo = make_algo(agent)
    state = algo.state_dict()
    assert [g["name"] for g in state["optimizer"]["param_groups"]] == ["pi", "q", "v"]
    make_algo(make_agent()).load_state_dict(state)
    with pytest.raises(KeyError, match="alpha"):
        algo.param_group("alpha")  # fixed temperature: no group
