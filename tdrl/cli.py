"""The ``tdrl`` command line: ``tdrl train --algo ppo --env CartPole-v1 ...``.

Every algorithm that tdrl implements gets an entry in ``ALGOS``; its hyperparameters
default to the algorithm's own (rlpyt's) defaults and any of them can be set with
``--algo-arg NAME=VALUE``.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from collections.abc import Sequence
from typing import Any

ALGOS = ("a2c", "ppo")


def _algo_arg(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--algo-arg expects NAME=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    return name.strip(), parsed


def build_parser() -> argparse.ArgumentParser:
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
    train.add_argument("--env", required=True, help="gymnasium environment id")
    train.add_argument("--n-steps", type=int, default=100_000, help="environment steps")
    train.add_argument("--log-dir", default="data/tdrl", help="experiment directory")
    train.add_argument("--run-ID", type=int, default=0, help="run number (run_<ID> folder)")
    train.add_argument("--seed", type=int, default=0, help="random seed")
    train.add_argument("--batch-T", type=int, default=128, help="time steps per batch")
    train.add_argument("--batch-B", type=int, default=8, help="environments per batch")
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
    return parser


def _make_algo(name: str, kwargs: dict[str, Any]):
    from tdrl.algos import A2C, PPO

    cls = {"a2c": A2C, "ppo": PPO}[name]
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise SystemExit(f"tdrl train: --algo-arg not accepted by {cls.__name__}: {e}") from e


def _make_agent(env_id: str):
    import gymnasium as gym

    from tdrl.agents import CategoricalPgAgent, GaussianPgAgent
    from tdrl.envs import make_gym_env

    env = make_gym_env(env_id)
    space = env.action_space
    env.close()
    if isinstance(space, gym.spaces.Discrete):
        return CategoricalPgAgent()
    if isinstance(space, gym.spaces.Box):
        return GaussianPgAgent()
    raise SystemExit(f"tdrl train: no policy-gradient agent for action space {space}")


def train(args: argparse.Namespace) -> dict[str, float]:
    import torch

    from tdrl.logging import logger_context
    from tdrl.runners import MinibatchRl, MinibatchRlEval
    from tdrl.samplers import SerialSampler

    torch.set_num_threads(args.torch_threads)
    algo_kwargs = dict(args.algo_arg)
    algo = _make_algo(args.algo, algo_kwargs)
    agent = _make_agent(args.env)
    sampler = SerialSampler(
        env_kwargs={"id": args.env},
        batch_T=args.batch_T,
        batch_B=args.batch_B,
        eval_n_envs=args.eval_n_envs,
        eval_max_steps=args.eval_max_steps,
        eval_max_trajectories=args.eval_max_trajectories,
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
    args = build_parser().parse_args(argv)
    if args.command == "train":
        try:
            train(args)
        except (ValueError, TypeError, FileExistsError, ImportError) as e:
            print(f"tdrl train: error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
