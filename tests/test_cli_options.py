"""``tdrl train``'s sampler, runner and model options: each reaches what it names, and each
bad value is refused in one line before anything runs."""

from __future__ import annotations

import csv
import json

import pytest

from tdrl.cli import main
from tdrl.logging import load_snapshot

BASE = ["train", "--env", "CartPole-v1", "--n-steps", "512", "--batch-T", "32"]
BASE += ["--batch-B", "4", "--no-progress", "--preset", "none"]


def _train(tmp_path, capsys, *extra, algo="ppo"):
    code = main([*BASE, "--algo", algo, "--log-dir", str(tmp_path), *map(str, extra)])
    err = capsys.readouterr().err
    assert code == 0, err
    run = tmp_path / "run_0"
    with open(run / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return json.loads((run / "params.json").read_text()), rows, run


def test_model_arg_sets_the_agents_model_kwargs(tmp_path, capsys):
    params, rows, run = _train(tmp_path, capsys, "--model-arg", "hidden_sizes=(16,)")
    assert params["agent_kwargs"]["model_kwargs"] == {"hidden_sizes": [16]}
    shapes = [tuple(v.shape) for v in load_snapshot(run)["agent_state_dict"].values()]
    assert (16, 4) in shapes and (64, 4) not in shapes  # the default is (64, 64)
    assert rows


def test_parallel_sampler_and_async_runner_from_the_command_line(tmp_path, capsys):
    params, rows, _ = _train(
        tmp_path,
        capsys,
        *("--sampler", "gpu", "--n-workers", "2", "--sampler-arg", "max_decorrelation_steps=0"),
        *("--runner", "async", "--algo-arg", "min_steps_learn=128"),
        algo="dqn",
    )
    assert (params["sampler"], params["runner"]) == ("gpu", "async")
    assert params["sampler_kwargs"] == {"n_workers": 2, "max_decorrelation_steps": 0}
    assert int(rows[-1]["Diagnostics/CumSteps"]) >= 512
    assert float(rows[-1]["Diagnostics/CumUpdates"]) > 0


def test_sync_runner_from_the_command_line(tmp_path, capsys):
    params, rows, _ = _train(tmp_path, capsys, "--runner", "sync", "--runner-arg", "world_size=2")
    assert params["runner"] == "sync" and params["runner_kwargs"] == {"world_size": 2}
    assert rows and int(rows[-1]["Diagnostics/CumSteps"]) >= 512


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--n-workers", "2"], "--n-workers needs a parallel --sampler"),
        (["--sampler-arg", "batch_T=3"], "--sampler-arg batch_T: set it with --batch-T"),
        (["--sampler-arg", "env_kwargs={}"], "--sampler-arg env_kwargs: set it with --env"),
        (["--sampler-arg", "bogus=1"], "--sampler-arg bogus is not an argument of SerialSampler"),
        (["--sampler", "cpu", "--sampler-arg", "bogus=1"], "not an argument of CpuSampler"),
        (["--runner", "sync"], "--runner sync needs --runner-arg world_size=N"),
        (["--runner", "async"], "--runner async needs a replay algorithm"),
        (["--runner-arg", "cuda=True"], "--runner-arg cuda: set it with --device"),
        (["--model-arg", "bogus=1"], "bogus"),
    ],
)
def test_bad_sampler_runner_and_model_options_are_one_line(
    tmp_path, capsys, monkeypatch, extra, message
):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    code = main([*BASE, "--algo", "ppo", "--log-dir", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run_0" / "progress.csv").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sampler", "threads"], "argument --sampler: invalid choice"),
        (["--runner", "ray"], "argument --runner: invalid choice"),
        (["--n-workers", "0"], "argument --n-workers: must be a positive int"),
        (["--model-arg", "=1"], "argument --model-arg: expected NAME=VALUE"),
        (["--sampler-arg", "x"], "argument --sampler-arg: expected NAME=VALUE"),
    ],
)
def test_the_parser_refuses_bad_option_values(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as e:
        main([*BASE, "--algo", "ppo", "--log-dir", str(tmp_path), *extra])
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra", [["--sampler", "cpu"], ["--runner", "async"], ["--model-arg", "x=1"]]
)
def test_pearl_refuses_the_sampler_options(tmp_path, capsys, extra):
    argv = ["train", "--algo", "pearl", "--env", "point-robot", "--log-dir", str(tmp_path)]
    assert main([*argv, *extra]) == 2
    assert "does not apply to --algo pearl" in capsys.readouterr().err
