"""SAC: the squashed-Gaussian log-density, the agent's actions, the update against a hand
computation, target / temperature / optimizer separation, the schedule, state round trips,
argument checks and (slow) learning Pendulum.

Hand-checked batches are TensorDicts with the keys ``ReplayBuffer.sample_batch`` returns.
"""

from __future__ import annotations

import copy
import io
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torch.testing import assert_close

from tdrl import keys
from tdrl.agents.dqn import DqnAgent
from tdrl.agents.qpg import SacAgent
from tdrl.agents.qpg.squashed_gaussian import squashed_gaussian_sample
from tdrl.algos.qpg import SAC
from tdrl.envs import space_to_spec
from tdrl.keys import DISCOUNT_N, DONE_N, INDEX, IS_WEIGHT, RETURN_N, STEPS_N
from tdrl.runners import MinibatchRlEval
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


class ConstPi(nn.Module):
    """Policy with learnable constant ``(mean, log_std)`` whatever the observation."""

    def __init__(self, action_size: int = 2, mean: float = 0.0, log_std: float = 0.0):
        super().__init__()
        self.mean = nn.Parameter(torch.full((action_size,), float(mean)))
        self.log_std = nn.Parameter(torch.full((action_size,), float(log_std)))

    def forward(self, observation, prev_action=None, prev_reward=None):
        lead = observation.shape[:-1]
        return self.mean.expand(*lead, -1), self.log_std.expand(*lead, -1)


def make_agent(model=None, *, low=LOW, high=HIGH, obs_dim=OBS_DIM, seed=0, **kwargs) -> SacAgent:
    torch.manual_seed(seed)
    kwargs.setdefault("model_kwargs", {} if model is not None else {"hidden_sizes": (8,)})
    kwargs.setdefault("q_model_kwargs", {"hidden_sizes": (8, 8)})
    agent = SacAgent(model=model, **kwargs)
    obs_box = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    act_box = gym.spaces.Box(np.array(low, np.float32), np.array(high, np.float32))
    agent.initialize(space_to_spec(obs_box), space_to_spec(act_box))
    return agent


def make_algo(agent, **kwargs) -> SAC:
    kwargs.setdefault("replay_size", 64)
    algo = SAC(**kwargs)
    algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(1, 1))
    return algo


def hand_batch(observation, action, next_observation, return_n, discount_n) -> TensorDict:
    observation = torch.as_tensor(observation, dtype=torch.float32)
    action = torch.as_tensor(action, dtype=torch.float32)
    n = observation.shape[0]
    discount_n = torch.as_tensor(discount_n, dtype=torch.float32)

    def inputs(obs):
        return {
            keys.OBSERVATION: torch.as_tensor(obs, dtype=torch.float32),
            keys.PREV_ACTION: torch.zeros_like(action),
            keys.PREV_REWARD: torch.zeros(n),
        }

    return TensorDict(
        {
            **inputs(observation),
            keys.ACTION: action,
            keys.NEXT: TensorDict(inputs(next_observation), batch_size=[n]),
            RETURN_N: torch.as_tensor(return_n, dtype=torch.float32),
            DISCOUNT_N: discount_n,
            DONE_N: discount_n == 0,
            STEPS_N: torch.ones(n, dtype=torch.long),
            IS_WEIGHT: torch.ones(n),
            INDEX: torch.arange(n),
        },
        batch_size=[n],
    )


GAMMA = 0.9
OBS = [[0.5, -1.0, 0.3], [-0.2, 0.4, 1.1]]
NEXT_OBS = [[1.0, 0.2, -0.7], [0.3, -0.6, 0.8]]
ACTIONS = [[1.5, 0.2], [-0.7, 0.9]]  # env-space actions
RETURNS = [1.0, -0.5]
DISCOUNTS = [0.0, GAMMA]  # row 0 terminal, row 1 non-terminal (or truncated)


def two_sample_batch(next_obs=NEXT_OBS) -> TensorDict:
    return hand_batch(OBS, ACTIONS, next_obs, RETURNS, DISCOUNTS)


class FixedNoise:
    """Replaces ``torch.randn_like`` with a known sequence of noise tensors."""

    def __init__(self, noises):
        self.noises = list(noises)
        self.calls = 0

    def __call__(self, like, *args, **kwargs):
        out = self.noises[self.calls].to(like.dtype).expand_as(like).clone()
        self.calls += 1
        return out


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


# --------------------------------------------------------------- 1. squashed Gaussian sample
def test_squashed_gaussian_log_prob_matches_naive_formula():
    torch.manual_seed(0)
    mean = torch.randn(64, 3, dtype=torch.float64) * 0.5
    log_std = torch.rand(64, 3, dtype=torch.float64) - 1.0
    torch.manual_seed(1)
    action, log_prob = squashed_gaussian_sample(mean, log_std)
    torch.manual_seed(1)
    u = mean + log_std.exp() * torch.randn_like(mean)
    assert u.abs().max() < 3.0  # moderate u: the naive formula is accurate
    naive = torch.distributions.Normal(mean, log_std.exp()).log_prob(u).sum(-1)
    naive = naive - torch.log(1 - torch.tanh(u) ** 2).sum(-1)
    assert_close(action, torch.tanh(u))
    assert_close(log_prob, naive, atol=1e-10, rtol=1e-10)
    assert log_prob.shape == (64,)

    det, det_log_prob = squashed_gaussian_sample(mean, log_std, deterministic=True)
    assert_close(det, torch.tanh(mean))
    naive_det = torch.distributions.Normal(mean, log_std.exp()).log_prob(mean).sum(-1)
    assert_close(det_log_prob, naive_det - torch.log(1 - torch.tanh(mean) ** 2).sum(-1))

    # Large means and stds: still finite and inside [-1, 1].
    big, big_log_prob = squashed_gaussian_sample(mean * 100, log_std + 3)
    assert big.abs().max() <= 1.0 and torch.isfinite(big_log_prob).all()


def test_squashed_gaussian_sample_is_reparameterised():
    mean = torch.zeros(5, 2, requires_grad=True)
    log_std = torch.zeros(5, 2, requires_grad=True)
    action, log_prob = squashed_gaussian_sample(mean, log_std)
    (action.sum() + log_prob.sum()).backward()
    assert mean.grad is not None and mean.grad.abs().sum() > 0
    assert log_std.grad is not None and log_std.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- 2. the agent
def test_agent_actions_within_non_symmetric_bounds():
    low, high = torch.tensor(LOW), torch.tensor(HIGH)
    obs = torch.randn(4000, OBS_DIM)
    prev = torch.zeros(4000, 2), torch.zeros(4000)
    # Saturating policy: tanh hits +-1 exactly, the actions hit the bounds.
    for mean in (50.0, -50.0):
        agent = make_agent(ConstPi(mean=mean, log_std=-5.0))
        agent.sample_mode(0)
        action, _ = agent.step(obs, *prev)
        assert ((action >= low) & (action <= high)).all()
        assert_close(action, (high if mean > 0 else low).expand_as(action))

    agent = make_agent(ConstPi(mean=0.0, log_std=1.0))
    agent.sample_mode(0)
    action, _ = agent.step(obs, *prev)
    assert action.shape == (4000, 2)
    assert ((action >= low) & (action <= high)).all()
    # The affine map is used: the first dim spreads beyond [-1, 1], the second is centred
    # on 0.5 and the two ends are reached.
    assert action[:, 0].abs().max() > 1.5
    assert action[:, 1].mean().item() == pytest.approx(0.5, abs=0.03)
    assert action[:, 1].min() < 0.05 and action[:, 1].max() > 0.95

    default = make_agent()  # default PiMlpModel
    default.sample_mode(0)
    action, _ = default.step(obs, *prev)
    assert ((action >= low) & (action <= high)).all()


def test_agent_eval_mode_is_deterministic_tanh_mean():
    agent = make_agent()
    obs = torch.randn(16, OBS_DIM)
    prev = torch.zeros(16, 2), torch.zeros(16)
    agent.eval_mode(0)
    first, _ = agent.step(obs, *prev)
    second, _ = agent.step(obs, *prev)
    assert torch.equal(first, second)
    mean, _ = agent.model(obs)
    expected = torch.tanh(mean) * torch.tensor([2.0, 0.5]) + torch.tensor([0.0, 0.5])
    assert_close(first, expected.detach())
    agent.sample_mode(0)
    sampled, _ = agent.step(obs, *prev)
    assert not torch.equal(sampled, first)


def test_pretrain_std_before_pretrain_itr():
    n = 20_000
    agent = make_agent(ConstPi(mean=0.0, log_std=-10.0), low=[-1.0, -1.0], high=[1.0, 1.0])
    agent.set_pretrain_itr(5)
    obs = torch.zeros(n, OBS_DIM)
    prev = torch.zeros(n, 2), torch.zeros(n)
    torch.manual_seed(0)
    for itr in (0, 4):
        agent.sample_mode(itr)
        action, _ = agent.step(obs, *prev)
        pre_squash = torch.atanh(action.double())
        assert pre_squash.mean().item() == pytest.approx(0.0, abs=0.02)
        assert pre_squash.std().item() == pytest.approx(0.75, rel=0.03)
    for itr in (5, 9):
        agent.sample_mode(itr)
        action, _ = agent.step(obs, *prev)
        assert action.abs().max() < 1e-3  # the policy's own std, exp(-10)


def test_agent_rejects_discrete_actions():
    agent = SacAgent()
    box = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    with pytest.raises(TypeError):
        agent.initialize(space_to_spec(box), space_to_spec(gym.spaces.Discrete(3)))


# ------------------------------------------------------------------ 3. the update by hand
def hand_sac(agent, algo, batch, noises, *, log_alpha):
    """(y, loss_q, loss_pi, alpha_loss) from the agent's networks, one transition at a time,
    with temperature ``exp(log_alpha)`` and the fixed noises (a~ first, then a')."""
    pi = copy.deepcopy(agent.model)
    target_q = copy.deepcopy(agent.target_q_model)
    q_old = copy.deepcopy(agent.q_model)
    alpha = math.exp(log_alpha)
    scale, bias = torch.tensor([2.0, 0.5]), torch.tensor([0.0, 0.5])
    lo, hi = agent.log_std_min, agent.log_std_max

    def policy(obs, noise):
        mean, log_std = pi(obs[None])
        mean, log_std = mean[0].double(), log_std[0].clamp(lo, hi).double()
        u = mean + log_std.exp() * noise.double()
        dist = torch.distributions.Normal(mean, log_std.exp())
        log_p = dist.log_prob(u).sum() - torch.log(1 - torch.tanh(u) ** 2).sum()
        return (torch.tanh(u) * scale + bias).float(), log_p.item()

    n = batch.shape[0]
    ys, pis = [], []
    with torch.no_grad():
        for i in range(n):
            a_next, log_p_next = policy(batch[keys.NEXT_OBSERVATION][i], noises[1][i])
            q_next = target_q(batch[keys.NEXT_OBSERVATION][i][None], a_next[None])[:, 0]
            soft = q_next.min().item() - alpha * log_p_next
            ys.append(
                algo.reward_scale * batch[RETURN_N][i].item() + batch[DISCOUNT_N][i].item() * soft
            )
        q = q_old(batch[keys.OBSERVATION], batch[keys.ACTION])  # [n_q, N]
        loss_q = sum(
            0.5 * sum((q[j, i].item() - ys[i]) ** 2 for i in range(n)) / n
            for j in range(q.shape[0])
        )
        log_ps = []
        for i in range(n):
            a_new, log_p = policy(batch[keys.OBSERVATION][i], noises[0][i])
            log_ps.append(log_p)
            q_new = agent.q_model(batch[keys.OBSERVATION][i][None], a_new[None])[:, 0]
            prior = 0.0
            if algo.action_prior == "gaussian":
                prior = (-0.5 * a_new.pow(2) - 0.5 * math.log(2 * math.pi)).sum().item()
            pis.append(alpha * log_p - q_new.min().item() - prior)
        loss_pi = sum(pis) / n
        alpha_loss = -sum(log_alpha * (lp + algo.target_entropy) for lp in log_ps) / n
    return ys, loss_q, loss_pi, alpha_loss


NOISES = (torch.tensor([[0.3, -1.2], [0.8, 0.1]]), torch.tensor([[-0.5, 0.7], [1.1, -0.4]]))


@pytest.mark.parametrize(
    "algo_kwargs",
    [{}, {"action_prior": "gaussian", "reward_scale": 2.0}, {"fixed_alpha": 0.05}],
    ids=["uniform", "gaussian_prior_scaled", "fixed_alpha"],
)
def test_update_losses_match_hand_computation(algo_kwargs, monkeypatch):
    batch = two_sample_batch()
    agent = make_agent(seed=3)
    algo = make_algo(agent, discount=GAMMA, **algo_kwargs)
    with torch.no_grad():
        if algo.fixed_alpha is None:
            algo.log_alpha.fill_(math.log(0.3))  # log_alpha = 0 would make the alpha loss 0
        for p in agent.target_q_model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # targets differ from the online critics

    pi, target_q = copy.deepcopy(agent.model), copy.deepcopy(agent.target_q_model)
    q_old, log_alpha = copy.deepcopy(agent.q_model), algo.log_alpha.item()
    fixed = FixedNoise(NOISES)
    with monkeypatch.context() as m:
        m.setattr(torch, "randn_like", fixed)
        info = algo.update(batch)
    assert fixed.calls == 2  # a~ ~ pi(.|o) first, then a' ~ pi(.|o')

    # The hand computation, with the networks as they were: as in rlpyt, all three losses
    # are taken at the parameters before the update (the actor against the old critics).
    current_q, current_pi = agent.q_model, agent.model
    agent.model, agent.q_model = pi, q_old
    saved_target = agent.target_q_model
    agent.target_q_model = target_q
    try:
        _, loss_q, loss_pi, alpha_loss = hand_sac(agent, algo, batch, NOISES, log_alpha=log_alpha)
    finally:
        agent.model, agent.q_model, agent.target_q_model = current_pi, current_q, saved_target
    assert log_alpha == pytest.approx(math.log(0.3) if algo.fixed_alpha is None else math.log(0.05))

    assert info["loss_q"].item() == pytest.approx(loss_q, rel=1e-5, abs=1e-5)
    assert info["loss_pi"].item() == pytest.approx(loss_pi, rel=1e-5, abs=1e-5)
    if algo.fixed_alpha is None:
        assert info["loss_alpha"].item() == pytest.approx(alpha_loss, rel=1e-5, abs=1e-5)
        assert abs(alpha_loss) > 1e-3
    else:
        assert "loss_alpha" not in info
        assert algo.alpha == pytest.approx(0.05)


def targets(batch, noises=NOISES, **algo_kwargs):
    """Hand targets y with a fresh, identically seeded agent."""
    agent = make_agent(seed=3)
    algo = make_algo(agent, discount=GAMMA, **algo_kwargs)
    return hand_sac(agent, algo, batch, noises, log_alpha=0.0)[0]


def loss_q_of(batch, monkeypatch):
    agent = make_agent(seed=3)
    algo = make_algo(agent, discount=GAMMA)
    with monkeypatch.context() as m:
        m.setattr(torch, "randn_like", FixedNoise(NOISES))
        return algo.update(batch)["loss_q"].item()


def test_terminal_target_ignores_next_observation_truncated_does_not(monkeypatch):
    moved = [[row + 3.0 for row in NEXT_OBS[0]], NEXT_OBS[1]]
    moved_truncated = [NEXT_OBS[0], [row - 2.0 for row in NEXT_OBS[1]]]
    base = targets(two_sample_batch())
    y_terminal = targets(two_sample_batch(moved))
    y_truncated = targets(two_sample_batch(moved_truncated))
    assert base[0] == pytest.approx(RETURNS[0])  # terminal: y = r
    assert y_terminal[0] == pytest.approx(base[0]) and y_terminal[1] == pytest.approx(base[1])
    assert y_truncated[1] != pytest.approx(base[1], abs=1e-4)

    # The same through update's critic loss.
    loss = loss_q_of(two_sample_batch(), monkeypatch)
    assert loss_q_of(two_sample_batch(moved), monkeypatch) == pytest.approx(loss, rel=1e-6)
    assert loss_q_of(two_sample_batch(moved_truncated), monkeypatch) != pytest.approx(
        loss, rel=1e-4
    )


# ------------------------------------------------------------------------ 4. target update
@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_target_moves_by_tau(tau):
    agent = make_agent()
    algo = make_algo(agent, target_update_tau=tau, target_update_interval=1)
    with torch.no_grad():
        for p in agent.target_q_model.parameters():
            p.add_(0.5)  # online != target, so a wrong tau shows
    target_old = params(agent.target_q_model)
    algo.update(two_sample_batch())
    online_new = params(agent.q_model)
    for old, new, online in zip(
        target_old, agent.target_q_model.parameters(), online_new, strict=True
    ):
        assert_close(new.detach(), old + tau * (online - old), atol=1e-6, rtol=1e-6)
    assert not any(p.requires_grad for p in agent.target_q_model.parameters())


def test_target_update_interval_two():
    agent = make_agent()
    algo = make_algo(agent, target_update_tau=0.2, target_update_interval=2)
    target_old = params(agent.target_q_model)
    algo.update(two_sample_batch())
    for old, new in zip(target_old, agent.target_q_model.parameters(), strict=True):
        assert torch.equal(old, new)
    algo.update(two_sample_batch())
    online_new = params(agent.q_model)
    for old, new, online in zip(
        target_old, agent.target_q_model.parameters(), online_new, strict=True
    ):
        assert_close(new.detach(), old + 0.2 * (online - old), atol=1e-6, rtol=1e-6)
        assert not torch.equal(old, new)


# ----------------------------------------------------------------------------- 5. alpha
@pytest.mark.parametrize(
    ("log_std", "direction"), [(-10.0, "up"), (0.0, "down")], ids=["low_entropy", "high_entropy"]
)
def test_temperature_follows_entropy(log_std, direction):
    agent = make_agent(ConstPi(log_std=log_std))
    algo = make_algo(agent, learning_rate=1e-2)
    assert algo.target_entropy == -2.0 and algo.alpha == 1.0
    info = algo.update(two_sample_batch())
    if direction == "up":
        assert info["log_pi"].item() > 10  # far below the target entropy
        assert algo.alpha > 1.0
    else:
        assert info["log_pi"].item() < -1
        assert algo.alpha < 1.0
    assert info["alpha"].item() == pytest.approx(1.0)  # the update used alpha before its step


def test_fixed_alpha_stays_constant():
    agent = make_agent(ConstPi(log_std=-10.0))
    algo = make_algo(agent, fixed_alpha=0.3, learning_rate=1e-2)
    for _ in range(3):
        info = algo.update(two_sample_batch())
        assert info["alpha"].item() == pytest.approx(0.3)
    assert algo.alpha == pytest.approx(0.3)


def test_numeric_target_entropy():
    agent = make_agent(ConstPi(log_std=-10.0))
    algo = make_algo(agent, target_entropy=-50.0, learning_rate=1e-2)
    assert algo.target_entropy == -50.0
    algo.update(two_sample_batch())  # log_pi ~ 18 < 50: entropy above the target
    assert algo.alpha < 1.0


# ------------------------------------------------- 6. one backward, separate gradients
def test_actor_step_leaves_critics_alone():
    agent = make_agent()
    algo = make_algo(agent)
    algo.param_group("q")["lr"] = 0.0
    batch = two_sample_batch()
    q_before, pi_before = params(agent.q_model), params(agent.model)
    for _ in range(2):
        algo.update(batch)
        assert all(p.requires_grad for p in agent.q_model.parameters())
    for old, new in zip(q_before, agent.q_model.parameters(), strict=True):
        assert torch.equal(old, new)
    assert any(
        not torch.equal(o, n) for o, n in zip(pi_before, agent.model.parameters(), strict=True)
    )


def test_critic_grads_come_from_the_critic_loss_only(monkeypatch):
    """With the critics frozen (lr 0), their ``.grad`` after ``update`` is exactly the
    gradient of ``0.5 * sum_i mean((Q_i - y)^2)``: the actor's backward added nothing."""
    agent = make_agent(seed=3)
    algo = make_algo(agent, discount=GAMMA)
    algo.param_group("q")["lr"] = 0.0
    batch = two_sample_batch()
    pi, alpha = copy.deepcopy(agent.model), math.exp(algo.log_alpha.item())
    with monkeypatch.context() as m:
        m.setattr(torch, "randn_like", FixedNoise(NOISES))
        algo.update(batch)
    with torch.no_grad():
        mean, log_std = pi(batch[keys.NEXT_OBSERVATION])
        log_std = log_std.clamp(agent.log_std_min, agent.log_std_max)
        u = mean + log_std.exp() * NOISES[1]
        dist = torch.distributions.Normal(mean, log_std.exp())
        next_log_pi = dist.log_prob(u).sum(-1) - torch.log(1 - torch.tanh(u) ** 2).sum(-1)
        next_action = agent.to_env(torch.tanh(u))
        next_q = agent.target_q_model(batch[keys.NEXT_OBSERVATION], next_action).min(0).values
        y = batch[RETURN_N] + batch[DISCOUNT_N] * (next_q - alpha * next_log_pi)
    q = agent.q_model(batch[keys.OBSERVATION], batch[keys.ACTION])
    loss = 0.5 * ((q - y) ** 2).mean(1).sum()
    grads = torch.autograd.grad(loss, list(agent.q_model.parameters()))
    for g, p in zip(grads, agent.q_model.parameters(), strict=True):
        assert p.grad is not None
        assert_close(p.grad, g, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------ 7. schedule
def run_iterations(algo, agent, sampler, itrs):
    for itr in itrs:
        agent.sample_mode(itr)
        samples, _ = sampler.obtain_samples(itr)
        agent.train_mode(itr)
        yield itr, algo.optimize_agent(itr, samples)


@pytest.mark.parametrize(("replay_ratio", "batch_size"), [(2, 4), (3, 5)])
def test_schedule_min_steps_and_updates_per_itr(replay_ratio, batch_size):
    torch.manual_seed(0)
    T, B = 4, 2
    agent = SacAgent(model_kwargs={"hidden_sizes": (8,)}, q_model_kwargs={"hidden_sizes": (8,)})
    algo = SAC(
        min_steps_learn=16, replay_ratio=replay_ratio, batch_size=batch_size, replay_size=256
    )
    sampler = SerialSampler(
        ContinuousIdentityEnv, {"dim": 2}, batch_T=T, batch_B=B, max_decorrelation_steps=0
    )
    sampler.initialize(agent, seed=0)
    algo.initialize(agent, n_itr=10, batch_spec=sampler.batch_spec)
    assert agent.pretrain_itr == 2
    expected = round(replay_ratio * T * B / batch_size)
    for itr, info in run_iterations(algo, agent, sampler, range(5)):
        if itr < 2:
            assert info == {} and algo.update_counter == 0
            assert agent._pretraining
        else:
            assert len(info["loss_q"]) == expected
            assert algo.update_counter == expected * (itr - 1)
            assert not agent._pretraining
    sampler.shutdown()


def make_pair(seed):
    agent = make_agent(seed=seed)
    algo = make_algo(agent, target_update_interval=2, learning_rate=1e-2)
    return agent, algo


def serialise(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_state_dict_round_trip_gives_identical_next_update():
    batch = two_sample_batch()
    agent, algo = make_pair(seed=0)
    for s in range(3):
        torch.manual_seed(s)
        algo.update(batch)
    agent_state, algo_state = serialise(agent.state_dict()), serialise(algo.state_dict())
    assert algo_state["update_counter"] == 3

    torch.manual_seed(3)
    info = algo.update(batch)  # the 4th update also moves the targets

    agent2, algo2 = make_pair(seed=1)
    agent2.load_state_dict(agent_state)
    algo2.load_state_dict(algo_state)
    torch.manual_seed(3)
    info2 = algo2.update(batch)
    for key in ("loss_q", "loss_pi", "loss_alpha", "alpha"):
        assert torch.equal(info[key], info2[key]), key
    assert algo.alpha == algo2.alpha
    for (name, a), b in zip(agent.state_dict().items(), agent2.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert algo2.update_counter == 4


# ---------------------------------------------------------------------- 8. bad arguments
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"discount": 2}, "discount"),
        ({"batch_size": 0}, "batch_size"),
        ({"action_prior": "laplace"}, "action_prior"),
        ({"target_entropy": "x"}, "target_entropy"),
        ({"target_update_tau": 0.0}, "target_update_tau"),
        ({"fixed_alpha": -1.0}, "fixed_alpha"),
    ],
)
def test_sac_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SAC(**kwargs)


def test_agent_and_algo_type_checks():
    with pytest.raises(ValueError, match="pretrain_std"):
        SacAgent(pretrain_std=0)
    with pytest.raises(ValueError, match="log_std_min"):
        SacAgent(log_std_min=1.0, log_std_max=0.0)
    dqn_agent = DqnAgent()
    box = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    dqn_agent.initialize(space_to_spec(box), space_to_spec(gym.spaces.Discrete(2)))
    with pytest.raises(TypeError, match="SacAgent"):
        SAC().initialize(dqn_agent, n_itr=1, batch_spec=BatchSpec(1, 1))


# -------------------------------------------------------------------------- 9. learning
@pytest.mark.slow
@pytest.mark.timeout(1200)  # 115 s measured under load
def test_sac_learns_pendulum():
    """About 100 s on 2 cores; random play scores about -1200."""
    sampler = SerialSampler(
        env_kwargs={"id": "Pendulum-v1"},
        batch_T=100,
        batch_B=1,
        eval_n_envs=2,
        eval_max_trajectories=4,
        eval_max_steps=2000,
    )
    runner = MinibatchRlEval(
        SAC(min_steps_learn=1000),
        SacAgent(),
        sampler,
        n_steps=10_000,
        seed=0,
        log_interval_steps=1000,
        progress_bar=False,
    )
    row = runner.train()
    assert row["ReturnAverage"] >= -200
