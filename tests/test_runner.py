"""MinibatchRl / MinibatchRlEval: progress.csv, snapshots, resume, failures."""

from __future__ import annotations

import csv

import pytest
import torch

from tdrl.agents import CategoricalPgAgent
from tdrl.algos import PPO
from tdrl.logging import load_snapshot, logger_context
from tdrl.runners import MinibatchRl, MinibatchRlEval
from tdrl.samplers import SerialSampler
from tdrl.testing import IdentityEnv

BATCH = 16 * 4


def _runner(cls=MinibatchRl, *, n_batches=4, log_every=2, seed=0, eval_envs=0, **kwargs):
    sampler = SerialSampler(
        IdentityEnv,
        batch_T=16,
        batch_B=4,
        eval_n_envs=eval_envs,
        eval_max_trajectories=4 if eval_envs else None,
    )
    algo = PPO(minibatches=2, epochs=2)
    return cls(
        algo,
        CategoricalPgAgent(),
        sampler,
        n_steps=n_batches * BATCH,
        seed=seed,
        log_interval_steps=log_every * BATCH,
        progress_bar=False,
        **kwargs,
    )


def _rows(run_dir):
    with open(run_dir / "progress.csv", newline="") as f:
        return list(csv.DictReader(f))


DIAGNOSTICS = [
    "Diagnostics/Iteration",
    "Diagnostics/CumTime (s)",
    "Diagnostics/CumSteps",
    "Diagnostics/CumCompletedTrajs",
    "Diagnostics/CumUpdates",
    "Diagnostics/StepsPerSecond",
    "Diagnostics/UpdatesPerSecond",
    "Diagnostics/ReplayRatio",
    "Diagnostics/CumReplayRatio",
]


def test_progress_csv_has_rlpyt_columns(tmp_path):
    with logger_context(tmp_path, 0, "t", {"a": 1}, echo=False) as logger:
        _runner().train()
    rows = _rows(logger.run_dir)
    assert len(rows) == 2
    columns = rows[0].keys()
    for col in [*DIAGNOSTICS, "Diagnostics/NewCompletedTrajs", "Diagnostics/StepsInTrajWindow"]:
        assert col in columns, col
    for field in ("Return", "Length", "NonzeroRewards", "DiscountedReturn", "loss", "entropy"):
        for stat in ("Average", "Std", "Median", "Min", "Max"):
            assert f"{field}{stat}" in columns
    assert [int(r["Diagnostics/Iteration"]) for r in rows] == [1, 3]
    assert [int(r["Diagnostics/CumSteps"]) for r in rows] == [2 * BATCH, 4 * BATCH]
    # PPO: 2 epochs x 2 minibatches per iteration -> 4 updates each, replay ratio 2.
    assert [int(r["Diagnostics/CumUpdates"]) for r in rows] == [8, 16]
    assert float(rows[1]["Diagnostics/ReplayRatio"]) == pytest.approx(2.0)
    assert float(rows[1]["ReturnMax"]) <= 10.0
    assert (logger.run_dir / "params.json").exists()
    assert (logger.run_dir / "params.pkl").exists()


def test_eval_runner_logs_eval_episodes(tmp_path):
    with logger_context(tmp_path, 0, "t", echo=False) as logger:
        row = _runner(MinibatchRlEval, eval_envs=2).train()
    rows = _rows(logger.run_dir)
    # Evaluation at iteration 0 before training, then at each log point.
    assert [int(r["Diagnostics/CumSteps"]) for r in rows] == [0, 2 * BATCH, 4 * BATCH]
    for col in ("Diagnostics/CumEvalTime", "Diagnostics/StepsInEval", "Diagnostics/TrajsInEval"):
        assert col in rows[0]
    assert all(int(r["Diagnostics/TrajsInEval"]) == 4 for r in rows)
    assert all(int(float(r["LengthAverage"])) == 10 for r in rows)
    assert row["Diagnostics/TrajsInEval"] == 4


def test_eval_runner_needs_eval_envs():
    with pytest.raises(ValueError, match="eval_n_envs"):
        _runner(MinibatchRlEval).train()


def test_snapshot_and_resume(tmp_path):
    with logger_context(tmp_path, 0, "t", echo=False):
        first = _runner(n_batches=4)
        first.train()
    snap = load_snapshot(tmp_path / "run_0")
    assert snap["itr"] == 3 and snap["cum_steps"] == 4 * BATCH
    for k, v in first.agent.state_dict().items():
        torch.testing.assert_close(snap["agent_state_dict"][k], v)
    assert "optimizer" in snap["algo_state_dict"]

    resumed = _runner(n_batches=6, resume_from=tmp_path / "run_0")
    with logger_context(tmp_path, 0, "t", echo=False, resume=True):
        resumed.startup()
        assert resumed.plan.start_itr == 4 and resumed.stats.cum_steps == 4 * BATCH
        for k, v in first.agent.state_dict().items():
            torch.testing.assert_close(resumed.agent.state_dict()[k], v)
        assert resumed.algo.update_counter == first.algo.update_counter
        resumed.sampler.shutdown()
    resumed = _runner(n_batches=6, resume_from=tmp_path / "run_0")
    with logger_context(tmp_path, 0, "t", echo=False, resume=True):
        resumed.train()
    rows = _rows(tmp_path / "run_0")
    assert [int(r["Diagnostics/Iteration"]) for r in rows] == [1, 3, 5]
    assert [int(r["Diagnostics/CumSteps"]) for r in rows] == [2 * BATCH, 4 * BATCH, 6 * BATCH]
    assert load_snapshot(tmp_path / "run_0")["itr"] == 5


def test_crash_keeps_logs_and_snapshots(tmp_path):
    runner = _runner(n_batches=6)
    original = runner.algo.optimize_agent

    def failing(itr, samples):
        if itr == 3:
            raise ZeroDivisionError("boom")
        return original(itr, samples)

    runner.algo.optimize_agent = failing
    with pytest.raises(ZeroDivisionError), logger_context(tmp_path, 0, "t", echo=False):
        runner.train()
    run_dir = tmp_path / "run_0"
    assert [int(r["Diagnostics/Iteration"]) for r in _rows(run_dir)] == [1]
    assert load_snapshot(run_dir)["itr"] == 1
    assert "run failed" in (run_dir / "debug.log").read_text()
    assert runner.sampler.envs == []  # the sampler was shut down


def test_same_seed_same_run():
    def last(seed):
        row = _runner(seed=seed).train()
        return {k: v for k, v in row.items() if "Time" not in k and "PerSecond" not in k}

    a, b, c = last(3), last(3), last(4)
    assert a == b
    assert a != c


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_steps": 0}, "n_steps"),
        ({"seed": -1}, "seed"),
        ({"log_interval_steps": 0}, "log_interval"),
    ],
)
def test_bad_runner_arguments(kwargs, match):
    base = {"n_steps": 100, "progress_bar": False}
    base.update(kwargs)
    sampler = SerialSampler(IdentityEnv, batch_T=4, batch_B=2)
    with pytest.raises(ValueError, match=match):
        MinibatchRl(PPO(), CategoricalPgAgent(), sampler, **base)
