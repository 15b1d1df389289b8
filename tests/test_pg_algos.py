"""A2C and PPO: update sanity, the loss against hand and TorchRL computations, learning,
determinism, argument checks, schedules and state round trips.

Batches come from ``SerialSampler`` on the envs of ``tdrl.testing``, so the tests see the
same ``[T, B]`` TensorDicts the runner feeds the algorithms.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torch.testing import assert_close
from torchrl.modules import ProbabilisticActor, ValueOperator
from torchrl.objectives import A2CLoss, ClipPPOLoss
from torchrl.objectives.value import GAE

from tdrl import keys
from tdrl.agents import Agent, CategoricalPgAgent, GaussianPgAgent
from tdrl.algos import A2C, PPO
from tdrl.algos.pg.base import process_returns
from tdrl.models.pg.mlp import CategoricalPgMlpModel
from tdrl.runners import MinibatchRl
from tdrl.samplers import BatchSpec, SerialSampler
from tdrl.testing import ContinuousIdentityEnv, CountingEnv, IdentityEnv

ALGOS = {"a2c": A2C, "ppo": PPO}
# kind -> (agent class, env factory, env kwargs)
KINDS = {
    "categorical": (CategoricalPgAgent, CountingEnv, {"episode_length": 3}),
    "gaussian": (GaussianPgAgent, ContinuousIdentityEnv, {"dim": 2, "episode_length": 5}),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_setup(algo, kind: str, *, seed: int = 0, env_fn=None, env_kwargs=None, n_itr=10):
    """Agent, sampler and one sampled ``[8, 4]`` batch (a copy), with ``algo`` initialised."""
    agent_cls, default_env_fn, default_kwargs = KINDS[kind]
    torch.manual_seed(seed)
    agent = agent_cls()
    sampler = SerialSampler(
        env_fn or default_env_fn,
        default_kwargs if env_kwargs is None else env_kwargs,
        batch_T=8,
        batch_B=4,
        max_decorrelation_steps=0,
    )
    sampler.initialize(agent, seed=seed)
    algo.initialize(agent, n_itr=n_itr, batch_spec=sampler.batch_spec)
    agent.sample_mode(0)
    samples, _ = sampler.obtain_samples(0)
    samples = samples.clone()
    sampler.shutdown()
    agent.train_mode(0)
    return agent, sampler, samples


def training_batch(algo, agent: Agent, samples: TensorDict, *, log_prob_noise: float = 0.3):
    """The flat batch ``loss`` sees, with the stored log-probs perturbed so ratios differ
    from 1."""
    batch = process_returns(
        agent,
        samples,
        discount=algo.discount,
        gae_lambda=algo.gae_lambda,
        normalize_advantage=False,
    ).reshape(-1)
    g = torch.Generator().manual_seed(1)
    batch[keys.LOG_PROB] = batch[keys.LOG_PROB] + log_prob_noise * torch.randn(
        batch.shape, generator=g
    )
    return batch


def trainable(agent: Agent) -> dict[str, nn.Parameter]:
    return {n: p for n, p in agent.named_parameters() if p.requires_grad}


# --------------------------------------------------------------------------- update sanity
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("algo_name", ALGOS)
def test_loss_is_finite_reaches_every_parameter_and_leaves_batch_alone(algo_name, kind):
    algo = ALGOS[algo_name]()
    agent, _, samples = make_setup(algo, kind)
    batch = training_batch(algo, agent, samples)
    before = batch.clone()

    terms = algo.loss(batch)
    assert torch.isfinite(terms["loss"])
    assert terms["loss"].requires_grad
    keys = ["loss_pi", "loss_value", "loss_entropy", "entropy", "approx_kl"]
    if algo_name == "ppo":
        keys.append("clip_fraction")
    else:  # A2C clips nothing: no constant clip_fraction column
        assert "clip_fraction" not in terms
    for key in keys:
        assert torch.isfinite(terms[key]), key
    assert_close(terms["loss"], terms["loss_pi"] + terms["loss_value"] + terms["loss_entropy"])
    terms["loss"].backward()

    params = trainable(agent)
    if kind == "gaussian":
        assert "model.log_std" in params
    for name, p in params.items():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name

    assert set(batch.keys(True, True)) == set(before.keys(True, True))
    for key in before.keys(True, True):
        assert_close(batch.get(key), before.get(key), rtol=0, atol=0, msg=str(key))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("algo_name", ALGOS)
def test_optimize_agent_returns_diagnostics_and_counts_updates(algo_name, kind):
    if algo_name == "ppo":
        algo = PPO(epochs=3, minibatches=2)
        n_updates = 6
    else:
        algo = A2C()
        n_updates = 1
    agent, _, samples = make_setup(algo, kind)
    before = {n: p.detach().clone() for n, p in trainable(agent).items()}

    info = algo.optimize_agent(0, samples)
    expected = {"loss", "loss_pi", "loss_value", "loss_entropy", "entropy", "grad_norm"}
    expected |= {"approx_kl"}
    if algo_name == "ppo":
        expected.add("clip_fraction")
    else:
        assert "clip_fraction" not in info
    assert expected <= set(info)
    for key, values in info.items():
        assert isinstance(values, list), key
        assert len(values) == n_updates, key
        assert all(isinstance(v, float) and math.isfinite(v) for v in values), key
    assert algo.update_counter == n_updates
    algo.optimize_agent(1, samples)
    assert algo.update_counter == 2 * n_updates
    for name, p in trainable(agent).items():
        assert not torch.equal(p, before[name]), f"{name} did not move"


# -------------------------------------------------------------------- loss by hand
def hand_log_prob_and_entropy(kind: str, agent: Agent, batch: TensorDict):
    """Log-probability of the stored actions and entropy, from the model's raw outputs."""
    out = agent.model(batch[keys.OBSERVATION], batch[keys.PREV_ACTION], batch[keys.PREV_REWARD])
    action = batch[keys.ACTION]
    if kind == "categorical":
        logits, value = out
        log_p = logits - logits.logsumexp(-1, keepdim=True)
        log_prob = log_p[torch.arange(len(action)), action]
        entropy = -(log_p.exp() * log_p).sum(-1)
    else:
        mu, log_std, value = out
        z = (action - mu) / log_std.exp()
        log_prob = (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1)
    return log_prob, entropy, value


@pytest.mark.parametrize("masked", [False, True], ids=["all_valid", "masked"])
@pytest.mark.parametrize("kind", KINDS)
def test_ppo_loss_matches_hand_computation(kind, masked):
    eps, c_v, c_e = 0.2, 0.7, 0.05
    algo = PPO(ratio_clip=eps, value_loss_coeff=c_v, entropy_loss_coeff=c_e)
    agent, _, samples = make_setup(algo, kind)
    batch = training_batch(algo, agent, samples, log_prob_noise=0.0)[:6].clone()
    # The stored log-probs set the ratios exp(offset): clipped and unclipped, with A > 0
    # and A < 0, so every branch of min(rho A, clip(rho) A) is taken.
    offsets = torch.tensor([0.5, 0.5, -0.5, -0.5, 0.05, -0.02])
    advantage = torch.tensor([1.0, -1.0, 2.0, -0.5, 0.7, -1.2])
    with torch.no_grad():
        log_prob, _, _ = hand_log_prob_and_entropy(kind, agent, batch)
    batch[keys.LOG_PROB] = log_prob - offsets
    batch[keys.ADVANTAGE] = advantage
    valid = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0]) if masked else torch.ones(6)
    if masked:
        batch[keys.VALID] = valid

    terms = algo.loss(batch)

    with torch.no_grad():
        log_prob, entropy, value = hand_log_prob_and_entropy(kind, agent, batch)
        ratio = (log_prob - batch[keys.LOG_PROB]).exp()
        assert (ratio > 1 + eps).sum() >= 2 and (ratio < 1 - eps).sum() >= 2
        surrogate, clipped = [], []
        for r, a in zip(ratio.tolist(), advantage.tolist(), strict=True):
            # min(r A, clip(r) A): A > 0 caps r at 1 + eps, A < 0 floors it at 1 - eps.
            surrogate.append(min(r, 1 + eps) * a if a > 0 else max(r, 1 - eps) * a)
            clipped.append(float(abs(r - 1) > eps))
        n = valid.sum()
        loss_pi = -(torch.tensor(surrogate) * valid).sum() / n
        loss_value = c_v * (0.5 * (value - batch[keys.RETURN]) ** 2 * valid).sum() / n
        mean_entropy = (entropy * valid).sum() / n
        loss_entropy = -c_e * mean_entropy
        clip_fraction = (torch.tensor(clipped) * valid).sum() / n
        approx_kl = ((ratio - 1 - ratio.log()) * valid).sum() / n

    assert_close(terms["loss_pi"], loss_pi, atol=1e-6, rtol=1e-5)
    assert_close(terms["loss_value"], loss_value, atol=1e-6, rtol=1e-5)
    assert_close(terms["loss_entropy"], loss_entropy, atol=1e-6, rtol=1e-5)
    assert_close(terms["entropy"], mean_entropy, atol=1e-6, rtol=1e-5)
    assert_close(terms["loss"], loss_pi + loss_value + loss_entropy, atol=1e-6, rtol=1e-5)
    assert_close(terms["clip_fraction"], clip_fraction)
    assert_close(terms["approx_kl"], approx_kl, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------- against TorchRL
class _PolicyHead(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return self.model(observation, None, None)[0]


class _ValueHead(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return self.model(observation, None, None)[-1].unsqueeze(-1)


def torchrl_modules(agent: CategoricalPgAgent):
    """The agent's model as a TorchRL actor and critic (same parameters)."""
    actor = ProbabilisticActor(
        TensorDictModule(_PolicyHead(agent.model), in_keys=["observation"], out_keys=["logits"]),
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )
    critic = ValueOperator(_ValueHead(agent.model), in_keys=["observation"])
    return actor, critic


def mixed_counting_env_fn() -> Callable[[], CountingEnv]:
    """Env factory for ``SerialSampler``: env b gets its own length and end kind, so one
    batch mixes terminations, truncations and episodes not yet ended."""
    configs = iter([(3, False), (4, True), (2, True), (5, False)])

    def make() -> CountingEnv:
        length, truncate = next(configs)
        return CountingEnv(episode_length=length, truncate=truncate)

    return make


@pytest.mark.parametrize("algo_name", ALGOS)
def test_loss_terms_match_torchrl(algo_name):
    if algo_name == "ppo":
        algo = PPO(ratio_clip=0.15, value_loss_coeff=0.8, entropy_loss_coeff=0.03)
    else:
        algo = A2C(value_loss_coeff=0.6, entropy_loss_coeff=0.03)
    agent, _, samples = make_setup(
        algo, "categorical", env_fn=mixed_counting_env_fn(), env_kwargs={}
    )
    batch = training_batch(algo, agent, samples)
    actor, critic = torchrl_modules(agent)
    common = {
        "entropy_coeff": algo.entropy_loss_coeff,
        # tdrl's value term is c_v * 0.5 (V - R)^2, TorchRL's "l2" is c * (V - R)^2.
        "critic_coeff": 0.5 * algo.value_loss_coeff,
        "loss_critic_type": "l2",
    }
    if algo_name == "ppo":
        reference = ClipPPOLoss(
            actor, critic, clip_epsilon=algo.ratio_clip, normalize_advantage=False, **common
        )
    else:
        reference = A2CLoss(actor, critic, **common)
    reference.set_keys(sample_log_prob=keys.LOG_PROB, value_target=keys.RETURN)
    td = batch.clone()
    td[keys.ADVANTAGE] = td[keys.ADVANTAGE].unsqueeze(-1)
    td[keys.RETURN] = td[keys.RETURN].unsqueeze(-1)

    theirs = reference(td)
    ours = algo.loss(batch)

    if algo_name == "ppo":
        # Make sure the clip is exercised.
        assert 0 < theirs["clip_fraction"] < 1
        assert_close(ours["clip_fraction"], theirs["clip_fraction"])
    for mine, their in [
        ("loss_pi", "loss_objective"),
        ("loss_value", "loss_critic"),
        ("loss_entropy", "loss_entropy"),
        ("entropy", "entropy"),
    ]:
        assert_close(ours[mine], theirs[their], atol=1e-5, rtol=1e-5, msg=mine)
    total = theirs["loss_objective"] + theirs["loss_critic"] + theirs["loss_entropy"]
    assert_close(ours["loss"], total, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("gae_lambda", [0.95, 1.0])
def test_advantages_match_torchrl_gae(gae_lambda):
    algo = PPO(discount=0.9, gae_lambda=gae_lambda)
    agent, _, samples = make_setup(
        algo, "categorical", env_fn=mixed_counting_env_fn(), env_kwargs={}
    )
    done, terminated = samples[keys.NEXT_DONE], samples[keys.NEXT_TERMINATED]
    assert terminated.any() and (done & ~terminated).any() and (~done).any()

    ours = process_returns(
        agent, samples, discount=0.9, gae_lambda=gae_lambda, normalize_advantage=False
    )
    _, critic = torchrl_modules(agent)
    td = samples.clone()
    td.names = None
    with torch.no_grad():
        theirs = GAE(gamma=0.9, lmbda=gae_lambda, value_network=critic, time_dim=0)(td)
    assert_close(ours[keys.ADVANTAGE], theirs["advantage"][..., 0], atol=1e-5, rtol=0)
    assert_close(ours[keys.RETURN], theirs["value_target"][..., 0], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------- learning
def train(algo, agent, env_fn, env_kwargs, *, batch_T, batch_B, n_steps, seed=0):
    sampler = SerialSampler(
        env_fn, env_kwargs, batch_T=batch_T, batch_B=batch_B, max_decorrelation_steps=0
    )
    runner = MinibatchRl(
        algo,
        agent,
        sampler,
        n_steps=n_steps,
        seed=seed,
        log_interval_steps=n_steps // 2,
        progress_bar=False,
    )
    return runner.train()


@pytest.mark.parametrize("algo_name", ALGOS)
def test_categorical_learns_identity_env(algo_name):
    """Random play scores 10 / 4 = 2.5; the best return is 10."""
    if algo_name == "ppo":
        algo = PPO(learning_rate=3e-3, discount=0.9)
        batch_T, n_steps = 32, 12_288
    else:
        algo = A2C(learning_rate=1e-2, discount=0.9)
        batch_T, n_steps = 16, 20_480
    row = train(
        algo,
        CategoricalPgAgent(),
        IdentityEnv,
        {"n": 4, "episode_length": 10},
        batch_T=batch_T,
        batch_B=8,
        n_steps=n_steps,
    )
    assert row["ReturnAverage"] >= 9.0


def test_gaussian_ppo_learns_continuous_identity_env():
    env_kwargs = {"dim": 2, "episode_length": 10}
    torch.manual_seed(0)
    agent = GaussianPgAgent()
    sampler = SerialSampler(
        ContinuousIdentityEnv, env_kwargs, batch_T=50, batch_B=8, max_decorrelation_steps=0
    )
    sampler.initialize(agent, seed=0)
    agent.sample_mode(0)
    samples, _ = sampler.obtain_samples(0)
    initial_return = samples[keys.NEXT_REWARD].sum().item() / (50 * 8 / 10)  # 40 episodes
    sampler.shutdown()

    algo = PPO(learning_rate=1e-2, discount=0.9, normalize_advantage=True)
    row = train(
        algo, agent, ContinuousIdentityEnv, env_kwargs, batch_T=32, batch_B=8, n_steps=16_384
    )
    assert initial_return < -10.0
    assert row["ReturnAverage"] > -2.0


# ---------------------------------------------------------------------------- determinism
def short_run(algo_name: str, seed: int, n_itr: int = 3):
    algo = PPO(epochs=2, minibatches=2) if algo_name == "ppo" else A2C()
    torch.manual_seed(seed)
    agent = CategoricalPgAgent()
    sampler = SerialSampler(IdentityEnv, {"n": 4}, batch_T=8, batch_B=4, max_decorrelation_steps=0)
    sampler.initialize(agent, seed=seed)
    algo.initialize(agent, n_itr=n_itr, batch_spec=sampler.batch_spec)
    infos = []
    for itr in range(n_itr):
        agent.sample_mode(itr)
        samples, _ = sampler.obtain_samples(itr)
        agent.train_mode(itr)
        infos.append(algo.optimize_agent(itr, samples))
    sampler.shutdown()
    return infos, {n: p.detach().clone() for n, p in agent.named_parameters()}


@pytest.mark.parametrize("algo_name", ALGOS)
def test_same_seed_same_result(algo_name):
    infos_a, params_a = short_run(algo_name, seed=3)
    infos_b, params_b = short_run(algo_name, seed=3)
    infos_c, params_c = short_run(algo_name, seed=4)
    assert infos_a == infos_b
    for name in params_a:
        assert torch.equal(params_a[name], params_b[name]), name
    assert [i["loss"] for i in infos_a] != [i["loss"] for i in infos_c]
    assert any(not torch.equal(params_a[n], params_c[n]) for n in params_a)


# -------------------------------------------------------------------------- argument checks
@pytest.mark.parametrize(
    ("algo_cls", "kwargs", "name"),
    [
        (PPO, {"discount": 1.5}, "discount"),
        (A2C, {"discount": 1.5}, "discount"),
        (PPO, {"minibatches": 0}, "minibatches"),
        (PPO, {"epochs": 0}, "epochs"),
        (PPO, {"learning_rate": -1e-3}, "learning_rate"),
        (A2C, {"learning_rate": -1e-3}, "learning_rate"),
        (PPO, {"ratio_clip": -0.1}, "ratio_clip"),
        (PPO, {"gae_lambda": 1.5}, "gae_lambda"),
        (A2C, {"value_loss_coeff": -1.0}, "value_loss_coeff"),
    ],
)
def test_bad_hyperparameters_raise_naming_the_argument(algo_cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        algo_cls(**kwargs)


def test_ppo_rejects_more_minibatches_than_samples():
    agent = CategoricalPgAgent(CategoricalPgMlpModel(3, 3))
    PPO(minibatches=32).initialize(agent, n_itr=10, batch_spec=BatchSpec(8, 4))
    with pytest.raises(ValueError, match="minibatches"):
        PPO(minibatches=33).initialize(agent, n_itr=10, batch_spec=BatchSpec(8, 4))


# ------------------------------------------------------------------------------ schedules
def test_ppo_linear_schedules_learning_rate_and_ratio_clip():
    lr0, eps0, n_itr = 1e-3, 0.2, 10
    algo = PPO(learning_rate=lr0, ratio_clip=eps0, epochs=1, minibatches=1)
    _, _, samples = make_setup(algo, "categorical", n_itr=n_itr)
    assert algo.optimizer.param_groups[0]["lr"] == pytest.approx(lr0)
    assert algo.ratio_clip == pytest.approx(eps0)
    for k in range(1, 5):
        algo.optimize_agent(k - 1, samples)
        assert algo.optimizer.param_groups[0]["lr"] == pytest.approx(lr0 * (n_itr - k) / n_itr)
        assert algo.ratio_clip == pytest.approx(eps0 * (n_itr - k) / n_itr)

    fixed = PPO(learning_rate=lr0, ratio_clip=eps0, linear_lr_schedule=False)
    _, _, samples = make_setup(fixed, "categorical", n_itr=n_itr)
    fixed.optimize_agent(0, samples)
    assert fixed.optimizer.param_groups[0]["lr"] == lr0
    assert fixed.ratio_clip == eps0


# -------------------------------------------------------------------------- state round trip
@pytest.mark.parametrize("algo_name", ALGOS)
def test_algo_state_dict_round_trip(algo_name):
    def new_algo():
        return PPO(epochs=2, minibatches=2) if algo_name == "ppo" else A2C()

    algo = new_algo()
    agent, sampler, samples = make_setup(algo, "categorical")
    for itr in range(3):
        algo.optimize_agent(itr, samples)
    buffer = io.BytesIO()
    torch.save({"algo": algo.state_dict(), "agent": agent.state_dict()}, buffer)
    buffer.seek(0)
    snapshot = torch.load(buffer, weights_only=False)

    def restored(load_algo_state: bool):
        new_agent = CategoricalPgAgent()
        new_agent.initialize(sampler.observation_spec, sampler.action_spec)
        new_agent.load_state_dict(snapshot["agent"])
        algo_b = new_algo()
        algo_b.initialize(new_agent, n_itr=10, batch_spec=sampler.batch_spec)
        if load_algo_state:
            algo_b.load_state_dict(copy.deepcopy(snapshot["algo"]))
        return new_agent, algo_b

    agent_b, algo_b = restored(True)
    assert algo_b.update_counter == algo.update_counter > 0
    lr_a = algo.optimizer.param_groups[0]["lr"]
    assert algo_b.optimizer.param_groups[0]["lr"] == lr_a
    if algo_name == "ppo":
        assert algo.ratio_clip < algo.initial_ratio_clip
        assert algo_b.ratio_clip == algo.ratio_clip

    # The next update is the same from the original and the restored algorithm...
    torch.manual_seed(7)
    info_a = algo.optimize_agent(3, samples)
    torch.manual_seed(7)
    info_b = algo_b.optimize_agent(3, samples)
    assert info_a == info_b
    for (name, p), p_b in zip(agent.named_parameters(), agent_b.parameters(), strict=True):
        assert torch.equal(p, p_b), name
    if algo_name == "ppo":
        assert algo_b.optimizer.param_groups[0]["lr"] == algo.optimizer.param_groups[0]["lr"]
        assert algo_b.ratio_clip == algo.ratio_clip

    # ...and not from a fresh optimizer (the check above has something to detect).
    agent_c, algo_c = restored(False)
    torch.manual_seed(7)
    algo_c.optimize_agent(3, samples)
    assert any(
        not torch.equal(p, p_c)
        for p, p_c in zip(agent.parameters(), agent_c.parameters(), strict=True)
    )
