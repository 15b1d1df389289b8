"""AsyncRl / AsyncRlEval: the replay-ratio throttle, weights reaching the sampler's agent,
evaluation rows, failures in the sampler thread, argument checks."""

from __future__ import annotations

import csv
import time

import pytest
import torch

from tdrl.agents import CategoricalPgAgent
from tdrl.agents.dqn import DqnAgent
from tdrl.agents.qpg import SacAgent
from tdrl.algos import PPO
from tdrl.algos.dqn import DQN
from tdrl.algos.qpg import SAC
from tdrl.logging import logger_context
from tdrl.runners import AsyncRl, AsyncRlEval
from tdrl.samplers import GpuSampler, SerialSampler
from tdrl.testing import ContinuousIdentityEnv, CountingEnv


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class SlowSampler(SerialSampler):
    """A serial sampler that takes at least ``delay`` seconds per batch, so an unthrottled
    optimiser would overrun the replay ratio."""

    delay = 0.01

    def obtain_samples(self, itr):
        time.sleep(self.delay)
        return super().obtain_samples(itr)


class FailingSampler(SerialSampler):
    def obtain_samples(self, itr):
        if itr == 3:
            raise ValueError("sampler broke on purpose")
        return super().obtain_samples(itr)


def _rows(run_dir):
    with open(run_dir / "progress.csv", newline="") as f:
        return list(csv.DictReader(f))


def _dqn_run(tmp_path, sampler_cls=SlowSampler, n_steps=1600, runner_kwargs=None, **algo_kwargs):
    sampler = sampler_cls(CountingEnv, {"episode_length": 6}, batch_T=8, batch_B=2)
    agent = DqnAgent(model_kwargs={"hidden_sizes": (16,)})
    kwargs = {
        "batch_size": 16,
        "replay_ratio": 4,
        "min_steps_learn": 64,
        "replay_size": 1000,
        "eps_steps": 200,
    }
    kwargs.update(algo_kwargs)
    algo = DQN(**kwargs)
    runner = AsyncRl(
        algo,
        agent,
        sampler,
        n_steps=n_steps,
        seed=0,
        log_interval_steps=320,
        **(runner_kwargs or {}),
    )
    with logger_context(str(tmp_path), 0, "async", {}, echo=False) as logger:
        row = runner.train()
        run_dir = logger.run_dir
    return runner, algo, row, run_dir


def test_replay_ratio_is_an_upper_bound_and_weights_reach_the_sampler(tmp_path):
    runner, algo, row, run_dir = _dqn_run(tmp_path)
    rows = _rows(run_dir)
    assert len(rows) == 5  # 1600 steps, a row every 320
    assert row["Diagnostics/CumSteps"] == 1600
    assert algo.update_counter > 0
    for r in rows:
        assert float(r["Diagnostics/CumReplayRatio"]) <= algo.replay.replay_ratio + 1e-9
        assert "Diagnostics/OptThrottle" in r and "Diagnostics/SamplerIteration" in r
    assert (
        algo.update_counter * algo.batch_size <= algo.replay.replay_ratio * runner.stats.cum_steps
    )
    # With a slow sampler the optimiser keeps up: the bound is reached within a round or two.
    steps_learning = runner.stats.cum_steps - algo.replay.min_steps_learn
    assert algo.update_counter * algo.batch_size >= 0.5 * algo.replay.replay_ratio * steps_learning
    assert sum(float(r["Diagnostics/OptThrottle"]) for r in rows) > 0
    # The learner publishes after every round; the sampler's agent loads the newest
    # publication before each batch.
    for name, value in runner.agent.state_dict().items():
        assert torch.equal(value, runner.weights.state[name]), name
    assert 0 < runner.sampler_weights_version <= runner.weights.current
    if runner.sampler_weights_version == runner.weights.current:
        for name, value in runner.sampler_agent.state_dict().items():
            assert torch.equal(value, runner.weights.state[name]), name
    assert runner.sampler.agent is runner.sampler_agent is not runner.agent
    assert algo.replay_lock is None  # released after the run


def test_bounded_sampler_lead_keeps_the_replay_ratio(tmp_path):
    """A fast sampler with a slow optimiser: free-running, the sampler finishes long before
    the optimiser catches up; with a lead of one iteration the replay ratio stays close to
    the target (and never above it)."""
    _, algo, row, _ = _dqn_run(
        tmp_path / "lead",
        sampler_cls=SerialSampler,
        replay_ratio=32,
        runner_kwargs={"max_sampler_lead_itrs": 1},
    )
    ratio = row["Diagnostics/CumReplayRatio"]
    steps_learning = row["Diagnostics/CumSteps"] - algo.replay.min_steps_learn
    assert ratio <= 32 + 1e-9
    assert algo.update_counter * algo.batch_size >= 0.8 * 32 * steps_learning - 2 * 16 * 32
    _, _free_algo, free_row, _ = _dqn_run(
        tmp_path / "free", sampler_cls=SerialSampler, replay_ratio=32
    )
    assert free_row["Diagnostics/CumReplayRatio"] < ratio
    with pytest.raises(TypeError, match="sampler_process"):
        AsyncRl(
            DQN(),
            DqnAgent(),
            SerialSampler(CountingEnv, {}, batch_T=2, batch_B=1),
            n_steps=8,
            sampler_process="yes",
        )
    with pytest.raises(ValueError, match="max_sampler_lead_itrs"):
        AsyncRl(
            DQN(),
            DqnAgent(),
            SerialSampler(CountingEnv, {}, batch_T=2, batch_B=1),
            n_steps=8,
            max_sampler_lead_itrs=0,
        )


def test_sampler_process_keeps_the_bound_and_leaves_no_process(tmp_path):
    """The sampler in its own process: batches arrive through the double buffer, weights
    reach it, the throttle holds, evaluation rows come from it, and it is gone after."""
    sampler = SlowSampler(
        CountingEnv,
        {"episode_length": 6},
        batch_T=8,
        batch_B=2,
        eval_n_envs=2,
        eval_max_steps=24,
    )
    agent = DqnAgent(model_kwargs={"hidden_sizes": (16,)})
    algo = DQN(batch_size=16, replay_ratio=4, min_steps_learn=64, replay_size=1000)
    runner = AsyncRlEval(
        algo,
        agent,
        sampler,
        n_steps=960,
        seed=0,
        log_interval_steps=320,
        sampler_process=True,
        max_sampler_lead_itrs=2,
    )
    with logger_context(str(tmp_path), 0, "async_proc", {}, echo=False) as logger:
        row = runner.train()
        rows = _rows(logger.run_dir)
    assert len(rows) == 4  # evaluation at itr 0 + 3 log points
    assert all(int(r["Diagnostics/TrajsInEval"]) == 4 for r in rows)  # 12 steps x 2 envs
    assert row["Diagnostics/CumSteps"] == 960 and algo.update_counter > 0
    assert len(algo.replay_buffer) > 0
    for r in rows:
        assert float(r["Diagnostics/CumReplayRatio"]) <= algo.replay.replay_ratio + 1e-9
    assert 0 < runner.sampler_weights_version <= runner.weights.current
    for name, value in runner.agent.state_dict().items():
        assert torch.equal(value, runner.weights.state[name]), name
    runner.sampler_proc.join(5)
    assert not runner.sampler_proc.is_alive() and runner.sampler_proc.exitcode == 0


def test_sampler_process_failure_is_raised(tmp_path):
    with pytest.raises(RuntimeError, match="sampler process failed") as info:
        _dqn_run(tmp_path, sampler_cls=FailingSampler, runner_kwargs={"sampler_process": True})
    assert "sampler broke on purpose" in str(info.value.__cause__)
    # One line: the process's name and the last line of its traceback.
    assert str(info.value) == (
        "the sampler process failed: tdrl-async-sampler failed: "
        "ValueError: sampler broke on purpose"
    )


def test_sampler_thread_failure_is_raised(tmp_path):
    with pytest.raises(RuntimeError, match="sampler thread failed") as info:
        _dqn_run(tmp_path, sampler_cls=FailingSampler)
    assert "sampler broke on purpose" in str(info.value.__cause__)
    assert str(info.value) == "the sampler thread failed: ValueError: sampler broke on purpose"


def test_async_eval_with_sac_and_a_parallel_sampler(tmp_path):
    sampler = GpuSampler(
        ContinuousIdentityEnv,
        {"dim": 2, "episode_length": 10},
        batch_T=5,
        batch_B=2,
        n_workers=2,
        eval_n_envs=2,
        eval_max_steps=40,
    )
    agent = SacAgent(model_kwargs={"hidden_sizes": (16,)}, q_model_kwargs={"hidden_sizes": (16,)})
    algo = SAC(batch_size=16, min_steps_learn=40, replay_ratio=8, replay_size=500)
    runner = AsyncRlEval(algo, agent, sampler, n_steps=400, seed=1, log_interval_steps=200)
    with logger_context(str(tmp_path), 0, "async_eval", {}, echo=False) as logger:
        row = runner.train()
        rows = _rows(logger.run_dir)
    assert len(rows) == 3  # itr 0 evaluation + 2 log points
    assert all(int(r["Diagnostics/TrajsInEval"]) == 4 for r in rows)
    assert row["Diagnostics/CumSteps"] == 400 and algo.update_counter > 0
    assert float(rows[-1]["Diagnostics/CumReplayRatio"]) <= 8 + 1e-9
    assert not sampler.worker_processes  # shut down


def test_rejects_on_policy_algorithms_and_eval_without_eval_envs():
    sampler = SerialSampler(CountingEnv, {}, batch_T=4, batch_B=2)
    runner = AsyncRl(PPO(), CategoricalPgAgent(), sampler, n_steps=64)
    with pytest.raises(TypeError, match="replay-based"):
        runner.train()
    sampler = SerialSampler(CountingEnv, {}, batch_T=4, batch_B=2)
    with pytest.raises(ValueError, match="eval_n_envs"):
        AsyncRlEval(DQN(), DqnAgent(), sampler, n_steps=64).train()
