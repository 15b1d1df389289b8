"""The presets registry: every entry builds, `tdrl train` applies it, `tdrl presets` lists it."""

from __future__ import annotations

import json

import pytest

from tdrl.presets import PRESETS, find_preset, preset_table


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_its_algorithm_and_agent(name):
    from tdrl.cli_build import DEFAULT_BATCH, _algo_kwargs, _make_algo_agent

    preset = PRESETS[name]
    assert preset.envs and preset.source and preset.result
    assert "not measured" not in preset.result, "a preset without its measured result"
    if preset.algo == "pearl":  # oyster's config: the same data MetaRl's builder uses
        from tdrl.runners.meta_presets import pearl_preset

        (family,) = preset.envs
        built = pearl_preset(family)
        assert dict(preset.algo_kwargs) == built.algo_kwargs
        assert dict(preset.agent_kwargs) == built.agent_kwargs
        runner = dict(preset.runner_kwargs)
        assert runner.pop("env_kwargs") == built.env_kwargs and runner == built.runner_kwargs
        assert find_preset("pearl", family) is preset
        return
    assert preset.algo in DEFAULT_BATCH
    pairs = list(preset.algo_kwargs.items())
    kwargs = _algo_kwargs(preset.algo, pairs)  # every name is the algorithm's
    for env in preset.envs:
        assert find_preset(preset.algo, env) is preset
        if env == "atari:*":  # a pattern: build it for one game
            pytest.importorskip("ale_py")
            env = "atari:breakout"
            assert find_preset(preset.algo, env) is preset
        algo, agent = _make_algo_agent(
            preset.algo, kwargs, env, agent_kwargs=dict(preset.agent_kwargs)
        )
        for key, value in preset.algo_kwargs.items():
            if key != "optim_kwargs":
                assert getattr(algo, key) == value, key
        held = getattr(agent, "exploration", None) or agent  # DqnAgent keeps epsilons there
        for key, value in preset.agent_kwargs.items():
            if key != "model_kwargs":
                assert getattr(held, key) == value, key


def test_presets_command_lists_every_preset(capsys):
    from tdrl.cli import main

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == preset_table()
    for name in PRESETS:
        assert f"| {name} |" in out


def test_train_applies_the_preset_and_saves_it(tmp_path, capsys):
    from tdrl.cli import main

    argv = ["train", "--algo", "dqn", "--env", "CartPole-v1", "--log-dir", str(tmp_path)]
    argv += ["--n-steps", "256", "--no-progress", "--eval-n-envs", "0"]
    assert main([*argv, "--algo-arg", "batch_size=32"]) == 0
    assert "tdrl train: preset dqn-cartpole (" in capsys.readouterr().out
    params = json.loads((tmp_path / "run_0" / "params.json").read_text())
    assert params["preset"]["name"] == "dqn-cartpole"
    assert params["batch_T"] == 256 and params["batch_B"] == 1  # the preset's shape
    assert params["algo_kwargs"]["batch_size"] == 32  # --algo-arg wins
    assert params["algo_kwargs"]["replay_ratio"] == 32.0  # the preset's
    assert params["agent_kwargs"]["eps_final"] == 0.04


def test_preset_none_gives_the_algorithms_defaults(tmp_path, capsys):
    from tdrl.cli import main

    argv = ["train", "--algo", "dqn", "--env", "CartPole-v1", "--log-dir", str(tmp_path)]
    assert main([*argv, "--n-steps", "64", "--no-progress", "--preset", "none"]) == 0
    assert "tdrl train: preset" not in capsys.readouterr().out
    params = json.loads((tmp_path / "run_0" / "params.json").read_text())
    assert params["preset"] is None and (params["batch_T"], params["batch_B"]) == (4, 8)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "nope"], "--preset nope is not a preset; they are: none, "),
        (["--preset", "sac-pendulum"], "--preset sac-pendulum is for --algo sac, not dqn"),
        (["--agent-arg", "bogus=1"], "--agent-arg bogus is not an argument of DqnAgent"),
    ],
)
def test_bad_preset_options_are_refused_in_one_line(tmp_path, capsys, extra, message):
    from tdrl.cli import main

    argv = ["train", "--algo", "dqn", "--env", "CartPole-v1", "--log-dir", str(tmp_path)]
    assert main([*argv, "--n-steps", "64", *extra]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"tdrl train: error: {message}"), err


def test_pearl_takes_its_familys_preset_by_name_only(tmp_path, capsys):
    from test_pearl_cli import _pearl_argv

    from tdrl.cli import main

    assert main(_pearl_argv(tmp_path, "--n-steps", "30", "--preset", "pearl-point-robot")) == 0
    for other in ("pearl-cheetah-vel", "none", "ppo-cartpole"):
        assert main(_pearl_argv(tmp_path / other, "--n-steps", "30", "--preset", other)) == 2
        assert "--algo pearl --env point-robot takes --preset pearl-point-robot" in (
            capsys.readouterr().err
        )


def test_pearl_says_when_its_first_iteration_collects_more_than_n_steps(tmp_path, capsys):
    from test_pearl_cli import _pearl_argv

    from tdrl.cli import main

    assert main(_pearl_argv(tmp_path, "--n-steps", "30")) == 0
    assert "tdrl train: note: --algo pearl's first iteration collects" in capsys.readouterr().out


def test_a_presets_env_kwargs_reach_the_env_and_params(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ale_py")
    import dataclasses

    import tdrl.envs
    from tdrl import presets
    from tdrl.cli import main

    patched = dataclasses.replace(presets.PRESETS["dqn-atari"], env_kwargs={"clip_reward": False})
    monkeypatch.setitem(presets.PRESETS, "dqn-atari", patched)
    built, make = [], tdrl.envs.make_atari_env

    def recording_make(**kwargs):
        built.append(kwargs)
        return make(**kwargs)

    monkeypatch.setattr(tdrl.envs, "make_atari_env", recording_make)
    argv = ["train", "--algo", "dqn", "--env", "atari:pong", "--log-dir", str(tmp_path)]
    argv += ["--n-steps", "32", "--no-progress", "--eval-n-envs", "0", "--batch-B", "2"]
    argv += ["--algo-arg", "replay_size=256", "--sampler-arg", "max_decorrelation_steps=0"]
    assert main(argv) == 0, capsys.readouterr().err
    params = json.loads((tmp_path / "run_0" / "params.json").read_text())
    assert params["env_kwargs"] == {"clip_reward": False}
    sampler_envs = [kw for kw in built if kw != {"game": "pong"}]  # not the space probe
    assert sampler_envs and all(kw["clip_reward"] is False for kw in sampler_envs)
    rows = (tmp_path / "run_0" / "progress.csv").read_text().splitlines()
    assert len(rows) >= 2


def test_atari_presets_cover_every_game_and_exact_ids_win():
    assert find_preset("r2d1", "atari:breakout").name == "r2d1-atari"
    assert find_preset("ppo", "atari:pong").name == "ppo-atari-lstm"
    assert find_preset("ppo", "CartPole-v1").name == "ppo-cartpole"
    assert find_preset("ppo", "atari") is None and find_preset("sac", "atari:pong") is None
