"""PEARL's presets (oyster's per-env configs), ``build_pearl``, ``iterations_for_steps`` and
``tdrl train --algo pearl``.

The expected settings are oyster's ``configs/default.py`` and ``configs/<env>.json``,
written out here as literal numbers (not read from the module under test).
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest
import torch

from tdrl.agents.qpg import PearlAgent
from tdrl.algos.qpg import PEARL
from tdrl.envs.meta import META_ENV_NAMES
from tdrl.runners.meta_presets import (
    PearlPreset,
    build_pearl,
    iterations_for_steps,
    pearl_preset,
)
from tdrl.runners.meta_rl import MetaRl
from tdrl.utils.checks import ArgumentError

#: Per family, oyster's values of some settings: (train tasks, test tasks), then by part.
OYSTER = {
    "cheetah-dir": {
        "tasks": (2, 2),
        "algo": {"meta_batch": 4, "embedding_batch_size": 256, "kl_lambda": 0.1},
        "runner": {
            "num_steps_prior": 1000,
            "num_extra_rl_steps_posterior": 1000,
            "num_evals": 4,
            "num_exp_traj_eval": 2,
            "num_train_steps_per_itr": 2000,
        },
        "max_path_length": 200,
    },
    "cheetah-vel": {
        "tasks": (100, 30),
        "algo": {"meta_batch": 16, "embedding_batch_size": 100},
        "runner": {
            "num_steps_prior": 400,
            "num_extra_rl_steps_posterior": 600,
            "num_evals": 1,
            "num_exp_traj_eval": 2,
        },
        "max_path_length": 200,
    },
    "ant-dir": {
        "tasks": (2, 2),
        "algo": {"meta_batch": 4, "embedding_batch_size": 256},
        "runner": {
            "num_steps_prior": 400,
            "num_extra_rl_steps_posterior": 600,
            "num_train_steps_per_itr": 4000,
            "num_evals": 4,
            "num_exp_traj_eval": 2,
        },
        "max_path_length": 200,
    },
    "ant-goal": {
        "tasks": (150, 30),
        "algo": {"meta_batch": 10, "embedding_batch_size": 256, "kl_lambda": 1.0},
        "runner": {
            "num_train_steps_per_itr": 4000,
            "num_extra_rl_steps_posterior": 600,
            "num_evals": 1,
            "num_exp_traj_eval": 2,
        },
        "max_path_length": 200,
    },
    "humanoid-dir": {
        "tasks": (100, 30),
        "algo": {"meta_batch": 16, "embedding_batch_size": 256},
        "runner": {"num_train_steps_per_itr": 4000, "num_evals": 1, "num_exp_traj_eval": 2},
        "max_path_length": 200,
    },
    "hopper-rand-params": {
        "tasks": (40, 10),
        "agent": {"use_next_obs_in_context": True},
        "algo": {"meta_batch": 10, "embedding_batch_size": 100},
        "runner": {"num_train_steps_per_itr": 4000, "num_evals": 2, "num_exp_traj_eval": 2},
        "max_path_length": 200,
    },
    "walker-rand-params": {
        "tasks": (40, 10),
        "agent": {"use_next_obs_in_context": True},
        "algo": {"meta_batch": 10, "embedding_batch_size": 100},
        "runner": {"num_train_steps_per_itr": 4000, "num_extra_rl_steps_posterior": 600},
        "max_path_length": 200,
    },
    "point-robot": {
        "tasks": (80, 20),
        "algo": {"reward_scale": 100.0, "kl_lambda": 0.1, "discount": 0.99},
        "runner": {
            "num_initial_steps": 200,
            "num_steps_prior": 200,
            "num_extra_rl_steps_posterior": 200,
            "num_train_steps_per_itr": 1000,
            "num_steps_per_eval": 60,
            "sparse_rewards": False,
        },
        "max_path_length": 20,
    },
    "sparse-point-robot": {
        "tasks": (80, 20),
        "algo": {
            "embedding_batch_size": 1024,
            "discount": 0.9,
            "reward_scale": 100.0,
            "kl_lambda": 1.0,
        },
        "runner": {
            "num_tasks_sample": 10,
            "num_steps_prior": 100,
            "num_steps_posterior": 900,
            "num_extra_rl_steps_posterior": 0,
            "num_train_steps_per_itr": 1000,
            "num_steps_per_eval": 400,
            "sparse_rewards": True,
            "num_exp_traj_eval": 5,
        },
        "max_path_length": 20,
    },
}

#: Settings no oyster config changes (configs/default.py).
OYSTER_DEFAULTS = {
    "agent": {
        "latent_size": 5,
        "hidden_sizes": (300, 300, 300),
        "encoder_hidden_sizes": (200, 200, 200),
        "information_bottleneck": True,
    },
    "algo": {
        "batch_size": 256,
        "target_update_tau": 0.005,
        "policy_lr": 3e-4,
        "q_lr": 3e-4,
        "v_lr": 3e-4,
        "context_lr": 3e-4,
    },
    "runner": {"update_post_train": 1, "replay_size": 1_000_000},
}


def test_every_family_has_a_preset():
    assert set(OYSTER) == set(META_ENV_NAMES)
    for name in META_ENV_NAMES:
        preset = pearl_preset(name)
        assert isinstance(preset, PearlPreset) and preset.env_name == name
        assert preset.n_iterations == 500


@pytest.mark.parametrize("name", sorted(OYSTER))
def test_preset_matches_oyster(name):
    preset, expected = pearl_preset(name), OYSTER[name]
    runner = preset.runner_kwargs
    assert (runner["n_train_tasks"], runner["n_eval_tasks"]) == expected["tasks"]
    for part, values in (("agent", preset.agent_kwargs), ("algo", preset.algo_kwargs)):
        for key, value in {**OYSTER_DEFAULTS[part], **expected.get(part, {})}.items():
            assert tuple(values[key]) == value if key.endswith("sizes") else values[key] == value
    for key, value in {**OYSTER_DEFAULTS["runner"], **expected["runner"]}.items():
        assert runner[key] == value, key
    use_next_obs = expected.get("agent", {}).get("use_next_obs_in_context", False)
    assert preset.agent_kwargs["use_next_obs_in_context"] is use_next_obs
    assert preset.env_kwargs["max_episode_steps"] == expected["max_path_length"]
    assert preset.max_path_length == expected["max_path_length"]


def test_departures_are_recorded_as_text():
    assert all(isinstance(pearl_preset(n).departures, str) for n in META_ENV_NAMES)
    assert pearl_preset("point-robot").departures == ""
    assert "forward_backward" in pearl_preset("ant-dir").departures


def test_pearl_preset_returns_a_copy():
    preset = pearl_preset("point-robot")
    preset.algo_kwargs["reward_scale"] = 1.0
    preset.runner_kwargs["n_train_tasks"] = 1
    assert pearl_preset("point-robot").algo_kwargs["reward_scale"] == 100.0
    assert pearl_preset("point-robot").runner_kwargs["n_train_tasks"] == 80
    with pytest.raises(AttributeError):
        preset.n_iterations = 1  # type: ignore[misc]


def test_unknown_family_is_refused_listing_the_known():
    for call in (lambda: pearl_preset("cheetah"), lambda: build_pearl("cheetah")):
        with pytest.raises(ArgumentError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "'cheetah'" in message
        assert all(name in message for name in META_ENV_NAMES)


@pytest.mark.parametrize("name", sorted(OYSTER))
def test_build_pearl_builds_every_family(name):
    expected = OYSTER[name]
    runner = build_pearl(name)  # nothing is built that needs MuJoCo before train()
    assert isinstance(runner, MetaRl) and runner.env_name == name
    assert isinstance(runner.agent, PearlAgent) and isinstance(runner.algo, PEARL)
    assert (runner.n_train_tasks, runner.n_eval_tasks) == expected["tasks"]
    assert runner.n_iterations == 500
    assert runner.env_kwargs["max_episode_steps"] == expected["max_path_length"]
    for key, value in expected["runner"].items():
        assert getattr(runner, key) == value, key
    for key, value in expected["algo"].items():
        assert getattr(runner.algo, key) == value, key
    assert runner.algo.meta_batch == expected["algo"].get("meta_batch", 16)
    assert not hasattr(runner, "meta_batch")  # one owner: the algorithm
    agent = runner.agent
    assert (agent.latent_size, agent.hidden_sizes, agent.encoder_hidden_sizes) == (
        5,
        [300, 300, 300],
        [200, 200, 200],
    )
    assert agent.information_bottleneck is True
    assert agent.use_next_obs_in_context is name.endswith("rand-params")
    assert runner.algo.kl_reduction == "sum"


def test_build_pearl_applies_overrides():
    runner = build_pearl(
        "cheetah-vel",
        algo_overrides={"batch_size": 32, "reward_scale": 1.0},
        agent_overrides={"latent_size": 3, "hidden_sizes": (16,)},
        runner_overrides={"num_evals": 3, "env_kwargs": {"max_episode_steps": 50}},
        n_iterations=7,
        seed=4,
        device="cpu",
    )
    assert (runner.algo.batch_size, runner.algo.reward_scale) == (32, 1.0)
    assert (runner.agent.latent_size, runner.agent.hidden_sizes) == (3, [16])
    assert runner.agent.encoder_hidden_sizes == [200, 200, 200]  # the preset's
    assert (runner.num_evals, runner.num_extra_rl_steps_posterior) == (3, 600)
    assert runner.env_kwargs == {"max_episode_steps": 50}
    assert (runner.n_iterations, runner.seed, runner.device) == (7, 4, torch.device("cpu"))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"algo_overrides": {"lr": 1e-3}}, "algo_overrides has an unknown key 'lr'; it takes: "),
        ({"agent_overrides": {"net_size": 3}}, "agent_overrides has an unknown key 'net_size'"),
        ({"runner_overrides": {"seed": 1}}, "runner_overrides has an unknown key 'seed'"),
        ({"runner_overrides": {"max_path_length": 5}}, "unknown key 'max_path_length'"),
    ],
)
def test_build_pearl_refuses_unknown_overrides(kwargs, key):
    with pytest.raises(ArgumentError) as info:
        build_pearl("point-robot", **kwargs)
    message = str(info.value)
    assert "\n" not in message and key in message, message
    accepted = {"algo": "kl_lambda", "agent": "latent_size", "runner": "num_evals"}
    assert accepted[next(iter(kwargs))[: -len("_overrides")]] in message


def test_build_pearl_refuses_bad_values_naming_them():
    with pytest.raises(ArgumentError, match="meta_batch must be a positive int, got 0"):
        build_pearl("point-robot", algo_overrides={"meta_batch": 0})
    with pytest.raises(ArgumentError, match="num_evals must be a positive int"):
        build_pearl("point-robot", runner_overrides={"num_evals": 0})


def test_iterations_for_steps_against_hand_counts():
    point = pearl_preset("point-robot")  # 80 × 200 at iteration 0, then 5 × (200 + 200)
    assert iterations_for_steps(point, 1) == 1
    assert iterations_for_steps(point, 16_000 + 2_000) == 1
    assert iterations_for_steps(point, 16_000 + 2_001) == 2
    assert iterations_for_steps(point, 1_000_000) == 492
    sparse = pearl_preset("sparse-point-robot")  # 80 × 200, then 10 × (100 + 900)
    assert iterations_for_steps(sparse, 1_000_000) == 99
    vel = pearl_preset("cheetah-vel")  # 100 × 2000, then 5 × (400 + 600)
    assert iterations_for_steps(vel, 1_000_000) == 160
    assert iterations_for_steps(vel, 205_001) == 2
    goal = pearl_preset("ant-goal")  # 150 × 2000, then 5 × (400 + 600)
    assert iterations_for_steps(goal, 1_000_000) == 140
    cheetah_dir = pearl_preset("cheetah-dir")  # 2 × 2000, then 5 × (1000 + 1000)
    assert iterations_for_steps(cheetah_dir, 54_000) == 5


def test_iterations_for_steps_rounds_phases_up_to_whole_trajectories():
    preset = pearl_preset("point-robot").with_overrides(
        runner={
            "n_train_tasks": 3,
            "num_initial_steps": 10,  # 20 per task
            "num_tasks_sample": 2,
            "num_steps_prior": 30,  # 40
            "num_steps_posterior": 1,  # 20
            "num_extra_rl_steps_posterior": 0,
        }
    )
    assert iterations_for_steps(preset, 60 + 120) == 1  # 3 × 20, then 2 × (40 + 20)
    assert iterations_for_steps(preset, 60 + 121) == 2
    longer = preset.with_overrides(runner={"env_kwargs": {"max_episode_steps": 25}})
    assert iterations_for_steps(longer, 75 + 2 * 75) == 1  # 3 × 25, then 2 × (50 + 25)
    assert iterations_for_steps(longer, 75 + 2 * 75 + 1) == 2
    idle = preset.with_overrides(runner={"num_tasks_sample": 0})
    assert iterations_for_steps(idle, 10**6) == 1
    with pytest.raises(ArgumentError, match="n_steps must be a positive int"):
        iterations_for_steps(preset, 0)


# ---------------------------------------------------------------------- the command line
#: ``--algo-arg`` / ``--runner-arg`` that make a point-robot run take a second.
TINY = [
    *("--algo-arg", "batch_size=32", "--algo-arg", "meta_batch=2"),
    *("--algo-arg", "embedding_batch_size=16"),
    *("--runner-arg", "n_train_tasks=3", "--runner-arg", "n_eval_tasks=2"),
    *("--runner-arg", "num_initial_steps=20", "--runner-arg", "num_tasks_sample=1"),
    *("--runner-arg", "num_train_steps_per_itr=3", "--runner-arg", "num_evals=1"),
    *("--runner-arg", "num_steps_per_eval=20", "--runner-arg", "replay_size=1000"),
]


def _pearl_argv(tmp_path, *extra):
    base = ["train", "--algo", "pearl", "--env", "point-robot", "--log-dir", str(tmp_path)]
    return [*base, *TINY, *extra]


def _rows(run_dir):
    with open(run_dir / "progress.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_cli_trains_pearl_end_to_end(tmp_path, capsys):
    from tdrl.cli import main

    # 3 × 20 steps at iteration 0, then 1 × (200 + 200) per iteration: 2 iterations.
    assert main(_pearl_argv(tmp_path, "--n-steps", "500", "--seed", "3")) == 0
    rows = _rows(tmp_path / "run_0")
    assert [int(r["Diagnostics/Iteration"]) for r in rows] == [0, 1]
    assert [int(r["Diagnostics/CumSteps"]) for r in rows] == [460, 860]
    for column in ("AverageReturn_all_test_tasks", "AverageReturn_all_train_tasks"):
        assert column in rows[0]
    assert rows[-1]["ReturnAverage"] == rows[-1]["AverageReturn_all_test_tasks"]
    assert int(rows[-1]["Diagnostics/CumUpdates"]) == 6
    params = json.loads((tmp_path / "run_0" / "params.json").read_text())
    assert params["algo_kwargs"] == {"batch_size": 32, "meta_batch": 2, "embedding_batch_size": 16}
    assert params["runner_kwargs"]["num_train_steps_per_itr"] == 3
    assert (params["n_iterations"], params["seed"]) == (2, 3)
    assert params["preset"]["algo_kwargs"]["reward_scale"] == 100.0
    assert params["preset"]["runner_kwargs"]["n_train_tasks"] == 3
    assert "batch_T" not in params  # the options that do not apply are left out
    assert "done in" in capsys.readouterr().out


def test_cli_resumes_a_pearl_run(tmp_path):
    from tdrl.cli import main

    assert main(_pearl_argv(tmp_path, "--n-steps", "100")) == 0  # one iteration
    assert main(_pearl_argv(tmp_path, "--n-steps", "500", "--resume")) == 0
    rows = _rows(tmp_path / "run_0")
    assert [int(r["Diagnostics/Iteration"]) for r in rows] == [0, 1]
    assert int(rows[-1]["Diagnostics/CumUpdates"]) == 6  # the algorithm's counter went on


def test_tdrl_eval_runs_a_pearl_agent_on_its_test_tasks(tmp_path, capsys):
    from tdrl.cli import main

    assert main(_pearl_argv(tmp_path, "--n-steps", "100", "--seed", "4")) == 0
    run = tmp_path / "run_0"
    rollouts = [c for c in _rows(run)[0] if c.startswith("AverageReturn_rollout_")]
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "PEARL on 2 test tasks of point-robot (1 runs each)" in out
    first = out.split("AverageReturn_all_test_tasks ")[1].split()[0]
    assert float(first) < 0  # point-robot rewards are minus distances
    assert len(out.split("per trajectory: ")[1].split(",")) == len(rollouts)
    assert main(["eval", str(run)]) == 0  # the same tasks and seed: the same returns
    assert capsys.readouterr().out.split("AverageReturn_all_test_tasks ")[1].split()[0] == first
    assert main(["eval", str(run), "--video", str(tmp_path / "v.mp4")]) == 2
    assert "--video does not apply to PEARL runs" in capsys.readouterr().err
    params = json.loads((run / "params.json").read_text())
    (run / "params.json").write_text(json.dumps({**params, "seed": 5}))  # other tasks
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert "test tasks drawn again" in err and err.count("\n") == 1


def test_cli_pearl_defaults_to_oyster_iterations_and_passes_options(monkeypatch, tmp_path):
    from tdrl import cli

    seen = []

    def spy_train(self):
        seen.append((self.n_iterations, self.seed, self.device, self.algo.reward_scale))
        return {}

    monkeypatch.setattr(MetaRl, "train", spy_train)
    argv = ["train", "--algo", "pearl", "--env", "sparse-point-robot", "--log-dir", str(tmp_path)]
    assert cli.main([*argv, "--seed", "2", "--device", "cpu", "--torch-threads", "1"]) == 0
    assert seen == [(500, 2, torch.device("cpu"), 100.0)]
    assert cli.main([*argv, "--run-ID", "1", "--n-steps", "1e6"]) == 0
    assert seen[-1][0] == 99


#: ``tdrl train --algo pearl`` inputs refused before anything runs, and their messages.
PEARL_REFUSES = [
    (["--env", "CartPole-v1"], "--algo pearl needs --env to be a meta-RL task family (ant-dir"),
    (["--algo", "sac", "--env", "point-robot"], "--env point-robot is a meta-RL task family: it"),
    (["--algo", "ppo", "--env", "cheetah-vel"], "needs --algo pearl"),
    (["--batch-T", "5"], "--batch-T does not apply to --algo pearl"),
    (["--batch-B", "2"], "--batch-B does not apply to --algo pearl"),
    (["--eval-n-envs", "1"], "--eval-n-envs does not apply to --algo pearl"),
    (["--eval-max-steps", "5"], "--eval-max-steps does not apply to --algo pearl"),
    (["--eval-max-trajectories", "5"], "--eval-max-trajectories does not apply"),
    (["--log-interval-steps", "5"], "--log-interval-steps does not apply to --algo pearl"),
    (["--recurrent"], "--recurrent does not apply to --algo pearl"),
    (["--algo-arg", "lr=1e-3"], "--algo-arg lr is not an argument of --algo pearl (PEARL); it"),
    (["--algo-arg", "meta_batch=0"], "meta_batch must be a positive int, got 0"),
    (["--algo-arg", "kl_lambda=nan"], "kl_lambda must be a finite number"),
    (["--runner-arg", "seed=1"], "--runner-arg seed is not an argument of MetaRl; it takes:"),
    (["--runner-arg", "num_evals=0"], "num_evals must be a positive int, got 0"),
    (["--runner-arg", "num_evals=1", "--runner-arg", "num_evals=2"], "num_evals is given twice"),
    (["--device", "gpu"], "--device must be"),
]


@pytest.mark.parametrize(("extra", "message"), PEARL_REFUSES, ids=lambda x: str(x))
def test_cli_refuses_bad_pearl_input_in_one_line(extra, message, capsys, tmp_path):
    from tdrl.cli import main

    argv = ["train", "--algo", "pearl", "--env", "point-robot", "--log-dir", str(tmp_path)]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tdrl train: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not list(tmp_path.iterdir())  # refused before the run directory was made


def test_cli_runner_args_of_other_algos_are_the_runners(capsys, tmp_path):
    from tdrl.cli import main

    argv = ["train", "--algo", "ppo", "--env", "CartPole-v1", "--log-dir", str(tmp_path)]
    assert main([*argv, "--runner-arg", "num_evals=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tdrl train: error: --runner-arg num_evals is not an argument of ")
    assert "nonfinite" in err and err.count("\n") == 1
    assert main([*argv, "--runner-arg", "seed=3"]) == 2
    assert capsys.readouterr().err == (
        "tdrl train: error: --runner-arg seed: set it with --seed, not --runner-arg\n"
    )
    more = ["--n-steps", "256", "--batch-T", "32", "--batch-B", "2", "--no-progress"]
    more += ["--preset", "none"]
    assert main([*argv, *more, "--runner-arg", "nonfinite=skip"]) == 0
    rows = _rows(tmp_path / "run_0")
    assert rows[-1]["Diagnostics/NonFiniteSkips"] == "0"


def test_cli_tables_agree_with_the_parser_and_the_envs():
    from tdrl.cli import META_ENVS, NOT_FOR_PEARL, build_parser

    assert META_ENVS == META_ENV_NAMES
    args = build_parser().parse_args(["train", "--algo", "pearl", "--env", "point-robot"])
    for flag, default in NOT_FOR_PEARL.items():
        assert getattr(args, flag[2:].replace("-", "_")) == default, flag
    assert args.n_steps is None and args.runner_arg == []


def test_cli_help_names_pearl_and_the_families(capsys):
    from tdrl.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "pearl" in out and "--runner-arg" in out
    assert "cheetah-vel" in out and "sparse-point-robot" in out


def test_cli_import_stays_light():
    code = "import sys, tdrl.cli; print(sorted({'torch', 'gymnasium'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_sac_variant_v2_reaches_the_agent_too(tmp_path):
    from tdrl.cli import main

    argv = _pearl_argv(tmp_path, "--n-steps", "100", "--algo-arg", "sac_variant=v2")
    assert main(argv) == 0
    rows = _rows(tmp_path / "run_0")
    assert "alphaAverage" in rows[0] and "loss_vAverage" not in rows[0]
    runner = build_pearl("point-robot", algo_overrides={"sac_variant": "v2"}, n_iterations=1)
    assert runner.agent.sac_variant == runner.algo.sac_variant == "v2"


@pytest.mark.parametrize("family", sorted(set(META_ENV_NAMES) - {"point-robot"}))
def test_cli_trains_every_family_for_one_tiny_iteration(family, tmp_path):
    """Collection, a meta-step and the evaluation run through the CLI on every family."""
    from tdrl.cli import main

    phases = [
        *("--runner-arg", "num_steps_prior=10", "--runner-arg", "num_steps_posterior=0"),
        *("--runner-arg", "num_extra_rl_steps_posterior=10"),
        *("--runner-arg", "env_kwargs={'max_episode_steps': 10}"),
    ]
    argv = ["train", "--algo", "pearl", "--env", family, "--log-dir", str(tmp_path)]
    assert main([*argv, *TINY, *phases, "--n-steps", "1"]) == 0
    (row,) = _rows(tmp_path / "run_0")
    assert int(row["Diagnostics/CumUpdates"]) == 3
    assert math.isfinite(float(row["AverageReturn_all_test_tasks"]))
