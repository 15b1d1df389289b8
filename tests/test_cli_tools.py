"""``tdrl plot`` and ``tdrl eval``: curves against numpy, images and videos that decode and
show what they should, and one-line errors for every bad option."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tdrl.cli import main
from tdrl.logging.curves import find_runs, learning_curves, read_progress

matplotlib = pytest.importorskip("matplotlib")


def _write_run(run_dir: Path, steps, returns, *, variant=None, extra=None, rlpyt=False):
    run_dir.mkdir(parents=True)
    x_key = "CumSteps" if rlpyt else "Diagnostics/CumSteps"
    cols = {x_key: steps, "ReturnAverage": returns, **(extra or {})}
    with open(run_dir / "progress.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for row in zip(*cols.values(), strict=True):
            w.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in row])
    (run_dir / "params.json").write_text(json.dumps({"seed": 0, "algo_kwargs": {"lr": 1}}))
    if variant is not None:
        (run_dir / "variant.json").write_text(json.dumps(variant))


def _cli(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------------- plot
@pytest.fixture
def experiment(tmp_path):
    """Two groups (``a``, ``b``) of two seeds each, logged at the same steps."""
    steps = [100, 200, 300, 400]
    _write_run(tmp_path / "a" / "run_0", steps, [1.0, 2.0, 3.0, 4.0], variant={"lr": 0.1})
    _write_run(tmp_path / "a" / "run_1", steps, [3.0, 4.0, 5.0, 8.0], variant={"lr": 0.1})
    _write_run(tmp_path / "b" / "run_0", steps, [0.0, 0.0, 1.0, 1.0], variant={"lr": 0.2})
    _write_run(tmp_path / "b" / "run_1", steps, [2.0, 2.0, 1.0, 3.0], variant={"lr": 0.2})
    return tmp_path


def test_curves_are_mean_and_std_over_the_runs_of_each_directory(experiment):
    curves = learning_curves(find_runs([experiment]), ["ReturnAverage"])
    by_label = {Path(c.label).name: c for c in curves}
    assert set(by_label) == {"a", "b"}
    a = by_label["a"]
    np.testing.assert_array_equal(a.x, [100, 200, 300, 400])
    np.testing.assert_allclose(a.mean, [2.0, 3.0, 4.0, 6.0])
    np.testing.assert_allclose(a.std, np.std([[1, 2, 3, 4], [3, 4, 5, 8]], axis=0))
    assert a.n_runs == 2


def test_group_by_reads_variant_then_params_and_dotted_keys(experiment):
    runs = find_runs([experiment])
    labels = [c.label for c in learning_curves(runs, ["ReturnAverage"], group_by=["lr"])]
    assert labels == ["lr=0.1", "lr=0.2"]
    (curve,) = learning_curves(runs, ["ReturnAverage"], group_by=["algo_kwargs.lr"])
    assert curve.label == "algo_kwargs.lr=1" and curve.n_runs == 4


def test_smoothing_is_a_trailing_mean_and_keeps_one_point_per_row(experiment):
    curves = learning_curves(find_runs([experiment / "a" / "run_1"]), ["ReturnAverage"], smooth=2)
    np.testing.assert_allclose(curves[0].mean, [3.0, 3.5, 4.5, 6.5])
    assert len(curves[0].x) == 4


def test_runs_logged_at_other_steps_are_interpolated_on_the_common_range(tmp_path):
    _write_run(tmp_path / "g" / "run_0", [0, 100, 200, 300], [0.0, 1.0, 2.0, 3.0])
    _write_run(tmp_path / "g" / "run_1", [0, 150, 250], [0.0, 3.0, 5.0])
    (c,) = learning_curves(find_runs([tmp_path]), ["ReturnAverage"])
    np.testing.assert_array_equal(c.x, [0, 100, 200])
    np.testing.assert_allclose(c.mean, [0.0, (1.0 + 2.0) / 2, (2.0 + 4.0) / 2])


def test_missing_values_are_left_out_and_rlpyt_columns_are_read(tmp_path):
    nan = float("nan")
    _write_run(tmp_path / "r" / "run_0", [10, 20, 30], [nan, 5.0, 6.0], rlpyt=True)
    (c,) = learning_curves(find_runs([tmp_path]), ["ReturnAverage"])
    np.testing.assert_array_equal(c.x, [20, 30])
    assert read_progress(tmp_path / "r" / "run_0" / "progress.csv")["CumSteps"].tolist() == [
        10,
        20,
        30,
    ]


def test_tdrl_plot_writes_a_png_with_one_point_per_log_row(experiment, tmp_path, capsys):
    out = tmp_path / "curves.png"
    code, stdout, _ = _cli(
        [
            "plot",
            experiment / "a",
            experiment / "b",
            "-o",
            out,
            *("--y", "ReturnAverage", "--title", "t"),
        ],
        capsys,
    )
    assert code == 0
    image = matplotlib.image.imread(out)
    assert image.shape[:2] == (400, 600)  # 6 x 4 inches at 100 dpi, one panel
    assert "a: ReturnAverage 6.00 ± 2.00 at steps 400 (2 runs, 4 points)" in stdout
    fig = learning_curves(find_runs([experiment]), ["ReturnAverage"])
    assert all(len(c.x) == 4 for c in fig)  # log rows per run


def test_plot_draws_each_curve_with_its_band(experiment, tmp_path):
    from tdrl.logging.curves import plot_curves

    curves = learning_curves(find_runs([experiment]), ["ReturnAverage"])
    fig = plot_curves(curves, tmp_path / "c.svg")
    (ax,) = fig.axes
    assert [len(line.get_xdata()) for line in ax.get_lines()] == [4, 4]
    assert len(ax.collections) == 2  # the ± std bands
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--y", "NoSuchColumn"], "logs 'NoSuchColumn'"),
        (["--group-by", "nope"], "group_by 'nope': no run has this setting"),
        (["--smooth", "0"], "argument --smooth: must be a positive int"),
        (["--x", "epochs"], "argument --x: invalid choice"),
        (["-o", "/no/such/dir/c.png"], "No such file or directory"),
        (["-o", "{tmp}/c.nosuchformat"], "-o {tmp}/c.nosuchformat"),
    ],
)
def test_plot_bad_options_are_one_line(experiment, tmp_path, capsys, extra, message):
    argv = ["plot", experiment, "-o", tmp_path / "c.png", *extra]
    argv = [str(a).replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:  # the parser's refusals: usage line + the error line
        code = e.code
    err = capsys.readouterr().err
    message = message.replace("{tmp}", str(tmp_path))
    assert code == 2 and message in err, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].count(message) == 1


def test_plot_paths_without_runs_are_named(tmp_path, capsys):
    code, _, err = _cli(["plot", tmp_path / "missing", "-o", tmp_path / "c.png"], capsys)
    assert code == 2 and "missing: no such file or directory" in err
    (tmp_path / "empty").mkdir()
    code, _, err = _cli(["plot", tmp_path / "empty", "-o", tmp_path / "c.png"], capsys)
    assert code == 2 and "no progress.csv in it or under it" in err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "progress.csv").write_text("")
    code, _, err = _cli(["plot", tmp_path / "bad", "-o", tmp_path / "c.png"], capsys)
    assert code == 2 and "has no header row" in err
    (tmp_path / "bad" / "progress.csv").write_bytes(b"\x00\x01\xff")
    code, _, err = _cli(["plot", tmp_path / "bad", "-o", tmp_path / "c.png"], capsys)
    assert code == 2 and "progress.csv is not a CSV table" in err and err.count("\n") == 1


def test_plot_without_matplotlib_says_how_to_install_it(experiment, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = _cli(["plot", experiment, "-o", tmp_path / "c.png"], capsys)
    assert code == 2 and 'pip install "tdrl[plot]"' in err


# ----------------------------------------------------------------------------------- eval
def _train(tmp_path, capsys, *extra, algo="ppo", env="CartPole-v1", steps=1024):
    code, _, err = _cli(
        [
            *("train", "--algo", algo, "--env", env, "--n-steps", steps, "--seed", 0),
            *("--log-dir", tmp_path / "exp", "--no-progress", "--preset", "none"),
            *("--batch-T", 32, "--batch-B", 2, "--log-interval-steps", 512, *extra),
        ],
        capsys,
    )
    assert code == 0, err
    return tmp_path / "exp" / "run_0"


@pytest.fixture
def ppo_run(tmp_path, capsys):
    return _train(tmp_path, capsys)


def test_train_writes_variant_json_without_per_run_settings(ppo_run):
    variant = json.loads((ppo_run / "variant.json").read_text())
    assert variant["exp_name"] == "ppo_CartPole-v1" and variant["algo"] == "ppo"
    assert "seed" not in variant and "run_ID" not in variant and "log_dir" not in variant


def test_eval_prints_return_statistics_of_the_episodes(ppo_run, capsys):
    code, out, err = _cli(["eval", ppo_run, "--episodes", 4, "--n-envs", 2], capsys)
    assert code == 0, err
    assert "tdrl eval: 4 episodes of CartPole-v1: ReturnAverage" in out


def test_eval_loads_the_trained_weights(ppo_run):
    """The agent that acts is the snapshot's: its greedy returns equal a hand-made loop."""
    import argparse

    from tdrl.cli_tools import evaluate_run
    from tdrl.logging import load_snapshot

    args = argparse.Namespace(
        run_dir=str(ppo_run), episodes=1, n_envs=1, max_steps=10_000, seed=7, snapshot=None,
        deterministic=True, video=None, video_episodes=1, fps=None, device="cpu",
        torch_threads=1,
    )  # fmt: skip
    result = evaluate_run(args)
    snap = load_snapshot(ppo_run)
    weights = {k: v for k, v in snap["agent_state_dict"].items() if k.endswith("weight")}
    assert weights and all(torch.isfinite(w).all() for w in weights.values())
    import gymnasium as gym

    from tdrl.cli_build import _make_algo_agent
    from tdrl.samplers import SerialSampler

    _, agent = _make_algo_agent("ppo", {}, "CartPole-v1")
    SerialSampler(gym.make, {"id": "CartPole-v1"}, batch_T=1, batch_B=1).initialize(agent)
    agent.load_state_dict(snap["agent_state_dict"])
    agent.eval_deterministic = True
    agent.eval_mode(0)
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=7 + 10_000)  # eval env 0's seed
    prev_a, prev_r, total, done = torch.zeros(1, dtype=torch.long), torch.zeros(1), 0.0, False
    while not done:
        with torch.no_grad():
            a, _ = agent.step(torch.as_tensor(obs)[None], prev_a, prev_r)
        obs, r, term, trunc, _ = env.step(int(a[0]))
        total, done = total + r, term or trunc
        prev_a, prev_r = a, torch.tensor([r], dtype=torch.float32)
    assert result["ReturnAverage"] == total


def test_eval_deterministic_switches_sampling_agents_to_greedy():
    from tdrl.agents import CategoricalPgAgent, DqnAgent
    from tdrl.cli_tools import make_deterministic

    pg, dqn = CategoricalPgAgent(), DqnAgent()
    make_deterministic(pg)
    make_deterministic(dqn)
    assert pg.eval_deterministic is True and dqn.exploration.eps_eval == 0.0


def test_eval_of_recurrent_and_dqn_runs(tmp_path, capsys):
    rec = _train(
        tmp_path / "rec",
        capsys,
        "--recurrent",
        "--algo-arg",
        "minibatches=1",
        env="CartPoleNoVel-v1",
    )
    code, out, err = _cli(["eval", rec, "--episodes", 2, "--deterministic"], capsys)
    assert code == 0 and "2 episodes of CartPoleNoVel-v1" in out, err
    dqn = _train(tmp_path / "dqn", capsys, "--algo-arg", "min_steps_learn=256", algo="dqn")
    code, out, err = _cli(["eval", dqn, "--episodes", 2], capsys)
    assert code == 0 and "2 episodes of CartPole-v1" in out, err


def test_eval_video_holds_the_recorded_episodes_frames(ppo_run, tmp_path, capsys):
    av = pytest.importorskip("av")
    pytest.importorskip("pygame")
    video = tmp_path / "cartpole.mp4"
    code, out, err = _cli(
        [
            "eval",
            ppo_run,
            "--episodes",
            3,
            "--video",
            video,
            "--video-episodes",
            2,
            "--seed",
            1,
            "--deterministic",
        ],
        capsys,
    )
    assert code == 0, err
    frames_written = int(out.split("(")[1].split(" frames")[0])
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == frames_written
    assert frames[0].shape == (400, 600, 3)  # CartPole's screen
    assert frames[0].std() > 0  # a picture, not a blank frame
    # Two episodes of eval env 0: a frame after each reset and each step.
    lengths = _episode_lengths(ppo_run, seed=1, episodes=2)
    assert len(frames) == sum(n + 1 for n in lengths)


def _episode_lengths(run_dir, *, seed, episodes):
    import argparse

    from tdrl.cli_tools import evaluate_run

    lengths = []
    for k in range(1, episodes + 1):  # the first k episodes, without video
        args = argparse.Namespace(
            run_dir=str(run_dir), episodes=k, n_envs=1, max_steps=10_000, seed=seed,
            snapshot=None, deterministic=True, video=None, video_episodes=1, fps=None,
            device="cpu", torch_threads=1,
        )  # fmt: skip
        result = evaluate_run(args)
        lengths.append(round(result["LengthAverage"] * k) - sum(lengths))
    return lengths


def test_write_video_pads_odd_sizes_and_writes_gifs(tmp_path):
    av = pytest.importorskip("av")
    from tdrl.cli_tools import write_video

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (21, 15, 3), dtype=np.uint8) for _ in range(5)]
    for name in ("odd.mp4", "odd.gif"):
        write_video(tmp_path / name, frames, fps=10)
        with av.open(str(tmp_path / name)) as c:
            decoded = list(c.decode(c.streams.video[0]))
        assert len(decoded) == 5 and (decoded[0].height, decoded[0].width) == (22, 16)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "x.mp4", [], fps=10)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        write_video(tmp_path / "x.mp4", [np.zeros((4, 4), np.uint8)], fps=10)


def test_atari_env_renders_the_colour_screen():
    pytest.importorskip("ale_py")
    from tdrl.envs.atari import AtariEnv

    env = AtariEnv("pong", render_mode="rgb_array", seed=0)
    env.reset()
    frame = env.render()
    assert frame.shape == (210, 160, 3) and frame.dtype == np.uint8
    assert AtariEnv("pong", seed=0).render() is None
    with pytest.raises(ValueError, match="render_mode"):
        AtariEnv("pong", render_mode="human")


def test_eval_bad_inputs_are_one_line(ppo_run, tmp_path, capsys):
    cases = [
        ([tmp_path / "nope"], "no such directory"),
        ([tmp_path], "has no params.json"),
        (
            [ppo_run, "--episodes", 2, "--video-episodes", 5, "--video", tmp_path / "v.mp4"],
            "--video-episodes 5",
        ),
        ([ppo_run, "--video", tmp_path / "v.txt"], "expected a .mp4"),
        ([ppo_run, "--video", tmp_path / "no" / "v.mp4"], "does not exist"),
        ([ppo_run, "--device", "tpu"], "--device"),
        ([ppo_run, "--snapshot", tmp_path / "none.pkl"], "No snapshot"),
        ([ppo_run, "--max-steps", 3], "no episode ended within --max-steps 3"),
    ]
    for extra, message in cases:
        code, _, err = _cli(["eval", *extra], capsys)
        assert code == 2 and err.count("\n") == 1 and message in err, (extra, err)
    for bad in (["--episodes", "0"], ["--n-envs", "-1"], ["--fps", "0"]):
        with pytest.raises(SystemExit):
            main(["eval", str(ppo_run), *bad])
        assert "must be a positive int" in capsys.readouterr().err


def test_eval_refuses_runs_it_cannot_rebuild_and_corrupt_snapshots(ppo_run, tmp_path, capsys):
    other = tmp_path / "example_run"
    other.mkdir()
    (other / "params.json").write_text(json.dumps({"env_id": "CartPole-v1"}))
    code, _, err = _cli(["eval", other], capsys)
    assert code == 2 and "tdrl eval reads runs made by `tdrl train`" in err
    for bad in ({"algo": "foo", "env": "CartPole-v1"}, {"algo": "ppo", "env": 5}):
        (other / "params.json").write_text(json.dumps(bad))
        code, _, err = _cli(["eval", other], capsys)
        assert code == 2 and "algo must be one of" in err, err
    (other / "params.json").write_text(json.dumps({"algo": "ppo", "env": "CartPole-v1",
                                                    "algo_kwargs": [1]}))  # fmt: skip
    code, _, err = _cli(["eval", other], capsys)
    assert code == 2 and "algo_kwargs must be a mapping" in err, err
    pearl = tmp_path / "pearl_run"
    pearl.mkdir()
    (pearl / "params.json").write_text(json.dumps({"algo": "pearl", "env": "point-robot"}))
    code, _, err = _cli(["eval", pearl], capsys)
    assert code == 2 and err.count("\n") == 1 and "snapshot" in err, err  # PEARL: none here
    (ppo_run / "params.pkl").write_bytes(b"not a snapshot")
    code, _, err = _cli(["eval", ppo_run], capsys)
    assert code == 2 and err.count("\n") == 1 and "params.pkl" in err, err


def test_launched_runs_copy_their_variant_into_variant_json(tmp_path):
    from tdrl.launch import save_variant
    from tdrl.logging import logger_context

    save_variant({"algo": {"learning_rate": 3e-4}}, tmp_path / "lr_3e-4")
    with logger_context(tmp_path / "lr_3e-4", 0, "grid", {"seed": 1}, echo=False):
        pass
    variant = json.loads((tmp_path / "lr_3e-4" / "run_0" / "variant.json").read_text())
    assert variant == {"exp_name": "grid", "algo": {"learning_rate": 3e-4}}
    with logger_context(tmp_path / "plain", 0, "x", {"seed": 1}, echo=False):
        pass
    assert not (tmp_path / "plain" / "run_0" / "variant.json").exists()
    (tmp_path / "lr_3e-4" / "run_0" / "progress.csv").write_text(
        "Diagnostics/CumSteps,ReturnAverage\n1,2\n"
    )
    (curve,) = learning_curves(
        find_runs([tmp_path / "lr_3e-4"]), ["ReturnAverage"], group_by=["algo.learning_rate"]
    )
    assert curve.label == "algo.learning_rate=0.0003"


def test_logging_and_the_launcher_name_the_same_variant_file():
    from tdrl.launch import VARIANT_FILE
    from tdrl.logging.context import LAUNCHED_VARIANT

    assert VARIANT_FILE == LAUNCHED_VARIANT


def test_groups_with_the_same_directory_name_are_labelled_by_path(tmp_path):
    _write_run(tmp_path / "x" / "exp" / "run_0", [1, 2], [1.0, 2.0])
    _write_run(tmp_path / "y" / "exp" / "run_0", [1, 2], [3.0, 4.0])
    labels = [c.label for c in learning_curves(find_runs([tmp_path]), ["ReturnAverage"])]
    assert labels == [str(tmp_path / "x" / "exp"), str(tmp_path / "y" / "exp")]
