"""Learning speed, side by side: tdrl vs Stable-Baselines3 on the same workloads.

Each run trains in its own process with torch pinned to one thread. For each workload the
script prints the training time (evaluation excluded), the training time at which the
return first reached the workload's threshold, and the final return, then tdrl/SB3 ratios.
DQN is judged on greedy evaluation every 2,500 steps (8 episodes, for both libraries); PPO
on the average return of the last 100 training episodes (``ep_info_buffer`` for SB3).

Workloads:

* ``dqn_cartpole``: DQN on CartPole-v1 for 50k steps. SB3 runs the rl-zoo CartPole config
  (lr 2.3e-3, batch 64, buffer 1e5, learning_starts 1000, target update every 10 steps,
  train_freq 256 with 128 gradient steps, exploration over 16% to 0.04, 256-256 MLP);
  tdrl runs ``tdrl_examples/example_3.py``'s defaults.
* ``sac_pendulum``: SAC on Pendulum-v1 for 10k steps, both with SAC's defaults (batch 256,
  one update per step, lr 3e-4, tau 0.005, learned temperature, 256-256 nets) and a
  1,000-step warm-up; tdrl runs ``example_5.py`` on Pendulum-v1. Judged on deterministic
  evaluation every 1,000 steps (8 episodes), threshold -200.
* ``ppo_cartpole``: PPO on CartPole-v1 for 100k steps with rl-zoo's tuned settings
  (8 envs x 32 steps, 20 epochs, one 256-sample minibatch, GAE 0.8, gamma 0.98, linear
  lr 1e-3 and clip 0.2, no entropy bonus); tdrl runs ``example_1.py``'s defaults.

* ``rppo_cartpole_novel``: recurrent PPO on ``CartPoleNoVel-v1`` (CartPole without the
  velocities: a memory task) for 100k steps, rl-zoo3's ``ppo_lstm`` config for both
  (8 envs x 32 steps, 20 epochs, one 256-sample minibatch, GAE 0.8, gamma 0.98, linear lr
  1e-3 and clip 0.2, no entropy bonus, LSTM 64 with 64-unit heads, normalised
  observations, a separate critic LSTM, scaled rewards); SB3 runs sb3-contrib's
  ``RecurrentPPO`` (``MlpLstmPolicy``, ``enable_critic_lstm``, ``VecNormalize`` on
  observations and rewards as the zoo does); tdrl runs ``example_1.py --recurrent
  --normalize-observation --critic-lstm --reward-scale 0.1``. Threshold 450.

Usage: ``python benchmarks/learning.py [--workloads dqn_cartpole ppo_cartpole]
[--seeds 0 1 2]`` (needs the ``bench`` extra: ``pip install -e ".[bench]"``, which brings
Stable-Baselines3 and sb3-contrib).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD = {
    "dqn_cartpole": 475.0,
    "ppo_cartpole": 475.0,
    "sac_pendulum": -200.0,
    "rppo_cartpole_novel": 450.0,
}
STEPS = {
    "dqn_cartpole": 50_000,
    "ppo_cartpole": 100_000,
    "sac_pendulum": 10_000,
    "rppo_cartpole_novel": 100_000,
}
ENV = {
    "dqn_cartpole": "CartPole-v1",
    "ppo_cartpole": "CartPole-v1",
    "sac_pendulum": "Pendulum-v1",
    "rppo_cartpole_novel": "CartPoleNoVel-v1",
}
EXAMPLE = {
    "dqn_cartpole": "example_3",
    "ppo_cartpole": "example_1",
    "sac_pendulum": "example_5",
    "rppo_cartpole_novel": "example_1",
}


def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tdrl_examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


#: How "reached the threshold" is judged: "eval" = greedy evaluation (8 episodes in separate
#: envs, epsilon 0.001 for tdrl, deterministic for SB3) every 2,500 steps, its time excluded;
#: "online" = the average return of the last 100 training episodes.
PROTOCOL = {
    "dqn_cartpole": "eval",
    "ppo_cartpole": "online",
    "sac_pendulum": "eval",
    "rppo_cartpole_novel": "online",
}
EVAL_EVERY = {"dqn_cartpole": 2_500, "sac_pendulum": 1_000}


def run_tdrl(workload: str, seed: int) -> dict:
    import csv
    import tempfile

    example = _load_example(EXAMPLE[workload])
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = {"seed": seed, "n_steps": STEPS[workload], "log_dir": tmp}
        if PROTOCOL[workload] == "online":
            kwargs["log_interval_steps"] = 1_000
        if workload == "rppo_cartpole_novel":
            kwargs.update(
                env_id=ENV[workload],
                recurrent=True,
                normalize_observation=True,
                critic_lstm=True,
                reward_scale=0.1,
            )
        if workload == "sac_pendulum":  # SAC defaults, a 1k-step warm-up, eval every 1k
            kwargs.update(
                env_id="Pendulum-v1",
                min_steps_learn=1_000,
                log_interval_steps=1_000,
                eval_n_envs=2,
                eval_max_trajectories=8,
                eval_max_steps=4_000,
            )
        config = example.Config(**kwargs)
        t0 = time.perf_counter()
        example.build_and_train(config, progress_bar=False)
        wall = time.perf_counter() - t0
        with open(Path(tmp) / "run_0" / "progress.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    time_key = "Diagnostics/CumTrainTime" if "Diagnostics/CumTrainTime" in rows[0] else None
    time_key = time_key or "Diagnostics/CumTime (s)"
    reach = next(
        (
            float(r[time_key])
            for r in rows
            if float(r["ReturnAverage"] or "nan") >= THRESHOLD[workload]
        ),
        None,
    )
    return {
        "wall": wall,
        "train": float(rows[-1][time_key]),
        "reach": reach,
        "final_return": float(rows[-1]["ReturnAverage"]),
    }


def run_sb3(workload: str, seed: int) -> dict:
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    protocol = PROTOCOL[workload]

    class Reach(BaseCallback):
        """Records when the threshold is first reached; evaluation time is excluded."""

        def __init__(self):
            super().__init__()
            self.t0 = time.perf_counter()
            self.eval_time = 0.0
            self.reach = None
            self.last_eval = float("nan")
            self.env = gym.make(ENV[workload])

        def _evaluate(self) -> float:
            t = time.perf_counter()
            returns = []
            for i in range(8):
                obs, _ = self.env.reset(seed=10_000 + i)
                done, total = False, 0.0
                while not done:
                    action, _ = self.model.predict(obs, deterministic=True)
                    if workload == "dqn_cartpole":
                        action = int(action)
                    obs, r, term, trunc, _ = self.env.step(action)
                    total += r
                    done = term or trunc
                returns.append(total)
            self.eval_time += time.perf_counter() - t
            return float(np.mean(returns))

        def train_time(self) -> float:
            return time.perf_counter() - self.t0 - self.eval_time

        def _on_step(self) -> bool:
            if protocol == "eval":
                if self.num_timesteps % EVAL_EVERY[workload] == 0:
                    self.last_eval = self._evaluate()
                    if self.reach is None and self.last_eval >= THRESHOLD[workload]:
                        self.reach = self.train_time()
            else:
                buf = self.model.ep_info_buffer
                done = self.reach is not None or len(buf) < 10
                if not done and np.mean([e["r"] for e in buf]) >= THRESHOLD[workload]:
                    self.reach = self.train_time()
            return True

    if workload == "dqn_cartpole":
        model = DQN(
            "MlpPolicy",
            "CartPole-v1",
            learning_rate=2.3e-3,
            batch_size=64,
            buffer_size=100_000,
            learning_starts=1_000,
            gamma=0.99,
            target_update_interval=10,
            train_freq=256,
            gradient_steps=128,
            exploration_fraction=0.16,
            exploration_final_eps=0.04,
            policy_kwargs={"net_arch": [256, 256]},
            seed=seed,
            device="cpu",
        )
    elif workload == "sac_pendulum":
        from stable_baselines3 import SAC

        model = SAC(
            "MlpPolicy",
            "Pendulum-v1",
            learning_starts=1_000,
            policy_kwargs={"net_arch": [256, 256]},
            seed=seed,
            device="cpu",
        )
    elif workload == "rppo_cartpole_novel":
        from sb3_contrib import RecurrentPPO
        from stable_baselines3.common.utils import get_linear_fn
        from stable_baselines3.common.vec_env import VecNormalize

        from tdrl.envs import make_gym_env

        make_gym_env(ENV[workload]).close()  # registers the id with gymnasium
        env = VecNormalize(make_vec_env(ENV[workload], n_envs=8, seed=seed), gamma=0.98)
        model = RecurrentPPO(
            "MlpLstmPolicy",
            env,
            n_steps=32,
            batch_size=256,
            gae_lambda=0.8,
            gamma=0.98,
            n_epochs=20,
            ent_coef=0.0,
            max_grad_norm=0.5,
            learning_rate=get_linear_fn(1e-3, 0.0, 1.0),
            clip_range=get_linear_fn(0.2, 0.0, 1.0),
            policy_kwargs={
                "ortho_init": False,
                "activation_fn": __import__("torch").nn.ReLU,
                "lstm_hidden_size": 64,
                "enable_critic_lstm": True,
                "net_arch": {"pi": [64], "vf": [64]},
            },
            seed=seed,
            device="cpu",
        )
    else:
        from stable_baselines3.common.utils import get_linear_fn

        model = PPO(
            "MlpPolicy",
            make_vec_env("CartPole-v1", n_envs=8, seed=seed),
            n_steps=32,
            batch_size=256,
            gae_lambda=0.8,
            gamma=0.98,
            n_epochs=20,
            ent_coef=0.0,
            learning_rate=get_linear_fn(1e-3, 0.0, 1.0),
            clip_range=get_linear_fn(0.2, 0.0, 1.0),
            seed=seed,
            device="cpu",
        )
    callback = Reach()
    t0 = time.perf_counter()
    model.learn(total_timesteps=STEPS[workload], callback=callback)
    wall = time.perf_counter() - t0
    if protocol == "eval":
        final = callback._evaluate()
    else:
        final = float(np.mean([e["r"] for e in model.ep_info_buffer]))
    return {
        "wall": wall,
        "train": wall - callback.eval_time,
        "reach": callback.reach,
        "final_return": final,
    }


def _worker(lib: str, workload: str, seed: int) -> None:
    import torch

    torch.set_num_threads(1)
    result = (run_tdrl if lib == "tdrl" else run_sb3)(workload, seed)
    print("RESULT " + json.dumps(result))


def _spawn(lib: str, workload: str, seed: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", lib, workload, str(seed)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{lib} {workload} seed {seed} failed:\n{proc.stderr[-3000:]}")


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--libs", nargs="+", default=["tdrl", "sb3"], choices=["tdrl", "sb3"])
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return
    import platform

    import torch

    print(f"# learning benchmark, {time.strftime('%Y-%m-%d')}, {platform.processor() or ''}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, 1 torch thread")
    print()
    print("| workload | lib | seed | train s | s to threshold | final return |")
    print("|---|---|---:|---:|---:|---:|")
    results: dict[tuple[str, str], list[dict]] = {}
    for workload in args.workloads:
        for seed in args.seeds:
            for lib in args.libs:  # interleaved, so load changes hit both
                r = _spawn(lib, workload, seed)
                results.setdefault((workload, lib), []).append(r)
                print(
                    f"| {workload} | {lib} | {seed} | {r['train']:.1f} | {_fmt(r['reach'])} | "
                    f"{r['final_return']:.1f} |",
                    flush=True,
                )
    print()
    print("| workload | lib | median train s | median s to threshold | reached | median final |")
    print("|---|---|---:|---:|---:|---:|")
    medians = {}
    for (workload, lib), rs in results.items():
        reach = [r["reach"] for r in rs if r["reach"] is not None]
        med = {
            "wall": statistics.median(r["train"] for r in rs),
            "reach": statistics.median(reach) if reach else None,
            "final": statistics.median(r["final_return"] for r in rs),
        }
        medians[(workload, lib)] = med
        print(
            f"| {workload} | {lib} | {med['wall']:.1f} | {_fmt(med['reach'])} | "
            f"{len(reach)}/{len(rs)} | {med['final']:.1f} |"
        )
    print()
    for workload in args.workloads:
        t, s = medians.get((workload, "tdrl")), medians.get((workload, "sb3"))
        if t and s:
            reach = f"{t['reach'] / s['reach']:.2f}" if t["reach"] and s["reach"] else "n/a"
            print(
                f"{workload}: tdrl/sb3 train time {t['wall'] / s['wall']:.2f}, time-to-threshold "
                f"{reach}; median final return tdrl {t['final']:.1f}, sb3 {s['final']:.1f}"
            )


if __name__ == "__main__":
    main()
