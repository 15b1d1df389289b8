"""The ``tdrl`` command line: ``tdrl train --algo ppo --env CartPole-v1 ...``.

``tdrl train --algo pearl --env cheetah-vel`` meta-trains PEARL on one of oyster's task
families (``tdrl.envs.meta.META_ENV_NAMES``) with oyster's settings for it
(``tdrl.runners.meta_presets``); ``--n-steps`` sets the iterations by the env steps they
collect (without it: oyster's 500), ``--algo-arg`` sets ``PEARL``'s hyperparameters and
``--runner-arg NAME=VALUE`` the schedule of ``MetaRl`` (tasks, steps per phase, updates
per iteration, evaluation). The sampler options (``--batch-T``, ``--batch-B``,
``--log-interval-steps``, ``--eval-*``) and ``--recurrent`` do not apply to it and are
refused.

``tdrl plot RUN_DIR... -o curves.png`` draws learning curves and ``tdrl eval RUN_DIR
[--video out.mp4]`` evaluates a trained agent (``tdrl.cli_tools``).

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

The parser and ``main`` live here; the algorithm tables and what each is built with live
in ``tdrl.cli_build``, the ``train`` command's checks and runs (sampler-based and PEARL's
meta-RL) in ``tdrl.cli_train``; the tables are re-exported here.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from typing import Any

from tdrl.cli_build import (
    ALGOS,
    DEFAULT_BATCH,
    DEFAULT_N_STEPS,
    DQN_ALGOS,
    META_ALGOS,
    META_ENVS,
    PG_ALGOS,
    QPG_ALGOS,
)
from tdrl.cli_build import _algo_kwargs as _algo_kwargs  # kept importable from tdrl.cli
from tdrl.cli_build import _make_algo_agent as _make_algo_agent
from tdrl.cli_tools import add_eval_parser, add_plot_parser, evaluate_run, plot_runs
from tdrl.cli_train import NOT_FOR_PEARL, RUNNERS, SAMPLERS, train, train_pearl
from tdrl.launch.command import add_launch_parser, launch
from tdrl.launch.config import int_flag
from tdrl.utils.checks import NonFiniteError

__all__ = [
    "ALGOS",
    "DEFAULT_BATCH",
    "DEFAULT_N_STEPS",
    "DQN_ALGOS",
    "META_ALGOS",
    "META_ENVS",
    "NOT_FOR_PEARL",
    "PG_ALGOS",
    "QPG_ALGOS",
    "build_parser",
    "main",
    "one_line",
    "train",
    "train_pearl",
]


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


#: The repeatable ``NAME=VALUE`` options of ``tdrl train`` and their help.
_NAME_VALUE_FLAGS = {
    "--algo-arg": (
        "set an algorithm hyperparameter, e.g. --algo-arg learning_rate=3e-4 (repeatable)"
    ),
    "--runner-arg": (
        "set a runner setting, e.g. --runner-arg nonfinite=skip or, for pearl, a MetaRl "
        "setting such as --runner-arg num_train_steps_per_itr=500 (repeatable)"
    ),
    "--agent-arg": (
        "set an agent argument, e.g. --agent-arg model_kwargs={'hidden_sizes':(64,64)} (repeatable)"
    ),
    "--model-arg": (
        "set a model argument (the agent's model_kwargs), e.g. --model-arg "
        "hidden_sizes=(64,64) or --model-arg lstm_size=128 (repeatable)"
    ),
    "--sampler-arg": (
        "set a sampler argument, e.g. --sampler-arg max_decorrelation_steps=0 (repeatable)"
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``tdrl`` command and its ``train`` and ``launch`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="tdrl", description="tdrl: rlpyt's RL algorithms on TorchRL and TensorDict."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train",
        help="train an agent on a gymnasium environment, or PEARL on a meta-RL task family",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train an agent, logging progress.csv/params.json/debug.log and "
        "snapshots to LOG_DIR/run_RUN_ID. --algo pearl meta-trains PEARL on a task family "
        "with oyster's settings for it; --algo-arg and --runner-arg override them.",
    )
    train.add_argument("--algo", required=True, choices=ALGOS, help="algorithm")
    train.add_argument(
        "--env",
        required=True,
        help="gymnasium id, atari:GAME for tdrl's AtariEnv, or with --algo pearl a meta-RL "
        f"task family ({', '.join(META_ENVS)})",
    )
    positive, non_negative = int_flag(1), int_flag(0)
    train.add_argument(
        "--n-steps",
        type=positive,
        default=None,
        # "%(default).0s" prints nothing: it stops argparse from adding "(default: None)"
        help=f"environment steps (default: {DEFAULT_N_STEPS}; pearl: the preset's "
        "iterations, oyster's 500)%(default).0s",
    )
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
        "--eval-n-envs",
        type=non_negative,
        default=None,
        help="offline eval envs (0: online stats; default: the preset's, else 0)%(default).0s",
    )
    train.add_argument(
        "--eval-max-steps",
        type=positive,
        default=None,
        help="env steps per evaluation (default: the preset's, else 10000)%(default).0s",
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
    for flag, text in _NAME_VALUE_FLAGS.items():  # repeatable NAME=VALUE settings
        train.add_argument(
            flag, type=_algo_arg, action="append", default=[], metavar="NAME=VALUE", help=text
        )
    train.add_argument(
        "--sampler",
        default=None,
        choices=SAMPLERS,
        help="serial, or parallel workers: cpu (agent copy per worker), gpu (batched action "
        "server in the parent), alternating (two worker groups), ray (Ray actors, pip install "
        "'tdrl[ray]'; --sampler-arg address=auto, prefetch=True, ...) (default: the preset's, "
        "else serial)%(default).0s",
    )
    train.add_argument(
        "--n-workers",
        type=positive,
        default=None,
        help="parallel sampler workers (default: the sampler's, one per CPU)%(default).0s",
    )
    train.add_argument(
        "--runner",
        default=None,
        choices=RUNNERS,
        help="minibatch (sample then optimize), async (AsyncRl: sampling and optimizing "
        "at once, replay algorithms), sync (SyncRl: DDP ranks; --runner-arg world_size=N) "
        "(default: the preset's, else minibatch)%(default).0s",
    )
    train.add_argument(
        "--preset",
        default=None,
        metavar="NAME|none",
        help="tuned settings to start from (default: the preset of --algo and --env, if any; "
        "none: the algorithm's defaults; `tdrl presets` lists them)%(default).0s",
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
        help="a2c/ppo: an LSTM agent (rlpyt's MujocoLstmModel / AtariLstmModel layouts; "
        "Gaussian log std: one parameter, see docs/fidelity.md)",
    )
    train.add_argument(
        "--device",
        default="cpu",
        help="where the agent trains and acts: cpu, cuda or cuda:N (envs step on the CPU)",
    )
    _add_traceback_flag(train)
    _add_traceback_flag(add_launch_parser(sub))
    sub.add_parser("presets", help="list the tuned presets `tdrl train` applies")
    _add_traceback_flag(add_plot_parser(sub))
    _add_traceback_flag(add_eval_parser(sub))
    return parser


def _add_traceback_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on an error, show Python's traceback instead of the one-line message",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``tdrl`` command line.

    Args:
        argv: The arguments after ``tdrl``; None reads ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 1 if a launched run failed or training met a
        non-finite value or ran out of memory (one line), 2 on bad input (one line on
        stderr: ``tdrl train: error: <message>``), 130 when interrupted.
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
        if args.command == "presets":
            from tdrl.presets import preset_table

            print(preset_table())
            return 0
        if args.command == "plot":
            plot_runs(args)
            return 0
        if args.command == "eval":
            evaluate_run(args)
            return 0
        train(args)
    except KeyboardInterrupt:
        print(f"tdrl {args.command}: interrupted", file=sys.stderr)
        return 130
    except _BAD_INPUT as e:
        if getattr(args, "traceback", False):
            raise
        print(f"tdrl {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except _RUN_FAILURES as e:
        if getattr(args, "traceback", False):
            raise
        print(f"tdrl {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 1
    return 0


#: What ``main`` reports as a one-line error (bad options, hyperparameters, envs, files).
_BAD_INPUT = (ValueError, TypeError, OSError, ImportError)
#: What ``main`` reports in one line with exit status 1: the run went wrong, not its input.
_RUN_FAILURES = (NonFiniteError, MemoryError)


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (its lines joined with ``; ``), or its type's name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
