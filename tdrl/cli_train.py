"""The ``tdrl train`` command: its checks, presets and runs of every family.

``train`` builds a ``SerialSampler``, the agent and the algorithm for ``--algo`` and
``--env`` and runs a ``MinibatchRl`` (``MinibatchRlEval`` with ``--eval-n-envs``);
``train_pearl`` builds PEARL's meta-RL run from oyster's preset for a task family
(``tdrl.runners.meta_presets``). ``tdrl.cli`` parses the options and calls them; this
module imports torch, gymnasium and the roles only when a command runs, so that
``import tdrl.cli`` stays light. The algorithm tables and what each algorithm is built
with are ``tdrl.cli_build``'s (shared with ``tdrl eval``). The module
is over 450 lines because it checks and applies every option of both commands (presets,
sampler, runner, the PEARL family settings) in one place.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from tdrl.cli_build import (
    DEFAULT_BATCH,
    DEFAULT_N_STEPS,
    META_ALGOS,
    META_ENVS,
    PG_ALGOS,
    _algo_kwargs,
    _env_settings,
    _flag_kwargs,
    _make_algo_agent,
)
from tdrl.utils.checks import ArgumentError, check_int

#: ``--sampler`` choices and the samplers they build (``tdrl.samplers``).
SAMPLERS = ("serial", "cpu", "gpu", "alternating", "ray")
_SAMPLER_CLASSES = {
    "serial": "SerialSampler",
    "cpu": "CpuSampler",
    "gpu": "GpuSampler",
    "alternating": "AlternatingSampler",
    "ray": "RaySampler",
}
#: ``--runner`` choices and their runners without and with offline evaluation.
RUNNERS = ("minibatch", "async", "sync")
_RUNNER_CLASSES = {
    "minibatch": ("MinibatchRl", "MinibatchRlEval"),
    "async": ("AsyncRl", "AsyncRlEval"),
    "sync": ("SyncRl", "SyncRlEval"),
}
#: Sampler arguments other ``tdrl train`` options set (``--sampler-arg`` may not).
_SAMPLER_SET_BY_OPTIONS = {
    **{"env_fn": "--env", "env_kwargs": "--env", "traj_info_cls": "--env"},
    **{"batch_T": "--batch-T", "batch_B": "--batch-B", "n_workers": "--n-workers"},
    **{"eval_env_kwargs": "--env", "eval_n_envs": "--eval-n-envs"},
    **{"eval_max_steps": "--eval-max-steps", "eval_max_trajectories": "--eval-max-trajectories"},
}

#: Runner arguments other ``tdrl train`` options set (``--runner-arg`` may not).
_RUNNER_SET_BY_OPTIONS = (
    *("algo", "agent", "sampler", "n_steps", "seed", "log_interval_steps"),
    *("progress_bar", "resume_from", "device", "cuda"),
)


def _preset(args: argparse.Namespace) -> Any:
    """The ``Preset`` of ``--preset`` (default: ``--algo``/``--env``'s), announced."""
    from tdrl.presets import resolve_preset

    preset = resolve_preset(getattr(args, "preset", None), args.algo, args.env)
    if preset is not None:
        print(f"tdrl train: preset {preset.name} ({preset.source}); --preset none for defaults")
    return preset


def _runner_kwargs(runner_cls: type, pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """``--runner-arg`` pairs as keyword arguments of the runner (``MinibatchRl(Eval)``).

    Raises:
        ArgumentError: A name given twice, one the runner does not take, or one another
            option sets (the message names that option).
    """
    import inspect

    known = [p for p in inspect.signature(runner_cls).parameters if p not in _RUNNER_SET_BY_OPTIONS]
    for key, _ in pairs:
        if key in _RUNNER_SET_BY_OPTIONS:
            option = "--" + key.replace("_", "-").replace("resume-from", "resume")
            option = option.replace("--cuda", "--device")
            raise ArgumentError(f"--runner-arg {key}: set it with {option}, not --runner-arg")
    return _flag_kwargs("--runner-arg", pairs, known, runner_cls.__name__)


def _sampler(args: argparse.Namespace, preset: Any) -> tuple[type, dict[str, Any]]:
    """The sampler class of ``--sampler`` and its arguments (workers, ``--sampler-arg``).

    Raises:
        ArgumentError: ``--n-workers`` with the serial sampler, or a ``--sampler-arg`` the
            sampler does not take or another option sets.
    """
    import inspect

    from tdrl import samplers

    args.sampler = getattr(args, "sampler", None) or (preset.sampler if preset else "serial")
    cls = getattr(samplers, _SAMPLER_CLASSES[args.sampler])
    kwargs: dict[str, Any] = {**(preset.sampler_kwargs if preset else {})}
    n_workers = getattr(args, "n_workers", None)
    if n_workers is None and preset is not None and args.sampler == preset.sampler:
        n_workers = preset.n_workers
    if n_workers is not None:
        if args.sampler == "serial":
            raise ArgumentError(
                "--n-workers needs a parallel --sampler (cpu, gpu, alternating, ray)"
            )
        kwargs["n_workers"] = n_workers
    pairs = getattr(args, "sampler_arg", [])
    for key, _ in pairs:
        if key in _SAMPLER_SET_BY_OPTIONS:
            option = _SAMPLER_SET_BY_OPTIONS[key]
            raise ArgumentError(f"--sampler-arg {key}: set it with {option}, not --sampler-arg")
    known = [p for p in inspect.signature(cls).parameters if p not in _SAMPLER_SET_BY_OPTIONS]
    return cls, kwargs | _flag_kwargs("--sampler-arg", pairs, known, cls.__name__)


def _say_if_no_update(args: argparse.Namespace, algo: Any) -> None:
    """One line on stderr when the run will end before the algorithm's first update."""
    replay = getattr(algo, "replay", None)
    start = getattr(replay, "min_steps_learn", 0)
    if replay is not None and start >= args.n_steps:
        print(
            f"tdrl train: note: --algo {args.algo} makes no update in --n-steps {args.n_steps}: "
            f"it collects min_steps_learn={start} steps first (pass more --n-steps or "
            f"--algo-arg min_steps_learn=N)"
        )


def _check_train_args(args: argparse.Namespace) -> None:
    """Refuses numeric ``train`` options out of range, naming the flag.

    The parser already refuses them; this covers a ``Namespace`` built by other code (and
    turns whole floats such as ``1e5`` into ints). ``--device`` must be ``cpu``, ``cuda``
    or ``cuda:N``, and a CUDA device that torch sees.
    """
    from tdrl.utils.device import check_device

    for flag, minimum in _TRAIN_COUNTS.items():
        attr = flag[2:].replace("-", "_")
        value = getattr(args, attr)
        if value is None and flag in _NONE_DEFAULTS:
            continue  # None: the default
        setattr(args, attr, check_int(flag, value, minimum=minimum))
    device = check_device("--device", args.device)
    if device is None or device.type not in ("cpu", "cuda"):
        raise ArgumentError(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")


#: The integral ``train`` options whose default is None (filled in per algorithm).
_NONE_DEFAULTS = (
    *("--n-steps", "--batch-T", "--batch-B", "--eval-n-envs", "--eval-max-trajectories"),
    "--eval-max-steps",
)

#: The integral ``train`` options and their smallest values.
_TRAIN_COUNTS = {
    "--n-steps": 1,
    "--run-ID": 0,
    "--seed": 0,
    "--batch-T": 1,
    "--batch-B": 1,
    "--log-interval-steps": 1,
    "--eval-n-envs": 0,
    "--eval-max-steps": 1,
    "--eval-max-trajectories": 1,
    "--torch-threads": 1,
}


def train(args: argparse.Namespace) -> dict[str, float]:
    """Runs ``tdrl train``: builds the sampler, agent, algorithm and runner, and trains.

    ``--algo pearl`` (or a meta-RL ``--env``) goes to ``train_pearl``.

    Args:
        args: The parsed ``train`` options; ``n_steps``, ``batch_T`` and ``batch_B`` are
            filled in with the algorithm's defaults when not given.

    Returns:
        The last logged row.

    Raises:
        ValueError: A bad option or hyperparameter, an ``--algo-arg`` the algorithm does
            not take, an algorithm that does not fit the env's action space, or an unknown
            env (the message names it).
        TypeError: A hyperparameter of the wrong type (an ``ArgumentError``, also a
            ``ValueError``).
        OSError: The log directory cannot be written, or ``--resume`` finds no snapshot.
    """
    _check_train_args(args)
    if args.algo in META_ALGOS or args.env in META_ENVS:
        return train_pearl(args)
    import torch

    from tdrl import runners

    preset = _preset(args)
    args.n_steps = args.n_steps or (preset and preset.n_steps) or DEFAULT_N_STEPS
    torch.set_num_threads(args.torch_threads)
    algo_kwargs = {**(preset.algo_kwargs if preset else {})}
    algo_kwargs |= _algo_kwargs(args.algo, args.algo_arg)
    agent_kwargs = {**(preset.agent_kwargs if preset else {})}
    agent_kwargs |= dict(getattr(args, "agent_arg", []))
    if preset is not None and preset.recurrent:  # saved in params.json as run (tdrl eval)
        args.recurrent = True
    model_args = dict(getattr(args, "model_arg", []))
    if model_args:  # --model-arg: entries of the agent's model_kwargs
        agent_kwargs["model_kwargs"] = {**(agent_kwargs.get("model_kwargs") or {}), **model_args}
    algo, agent = _make_algo_agent(
        args.algo,
        algo_kwargs,
        args.env,
        recurrent=getattr(args, "recurrent", False),
        agent_kwargs=agent_kwargs,
    )
    default_T, default_B = DEFAULT_BATCH[args.algo]
    if preset is not None:
        default_T, default_B = preset.batch_T or default_T, preset.batch_B or default_B
    args.batch_T = default_T if args.batch_T is None else args.batch_T
    args.batch_B = default_B if args.batch_B is None else args.batch_B
    if args.eval_n_envs is None:
        args.eval_n_envs = preset.eval_n_envs if preset is not None else 0
        if preset is not None and args.eval_max_trajectories is None and args.eval_n_envs:
            args.eval_max_trajectories = preset.eval_max_trajectories
    interval = getattr(algo, "store_rnn_state_interval", 0)  # R2D1: whole chunks per batch
    if interval and args.batch_T % interval:
        raise ValueError(
            f"--batch-T {args.batch_T} must be a multiple of R2D1's store_rnn_state_interval "
            f"({interval}); pass --batch-T {interval} or set --algo-arg store_rnn_state_interval"
        )
    if args.eval_max_steps is None:
        args.eval_max_steps = (preset and preset.eval_max_steps) or 10_000
    env_fn, env_kwargs, eval_kwargs, traj_info_cls = _env_settings(
        args.env, dict(preset.env_kwargs) if preset else None
    )
    sampler_cls, sampler_kwargs = _sampler(args, preset)
    sampler = sampler_cls(
        env_fn,
        env_kwargs,
        batch_T=args.batch_T,
        batch_B=args.batch_B,
        eval_n_envs=args.eval_n_envs,
        eval_env_kwargs=eval_kwargs,
        eval_max_steps=args.eval_max_steps,
        eval_max_trajectories=args.eval_max_trajectories,
        traj_info_cls=traj_info_cls,
        **sampler_kwargs,
    )
    args.runner = getattr(args, "runner", None) or (preset.runner if preset else "minibatch")
    runner_cls = getattr(runners, _RUNNER_CLASSES[args.runner][args.eval_n_envs > 0])
    runner_kwargs = {**(preset.runner_kwargs if preset else {})}
    runner_kwargs |= _runner_kwargs(runner_cls, getattr(args, "runner_arg", []))
    if args.runner == "async" and args.algo in PG_ALGOS:
        raise ArgumentError(
            f"--runner async needs a replay algorithm (dqn, catdqn, rainbow, r2d1, ddpg, td3, "
            f"sac, sac_v); --algo {args.algo} learns from each batch once"
        )
    placement = {"device": args.device}
    if args.runner == "sync":  # one GPU per rank, or gloo on the CPU
        placement = {"cuda": args.device != "cpu"}
        if "world_size" not in runner_kwargs and "WORLD_SIZE" not in os.environ:
            raise ArgumentError(
                "--runner sync needs --runner-arg world_size=N (its ranks), or torchrun"
            )
    run_dir = f"{args.log_dir}/run_{args.run_ID}"
    _say_if_no_update(args, algo)
    runner = runner_cls(
        algo,
        agent,
        sampler,
        n_steps=args.n_steps,
        seed=args.seed,
        log_interval_steps=args.log_interval_steps,
        progress_bar=False if args.no_progress else None,
        resume_from=run_dir if args.resume else None,
        **placement,
        **runner_kwargs,
    )
    config = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
    config["algo_kwargs"] = algo_kwargs
    config["agent_kwargs"] = agent_kwargs
    config["sampler_kwargs"] = sampler_kwargs
    config["env_kwargs"] = {k: v for k, v in env_kwargs.items() if k not in ("id", "game")}
    config["runner_kwargs"] = runner_kwargs
    config["preset"] = None if preset is None else preset.settings()
    return _log_and_train(args, runner.train, config, echo=args.no_progress)


#: Settings in ``params.json`` that differ between runs of one variant (not in
#: ``variant.json``).
_NOT_VARIANT = (
    *("seed", "run_ID", "log_dir", "resume", "no_progress", "torch_threads", "device"),
    *("snapshot_mode", "tensorboard", "command"),
)

#: ``train`` options that are not written to ``params.json`` as they are.
_NOT_CONFIG = ("algo_arg", "agent_arg", "model_arg", "sampler_arg", "runner_arg", "traceback")

#: The options that do not apply to ``--algo pearl``, with their defaults.
NOT_FOR_PEARL: dict[str, Any] = {
    "--batch-T": None,
    "--batch-B": None,
    "--log-interval-steps": 10_000,
    "--eval-n-envs": None,
    "--eval-max-steps": None,
    "--eval-max-trajectories": None,
    "--recurrent": False,
    "--agent-arg": [],
    "--model-arg": [],
    "--sampler": None,
    "--n-workers": None,
    "--sampler-arg": [],
    "--runner": None,
}


def train_pearl(args: argparse.Namespace) -> dict[str, float]:
    """Runs ``tdrl train --algo pearl``: oyster's preset for ``--env``, with the overrides.

    ``--n-steps`` sets the iterations (``iterations_for_steps``; without it, the preset's),
    ``--algo-arg`` the ``PEARL`` and ``--runner-arg`` the ``MetaRl`` settings; the
    options in ``NOT_FOR_PEARL`` are refused unless left at their defaults.

    Args:
        args: The parsed ``train`` options (checked by ``train``).

    Returns:
        The last logged row.

    Raises:
        ValueError: ``--env`` not a meta-RL family, or one with another ``--algo``; an
            option that does not apply; an override the objects do not take, or a bad
            value (an ``ArgumentError``, also a ``TypeError``).
        OSError: The log directory cannot be written, or ``--resume`` finds no snapshot.
    """
    import dataclasses

    import torch

    from tdrl.runners.meta_presets import (
        build_pearl,
        iterations_for_steps,
        pearl_preset,
        runner_override_keys,
        schedule_steps,
    )

    if args.algo not in META_ALGOS:
        raise ArgumentError(f"--env {args.env} is a meta-RL task family: it needs --algo pearl")
    if args.env not in META_ENVS:
        raise ArgumentError(
            f"--algo pearl needs --env to be a meta-RL task family "
            f"({', '.join(META_ENVS)}), got {args.env!r}"
        )
    preset_name = getattr(args, "preset", None)
    if preset_name not in (None, f"pearl-{args.env}"):
        raise ArgumentError(
            f"--algo pearl --env {args.env} takes --preset pearl-{args.env} (oyster's config "
            f"for the family, the default), not {preset_name}"
        )
    for flag, default in NOT_FOR_PEARL.items():
        if getattr(args, flag[2:].replace("-", "_"), default) != default:
            raise ArgumentError(
                f"{flag} does not apply to --algo pearl (MetaRl collects whole trajectories "
                "task by task, logs once per iteration and evaluates on its test tasks)"
            )
    algo_kwargs = _algo_kwargs(args.algo, args.algo_arg)
    runner_kwargs = _flag_kwargs(
        "--runner-arg", getattr(args, "runner_arg", []), runner_override_keys(), "MetaRl"
    )
    preset = pearl_preset(args.env).with_overrides(algo=algo_kwargs, runner=runner_kwargs)
    n_iterations = preset.n_iterations
    if args.n_steps is not None:
        n_iterations = iterations_for_steps(preset, args.n_steps)
        first = sum(schedule_steps(preset))
        if first > args.n_steps:
            print(
                f"tdrl train: note: --algo pearl's first iteration collects {first} steps, "
                f"more than --n-steps {args.n_steps} (n_train_tasks x num_initial_steps, then "
                "the iteration's phases; lower them with --runner-arg)"
            )
    torch.set_num_threads(args.torch_threads)
    runner = build_pearl(
        args.env,
        algo_overrides=algo_kwargs,
        runner_overrides=runner_kwargs,
        n_iterations=n_iterations,
        seed=args.seed,
        device=args.device,
        resume_from=f"{args.log_dir}/run_{args.run_ID}" if args.resume else None,
    )
    unused = {flag[2:].replace("-", "_") for flag in NOT_FOR_PEARL}
    config = {k: v for k, v in vars(args).items() if k not in (*_NOT_CONFIG, *unused)}
    config |= {"algo_kwargs": algo_kwargs, "runner_kwargs": runner_kwargs}
    config |= {"n_iterations": n_iterations, "preset": dataclasses.asdict(preset)}
    return _log_and_train(args, runner.train, config, echo=True)


def _log_and_train(
    args: argparse.Namespace,
    train_fn: Callable[[], dict[str, float]],
    config: dict[str, Any],
    *,
    echo: bool,
) -> dict[str, float]:
    """Runs ``train_fn`` inside the run's ``logger_context``; returns the last row."""
    from tdrl.logging import logger_context

    t0 = time.time()
    variant = {k: v for k, v in config.items() if k not in _NOT_VARIANT}
    with logger_context(
        args.log_dir,
        args.run_ID,
        f"{args.algo}_{args.env}",
        config,
        snapshot_mode=args.snapshot_mode,
        use_tensorboard=args.tensorboard,
        resume=args.resume,
        echo=echo,
        variant=variant,
    ) as logger:
        row = train_fn()
        ret = float(row.get("ReturnAverage", float("nan")))
        steps = row.get("Diagnostics/CumSteps", 0)
        got = (
            f"ReturnAverage {ret:.1f}" if ret == ret else "no episode finished (ReturnAverage nan)"
        )
        logger.log(
            f"done in {time.time() - t0:.1f} s: {got} after {steps:.0f} steps;"
            f" logs in {logger.run_dir}",
            echo=True,
        )
    return row
