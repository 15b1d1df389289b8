"""Tuned presets: the settings that make ``tdrl train --algo A --env E`` learn out of the box.

A ``Preset`` names, for one algorithm and a set of env ids, the algorithm's and the agent's
arguments, the sampler's batch shape and evaluation, the runner's arguments, where the
settings come from and what they measured (with the command). ``tdrl train`` applies the
preset of its ``(--algo, --env)`` pair unless told ``--preset none`` (or another name);
``--algo-arg`` / ``--agent-arg`` / ``--runner-arg`` and the sampler options override any
setting; the preset is printed and saved in ``params.json``. ``tdrl presets`` lists them.

Without a preset the algorithms' own defaults apply (rlpyt's, tuned for Atari and MuJoCo
at millions of steps): on small control tasks they often learn nothing in a short run, which
is why these exist. The entries are data, in ``presets.json`` beside this module (rl-zoo3
keeps its hyperparameters in files too); PEARL's entries (``pearl-<family>``) are
oyster's configs for each task family (``tdrl.utils.oyster_configs``), which ``tdrl train
--algo pearl`` builds through ``tdrl.runners.meta_presets``. This module imports nothing
heavy.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from fnmatch import fnmatchcase as fnmatch
from pathlib import Path
from typing import Any

from tdrl.utils.meta_env_names import META_ENV_NAMES
from tdrl.utils.oyster_configs import DEPARTURES, oyster_settings

__all__ = ["PRESETS", "PRESETS_FILE", "Preset", "find_preset", "preset_table", "resolve_preset"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """One tuned configuration.

    Attributes:
        name: how ``--preset`` names it.
        algo: the ``--algo`` it applies to.
        envs: the ``--env`` ids it applies to; ``fnmatch`` patterns (``"atari:*"``) match
            every id they cover, after the exact ids of other presets.
        env_kwargs: the env's arguments (``AtariEnv``'s, ``gymnasium.make``'s), for
            training and evaluation.
        algo_kwargs: the algorithm's arguments (``--algo-arg`` overrides each).
        agent_kwargs: the agent's arguments (``--agent-arg`` overrides each).
        recurrent: an LSTM agent (``--recurrent``; policy gradient only).
        batch_T: time steps per sampler batch (``--batch-T`` overrides).
        batch_B: envs per batch (``--batch-B`` overrides).
        eval_n_envs: offline evaluation envs (0: ``ReturnAverage`` of training episodes).
        eval_max_trajectories: episodes per evaluation.
        eval_max_steps: env steps per evaluation (None: ``--eval-max-steps``'s default).
        sampler: ``"serial"``, ``"cpu"``, ``"gpu"`` or ``"alternating"`` (``--sampler``).
        n_workers: the parallel sampler's workers (None: its default; ``--n-workers``).
        sampler_kwargs: the sampler's other arguments (``--sampler-arg`` overrides each).
        runner: ``"minibatch"``, ``"async"`` or ``"sync"`` (``--runner``); ``"meta"`` for
            PEARL's ``MetaRl`` (its ``runner_kwargs`` hold the family's ``env_kwargs``).
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
    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    recurrent: bool = False
    batch_T: int | None = None
    batch_B: int | None = None
    eval_n_envs: int = 0
    eval_max_trajectories: int = 8
    eval_max_steps: int | None = None
    sampler: str = "serial"
    n_workers: int | None = None
    sampler_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    runner: str = "minibatch"
    runner_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    n_steps: int | None = None
    source: str = ""
    result: str = ""

    def settings(self) -> dict[str, Any]:
        """The preset as plain data (for ``params.json`` and the printed line)."""
        return dataclasses.asdict(self)


#: The registry's data: every entry but PEARL's, one JSON object per ``Preset``.
PRESETS_FILE = Path(__file__).with_name("presets.json")


def _load_presets(path: Path) -> dict[str, Preset]:
    """The entries of ``path`` (``presets.json``) by name; ``envs`` as a tuple."""
    entries = json.loads(path.read_text(encoding="utf-8"))
    return {e["name"]: Preset(**{**e, "envs": tuple(e["envs"])}) for e in entries}


PRESETS: dict[str, Preset] = _load_presets(PRESETS_FILE)

#: PEARL's measured results (docs/meta_rl.md); the other families were not trained here.
_PEARL_RESULTS = {
    "point-robot": "see docs/meta_rl.md (example_12's smaller settings were measured there)",
    "cheetah-vel": "see docs/meta_rl.md (oyster's schedule scaled to this CPU)",
}
for _family in META_ENV_NAMES:
    _parts = oyster_settings(_family)
    _departs = DEPARTURES.get(_family, "")
    PRESETS[f"pearl-{_family}"] = Preset(
        name=f"pearl-{_family}",
        algo="pearl",
        envs=(_family,),
        algo_kwargs=_parts["algo"],
        agent_kwargs=_parts["agent"],
        runner="meta",
        runner_kwargs={**_parts["runner"], "env_kwargs": _parts["env"]},
        source=f"oyster's configs/{_family}.json" + (f"; departs: {_departs}" if _departs else ""),
        result=_PEARL_RESULTS.get(_family, "not trained to convergence on this 2-core machine"),
    )


def find_preset(algo: str, env: str) -> Preset | None:
    """The preset for ``--algo algo --env env`` (None: the algorithm's defaults apply).

    An exact id wins over a pattern (``"atari:*"``).
    """
    exact = [p for p in PRESETS.values() if p.algo == algo and env in p.envs]
    if exact:
        return exact[0]
    matched = [
        p for p in PRESETS.values() if p.algo == algo and any(fnmatch(env, e) for e in p.envs)
    ]
    return matched[0] if matched else None


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
