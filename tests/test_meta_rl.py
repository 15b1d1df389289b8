"""MetaRl (PEARL's loop): the collection schedule, the samples it writes, the evaluation
columns, determinism under a seed and the argument checks."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from tdrl.agents.qpg import PearlAgent
from tdrl.algos.qpg import PEARL
from tdrl.logging import load_snapshot, logger_context
from tdrl.logging.files import SnapshotError
from tdrl.replays import MultiTaskReplay
from tdrl.replays.n_step import ReplayBuffer
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
        (
            {"num_steps_prior": 0, "num_steps_posterior": 0, "num_extra_rl_steps_posterior": 0},
            "num_tasks_sample",
        ),
        ({"sparse_rewards": True}, "sparse_rewards"),  # point-robot reports no sparse reward
        ({"env_kwargs": "abc"}, "env_kwargs"),
        ({"seed": 2**70}, "seed"),
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


# ---------------------------------------------------------------------- snapshots, resume
def _rows(path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _run(log_dir, n_iterations, **kwargs) -> None:
    with logger_context(log_dir, 0, "meta", {}, echo=False, resume="resume_from" in kwargs):
        make_runner(n_iterations=n_iterations, seed=3, **kwargs).train()


def test_resume_with_replay_continues_exactly_as_an_uninterrupted_run(tmp_path):
    """2 iterations, then a resume to 4 = 4 iterations straight: same rows (except times)."""
    _run(tmp_path / "straight", 4)
    _run(tmp_path / "cut", 2, snapshot_replay=True)
    snap = load_snapshot(tmp_path / "cut" / "run_0")
    assert snap["itr"] == 1 and snap["replay_itr"] == 1
    assert snap["tasks"]["train_tasks"] and len(snap["tasks"]["eval_tasks"]) == 2
    _run(tmp_path / "cut", 4, snapshot_replay=True, resume_from=tmp_path / "cut" / "run_0")
    straight = _rows(tmp_path / "straight" / "run_0" / "progress.csv")
    cut = _rows(tmp_path / "cut" / "run_0" / "progress.csv")
    assert [r["Diagnostics/Iteration"] for r in cut] == ["0", "1", "2", "3"]  # none lost or twice
    for a, b in zip(straight, cut, strict=True):
        assert {k: v for k, v in a.items() if "Time" not in k} == {
            k: v for k, v in b.items() if "Time" not in k
        }


def test_resume_without_replay_recollects_the_initial_steps(tmp_path, monkeypatch):
    _run(tmp_path, 2)
    assert load_snapshot(tmp_path / "run_0")["replay_itr"] is None
    runner = make_runner(n_iterations=3, seed=3, resume_from=tmp_path / "run_0")
    calls = []
    collect = runner.collect

    def spy(task, n_steps, *, posterior, to_encoder):
        calls.append((task, n_steps, posterior))
        return collect(task, n_steps, posterior=posterior, to_encoder=to_encoder)

    monkeypatch.setattr(runner, "collect", spy)
    with logger_context(tmp_path, 0, "meta", {}, echo=False, resume=True):
        runner.train()
    assert calls[:3] == [(t, SMALL["num_initial_steps"], False) for t in range(3)]
    assert runner.agent.sample_z(*runner.agent.prior_z(1)).shape == (1, 3)
    rows = _rows(tmp_path / "run_0" / "progress.csv")
    assert [r["Diagnostics/Iteration"] for r in rows] == ["0", "1", "2"]
    assert int(float(rows[2]["Diagnostics/CumUpdates"])) == 3 * SMALL["num_train_steps_per_itr"]


def test_resume_refuses_another_run_or_a_finished_one(tmp_path):
    _run(tmp_path, 2)
    run_dir = tmp_path / "run_0"
    with pytest.raises(SnapshotError, match="env_kwargs"):  # another seed: other tasks
        make_runner(n_iterations=3, seed=4, resume_from=run_dir).train()
    with pytest.raises(SnapshotError, match="finished"):
        make_runner(n_iterations=2, seed=3, resume_from=run_dir).train()
    with pytest.raises(FileNotFoundError):
        make_runner(n_iterations=3, seed=3, resume_from=tmp_path / "nothing").train()
    with pytest.raises(ArgumentError, match="resume_from"):
        make_runner(resume_from=3)


def test_multi_task_replay_saves_completely_or_not_at_all(tmp_path, monkeypatch):
    runner = make_runner()
    runner.startup()
    for task in range(3):
        runner.collect(task, 10, posterior=False, to_encoder=task != 1)
    replay = runner.replay
    replay.save(tmp_path / "r", info={"itr": 7})
    assert replay.saved_versions(tmp_path / "r") == [tmp_path / "r"]
    assert replay.saved_info(tmp_path / "r") == {"itr": 7}
    other = MultiTaskReplay(3, size=1000, batch_B=1, encoder_size=replay.encoder_size, seed=0)
    assert other.load(tmp_path / "r") == {"itr": 7}
    assert len(other) == len(replay) and other.encoder_len(1) == 0 < other.encoder_len(0)
    a, b = replay.sample_batch([0, 2], 5), other.sample_batch([0, 2], 5)
    assert a.shape == b.shape == (2, 5)
    # A save that fails part-way (the 4th buffer) leaves the previous save complete.
    runner.collect(0, 10, posterior=False, to_encoder=True)
    save, calls = ReplayBuffer.save, []

    def failing(self, path, **kwargs):
        calls.append(path)
        if len(calls) == 4:
            raise OSError("disk full")
        return save(self, path, **kwargs)

    monkeypatch.setattr(ReplayBuffer, "save", failing)
    with pytest.raises(OSError, match="disk full"):
        replay.save(tmp_path / "r", info={"itr": 8})
    monkeypatch.undo()
    assert replay.saved_versions(tmp_path / "r") == [tmp_path / "r"]
    assert replay.saved_info(tmp_path / "r") == {"itr": 7}
    # A corrupt task refuses the load, naming the file, and changes nothing.
    (tmp_path / "r" / "task_2" / "rl" / "replay_state.pt").write_bytes(b"junk")
    fresh = MultiTaskReplay(3, size=1000, batch_B=1, encoder_size=replay.encoder_size, seed=0)
    with pytest.raises(SnapshotError, match="task_2"):
        fresh.load(tmp_path / "r")
    assert len(fresh) == 0
    # Without the marker (written last) a directory is not a save.
    (tmp_path / "r" / "multi_task_replay.pt").unlink()
    assert replay.saved_versions(tmp_path / "r") == []
    with pytest.raises(FileNotFoundError):
        other.load(tmp_path / "r")
    with pytest.raises(SnapshotError, match="tasks"):
        replay.save(tmp_path / "s")
        MultiTaskReplay(2, size=1000, batch_B=1, encoder_size=replay.encoder_size).load(
            tmp_path / "s"
        )


def test_replay_smaller_than_a_trajectory_is_refused_naming_it():
    with pytest.raises(ArgumentError, match="replay_size"):
        make_runner(replay_size=5).train()  # 20-step point-robot trajectories


def test_resume_refuses_other_settings_naming_them(tmp_path):
    _run(tmp_path, 2)
    run_dir = tmp_path / "run_0"
    changes = [
        (
            {
                "agent": PearlAgent(
                    latent_size=3, hidden_sizes=(16,), encoder_hidden_sizes=(16,), use_context=False
                )
            },
            "agent.use_context",
        ),
        (
            {"algo": PEARL(meta_batch=2, batch_size=8, embedding_batch_size=8, reward_scale=5.0)},
            "algo.reward_scale",
        ),
        ({"num_train_steps_per_itr": 4}, "runner.num_train_steps_per_itr"),
    ]
    for kwargs, name in changes:
        with pytest.raises(SnapshotError, match=name):
            make_runner(n_iterations=3, seed=3, resume_from=run_dir, **kwargs).train()
