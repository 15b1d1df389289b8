"""MetaRl (PEARL's loop): the collection schedule, the samples it writes, the evaluation
columns, determinism under a seed and the argument checks."""

from __future__ import annotations

import math

import pytest
import torch

from tdrl.agents.qpg import PearlAgent
from tdrl.algos.qpg import PEARL
from tdrl.replays import MultiTaskReplay
from tdrl.runners.meta_rl import MetaRl
from tdrl.utils.checks import ArgumentError

SMALL = {
    "n_train_tasks": 3,
    "n_eval_tasks": 2,
    "n_iterations": 2,
    "num_initial_steps": 40,
    "num_tasks_sample": 2,
    "num_steps_prior": 20,
    "num_steps_posterior": 40,
    "num_extra_rl_steps_posterior": 40,
    "num_train_steps_per_itr": 3,
    "num_steps_per_eval": 60,
    "num_exp_traj_eval": 1,
    "replay_size": 1000,
}


def make_runner(*, agent=None, algo=None, **kwargs) -> MetaRl:
    torch.set_num_threads(1)
    agent = agent or PearlAgent(latent_size=3, hidden_sizes=(16,), encoder_hidden_sizes=(16,))
    algo = algo or PEARL(meta_batch=2, batch_size=8, embedding_batch_size=8, reward_scale=100.0)
    return MetaRl(algo, agent, **{"env_name": "point-robot", **SMALL, **kwargs})


def test_collection_schedule_buffers_and_samples(monkeypatch):
    runner = make_runner()
    events: list[tuple] = []
    collect = runner.collect

    def spy_collect(task, n_steps, *, posterior, to_encoder):
        events.append(("collect", task, n_steps, posterior, to_encoder))
        steps = collect(task, n_steps, posterior=posterior, to_encoder=to_encoder)
        events.append(("collected", steps))
        return steps

    clear, append = MultiTaskReplay.clear_encoder, MultiTaskReplay.append_samples
    infer, log_row = runner.agent.infer_posterior, runner.log_row
    appended, rows = [], []

    def spy_clear(self, task):
        events.append(("clear", task))
        return clear(self, task)

    def spy_append(self, task, samples, *, to_encoder):
        appended.append(samples.clone())
        return append(self, task, samples, to_encoder=to_encoder)

    def spy_infer(context):
        events.append(("infer",))
        return infer(context)

    def spy_log_row(itr, infos, evals):
        rows.append(log_row(itr, infos, evals))
        return rows[-1]

    monkeypatch.setattr(runner, "collect", spy_collect)
    monkeypatch.setattr(runner, "log_row", spy_log_row)
    monkeypatch.setattr(runner.agent, "infer_posterior", spy_infer)
    monkeypatch.setattr(MultiTaskReplay, "clear_encoder", spy_clear)
    monkeypatch.setattr(MultiTaskReplay, "append_samples", spy_append)
    runner.train()

    # Drop the evaluation's posteriors (after the last collection of each iteration).
    sched = [e for e in events if e[0] != "collected"]
    initial = [("collect", t, 40, False, True) for t in range(3)]
    assert sched[:3] == initial
    blocks, i = [], 3
    while i < len(sched):
        if sched[i][0] != "clear":
            i += 1  # an evaluation posterior
            continue
        t = sched[i][1]
        assert sched[i + 1] == ("collect", t, 20, False, True)  # prior: no posterior
        assert sched[i + 2] == ("collect", t, 40, True, True)
        assert sched[i + 3] == ("infer",)  # after 1 of its 2 trajectories
        assert sched[i + 4] == ("collect", t, 40, True, False)
        assert sched[i + 5] == ("infer",)
        blocks.append(t)
        i += 6
    assert len(blocks) == 2 * 2  # num_tasks_sample per iteration
    steps = [e[1] for e in events if e[0] == "collected"]
    assert steps == [40] * 3 + [20, 40, 40] * 4  # whole 20-step trajectories
    assert [r["Diagnostics/CumSteps"] for r in rows] == [120 + 200, 120 + 400]
    assert rows[-1]["Diagnostics/CumUpdates"] == 6

    # Buffers: RL receives everything; the encoder what came after the task's last clear,
    # prior and posterior phases only.
    for task in range(3):
        calls = [e for e in sched if e[0] in ("collect", "clear") and e[1] == task]
        rl = sum(e[2] for e in calls if e[0] == "collect")
        last_clear = max((k for k, e in enumerate(calls) if e[0] == "clear"), default=-1)
        enc = sum(e[2] for e in calls[last_clear + 1 :] if e[0] == "collect" and e[4])
        assert runner.replay.task_len(task) == rl
        assert runner.replay.encoder_len(task) == enc

    # Every trajectory is a [20, 1] batch with tdrl's prev_action / prev_reward convention.
    for td in appended:
        assert tuple(td.batch_size) == (20, 1)
        assert torch.all(td["prev_action"][0] == 0) and torch.all(td["prev_reward"][0] == 0)
        assert torch.equal(td["prev_action"][1:], td["action"][:-1])
        assert torch.equal(td["prev_reward"][1:], td["next", "reward"][:-1])
        assert torch.equal(td["observation"][1:], td["next", "observation"][:-1])
        assert td["next", "truncated"][-1].all() and not td["next", "truncated"][:-1].any()
        assert not td["next", "terminated"].any()
        assert torch.equal(td["next", "done"], td["next", "truncated"])


def test_eval_columns_present_and_finite():
    row = make_runner(n_iterations=1, num_evals=2).train()
    for key in (
        "AverageTrainReturn_all_train_tasks",
        "AverageReturn_all_train_tasks",
        "AverageReturn_all_test_tasks",
        "AverageReturn_rollout_0",
        "AverageReturn_rollout_2",
        "ReturnAverage",
        "lossAverage",
        "loss_klAverage",
        "Diagnostics/Iteration",
    ):
        assert math.isfinite(row[key]), key
    assert "AverageReturn_rollout_3" not in row  # 60 eval steps = 3 trajectories of 20
    assert row["ReturnAverage"] == row["AverageReturn_all_test_tasks"]
    assert row["AverageReturn_all_test_tasks"] < 0  # point-robot's reward is -distance


def test_sparse_rewards_reported_and_seen_by_encoder():
    runner = make_runner(n_iterations=1, sparse_rewards=True, env_name="sparse-point-robot")
    row = runner.train()
    assert 0.0 <= row["AverageReturn_all_test_tasks"] <= 20.0
    context = runner.replay.sample_context([0], 16)
    rl = runner.replay.sample_batch([0], 16)
    assert torch.all(context["next", "reward"] >= 0)  # sparse: 0 or 1 - d
    assert torch.all(rl["next", "reward"] <= 0)  # dense: -distance


def test_same_seed_same_rows():
    def run(seed):
        row = make_runner(n_iterations=1, seed=seed).train()
        return {k: v for k, v in row.items() if "Time" not in k}

    first = run(3)
    assert first == run(3)
    assert first != run(4)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_train_tasks": 0}, "n_train_tasks"),
        ({"n_eval_tasks": 0}, "n_eval_tasks"),
        ({"n_iterations": 1.5}, "n_iterations"),
        ({"num_initial_steps": 0}, "num_initial_steps"),
        ({"update_post_train": 0}, "update_post_train"),
        ({"num_exp_traj_eval": 0}, "num_exp_traj_eval"),
        ({"num_steps_per_eval": 0}, "num_steps_per_eval"),
        ({"meta_batch": 0}, "meta_batch"),
        ({"env_name": "no-such-env"}, "env_name"),
        ({"device": "gpu"}, "device"),
        ({"num_steps_prior": 0, "num_steps_posterior": 0}, "num_extra_rl_steps_posterior"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ArgumentError, match=rf"^{name} "):
        make_runner(**kwargs)


def test_bad_algo_or_agent():
    agent = PearlAgent()
    with pytest.raises(ArgumentError, match=r"^algo "):
        MetaRl(object(), agent, env_name="point-robot")  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=r"^agent "):
        MetaRl(PEARL(), object(), env_name="point-robot")  # type: ignore[arg-type]
