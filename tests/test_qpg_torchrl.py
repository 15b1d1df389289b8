"""DDPG, TD3 and SAC against TorchRL's ``DDPGLoss``, ``TD3Loss`` and ``SACLoss`` (v2, no
value network).

tdrl keeps its own written-out losses (``tdrl.algos.qpg``); these tests check that they give
the values TorchRL's loss modules give on the same replay batch (one terminal and one
non-terminal row, 1-step returns, importance weights), with the same network weights and,
where the losses sample, the same noise. TorchRL sees tdrl's actor (the same ``nn.Module``,
wrapped in a ``TensorDictModule``) and critics with tdrl's weights: DDPG's single critic is
tdrl's own ``QEnsembleMlpModel`` wrapped; for the twin critics TorchRL vmaps one network over
stacked parameters, so ``OneCritic`` has one critic's layout (``[in, out]`` weights) and
tdrl's stacked ``[n_q, in, out]`` ensemble weights are copied into TorchRL's parameters. The
target networks are perturbed away from the online ones and copied into TorchRL's
``target_*_params``. Compared: the critic loss, the TD target, the actor loss, SAC's
temperature loss, and the gradients of the critic (and actor) losses.

The differences found (``docs/design.md``), each pinned below by a factor or a setting:

* Critic loss: tdrl (as rlpyt) takes ``0.5 (Q_i - y)^2``, TorchRL's ``"l2"`` ``(Q_i - y)^2``;
  both sum over the critics and average over the batch. TD3Loss and SACLoss default to
  ``loss_function="smooth_l1"``, so ``"l2"`` is passed.
* Importance weights: tdrl reduces the critic loss as ``mean(w l)``, TorchRL as
  ``sum(w l) / sum(w)``: ``L_tdrl = 0.5 mean(w) L_torchrl``. TorchRL also weights the actor
  and temperature losses by ``priority_weight``; tdrl (as rlpyt) does not, so those are
  compared with TorchRL on the batch without weights.
* Update order: TorchRL computes every loss at the same parameters. tdrl's SAC does too
  (one backward pass), but DDPG / TD3 step the critics first and take the actor loss against
  the stepped critics; the tests set the critics' learning rate to 0 to compare.
* DDPG: ``DDPGLoss`` defaults to ``delay_actor=False`` (the target action is the online
  actor's); rlpyt / tdrl use a target actor, so ``delay_actor=True``. tdrl also clips the
  target at ``±q_target_clip`` (1e6, inactive here); TorchRL does not clip.
* TD3 target smoothing: tdrl adds ``clip(N(0, s^2), ±c)`` in the ``[-1, 1]`` action space and
  maps to the env's bounds; TorchRL adds it in env units and clips to the bounds. They agree
  for bounds ``[-1, 1]`` (compared with the same fixed noise) and with the noise off (any
  bounds); for other bounds tdrl's noise is scaled by ``(high - low) / 2``.
* SAC: ``TanhNormal`` with bounds other than ``[-1, 1]`` adds ``-sum log((high - low) / 2)``
  (the affine map's Jacobian) to ``log pi``; tdrl leaves it out (as Stable-Baselines3), so
  its ``target_entropy = -|A|`` means the same for any bounds. With bounds ``[-1, 1]`` the
  losses agree. ``SACLoss`` draws the next-state action (for the target) before the
  current-state action (for the actor); tdrl draws them the other way round.
* tdrl extras with no TorchRL counterpart, left at their neutral settings here: SAC's
  ``reward_scale`` and Gaussian ``action_prior``, DDPG with ``n_q=2`` (min of twin targets;
  ``DDPGLoss`` has one critic), n-step returns with ``gamma^m`` (TorchRL's TD(0) estimator
  here is 1-step).
"""

from __future__ import annotations

import itertools
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torch.testing import assert_close
from torchrl.data import Bounded
from torchrl.modules import ProbabilisticActor, TanhNormal
from torchrl.objectives import DDPGLoss, SACLoss, TD3Loss, ValueEstimators

from tdrl import keys
from tdrl.agents.qpg import DdpgAgent, SacAgent, Td3Agent
from tdrl.agents.qpg.squashed_gaussian import squashed_gaussian_sample
from tdrl.algos.qpg import DDPG, SAC, TD3
from tdrl.envs import space_to_spec
from tdrl.keys import DISCOUNT_N, DONE_N, INDEX, IS_WEIGHT, RETURN_N, STEPS_N
from tdrl.samplers import BatchSpec

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater:UserWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------- helpers
OBS_DIM = 3
UNIT = ([-1.0, -1.0], [1.0, 1.0])
ASYM = ([-2.0, 0.0], [2.0, 1.0])  # scale (2, 0.5), bias (0, 0.5)
GAMMA = 0.9
OBS = [[0.5, -1.0, 0.3], [-0.2, 0.4, 1.1]]
NEXT_OBS = [[1.0, 0.2, -0.7], [0.3, -0.6, 0.8]]
REWARDS = [1.0, -0.5]
DONE = [True, False]  # row 0 terminal, row 1 non-terminal
WEIGHTS = [0.5, 2.0]
HIDDEN = (8, 8)
TOL = {"atol": 1e-6, "rtol": 1e-5}


def make_agent(cls, bounds, seed=0, **kwargs):
    torch.manual_seed(seed)
    hidden = {"hidden_sizes": HIDDEN}
    agent = cls(model_kwargs=hidden, q_model_kwargs=hidden, **kwargs)
    low, high = (np.array(b, np.float32) for b in bounds)
    obs_box = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    agent.initialize(space_to_spec(obs_box), space_to_spec(gym.spaces.Box(low, high)))
    return agent


def make_algo(cls, agent, **kwargs):
    algo = cls(discount=GAMMA, replay_size=64, **kwargs)
    algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(1, 1))
    return algo


def perturb(*modules, scale=0.2, seed=1):
    """Move target networks away from the online ones (else a target-vs-online mix-up
    would go unnoticed)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.add_(scale * torch.randn(p.shape, generator=g))


def replay_batch(bounds) -> TensorDict:
    """tdrl's replay batch: two 1-step transitions, row 0 terminal."""
    low, high = torch.tensor(bounds[0]), torch.tensor(bounds[1])
    action = low + (high - low) * torch.tensor([[0.8, 0.3], [0.15, 0.9]])  # inside the bounds
    done = torch.tensor(DONE)

    def inputs(obs):
        return {
            keys.OBSERVATION: torch.tensor(obs),
            keys.PREV_ACTION: torch.zeros_like(action),
            keys.PREV_REWARD: torch.zeros(2),
        }

    return TensorDict(
        {
            **inputs(OBS),
            keys.ACTION: action,
            keys.NEXT: TensorDict(inputs(NEXT_OBS), batch_size=[2]),
            RETURN_N: torch.tensor(REWARDS),
            DISCOUNT_N: GAMMA * (~done).float(),
            DONE_N: done,
            STEPS_N: torch.ones(2, dtype=torch.long),
            IS_WEIGHT: torch.tensor(WEIGHTS),
            INDEX: torch.arange(2),
        },
        batch_size=[2],
    )


def torchrl_td(batch: TensorDict, *, weighted: bool) -> TensorDict:
    """The same batch in TorchRL's layout (rewards and done flags ``[N, 1]``)."""
    terminated = batch[DONE_N].unsqueeze(-1)
    td = TensorDict(
        {
            "observation": batch[keys.OBSERVATION],
            "action": batch[keys.ACTION],
            "next": {
                "observation": batch[keys.NEXT_OBSERVATION],
                "reward": batch[RETURN_N].unsqueeze(-1),
                "done": terminated,
                "terminated": terminated,
            },
        },
        batch_size=batch.batch_size,
    )
    if weighted:
        td["priority_weight"] = batch[IS_WEIGHT]
    return td


class EnvMu(nn.Module):
    """tdrl's deterministic actor with its ``[-1, 1] -> env`` map (the same parameters)."""

    def __init__(self, agent: DdpgAgent):
        super().__init__()
        self.model = agent.model
        self.scale, self.bias = agent.action_scale.clone(), agent.action_bias.clone()

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return self.model(observation) * self.scale + self.bias


def mu_module(agent: DdpgAgent) -> TensorDictModule:
    return TensorDictModule(EnvMu(agent), in_keys=["observation"], out_keys=["action"])


class OneCritic(nn.Module):
    """One of tdrl's ensemble critics in its own layout (``x @ W + b``, ``W: [in, out]``):
    TorchRL stacks ``n`` copies into ``[n, in, out]``, ``QEnsembleMlpModel``'s layout."""

    def __init__(self, sizes):
        super().__init__()
        pairs = list(itertools.pairwise(sizes))
        self.weights = nn.ParameterList(nn.Parameter(torch.zeros(i, o)) for i, o in pairs)
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(1, o)) for _, o in pairs)

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([observation, action], dim=-1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = x @ w + b
            if i < last:
                x = torch.relu(x)
        return x  # [N, 1]


def critic_module() -> TensorDictModule:
    net = OneCritic([OBS_DIM + 2, *HIDDEN, 1])
    return TensorDictModule(net, in_keys=["observation", "action"], out_keys=["state_action_value"])


def stacked(params: TensorDict) -> list[torch.Tensor]:
    """TorchRL's stacked critic parameters in ``QEnsembleMlpModel.parameters()`` order."""
    n = len(params["module", "weights"].keys())
    return [params["module", "weights", str(i)] for i in range(n)] + [
        params["module", "biases", str(i)] for i in range(n)
    ]


def load_critics(params: TensorDict, q_model: nn.Module) -> None:
    with torch.no_grad():
        for theirs, ours in zip(stacked(params), q_model.parameters(), strict=True):
            theirs.copy_(ours)


def load_actor(params: TensorDict, model: nn.Module) -> None:
    """Copy ``model``'s parameters into TorchRL's target actor parameters of ``EnvMu``
    (they are a copy only with ``delay_actor=True``, else the online parameters' data)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            params[("module", "model", *name.split("."))].copy_(p)


def grads(params) -> list[torch.Tensor]:
    return [p.grad.clone() for p in params]


class FixedNoise:
    """Replaces a standard-normal draw with a known sequence of ``[N, A]`` noises (cycled)."""

    def __init__(self, *noises):
        self.noises = list(noises)
        self.calls = 0

    def next(self, shape) -> torch.Tensor:
        out = self.noises[self.calls % len(self.noises)].expand(shape).clone()
        self.calls += 1
        return out

    def randn_like(self, like, *args, **kwargs):  # torch.randn_like
        return self.next(like.shape).to(like.dtype)

    def standard_normal(self, shape, dtype, device):  # torch.distributions.normal
        return self.next(shape).to(dtype)


# ---------------------------------------------------------------------------------- 1. DDPG
class FirstCritic(nn.Module):
    """tdrl's critic ensemble (the same parameters) as one ``[N, 1]`` Q-value."""

    def __init__(self, q_model: nn.Module):
        super().__init__()
        self.q_model = q_model

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.q_model(observation, action)[0].unsqueeze(-1)


def test_ddpg_matches_ddpgloss():
    agent = make_agent(DdpgAgent, ASYM)  # DDPG: any bounds, nothing sampled
    perturb(agent.target_model, agent.target_q_model)
    algo = make_algo(DDPG, agent)
    algo.q_optimizer.param_groups[0]["lr"] = 0.0  # the actor loss sees the critic unstepped
    batch = replay_batch(ASYM)

    # TorchRL's value network is tdrl's own single critic (no vmap in DDPGLoss).
    q_net = TensorDictModule(
        FirstCritic(agent.q_model),
        in_keys=["observation", "action"],
        out_keys=["state_action_value"],
    )
    reference = DDPGLoss(mu_module(agent), q_net, delay_actor=True, delay_value=True)
    reference.make_value_estimator(ValueEstimators.TD0, gamma=GAMMA)
    load_actor(reference.target_actor_network_params, agent.target_model)
    for theirs, ours in zip(
        reference.target_value_network_params.values(True, True),
        agent.target_q_model.parameters(),
        strict=True,
    ):
        theirs.data.copy_(ours)
    q_params, mu_params = list(agent.q_model.parameters()), list(agent.model.parameters())
    theirs = reference(torchrl_td(batch, weighted=True))
    their_q_grads = torch.autograd.grad(theirs["loss_value"], q_params)
    unweighted = reference(torchrl_td(batch, weighted=False))
    their_mu_grads = torch.autograd.grad(unweighted["loss_actor"], mu_params)

    with torch.no_grad():  # the TD target from tdrl's agent: target actor, target critic
        next_obs = batch[keys.NEXT_OBSERVATION]
        next_q = agent.target_q(next_obs, agent.target_mu(next_obs))[0]
        target = batch[RETURN_N] + batch[DISCOUNT_N] * next_q
    info = algo.update(batch)

    assert target[0] == REWARDS[0] and target[1] != REWARDS[1]
    assert_close(theirs["target_value"], target, **TOL)
    weight_mean = batch[IS_WEIGHT].mean()
    assert info["loss_q"] > 1e-3
    assert_close(info["loss_q"], 0.5 * weight_mean * theirs["loss_value"].detach(), **TOL)
    for ours, their in zip(grads(q_params), their_q_grads, strict=True):
        assert_close(ours, 0.5 * weight_mean * their, **TOL)
    assert any(g.abs().sum() > 0 for g in their_q_grads)
    assert info["loss_pi"].abs() > 1e-3
    assert_close(info["loss_pi"], unweighted["loss_actor"].detach(), **TOL)
    assert not torch.allclose(theirs["loss_actor"], unweighted["loss_actor"])  # TorchRL: w
    for ours, their in zip(grads(mu_params), their_mu_grads, strict=True):
        assert_close(ours, their, **TOL)


# ----------------------------------------------------------------------------------- 2. TD3
TD3_NOISE = torch.tensor([[3.0, -0.4], [-2.0, 1.0]])  # x 0.2: 0.6 is clipped to 0.5


@pytest.mark.parametrize(
    ("bounds", "noise"), [(ASYM, False), (UNIT, True)], ids=["asym-no-noise", "unit-noise"]
)
def test_td3_matches_td3loss(bounds, noise, monkeypatch):
    agent = make_agent(Td3Agent, bounds)
    perturb(agent.target_model, agent.target_q_model)
    noise_kwargs = {} if noise else {"target_noise_std": 0.0}  # on: TD3's 0.2 and 0.5
    algo = make_algo(TD3, agent, **noise_kwargs)
    assert algo.policy_update_interval == 2 and algo.target_update_interval == 2
    algo.q_optimizer.param_groups[0]["lr"] = 0.0
    batch = replay_batch(bounds)

    # Target smoothing: the same noise on both sides, in [-1, 1] units (bounds UNIT), or
    # none (TorchRL still draws it, times policy_noise=0).
    reference = TD3Loss(
        mu_module(agent),
        critic_module(),
        bounds=tuple(torch.tensor(b) for b in bounds),
        policy_noise=algo.target_noise_std,
        noise_clip=algo.target_noise_clip,
        loss_function="l2",
    )
    reference.make_value_estimator(ValueEstimators.TD0, gamma=GAMMA)
    load_critics(reference.qvalue_network_params, agent.q_model)
    load_critics(reference.target_qvalue_network_params, agent.target_q_model)
    load_actor(reference.target_actor_network_params, agent.target_model)
    fixed = FixedNoise(TD3_NOISE)
    monkeypatch.setattr(torch, "randn_like", fixed.randn_like)
    q_params = stacked(reference.qvalue_network_params)
    theirs = reference(torchrl_td(batch, weighted=True))
    their_q_grads = torch.autograd.grad(theirs["loss_qvalue"], q_params)
    mu_params = list(agent.model.parameters())
    their_actor, _ = reference.actor_loss(torchrl_td(batch, weighted=False))
    their_mu_grads = torch.autograd.grad(their_actor, mu_params)

    with torch.no_grad():
        next_obs = batch[keys.NEXT_OBSERVATION]
        next_action = agent.target_mu(next_obs, algo.target_noise_std, algo.target_noise_clip)
        next_q = agent.target_q(next_obs, next_action).min(0).values
        target = batch[RETURN_N] + batch[DISCOUNT_N] * next_q
        unsmoothed = agent.target_q(next_obs, agent.target_mu(next_obs)).min(0).values
    assert (next_q != unsmoothed).all() == noise
    first = algo.update(batch)  # critic only
    assert "loss_pi" not in first
    q_grads = grads(agent.q_model.parameters())
    info = algo.update(batch)  # critic (unmoved: lr 0) and the delayed actor
    assert fixed.calls == (4 if noise else 1)  # TorchRL draws (x 0) even with the noise off

    assert target[0] == REWARDS[0] and target[1] != REWARDS[1]
    assert_close(theirs["target_value"], target, **TOL)
    weight_mean = batch[IS_WEIGHT].mean()
    assert first["loss_q"] > 1e-3
    assert_close(info["loss_q"], first["loss_q"])
    assert_close(first["loss_q"], 0.5 * weight_mean * theirs["loss_qvalue"].detach(), **TOL)
    for ours, their in zip(q_grads, their_q_grads, strict=True):
        assert_close(ours, 0.5 * weight_mean * their, **TOL)
    assert all(g.abs().sum() > 0 for g in their_q_grads)
    assert info["loss_pi"].abs() > 1e-3
    assert_close(info["loss_pi"], their_actor.detach(), **TOL)  # -Q_1 (the first critic)
    for ours, their in zip(grads(mu_params), their_mu_grads, strict=True):
        assert_close(ours, their, **TOL)


# ----------------------------------------------------------------------------------- 3. SAC
class LocScale(nn.Module):
    """tdrl's Gaussian policy head as TorchRL's ``(loc, scale)`` (the same parameters)."""

    def __init__(self, agent: SacAgent):
        super().__init__()
        self.model = agent.model
        self.log_std_min, self.log_std_max = agent.log_std_min, agent.log_std_max

    def forward(self, observation):
        mean, log_std = self.model(observation)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max).exp()


def sac_actor(agent: SacAgent) -> ProbabilisticActor:
    low, high = UNIT
    return ProbabilisticActor(
        TensorDictModule(LocScale(agent), in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=Bounded(torch.tensor(low), torch.tensor(high), (2,)),
        distribution_class=TanhNormal,
        distribution_kwargs={"low": low[0], "high": high[0]},
    )


ALPHA = 0.3
NOISE_O = torch.tensor([[0.3, -1.2], [0.8, 0.1]])  # for a~ ~ pi(.|o)
NOISE_NEXT = torch.tensor([[-0.5, 0.9], [1.4, -0.2]])  # for a' ~ pi(.|o')


def test_sac_matches_sacloss(monkeypatch):
    agent = make_agent(SacAgent, UNIT)  # bounds [-1, 1]: the same log pi on both sides
    perturb(agent.target_q_model)
    algo = make_algo(SAC, agent)
    with torch.no_grad():
        algo.log_alpha.fill_(math.log(ALPHA))
    batch = replay_batch(UNIT)

    reference = SACLoss(sac_actor(agent), critic_module(), alpha_init=ALPHA, loss_function="l2")
    reference.make_value_estimator(ValueEstimators.TD0, gamma=GAMMA)
    load_critics(reference.qvalue_network_params, agent.q_model)
    load_critics(reference.target_qvalue_network_params, agent.target_q_model)
    assert reference.target_entropy == algo.target_entropy == -2.0

    # SACLoss draws the target's a' (at o') first, then the actor's a~ (at o).
    torchrl_noise = FixedNoise(NOISE_NEXT, NOISE_O, NOISE_NEXT, NOISE_O, NOISE_NEXT)
    normal = torch.distributions.normal
    monkeypatch.setattr(normal, "_standard_normal", torchrl_noise.standard_normal)
    q_params = stacked(reference.qvalue_network_params)
    pi_params = list(agent.model.parameters())
    theirs = reference(torchrl_td(batch, weighted=True))
    their_q_grads = torch.autograd.grad(theirs["loss_qvalue"], q_params)
    unweighted = reference(torchrl_td(batch, weighted=False))
    their_pi_grads = torch.autograd.grad(unweighted["loss_actor"], pi_params)
    with torch.no_grad():  # SACLoss returns no target; its (private) target computation
        their_target = reference._compute_target_v2(torchrl_td(batch, weighted=False))
    assert torchrl_noise.calls == 5

    tdrl_noise = FixedNoise(NOISE_NEXT)  # the TD target from tdrl's agent
    monkeypatch.setattr(torch, "randn_like", tdrl_noise.randn_like)
    with torch.no_grad():
        next_obs = batch[keys.NEXT_OBSERVATION]
        next_action, next_log_pi, _, _ = agent.pi(next_obs)
        next_q = agent.target_q(next_obs, next_action).min(0).values
        target = batch[RETURN_N] + batch[DISCOUNT_N] * (next_q - ALPHA * next_log_pi)
    tdrl_noise = FixedNoise(NOISE_O, NOISE_NEXT)  # tdrl's update draws a~ first, then a'
    monkeypatch.setattr(torch, "randn_like", tdrl_noise.randn_like)
    info = algo.update(batch)
    assert tdrl_noise.calls == 2

    assert target[0] == REWARDS[0] and target[1] != REWARDS[1]
    assert_close(their_target, target, **TOL)
    weight_mean = batch[IS_WEIGHT].mean()
    assert info["loss_q"] > 1e-3
    assert_close(info["loss_q"], 0.5 * weight_mean * theirs["loss_qvalue"].detach(), **TOL)
    for ours, their in zip(grads(agent.q_model.parameters()), their_q_grads, strict=True):
        assert_close(ours, 0.5 * weight_mean * their, **TOL)
    assert all(g.abs().sum() > 0 for g in their_q_grads)
    assert info["loss_pi"].abs() > 1e-3 and info["loss_alpha"].abs() > 1e-3
    assert_close(info["loss_pi"], unweighted["loss_actor"].detach(), **TOL)
    assert_close(info["loss_alpha"], unweighted["loss_alpha"].detach(), **TOL)
    assert_close(info["log_pi"], -unweighted["entropy"], **TOL)
    assert not torch.allclose(theirs["loss_actor"], unweighted["loss_actor"])  # TorchRL: w
    for ours, their in zip(grads(pi_params), their_pi_grads, strict=True):
        assert_close(ours, their, **TOL)


def test_sac_log_prob_differs_by_the_affine_jacobian_on_other_bounds():
    """With bounds other than ``[-1, 1]`` TorchRL's ``TanhNormal`` includes the affine
    map's log-Jacobian in ``log pi``; tdrl leaves it out: the actions agree, the log-probs
    differ by ``sum log((high - low) / 2)`` (the reason SAC is compared on ``[-1, 1]``)."""
    bounds = ([-2.0, 0.0], [2.0, 3.0])  # scale (2, 1.5): sum log scale = log 3
    agent = make_agent(SacAgent, bounds)
    mean, log_std = torch.randn(5, 2) * 0.5, torch.rand(5, 2) - 1.0
    noise = torch.randn(5, 2)
    low, high = (torch.tensor(b) for b in bounds)
    dist = TanhNormal(mean, log_std.exp(), low=low, high=high)
    fixed = FixedNoise(noise, noise)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.distributions.normal, "_standard_normal", fixed.standard_normal)
        their_action, their_log_prob = dist.rsample_and_log_prob()
        mp.setattr(torch, "randn_like", fixed.randn_like)
        squashed, log_prob = squashed_gaussian_sample(mean, log_std)
    assert_close(their_action, agent.to_env(squashed), **TOL)
    jacobian = agent.action_scale.log().sum()
    assert_close(jacobian, torch.tensor(math.log(3.0)))
    assert_close(their_log_prob, log_prob - jacobian, **TOL)
