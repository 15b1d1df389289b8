"""DDPG and TD3: losses against a hand computation, TD3's target smoothing, twin critics
and delayed updates, the two learning rates, the agent's exploration, argument checks,
the schedule and state round trips.

Hand-checked batches are TensorDicts with the keys ``ReplayBuffer.sample_batch`` returns.
"""

from __future__ import annotations

import copy
import io

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torch.testing import assert_close

from tdrl import keys
from tdrl.agents.qpg import DdpgAgent, SacAgent, Td3Agent
from tdrl.algos.qpg import DDPG, TD3
from tdrl.envs import space_to_spec
from tdrl.keys import DISCOUNT_N, DONE_N, INDEX, IS_WEIGHT, RETURN_N, STEPS_N
from tdrl.samplers import BatchSpec, SerialSampler
from tdrl.testing.envs import ContinuousIdentityEnv


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------- helpers
OBS_DIM = 3
LOW, HIGH = [-2.0, 0.0], [2.0, 1.0]  # non-symmetric bounds: scale (2, 0.5), bias (0, 0.5)


class ConstMu(nn.Module):
    """Actor with a learnable constant ``[-1, 1]`` output whatever the observation."""

    def __init__(self, value=(0.0, 0.0)):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value, dtype=torch.float32))

    def forward(self, observation, prev_action=None, prev_reward=None):
        return self.value.expand(*observation.shape[:-1], -1)


def make_agent(cls=DdpgAgent, *, model=None, low=LOW, high=HIGH, seed=0, **kwargs):
    torch.manual_seed(seed)
    if model is None:
        kwargs.setdefault("model_kwargs", {"hidden_sizes": (8,)})
    kwargs.setdefault("q_model_kwargs", {"hidden_sizes": (8, 8)})
    agent = cls(model=model, **kwargs)
    obs_box = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    act_box = gym.spaces.Box(np.array(low, np.float32), np.array(high, np.float32))
    agent.initialize(space_to_spec(obs_box), space_to_spec(act_box))
    return agent


def make_algo(agent, cls=DDPG, **kwargs):
    kwargs.setdefault("replay_size", 64)
    algo = cls(**kwargs)
    algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(1, 1))
    return algo


GAMMA = 0.9
OBS = [[0.5, -1.0, 0.3], [-0.2, 0.4, 1.1]]
NEXT_OBS = [[1.0, 0.2, -0.7], [0.3, -0.6, 0.8]]
ACTIONS = [[1.5, 0.2], [-0.7, 0.9]]  # env-space actions
RETURNS = [3.0, -0.5]  # row 0's target (3) exceeds the small q_target_clip below
DISCOUNTS = [0.0, GAMMA]  # row 0 terminal, row 1 non-terminal
WEIGHTS = [0.5, 2.0]


def two_sample_batch() -> TensorDict:
    obs = torch.tensor(OBS)
    action = torch.tensor(ACTIONS)
    discount = torch.tensor(DISCOUNTS)

    def inputs(o):
        return {
            keys.OBSERVATION: torch.as_tensor(o, dtype=torch.float32),
            keys.PREV_ACTION: torch.zeros_like(action),
            keys.PREV_REWARD: torch.zeros(2),
        }

    return TensorDict(
        {
            **inputs(obs),
            keys.ACTION: action,
            keys.NEXT: TensorDict(inputs(NEXT_OBS), batch_size=[2]),
            RETURN_N: torch.tensor(RETURNS),
            DISCOUNT_N: discount,
            DONE_N: discount == 0,
            STEPS_N: torch.ones(2, dtype=torch.long),
            IS_WEIGHT: torch.tensor(WEIGHTS),
            INDEX: torch.arange(2),
        },
        batch_size=[2],
    )


class FixedNoise:
    """Replaces ``torch.randn_like`` with a fixed noise vector (broadcast over rows)."""

    def __init__(self, noise):
        self.noise = torch.as_tensor(noise, dtype=torch.float32)
        self.calls = 0

    def __call__(self, like, *args, **kwargs):
        self.calls += 1
        return self.noise.to(like.dtype).expand_as(like).clone()


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def all_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------- 1. DDPG hand computation
@pytest.mark.parametrize("n_q", [1, 2])
def test_ddpg_losses_match_hand_computation(n_q):
    agent = make_agent(n_q=n_q)
    clip = 2.0
    algo = make_algo(agent, discount=GAMMA, q_target_clip=clip, learning_rate=1e-2)
    batch = two_sample_batch()
    old_actor = copy.deepcopy(agent.model)
    old_q = copy.deepcopy(agent.q_model)
    obs, next_obs = batch[keys.OBSERVATION], batch[keys.NEXT_OBSERVATION]

    with torch.no_grad():
        next_action = agent.to_env(agent.target_model(next_obs))  # DDPG: no smoothing noise
        next_q = agent.target_q_model(next_obs, next_action).min(0).values
        raw = torch.tensor(RETURNS) + torch.tensor(DISCOUNTS) * next_q
        y = raw.clamp(-clip, clip)
    assert raw[0] == 3.0 and y[0] == clip  # terminal row ignores o' and is clipped
    q = old_q(obs, batch[keys.ACTION])
    assert q.shape == (n_q, 2)
    expected_q = 0.5 * ((q - y) ** 2 * torch.tensor(WEIGHTS)).mean(1).sum()

    info = algo.update(batch)
    assert_close(info["loss_q"], expected_q.detach(), atol=1e-5, rtol=1e-5)
    # The actor loss uses the critic after its step and the actor before its step.
    assert not all_equal(params(old_q), params(agent.q_model))
    with torch.no_grad():
        expected_mu = -agent.q_model(obs, agent.to_env(old_actor(obs)))[0].mean()
        stale_mu = -old_q(obs, agent.to_env(old_actor(obs)))[0].mean()
    assert_close(info["loss_pi"], expected_mu, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(expected_mu, stale_mu, atol=1e-5, rtol=1e-5)


def test_ddpg_target_uses_no_smoothing_noise(monkeypatch):
    agent = make_agent()
    algo = make_algo(agent, discount=GAMMA)
    noise = FixedNoise([5.0, -5.0])
    monkeypatch.setattr(torch, "randn_like", noise)
    algo.update(two_sample_batch())
    assert noise.calls == 0


# ---------------------------------------------------------------- 2. TD3 target smoothing
def test_td3_target_mu_smoothing_clips_noise_and_action(monkeypatch):
    agent = make_agent(Td3Agent, model=ConstMu((0.8, -0.3)))
    next_obs = torch.tensor(NEXT_OBS)
    monkeypatch.setattr(torch, "randn_like", FixedNoise([10.0, -10.0]))
    a = agent.target_mu(next_obs, TD3().target_noise_std, TD3().target_noise_clip)
    # [-1, 1] space: 0.8 + 0.5 -> 1.0 (outer clip), -0.3 - 0.5 -> -0.8; env: (2, 0.1).
    assert_close(a, torch.tensor([[2.0, 0.1], [2.0, 0.1]]))

    default = make_agent(Td3Agent)  # MLP actor
    with torch.no_grad():
        mu = default.target_model(next_obs)
    got = default.target_mu(next_obs, 0.2, 0.5)
    expected = default.to_env((mu + torch.tensor([0.5, -0.5])).clamp(-1.0, 1.0))
    assert_close(got, expected)
    assert not torch.allclose(got, default.to_env(mu))


def test_td3_critic_target_is_min_of_twin_targets_with_smoothed_action(monkeypatch):
    agent = make_agent(Td3Agent)
    algo = make_algo(agent, TD3, discount=GAMMA)
    assert algo.target_noise_std == 0.2 and algo.target_noise_clip == 0.5
    batch = two_sample_batch()
    obs, next_obs = batch[keys.OBSERVATION], batch[keys.NEXT_OBSERVATION]
    noise = torch.tensor([10.0, -10.0])
    with torch.no_grad():
        next_action = agent.to_env((agent.target_model(next_obs) + noise.sign() * 0.5).clamp(-1, 1))
        next_qs = agent.target_q_model(next_obs, next_action)
        q = agent.q_model(obs, batch[keys.ACTION])
    assert next_qs.shape == (2, 2) and not torch.allclose(next_qs[0], next_qs[1])
    w = torch.tensor(WEIGHTS)

    def loss_with(next_q):
        y = torch.tensor(RETURNS) + torch.tensor(DISCOUNTS) * next_q
        return 0.5 * ((q - y) ** 2 * w).mean(1).sum()

    expected = loss_with(next_qs.min(0).values)
    for wrong in (next_qs.max(0).values, next_qs[0], next_qs[1]):
        if not torch.equal(wrong, next_qs.min(0).values):
            assert not torch.allclose(loss_with(wrong), expected, atol=1e-5, rtol=1e-5)
    fixed = FixedNoise(noise)
    monkeypatch.setattr(torch, "randn_like", fixed)
    info = algo.update(batch)
    assert fixed.calls == 1
    assert_close(info["loss_q"], expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- 3. delayed updates
def test_td3_delayed_actor_and_target_updates():
    agent = make_agent(Td3Agent)
    algo = make_algo(agent, TD3, discount=GAMMA)
    assert algo.policy_update_interval == 2 and algo.target_update_interval == 2
    tau = algo.target_update_tau
    assert tau == 0.005
    batch = two_sample_batch()
    actor0, critic0 = params(agent.model), params(agent.q_model)
    t_actor0, t_critic0 = params(agent.target_model), params(agent.target_q_model)

    info1 = algo.update(batch)
    assert "loss_pi" not in info1
    assert all_equal(params(agent.model), actor0)
    assert not all_equal(params(agent.q_model), critic0)
    assert all_equal(params(agent.target_model), t_actor0)
    assert all_equal(params(agent.target_q_model), t_critic0)

    info2 = algo.update(batch)
    assert "loss_pi" in info2
    actor2, critic2 = params(agent.model), params(agent.q_model)
    assert not all_equal(actor2, actor0)
    for old, new, target in (
        (t_actor0, actor2, agent.target_model),
        (t_critic0, critic2, agent.target_q_model),
    ):
        for o, n, t in zip(old, new, params(target), strict=True):
            assert_close(t, o + tau * (n - o), atol=1e-7, rtol=1e-6)
        assert not all_equal(params(target), old)


# ---------------------------------------------------------------- 4. learning rates
def test_both_learning_rates_honoured():
    agent = make_agent()
    algo = make_algo(agent, learning_rate=3e-4, q_learning_rate=2e-3)
    assert algo.mu_optimizer.param_groups[0]["lr"] == 3e-4
    assert algo.q_optimizer.param_groups[0]["lr"] == 2e-3
    batch = two_sample_batch()

    for mu_lr, q_lr in ((0.0, 1e-2), (1e-2, 0.0)):
        agent = make_agent()
        algo = make_algo(agent, learning_rate=mu_lr, q_learning_rate=q_lr)
        actor0, critic0 = params(agent.model), params(agent.q_model)
        info = algo.update(batch)
        assert "loss_pi" in info
        assert all_equal(params(agent.model), actor0) == (mu_lr == 0)
        assert all_equal(params(agent.q_model), critic0) == (q_lr == 0)


# ---------------------------------------------------------------- 5. exploration
N = 20_000


def step_many(agent, n=N):
    obs = torch.randn(n, OBS_DIM)
    action, _ = agent.step(obs, torch.zeros(n, 2), torch.zeros(n))
    return action


def test_exploration_noise_std_in_env_space():
    agent = make_agent(model=ConstMu((0.0, 0.0)), action_std=0.1, low=[-2, -2], high=[2, 2])
    agent.sample_mode(0)
    torch.manual_seed(1)
    action = step_many(agent)
    assert action.mean(0).abs().max() < 0.01
    assert_close(action.std(0), torch.full((2,), 0.2), atol=0.006, rtol=0)


def test_pretrain_std_before_pretrain_itr():
    agent = make_agent(
        model=ConstMu((0.0, 0.0)), action_std=0.1, pretrain_std=0.3, low=[-2, -2], high=[2, 2]
    )
    agent.set_pretrain_itr(3)
    torch.manual_seed(2)
    for itr, std in ((0, 0.6), (2, 0.6), (3, 0.2), (7, 0.2)):
        agent.sample_mode(itr)
        assert_close(step_many(agent).std(0), torch.full((2,), std), atol=0.02, rtol=0)
    assert Td3Agent().pretrain_std == 0.5


def test_action_noise_clip_bounds_noise():
    agent = make_agent(
        model=ConstMu((0.2, -0.4)),
        action_std=1.0,
        action_noise_clip=0.05,
        low=[-2, -2],
        high=[2, 2],
    )
    agent.sample_mode(0)
    torch.manual_seed(3)
    action = step_many(agent)
    center = torch.tensor([0.4, -0.8])
    dev = (action - center).abs()
    assert dev.max() <= 0.1 + 1e-6
    assert dev.max() > 0.099  # the clip is reached (std 1 >> clip)


def test_eval_mode_is_deterministic():
    agent = make_agent(action_std=0.5)
    agent.eval_mode(0)
    obs = torch.randn(50, OBS_DIM)
    prev = torch.zeros(50, 2), torch.zeros(50)
    a1, _ = agent.step(obs, *prev)
    a2, _ = agent.step(obs, *prev)
    assert torch.equal(a1, a2)
    with torch.no_grad():
        assert_close(a1, agent.to_env(agent.model(obs)))
    agent.sample_mode(0)
    assert not torch.equal(agent.step(obs, *prev)[0], a1)


@pytest.mark.parametrize("cls", [DdpgAgent, Td3Agent])
def test_actions_within_asymmetric_bounds(cls):
    low, high = torch.tensor(LOW), torch.tensor(HIGH)
    agent = make_agent(cls, action_std=5.0)
    agent.sample_mode(0)
    torch.manual_seed(4)
    action = step_many(agent, 4000)
    assert ((action >= low) & (action <= high)).all()
    # Large noise saturates: both ends of both dimensions are reached exactly.
    assert torch.equal(action.min(0).values, low) and torch.equal(action.max(0).values, high)
    saturated = make_agent(cls, model=ConstMu((1.0, -1.0)), action_std=0.0)
    saturated.sample_mode(0)
    assert_close(step_many(saturated, 5), torch.tensor([[2.0, 0.0]] * 5))


# ---------------------------------------------------------------- 6. type checks
def test_td3_requires_twin_critics():
    with pytest.raises(TypeError, match="twin"):
        TD3().initialize(make_agent(DdpgAgent), n_itr=1, batch_spec=BatchSpec(1, 1))
    # DdpgAgent(n_q=2) is accepted.
    make_algo(make_agent(DdpgAgent, n_q=2), TD3)
    sac_agent = SacAgent(model_kwargs={"hidden_sizes": (8,)})
    obs_box = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    act_box = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    sac_agent.initialize(space_to_spec(obs_box), space_to_spec(act_box))
    with pytest.raises(TypeError, match="SacAgent"):
        DDPG().initialize(sac_agent, n_itr=1, batch_spec=BatchSpec(1, 1))


# ---------------------------------------------------------------- 7. bad arguments
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"discount": 2}, "discount"),
        ({"batch_size": 0}, "batch_size"),
        ({"policy_update_interval": 0}, "policy_update_interval"),
        ({"target_update_interval": 0}, "target_update_interval"),
        ({"q_learning_rate": -1}, "q_learning_rate"),
        ({"learning_rate": -1}, "learning_rate"),
        ({"target_noise_clip": 0}, "target_noise_clip"),
        ({"target_update_tau": 0.0}, "target_update_tau"),
        ({"replay_storage": "disk"}, "replay_storage"),
    ],
)
def test_ddpg_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DDPG(**kwargs)
    with pytest.raises(ValueError, match=name):
        TD3(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"action_std": -1}, "action_std"),
        ({"n_q": 0}, "n_q"),
        ({"action_noise_clip": 0}, "action_noise_clip"),
        ({"pretrain_std": -0.1}, "pretrain_std"),
    ],
)
def test_agent_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DdpgAgent(**kwargs)


# ---------------------------------------------------------------- 8. schedule and state
def test_schedule_min_steps_and_updates_per_itr():
    torch.manual_seed(0)
    T, B, batch_size, replay_ratio = 4, 2, 5, 3
    agent = Td3Agent(model_kwargs={"hidden_sizes": (8,)}, q_model_kwargs={"hidden_sizes": (8,)})
    algo = TD3(
        min_steps_learn=16, replay_ratio=replay_ratio, batch_size=batch_size, replay_size=256
    )
    sampler = SerialSampler(
        ContinuousIdentityEnv, {"dim": 2}, batch_T=T, batch_B=B, max_decorrelation_steps=0
    )
    sampler.initialize(agent, seed=0)
    algo.initialize(agent, n_itr=10, batch_spec=sampler.batch_spec)
    assert agent.pretrain_itr == 2
    expected = round(replay_ratio * T * B / batch_size)  # 5
    try:
        for itr in range(5):
            agent.sample_mode(itr)
            assert agent._pretraining == (itr < 2)
            samples, _ = sampler.obtain_samples(itr)
            agent.train_mode(itr)
            info = algo.optimize_agent(itr, samples)
            if itr < 2:
                assert info == {} and algo.update_counter == 0
            else:
                assert len(info["loss_q"]) == expected
                assert algo.update_counter == expected * (itr - 1)
                # Actor updates every second critic update, counted across iterations.
                before = expected * (itr - 2)
                assert len(info["loss_pi"]) == algo.update_counter // 2 - before // 2
    finally:
        sampler.shutdown()


def serialise(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def make_pair(seed):
    agent = make_agent(Td3Agent, seed=seed)
    return agent, make_algo(agent, TD3, discount=GAMMA, learning_rate=1e-2, q_learning_rate=1e-2)


def test_state_dict_round_trip_gives_identical_next_update():
    batch = two_sample_batch()
    agent, algo = make_pair(seed=0)
    for s in range(3):
        torch.manual_seed(s)
        algo.update(batch)
    agent_state, algo_state = serialise(agent.state_dict()), serialise(algo.state_dict())
    assert algo_state["update_counter"] == 3

    torch.manual_seed(3)
    info = algo.update(batch)  # the 4th update also moves the actor and the targets
    assert "loss_pi" in info

    agent2, algo2 = make_pair(seed=1)
    agent2.load_state_dict(agent_state)
    algo2.load_state_dict(algo_state)
    torch.manual_seed(3)
    info2 = algo2.update(batch)
    assert info.keys() == info2.keys()
    for key in info:
        assert torch.equal(info[key], info2[key]), key
    state, state2 = agent.state_dict(), agent2.state_dict()
    assert state.keys() == state2.keys()
    assert any("target" in k for k in state)
    for name in state:
        assert torch.equal(state[name], state2[name]), name
    assert algo2.update_counter == 4


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 203 s measured on a busy 2-core machine
def test_td3_pendulum_reaches_minus_200_within_10k_steps():
    """Documented Pendulum config: TD3 defaults with batch 256 (replay ratio 256, as SB3's
    TD3), warm-up 1,000 steps; measured -155 at 10k steps for seed 0."""
    from tdrl.runners import MinibatchRlEval

    torch.set_num_threads(1)
    sampler = SerialSampler(
        env_kwargs={"id": "Pendulum-v1"},
        batch_T=100,
        batch_B=1,
        max_decorrelation_steps=0,
        eval_n_envs=2,
        eval_max_trajectories=4,
        eval_max_steps=2000,
    )
    algo = TD3(min_steps_learn=1000, batch_size=256, replay_ratio=256)
    runner = MinibatchRlEval(
        algo, Td3Agent(), sampler, n_steps=10_000, seed=0, log_interval_steps=2000,
        progress_bar=False,
    )  # fmt: skip
    row = runner.train()
    assert row["ReturnAverage"] >= -200
