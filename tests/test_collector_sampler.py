"""CollectorSampler: TorchRL's collectors behind tdrl's sampler interface, in [T, B].

The contract is checked on ``CountingEnv`` (every number predictable); PPO runs through
``MinibatchRl`` on CartPole with the sync collector and a multi-process one; the weights
of the agent reach the worker processes; ``shutdown`` leaves no child behind.
"""

from __future__ import annotations

import multiprocessing

import pytest
import torch

from tdrl import keys
from tdrl.agents import CategoricalPgAgent, DqnAgent
from tdrl.algos import PPO
from tdrl.envs import make_env
from tdrl.logging import logger_context
from tdrl.runners import MinibatchRl
from tdrl.samplers import CollectorSampler, SerialSampler
from tdrl.testing import CountingEnv
from tdrl.utils.checks import ArgumentError

SMALL = {"hidden_sizes": (16,)}
T, B, LENGTH = 7, 3, 5


def counting_env(episode_length: int = LENGTH):
    """A TorchRL ``CountingEnv`` (module level: it pickles into worker processes)."""
    return make_env(CountingEnv(episode_length=episode_length))


def _check_batch(samples, previous):
    """Every entry of a CountingEnv batch, ``previous``: the last row of the batch before."""
    k = samples["observation"][..., 0]
    action = samples["action"]
    torch.testing.assert_close(samples["next", "observation"][..., 0], k + 1)
    torch.testing.assert_close(samples["next", "reward"][..., 0], k + 1 + action / 10)
    end = k + 1 == LENGTH
    assert torch.equal(samples["next", "terminated"][..., 0], end)
    assert torch.equal(samples["next", "done"][..., 0], end)
    assert not samples["next", "truncated"].any()
    # prev_action / prev_reward: the step before in the episode, zeros at its start.
    before_action = torch.cat([previous["action"][None], action[:-1]])
    before_reward = torch.cat([previous["next", "reward"][None], samples["next", "reward"][:-1]])
    start = k == 0
    assert torch.equal(samples["prev_action"], torch.where(start, 0, before_action))
    assert torch.equal(samples["prev_reward"], torch.where(start[..., None], 0.0, before_reward))
    # the next row's observation continues the episode (or starts the next one)
    assert torch.equal(k[1:], torch.where(end[:-1], 0, k[:-1] + 1))


def test_contract_sync():
    sampler = CollectorSampler(
        counting_env, batch_T=T, batch_B=B, eval_n_envs=2, eval_max_trajectories=4
    )
    agent = CategoricalPgAgent(model_kwargs=SMALL)
    example = sampler.initialize(agent, seed=0, traj_info_kwargs={"discount": 0.9})
    serial = SerialSampler(CountingEnv, batch_T=T, batch_B=B)
    reference = serial.initialize(CategoricalPgAgent(model_kwargs=SMALL), seed=0)
    serial.shutdown()
    assert example.names == ["time", None] and example.batch_size == (T, B)
    for key in reference.keys(True, True):  # SerialSampler's layout, entry by entry
        assert example.get(key).shape == reference.get(key).shape, key
        assert example.get(key).dtype == reference.get(key).dtype, key
    assert set(example.keys(True, True)) == set(reference.keys(True, True))
    previous = {"action": torch.zeros(B, dtype=torch.long), ("next", "reward"): torch.zeros(B, 1)}
    rewards, episodes = [], []
    for samples in _take(sampler, 3):  # the iteration protocol, itr 0, 1, 2
        assert agent.mode == "sample"
        _check_batch(samples, previous)
        previous = {  # a copy: the buffer is overwritten by the next batch
            "action": samples["action"][-1].clone(),
            ("next", "reward"): samples["next", "reward"][-1].clone(),
        }
        rewards.append(samples["next", "reward"][..., 0].clone())
        episodes += sampler.last_traj_infos
    evaluation = sampler.evaluate_agent(3)  # its own envs, in eval mode
    assert agent.mode == "eval" and len(evaluation) == 4
    assert all(e.Length == LENGTH and 15 <= e.Return <= 15 + 0.2 * LENGTH for e in evaluation)
    sampler.shutdown()
    # Episodes: 3 envs x 21 steps from the first reset = 12 whole episodes of 5 steps.
    reward = torch.cat(rewards)  # [3T, B]; every env starts at k = 0
    assert len(episodes) == B * (3 * T // LENGTH) == 12
    segments = [
        reward[s : s + LENGTH, b].double()
        for b in range(B)
        for s in range(0, 3 * T - LENGTH + 1, LENGTH)
    ]
    discounts = 0.9 ** torch.arange(LENGTH, dtype=torch.float64)
    assert sorted(e.Return for e in episodes) == pytest.approx(
        sorted(x.sum().item() for x in segments)
    )
    assert sorted(e.DiscountedReturn for e in episodes) == pytest.approx(
        sorted((x * discounts).sum().item() for x in segments)
    )
    assert all(e.Length == LENGTH and e.NonzeroRewards == LENGTH for e in episodes)


def _take(sampler, n):
    for i, samples in enumerate(sampler):
        yield samples
        if i + 1 == n:
            break


def test_recurrent_batch_reproduces_the_acting():
    agent = CategoricalPgAgent(recurrent=True, model_kwargs={"hidden_sizes": (16,), "lstm_size": 8})
    sampler = CollectorSampler(counting_env, batch_T=T, batch_B=B)
    sampler.initialize(agent, seed=0)
    for itr in range(2):
        agent.sample_mode(itr)
        samples, _ = sampler.obtain_samples(itr)
    sampler.shutdown()
    is_init = samples[keys.IS_INIT]
    assert is_init.shape == (T, B)
    assert torch.equal(is_init, samples["observation"][..., 0] == 0)
    h, next_h = samples[keys.RNN_STATE]["h"], samples[keys.NEXT_RNN_STATE]["h"]
    assert (h[is_init] == 0).all() and not (h[~is_init] == 0).all()
    torch.testing.assert_close(h[1:][~is_init[1:]], next_h[:-1][~is_init[1:]])
    # The training forward from the first row's state gives the logits the agent acted with.
    torch.testing.assert_close(agent(samples)["logits"], samples["logits"])


def _run_ppo(sampler, tmp_path):
    agent = CategoricalPgAgent(model_kwargs=SMALL)
    runner = MinibatchRl(
        PPO(minibatches=2, epochs=2),
        agent,
        sampler,
        n_steps=3 * sampler.batch_spec.size,
        seed=1,
        log_interval_steps=sampler.batch_spec.size,
        progress_bar=False,
    )
    with logger_context(tmp_path, 0, "t", echo=False):
        row = runner.train()
    assert row["Diagnostics/Iteration"] == 2
    assert row["Diagnostics/CumSteps"] == 3 * sampler.batch_spec.size
    assert torch.isfinite(torch.tensor(row["lossAverage"]))
    return runner


def test_ppo_sync(tmp_path):
    sampler = CollectorSampler("CartPole-v1", batch_T=16, batch_B=2)
    _run_ppo(sampler, tmp_path)
    assert sampler._collector is None  # the runner shut it down


def test_ppo_multi_async_leaves_no_child(tmp_path):
    sampler = CollectorSampler(
        "CartPole-v1", batch_T=16, batch_B=2, collector="multi_async", n_workers=1
    )
    _run_ppo(sampler, tmp_path)
    assert multiprocessing.active_children() == []


def test_weights_and_mode_reach_the_workers():
    check_weights_and_mode_reach_the_workers("multi_sync")
    assert multiprocessing.active_children() == []


def check_weights_and_mode_reach_the_workers(collector):
    sampler = CollectorSampler(
        "CartPole-v1", batch_T=8, batch_B=4, collector=collector, n_workers=2
    )
    agent = DqnAgent(model_kwargs=SMALL, eps_init=1.0, eps_final=0.0, eps_eval=0.0)
    agent.set_epsilon_schedule(5, 6)  # random before iteration 5, greedy from 6 on
    sampler.initialize(agent, seed=0)
    try:
        agent.sample_mode(6)
        samples, _ = sampler.obtain_samples(6)
        assert samples.batch_size == (8, 4) and samples.names == ["time", None]
        assert torch.equal(samples["action"], samples["q"].argmax(-1))  # greedy
        for itr, forced in ((7, 1), (8, 0)):  # the Q-head's bias decides: workers follow
            bias = [-100.0, 100.0] if forced else [100.0, -100.0]
            with torch.no_grad():
                agent.model.head.net[2].bias.copy_(torch.tensor(bias))
            agent.sample_mode(itr)
            samples, _ = sampler.obtain_samples(itr)
            assert (samples["action"] == forced).all()
        agent.sample_mode(0)  # the workers' agents follow the iteration: epsilon 1 there
        samples, _ = sampler.obtain_samples(0)
        assert 0 < samples["action"].sum() < samples["action"].numel()
        assert not torch.equal(samples["action"], samples["q"].argmax(-1))
    finally:
        sampler.shutdown()


def _one_line(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_bad_arguments_are_refused_in_one_line():
    with pytest.raises(ArgumentError) as e:
        CollectorSampler("CartPole-v1", batch_T=4, batch_B=2, collector="ray_async")
    assert "collector" in _one_line(e)
    with pytest.raises(ArgumentError) as e:
        CollectorSampler("CartPole-v1", batch_T=4, batch_B=3, collector="multi_sync", n_workers=2)
    assert "n_workers" in _one_line(e)
    with pytest.raises(ArgumentError) as e:
        CollectorSampler("CartPole-v1", batch_T=4, batch_B=2, n_workers=2)
    assert "n_workers" in _one_line(e)
    with pytest.raises(TypeError) as e:
        CollectorSampler(CountingEnv, batch_T=4, batch_B=2).initialize(CategoricalPgAgent())
    assert "TorchRL env" in _one_line(e)
    sampler = CollectorSampler(
        lambda: counting_env(), batch_T=4, batch_B=2, collector="multi_sync", n_workers=2
    )
    with pytest.raises(ArgumentError) as e:
        sampler.initialize(CategoricalPgAgent())
    assert "pickle" in _one_line(e)
    sampler = CollectorSampler(counting_env, batch_T=4, batch_B=2, collector="multi_async")
    with pytest.raises(ArgumentError) as e:
        sampler.initialize(DqnAgent(eps_final_min=0.001))
    assert "per-env" in _one_line(e)
    with pytest.raises(RuntimeError):
        CollectorSampler(counting_env, batch_T=4, batch_B=2).obtain_samples(0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("collector", ["sync", "multi_sync"])
def test_agent_on_cuda(collector):
    """As ``start_run`` places it: the agent moves to the GPU after ``initialize``."""
    sampler = CollectorSampler(
        "CartPole-v1", batch_T=8, batch_B=2, collector=collector, n_workers=1
    )
    agent = DqnAgent(model_kwargs=SMALL, eps_init=0.0, eps_final=0.0)
    sampler.initialize(agent, seed=0)
    agent.to("cuda")
    try:
        for itr, forced in ((0, 1), (1, 0)):
            bias = [-100.0, 100.0] if forced else [100.0, -100.0]
            with torch.no_grad():
                agent.model.head.net[2].bias.copy_(torch.tensor(bias))
            agent.sample_mode(itr)
            samples, _ = sampler.obtain_samples(itr)
            assert samples["action"].device.type == "cpu"
            assert (samples["action"] == forced).all()
    finally:
        sampler.shutdown()


def _two_nested_envs():
    from torchrl.envs import SerialEnv

    from tdrl.testing.torchrl_envs import NestedCountingEnv

    return SerialEnv(2, NestedCountingEnv)


def test_a_batched_env_with_two_reward_keys():
    """A ``[2]`` env (an unstarted ``SerialEnv`` counts as closed) whose reward spec also
    holds ``cost``: the ``reward`` entry is the reward."""
    from tdrl.testing.torchrl_envs import NestedFixedAgent

    sampler = CollectorSampler(_two_nested_envs, {}, batch_T=4, batch_B=2)
    try:
        samples = sampler.initialize(NestedFixedAgent(), seed=0)
        samples, _ = sampler.obtain_samples(0)
        assert samples.batch_size == (4, 2)
        assert samples["next", "reward"].shape == (4, 2, 1)
    finally:
        sampler.shutdown()


def test_importing_the_samplers_does_not_import_torchrl_collectors():
    import subprocess
    import sys

    code = "import sys, tdrl.samplers, tdrl.runners; print('torchrl.collectors' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
