"""PEARL parts: the context encoder's product of Gaussians and KL against closed forms and
torch.distributions, batched encoding over tasks, and the per-task multi-task replay."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from tdrl import keys
from tdrl.models.qpg import ContextEncoder, context_from_transitions
from tdrl.models.qpg.context import kl_to_standard_normal, product_of_gaussians
from tdrl.replays import MultiTaskReplay
from tdrl.utils.checks import ArgumentError

OBS, ACT = 3, 2


def _loop_product(mu, var):
    """Plain loop: fold two-factor products one factor at a time (1-D closed form)."""
    m, v = mu[0].item(), var[0].item()
    for j in range(1, len(mu)):
        mj, vj = mu[j].item(), var[j].item()
        m, v = (m * vj + mj * v) / (v + vj), v * vj / (v + vj)
    return m, v


def test_product_of_gaussians_closed_form_and_loop():
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(4, 6, 5, generator=gen, dtype=torch.float64)
    var = torch.rand(4, 6, 5, generator=gen, dtype=torch.float64) + 0.1
    m, v = product_of_gaussians(mu, var)
    assert m.shape == v.shape == (4, 5)
    prec = 1 / var
    torch.testing.assert_close(v, 1 / prec.sum(1))
    torch.testing.assert_close(m, (mu * prec).sum(1) / prec.sum(1))
    lm, lv = _loop_product(mu[2, :, 3], var[2, :, 3])
    assert m[2, 3].item() == pytest.approx(lm) and v[2, 3].item() == pytest.approx(lv)
    # Variances are clamped as the reference does.
    _, v0 = product_of_gaussians(torch.zeros(1, 2, 1), torch.zeros(1, 2, 1))
    assert v0.item() == pytest.approx(0.5e-7)


def test_product_of_gaussians_matches_multiplied_densities():
    """1-D: the normalised pointwise product of the densities on a grid."""
    mu = torch.tensor([[-0.5], [1.0], [0.3]], dtype=torch.float64)
    var = torch.tensor([[0.4], [1.5], [0.8]], dtype=torch.float64)
    x = torch.linspace(-8, 8, 20001, dtype=torch.float64)
    log_p = torch.distributions.Normal(mu, var.sqrt()).log_prob(x).sum(0)
    p = torch.exp(log_p - log_p.max())
    p = p / p.sum()
    mean = (p * x).sum()
    variance = (p * (x - mean) ** 2).sum()
    m, v = product_of_gaussians(mu, var, dim=0)
    assert m.item() == pytest.approx(mean.item(), abs=1e-6)
    assert v.item() == pytest.approx(variance.item(), abs=1e-6)


def test_kl_against_torch_distributions():
    gen = torch.Generator().manual_seed(1)
    mu = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    var = torch.rand(7, 4, generator=gen, dtype=torch.float64) + 0.05
    q = torch.distributions.Normal(mu, var.sqrt())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(kl_to_standard_normal(mu, var), expected)
    assert ContextEncoder.kl(mu, var).shape == (7,)


def test_encoder_shapes_variance_and_gradients():
    torch.manual_seed(0)
    enc = ContextEncoder(6, 4, hidden_sizes=(16, 16))
    ctx = torch.randn(3, 10, 6)
    mu_j, var_j = enc.factors(ctx)
    assert mu_j.shape == var_j.shape == (3, 10, 4) and bool((var_j > 0).all())
    mu, var = enc(ctx)
    assert mu.shape == var.shape == (3, 4) and bool((var > 0).all())
    z = enc.sample(mu, var, generator=torch.Generator().manual_seed(0))
    assert z.shape == (3, 4)
    loss = z.pow(2).sum() + enc.kl(mu, var).mean()
    loss.backward()
    for name, param in enc.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    pm, pv = enc.prior(5)
    assert torch.equal(pm, torch.zeros(5, 4)) and torch.equal(pv, torch.ones(5, 4))


def test_encoder_batched_over_tasks_equals_loop():
    torch.manual_seed(0)
    enc = ContextEncoder(5, 3, hidden_sizes=(8,))
    ctx = torch.randn(4, 7, 5)
    mu, var = enc(ctx)
    for t in range(4):
        m, v = enc(ctx[t : t + 1])
        torch.testing.assert_close(mu[t : t + 1], m)
        torch.testing.assert_close(var[t : t + 1], v)


def test_encoder_without_bottleneck_is_mean():
    torch.manual_seed(0)
    enc = ContextEncoder(5, 3, hidden_sizes=(8,), information_bottleneck=False)
    ctx = torch.randn(2, 6, 5)
    mu, var = enc(ctx)
    torch.testing.assert_close(mu, enc.mlp(ctx).mean(1))
    assert torch.equal(var, torch.zeros(2, 3))
    assert torch.equal(enc.sample(mu, var), mu)


def test_encoder_bad_arguments():
    with pytest.raises(ArgumentError, match="latent_size"):
        ContextEncoder(5, 0)
    with pytest.raises(ArgumentError, match="information_bottleneck"):
        ContextEncoder(5, 2, information_bottleneck=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="context must be"):
        ContextEncoder(5, 2)(torch.zeros(2, 3, 4))


def _samples(T, B, task, start=0):
    """A [T, B] batch whose observation is (task, step, env) and reward is 100*task + step."""
    step = torch.arange(start, start + T, dtype=torch.float32)[:, None].expand(T, B)
    env = torch.arange(B, dtype=torch.float32)[None, :].expand(T, B)
    obs = torch.stack([torch.full((T, B), float(task)), step, env], -1)
    false = torch.zeros(T, B, 1, dtype=torch.bool)
    return TensorDict(
        {
            "observation": obs,
            "prev_action": torch.zeros(T, B, ACT),
            "prev_reward": torch.zeros(T, B),
            "action": torch.ones(T, B, ACT) * task,
            "next": {
                "observation": obs + torch.tensor([0.0, 1.0, 0.0]),
                "reward": (100.0 * task + step).unsqueeze(-1),
                "done": false,
                "terminated": false,
                "truncated": false,
            },
        },
        batch_size=[T, B],
    )


def test_multi_task_replay_isolation_shapes_and_context():
    replay = MultiTaskReplay(3, size=40, batch_B=2, encoder_size=8, seed=0)
    for task in range(3):
        replay.append_samples(task, _samples(5, 2, task), to_encoder=task != 1)
    batch = replay.sample_batch([2, 0, 2], 16)
    assert batch.batch_size == (3, 16)
    assert {"return_n", "discount_n", "done_n", "is_weight", "index"} <= set(batch.keys())
    assert batch["observation"].shape == (3, 16, OBS)
    assert batch["next", "reward"].shape == (3, 16, 1)
    for row, task in enumerate([2, 0, 2]):
        assert bool((batch["observation"][row, :, 0] == task).all())
        torch.testing.assert_close(batch["next", "reward"][row, :, 0], batch["return_n"][row])
        torch.testing.assert_close(
            batch["next", "reward"][row, :, 0], 100.0 * task + batch["observation"][row, :, 1]
        )
    assert replay.task_len(1) == 10 and replay.encoder_len(1) == 0
    # A batch longer than the encoder buffer leaves its most recent steps (1..4) there.
    assert replay.encoder_len(0) == 8
    assert bool((replay.sample_context([0], 64)["observation"][0, :, 1] >= 1).all())
    with pytest.raises(RuntimeError, match="task 1"):
        replay.sample_context([1], 4)
    # The encoder buffer holds the most recent 8 transitions (4 steps of 2 envs).
    replay.append_samples(0, _samples(3, 2, 0, start=5), to_encoder=True)
    ctx = replay.sample_context([0, 2], 64)
    assert ctx.batch_size == (2, 64)
    assert bool((ctx["observation"][0, :, 1] >= 4).all())
    c = context_from_transitions(ctx, use_next_obs=True)
    assert c.shape == (2, 64, OBS + ACT + 1 + OBS) and c.dtype == torch.float32
    enc = ContextEncoder(c.shape[-1], 2, hidden_sizes=(8,))
    assert enc(c)[0].shape == (2, 2)
    assert context_from_transitions(ctx).shape == (2, 64, OBS + ACT + 1)
    # Clearing empties only that task's encoder buffer.
    replay.clear_encoder(0)
    assert replay.encoder_len(0) == 0 and replay.encoder_len(2) == 8
    assert replay.task_len(0) == 16
    replay.append_samples(0, _samples(1, 2, 0, start=50), to_encoder=True)
    assert bool((replay.sample_context([0], 8)["observation"][0, :, 1] == 50).all())


def test_multi_task_replay_speaks_torchrls_extend_and_sample_per_task():
    """``extend(data, task=...)`` writes what ``append_samples`` writes (time-major, a
    collector's ``[B, T]`` named "time", flat ``[N]`` for one env) and returns the RL
    buffer's indices; ``sample(n, tasks=...)`` is ``sample_batch``; bad layouts refused."""
    mine = MultiTaskReplay(2, size=40, batch_B=2, encoder_size=8, seed=0)
    theirs = MultiTaskReplay(2, size=40, batch_B=2, encoder_size=8, seed=0)
    mine.append_samples(1, _samples(5, 2, 1), to_encoder=True)
    collector_layout = _samples(5, 2, 1).transpose(0, 1)
    collector_layout.names = [None, "time"]
    index = theirs.extend(collector_layout, task=1)
    assert index.tolist() == [[2 * t, 2 * t + 1] for t in range(5)]
    index = theirs.extend(_samples(2, 2, 1, start=5), task=1, to_encoder=False)
    assert index.tolist() == [[10, 11], [12, 13]]
    mine.append_samples(1, _samples(2, 2, 1, start=5), to_encoder=False)
    assert len(theirs) == len(mine) == 14 and theirs.encoder_len(1) == mine.encoder_len(1) == 8
    a, b = mine.sample_batch([1, 1], 6), theirs.sample(6, tasks=[1, 1])
    assert a.batch_size == b.batch_size == (2, 6)
    for key in ("observation", "action", "return_n", ("next", "reward")):
        assert torch.equal(a[key], b[key])
    one_env = MultiTaskReplay(1, size=10, batch_B=1, encoder_size=5, seed=0)
    assert one_env.extend(_samples(3, 1, 0)[:, 0], task=0).tolist() == [[0], [1], [2]]
    with pytest.raises(ArgumentError, match="data must be a time-major"):
        theirs.extend(_samples(3, 1, 0)[:, 0], task=0)  # [N] steps of which of 2 envs?
    with pytest.raises(ArgumentError, match="task"):
        theirs.extend(_samples(3, 2, 0), task=2)
    with pytest.raises(ArgumentError, match="tasks"):
        theirs.sample(4, tasks=[])


def test_multi_task_replay_save_load(tmp_path):
    replay = MultiTaskReplay(2, size=20, batch_B=1, encoder_size=6, seed=3)
    replay.append_samples(0, _samples(4, 1, 0), to_encoder=True)
    replay.append_samples(1, _samples(2, 1, 1), to_encoder=False)
    replay.save(tmp_path / "r", info={"itr": 7})
    other = MultiTaskReplay(2, size=20, batch_B=1, encoder_size=6, seed=4)
    assert other.load(tmp_path / "r") == {"itr": 7}
    assert [other.task_len(t) for t in (0, 1)] == [4, 2]
    assert [other.encoder_len(t) for t in (0, 1)] == [4, 0]
    assert bool((other.sample_batch([1], 5)["observation"][0, :, 0] == 1).all())


def test_multi_task_replay_bad_arguments():
    with pytest.raises(ArgumentError, match="n_tasks"):
        MultiTaskReplay(0, size=10, batch_B=1, encoder_size=5)
    with pytest.raises(ArgumentError, match="encoder_size"):
        MultiTaskReplay(2, size=10, batch_B=2, encoder_size=4)
    replay = MultiTaskReplay(2, size=10, batch_B=1, encoder_size=5)
    with pytest.raises(ArgumentError, match="task"):
        replay.append_samples(2, _samples(1, 1, 0), to_encoder=False)
    with pytest.raises(ArgumentError, match="to_encoder"):
        replay.append_samples(0, _samples(1, 1, 0), to_encoder=None)  # type: ignore[arg-type]
    replay.append_samples(0, _samples(2, 1, 0), to_encoder=False)
    with pytest.raises(ArgumentError, match=r"tasks\[1\]"):
        replay.sample_batch([0, -1], 4)
    with pytest.raises(ArgumentError, match="tasks"):
        replay.sample_batch([], 4)
    with pytest.raises(ArgumentError, match="batch_size"):
        replay.sample_batch([0], 0)
    with pytest.raises(ArgumentError, match="task"):
        replay.clear_encoder(5)


def test_multi_task_replay_same_seed_same_batches():
    def draw(seed):
        replay = MultiTaskReplay(2, size=20, batch_B=2, encoder_size=6, seed=seed)
        for task in range(2):
            replay.append_samples(task, _samples(4, 2, task), to_encoder=True)
        replay.clear_encoder(1)
        replay.append_samples(1, _samples(2, 2, 1, start=9), to_encoder=True)
        return replay.sample_batch([0, 1], 8), replay.sample_context([1, 0], 8)

    (a, b), (c, d) = draw(5), draw(5)
    assert torch.equal(a["index"], c["index"]) and torch.equal(b["index"], d["index"])


def test_multi_task_replay_meta_batch_and_encoder_context():
    """``sample_meta_batch`` is ``sample_batch`` and ``sample_context`` (the same draws) in
    one ``[tasks]`` TensorDict; ``context=`` gives the encoder buffer other rewards."""

    def filled(seed):
        replay = MultiTaskReplay(2, size=20, batch_B=2, encoder_size=6, seed=seed)
        for task in range(2):
            samples = _samples(4, 2, task)
            context = samples.clone()
            context["next", "reward"] = -context["next", "reward"] - 1
            replay.append_samples(task, samples, to_encoder=True, context=context)
        return replay

    batch = filled(3).sample_meta_batch([1, 0, 1], 5, 4)
    replay = filled(3)
    rl, context = replay.sample_batch([1, 0, 1], 5), replay.sample_context([1, 0, 1], 4)
    assert batch.batch_size == (3,)
    assert (batch[keys.META_RL] == rl).all() and (batch[keys.CONTEXT] == context).all()
    assert torch.all(batch["rl", "next", "reward"] >= 0)
    assert torch.all(batch["context", "next", "reward"] < 0)  # the encoder's own rewards
