"""PEARL's per-environment settings (oyster's configs) and a builder for them.

Oyster (https://github.com/katerakelly/oyster) runs every experiment from
``configs/default.py`` updated by one ``configs/<env>.json``. ``pearl_preset(name)`` returns
the result for every family of ``tdrl.envs.meta.META_ENV_NAMES`` as a ``PearlPreset``:
plain data in tdrl's names, split by where each setting goes:

- ``agent_kwargs`` for ``PearlAgent`` (oyster's ``latent_size``, ``net_size`` as three
  hidden layers, the encoder's 200-200-200, ``use_information_bottleneck``,
  ``use_next_obs_in_context``);
- ``algo_kwargs`` for ``PEARL`` (``discount``, ``batch_size``, ``embedding_batch_size``,
  ``meta_batch``, ``kl_lambda``, ``reward_scale``, ``soft_target_tau`` as
  ``target_update_tau``, the four learning rates);
- ``runner_kwargs`` for ``MetaRl`` (tasks, the collection schedule, the evaluation,
  ``sparse_rewards``, oyster's replay size of 1e6 per task);
- ``env_kwargs`` for ``make_meta_env`` (``max_episode_steps``: oyster's
  ``max_path_length``, 200, or 20 for the point robots);
- ``n_iterations``: oyster's ``num_iterations`` (500 everywhere).

Oyster's ``embedding_mini_batch_size`` (equal to ``embedding_batch_size`` in every config;
it differs only for the recurrent encoder, which tdrl does not have), ``recurrent`` and
``dump_eval_paths`` have no counterpart. Where a preset departs from oyster on purpose, its
``departures`` says how and why (empty when it does not).

``build_pearl(name, ...)`` builds the agent, the algorithm and the runner of a preset with
optional overrides of each part; ``iterations_for_steps`` turns a budget of env steps into
iterations of the preset's schedule.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdrl.agents.qpg.pearl_agent import PearlAgent
from tdrl.algos.qpg.pearl import PEARL
from tdrl.envs.meta import META_ENV_NAMES
from tdrl.runners.meta_rl import MetaRl
from tdrl.utils.checks import ArgumentError, check_choice, check_int, check_mapping
from tdrl.utils.oyster_configs import DEPARTURES, oyster_settings


@dataclasses.dataclass(frozen=True)
class PearlPreset:
    """One family's settings, split by the object each part configures.

    ``pearl_preset`` hands out copies: changing one changes no other.

    Attributes:
        env_name: the family (``make_meta_env``'s name, oyster's ``env_name``).
        agent_kwargs: keyword arguments of ``PearlAgent``.
        algo_kwargs: keyword arguments of ``PEARL``.
        runner_kwargs: keyword arguments of ``MetaRl`` (not ``env_kwargs`` nor those
            ``build_pearl`` sets, ``RUNNER_SET_BY_BUILD``).
        env_kwargs: keyword arguments of the family (``max_episode_steps`` always).
        n_iterations: oyster's ``num_iterations``.
        departures: how and why the preset departs from oyster ("" when it does not).
    """

    env_name: str
    agent_kwargs: dict[str, Any]
    algo_kwargs: dict[str, Any]
    runner_kwargs: dict[str, Any]
    env_kwargs: dict[str, Any]
    n_iterations: int = 500
    departures: str = ""

    @property
    def max_path_length(self) -> int:
        """Steps of a whole trajectory (the env's ``max_episode_steps``, checked >= 1)."""
        steps = self.env_kwargs.get("max_episode_steps")
        return check_int("env_kwargs['max_episode_steps']", steps, minimum=1)

    def copy(self) -> PearlPreset:
        """A copy whose dicts are new (their values are immutable)."""
        return dataclasses.replace(
            self,
            agent_kwargs=dict(self.agent_kwargs),
            algo_kwargs=dict(self.algo_kwargs),
            runner_kwargs=dict(self.runner_kwargs),
            env_kwargs=dict(self.env_kwargs),
        )

    def with_overrides(
        self,
        *,
        agent: Mapping[str, Any] | None = None,
        algo: Mapping[str, Any] | None = None,
        runner: Mapping[str, Any] | None = None,
    ) -> PearlPreset:
        """A copy with some settings replaced (values are checked when the objects are built).

        Args:
            agent: ``PearlAgent`` keyword arguments.
            algo: ``PEARL`` keyword arguments.
            runner: ``MetaRl`` keyword arguments except those ``build_pearl`` sets
                (``RUNNER_SET_BY_BUILD``); ``env_kwargs`` is merged into the preset's.

        Raises:
            ArgumentError: a key the object does not take (the message lists those it
                takes), or overrides that are not a mapping.
        """
        agent = _checked("agent_overrides", agent, agent_override_keys())
        algo = _checked("algo_overrides", algo, algo_override_keys())
        runner = _checked("runner_overrides", runner, runner_override_keys())
        env_kwargs = {
            **self.env_kwargs,
            **check_mapping("env_kwargs", runner.pop("env_kwargs", {})),
        }
        return dataclasses.replace(
            self,
            agent_kwargs={**self.agent_kwargs, **agent},
            algo_kwargs={**self.algo_kwargs, **algo},
            runner_kwargs={**self.runner_kwargs, **runner},
            env_kwargs=env_kwargs,
        )


#: ``MetaRl`` keywords that ``build_pearl`` sets itself (not runner overrides).
RUNNER_SET_BY_BUILD = (
    "algo",
    "agent",
    "env_name",
    "n_iterations",
    "seed",
    "device",
    "resume_from",
)


def _keywords(cls: type, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(p for p in inspect.signature(cls).parameters if p not in exclude)


def agent_override_keys() -> tuple[str, ...]:
    """The keys of ``agent_overrides``: ``PearlAgent``'s keyword arguments."""
    return _keywords(PearlAgent)


def algo_override_keys() -> tuple[str, ...]:
    """The keys of ``algo_overrides``: ``PEARL``'s keyword arguments."""
    return _keywords(PEARL)


def runner_override_keys() -> tuple[str, ...]:
    """The keys of ``runner_overrides``: ``MetaRl``'s keywords but ``RUNNER_SET_BY_BUILD``."""
    return _keywords(MetaRl, RUNNER_SET_BY_BUILD)


def _checked(
    name: str, overrides: Mapping[str, Any] | None, accepted: tuple[str, ...]
) -> dict[str, Any]:
    overrides = check_mapping(name, overrides)
    for key in overrides:
        if key not in accepted:
            raise ArgumentError(
                f"{name} has an unknown key {key!r}; it takes: {', '.join(accepted)}"
            )
    return overrides


#: Every family's preset, by name (use ``pearl_preset`` for a copy).
_PRESETS: Mapping[str, PearlPreset] = {
    name: PearlPreset(
        env_name=name,
        agent_kwargs=oyster_settings(name)["agent"],
        algo_kwargs=oyster_settings(name)["algo"],
        runner_kwargs=oyster_settings(name)["runner"],
        env_kwargs=oyster_settings(name)["env"],
        n_iterations=500,
        departures=DEPARTURES.get(name, ""),
    )
    for name in META_ENV_NAMES
}


# ---------------------------------------------------------------------- the API
def pearl_preset(name: str) -> PearlPreset:
    """A copy of the preset of the family ``name``.

    Raises:
        ArgumentError: ``name`` is not a family of ``META_ENV_NAMES`` (the message lists them).
    """
    return _PRESETS[check_choice("name", name, tuple(_PRESETS))].copy()


def _whole_paths(n_steps: int, path_length: int) -> int:
    """Steps a phase of ``n_steps`` collects: whole trajectories of ``path_length``."""
    return -(-n_steps // path_length) * path_length


def iterations_for_steps(preset: PearlPreset, n_steps: int) -> int:
    """The fewest iterations of ``preset``'s schedule whose collection reaches ``n_steps``.

    Iteration 0 collects ``n_train_tasks × num_initial_steps`` env steps, and every
    iteration ``num_tasks_sample × (num_steps_prior + num_steps_posterior +
    num_extra_rl_steps_posterior)``, each phase rounded up to whole trajectories of
    ``max_path_length`` steps (as ``MetaRl`` collects them, when no episode ends early).

    Args:
        preset: the settings (``runner_kwargs`` and ``env_kwargs["max_episode_steps"]``).
        n_steps: the budget of collected env steps.

    Returns:
        At least 1.
    """
    n_steps = check_int("n_steps", n_steps, minimum=1)
    initial, per_itr = schedule_steps(preset)
    if per_itr == 0:
        return 1
    return max(1, -(-(n_steps - initial) // per_itr))


def schedule_steps(preset: PearlPreset) -> tuple[int, int]:
    """Env steps of iteration 0's initial collection, and of every iteration's phases."""
    runner, length = preset.runner_kwargs, preset.max_path_length
    initial = runner["n_train_tasks"] * _whole_paths(runner["num_initial_steps"], length)
    phases = ("num_steps_prior", "num_steps_posterior", "num_extra_rl_steps_posterior")
    per_itr = runner["num_tasks_sample"] * sum(_whole_paths(runner[p], length) for p in phases)
    return initial, per_itr


def build_pearl(
    name: str,
    *,
    algo_overrides: Mapping[str, Any] | None = None,
    agent_overrides: Mapping[str, Any] | None = None,
    runner_overrides: Mapping[str, Any] | None = None,
    n_iterations: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    resume_from: str | Path | None = None,
) -> MetaRl:
    """The agent, algorithm and runner of the preset ``name`` (nothing is trained).

    Args:
        name: a family of ``META_ENV_NAMES``.
        algo_overrides: ``PEARL`` keyword arguments replacing the preset's; its
            ``sac_variant`` also goes to the agent unless ``agent_overrides`` sets one.
        agent_overrides: ``PearlAgent`` keyword arguments replacing the preset's.
        runner_overrides: ``MetaRl`` keyword arguments replacing the preset's (see
            ``PearlPreset.with_overrides``).
        n_iterations: iterations (None: the preset's, oyster's 500).
        seed: the run's seed.
        device: where the agent acts and trains (None: where it is built, the CPU).
        resume_from: a run directory or snapshot file for ``MetaRl`` to continue from
            (None: a fresh run).

    Returns:
        The ``MetaRl`` runner, with ``runner.agent`` and ``runner.algo``.

    Raises:
        ArgumentError: an unknown family or override key, or a bad value (named by the
            object that checks it).
    """
    preset = pearl_preset(name).with_overrides(
        agent=agent_overrides, algo=algo_overrides, runner=runner_overrides
    )
    iterations = preset.n_iterations if n_iterations is None else n_iterations
    agent_kwargs = dict(preset.agent_kwargs)
    if "sac_variant" in preset.algo_kwargs:  # the agent builds the variant's networks
        agent_kwargs.setdefault("sac_variant", preset.algo_kwargs["sac_variant"])
    return MetaRl(
        PEARL(**preset.algo_kwargs),
        PearlAgent(**agent_kwargs),
        env_name=preset.env_name,
        env_kwargs=preset.env_kwargs,
        n_iterations=iterations,
        seed=seed,
        device=device,
        resume_from=resume_from,
        **preset.runner_kwargs,
    )


def evaluate_pearl(
    runner: MetaRl,
    agent_state: Mapping[str, Any],
    *,
    itr: int = 0,
    tasks_json: Mapping[str, Any] | None = None,
    device: torch.device | None = None,
) -> tuple[list[float], np.ndarray]:
    """A trained PEARL agent on its run's test tasks, as the run's rows evaluate them.

    Draws the run's tasks again (``sample_tasks`` with the runner's seed), loads
    ``agent_state`` into the runner's agent and runs ``MetaRl.online_returns`` on the test
    tasks (``num_evals`` runs of ``num_steps_per_eval`` steps per task, the posterior from
    the ``num_exp_traj_eval``-th trajectory on), with the deterministic policy. Nothing is
    trained and no replay is allocated.

    Args:
        runner: ``build_pearl``'s runner with the run's settings (not started).
        agent_state: the snapshot's ``agent_state_dict``.
        itr: the snapshot's iteration (for the agent's eval mode).
        tasks_json: the snapshot's ``tasks``; the tasks drawn again must equal them.
        device: where the agent acts.

    Returns:
        ``MetaRl.online_returns``: per test task the last trajectory's return (mean over
        runs), and the mean return per trajectory index.

    Raises:
        SnapshotError: the tasks drawn again differ from the snapshot's.
    """
    from tdrl.envs.meta import task_to_json
    from tdrl.logging.files import SnapshotError
    from tdrl.runners.startup import place_agent

    try:
        runner.draw_tasks()
        test_tasks = runner.eval_tasks
        if tasks_json is not None and [task_to_json(t) for t in test_tasks] != list(
            tasks_json.get("eval_tasks", [])
        ):
            raise SnapshotError(
                "the test tasks drawn again from the run's seed differ from its snapshot's "
                "(another env family version or settings)"
            )
        agent = runner.agent
        agent.initialize(runner.sampler.observation_spec, runner.sampler.action_spec)
        agent.load_state_dict(dict(agent_state))
        place_agent(agent, device)
        agent.eval_mode(itr)
        return runner.online_returns(test_tasks)
    finally:
        for sampler in (runner.sampler, runner.eval_sampler):
            sampler.close()


def evaluate_pearl_run(
    params: Mapping[str, Any], snap: Mapping[str, Any], *, device: torch.device | None = None
) -> dict[str, float]:
    """``evaluate_pearl`` of a ``tdrl train --algo pearl`` run, from its params.json and snapshot.

    The tasks are the run's (drawn again from its seed), so no seed, episode count or
    env count of the caller applies.

    Returns:
        ``Tasks``, ``Episodes`` (runs over all tasks), the statistics of the per-task
        returns (``ReturnAverage``, ``ReturnStd``, ...), ``AverageReturn_all_test_tasks``
        and ``AverageReturn_rollout_{k}``, named as the run's rows.

    Raises:
        ValueError: params.json lacks the run's settings.
        SnapshotError: the tasks drawn again differ from the snapshot's.
    """
    from tdrl.logging.table import misc_stats

    for key in ("runner_kwargs", "n_iterations", "seed"):
        if key not in params:
            raise ValueError(f"params.json of a PEARL run has no {key}: not a tdrl train run")
    runner = build_pearl(
        params["env"],
        algo_overrides=dict(params.get("algo_kwargs") or {}),
        runner_overrides=dict(params["runner_kwargs"] or {}),
        n_iterations=int(params["n_iterations"]),
        seed=int(params["seed"]),
    )
    final, online = evaluate_pearl(
        runner,
        snap["agent_state_dict"],
        itr=int(snap.get("itr", 0)),
        tasks_json=snap.get("tasks"),
        device=device,
    )
    result = {"Tasks": float(len(final)), "Episodes": float(len(final) * runner.num_evals)}
    result |= {f"Return{k}": v for k, v in misc_stats(final).items()}
    result["AverageReturn_all_test_tasks"] = float(np.mean(final))
    return result | {f"AverageReturn_rollout_{k}": float(v) for k, v in enumerate(online)}
