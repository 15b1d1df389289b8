"""Smoke runs of ``benchmarks/pearl.py`` with tiny settings: both parts print their tables,
the batched and per-task losses agree, and the per-task loop is the batched step's math."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--batch-size", "8", "--embedding-batch-size", "4", "--hidden-size", "16"]
TINY += ["--encoder-hidden-size", "16", "--n-layers", "2"]

pytest.importorskip("mujoco")  # cheetah-vel is a MuJoCo env


def load_benchmark():
    name = "tdrl_benchmark_pearl"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "pearl.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_steps_part_prints_rates_and_matching_losses(capsys):
    pearl = load_benchmark()
    args = ["--part", "steps", "--meta-batches", "2", "3", "--steps-per-task", "30"]
    args += ["--updates", "2", "--repeats", "1", "--warmup", "1", *TINY]
    assert pearl.main(args) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| 2 |", "| 3 |"))]
    assert len(rows) == 2, out
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        batched, per_task, loss_b, loss_p = (float(cells[i]) for i in (2, 3, 5, 6))
        assert batched > 0 and per_task > 0
        assert loss_b == pytest.approx(loss_p, rel=1e-4)
    assert "1 thread(s)" in out and "torch" in out and "agent on cpu" in out


def test_check_catches_a_wrong_per_task_weighting():
    """The check compares real numbers: dropping the KL's weight 1 per task is caught."""
    torch.set_num_threads(1)
    pearl = load_benchmark()
    args = pearl.parse_args([*TINY, "--steps-per-task", "30"])
    replay, env = pearl.random_replay(3, 30, 0)
    algo = pearl.make_agent_and_algo(args, env, 3)
    batch = replay.sample_meta_batch([0, 1, 2], 8, 4)
    check = pearl.check_same_loss(algo, batch)
    assert check["loss_diff"] <= 1e-4 * abs(check["batched_loss"])
    assert check["grad_diff"] <= 1e-4
    # With the same noise (drawn as check_same_loss draws it), averaging whole per-task
    # losses would also average the (summed) KL: not the same loss.
    g = torch.Generator().manual_seed(0)
    latent_eps = torch.randn(3, args.latent_size, generator=g)
    policy_eps = torch.randn(3, 8, algo.agent.action_size, generator=g)
    with pearl.noise_tapes(latent_eps, policy_eps):
        got = pearl.per_task_loss(algo, batch)
    with pearl.noise_tapes(latent_eps, policy_eps):
        wrong = sum(algo.loss(batch[i : i + 1])["loss"] for i in range(3))
    assert float(got.detach()) == pytest.approx(check["per_task_loss"], rel=1e-6)
    assert abs(float(wrong.detach()) / 3 - check["batched_loss"]) > 1e-3
    # One per-task update steps every part and the target, as PEARL.update does.
    before = [p.clone() for p in algo.agent.parameters()]
    pearl.per_task_update(algo, batch)
    after = list(algo.agent.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert algo.update_counter == 1


def test_curve_part_writes_progress_and_prints_the_table(tmp_path, capsys):
    pearl = load_benchmark()
    args = ["--part", "curve", "--n-iterations", "2", "--n-train-tasks", "2"]
    args += ["--n-eval-tasks", "1", "--max-episode-steps", "10", "--num-initial-steps", "10"]
    args += ["--num-tasks-sample", "1", "--num-steps-prior", "10"]
    args += ["--num-extra-rl-steps-posterior", "10", "--num-train-steps-per-itr", "2"]
    args += ["--num-steps-per-eval", "20", "--meta-batch", "2", "--replay-size", "300"]
    args += ["--log-dir", str(tmp_path), "--plot", str(tmp_path / "curve.png"), *TINY]
    assert pearl.main(args) == 0
    out = capsys.readouterr().out
    with open(tmp_path / "run_0" / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(float(r["Diagnostics/Iteration"])) for r in rows] == [0, 1]
    table = [line for line in out.splitlines() if line.startswith(("| 0 |", "| 1 |"))]
    assert len(table) == 2, out
    steps = [int(line.split("|")[2].replace(",", "")) for line in table]
    assert steps == [int(float(r["Diagnostics/CumSteps"])) for r in rows]
    assert "'num_train_steps_per_itr': 2" in out  # the settings are printed
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in out
    else:
        assert (tmp_path / "curve.png").stat().st_size > 0
