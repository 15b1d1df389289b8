"""Tuned presets: the settings that make ``tdrl train --algo A --env E`` learn out of the box.

A ``Preset`` names, for one algorithm and a set of env ids, the algorithm's and the agent's
arguments, the sampler's batch shape and evaluation, the runner's arguments, where the
settings come from and what they measured (with the command). ``tdrl train`` applies the
preset of its ``(--algo, --env)`` pair unless told ``--preset none`` (or another name);
``--algo-arg`` / ``--agent-arg`` / ``--runner-arg`` and the sampler options override any
setting; the preset is printed and saved in ``params.json``. ``tdrl presets`` lists them.

Without a preset the algorithms' own defaults apply (rlpyt's, tuned for Atari and MuJoCo
at millions of steps): on small control tasks they often learn nothing in a short run, which
is why these exist. This module is data: it imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["PRESETS", "Preset", "find_preset", "preset_table", "resolve_preset"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """One tuned configuration.

    Attributes:
        name: how ``--preset`` names it.
        algo: the ``--algo`` it applies to.
        envs: the ``--env`` ids it applies to.
        algo_kwargs: the algorithm's arguments (``--algo-arg`` overrides each).
        agent_kwargs: the agent's arguments (``--agent-arg`` overrides each).
        batch_T: time steps per sampler batch (``--batch-T`` overrides).
        batch_B: envs per batch (``--batch-B`` overrides).
        eval_n_envs: offline evaluation envs (0: ``ReturnAverage`` of training episodes).
        eval_max_trajectories: episodes per evaluation.
        runner_kwargs: the runner's arguments (``--runner-arg`` overrides each).
        n_steps: the budget it was tuned for (``--n-steps`` when not given).
        source: where the settings come from.
        result: what they measured, with the command, seed and machine.
    """

    name: str
    algo: str
    envs: tuple[str, ...]
    algo_kwargs: Mapping[str, Any]
    agent_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    batch_T: int | None = None
    batch_B: int | None = None
    eval_n_envs: int = 0
    eval_max_trajectories: int = 8
    runner_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    n_steps: int | None = None
    source: str = ""
    result: str = ""

    def settings(self) -> dict[str, Any]:
        """The preset as plain data (for ``params.json`` and the printed line)."""
        return dataclasses.asdict(self)


_SAC_PENDULUM = {"min_steps_learn": 1_000}  # SAC's defaults: batch 256, one update per step
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="ppo-cartpole",
            algo="ppo",
            envs=("CartPole-v1",),
            algo_kwargs={
                "discount": 0.98,
                "gae_lambda": 0.8,
                "learning_rate": 1e-3,
                "linear_lr_schedule": True,
                "ratio_clip": 0.2,
                "epochs": 20,
                "minibatches": 1,
                "entropy_loss_coeff": 0.0,
                "normalize_advantage": True,
                "clip_grad_norm": 0.5,
            },
            batch_T=32,
            batch_B=8,
            n_steps=100_000,
            source="rl-zoo3's PPO CartPole-v1 settings (as example_1.py)",
            result=(
                "ReturnAverage (last 100 training episodes) 500.0 at 100k steps on seeds 0, 1 "
                "and 2 (`tdrl train --algo ppo --env CartPole-v1 --seed S`, about 21 s each)"
            ),
        ),
        Preset(
            name="dqn-cartpole",
            algo="dqn",
            envs=("CartPole-v1",),
            algo_kwargs={
                "batch_size": 128,
                "learning_rate": 1e-3,
                "optim_kwargs": {"eps": 1e-8},
                "replay_size": 100_000,
                "replay_ratio": 32.0,
                "min_steps_learn": 1_000,
                "target_update_tau": 0.01,
                "target_update_interval": 1,
                "eps_steps": 8_000,
                "double_dqn": True,
            },
            agent_kwargs={"model_kwargs": {"hidden_sizes": (256, 256)}, "eps_final": 0.04},
            batch_T=256,
            batch_B=1,
            eval_n_envs=4,
            n_steps=50_000,
            source="example_3.py (double DQN, soft targets; rl-zoo3's network and exploration)",
            result=(
                "evaluation ReturnAverage 500.0 at 50k steps on seeds 0, 1 and 2 (first >= 475 "
                "at the 50k, 50k and 40k log rows; `tdrl train --algo dqn --env CartPole-v1 "
                "--seed S`, 36-46 s each)"
            ),
        ),
        Preset(
            name="sac-pendulum",
            algo="sac",
            envs=("Pendulum-v1",),
            algo_kwargs=_SAC_PENDULUM,
            batch_T=1,
            batch_B=1,
            eval_n_envs=2,
            n_steps=10_000,
            source="SAC's defaults with a 1,000-step warm-up (rl-zoo3 uses the defaults)",
            result=(
                "evaluation ReturnAverage -177.5, -146.7, -162.9 on seeds 0, 1, 2 at 10k steps "
                "(`tdrl train --algo sac --env Pendulum-v1 --seed S`, about 2 minutes each)"
            ),
        ),
        Preset(
            name="td3-pendulum",
            algo="td3",
            envs=("Pendulum-v1",),
            algo_kwargs={"min_steps_learn": 1_000, "batch_size": 256, "replay_ratio": 256},
            batch_T=100,
            batch_B=1,
            eval_n_envs=2,
            n_steps=10_000,
            source="TD3's defaults with batch 256 and a 1,000-step warm-up (as SB3's TD3)",
            result=(
                ">= -200 evaluation return at 10k steps, seed 0 "
                "(tests/test_ddpg_td3.py::test_td3_pendulum_reaches_minus_200_within_10k_steps, "
                "passed 2026-12-07; an earlier session measured -155)"
            ),
        ),
    )
}


def find_preset(algo: str, env: str) -> Preset | None:
    """The preset for ``--algo algo --env env`` (None: the algorithm's defaults apply)."""
    found = [p for p in PRESETS.values() if p.algo == algo and env in p.envs]
    return found[0] if found else None


def resolve_preset(name: str | None, algo: str, env: str) -> Preset | None:
    """The preset ``--preset name`` selects for ``--algo algo --env env``.

    ``None``: the pair's preset, if any; ``"none"``: no preset; else the named one, which
    must be for ``algo``.

    Raises:
        ValueError: an unknown name, or a preset of another algorithm.
    """
    if name == "none":
        return None
    if name is None:
        return find_preset(algo, env)
    if name not in PRESETS:
        raise ValueError(f"--preset {name} is not a preset; they are: none, {', '.join(PRESETS)}")
    if PRESETS[name].algo != algo:
        raise ValueError(f"--preset {name} is for --algo {PRESETS[name].algo}, not {algo}")
    return PRESETS[name]


def preset_table() -> str:
    """Every preset as a markdown table (``tdrl presets``)."""
    rows = ["| preset | algo | envs | n_steps | source | result |", "|---|---|---|---|---|---|"]
    for p in PRESETS.values():
        envs = ", ".join(p.envs)
        rows.append(f"| {p.name} | {p.algo} | {envs} | {p.n_steps} | {p.source} | {p.result} |")
    return "\n".join(rows)
