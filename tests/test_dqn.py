"""DQN, double DQN, C51 and Rainbow: the losses against hand loops and TorchRL, the C51
projection, the update / target / epsilon / beta schedules, prioritized replay, learning,
determinism, argument checks and state round trips.

Hand-checked batches are TensorDicts with the keys ``ReplayBuffer.sample_batch`` returns;
the schedule tests drive ``optimize_agent`` with ``[T, B]`` batches from ``SerialSampler``.
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
from torchrl.modules import DistributionalQValueActor, QValueActor
from torchrl.objectives import DistributionalDQNLoss, DQNLoss, ValueEstimators

from tdrl import keys
from tdrl.agents import CategoricalPgAgent
from tdrl.agents.dqn import DqnAgent
from tdrl.algos.dqn import DQN, CategoricalDQN, rainbow_minus_noisy
from tdrl.algos.dqn.cat_dqn import project_distribution
from tdrl.envs import space_to_spec
from tdrl.keys import DISCOUNT_N, DONE_N, INDEX, IS_WEIGHT, RETURN_N, STEPS_N
from tdrl.logging import logger_context
from tdrl.replays import ReplayBuffer, UniformSampler
from tdrl.runners import MinibatchRl, MinibatchRlEval
from tdrl.samplers import BatchSpec, SerialSampler
from tdrl.testing import CountingEnv, IdentityEnv

try:
    from tdrl.replays import PrioritizedSampler
except ImportError:  # pragma: no cover - the sum tree may still be in progress
    PrioritizedSampler = None

needs_per = pytest.mark.skipif(
    PrioritizedSampler is None, reason="tdrl.replays.sum_tree.PrioritizedSampler not importable"
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------- helpers
class LinearQ(nn.Module):
    """``Q = W o + b``, or logits ``[A, n_atoms]`` with ``n_atoms``: numbers we can set."""

    def __init__(self, obs_dim: int = 3, n_actions: int = 3, n_atoms: int | None = None):
        super().__init__()
        self.n_actions, self.n_atoms = n_actions, n_atoms
        self.linear = nn.Linear(obs_dim, n_actions * (n_atoms or 1))

    def forward(self, observation, prev_action, prev_reward):
        out = self.linear(observation.float())
        if self.n_atoms:
            out = out.unflatten(-1, (self.n_actions, self.n_atoms))
        return out


def make_agent(model: nn.Module | None = None, *, obs_dim=3, n_actions=3, **kwargs) -> DqnAgent:
    agent = DqnAgent(model=model, **kwargs)
    box = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    agent.initialize(space_to_spec(box), space_to_spec(gym.spaces.Discrete(n_actions)))
    return agent


def hand_batch(observation, action, next_observation, return_n, discount_n, is_weight=None):
    """A replay batch with ``sample_batch``'s keys (zero previous actions and rewards)."""
    observation = torch.as_tensor(observation, dtype=torch.float32)
    n = observation.shape[0]
    discount_n = torch.as_tensor(discount_n, dtype=torch.float32)

    def inputs(obs):
        return {
            keys.OBSERVATION: torch.as_tensor(obs, dtype=torch.float32),
            keys.PREV_ACTION: torch.zeros(n, dtype=torch.long),
            keys.PREV_REWARD: torch.zeros(n, 1),
        }

    return TensorDict(
        {
            **inputs(observation),
            keys.ACTION: torch.as_tensor(action, dtype=torch.long),
            keys.NEXT: TensorDict(inputs(next_observation), batch_size=[n]),
            RETURN_N: torch.as_tensor(return_n, dtype=torch.float32),
            DISCOUNT_N: discount_n,
            DONE_N: discount_n == 0,
            STEPS_N: torch.ones(n, dtype=torch.long),
            IS_WEIGHT: torch.ones(n) if is_weight is None else torch.as_tensor(is_weight),
            INDEX: torch.arange(n),
        },
        batch_size=[n],
    )


def q_of(model: nn.Module, obs: torch.Tensor) -> list:
    """The model's output for a single observation, as nested Python floats."""
    with torch.no_grad():
        return model(obs[None], None, None)[0].tolist()


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def trainable(module: nn.Module) -> dict[str, nn.Parameter]:
    return dict(module.named_parameters())


def setup_on_sampler(algo, agent, *, env_fn=CountingEnv, env_kwargs=None, T=4, B=2, seed=0):
    """Initialise ``agent`` and ``algo`` through a ``SerialSampler``; seed the replay draws."""
    sampler = SerialSampler(
        env_fn,
        {"episode_length": 3} if env_kwargs is None else env_kwargs,
        batch_T=T,
        batch_B=B,
        max_decorrelation_steps=0,
    )
    sampler.initialize(agent, seed=seed)
    algo.initialize(agent, n_itr=100, batch_spec=sampler.batch_spec)
    reseed_replay(algo, seed)
    return sampler


def reseed_replay(algo: DQN, seed: int) -> None:
    """Give the replay buffer's sampler a seeded generator (an explicit per-test seed)."""
    sampler = algo.replay_buffer.sampler
    if isinstance(sampler, UniformSampler):
        sampler.load_state_dict(UniformSampler(sampler.capacity, seed=seed).state_dict())
    else:
        sampler._np_rng = np.random.default_rng(seed)


def run_iterations(algo, agent, sampler, itrs):
    """The runner's loop body for iterations ``itrs``; yields ``(itr, opt_info)``."""
    for itr in itrs:
        agent.sample_mode(itr)
        samples, _ = sampler.obtain_samples(itr)
        agent.train_mode(itr)
        yield itr, algo.optimize_agent(itr, samples)


# ------------------------------------------------------------------- 1. DQN loss by hand
# Online Q(o) = o; target Q(o) = (o_3, o_1, o_2) + 0.05: the greedy next actions of the two
# nets differ in every row, so double DQN changes every bootstrap value.
PERMUTATION = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
OBS = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]]
NEXT_OBS = [[1.0, 0.5, 0.2], [0.2, 1.0, 0.5], [0.3, 0.2, 0.9], [0.6, 0.1, 0.8]]
ACTIONS = [0, 2, 1, 0]
RETURNS = [0.3, 4.0, -3.0, 0.2]
DISCOUNTS = [0.9, 0.9, 0.0, 0.81]  # row 2 ends in a terminal state
WEIGHTS = [1.0, 0.5, 2.0, 0.25]


def hand_dqn_setup() -> tuple[DqnAgent, TensorDict]:
    agent = make_agent(LinearQ())
    with torch.no_grad():
        agent.model.linear.weight.copy_(torch.eye(3))
        agent.model.linear.bias.zero_()
        agent.target_model.linear.weight.copy_(PERMUTATION)
        agent.target_model.linear.bias.fill_(0.05)
    return agent, hand_batch(OBS, ACTIONS, NEXT_OBS, RETURNS, DISCOUNTS, WEIGHTS)


def reference_dqn_loss(agent, batch, *, double_dqn, delta_clip):
    """rlpyt's DQN loss, one transition at a time; returns (loss, |delta| clipped, deltas)."""
    losses, errors, deltas = [], [], []
    for i in range(batch.shape[0]):
        q = q_of(agent.model, batch[keys.OBSERVATION][i])
        q_next_target = q_of(agent.target_model, batch[keys.NEXT_OBSERVATION][i])
        q_next_online = q_of(agent.model, batch[keys.NEXT_OBSERVATION][i])
        a_star = argmax(q_next_online if double_dqn else q_next_target)
        y = batch[RETURN_N][i].item() + batch[DISCOUNT_N][i].item() * q_next_target[a_star]
        delta = y - q[batch[keys.ACTION][i].item()]
        if delta_clip is None or abs(delta) <= delta_clip:
            loss = 0.5 * delta**2
        else:
            loss = delta_clip * (abs(delta) - 0.5 * delta_clip)
        losses.append(batch[IS_WEIGHT][i].item() * loss)
        errors.append(abs(delta) if delta_clip is None else min(abs(delta), delta_clip))
        deltas.append(delta)
    return sum(losses) / len(losses), errors, deltas


@pytest.mark.parametrize("delta_clip", [1.0, 2.5, None], ids=["huber1", "huber2.5", "squared"])
@pytest.mark.parametrize("double_dqn", [False, True], ids=["dqn", "double"])
def test_dqn_loss_matches_hand_loop(double_dqn, delta_clip):
    agent, batch = hand_dqn_setup()
    before = batch.clone()
    algo = DQN(double_dqn=double_dqn, delta_clip=delta_clip, replay_size=64)
    algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(1, 1))

    terms = algo.loss(batch)
    loss, errors, deltas = reference_dqn_loss(
        agent, batch, double_dqn=double_dqn, delta_clip=delta_clip
    )
    # Both sides of the Huber threshold are exercised.
    clip = delta_clip or 1.0
    assert any(abs(d) > clip for d in deltas) and any(abs(d) < clip for d in deltas)
    assert_close(terms["loss"], torch.tensor(loss), atol=1e-6, rtol=1e-6)
    assert_close(terms["td_abs_err"], torch.tensor(errors), atol=1e-6, rtol=1e-6)
    if delta_clip is not None:
        assert terms["td_abs_err"].max() == delta_clip
    assert not terms["td_abs_err"].requires_grad
    for key in before.keys(True, True):
        assert torch.equal(batch.get(key), before.get(key)), key


def test_dqn_loss_variants_and_weights_change_the_loss():
    """The hand batch separates every variant, so the test above can tell them apart."""
    agent, batch = hand_dqn_setup()
    losses = {}
    for double_dqn in (False, True):
        for delta_clip in (1.0, None):
            algo = DQN(double_dqn=double_dqn, delta_clip=delta_clip, replay_size=64)
            algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(1, 1))
            losses[double_dqn, delta_clip] = algo.loss(batch)["loss"].item()
    assert len({round(v, 6) for v in losses.values()}) == 4, losses

    algo = DQN(replay_size=64)
    algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(1, 1))
    unweighted = batch.clone()
    unweighted[IS_WEIGHT] = torch.ones(4)
    per_sample = [algo.loss(unweighted[i : i + 1])["loss"].item() for i in range(4)]
    expected = sum(w * v for w, v in zip(WEIGHTS, per_sample, strict=True)) / 4
    assert algo.loss(batch)["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert algo.loss(unweighted)["loss"].item() != pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("algo_name", ["dqn", "double", "c51", "double_c51"])
def test_gradients_reach_the_online_net_only(algo_name):
    categorical = "c51" in algo_name
    agent = make_agent(
        n_atoms=5 if categorical else None,
        # Not dueling: its advantage_bias cancels in A - mean(A) and never gets a gradient.
        model_kwargs={"hidden_sizes": (8, 8)},
    )
    kwargs = {"double_dqn": "double" in algo_name, "replay_size": 64}
    algo = CategoricalDQN(V_min=-5, V_max=5, **kwargs) if categorical else DQN(**kwargs)
    algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(1, 1))
    _, batch = hand_dqn_setup()

    terms = algo.loss(batch)
    assert torch.isfinite(terms["loss"]) and terms["loss"].requires_grad
    assert torch.isfinite(terms["td_abs_err"]).all() and (terms["td_abs_err"] >= 0).all()
    terms["loss"].backward()
    for name, p in trainable(agent.model).items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    for name, p in agent.target_model.named_parameters():
        assert not p.requires_grad and p.grad is None, name


# ------------------------------------------------------------------ 2. against DQNLoss
class _ObsHead(nn.Module):
    """A tdrl model as a TorchRL module of the observation only."""

    def __init__(self, model: nn.Module, transpose: bool = False):
        super().__init__()
        self.model = model
        self.transpose = transpose

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        out = self.model(observation, None, None)
        return out.transpose(-1, -2) if self.transpose else out  # TorchRL: [atoms, actions]


def counting_batch(
    agent, *, n_step_return, discount, size=48, seed=0, categorical=False, return_scale=1.0
):
    """A replay batch from CountingEnv (terminal and non-terminal windows), seeded, with
    random importance weights and the n-step returns multiplied by ``return_scale``."""
    sampler = SerialSampler(
        CountingEnv, {"episode_length": 4}, batch_T=8, batch_B=2, max_decorrelation_steps=0
    )
    sampler.initialize(agent, seed=seed)
    if categorical:
        agent.set_support(-10.0, 10.0)
    agent.sample_mode(0)
    samples, _ = sampler.obtain_samples(0)
    sampler.shutdown()
    buffer = ReplayBuffer(
        size=32, batch_B=2, discount=discount, n_step_return=n_step_return, seed=seed
    )
    buffer.append_samples(samples)
    batch = buffer.sample_batch(size)
    assert batch[DONE_N].any() and not batch[DONE_N].all()
    g = torch.Generator().manual_seed(seed)
    batch[IS_WEIGHT] = 0.2 + torch.rand(size, generator=g)
    batch[RETURN_N] = batch[RETURN_N] * return_scale
    return batch


def perturb_target(agent, scale=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in agent.target_model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def torchrl_td(batch: TensorDict, *, n_step: bool = False) -> TensorDict:
    """tdrl's replay batch in TorchRL's layout (the n-step return stands in for the reward)."""
    n = batch.shape[0]
    terminated = batch[DONE_N].unsqueeze(-1)
    td = TensorDict(
        {
            "observation": batch[keys.OBSERVATION],
            "action": batch[keys.ACTION],
            "priority_weight": batch[IS_WEIGHT],
            "next": {
                "observation": batch[keys.NEXT_OBSERVATION],
                "reward": batch[RETURN_N].unsqueeze(-1),
                "done": terminated,
                "terminated": terminated,
            },
        },
        batch_size=[n],
    )
    if n_step:  # the shape fix of torchrl_notes.md §3.4
        td["steps_to_next_obs"] = batch[STEPS_N].unsqueeze(-1)
    return td


NO_UPDATER_WARNING = "ignore:No target network updater:UserWarning"


@pytest.mark.filterwarnings(NO_UPDATER_WARNING)
@pytest.mark.parametrize("double_dqn", [False, True], ids=["dqn", "double"])
@pytest.mark.parametrize("loss_function", ["smooth_l1", "l2"])
def test_dqn_loss_matches_torchrl(loss_function, double_dqn):
    gamma = 0.9
    torch.manual_seed(0)
    agent = DqnAgent(model_kwargs={"hidden_sizes": (16, 16)})
    # CountingEnv's rewards (1.x to 4.x) scaled so |delta| falls on both sides of 1.
    batch = counting_batch(agent, n_step_return=1, discount=gamma, return_scale=0.3)
    assert (batch[STEPS_N] == 1).all()
    perturb_target(agent)
    delta_clip = 1.0 if loss_function == "smooth_l1" else None
    algo = DQN(discount=gamma, delta_clip=delta_clip, double_dqn=double_dqn, replay_size=64)
    algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(8, 2))

    def actor(model):
        spec = space_to_spec(gym.spaces.Discrete(3))
        return QValueActor(_ObsHead(model), in_keys=["observation"], spec=spec)

    reference = DQNLoss(
        actor(agent.model), loss_function=loss_function, double_dqn=double_dqn, delay_value=True
    )
    reference.make_value_estimator(ValueEstimators.TD0, gamma=gamma)
    target_params = TensorDict.from_module(actor(agent.target_model))
    reference.target_value_network_params.data.update_(target_params.data)
    td = torchrl_td(batch)

    theirs = reference(td)
    ours = algo.loss(batch)

    # TorchRL's "l2" is (y - Q)^2, rlpyt's squared error 0.5 (y - Q)^2; smooth_l1 (beta=1)
    # is Huber with delta_clip=1. TorchRL reduces weighted losses by sum(w l) / sum(w),
    # rlpyt by mean(w l).
    factor = 0.5 if loss_function == "l2" else 1.0
    weight_mean = batch[IS_WEIGHT].mean()
    assert_close(ours["loss"], factor * weight_mean * theirs["loss"], atol=1e-5, rtol=1e-5)
    their_abs = td["td_error"].squeeze(-1).sqrt()  # TorchRL's priority is delta^2
    if delta_clip is not None:
        assert (their_abs > delta_clip).any() and (their_abs < delta_clip).any()
        their_abs = their_abs.clamp(max=delta_clip)
    assert_close(ours["td_abs_err"], their_abs, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------- 3. C51 projection
def project_loop(probs, returns, discounts, v_min, v_max):
    """Classic C51 projection: split each clamped Tz_j's mass between its floor and ceil atoms."""
    n, n_atoms = len(probs), len(probs[0])
    dz = (v_max - v_min) / (n_atoms - 1)
    out = [[0.0] * n_atoms for _ in range(n)]
    for i in range(n):
        for j in range(n_atoms):
            z = v_min + j * dz
            tz = min(max(returns[i] + discounts[i] * z, v_min), v_max)
            b = (tz - v_min) / dz
            low, up = math.floor(b), math.ceil(b)
            if low == up:
                out[i][low] += probs[i][j]
            else:
                out[i][low] += probs[i][j] * (up - b)
                out[i][up] += probs[i][j] * (b - low)
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("n_atoms", "v_min", "v_max"), [(5, -2.0, 2.0), (51, -10.0, 10.0)])
def test_projection_matches_floor_ceil_loop(n_atoms, v_min, v_max, dtype):
    g = torch.Generator().manual_seed(n_atoms)
    n = 24
    probs = torch.softmax(2 * torch.randn(n, n_atoms, generator=g, dtype=torch.float64), -1)
    width = v_max - v_min
    returns = (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 1.6 * width
    discounts = torch.rand(n, generator=g, dtype=torch.float64)
    dz = width / (n_atoms - 1)
    # discount 0 (terminal), returns beyond both ends, whole-atom shifts (integer b), the
    # identity (R=0, gamma=1) and a support that maps onto a single atom.
    returns[:8] = torch.tensor([0.3 * v_max, 2 * v_max, 2 * v_min, 0.0, dz, -2 * dz, 0.0, 0.1])
    discounts[:8] = torch.tensor([0.0, 0.5, 0.9, 1.0, 1.0, 1.0, 0.0, 0.0])
    support = torch.linspace(v_min, v_max, n_atoms, dtype=torch.float64)

    ours = project_distribution(
        probs.to(dtype), returns.to(dtype), discounts.to(dtype), support.to(dtype)
    )
    reference = torch.tensor(
        project_loop(probs.tolist(), returns.tolist(), discounts.tolist(), v_min, v_max),
        dtype=torch.float64,
    )
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert ours.dtype == dtype
    assert_close(ours.double(), reference, atol=tol, rtol=0)
    assert_close(ours.sum(-1).double(), torch.ones(n, dtype=torch.float64), atol=tol, rtol=0)
    assert (ours >= 0).all()
    assert_close(ours[3].double(), probs[3], atol=tol, rtol=0)  # identity
    assert ours[1, -1] == pytest.approx(1.0, abs=tol) and ours[2, 0] == pytest.approx(1.0, abs=tol)


def reference_c51(agent, batch, *, double_dqn, v_min, v_max):
    """C51 cross-entropy and KL per transition, with ``project_loop``."""
    n_atoms = agent.n_atoms
    support = [v_min + j * (v_max - v_min) / (n_atoms - 1) for j in range(n_atoms)]

    def probs(logits):
        return [torch.softmax(torch.tensor(row, dtype=torch.float64), 0).tolist() for row in logits]

    def expected(ps):
        return [sum(p * z for p, z in zip(row, support, strict=True)) for row in ps]

    cross_entropies, kls = [], []
    for i in range(batch.shape[0]):
        logits = q_of(agent.model, batch[keys.OBSERVATION][i])[batch[keys.ACTION][i].item()]
        log_p = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), 0).tolist()
        target_p = probs(q_of(agent.target_model, batch[keys.NEXT_OBSERVATION][i]))
        chooser = probs(q_of(agent.model, batch[keys.NEXT_OBSERVATION][i])) if double_dqn else None
        a_star = argmax(expected(chooser if double_dqn else target_p))
        (m,) = project_loop(
            [target_p[a_star]], [batch[RETURN_N][i].item()], [batch[DISCOUNT_N][i].item()],
            v_min, v_max,
        )  # fmt: skip
        cross_entropies.append(-sum(mj * lp for mj, lp in zip(m, log_p, strict=True)))
        kls.append(sum(mj * (math.log(mj) - lp) for mj, lp in zip(m, log_p, strict=True) if mj))
    return cross_entropies, kls


@pytest.mark.parametrize("double_dqn", [False, True], ids=["c51", "double"])
def test_c51_loss_matches_hand_cross_entropy(double_dqn):
    v_min, v_max = -2.0, 2.0
    torch.manual_seed(0)
    agent = make_agent(LinearQ(n_atoms=5), n_atoms=5)
    perturb_target(agent, scale=1.0)
    algo = CategoricalDQN(V_min=v_min, V_max=v_max, double_dqn=double_dqn, replay_size=64)
    algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(1, 1))
    assert_close(agent.support, torch.linspace(v_min, v_max, 5))
    batch = hand_batch(OBS, ACTIONS, NEXT_OBS, [0.3, 4.0, -3.0, 0.2], DISCOUNTS, WEIGHTS)
    before = batch.clone()

    terms = algo.loss(batch)
    cross_entropies, kls = reference_c51(
        agent, batch, double_dqn=double_dqn, v_min=v_min, v_max=v_max
    )
    loss = sum(w * ce for w, ce in zip(WEIGHTS, cross_entropies, strict=True)) / 4
    assert torch.isfinite(terms["loss"])
    assert_close(terms["loss"], torch.tensor(loss, dtype=torch.float32), atol=1e-5, rtol=1e-5)
    assert (terms["td_abs_err"] >= 0).all()
    assert_close(terms["td_abs_err"], torch.tensor(kls).float().clamp(1e-6), atol=1e-5, rtol=1e-5)
    for key in before.keys(True, True):
        assert torch.equal(batch.get(key), before.get(key)), key


@pytest.mark.filterwarnings(NO_UPDATER_WARNING)
def test_double_c51_matches_torchrl_distributional_loss():
    """n-step double C51 against ``DistributionalDQNLoss`` (whose projection is the
    floor/ceil split and whose bootstrap action is the online argmax)."""
    gamma = 0.9
    torch.manual_seed(0)
    agent = DqnAgent(n_atoms=11, model_kwargs={"hidden_sizes": (16, 16)})
    batch = counting_batch(agent, n_step_return=3, discount=gamma, categorical=True)
    assert (batch[STEPS_N] < 3).any() and (batch[STEPS_N] == 3).any()
    perturb_target(agent)
    algo = CategoricalDQN(
        V_min=-10, V_max=10, discount=gamma, n_step_return=3, double_dqn=True, replay_size=64
    )
    algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(8, 2))

    def actor(model):
        return DistributionalQValueActor(
            _ObsHead(model, transpose=True),
            support=agent.support.clone(),
            in_keys=["observation"],
            action_space="categorical",
        )

    reference = DistributionalDQNLoss(actor(agent.model), gamma=gamma, delay_value=True)
    target_params = TensorDict.from_module(actor(agent.target_model))
    reference.target_value_network_params.data.update_(target_params.data)
    td = torchrl_td(batch, n_step=True)
    del td["priority_weight"]
    theirs = reference(td)
    batch[IS_WEIGHT] = torch.ones(batch.shape[0])
    ours = algo.loss(batch)
    assert_close(ours["loss"], theirs["loss"], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------- 5. update schedule
@pytest.mark.parametrize(
    ("replay_ratio", "batch_size"), [(4, 8), (3, 4), (0.5, 4), (1, 5)], ids=str
)
def test_no_updates_before_min_steps_learn_then_replay_ratio_updates(replay_ratio, batch_size):
    T, B, min_steps_learn = 4, 2, 20  # min_itr_learn = 20 // 8 = 2
    torch.manual_seed(0)
    agent = DqnAgent(model_kwargs={"hidden_sizes": (8,)})
    algo = DQN(
        min_steps_learn=min_steps_learn,
        replay_ratio=replay_ratio,
        batch_size=batch_size,
        replay_size=256,
    )
    sampler = setup_on_sampler(algo, agent, T=T, B=B)
    per_itr = round(replay_ratio * T * B / batch_size)
    assert algo.updates_per_optimize == per_itr
    start = {n: p.detach().clone() for n, p in agent.model.named_parameters()}
    for itr, info in run_iterations(algo, agent, sampler, range(5)):
        if itr < min_steps_learn // (T * B):
            assert info == {}
            assert algo.update_counter == 0
            for n, p in agent.model.named_parameters():
                assert torch.equal(p, start[n]), n
        else:
            assert algo.update_counter == (itr - 1) * per_itr
            assert set(info) >= {"loss", "grad_norm", "td_abs_err"}
            for name, values in info.items():
                assert len(values) == per_itr and all(math.isfinite(v) for v in values), name
    assert any(not torch.equal(p, start[n]) for n, p in agent.model.named_parameters())
    sampler.shutdown()


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_hard_target_update_every_interval():
    torch.manual_seed(0)
    agent = DqnAgent(model_kwargs={"hidden_sizes": (8,)})
    # 8 steps per iteration, batch of 8, replay ratio 1: one update per iteration.
    algo = DQN(min_steps_learn=0, batch_size=8, replay_ratio=1, target_update_interval=3)
    sampler = setup_on_sampler(algo, agent)
    copies = 0
    for _, _ in run_iterations(algo, agent, sampler, range(7)):
        online, target = params(agent.model), params(agent.target_model)
        same = all(torch.equal(o, t) for o, t in zip(online, target, strict=True))
        assert same == (algo.update_counter % 3 == 0), algo.update_counter
        copies += same
    assert algo.update_counter == 7 and copies == 2
    sampler.shutdown()


def test_soft_target_update_moves_by_tau():
    tau = 0.1
    torch.manual_seed(0)
    agent = DqnAgent(model_kwargs={"hidden_sizes": (8,)})
    algo = DQN(
        min_steps_learn=0,
        batch_size=8,
        replay_ratio=1,
        target_update_tau=tau,
        target_update_interval=2,
    )
    sampler = setup_on_sampler(algo, agent)
    old_target = params(agent.target_model)
    for _, _ in run_iterations(algo, agent, sampler, range(6)):
        online, target = params(agent.model), params(agent.target_model)
        for o, t_old, t_new in zip(online, old_target, target, strict=True):
            if algo.update_counter % 2 == 0:
                assert_close(t_new, t_old + tau * (o - t_old), atol=1e-7, rtol=1e-6)
                assert not torch.equal(t_new, t_old) and not torch.equal(t_new, o)
            else:
                assert torch.equal(t_new, t_old)
        old_target = target
    sampler.shutdown()


def test_epsilon_anneals_linearly_from_min_itr_learn_over_eps_steps():
    agent = make_agent(LinearQ(), eps_init=1.0, eps_final=0.1, eps_eval=0.05)
    # 8 steps per iteration: learning starts at itr 10, epsilon reaches eps_final at 10 + 20.
    algo = DQN(min_steps_learn=80, eps_steps=160, replay_size=64)
    algo.initialize(agent, n_itr=100, batch_spec=BatchSpec(4, 2))
    expected = {0: 1.0, 9: 1.0, 10: 1.0, 15: 0.775, 20: 0.55, 29: 0.145, 30: 0.1, 500: 0.1}
    for itr, eps in expected.items():
        agent.sample_mode(itr)
        assert agent.epsilon == pytest.approx(eps), itr
    agent.eval_mode(20)
    assert agent.epsilon == 0.05
    agent.sample_mode(20)
    assert agent.epsilon == pytest.approx(0.55)


@pytest.mark.parametrize(("global_B", "ranks"), [(4, [0, 1, 2, 3]), (8, [2, 5])])
def test_per_env_final_epsilon_is_log_spaced(global_B, ranks):
    eps_final, eps_final_min = 0.1, 1e-3
    agent = make_agent(LinearQ(), eps_final=eps_final, eps_final_min=eps_final_min, eps_eval=0.0)
    agent.set_epsilon_schedule(0, 10)
    agent.collector_initialize(global_B, ranks)
    log_spaced = [
        math.exp(math.log(eps_final_min) + k / (global_B - 1) * math.log(eps_final / eps_final_min))
        for k in range(global_B)
    ]
    finals = torch.tensor([log_spaced[r] for r in ranks])
    agent.sample_mode(10)
    # float32 arithmetic of init + frac * (final - init): about 1e-8 absolute.
    assert_close(agent.epsilon, finals, rtol=0, atol=1e-7, check_dtype=False)
    agent.sample_mode(5)
    assert_close(agent.epsilon, 1.0 + 0.5 * (finals - 1.0), rtol=0, atol=1e-7, check_dtype=False)
    agent.sample_mode(0)
    assert_close(agent.epsilon, torch.ones(len(ranks)), check_dtype=False)
    if global_B == len(ranks):  # all envs: rank 0 lowest, the last one eps_final
        agent.sample_mode(10)
        assert agent.epsilon[0] == pytest.approx(eps_final_min, rel=1e-4)
        assert agent.epsilon[-1] == pytest.approx(eps_final, rel=1e-4)
        assert (agent.epsilon.diff() > 0).all()
    agent.eval_mode(10)
    assert agent.epsilon == 0.0


def test_step_applies_each_envs_epsilon():
    """Env 0 gets epsilon 1e-6 (greedy), env 1 epsilon 1 (uniform over 3 actions)."""
    agent = make_agent(LinearQ(), eps_final=1.0, eps_final_min=1e-6)
    with torch.no_grad():
        agent.model.linear.weight.copy_(torch.eye(3))
        agent.model.linear.bias.zero_()
    agent.set_epsilon_schedule(0, 1)
    agent.collector_initialize(2, [0, 1])
    agent.sample_mode(1)
    obs = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # greedy actions 1 and 2
    torch.manual_seed(0)
    n = 3000
    greedy = torch.zeros(2)
    for _ in range(n):
        action, info = agent.step(obs, torch.zeros(2, dtype=torch.long), torch.zeros(2, 1))
        greedy += (action == torch.tensor([1, 2])).float()
    assert_close(info["q"], obs)
    assert greedy[0] == n
    assert 0.28 < greedy[1] / n < 0.39
    agent.eps_eval = 0.0
    agent.eval_mode(1)
    action, _ = agent.step(obs, torch.zeros(2, dtype=torch.long), torch.zeros(2, 1))
    assert action.tolist() == [1, 2]


def test_adam_eps_defaults_to_001_over_batch_size():
    agent = make_agent(LinearQ())
    algo = DQN(batch_size=16, learning_rate=1e-3, replay_size=64)
    algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(1, 1))
    group = algo.optimizer.param_groups[0]
    assert isinstance(algo.optimizer, torch.optim.Adam)
    assert group["eps"] == pytest.approx(0.01 / 16) and group["lr"] == 1e-3
    algo = DQN(batch_size=16, optim_kwargs={"eps": 1e-5}, replay_size=64)
    algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(1, 1))
    assert algo.optimizer.param_groups[0]["eps"] == 1e-5
    algo = DQN(optim_cls=torch.optim.SGD, replay_size=64)
    algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(1, 1))
    assert "eps" not in algo.optimizer.param_groups[0]


# ------------------------------------------------------------------- 6. prioritized replay
def spy_on_loss(algo):
    """Record every (batch, loss terms) ``optimize_agent`` computes."""
    calls = []
    loss = algo.loss

    def recording_loss(batch):
        terms = loss(batch)
        calls.append((batch, terms))
        return terms

    algo.loss = recording_loss
    return calls


@needs_per
def test_prioritized_updates_priorities_and_weights():
    alpha = 0.6
    torch.manual_seed(0)
    agent = DqnAgent(model_kwargs={"hidden_sizes": (8,)})
    algo = DQN(
        min_steps_learn=16,
        batch_size=8,
        replay_ratio=1,
        prioritized_replay=True,
        pri_alpha=alpha,
        delta_clip=1.0,
        replay_size=64,
    )
    # IdentityEnv's rewards keep most |delta| below delta_clip, so priorities spread out.
    sampler = setup_on_sampler(algo, agent, env_fn=IdentityEnv, env_kwargs={"n": 3})
    per = algo.replay_buffer.sampler
    assert isinstance(per, PrioritizedSampler)
    eps = per._eps  # added to priorities before the exponent
    calls = spy_on_loss(algo)
    for itr, _ in run_iterations(algo, agent, sampler, range(8)):
        if itr < 2:  # no updates: every complete entry has the default priority delta_clip
            valid = np.flatnonzero(per.tree.leaves)
            assert valid.size == 8 * (itr + 1)
            assert_close(per.tree.get(valid), np.full(valid.size, (1.0 + eps) ** alpha))
            assert not calls
            continue
        batch, terms = calls[-1]
        index = batch[INDEX].numpy()
        expected = (terms["td_abs_err"].double().numpy() + eps) ** alpha
        # Entries drawn twice are the same transition, so they carry the same error.
        assert_close(per.tree.get(index), expected, rtol=1e-6, atol=1e-9)
        # Priorities have diverged from the default one.
        assert not np.allclose(per.tree.get(index), (1.0 + eps) ** alpha)

    batch = algo.replay_buffer.sample_batch(32)
    w = batch[IS_WEIGHT].double()
    assert not torch.all(w == 1) and w.max() == 1.0
    leaves = per.tree.get(batch[INDEX].numpy())
    prob = leaves / per.tree.total()
    expected = (per.tree.num_nonzero * prob) ** -per.beta
    assert_close(w.numpy(), expected / expected.max(), rtol=1e-5, atol=1e-7)
    sampler.shutdown()


@needs_per
def test_prioritized_beta_anneals_over_pri_beta_steps():
    torch.manual_seed(0)
    agent = DqnAgent(model_kwargs={"hidden_sizes": (8,)})
    # 8 steps per iteration: learning from itr 2, beta moves over 4 iterations from there.
    algo = DQN(
        min_steps_learn=16,
        batch_size=8,
        replay_ratio=1,
        prioritized_replay=True,
        pri_beta_init=0.4,
        pri_beta_final=1.0,
        pri_beta_steps=32,
        replay_size=128,
    )
    sampler = setup_on_sampler(algo, agent)
    per = algo.replay_buffer.sampler
    expected = [0.4, 0.4, 0.4, 0.55, 0.7, 0.85, 1.0, 1.0]
    for itr, _ in run_iterations(algo, agent, sampler, range(8)):
        assert per.beta == pytest.approx(expected[itr]), itr
    sampler.shutdown()


# ------------------------------------------------------------------------------ 7. learns
IDENTITY = {"n": 4, "episode_length": 10}
LEARN_KWARGS = {
    "discount": 0.5,
    "min_steps_learn": 256,
    "eps_steps": 1024,
    "batch_size": 32,
    "replay_ratio": 4,
    "target_update_interval": 20,
    "learning_rate": 3e-3,
    "replay_size": 4096,
}


def make_learner(kind: str):
    small = {"hidden_sizes": (32,)}
    if kind == "dqn":
        return DQN(**LEARN_KWARGS), DqnAgent(model_kwargs=small)
    if kind == "c51":
        algo = CategoricalDQN(V_min=0, V_max=10, **LEARN_KWARGS)
        return algo, DqnAgent(n_atoms=21, model_kwargs=small)
    return rainbow_minus_noisy(
        algo_kwargs={"V_min": 0, "V_max": 10, "pri_beta_steps": 2048, **LEARN_KWARGS},
        agent_kwargs={"model_kwargs": small},
        n_atoms=21,
    )


@pytest.mark.parametrize(
    "kind",
    ["dqn", "c51", pytest.param("rainbow", marks=needs_per)],
)
def test_learns_identity_env(kind):
    """Random play scores 10 / 4 = 2.5 per episode; the best return is 10."""
    algo, agent = make_learner(kind)
    if kind == "rainbow":
        assert algo.double_dqn and algo.prioritized_replay and algo.replay.n_step_return == 3
    sampler = SerialSampler(
        IdentityEnv,
        IDENTITY,
        batch_T=8,
        batch_B=4,
        max_decorrelation_steps=0,
        eval_n_envs=2,
        eval_max_trajectories=10,
    )
    runner = MinibatchRlEval(
        algo, agent, sampler, n_steps=3072, seed=0, log_interval_steps=3072, progress_bar=False
    )
    row = runner.train()
    assert row["Diagnostics/TrajsInEval"] >= 10
    assert row["ReturnAverage"] >= 9.0


@pytest.mark.slow
@pytest.mark.timeout(900)  # 25 s measured under load
def test_double_dqn_learns_cartpole():
    """About 25 s on 2 cores; random play scores about 22."""
    algo = DQN(
        discount=0.99,
        min_steps_learn=1000,
        eps_steps=10_000,
        batch_size=64,
        replay_ratio=8,
        target_update_interval=250,
        learning_rate=5e-4,
        replay_size=50_000,
        double_dqn=True,
        n_step_return=3,
    )
    agent = DqnAgent(model_kwargs={"hidden_sizes": (64, 64)}, eps_final=0.02)
    sampler = SerialSampler(
        env_kwargs={"id": "CartPole-v1"},
        batch_T=10,
        batch_B=4,
        max_decorrelation_steps=0,
        eval_n_envs=4,
        eval_max_trajectories=8,
        eval_max_steps=8 * 500,
    )
    runner = MinibatchRlEval(
        algo, agent, sampler, n_steps=100_000, seed=0, log_interval_steps=25_000,
        progress_bar=False,
    )  # fmt: skip
    row = runner.train()
    assert row["ReturnAverage"] >= 100  # random play scores about 22


# ------------------------------------------------------------------------- 8. determinism
def short_run(kind: str, seed: int, n_itr: int = 4):
    torch.manual_seed(seed)
    common = {"min_steps_learn": 8, "batch_size": 8, "replay_ratio": 2, "replay_size": 128}
    if kind == "dqn":
        algo, agent = DQN(double_dqn=True, **common), DqnAgent(model_kwargs={"hidden_sizes": (8,)})
    else:
        algo, agent = rainbow_minus_noisy(
            algo_kwargs={"V_min": -5, "V_max": 5, **common},
            agent_kwargs={"model_kwargs": {"hidden_sizes": (8,)}},
            n_atoms=5,
        )
    sampler = setup_on_sampler(algo, agent, env_fn=IdentityEnv, env_kwargs={"n": 3}, seed=seed)
    infos = [info for _, info in run_iterations(algo, agent, sampler, range(n_itr))]
    sampler.shutdown()
    return infos, {n: p.detach().clone() for n, p in agent.named_parameters()}


@pytest.mark.parametrize("kind", ["dqn", pytest.param("rainbow", marks=needs_per)])
def test_same_seed_same_result(kind):
    infos_a, params_a = short_run(kind, seed=3)
    infos_b, params_b = short_run(kind, seed=3)
    infos_c, params_c = short_run(kind, seed=4)
    assert infos_a == infos_b
    assert infos_a[-1]["loss"]
    for name in params_a:
        assert torch.equal(params_a[name], params_b[name]), name
    assert [i.get("loss") for i in infos_a] != [i.get("loss") for i in infos_c]
    assert any(not torch.equal(params_a[n], params_c[n]) for n in params_a)


def counting_runner(
    n_itr, *, seed=0, resume_from=None, n_step_return=1, min_steps_learn=8, snapshot_replay=False
):
    torch.manual_seed(seed)
    return MinibatchRl(
        DQN(
            min_steps_learn=min_steps_learn,
            batch_size=4,
            replay_size=64,
            n_step_return=n_step_return,
        ),
        DqnAgent(model_kwargs={"hidden_sizes": (8,)}),
        SerialSampler(CountingEnv, {}, batch_T=2, batch_B=2, max_decorrelation_steps=0),
        n_steps=n_itr * 4,
        seed=seed,
        log_interval_steps=4,
        progress_bar=False,
        resume_from=resume_from,
        snapshot_replay=snapshot_replay,
    )


def test_runner_with_same_seed_gives_same_dqn_run():
    first = counting_runner(6, seed=1).train()
    second = counting_runner(6, seed=1).train()
    assert first["lossAverage"] == second["lossAverage"]


# ------------------------------------------------------------------------- 9. bad input
@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: DQN(discount=2), "discount"),
        (lambda: DQN(batch_size=0), "batch_size"),
        (lambda: DQN(replay_ratio=0), "replay_ratio"),
        (lambda: DQN(replay_storage="disk"), "replay_storage"),
        (lambda: DQN(target_update_tau=0), "target_update_tau"),
        (lambda: DQN(target_update_interval=0), "target_update_interval"),
        (lambda: DQN(n_step_return=0), "n_step_return"),
        (lambda: DQN(delta_clip=0), "delta_clip"),
        (lambda: DQN(min_steps_learn=-1), "min_steps_learn"),
        (lambda: DQN(pri_beta_init=1.5), "pri_beta_init"),
        (lambda: CategoricalDQN(V_min=1, V_max=0), "V_min"),
        (lambda: CategoricalDQN(discount=-0.1), "discount"),
        (lambda: DqnAgent(eps_init=1.5), "eps_init"),
        (lambda: DqnAgent(eps_eval=-0.1), "eps_eval"),
        (lambda: DqnAgent(eps_final=0.01, eps_final_min=0.1), "eps_final_min"),
        (lambda: DqnAgent(n_atoms=1), "n_atoms"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_arguments_raise_naming_the_argument(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_wrong_agents_are_refused():
    plain = make_agent(LinearQ())
    with pytest.raises(TypeError, match="n_atoms"):
        CategoricalDQN().initialize(plain, n_itr=1, batch_spec=BatchSpec(1, 1))
    pg_agent = CategoricalPgAgent()
    with pytest.raises(TypeError, match="DqnAgent"):
        DQN().initialize(pg_agent, n_itr=1, batch_spec=BatchSpec(1, 1))
    box = space_to_spec(gym.spaces.Box(-1, 1, (2,), np.float32))
    with pytest.raises(TypeError, match="Discrete"):
        DqnAgent().initialize(box, box)


def test_min_steps_learn_shorter_than_n_step_window_is_handled():
    torch.manual_seed(0)
    agent = DqnAgent(model_kwargs={"hidden_sizes": (8,)})
    algo = DQN(min_steps_learn=0, n_step_return=3, batch_size=4, replay_size=64)
    sampler = SerialSampler(CountingEnv, {}, batch_T=2, batch_B=2, max_decorrelation_steps=0)
    sampler.initialize(agent, seed=0)
    try:
        algo.initialize(agent, n_itr=4, batch_spec=sampler.batch_spec)
    except ValueError as error:  # an eager refusal naming the argument is fine too
        assert "min_steps_learn" in str(error)
        return
    samples, _ = sampler.obtain_samples(0)
    assert algo.optimize_agent(0, samples) == {}


# ---------------------------------------------------------------------- 10. state round trip
@pytest.mark.parametrize("kind", ["dqn", pytest.param("rainbow", marks=needs_per)])
def test_algo_state_dict_round_trip(kind, tmp_path):
    def new_pair():
        torch.manual_seed(0)
        common = {"min_steps_learn": 0, "batch_size": 8, "replay_ratio": 1, "replay_size": 64}
        common["target_update_interval"] = 3
        if kind == "dqn":
            return DQN(**common), DqnAgent(model_kwargs={"hidden_sizes": (8,)})
        return rainbow_minus_noisy(
            algo_kwargs={"V_min": -10, "V_max": 10, **common},
            agent_kwargs={"model_kwargs": {"hidden_sizes": (8,)}},
            n_atoms=5,
        )

    algo, agent = new_pair()
    sampler = setup_on_sampler(algo, agent)
    for _ in run_iterations(algo, agent, sampler, range(4)):
        pass
    assert algo.update_counter == 4
    agent.sample_mode(4)
    samples, _ = sampler.obtain_samples(4)
    samples = samples.clone()
    sampler.shutdown()
    buffer = io.BytesIO()
    torch.save({"algo": algo.state_dict(), "agent": agent.state_dict()}, buffer)
    buffer.seek(0)
    snapshot = torch.load(buffer, weights_only=False)
    algo.replay_buffer.save(tmp_path / "replay")

    def restored(load_algo_state: bool):
        algo_b, agent_b = new_pair()
        agent_b.initialize(sampler.observation_spec, sampler.action_spec)
        agent_b.load_state_dict(snapshot["agent"])
        algo_b.initialize(agent_b, n_itr=100, batch_spec=sampler.batch_spec)
        algo_b.replay_buffer.load(tmp_path / "replay")
        if load_algo_state:
            algo_b.load_state_dict(copy.deepcopy(snapshot["algo"]))
        return algo_b, agent_b

    algo_b, agent_b = restored(True)
    assert algo_b.update_counter == 4
    state_a = algo.optimizer.state_dict()["state"]
    state_b = algo_b.optimizer.state_dict()["state"]
    for k in state_a:
        for name in state_a[k]:
            assert torch.equal(state_a[k][name], state_b[k][name]), (k, name)

    # Two more updates from both: the 6th is a target update in both.
    infos = []
    for a, ag in ((algo, agent), (algo_b, agent_b)):
        ag.train_mode(4)
        torch.manual_seed(7)
        infos.append([a.optimize_agent(4, samples), a.optimize_agent(5, samples)])
    assert infos[0] == infos[1]
    assert algo_b.update_counter == 6
    for (name, p), p_b in zip(agent.named_parameters(), agent_b.parameters(), strict=True):
        assert torch.equal(p, p_b), name
    for o, t in zip(agent_b.model.parameters(), agent_b.target_model.parameters(), strict=True):
        assert torch.equal(o, t)

    # A fresh optimizer and counter give another update (the check above can fail).
    algo_c, agent_c = restored(False)
    torch.manual_seed(7)
    algo_c.optimize_agent(4, samples)
    algo_c.optimize_agent(5, samples)
    assert algo_c.update_counter == 2
    assert any(
        not torch.equal(p, p_c)
        for p, p_c in zip(agent.parameters(), agent_c.parameters(), strict=True)
    )


def test_runner_resume_of_an_n_step_dqn_run(tmp_path):
    with logger_context(tmp_path, 0, "t", echo=False):
        counting_runner(4, n_step_return=3).train()
    resumed = counting_runner(6, n_step_return=3, resume_from=tmp_path / "run_0")
    with logger_context(tmp_path, 0, "t", echo=False, resume=True):
        row = resumed.train()
    assert resumed.algo.update_counter > 0 and math.isfinite(row["lossAverage"])


def test_runner_resume_restores_the_replay_buffer(tmp_path):
    with logger_context(tmp_path, 0, "t", echo=False):
        first = counting_runner(4, n_step_return=3, snapshot_replay=True)
        first.train()
    saved = len(first.algo.replay_buffer)
    assert saved > 0 and (tmp_path / "run_0" / "replay" / "replay_state.pt").exists()
    resumed = counting_runner(6, n_step_return=3, resume_from=tmp_path / "run_0")
    with logger_context(tmp_path, 0, "t", echo=False, resume=True):
        resumed.startup()
        assert len(resumed.algo.replay_buffer) == saved
        assert resumed.algo.replay_buffer.t == first.algo.replay_buffer.t
        resumed.sampler.shutdown()
