"""Wait-reset collection (``mid_batch_reset=False``): finished envs freeze until the next
batch, the ``valid`` mask, episode records, the same batches from every sampler, and the
algorithms' use (PPO masks, replay algorithms refuse)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tdrl import keys
from tdrl.agents import CategoricalPgAgent
from tdrl.agents.dqn import DqnAgent
from tdrl.algos import PPO
from tdrl.algos.dqn import DQN
from tdrl.samplers import CpuSampler, GpuSampler, SerialSampler
from tdrl.testing import CountingEnv, FixedActionAgent

T, B, LENGTH = 7, 3, 3


def _batches(cls, n=2, **kwargs):
    extra = {"n_workers": 3} if cls is not SerialSampler else {}
    sampler = cls(
        CountingEnv,
        {"episode_length": LENGTH},
        batch_T=T,
        batch_B=B,
        mid_batch_reset=False,
        max_decorrelation_steps=kwargs.pop("max_decorrelation_steps", 0),
        **extra,
        **kwargs,
    )
    agent = FixedActionAgent()
    sampler.initialize(agent, seed=0)
    out = []
    try:
        for itr in range(n):
            agent.sample_mode(itr)
            samples, trajs = sampler.obtain_samples(itr)
            out.append((samples.clone(), [(t.Length, t.Return) for t in trajs]))
    finally:
        sampler.shutdown()
    return out


def test_finished_envs_wait_for_the_next_batch():
    (first, trajs), (second, _) = _batches(SerialSampler)
    k = first[keys.OBSERVATION][..., 0]
    # Every env runs one episode of 3 steps, then waits (zeros, done, invalid) until t = 7.
    expected_valid = torch.tensor([True] * LENGTH + [False] * (T - LENGTH))
    for b in range(B):
        assert torch.equal(first[keys.VALID][:, b], expected_valid)
        assert k[:LENGTH, b].tolist() == [0, 1, 2]
        assert (first[keys.OBSERVATION][LENGTH:, b] == 0).all()
        assert first[keys.NEXT_DONE][LENGTH - 1 :, b].all()
        assert not first[keys.NEXT_DONE][: LENGTH - 1, b].any()
        assert (first[keys.NEXT_REWARD][LENGTH:, b] == 0).all()
        # The real final transition keeps its next observation (k = 3).
        assert first[keys.NEXT_OBSERVATION][LENGTH - 1, b, 0] == LENGTH
        # The next batch starts from a reset: k = 0 of the next episode, null prev inputs.
        assert second[keys.OBSERVATION][0, b, 0] == 0
        assert second[keys.OBSERVATION][0, b, 1] == first[keys.OBSERVATION][0, b, 1] + 1
        assert second[keys.PREV_REWARD][0, b, 0] == 0
    # Episode records count real steps only.
    assert trajs == [(LENGTH, pytest.approx(1 + 2 + 3 + 0.1 * (0 + 1 + 2)))] * B


def test_mid_batch_reset_default_has_no_valid_entry():
    sampler = SerialSampler(CountingEnv, {}, batch_T=2, batch_B=1, max_decorrelation_steps=0)
    samples = sampler.initialize(FixedActionAgent(), seed=0)
    assert samples.get(keys.VALID, None) is None
    with pytest.raises(TypeError, match="mid_batch_reset"):
        SerialSampler(CountingEnv, {}, batch_T=2, batch_B=1, mid_batch_reset="no")


@pytest.mark.parametrize("cls", [CpuSampler, GpuSampler], ids=lambda c: c.__name__)
def test_parallel_samplers_wait_reset_like_serial(cls):
    want = _batches(SerialSampler, max_decorrelation_steps=5)
    got = _batches(cls, max_decorrelation_steps=5)
    for (g, g_trajs), (w, w_trajs) in zip(got, want, strict=True):
        assert (g == w).all()
        assert sorted(g_trajs) == sorted(w_trajs)
    assert not want[0][0][keys.VALID].all()  # some steps are masked: the check can fail


def test_ppo_masks_the_frozen_steps():
    """PPO's loss over a wait-reset batch equals its loss over the valid steps only."""
    torch.manual_seed(0)
    sampler = SerialSampler(
        CountingEnv,
        {"episode_length": LENGTH},
        batch_T=T,
        batch_B=B,
        mid_batch_reset=False,
        max_decorrelation_steps=0,
    )
    agent = CategoricalPgAgent(model_kwargs={"hidden_sizes": (8,)})
    sampler.initialize(agent, seed=0)
    algo = PPO(epochs=1, minibatches=1, normalize_advantage=False)
    algo.initialize(agent, n_itr=2, batch_spec=sampler.batch_spec)
    agent.sample_mode(0)
    samples, _ = sampler.obtain_samples(0)
    from tdrl.algos.pg.base import process_returns

    batch = process_returns(
        agent,
        samples,
        discount=algo.discount,
        gae_lambda=algo.gae_lambda,
        normalize_advantage=False,
    )
    full = algo.loss(batch)
    valid = batch[keys.VALID]
    kept = algo.loss(batch[valid])  # only the valid rows, no mask
    assert torch.isclose(full["loss_pi"], kept["loss_pi"], atol=1e-6)
    scrambled = batch.clone()
    scrambled[keys.ADVANTAGE][~valid] = 1e3  # garbage on frozen steps changes nothing
    assert torch.isclose(algo.loss(scrambled)["loss_pi"], full["loss_pi"], atol=1e-6)
    assert not torch.isclose(algo.loss(batch.exclude(keys.VALID))["loss_pi"], full["loss_pi"])
    sampler.shutdown()


def test_replay_algorithms_refuse_wait_reset_batches():
    sampler = SerialSampler(
        CountingEnv, {}, batch_T=4, batch_B=2, mid_batch_reset=False, max_decorrelation_steps=0
    )
    agent = DqnAgent(model_kwargs={"hidden_sizes": (8,)})
    sampler.initialize(agent, seed=0)
    algo = DQN(min_steps_learn=0, replay_size=64, batch_size=4)
    algo.initialize(agent, n_itr=1, batch_spec=sampler.batch_spec)
    samples, _ = sampler.obtain_samples(0)
    with pytest.raises(ValueError, match="wait-reset"):
        algo.optimize_agent(0, samples)
    assert np.isfinite(samples[keys.NEXT_REWARD].numpy()).all()
    sampler.shutdown()
