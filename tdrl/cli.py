"""The ``tdrl`` command line: ``tdrl train --algo ppo --env CartPole-v1 ...``.

``tdrl launch SCRIPT --grid KEY=V1,V2 ...`` runs a grid of variants of a launchable script
over the machine's run slots (see ``docs/launching.md``).

Every algorithm that tdrl implements gets an entry in ``ALGOS``; its hyperparameters
default to the algorithm's own (rlpyt's) defaults and any of them can be set with
``--algo-arg NAME=VALUE``. ``--device cuda`` (or ``cuda:N``) trains and acts on a GPU; the
envs step on the CPU.

Bad input is refused before anything runs, in one line that names the option and what
was expected (``tdrl train: error: argument --batch-B: must be a positive int, got 0``),
with exit status 2 and no traceback (``--traceback`` shows one). Integral options and
hyperparameters accept whole-number floats as rlpyt configs write them (``--n-steps 1e6``,
``--algo-arg replay_size=1e6``); NaN and infinities are refused everywhere.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tdrl.launch.command import add_launch_parser, launch
from tdrl.launch.config import int_flag
from tdrl.utils.checks import ArgumentError, check_int

if TYPE_CHECKING:  # the commands import torch and the roles only when they run
    from tdrl.agents import Agent
    from tdrl.algos import Algorithm

PG_ALGOS = ("a2c", "ppo")
DQN_ALGOS = ("dqn", "catdqn", "rainbow", "r2d1")
QPG_ALGOS = ("ddpg", "td3", "sac", "sac_v")
ALGOS = PG_ALGOS + DQN_ALGOS + QPG_ALGOS
#: Sampler shape when --batch-T/--batch-B are not given.
DEFAULT_BATCH = {
    "a2c": (128, 8),
    "ppo": (128, 8),
    "dqn": (4, 8),
    "catdqn": (4, 8),
    "rainbow": (4, 8),
    "r2d1": (40, 8),  # a multiple of R2D1's store_rnn_state_interval
    "ddpg": (100, 1),
    "td3": (100, 1),
    "sac": (100, 1),
    "sac_v": (100, 1),
}


def _algo_arg(text: str) -> tuple[str, Any]:
    """``--algo-arg NAME=VALUE`` as ``(name, value)``.

    The value is a Python literal if it is one (``3e-4``, ``True``, ``(64, 64)``, ``None``),
    else a float if it is one (``nan``, ``inf``: refused later by the algorithm, naming the
    argument), else the text itself.
    """
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with a Python name, got {text!r}")
    try:
        return name, ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        return name, float(value)
    except ValueError:
        return name, value


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
    positive, non_negative = int_flag(1), int_flag(0)
    train.add_argument("--n-steps", type=positive, default=100_000, help="environment steps")
    train.add_argument("--log-dir", default="data/tdrl", help="experiment directory")
    train.add_argument(
        "--run-ID", type=non_negative, default=0, help="run number (run_<ID> folder)"
    )
    train.add_argument("--seed", type=non_negative, default=0, help="random seed")
    train.add_argument(
        "--batch-T", type=positive, default=None, help="time steps per batch (PG 128, DQN 4)"
    )
    train.add_argument("--batch-B", type=positive, default=None, help="environments per batch (8)")
    train.add_argument(
        "--log-interval-steps", type=positive, default=10_000, help="steps per log row"
    )
    train.add_argument(
        "--eval-n-envs", type=non_negative, default=0, help="offline eval envs (0: online stats)"
    )
    train.add_argument(
        "--eval-max-steps", type=positive, default=10_000, help="env steps per evaluation"
    )
    train.add_argument(
        "--eval-max-trajectories", type=positive, default=None, help="episodes per evaluation"
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
        "--torch-threads",
        type=positive,
        default=1,
        help="torch intra-op threads (1 is fastest here)",
    )
    train.add_argument(
        "--recurrent",
        action="store_true",
        help="a2c/ppo: an LSTM agent (rlpyt's MujocoLstmModel / AtariLstmModel layouts)",
    )
    train.add_argument(
        "--device",
        default="cpu",
        help="where the agent trains and acts: cpu, cuda or cuda:N (envs step on the CPU)",
    )
    _add_traceback_flag(train)
    _add_traceback_flag(add_launch_parser(sub))
    return parser


def _add_traceback_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on an error, show Python's traceback instead of the one-line message",
    )


def _make_algo_agent(
    name: str, kwargs: dict[str, Any], env_id: str, *, recurrent: bool = False
) -> tuple[Algorithm, Agent]:
    """The algorithm ``name`` with hyperparameters ``kwargs`` and an agent for the env.

    ``recurrent`` asks for an LSTM agent (policy-gradient algorithms only).
    """
    import gymnasium as gym

    from tdrl.agents import (
        CategoricalPgAgent,
        DdpgAgent,
        DqnAgent,
        GaussianPgAgent,
        R2d1Agent,
        SacAgent,
        SacVAgent,
        Td3Agent,
    )
    from tdrl.algos import (
        A2C,
        DDPG,
        DQN,
        PPO,
        R2D1,
        SAC,
        SAC_V,
        TD3,
        CategoricalDQN,
        rainbow_minus_noisy,
    )

    env_fn, env_kwargs = _env_fn(env_id)
    env = env_fn(**env_kwargs)
    try:
        space = env.action_space
    finally:
        env.close()
    if name == "r2d1":  # recurrent by construction (--recurrent changes nothing)
        if not isinstance(space, gym.spaces.Discrete):
            raise ValueError(
                f"--algo r2d1 needs a Discrete action space, but --env {env_id} has {space}"
            )
        return R2D1(**kwargs), R2d1Agent()
    if recurrent and name not in PG_ALGOS:
        raise ValueError(
            f"--recurrent applies to {', '.join(PG_ALGOS)} (an LSTM policy), not --algo {name}"
        )
    if name in PG_ALGOS:
        algo = {"a2c": A2C, "ppo": PPO}[name](**kwargs)
        if isinstance(space, gym.spaces.Discrete):
            return algo, CategoricalPgAgent(recurrent=recurrent)
        if isinstance(space, gym.spaces.Box):
            return algo, GaussianPgAgent(recurrent=recurrent)
        raise ValueError(
            f"--algo {name} needs a Discrete or Box action space, but --env {env_id} has {space}"
        )
    if name in QPG_ALGOS:
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(
                f"--algo {name} needs a Box action space, but --env {env_id} has {space}"
            )
        if name == "ddpg":
            return DDPG(**kwargs), DdpgAgent()
        if name == "td3":
            return TD3(**kwargs), Td3Agent()
        if name == "sac_v":
            return SAC_V(**kwargs), SacVAgent()
        return SAC(**kwargs), SacAgent()
    if not isinstance(space, gym.spaces.Discrete):
        raise ValueError(
            f"--algo {name} needs a Discrete action space, but --env {env_id} has {space}"
        )
    if name == "rainbow":
        return rainbow_minus_noisy(algo_kwargs=kwargs)
    if name == "catdqn":
        return CategoricalDQN(**kwargs), DqnAgent(n_atoms=51)
    return DQN(**kwargs), DqnAgent()


def _algo_kwargs(name: str, pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """The ``--algo-arg`` pairs as keyword arguments of the algorithm ``name``.

    Raises:
        ArgumentError: A name given twice, or one the algorithm does not take (the message
            lists the arguments it takes).
    """
    import inspect

    from tdrl.algos import A2C, DDPG, DQN, PPO, R2D1, SAC, SAC_V, TD3, CategoricalDQN

    classes = {"a2c": A2C, "ppo": PPO, "dqn": DQN, "catdqn": CategoricalDQN}
    classes |= {"rainbow": CategoricalDQN, "ddpg": DDPG, "td3": TD3, "sac": SAC, "sac_v": SAC_V}
    classes |= {"r2d1": R2D1}
    cls = classes[name]
    known = [p for p in inspect.signature(cls).parameters]
    kwargs: dict[str, Any] = {}
    for key, value in pairs:
        if key in kwargs:
            raise ArgumentError(f"--algo-arg {key} is given twice")
        if key not in known:
            raise ArgumentError(
                f"--algo-arg {key} is not an argument of --algo {name} ({cls.__name__}); "
                f"it takes: {', '.join(known)}"
            )
        kwargs[key] = value
    return kwargs


def _env_fn(env_id: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """``(env_fn, env_kwargs)`` for a gymnasium id or ``atari:GAME``."""
    from tdrl.envs import make_atari_env, make_gym_env

    if env_id.startswith("atari:"):
        return make_atari_env, {"game": env_id.split(":", 1)[1]}
    return make_gym_env, {"id": env_id}


def _check_train_args(args: argparse.Namespace) -> None:
    """Refuses numeric ``train`` options out of range, naming the flag.

    The parser already refuses them; this covers a ``Namespace`` built by other code (and
    turns whole floats such as ``1e5`` into ints). ``--device`` must be ``cpu``, ``cuda``
    or ``cuda:N``, and a CUDA device that torch sees.
    """
    from tdrl.utils.tensor import check_device

    for flag, minimum in _TRAIN_COUNTS.items():
        attr = flag[2:].replace("-", "_")
        value = getattr(args, attr)
        if value is None and flag in ("--batch-T", "--batch-B", "--eval-max-trajectories"):
            continue  # None: the default
        setattr(args, attr, check_int(flag, value, minimum=minimum))
    device = check_device("--device", args.device)
    if device is None or device.type not in ("cpu", "cuda"):
        raise ArgumentError(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")


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

    Args:
        args: The parsed ``train`` options; ``batch_T`` and ``batch_B`` are filled in with
            the algorithm's defaults when not given.

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
    import torch

    from tdrl.envs import AtariTrajInfo, TrajInfo
    from tdrl.logging import logger_context
    from tdrl.runners import MinibatchRl, MinibatchRlEval
    from tdrl.samplers import SerialSampler

    _check_train_args(args)
    torch.set_num_threads(args.torch_threads)
    algo_kwargs = _algo_kwargs(args.algo, args.algo_arg)
    algo, agent = _make_algo_agent(
        args.algo, algo_kwargs, args.env, recurrent=getattr(args, "recurrent", False)
    )
    env_fn, env_kwargs = _env_fn(args.env)
    default_T, default_B = DEFAULT_BATCH[args.algo]
    args.batch_T = default_T if args.batch_T is None else args.batch_T
    args.batch_B = default_B if args.batch_B is None else args.batch_B
    interval = getattr(algo, "store_rnn_state_interval", 0)  # R2D1: whole chunks per batch
    if interval and args.batch_T % interval:
        raise ValueError(
            f"--batch-T {args.batch_T} must be a multiple of R2D1's store_rnn_state_interval "
            f"({interval}); pass --batch-T {interval} or set --algo-arg store_rnn_state_interval"
        )
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
        device=args.device,
    )
    config = {k: v for k, v in vars(args).items() if k not in ("algo_arg", "traceback")}
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
        The exit status: 0 on success, 1 if a launched run failed, 2 on bad input (one
        line on stderr: ``tdrl train: error: <message>``), 130 when interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    script_args: list[str] = []
    if argv[:1] == ["launch"] and "--" in argv:  # what follows "--" goes to every run
        cut = argv.index("--")
        argv, script_args = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    try:
        if args.command == "launch":
            return launch(args, script_args)
        train(args)
    except KeyboardInterrupt:
        print(f"tdrl {args.command}: interrupted", file=sys.stderr)
        return 130
    except _BAD_INPUT as e:
        if args.traceback:
            raise
        print(f"tdrl {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0


#: What ``main`` reports as a one-line error (bad options, hyperparameters, envs, files).
_BAD_INPUT = (ValueError, TypeError, OSError, ImportError)


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (its lines joined with ``; ``), or its type's name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
