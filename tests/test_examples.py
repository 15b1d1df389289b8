"""Every example and the ``tdrl`` command line, smoke-run with a tiny budget."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "tdrl_examples").glob("example_*.py"))


def _run(args, cwd):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_examples_exist():
    assert [p.name for p in EXAMPLES][:2] == ["example_1.py", "example_2.py"]


#: Tiny budgets: Atari steps and conv updates cost ~100x a CartPole step on this CPU.
SMOKE_STEPS = {"example_4": 512, "example_5": 512}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_smoke(path, tmp_path):
    n_steps = SMOKE_STEPS.get(path.stem, 2048)
    args = [str(path), "--n-steps", str(n_steps), "--seed", "1", "--log-dir", str(tmp_path)]
    proc = _run(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "run_0"
    rows = _rows(run_dir / "progress.csv")
    assert rows and "ReturnAverage" in rows[-1]
    assert int(rows[-1]["Diagnostics/CumSteps"]) >= n_steps
    params = json.loads((run_dir / "params.json").read_text())
    assert params["seed"] == 1 and params["n_steps"] == n_steps


def test_example_picks_next_free_run_dir(tmp_path):
    args = [str(EXAMPLES[0]), "--n-steps", "256", "--log-dir", str(tmp_path)]
    for _ in range(2):
        proc = _run(args, tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run_0" / "progress.csv").exists()
    assert (tmp_path / "run_1" / "progress.csv").exists()


def _load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tdrl_examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_example_1_solves_cartpole_within_100k_steps(tmp_path):
    example = _load_example("example_1")
    config = example.Config(log_dir=str(tmp_path))
    assert config.n_steps == 100_000
    example.build_and_train(config, progress_bar=False)
    rows = _rows(tmp_path / "run_0" / "progress.csv")
    within = [r for r in rows if int(r["Diagnostics/CumSteps"]) <= 100_000]
    best = max(float(r["ReturnAverage"]) for r in within)
    assert best >= 475, [r["ReturnAverage"] for r in rows]


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn", "catdqn", "rainbow"])
def test_cli_train(algo, tmp_path):
    proc = _run(
        [
            "-m",
            "tdrl.cli",
            "train",
            "--algo",
            algo,
            "--env",
            "CartPole-v1",
            "--n-steps",
            "2048",
            "--log-dir",
            str(tmp_path),
            "--seed",
            "3",
            "--batch-B",
            "4",
            "--algo-arg",
            "learning_rate=3e-4",
            *(
                ["--algo-arg", "min_steps_learn=512"]
                if algo in ("dqn", "catdqn", "rainbow")
                else []
            ),
            "--no-progress",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "run_0"
    params = json.loads((run_dir / "params.json").read_text())
    assert params["algo"] == algo and params["batch_B"] == 4
    assert params["algo_kwargs"]["learning_rate"] == 3e-4
    assert _rows(run_dir / "progress.csv")
    assert (run_dir / "params.pkl").exists()


def test_cli_resume(tmp_path):
    base = ["-m", "tdrl.cli", "train", "--algo", "ppo", "--env", "CartPole-v1"]
    base += ["--log-dir", str(tmp_path), "--batch-T", "32", "--batch-B", "2", "--no-progress"]
    base += ["--log-interval-steps", "64"]
    assert _run([*base, "--n-steps", "128"], tmp_path).returncode == 0
    proc = _run([*base, "--n-steps", "256"], tmp_path)
    assert proc.returncode == 2 and "resume" in proc.stderr
    proc = _run([*base, "--n-steps", "256", "--resume"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [int(r["Diagnostics/CumSteps"]) for r in _rows(tmp_path / "run_0" / "progress.csv")]
    assert steps == [64, 128, 192, 256]


def test_cli_help_lists_options_with_defaults():
    proc = _run(["-m", "tdrl.cli", "train", "--help"], ROOT)
    assert proc.returncode == 0
    for option in ("--algo", "--env", "--n-steps", "--log-dir", "--seed", "--batch-B"):
        assert option in proc.stdout
    assert "default: 100000" in proc.stdout


def test_cli_bad_input(tmp_path):
    proc = _run(["-m", "tdrl.cli", "train", "--algo", "ppo", "--env", "NoSuchEnv-v0"], tmp_path)
    assert proc.returncode == 2 and "NoSuchEnv-v0" in proc.stderr
    proc = _run(["-m", "tdrl.cli", "train", "--algo", "nope", "--env", "CartPole-v1"], tmp_path)
    assert proc.returncode == 2 and "--algo" in proc.stderr
    proc = _run(
        [
            *("-m", "tdrl.cli", "train", "--algo", "ppo", "--env", "CartPole-v1"),
            *("--algo-arg", "not_an_arg=1", "--log-dir", str(tmp_path)),
        ],
        tmp_path,
    )
    assert proc.returncode != 0 and "not_an_arg" in proc.stderr


def test_cli_train_atari(tmp_path):
    proc = _run(
        [
            *("-m", "tdrl.cli", "train", "--algo", "dqn", "--env", "atari:pong"),
            *("--n-steps", "64", "--batch-T", "2", "--batch-B", "2", "--no-progress"),
            *("--algo-arg", "min_steps_learn=32", "--algo-arg", "replay_size=1024"),
            *("--log-dir", str(tmp_path)),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(tmp_path / "run_0" / "progress.csv")
    assert int(rows[-1]["Diagnostics/CumUpdates"]) > 0


@pytest.mark.slow
def test_example_3_dqn_solves_cartpole_within_50k_steps(tmp_path):
    example = _load_example("example_3")
    config = example.Config(log_dir=str(tmp_path))
    assert config.n_steps == 50_000
    example.build_and_train(config, progress_bar=False)
    rows = _rows(tmp_path / "run_0" / "progress.csv")
    # 50k steps rounded up to whole batches of 256 (196 batches = 50,176 steps).
    budget = -(-50_000 // (config.batch_T * config.batch_B)) * config.batch_T * config.batch_B
    best = max(float(r["ReturnAverage"]) for r in rows if int(r["Diagnostics/CumSteps"]) <= budget)
    assert best >= 475, [r["ReturnAverage"] for r in rows]


@pytest.mark.slow
def test_example_5_sac_halfcheetah_reaches_3000_within_100k_steps(tmp_path):
    """About 25 minutes on 2 cores (one update per step); the curve is in
    docs/benchmarks.md."""
    example = _load_example("example_5")
    config = example.Config(n_steps=100_000, log_dir=str(tmp_path)).scaled_to_budget()
    assert (config.env_id, config.algo, config.min_steps_learn) == ("HalfCheetah-v5", "sac", 10_000)
    example.build_and_train(config, progress_bar=False)
    rows = _rows(tmp_path / "run_0" / "progress.csv")
    assert int(rows[-1]["Diagnostics/CumSteps"]) == 100_000
    best = max(float(r["ReturnAverage"]) for r in rows)
    assert best >= 3000, [r["ReturnAverage"] for r in rows]


@pytest.mark.parametrize("algo", ["sac", "td3", "ddpg", "sac_v"])
def test_cli_train_qpg(algo, tmp_path):
    proc = _run(
        [
            *("-m", "tdrl.cli", "train", "--algo", algo, "--env", "Pendulum-v1"),
            *("--n-steps", "600", "--no-progress", "--log-dir", str(tmp_path)),
            *("--algo-arg", "min_steps_learn=200", "--algo-arg", "replay_ratio=16"),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(tmp_path / "run_0" / "progress.csv")
    assert int(rows[-1]["Diagnostics/CumUpdates"]) > 0
    assert ("alphaAverage" in rows[-1]) == (algo == "sac")
    proc = _run(
        [
            *("-m", "tdrl.cli", "train", "--algo", algo, "--env", "CartPole-v1"),
            *("--log-dir", str(tmp_path / "x")),
        ],
        tmp_path,
    )
    assert proc.returncode != 0 and "Box" in proc.stderr
