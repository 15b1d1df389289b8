"""The ``tdrl`` command line: ``tdrl train --algo ppo --env CartPole-v1 ...``.

``tdrl launch SCRIPT --grid KEY=V1,V2 ...`` runs a grid of variants of a launchable script
over the machine's run slots (see ``docs/launching.md``).

Every algorithm that tdrl implements gets an entry in ``ALGOS``; its hyperparameters
default to the algorithm's own (rlpyt's) defaults and any of them can be set with
``--algo-arg NAME=VALUE``.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tdrl.utils.checks import check_int, check_positive_int

if TYPE_CHECKING:  # the commands import torch and the roles only when they run
    from tdrl.agents import Agent
    from tdrl.algos import Algorithm

PG_ALGOS = ("a2c", "ppo")
DQN_ALGOS = ("dqn", "catdqn", "rainbow")
QPG_ALGOS = ("ddpg", "td3", "sac", "sac_v")
ALGOS = PG_ALGOS + DQN_ALGOS + QPG_ALGOS
#: Sampler shape when --batch-T/--batch-B are not given.
DEFAULT_BATCH = {
    "a2c": (128, 8),
    "ppo": (128, 8),
    "dqn": (4, 8),
    "catdqn": (4, 8),
    "rainbow": (4, 8),
    "ddpg": (100, 1),
    "td3": (100, 1),
    "sac": (100, 1),
    "sac_v": (100, 1),
}


def _algo_arg(text: str) -> tuple[str, Any]:
    """``--algo-arg NAME=VALUE`` as ``(name, value)``, the value a Python literal if it is one."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--algo-arg expects NAME=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    return name.strip(), parsed


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``tdrl`` command and its ``train`` and ``launch`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="tdrl", description="tdrl: rlpyt's RL algorithms on TorchRL and TensorDict."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train",
        help="train an agent on a gymnasium environment",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train an agent, logging progress.csv/params.json/debug.log and "
        "snapshots to LOG_DIR/run_RUN_ID.",
    )
    train.add_argument("--algo", required=True, choices=ALGOS, help="algorithm")
    train.add_argument(
        "--env", required=True, help="gymnasium id, or atari:GAME for tdrl's AtariEnv"
    )
    train.add_argument("--n-steps", type=int, default=100_000, help="environment steps")
    train.add_argument("--log-dir", default="data/tdrl", help="experiment directory")
    train.add_argument("--run-ID", type=int, default=0, help="run number (run_<ID> folder)")
    train.add_argument("--seed", type=int, default=0, help="random seed")
    train.add_argument(
        "--batch-T", type=int, default=None, help="time steps per batch (PG 128, DQN 4)"
    )
    train.add_argument("--batch-B", type=int, default=None, help="environments per batch (8)")
    train.add_argument("--log-interval-steps", type=int, default=10_000, help="steps per log row")
    train.add_argument(
        "--eval-n-envs", type=int, default=0, help="offline eval envs (0: online stats)"
    )
    train.add_argument(
        "--eval-max-steps", type=int, default=10_000, help="env steps per evaluation"
    )
    train.add_argument(
        "--eval-max-trajectories", type=int, default=None, help="episodes per evaluation"
    )
    train.add_argument(
        "--snapshot-mode", default="last", choices=("none", "last", "all", "gap", "last+gap")
    )
    train.add_argument("--resume", action="store_true", help="continue the run in LOG_DIR/run_ID")
    train.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument(
        "--algo-arg",
        type=_algo_arg,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set an algorithm hyperparameter, e.g. --algo-arg learning_rate=3e-4 (repeatable)",
    )
    train.add_argument(
        "--torch-threads", type=int, default=1, help="torch intra-op threads (1 is fastest here)"
    )
    _add_launch_parser(sub)
    return parser


def _grid_arg(text: str) -> tuple[str, list[str]]:
    """``--grid KEY=V1,V2`` as ``(key, [v1, v2])``."""
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values:
        raise argparse.ArgumentTypeError(f"--grid expects KEY=V1,V2,..., got {text!r}")
    return key.strip(), values.split(",")


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _add_launch_parser(sub: Any) -> None:
    """Adds the ``launch`` subcommand to the subparsers ``sub``."""
    launch = sub.add_parser(
        "launch",
        help="run a grid of variants of a launchable script over the machine's run slots",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Run every variant of the --grid options RUNS_PER_SETTING times, each "
        "run as 'python SCRIPT SLOT_AFFINITY_CODE LOG_DIR RUN_ID [ARGS...]', at most one "
        "per run slot at once. Arguments after '--' go to every run. Logs go to "
        "LOG_ROOT/TITLE/<variant dirs>/run_<RUN_ID>. Exits 1 if a run failed.",
    )
    launch.add_argument("script", help="the launchable script (see docs/launching.md)")
    launch.add_argument(
        "--grid",
        type=_grid_arg,
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a grid level: config key (dotted for nested) and its values, e.g. "
        "--grid algo.learning_rate=1e-3,3e-4 (repeatable; levels are crossed)",
    )
    launch.add_argument("--runs-per-setting", type=int, default=1, help="runs of each variant")
    launch.add_argument("--title", default=None, help="experiment name; None: the script's name")
    launch.add_argument("--log-root", default="data", help="directory of experiment dirs")
    hw = launch.add_argument_group("hardware (see tdrl.launch.make_affinity)")
    hw.add_argument(
        "--n-cpu-core",
        type=int,
        default=_available_cpus(),
        help="cores to use, numbered from 0 (the default: all available here)",
    )
    hw.add_argument("--n-gpu", type=int, default=0, help="GPUs to use")
    hw.add_argument("--cpu-per-run", type=int, default=1, help="cores per run (no GPU)")
    hw.add_argument("--gpu-per-run", type=int, default=1, help="GPUs per run")
    hw.add_argument("--contexts-per-gpu", type=int, default=1, help="runs sharing a GPU")
    hw.add_argument("--cpu-per-worker", type=int, default=1, help="cores per sampler worker")
    hw.add_argument("--cpu-reserved", type=int, default=0, help="cores per run off the workers")
    hw.add_argument("--hyperthread-offset", type=int, default=0, help="0: no hyperthreads")
    hw.add_argument("--async-sample", action="store_true", help="asynchronous runs")
    hw.add_argument("--alternating", action="store_true", help="alternating sampler")
    hw.add_argument("--no-set-affinity", action="store_true", help="do not pin runs to their CPUs")
    hw.add_argument(
        "--affinity-code", default=None, help="an affinity code replacing the options above"
    )
    launch.add_argument("--python", default=None, help="interpreter of the runs; None: this one")
    launch.add_argument(
        "--kill-timeout", type=float, default=10.0, help="seconds from SIGTERM to SIGKILL"
    )


def _grid_value(text: str) -> Any:
    """A grid value as a Python literal, or the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def launch(args: argparse.Namespace, script_args: Sequence[str] = ()) -> int:
    """Runs ``tdrl launch``.

    Args:
        args: The parsed ``launch`` options.
        script_args: Arguments for every run (what followed ``--``).

    Returns:
        0 if every run succeeded, 1 if one failed.

    Raises:
        ValueError: Bad hardware options or a ``--grid`` key given twice.
        FileNotFoundError: The script does not exist.
    """
    from pathlib import Path

    from tdrl.launch import VariantLevel, encode_affinity, make_variants, run_experiments

    code = args.affinity_code or encode_affinity(
        n_cpu_core=args.n_cpu_core,
        n_gpu=args.n_gpu,
        contexts_per_gpu=args.contexts_per_gpu,
        gpu_per_run=args.gpu_per_run,
        cpu_per_run=args.cpu_per_run,
        cpu_per_worker=args.cpu_per_worker,
        cpu_reserved=args.cpu_reserved,
        hyperthread_offset=args.hyperthread_offset,
        async_sample=args.async_sample,
        alternating=args.alternating,
        set_affinity=not args.no_set_affinity,
    )
    keys = [key for key, _ in args.grid]
    if len(set(keys)) != len(keys):
        raise ValueError(f"--grid: a key is given twice in {keys}")
    levels = [
        VariantLevel(
            keys=[key],
            values=[[_grid_value(v)] for v in values],
            dir_names=[f"{key.split('.')[-1]}_{v.replace('/', '_')}" for v in values],
        )
        for key, values in args.grid
    ]
    variants, log_dirs = make_variants(*levels)
    results = run_experiments(
        args.script,
        code,
        args.title or Path(args.script).stem,
        args.runs_per_setting,
        variants,
        log_dirs,
        log_root=args.log_root,
        common_args=script_args,
        python_executable=args.python,
        kill_timeout=args.kill_timeout,
    )
    return 0 if all(r.ok for r in results) else 1


def _make_algo_agent(name: str, kwargs: dict[str, Any], env_id: str) -> tuple[Algorithm, Agent]:
    """The algorithm ``name`` with hyperparameters ``kwargs`` and an agent for the env."""
    import gymnasium as gym

    from tdrl.agents import (
        CategoricalPgAgent,
        DdpgAgent,
        DqnAgent,
        GaussianPgAgent,
        SacAgent,
        SacVAgent,
        Td3Agent,
    )
    from tdrl.algos import (
        A2C,
        DDPG,
        DQN,
        PPO,
        SAC,
        SAC_V,
        TD3,
        CategoricalDQN,
        rainbow_minus_noisy,
    )

    env_fn, env_kwargs = _env_fn(env_id)
    env = env_fn(**env_kwargs)
    space = env.action_space
    env.close()
    try:
        if name in PG_ALGOS:
            algo = {"a2c": A2C, "ppo": PPO}[name](**kwargs)
            if isinstance(space, gym.spaces.Discrete):
                return algo, CategoricalPgAgent()
            if isinstance(space, gym.spaces.Box):
                return algo, GaussianPgAgent()
            raise SystemExit(f"tdrl train: no policy-gradient agent for action space {space}")
        if name in QPG_ALGOS:
            if not isinstance(space, gym.spaces.Box):
                raise SystemExit(f"tdrl train: {name} needs a Box action space, got {space}")
            if name == "ddpg":
                return DDPG(**kwargs), DdpgAgent()
            if name == "td3":
                return TD3(**kwargs), Td3Agent()
            if name == "sac_v":
                return SAC_V(**kwargs), SacVAgent()
            return SAC(**kwargs), SacAgent()
        if not isinstance(space, gym.spaces.Discrete):
            raise SystemExit(f"tdrl train: {name} needs a Discrete action space, got {space}")
        if name == "rainbow":
            return rainbow_minus_noisy(algo_kwargs=kwargs)
        if name == "catdqn":
            return CategoricalDQN(**kwargs), DqnAgent(n_atoms=51)
        return DQN(**kwargs), DqnAgent()
    except TypeError as e:
        raise SystemExit(f"tdrl train: --algo-arg not accepted by {name}: {e}") from e


def _env_fn(env_id: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """``(env_fn, env_kwargs)`` for a gymnasium id or ``atari:GAME``."""
    from tdrl.envs import make_atari_env, make_gym_env

    if env_id.startswith("atari:"):
        return make_atari_env, {"game": env_id.split(":", 1)[1]}
    return make_gym_env, {"id": env_id}


def _check_train_args(args: argparse.Namespace) -> None:
    """Refuses numeric ``train`` options out of range, naming the flag."""
    check_positive_int("--n-steps", args.n_steps)
    check_positive_int("--log-interval-steps", args.log_interval_steps)
    check_positive_int("--torch-threads", args.torch_threads)
    check_int("--eval-n-envs", args.eval_n_envs, minimum=0)


def train(args: argparse.Namespace) -> dict[str, float]:
    """Runs ``tdrl train``: builds the sampler, agent, algorithm and runner, and trains.

    Args:
        args: The parsed ``train`` options; ``batch_T`` and ``batch_B`` are filled in with
            the algorithm's defaults when not given.

    Returns:
        The last logged row.

    Raises:
        ValueError: A bad option or hyperparameter (the message names it).
        SystemExit: An algorithm that does not fit the env's action space, or an
            ``--algo-arg`` the algorithm does not take.
    """
    import torch

    from tdrl.envs import AtariTrajInfo, TrajInfo
    from tdrl.logging import logger_context
    from tdrl.runners import MinibatchRl, MinibatchRlEval
    from tdrl.samplers import SerialSampler

    _check_train_args(args)
    torch.set_num_threads(args.torch_threads)
    algo_kwargs = dict(args.algo_arg)
    algo, agent = _make_algo_agent(args.algo, algo_kwargs, args.env)
    env_fn, env_kwargs = _env_fn(args.env)
    default_T, default_B = DEFAULT_BATCH[args.algo]
    args.batch_T = args.batch_T or default_T
    args.batch_B = args.batch_B or default_B
    eval_kwargs = dict(env_kwargs)
    traj_info_cls = TrajInfo
    if args.env.startswith("atari:"):
        eval_kwargs["episodic_lives"] = False
        traj_info_cls = AtariTrajInfo
    sampler = SerialSampler(
        env_fn,
        env_kwargs,
        batch_T=args.batch_T,
        batch_B=args.batch_B,
        eval_n_envs=args.eval_n_envs,
        eval_env_kwargs=eval_kwargs,
        eval_max_steps=args.eval_max_steps,
        eval_max_trajectories=args.eval_max_trajectories,
        traj_info_cls=traj_info_cls,
    )
    runner_cls = MinibatchRlEval if args.eval_n_envs > 0 else MinibatchRl
    run_dir = f"{args.log_dir}/run_{args.run_ID}"
    runner = runner_cls(
        algo,
        agent,
        sampler,
        n_steps=args.n_steps,
        seed=args.seed,
        log_interval_steps=args.log_interval_steps,
        progress_bar=False if args.no_progress else None,
        resume_from=run_dir if args.resume else None,
    )
    config = {k: v for k, v in vars(args).items() if k != "algo_arg"}
    config["algo_kwargs"] = algo_kwargs
    t0 = time.time()
    with logger_context(
        args.log_dir,
        args.run_ID,
        f"{args.algo}_{args.env}",
        config,
        snapshot_mode=args.snapshot_mode,
        use_tensorboard=args.tensorboard,
        resume=args.resume,
        echo=args.no_progress,
    ) as logger:
        row = runner.train()
        ret = row.get("ReturnAverage", float("nan"))
        steps = row.get("Diagnostics/CumSteps", 0)
        logger.log(
            f"done in {time.time() - t0:.1f} s: ReturnAverage {ret:.1f} after {steps:.0f} steps;"
            f" logs in {logger.run_dir}",
            echo=True,
        )
    return row


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``tdrl`` command line.

    Args:
        argv: The arguments after ``tdrl``; None reads ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 1 if a launched run failed, 2 on bad input, 130
        when a launch was interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    script_args: list[str] = []
    if argv[:1] == ["launch"] and "--" in argv:  # what follows "--" goes to every run
        cut = argv.index("--")
        argv, script_args = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    if args.command == "launch":
        try:
            return launch(args, script_args)
        except KeyboardInterrupt:
            return 130
        except (ValueError, FileNotFoundError) as e:
            print(f"tdrl launch: error: {e}", file=sys.stderr)
            return 2
    if args.command == "train":
        try:
            train(args)
        except (ValueError, TypeError, FileExistsError, ImportError) as e:
            print(f"tdrl train: error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
