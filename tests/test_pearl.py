"""PEARL: which losses reach the encoder, batched step == per-task loop, purity, targets,
terminated vs truncated bootstrapping through MultiTaskReplay, state dicts, checks; the same
for ``sac_variant="v2"`` (twin-Q targets, learned temperature) at the end."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torch.testing import assert_close

from tdrl import keys
from tdrl.agents.qpg import PearlAgent
from tdrl.algos.base import DIAGNOSTICS
from tdrl.algos.qpg import PEARL
from tdrl.envs import space_to_spec
from tdrl.replays import MultiTaskReplay
from tdrl.utils.checks import ArgumentError

OBS, ACT, LATENT, TASKS = 3, 2, 4, 3


def make_agent(seed=0, **kwargs) -> PearlAgent:
    torch.manual_seed(seed)
    agent = PearlAgent(latent_size=LATENT, encoder_hidden_sizes=(8,), hidden_sizes=(8, 8), **kwargs)
    obs_box = gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
    act_box = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
    agent.initialize(space_to_spec(obs_box), space_to_spec(act_box))
    target = agent.target_v_model if agent.sac_variant == "v1" else agent.target_q_model
    with torch.no_grad():  # a target that differs from the online network
        for p in target.parameters():
            p.add_(0.1)
    return agent


def make_algo(agent, **kwargs) -> PEARL:
    algo = PEARL(**kwargs)
    algo.initialize(agent)
    return algo


def _samples(T, B, task, *, terminated_at=None, truncated_at=None):
    """A [T, B] sampler batch of one task; flags set at step ``terminated_at``/``truncated_at``."""
    g = torch.Generator().manual_seed(task)
    obs = torch.randn(T, B, OBS, generator=g)
    flag = {}
    for name, at in (("terminated", terminated_at), ("truncated", truncated_at)):
        flag[name] = torch.zeros(T, B, 1, dtype=torch.bool)
        if at is not None:
            flag[name][at] = True
    return TensorDict(
        {
            "observation": obs,
            "prev_action": torch.zeros(T, B, ACT),
            "prev_reward": torch.zeros(T, B),
            "action": torch.rand(T, B, ACT, generator=g),
            "next": {
                "observation": obs + 1.0,
                "reward": torch.randn(T, B, 1, generator=g) + task,
                "done": flag["terminated"] | flag["truncated"],
                "terminated": flag["terminated"],
                "truncated": flag["truncated"],
            },
        },
        batch_size=[T, B],
    )


def make_replay(**flags) -> MultiTaskReplay:
    replay = MultiTaskReplay(TASKS, size=40, batch_B=2, encoder_size=20, discount=0.99, seed=0)
    for task in range(TASKS):
        replay.append_samples(task, _samples(8, 2, task, **flags), to_encoder=True)
    return replay


def meta(rl, ctx) -> TensorDict:
    """The one-TensorDict meta-batch of PEARL's loss and update."""
    return TensorDict({keys.META_RL: rl, keys.CONTEXT: ctx}, batch_size=rl.batch_size[:1])


def batches(n=5, m=6):
    replay = make_replay()
    tasks = list(range(TASKS))
    return replay.sample_batch(tasks, n), replay.sample_context(tasks, m)


def encoder_grads(agent):
    return [p.grad for p in agent.encoder.parameters()]


def test_which_losses_reach_the_encoder():
    torch.set_num_threads(1)
    agent = make_agent()
    algo = make_algo(agent)
    rl, ctx = batches()
    for term, reaches in (
        ("loss_q", True),
        ("loss_kl", True),
        ("loss_v", False),
        ("loss_pi", False),
    ):
        agent.zero_grad(set_to_none=True)
        algo.loss(meta(rl, ctx)).get(term).backward()
        grads = encoder_grads(agent)
        if reaches:
            assert all(g is not None for g in grads), term
            assert sum(g.abs().sum() for g in grads) > 0, term
        else:
            assert all(g is None or not g.any() for g in grads), term
    # The critics' weights learn from the Bellman error only (frozen while scoring a~).
    for term in ("loss_v", "loss_pi"):
        agent.zero_grad(set_to_none=True)
        algo.loss(meta(rl, ctx)).get(term).backward()
        assert all(p.grad is None or not p.grad.any() for p in agent.q_model.parameters())


class FixedNoise:
    """``torch.randn_like`` replaced by one fixed tensor (the policy's noise)."""

    def __init__(self, noise):
        self.noise = noise

    def __call__(self, like, *args, **kwargs):
        return self.noise.to(like.dtype).expand_as(like).clone()


def test_batched_loss_equals_per_task_loop(monkeypatch):
    torch.set_num_threads(1)
    agent = make_agent()
    algo = make_algo(agent, reward_scale=3.0, kl_lambda=0.7, kl_reduction="mean")
    rl, ctx = batches(n=5, m=6)
    noise = torch.randn(TASKS, 5, ACT, generator=torch.Generator().manual_seed(5))
    monkeypatch.setattr(torch, "randn_like", FixedNoise(noise))
    terms = algo.loss(meta(rl, ctx), generator=torch.Generator().manual_seed(9))
    eps = torch.randn(TASKS, LATENT, generator=torch.Generator().manual_seed(9))
    per_task = {k: [] for k in ("loss_q", "loss_v", "loss_pi", "loss_kl")}
    with torch.no_grad():
        for i in range(TASKS):
            b, c = rl[i], ctx[i]
            # The critics and the encoder see actions normalised to [-1, 1].
            normalised = (c["action"] - agent.action_bias) / agent.action_scale
            context = torch.cat(
                [c["observation"], normalised, c["next", "reward"].reshape(-1, 1)], -1
            )
            f_mu, f_var = agent.encoder.factors(context)
            var = 1.0 / (1.0 / f_var.clamp(min=1e-7)).sum(0)
            mu = var * (f_mu / f_var.clamp(min=1e-7)).sum(0)
            z = (mu + var.sqrt() * eps[i]).expand(5, -1)
            x = torch.cat([b["observation"], z], -1)
            y = 3.0 * b["return_n"] + b["discount_n"] * agent.target_v_model(
                torch.cat([b["next", "observation"], z], -1)
            )
            q = agent.q_model(x, (b["action"] - agent.action_bias) / agent.action_scale)
            per_task["loss_q"].append(((q[0] - y) ** 2).mean() + ((q[1] - y) ** 2).mean())
            mean, log_std = agent.model(x)
            log_std = log_std.clamp(-20, 2)
            u = mean + log_std.exp() * noise[i]
            log_pi = (
                torch.distributions.Normal(mean, log_std.exp()).log_prob(u)
                - torch.log(1 - torch.tanh(u) ** 2)
            ).sum(-1)
            q_pi = agent.q_model(x, torch.tanh(u)).min(0).values
            per_task["loss_v"].append(((agent.v_model(x) - (q_pi - log_pi)) ** 2).mean())
            reg = 1e-3 * mean.pow(2).mean() + 1e-3 * log_std.pow(2).mean()
            per_task["loss_pi"].append((log_pi - q_pi).mean() + reg)
            kl = torch.distributions.kl_divergence(
                torch.distributions.Normal(mu, var.sqrt()), torch.distributions.Normal(0.0, 1.0)
            ).sum()
            per_task["loss_kl"].append(0.7 * kl)
    for name, values in per_task.items():
        assert_close(terms[name], torch.stack(values).mean(), atol=1e-4, rtol=1e-4, msg=name)
    assert set(terms.keys()) <= set(DIAGNOSTICS)


def test_kl_sum_reduction_and_no_bottleneck():
    rl, ctx = batches()
    agent = make_agent()
    gen = torch.Generator
    batch = meta(rl, ctx)
    mean_kl = make_algo(agent, kl_reduction="mean").loss(batch, generator=gen().manual_seed(0))
    mean_kl = mean_kl["loss_kl"]
    sum_kl = make_algo(agent).loss(batch, generator=gen().manual_seed(0))  # oyster's default
    assert_close(sum_kl["loss_kl"], TASKS * mean_kl)
    det = make_agent(information_bottleneck=False)
    terms = make_algo(det).loss(meta(rl, ctx))
    assert terms["loss_kl"] == 0 and terms["z_var"] == 0
    terms["loss_q"].backward()
    assert all(g is not None and g.any() for g in encoder_grads(det))


def test_loss_is_pure():
    agent = make_agent()
    algo = make_algo(agent)
    rl, ctx = batches()
    algo.update(meta(rl, ctx))  # optimizer state exists
    state = copy.deepcopy(agent.state_dict())
    opt_state = copy.deepcopy(algo.state_dict())
    rl_before, ctx_before = rl.clone(), ctx.clone()
    algo.loss(meta(rl, ctx))
    for k, v in agent.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert algo.update_counter == opt_state["update_counter"]
    for part in ("pi", "q", "v", "context"):
        got = algo.state_dict()[f"{part}_optimizer"]["state"]
        for idx, entry in opt_state[f"{part}_optimizer"]["state"].items():
            assert all(torch.equal(entry[k], got[idx][k]) for k in entry)
    assert (rl == rl_before).all() and (ctx == ctx_before).all()
    assert all(p.requires_grad for p in agent.q_model.parameters())


def test_update_moves_every_part_and_the_target_by_tau():
    torch.set_num_threads(1)
    agent = make_agent()
    algo = make_algo(agent, target_update_tau=0.1)
    before = copy.deepcopy(agent)
    info = algo.update(meta(*batches()))
    assert set(info) <= set(DIAGNOSTICS)
    assert all(torch.isfinite(v) for v in info.values())
    for name in ("model", "q_model", "v_model", "encoder"):
        old = getattr(before, name).parameters()
        assert all(
            not torch.equal(a, b)
            for a, b in zip(old, getattr(agent, name).parameters(), strict=True)
        )
    for t_old, t_new, online in zip(
        before.target_v_model.parameters(),
        agent.target_v_model.parameters(),
        agent.v_model.parameters(),
        strict=True,
    ):
        assert_close(t_new, t_old + 0.1 * (online - t_old))
    assert algo.update_counter == 1


def test_terminated_stops_bootstrapping_truncated_does_not():
    agent = make_agent()
    algo = make_algo(agent, reward_scale=1.0)
    for flag, bootstraps in (("terminated_at", False), ("truncated_at", True)):
        replay = MultiTaskReplay(1, size=40, batch_B=1, encoder_size=20, discount=0.99, seed=0)
        replay.append_samples(0, _samples(8, 1, 0, **{flag: 3}), to_encoder=True)
        rl = replay.sample_batch([0], 64)
        ctx = replay.sample_context([0], 4)
        at = rl["observation"][0, :, 0] == _samples(8, 1, 0)["observation"][3, 0, 0]
        assert at.any()
        assert (rl["discount_n"][0, at] > 0).all() == bootstraps
        # The loss of the flagged rows ignores o' exactly when the step terminated.
        sub = rl[:, at]
        far = sub.clone()
        far["next", "observation"] = far["next", "observation"] + 50.0
        g = torch.Generator
        a = algo.loss(meta(sub, ctx[:, :4]), generator=g().manual_seed(0))["loss_q"]
        b = algo.loss(meta(far, ctx[:, :4]), generator=g().manual_seed(0))["loss_q"]
        assert (not torch.equal(a, b)) == bootstraps


def test_agent_acting_with_set_z():
    agent = make_agent()
    obs = torch.randn(4, OBS)
    with pytest.raises(RuntimeError, match="set_z"):
        agent.step(obs, torch.zeros(4, ACT), torch.zeros(4))
    mu, var = agent.prior_z(4)
    assert torch.equal(mu, torch.zeros(4, LATENT)) and torch.equal(var, torch.ones(4, LATENT))
    agent.set_z(agent.sample_z(mu, var))
    agent.sample_mode(0)
    a1, _ = agent.step(obs, torch.zeros(4, ACT), torch.zeros(4))
    a2, _ = agent.step(obs, torch.zeros(4, ACT), torch.zeros(4))
    assert not torch.equal(a1, a2) and a1.shape == (4, ACT)
    assert (a1[:, 0].abs() <= 2).all() and (a1[:, 1] >= 0).all() and (a1[:, 1] <= 1).all()
    agent.eval_mode(0)
    e1, _ = agent.step(obs, torch.zeros(4, ACT), torch.zeros(4))
    e2, _ = agent.step(obs, torch.zeros(4, ACT), torch.zeros(4))
    assert torch.equal(e1, e2)
    agent.set_z(torch.ones(4, LATENT))
    assert not torch.equal(agent.step(obs, torch.zeros(4, ACT), torch.zeros(4))[0], e1)
    _, ctx = batches()
    mu, var = agent.infer_posterior(ctx)
    assert mu.shape == var.shape == (TASKS, LATENT)
    out = agent(TensorDict({"observation": obs, "z": torch.ones(4, LATENT)}, batch_size=[4]))
    assert out["loc"].shape == (4, ACT)


def test_state_dict_round_trip():
    agent = make_agent()
    algo = make_algo(agent)
    rl, ctx = batches()
    algo.update(meta(rl, ctx), generator=torch.Generator().manual_seed(0))
    other_agent = make_agent(seed=1)
    other_agent.load_state_dict(agent.state_dict())
    other = make_algo(other_agent)
    other.load_state_dict(copy.deepcopy(algo.state_dict()))  # as a snapshot (no aliasing)
    assert other.update_counter == 1
    torch.manual_seed(3)
    x = algo.update(meta(rl, ctx), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(3)
    y = other.update(meta(rl, ctx), generator=torch.Generator().manual_seed(1))
    for k in x:
        assert_close(x[k], y[k], msg=k)
    for (k, a), b in zip(
        agent.state_dict().items(), other_agent.state_dict().values(), strict=True
    ):
        assert_close(a, b, msg=k)
    assert len(algo.optimizers()) == 4


def test_bad_arguments():
    with pytest.raises(ArgumentError, match="kl_lambda"):
        PEARL(kl_lambda=-1.0)
    with pytest.raises(ArgumentError, match="meta_batch"):
        PEARL(meta_batch=0)
    with pytest.raises(ArgumentError, match="kl_reduction"):
        PEARL(kl_reduction="max")
    with pytest.raises(ArgumentError, match="context_lr"):
        PEARL(context_lr=-3e-4)
    with pytest.raises(ArgumentError, match="latent_size"):
        PearlAgent(latent_size=0)
    with pytest.raises(ArgumentError, match="agent"):
        PEARL().initialize(PearlAgent())  # not initialized
    agent = make_agent()
    algo = make_algo(agent)
    rl, ctx = batches()
    with pytest.raises(ArgumentError, match=r"^batch must be a \[tasks\] TensorDict"):
        algo.loss(rl)
    with pytest.raises(ArgumentError, match=r"^batch\['rl'\] must be a \[tasks, n\]"):
        algo.loss(TensorDict({keys.CONTEXT: ctx}, batch_size=[TASKS]))
    with pytest.raises(ArgumentError, match=r"^batch\['context'\] must be a \[tasks, n\]"):
        algo.loss(meta(rl, ctx[:, 0]))
    with pytest.raises(ArgumentError, match="z"):
        agent.set_z(torch.zeros(4, LATENT + 1))
    with pytest.raises(ArgumentError, match="clip_grad_norm"):
        PEARL(clip_grad_norm=0.0)
    # Settings of the other SAC variant would be unused: refused, not ignored.
    with pytest.raises(ArgumentError, match=r"^alpha_lr needs sac_variant='v2'"):
        PEARL(alpha_lr=1e-3)
    with pytest.raises(ArgumentError, match=r"^target_entropy needs sac_variant='v2'"):
        PEARL(target_entropy=-1.0)
    with pytest.raises(ArgumentError, match=r"^v_lr needs sac_variant='v1'"):
        PEARL(sac_variant="v2", v_lr=1e-3)
    PEARL(sac_variant="v2", alpha_lr=1e-3, target_entropy=-1.0)  # v2's own: accepted
    # Wrong shapes or missing entries are named before any network sees them.
    bad_obs = rl.clone()
    bad_obs["observation"] = torch.zeros(TASKS, 5, OBS + 1)
    bad_return = rl.clone()
    bad_return["return_n"] = torch.zeros(TASKS, 5, 1)  # would broadcast to [.., 5, 5]
    no_return = rl.exclude("return_n")
    bad_reward = ctx.clone()
    bad_reward["next", "reward"] = torch.zeros(TASKS, 6, 2)
    for rl_in, ctx_in, name in (
        (bad_obs, ctx, "observation"),
        (bad_return, ctx, "return_n"),
        (no_return, ctx, "return_n"),
        (rl, bad_reward, "reward"),
    ):
        with pytest.raises(ArgumentError, match=name):
            algo.update(meta(rl_in, ctx_in))


def test_prior_without_the_bottleneck_is_z_zero():
    """Oyster's ``clear_z`` without the information bottleneck: z = 0, not a N(0, I) draw."""
    agent = make_agent(information_bottleneck=False)
    mu, var = agent.prior_z(3)
    assert not mu.any() and not var.any()
    assert not agent.sample_z(mu, var).any()
    mu, var = make_agent().prior_z(3)  # with the bottleneck: N(0, I)
    assert not mu.any() and torch.equal(var, torch.ones_like(var))


def test_context_free_baseline_ignores_the_context():
    """``use_context=False``: z = 0 always, no KL, the encoder is untouched by an update."""
    agent = make_agent(use_context=False)
    algo = make_algo(agent)
    rl, ctx = batches()
    mu, var = agent.infer_posterior(ctx)
    assert not mu.any() and not var.any() and mu.shape == (TASKS, LATENT)
    assert not agent.sample_z(*agent.prior_z(3)).any()
    before = [p.detach().clone() for p in agent.encoder.parameters()]
    info = algo.update(meta(rl, ctx))
    assert info["loss_kl"] == 0 and info["grad_norm_context"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, agent.encoder.parameters(), strict=True))
    # The same data with another context gives the same loss: the context is not read.
    other = ctx.clone()
    other["next", "reward"] += 5.0
    gen = torch.Generator
    a = algo.loss(meta(rl, ctx), generator=gen().manual_seed(0))["loss_q"]
    b = algo.loss(meta(rl, other), generator=gen().manual_seed(0))["loss_q"]
    assert torch.equal(a, b)
    with_context = make_algo(make_agent())
    c = with_context.loss(meta(rl, ctx), generator=gen().manual_seed(0))["loss_q"]
    d = with_context.loss(meta(rl, other), generator=gen().manual_seed(0))["loss_q"]
    assert not torch.equal(c, d)  # the check above can fail


# ---------------------------------------------------------------------- sac_variant="v2"
V2 = {"sac_variant": "v2"}


class NoiseSequence:
    """``torch.randn_like`` replaced by fixed tensors, one per call, in order."""

    def __init__(self, *noises):
        self.noises = list(noises)
        self.calls = 0

    def __call__(self, like, *args, **kwargs):
        noise = self.noises[self.calls]
        self.calls += 1
        return noise.to(like.dtype).expand_as(like).clone()


def _log_pi(mean, log_std, u):
    return (
        torch.distributions.Normal(mean, log_std.exp()).log_prob(u)
        - torch.log(1 - torch.tanh(u) ** 2)
    ).sum(-1)


def reference_v2(agent, algo, rl, ctx, eps, next_noise, noise, reward_scale):
    """The v2 loss terms task by task, with gradients (the target built from sg(z))."""
    alpha = algo.log_alpha.detach().exp()
    n = rl.batch_size[1]
    per_task = {k: [] for k in ("loss_q", "loss_pi", "loss_alpha", "loss_kl")}
    for i in range(TASKS):
        b, c = rl[i], ctx[i]
        normalised = (c["action"] - agent.action_bias) / agent.action_scale
        context = torch.cat([c["observation"], normalised, c["next", "reward"].reshape(-1, 1)], -1)
        f_mu, f_var = agent.encoder.factors(context)
        var = 1.0 / (1.0 / f_var.clamp(min=1e-7)).sum(0)
        mu = var * (f_mu / f_var.clamp(min=1e-7)).sum(0)
        z = (mu + var.sqrt() * eps[i]).expand(n, -1)
        with torch.no_grad():
            x_next = torch.cat([b["next", "observation"], z.detach()], -1)
            mean, log_std = agent.model(x_next)
            log_std = log_std.clamp(-20, 2)
            u = mean + log_std.exp() * next_noise[i]
            next_q = agent.target_q_model(x_next, torch.tanh(u)).min(0).values
            y = reward_scale * b["return_n"] + b["discount_n"] * (
                next_q - alpha * _log_pi(mean, log_std, u)
            )
        x = torch.cat([b["observation"], z], -1)
        q = agent.q_model(x, (b["action"] - agent.action_bias) / agent.action_scale)
        per_task["loss_q"].append(((q[0] - y) ** 2).mean() + ((q[1] - y) ** 2).mean())
        x_sg = torch.cat([b["observation"], z.detach()], -1)
        mean, log_std = agent.model(x_sg)
        log_std = log_std.clamp(-20, 2)
        u = mean + log_std.exp() * noise[i]
        log_pi = _log_pi(mean, log_std, u)
        q_pi = agent.q_model(x_sg, torch.tanh(u)).min(0).values
        reg = 1e-3 * mean.pow(2).mean() + 1e-3 * log_std.pow(2).mean()
        per_task["loss_pi"].append((alpha * log_pi - q_pi).mean() + reg)
        gap = (log_pi + algo.target_entropy).detach()
        per_task["loss_alpha"].append(-(algo.log_alpha * gap).mean())
        kl = torch.distributions.kl_divergence(
            torch.distributions.Normal(mu, var.sqrt()), torch.distributions.Normal(0.0, 1.0)
        ).sum()
        per_task["loss_kl"].append(0.7 * kl)
    return {name: torch.stack(values).mean() for name, values in per_task.items()}


def _v2_case(monkeypatch, n=5, **algo_kwargs):
    """A v2 agent and algo (alpha = e^0.3), batches, and the loss under fixed noise."""
    torch.set_num_threads(1)
    agent = make_agent(**V2)
    kwargs = {"reward_scale": 3.0, "kl_lambda": 0.7, "kl_reduction": "mean", **V2}
    algo = make_algo(agent, **(kwargs | algo_kwargs))
    with torch.no_grad():
        algo.log_alpha.fill_(0.3)
    rl, ctx = batches(n=n, m=6)
    g = torch.Generator().manual_seed(5)
    next_noise, noise = torch.randn(2, TASKS, n, ACT, generator=g)
    # The loss draws the target's a' first, then a~.
    monkeypatch.setattr(torch, "randn_like", NoiseSequence(next_noise, noise))
    terms = algo.loss(meta(rl, ctx), generator=torch.Generator().manual_seed(9))
    eps = torch.randn(TASKS, LATENT, generator=torch.Generator().manual_seed(9))
    ref = reference_v2(agent, algo, rl, ctx, eps, next_noise, noise, 3.0)
    return agent, algo, terms, ref


@pytest.mark.parametrize("target_entropy", ["auto", 0.5])
def test_v2_batched_loss_equals_per_task_loop(monkeypatch, target_entropy):
    _, algo, terms, ref = _v2_case(monkeypatch, target_entropy=target_entropy)
    assert algo.target_entropy == (-ACT if target_entropy == "auto" else 0.5)
    for name, value in ref.items():
        assert_close(terms[name], value.detach(), atol=1e-4, rtol=1e-4, msg=name)
    assert_close(terms["loss"], sum(terms[k] for k in ref))
    assert_close(terms["alpha"], torch.tensor(0.3).exp())
    assert set(terms.keys()) <= set(DIAGNOSTICS)
    assert not {"loss_v", "v_mean"} & set(terms.keys())


def test_v2_encoder_learns_from_the_critics_and_kl_only(monkeypatch):
    agent, algo, terms, ref = _v2_case(monkeypatch)
    # The encoder's gradient of L_Q is the reference's, whose target is built from sg(z).
    for name in ("loss_q", "loss_kl"):
        agent.zero_grad(set_to_none=True)
        terms[name].backward(retain_graph=True)
        got = [p.grad.clone() for p in agent.encoder.parameters()]
        assert sum(g.abs().sum() for g in got) > 0, name
        agent.zero_grad(set_to_none=True)
        ref[name].backward(retain_graph=True)
        for a, b in zip(got, encoder_grads(agent), strict=True):
            assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    for name in ("loss_pi", "loss_alpha"):
        agent.zero_grad(set_to_none=True)
        algo.log_alpha.grad = None
        terms[name].backward(retain_graph=True)
        assert all(g is None or not g.any() for g in encoder_grads(agent)), name
        # The critics learn from the Bellman error only; alpha from L_alpha only.
        assert all(p.grad is None or not p.grad.any() for p in agent.q_model.parameters())
        assert (algo.log_alpha.grad is not None) == (name == "loss_alpha"), name
    agent.zero_grad(set_to_none=True)
    terms["loss_alpha"].backward(retain_graph=True)  # log pi enters L_alpha detached
    assert all(p.grad is None for p in agent.parameters())
    assert all(p.grad is None for p in agent.target_q_model.parameters())


def test_v2_update_moves_every_part_and_the_q_targets_by_tau():
    torch.set_num_threads(1)
    agent = make_agent(**V2)
    assert not hasattr(agent, "v_model") and not hasattr(agent, "target_v_model")
    algo = make_algo(agent, target_update_tau=0.1, **V2)
    before = copy.deepcopy(agent)
    info = algo.update(meta(*batches()))
    assert set(info) <= set(DIAGNOSTICS)
    assert {"alpha", "loss_alpha", "grad_norm_pi", "grad_norm_q", "grad_norm_context"} <= set(info)
    assert not {"loss_v", "v_mean", "grad_norm_v"} & set(info)
    assert all(torch.isfinite(v) for v in info.values())
    for name in ("model", "q_model", "encoder"):
        old = getattr(before, name).parameters()
        assert all(
            not torch.equal(a, b)
            for a, b in zip(old, getattr(agent, name).parameters(), strict=True)
        )
    for t_old, t_new, online in zip(
        before.target_q_model.parameters(),
        agent.target_q_model.parameters(),
        agent.q_model.parameters(),
        strict=True,
    ):
        assert_close(t_new, t_old + 0.1 * (online - t_old))
    assert algo.alpha != 1.0 and algo.update_counter == 1 and len(algo.optimizers()) == 4


@pytest.mark.parametrize("target_entropy", [50.0, -50.0])
def test_v2_temperature_follows_the_entropy_target(target_entropy):
    """Entropy (-log pi) below the target: alpha grows; above it: alpha shrinks."""
    torch.set_num_threads(1)
    agent = make_agent(**V2)
    algo = make_algo(agent, target_entropy=target_entropy, alpha_lr=0.05, **V2)
    rl, ctx = batches()
    info = algo.update(meta(rl, ctx))
    entropy_below_target = -info["log_pi"] < target_entropy
    assert entropy_below_target == (target_entropy > 0)
    assert (algo.alpha > 1.0) == entropy_below_target
    assert_close(algo.log_alpha.detach(), torch.tensor(0.05 if target_entropy > 0 else -0.05))


def test_v2_fixed_alpha():
    torch.set_num_threads(1)
    agent = make_agent(**V2)
    algo = make_algo(agent, fixed_alpha=0.2, **V2)
    assert len(algo.optimizers()) == 3 and "alpha_optimizer" not in algo.state_dict()
    info = algo.update(meta(*batches()))
    assert "loss_alpha" not in info
    assert_close(info["alpha"], torch.tensor(0.2))
    assert algo.alpha == pytest.approx(0.2) and algo.log_alpha.grad is None


def test_v2_state_dict_round_trip():
    agent = make_agent(**V2)
    algo = make_algo(agent, **V2)
    rl, ctx = batches()
    algo.update(meta(rl, ctx), generator=torch.Generator().manual_seed(0))
    state = algo.state_dict()
    assert {"alpha_optimizer", "log_alpha"} <= set(state) and "v_optimizer" not in state
    assert any(k.startswith("target_q_model.") for k in agent.state_dict())
    other_agent = make_agent(seed=1, **V2)
    other_agent.load_state_dict(agent.state_dict())
    other = make_algo(other_agent, **V2)
    other.load_state_dict(copy.deepcopy(state))
    assert other.update_counter == 1 and other.alpha == algo.alpha
    torch.manual_seed(3)
    x = algo.update(meta(rl, ctx), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(3)
    y = other.update(meta(rl, ctx), generator=torch.Generator().manual_seed(1))
    for k in x:
        assert_close(x[k], y[k], msg=k)
    for (k, a), b in zip(
        agent.state_dict().items(), other_agent.state_dict().values(), strict=True
    ):
        assert_close(a, b, msg=k)
    assert_close(algo.log_alpha, other.log_alpha)
    with pytest.raises(RuntimeError):  # a v1 agent's state does not load into a v2 agent
        other_agent.load_state_dict(make_agent().state_dict())


def test_v2_context_free_deterministic_and_terminal():
    """v2 with use_context=False, without the bottleneck, and with terminated steps."""
    torch.set_num_threads(1)
    rl, ctx = batches()
    agent = make_agent(use_context=False, **V2)
    info = make_algo(agent, **V2).update(meta(rl, ctx))
    assert info["loss_kl"] == 0 and info["grad_norm_context"] == 0
    det = make_agent(information_bottleneck=False, **V2)
    terms = make_algo(det, **V2).loss(meta(rl, ctx))
    assert terms["loss_kl"] == 0 and terms["z_var"] == 0
    terms["loss_q"].backward()
    assert all(g is not None and g.any() for g in encoder_grads(det))
    algo = make_algo(make_agent(**V2), reward_scale=1.0, **V2)
    for flag, bootstraps in (("terminated_at", False), ("truncated_at", True)):
        replay = MultiTaskReplay(1, size=40, batch_B=1, encoder_size=20, discount=0.99, seed=0)
        replay.append_samples(0, _samples(8, 1, 0, **{flag: 3}), to_encoder=True)
        rl1, ctx1 = replay.sample_batch([0], 64), replay.sample_context([0], 4)
        at = rl1["observation"][0, :, 0] == _samples(8, 1, 0)["observation"][3, 0, 0]
        far = rl1[:, at].clone()
        far["next", "observation"] = far["next", "observation"] + 50.0
        losses = []
        for batch in (rl1[:, at], far):
            torch.manual_seed(0)  # the same policy noise for both
            losses.append(algo.loss(meta(batch, ctx1), generator=torch.Generator().manual_seed(0)))
        assert (not torch.equal(losses[0]["loss_q"], losses[1]["loss_q"])) == bootstraps


def test_v2_bad_arguments():
    for kwargs, name in (
        ({"sac_variant": "v3"}, "sac_variant"),
        ({"sac_variant": "v2", "alpha_lr": -1.0}, "alpha_lr"),
        ({"sac_variant": "v2", "alpha_lr": float("nan")}, "alpha_lr"),
        ({"sac_variant": "v2", "target_entropy": "max"}, "target_entropy"),
        ({"sac_variant": "v2", "target_entropy": float("inf")}, "target_entropy"),
        ({"sac_variant": "v2", "fixed_alpha": -0.1}, "fixed_alpha"),
        ({"fixed_alpha": 0.1}, "fixed_alpha"),  # v1 has no temperature
    ):
        with pytest.raises(ArgumentError, match=name) as err:
            PEARL(**kwargs)
        assert "\n" not in str(err.value), kwargs
    with pytest.raises(ArgumentError, match="sac_variant"):
        PearlAgent(sac_variant="V2")
    for agent_variant, algo_variant in (("v1", "v2"), ("v2", "v1")):
        with pytest.raises(ArgumentError) as err:
            make_algo(make_agent(sac_variant=agent_variant), sac_variant=algo_variant)
        message = str(err.value)
        assert "\n" not in message and "sac_variant" in message
        assert f"PEARL ({algo_variant!r})" in message and f"agent ({agent_variant!r})" in message
    obs = torch.zeros(2, OBS)
    with pytest.raises(RuntimeError, match="sac_variant='v1'"):
        make_agent(**V2).v(obs, torch.zeros(2, LATENT))
    with pytest.raises(RuntimeError, match="sac_variant='v2'"):
        make_agent().target_q(obs, torch.zeros(2, LATENT), torch.zeros(2, ACT))


def test_v2_learns_a_two_task_bandit():
    """One-step tasks rewarding ``-(a_0 - c)^2``, ``c = -0.5`` or ``0.5``: from the context
    alone the posterior tells the tasks apart and the policy acts near each ``c`` (~3 s)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    agent = PearlAgent(latent_size=2, encoder_hidden_sizes=(32,), hidden_sizes=(32, 32), **V2)
    obs_box = gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
    agent.initialize(space_to_spec(obs_box), space_to_spec(gym.spaces.Box(-1, 1, (ACT,))))
    lr = {"policy_lr": 3e-3, "q_lr": 3e-3, "context_lr": 3e-3, "alpha_lr": 3e-3}
    algo = make_algo(agent, reward_scale=1.0, target_entropy=-4.0, **lr, **V2)
    targets, steps = (-0.5, 0.5), 64
    replay = MultiTaskReplay(2, size=200, batch_B=1, encoder_size=200, discount=0.99, seed=0)
    g = torch.Generator().manual_seed(0)
    for task, c in enumerate(targets):
        action = torch.rand(steps, 1, ACT, generator=g) * 2 - 1
        end = torch.ones(steps, 1, 1, dtype=torch.bool)
        samples = TensorDict(
            {
                "observation": torch.zeros(steps, 1, OBS),
                "prev_action": torch.zeros(steps, 1, ACT),
                "prev_reward": torch.zeros(steps, 1),
                "action": action,
                "next": {
                    "observation": torch.zeros(steps, 1, OBS),
                    "reward": -((action[..., :1] - c) ** 2),
                    "done": end,
                    "terminated": end,
                    "truncated": ~end,
                },
            },
            batch_size=[steps, 1],
        )
        replay.append_samples(task, samples, to_encoder=True)
    for _ in range(400):
        algo.update(meta(replay.sample_batch([0, 1], 32), replay.sample_context([0, 1], 16)))
    mu, _ = agent.infer_posterior(replay.sample_context([0, 1], 32))
    agent.eval_mode(0)
    agent.set_z(mu)
    acted, _ = agent.step(torch.zeros(2, OBS), torch.zeros(2, ACT), torch.zeros(2))
    assert_close(acted[:, 0], torch.tensor(targets), atol=0.25, rtol=0)


def test_posterior_of_a_context_on_the_agents_device():
    """The runner moves the collector's CPU contexts to the agent's device (the agent moves
    nothing itself); checked on the shape-only ``meta`` device."""
    agent = make_agent()
    _, ctx = batches()
    agent.to("meta")
    mu, var = agent.infer_posterior(ctx.to("meta"))
    assert mu.device.type == var.device.type == "meta" and mu.shape == (TASKS, LATENT)
    assert agent.sample_z(mu, var).device.type == "meta"


def test_value_network_names_the_variant_and_sac_variant_is_its_alias():
    assert PEARL().value_network and PEARL().sac_variant == "v1"
    assert PEARL(value_network=False).sac_variant == "v2"
    assert not PEARL(sac_variant="v2").value_network
    assert PEARL(value_network=True, sac_variant="v1").sac_variant == "v1"
    with pytest.raises(ArgumentError, match="disagree") as err:
        PEARL(value_network=True, sac_variant="v2")
    assert "\n" not in str(err.value)


def test_settings_name_what_a_resume_must_match():
    algo = PEARL(meta_batch=4, batch_size=8, embedding_batch_size=3, value_network=False)
    settings = algo.settings()
    assert settings["meta_batch"] == 4 and settings["batch_size"] == 8
    assert settings["embedding_batch_size"] == 3 and settings["sac_variant"] == "v2"
    assert settings["alpha_lr"] == 3e-4 and settings["learning_rates"]["alpha"] == 3e-4
    assert {"discount", "kl_lambda", "reward_scale", "fixed_alpha"} <= set(settings)
