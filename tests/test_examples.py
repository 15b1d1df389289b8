"""Every example and the ``tdrl`` command line, smoke-run with a tiny budget."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import runpy
import subprocess
import sys
import traceback
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(
    (ROOT / "tdrl_examples").glob("example_*.py"), key=lambda p: int(p.stem.split("_")[1])
)


def _subprocess(args, cwd):
    """``python ARGS`` in a child process (for what only a real process shows)."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def _run(args, cwd):
    """``python ARGS`` (``-m tdrl.cli ...`` or an example script) run in this process.

    What a child process would give (exit status, stdout, stderr), without its ~2 s of
    interpreter and torch start-up per call: the default suite runs dozens of these. The
    thread count and ``sys.argv`` are restored afterwards; ``tests/test_processes.py`` and
    ``test_cli_errors_have_no_traceback`` run the real command as a child.
    """
    from tdrl.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, threads, code = sys.argv, torch.get_num_threads(), 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if list(args[:2]) == ["-m", "tdrl.cli"]:
                    code = main([str(a) for a in args[2:]])
                else:
                    sys.argv = [str(a) for a in args]
                    runpy.run_path(str(args[0]), run_name="__main__")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = argv
        torch.set_num_threads(threads)
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_examples_exist():
    assert [p.name for p in EXAMPLES][:2] == ["example_1.py", "example_2.py"]


#: Tiny budgets: Atari steps and conv updates cost ~100x a CartPole step on this CPU.
SMOKE_STEPS = {"example_4": 512, "example_5": 512, "example_10": 512, "example_11": 512}


#: Smoke-run elsewhere, more thoroughly: example 9 (the launcher) in tests/test_launch.py.
SMOKED_ELSEWHERE = ("example_9",)


@pytest.mark.parametrize(
    "path", [p for p in EXAMPLES if p.stem not in SMOKED_ELSEWHERE], ids=lambda p: p.stem
)
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


#: Examples whose ``Config`` carries ``device`` as a free string passed to the runner.
DEVICE_EXAMPLES = [p.stem for p in EXAMPLES if p.stem != "example_8"]


@pytest.mark.parametrize("name", DEVICE_EXAMPLES)
def test_example_passes_its_device_to_the_runner(name, tmp_path):
    """Every example that trains a network has ``--device`` (default cpu) and hands it to
    its runner, which checks it before anything is built or written."""
    example = _load_example(name)
    config_cls = example.RunConfig if name == "example_9" else example.Config
    assert config_cls().device == "cpu"
    config = config_cls(device="gpu", log_dir=str(tmp_path / "logs"))
    with pytest.raises(ValueError, match=r"^device must be a device string torch accepts"):
        example.build_and_train(config, progress_bar=False)
    assert not (tmp_path / "logs").exists()


def test_example_8_device_flag_means_one_gpu_per_rank(tmp_path):
    example = _load_example("example_8")
    assert example.Config().device == "cpu"
    with pytest.raises(SystemExit):
        example.parse_config(example.Config, ["--device", "gpu"])
    config = example.Config(device="cuda", world_size=1, log_dir=str(tmp_path / "logs"))
    if not torch.cuda.is_available():  # --device cuda reaches SyncRl as cuda=True
        with pytest.raises(ValueError, match="cuda=True but torch sees no CUDA device"):
            example.build_and_train(config, progress_bar=False)
        assert not (tmp_path / "logs").exists()


@pytest.mark.slow  # a learning check (about 20 s); every example's smoke run stays in make test
@pytest.mark.timeout(600)
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
            *("--preset", "none"),  # the CLI's construction; tests/test_presets.py has presets
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


def test_cli_says_when_no_episode_finished(tmp_path, capsys):
    from tdrl.cli import main

    argv = ["train", "--algo", "ppo", "--env", "MountainCarContinuous-v0", "--n-steps", "256"]
    assert main([*argv, "--log-dir", str(tmp_path), "--no-progress", "--preset", "none"]) == 0
    assert "done in" in (out := capsys.readouterr().out)
    assert "no episode finished (ReturnAverage nan) after" in out, out


def test_cli_resume(tmp_path):
    base = ["-m", "tdrl.cli", "train", "--algo", "ppo", "--env", "CartPole-v1"]
    base += ["--log-dir", str(tmp_path), "--batch-T", "32", "--batch-B", "2", "--no-progress"]
    base += ["--log-interval-steps", "64", "--preset", "none"]
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


#: ``tdrl train`` options refused by the parser, and what the message says.
CLI_PARSER_REFUSES = [
    (["--batch-B", "0"], "argument --batch-B: must be a positive int, got 0"),
    (["--batch-T", "0"], "argument --batch-T: must be a positive int, got 0"),
    (["--batch-T", "-1"], "argument --batch-T: must be a positive int, got -1"),
    (["--batch-B", "2.5"], "argument --batch-B: must be a positive int, got 2.5"),
    (["--n-steps", "nan"], "argument --n-steps: must be a positive int, got nan"),
    (["--n-steps", "inf"], "argument --n-steps: must be a positive int, got inf"),
    (["--n-steps", "lots"], "argument --n-steps: must be an int, got 'lots'"),
    (["--seed", "-1"], "argument --seed: must be a non-negative int, got -1"),
    (["--run-ID", "-1"], "argument --run-ID: must be a non-negative int, got -1"),
    (["--log-interval-steps", "0"], "argument --log-interval-steps: must be a positive int"),
    (["--eval-n-envs", "-1"], "argument --eval-n-envs: must be a non-negative int, got -1"),
    (["--eval-max-steps", "0"], "argument --eval-max-steps: must be a positive int, got 0"),
    (["--torch-threads", "0"], "argument --torch-threads: must be a positive int, got 0"),
    (["--algo-arg", "=3"], "argument --algo-arg: expected NAME=VALUE"),
    (["--algo-arg", "learning rate=3"], "argument --algo-arg: expected NAME=VALUE"),
]


@pytest.mark.parametrize(("extra", "message"), CLI_PARSER_REFUSES, ids=lambda x: str(x))
def test_cli_parser_refuses_bad_numbers_naming_the_option(extra, message, capsys, tmp_path):
    from tdrl.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "--algo", "ppo", "--env", "CartPole-v1", "--log-dir", str(tmp_path), *extra])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"tdrl train: error: {message}" in err, err
    assert not list(tmp_path.iterdir())  # refused before anything was written


#: ``tdrl train`` inputs refused at start-up, before training, and what the message says.
CLI_START_REFUSES = [
    ("ppo", ["--algo-arg", "learning_rate=nan"], "learning_rate must be a finite number"),
    ("ppo", ["--algo-arg", "discount=inf"], "discount must be a finite number in [0.0, 1.0]"),
    ("ppo", ["--algo-arg", "epochs=1.5"], "epochs must be a positive int, got 1.5"),
    ("ppo", ["--algo-arg", "minibatches=True"], "minibatches must be a positive int, got True"),
    ("ppo", ["--algo-arg", "gae_lambda='high'"], "gae_lambda must be a finite number"),
    ("ppo", ["--algo-arg", "optim_cls=torch.optim.SGD"], "optim_cls must be callable"),
    (
        "ppo",
        ["--algo-arg", "lr=1e-3"],
        "--algo-arg lr is not an argument of --algo ppo (PPO); it takes: discount, learning_rate,",
    ),
    (
        "rainbow",
        ["--algo-arg", "n_atoms=21"],
        "--algo-arg n_atoms is not an argument of --algo rainbow (CategoricalDQN)",
    ),
    (
        "ppo",
        ["--algo-arg", "discount=0.9", "--algo-arg", "discount=0.8"],
        "--algo-arg discount is given twice",
    ),
    ("dqn", ["--algo-arg", "min_steps_learn=1.5"], "min_steps_learn must be a non-negative int"),
    ("dqn", ["--algo-arg", "replay_size=-1"], "replay_size must be a positive int, got -1"),
    (
        "sac",
        ["--env", "Pendulum-v1", "--algo-arg", "target_update_tau=nan"],
        "target_update_tau must be a finite number",
    ),
    ("sac", [], "--algo sac needs a Box action space, but --env CartPole-v1 has Discrete(2)"),
    ("ppo", ["--env", "NoSuchEnv-v0"], "unknown environment id 'NoSuchEnv-v0'"),
    ("ppo", ["--device", "gpu"], "--device must be a device string torch accepts"),
    ("dqn", ["--device", "mps:0:1"], "--device must be a device string torch accepts"),
    ("sac", ["--env", "Pendulum-v1", "--device", "meta"], "--device must be cpu, cuda or cuda:N"),
]


@pytest.mark.parametrize(("algo", "extra", "message"), CLI_START_REFUSES, ids=lambda x: str(x))
def test_cli_refuses_bad_hyperparameters_in_one_line(algo, extra, message, capsys, tmp_path):
    from tdrl.cli import main

    argv = ["train", "--algo", algo, "--env", "CartPole-v1", "--log-dir", str(tmp_path), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tdrl train: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not list(tmp_path.iterdir())  # refused before the run directory was made


def test_cli_takes_whole_floats_for_counts(tmp_path):
    """rlpyt configs write counts as 1e6; they are ints once checked."""
    from tdrl.cli import _algo_kwargs, _make_algo_agent, build_parser

    counts = ["--n-steps", "1e5", "--batch-T", "4.0"]
    counts += ["--algo-arg", "min_steps_learn=1e3", "--algo-arg", "replay_size=1e6"]
    args = build_parser().parse_args(["train", "--algo", "dqn", "--env", "CartPole-v1", *counts])
    assert (args.n_steps, args.batch_T) == (100_000, 4)
    assert type(args.n_steps) is int and type(args.batch_T) is int
    algo, _ = _make_algo_agent("dqn", _algo_kwargs("dqn", args.algo_arg), "CartPole-v1")
    assert (algo.replay.min_steps_learn, algo.replay.replay_size) == (1000, 1_000_000)
    assert type(algo.replay.replay_size) is int


def test_cli_errors_have_no_traceback(tmp_path):
    """End to end: a bad value and a start-up failure (no snapshot) are one line, exit 2."""
    base = ["-m", "tdrl.cli", "train", "--algo", "ppo", "--env", "CartPole-v1", "--no-progress"]
    proc = _subprocess(
        [*base, "--log-dir", str(tmp_path), "--algo-arg", "learning_rate=nan"], tmp_path
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines() == [
        "tdrl train: error: learning_rate must be a finite number in [0.0, 10.0], got nan"
    ]
    proc = _subprocess([*base, "--log-dir", str(tmp_path / "empty"), "--resume"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("tdrl train: error: ") and proc.stderr.count("\n") == 1
    proc = _subprocess(
        [*base, "--log-dir", str(tmp_path), "--batch-B", "0", "--traceback"], tmp_path
    )
    assert proc.returncode == 2  # argparse refuses it before --traceback matters


def test_cli_train_atari(tmp_path):
    proc = _run(
        [
            *("-m", "tdrl.cli", "train", "--algo", "dqn", "--env", "atari:pong"),
            *("--n-steps", "64", "--batch-T", "2", "--batch-B", "2", "--no-progress"),
            *("--algo-arg", "min_steps_learn=32", "--algo-arg", "replay_size=1024"),
            *("--log-dir", str(tmp_path), "--eval-n-envs", "0"),
            *("--sampler-arg", "max_decorrelation_steps=0"),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(tmp_path / "run_0" / "progress.csv")
    assert int(rows[-1]["Diagnostics/CumUpdates"]) > 0
    params = json.loads((tmp_path / "run_0" / "params.json").read_text())
    assert params["preset"]["name"] == "dqn-atari"  # rlpyt's config, for every game
    assert params["algo_kwargs"]["target_update_interval"] == 312
    assert params["eval_max_steps"] == 125_000  # the preset's (no evaluation asked here)


@pytest.mark.slow
@pytest.mark.timeout(900)  # 41 s measured under load
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
@pytest.mark.timeout(7200)  # 2,434 s measured on a busy 2-core machine
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
            *("--preset", "none"),  # the CLI's construction, not the tuned preset
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


def test_cli_says_when_a_run_makes_no_update(tmp_path, capsys):
    from tdrl.cli import main

    argv = ["train", "--algo", "dqn", "--env", "CartPole-v1", "--log-dir", str(tmp_path)]
    assert main([*argv, "--n-steps", "64", "--no-progress", "--preset", "none"]) == 0
    out = capsys.readouterr().out
    assert "tdrl train: note: --algo dqn makes no update in --n-steps 64" in out
    assert "min_steps_learn=50000" in out
