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
    return parser


def _make_algo_agent(name: str, kwargs: dict[str, Any], env_id: str):
    import gymnasium as gym

    from tdrl.agents import CategoricalPgAgent, GaussianPgAgent
    from tdrl.agents.dqn import DqnAgent
    from tdrl.agents.qpg import DdpgAgent, SacAgent, SacVAgent, Td3Agent
    from tdrl.algos import A2C, PPO
    from tdrl.algos.dqn import DQN, CategoricalDQN, rainbow_minus_noisy
    from tdrl.algos.qpg import DDPG, SAC, SAC_V, TD3

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


def _env_fn(env_id: str):
    """``(env_fn, env_kwargs)`` for a gymnasium id or ``atari:GAME``."""
    from tdrl.envs import make_atari_env, make_gym_env

    if env_id.startswith("atari:"):
        return make_atari_env, {"game": env_id.split(":", 1)[1]}
    return make_gym_env, {"id": env_id}


def train(args: argparse.Namespace) -> dict[str, float]:
    import torch

    from tdrl.envs import AtariTrajInfo, TrajInfo
    from tdrl.logging import logger_context
    from tdrl.runners import MinibatchRl, MinibatchRlEval
    from tdrl.samplers import SerialSampler

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
