"""PEARL's meta-training loop and its evaluation, serially (oyster's ``MetaRLAlgorithm``).

Tasks are drawn once, ``env.sample_tasks(n_train_tasks + n_eval_tasks, seed=seed)``: the
first ``n_train_tasks`` are the train tasks (indices of the ``MultiTaskReplay``), the rest
the test tasks. One env collects training data, another evaluates; ``set_task`` switches
the task and every trajectory runs to the env's episode end (a time-limit truncation
after ``max_episode_steps``), so a phase of ``n`` steps collects whole trajectories until
at least ``n`` steps (as oyster, which may overshoot by part of a trajectory).

An iteration ``itr``:

1. ``itr == 0`` only: ``num_initial_steps`` per train task with ``z`` from the prior, into
   the task's RL and encoder buffers;
2. for ``num_tasks_sample`` train tasks drawn at random: clear the task's encoder buffer,
   then collect ``num_steps_prior`` steps with ``z`` from the prior (both buffers),
   ``num_steps_posterior`` steps with ``z`` from the posterior (both buffers) and
   ``num_extra_rl_steps_posterior`` steps with ``z`` from the posterior (RL buffer only).
   Each phase starts from the prior (oyster's ``clear_z``); ``z`` is drawn again for every
   trajectory, and in the posterior phases the posterior is inferred again from
   ``embedding_batch_size`` transitions of the encoder buffer after every
   ``update_post_train`` trajectories;
3. ``num_train_steps_per_itr`` calls of ``PEARL.update`` on ``algo.meta_batch`` train
   tasks drawn with replacement (``algo.batch_size`` RL and ``algo.embedding_batch_size``
   context transitions per task: ``MultiTaskReplay.sample_meta_batch``);
4. evaluation with the deterministic policy (``agent.eval_mode``; ``z`` is still a draw,
   ``tdrl.samplers.episodes.meta_evaluation``): (a) on ``n_eval_tasks`` train tasks drawn
   with replacement, ``num_steps_per_eval // max_episode_steps`` trajectories, each with
   ``z`` from the posterior of a fresh context sample of the encoder buffer; (b) on the
   same train tasks and (c) on the test tasks, ``num_evals`` times: start from the prior,
   accumulate the context of the trajectories online, infer the posterior after every
   trajectory from the ``num_exp_traj_eval``-th on, until ``num_steps_per_eval`` steps.
   ``AverageReturn_rollout_{k}`` is the test tasks' return of the ``k``-th trajectory.

With ``sparse_rewards`` (sparse-point-robot) the encoder sees ``info["sparse_reward"]``
(encoder buffer and online context, as oyster's agent and ``sample_context``), the critic
the dense reward, and the evaluation reports sparse returns.

Each iteration writes one ``progress.csv`` row and a snapshot (``tdrl.runners.base``'s,
plus the runner and env random states, the settings and the tasks as JSON data; with
``snapshot_replay`` the per-task buffers too, in the crash-safe order of
``commit_log_point``); the task lists also go to ``debug.log``.
``resume_from`` continues a run from its snapshot (the tasks must be the same); a train
task whose RL buffer is empty when an iteration starts (iteration 0, or a resume without a
saved replay) first gets ``num_initial_steps`` with ``z`` from the prior.

The episodes come from two ``EpisodeSampler`` s (``tdrl.samplers.episodes``, on the
samplers' shared env loop; the collection's env seeded with ``seed + 1``, the evaluation's
with ``seed + 2``). Start-up, resume checks and snapshots are built from
``tdrl.runners.startup`` and ``tdrl.runners.base``; ``meta_batch``, ``batch_size`` and
``embedding_batch_size`` are the algorithm's, and each object reports its own resume
settings (``settings``). It is over 450 lines: the schedule's 18 settings are each checked
and documented where declared (the loop itself, ``train``, is one screen).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdrl.agents.qpg.pearl_agent import PearlAgent
from tdrl.algos.qpg.pearl import PEARL
from tdrl.envs.meta import META_ENV_NAMES, make_meta_env, task_to_json
from tdrl.keys import BatchSpec
from tdrl.logging import get_logger
from tdrl.logging.files import SnapshotError
from tdrl.logging.snapshot import commit_log_point, describe, run_identity
from tdrl.replays.multi_task import MultiTaskReplay, check_task_buffers
from tdrl.runners.base import RunStats, check_finite_agent, snapshot
from tdrl.runners.nonfinite import in_iteration
from tdrl.runners.startup import check_settings, load_resume, place_agent, restore_run
from tdrl.samplers.episodes import Belief, Episode, EpisodeSampler, meta_evaluation
from tdrl.samplers.episodes import online_returns as episodes_online_returns
from tdrl.utils.checks import (
    ArgumentError,
    check_bool,
    check_choice,
    check_instance,
    check_int,
    check_mapping,
)
from tdrl.utils.device import check_device
from tdrl.utils.seed import set_seed

#: Families whose ``step`` reports ``info["sparse_reward"]`` (``sparse_rewards=True``).
SPARSE_FAMILIES = ("sparse-point-robot",)

#: The schedule's settings a resumed run must share with its snapshot (``settings``).
RUNNER_SETTINGS = (
    "num_initial_steps",
    "num_tasks_sample",
    "num_steps_prior",
    "num_steps_posterior",
    "num_extra_rl_steps_posterior",
    "num_train_steps_per_itr",
    "update_post_train",
    "num_exp_traj_eval",
    "num_steps_per_eval",
    "num_evals",
    "replay_size",
    "sparse_rewards",
)

#: Settings that moved from the runner to the algorithm: where a snapshot of before the
#: move recorded them (so that it still resumes).
MOVED_SETTINGS = {
    f"algo.{k}": f"runner.{k}" for k in ("meta_batch", "batch_size", "embedding_batch_size")
}


class MetaRl:
    """Meta-trains PEARL on a multi-task env and evaluates it (see the module docstring).

    Defaults are oyster's ``configs/default.py`` (its per-family configs:
    ``tdrl.utils.oyster_configs``, the ``pearl-<family>`` presets). The meta-batch sizes
    (``meta_batch``, ``batch_size``, ``embedding_batch_size``) are the algorithm's.

    Args:
        algo: the ``PEARL`` algorithm (initialised here).
        agent: the ``PearlAgent`` (initialised here from the env's spaces).
        env_name: a family of ``tdrl.envs.make_meta_env`` (``"point-robot"``, ...).
        env_kwargs: keyword arguments of the family (None: none).
        n_train_tasks: train tasks.
        n_eval_tasks: test tasks.
        n_iterations: iterations (one row each).
        seed: seeds torch, NumPy, the task draw, the envs and the replay.
        device: where the agent acts and trains (None: where its parameters are); checked first.
        num_initial_steps: steps per train task at iteration 0, ``z`` from the prior.
        num_tasks_sample: train tasks collected for per iteration.
        num_steps_prior: steps per sampled task with ``z`` from the prior.
        num_steps_posterior: steps per sampled task with ``z`` from the posterior, into
            both buffers.
        num_extra_rl_steps_posterior: steps per sampled task with ``z`` from the posterior,
            into the RL buffer only.
        num_train_steps_per_itr: ``PEARL.update`` calls per iteration.
        update_post_train: trajectories between posterior updates while collecting.
        num_exp_traj_eval: trajectories from the prior before the first posterior in the
            online evaluation.
        num_steps_per_eval: steps of each evaluation run per task.
        num_evals: online evaluation runs per task.
        replay_size: capacity of each task's RL buffer (oyster: 1e6); the encoder buffer
            holds ``min(replay_size, steps written between clears)``.
        sparse_rewards: the encoder and the evaluation use ``info["sparse_reward"]``.
        resume_from: a snapshot file or run directory to continue from (agent, algorithm,
            counters, random states, the replay if saved; same algo, agent, env, tasks, seed).
        snapshot_replay: save the per-task buffers with every snapshot, so that a resumed
            run keeps its data (off by default: large buffers take long to write).
    """

    def __init__(
        self,
        algo: PEARL,
        agent: PearlAgent,
        *,
        env_name: str,
        env_kwargs: Mapping[str, Any] | None = None,
        n_train_tasks: int = 2,
        n_eval_tasks: int = 2,
        n_iterations: int = 500,
        seed: int = 0,
        device: str | torch.device | None = None,
        num_initial_steps: int = 2000,
        num_tasks_sample: int = 5,
        num_steps_prior: int = 400,
        num_steps_posterior: int = 0,
        num_extra_rl_steps_posterior: int = 400,
        num_train_steps_per_itr: int = 2000,
        update_post_train: int = 1,
        num_exp_traj_eval: int = 1,
        num_steps_per_eval: int = 600,
        num_evals: int = 2,
        replay_size: int = 1_000_000,
        sparse_rewards: bool = False,
        resume_from: str | Path | None = None,
        snapshot_replay: bool = False,
    ):
        self.device = check_device("device", device)
        self.algo = check_instance("algo", algo, PEARL)
        self.agent = check_instance("agent", agent, PearlAgent)
        self.env_name = check_choice("env_name", env_name, META_ENV_NAMES)
        self.env_kwargs = dict(check_mapping("env_kwargs", env_kwargs))
        self.n_train_tasks = check_int("n_train_tasks", n_train_tasks, minimum=1)
        self.n_eval_tasks = check_int("n_eval_tasks", n_eval_tasks, minimum=1)
        self.n_iterations = check_int("n_iterations", n_iterations, minimum=1)
        self.seed = check_int("seed", seed, minimum=0, maximum=2**32 - 1)
        self.num_initial_steps = check_int("num_initial_steps", num_initial_steps, minimum=1)
        self.num_tasks_sample = check_int("num_tasks_sample", num_tasks_sample, minimum=0)
        self.num_steps_prior = check_int("num_steps_prior", num_steps_prior, minimum=0)
        self.num_steps_posterior = check_int("num_steps_posterior", num_steps_posterior, minimum=0)
        self.num_extra_rl_steps_posterior = check_int(
            "num_extra_rl_steps_posterior", num_extra_rl_steps_posterior, minimum=0
        )
        if self.num_extra_rl_steps_posterior and not (
            self.num_steps_prior or self.num_steps_posterior
        ):
            raise ArgumentError(
                "num_extra_rl_steps_posterior needs num_steps_prior or num_steps_posterior > 0 "
                "(its posterior is inferred from the encoder buffer, cleared before collecting)"
            )
        if self.num_tasks_sample and not (self.num_steps_prior or self.num_steps_posterior):
            raise ArgumentError(
                "num_tasks_sample > 0 needs num_steps_prior or num_steps_posterior > 0: a "
                "sampled task's encoder buffer is cleared and refilled by those phases"
            )
        self.num_train_steps_per_itr = check_int(
            "num_train_steps_per_itr", num_train_steps_per_itr, minimum=0
        )
        self.update_post_train = check_int("update_post_train", update_post_train, minimum=1)
        self.num_exp_traj_eval = check_int("num_exp_traj_eval", num_exp_traj_eval, minimum=1)
        self.num_steps_per_eval = check_int("num_steps_per_eval", num_steps_per_eval, minimum=1)
        self.num_evals = check_int("num_evals", num_evals, minimum=1)
        self.replay_size = check_int("replay_size", replay_size, minimum=3)
        check_task_buffers(self.n_train_tasks, self.replay_size)  # before the tasks are drawn
        self.sparse_rewards = check_bool("sparse_rewards", sparse_rewards)
        if self.sparse_rewards and self.env_name not in SPARSE_FAMILIES:
            raise ArgumentError(
                f"sparse_rewards needs a family that reports info['sparse_reward'] "
                f"({', '.join(SPARSE_FAMILIES)}), got env_name={self.env_name!r}"
            )
        if resume_from is not None and not isinstance(resume_from, str | Path):
            raise ArgumentError(f"resume_from must be a path or None, got {resume_from!r}")
        self.resume_from = resume_from
        self.snapshot_replay = check_bool("snapshot_replay", snapshot_replay)
        self.n_rollout_columns: int | None = None
        env = {"name": self.env_name, **self.env_kwargs}  # the collection's env, the evaluation's
        self.sampler, self.eval_sampler = (
            EpisodeSampler(make_meta_env, env, env_rank=r, sparse_rewards=self.sparse_rewards)
            for r in (1, 2)
        )

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict[str, float]:
        """Run every iteration; returns the last logged row."""
        start_itr = self.startup()
        row: dict[str, float] = {}
        for itr in range(start_itr, self.n_iterations):
            with in_iteration(itr):
                self.agent.sample_mode(itr)
                for task in range(self.n_train_tasks):
                    if self.replay.task_len(task) == 0:  # iteration 0, or resumed without replay
                        self.collect(task, self.num_initial_steps, posterior=False, to_encoder=True)
                for _ in range(self.num_tasks_sample):
                    task = int(self.rng.integers(self.n_train_tasks))
                    self.replay.clear_encoder(task)
                    self.collect(task, self.num_steps_prior, posterior=False, to_encoder=True)
                    self.collect(task, self.num_steps_posterior, posterior=True, to_encoder=True)
                    self.collect(
                        task, self.num_extra_rl_steps_posterior, posterior=True, to_encoder=False
                    )
                self.agent.train_mode(itr)
                infos: dict[str, list[torch.Tensor]] = {}
                algo = self.algo
                for _ in range(self.num_train_steps_per_itr):
                    tasks = self.rng.integers(self.n_train_tasks, size=algo.meta_batch).tolist()
                    batch = self.replay.sample_meta_batch(
                        tasks, algo.batch_size, algo.embedding_batch_size, device=self.agent.device
                    )
                    for key, value in algo.update(batch).items():
                        infos.setdefault(key, []).append(value)
                self.agent.eval_mode(itr)
                row = self.log_row(itr, infos, self.evaluate())
        return row

    def draw_tasks(self) -> None:
        """Seed torch/NumPy, initialize both samplers, draw the train and test tasks."""
        set_seed(self.seed)
        for sampler in (self.sampler, self.eval_sampler):
            sampler.initialize(seed=self.seed)
        n_train = self.n_train_tasks
        tasks = self.sampler.env.sample_tasks(n_train + self.n_eval_tasks, seed=self.seed)
        self.train_tasks, self.eval_tasks = tasks[:n_train], tasks[n_train:]

    def startup(self) -> int:
        """Seed, draw the tasks, build the envs and the replay, initialise agent and algo.

        Returns:
            The first iteration to run (after a resumed snapshot's).

        Raises:
            FileNotFoundError: ``resume_from`` holds no snapshot.
            SnapshotError: the snapshot is corrupt, of another run or finished, or does not
                fit (named).
        """
        identity = self.identity()
        snap, snap_file = load_resume(
            self.resume_from, identity=identity, n_itr=sys.maxsize, n_steps=0
        )
        if snap is not None and int(snap["itr"]) + 1 >= self.n_iterations:
            raise SnapshotError(
                f"the run in {snap_file} is finished: its snapshot is of iteration "
                f"{int(snap['itr'])}, the last of n_iterations={self.n_iterations}; pass a "
                "larger n_iterations to train it further"
            )
        self.draw_tasks()
        self.rng = np.random.default_rng(self.seed)
        self.max_path_length = self.sampler.max_episode_steps
        if self.replay_size < self.max_path_length:
            raise ArgumentError(
                f"replay_size must hold a whole trajectory ({self.max_path_length} steps of "
                f"{self.env_name}), got {self.replay_size}"
            )
        self.agent.initialize(self.sampler.observation_spec, self.sampler.action_spec)
        place_agent(self.agent, self.device)
        self.algo.initialize(self.agent, n_itr=self.n_iterations, batch_spec=BatchSpec(1, 1))
        written = max(self.num_initial_steps, self.num_steps_prior + self.num_steps_posterior)
        self.replay = MultiTaskReplay(
            self.n_train_tasks,
            size=self.replay_size,
            batch_B=1,
            encoder_size=min(self.replay_size, written + 2 * self.max_path_length),
            discount=self.algo.discount,
            seed=self.seed,
        )
        self.tasks_json = {
            "train_tasks": [task_to_json(t) for t in self.train_tasks],
            "eval_tasks": [task_to_json(t) for t in self.eval_tasks],
        }
        start_itr, counters = 0, dict[str, Any]()
        if snap is not None and snap_file is not None:
            start_itr, counters = self.restore(snap, snap_file)
        self.stats = RunStats(
            log_traj_window=100,
            update_counter=self.algo.update_counter,
            run_info=identity,
            **counters,
        )
        self.t_start = time.perf_counter() - self.stats.cum_time
        get_logger().log(f"MetaRl tasks: {json.dumps(self.tasks_json)}", echo=False)
        get_logger().log(
            f"MetaRl: PEARL on {self.env_name}, {self.n_train_tasks} train / "
            f"{self.n_eval_tasks} test tasks, {self.n_iterations} iterations, seed {self.seed}, "
            f"agent on {self.agent.device}"
            + (f", resumed at iteration {start_itr}" if start_itr else "")
        )
        return start_itr

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with its snapshot (``run_identity``)."""
        env = {"name": self.env_name, **self.env_kwargs, "n_train_tasks": self.n_train_tasks}
        env |= {"n_eval_tasks": self.n_eval_tasks, "seed": self.seed}
        return run_identity(
            algo=self.algo,
            agent=self.agent,
            env_fn=make_meta_env,
            env_kwargs=env,
            batch_T=1,
            batch_B=1,
            world_size=1,
        )

    def settings(self) -> dict[str, Any]:
        """The agent's, the algorithm's and the schedule's settings, as plain data."""
        parts = {
            "agent": self.agent.settings(),
            "algo": self.algo.settings(),
            "runner": {name: getattr(self, name) for name in RUNNER_SETTINGS},
        }
        return {
            f"{part}.{name}": describe(value)
            for part, values in parts.items()
            for name, value in values.items()
        }

    def restore(self, snap: Mapping[str, Any], file: Path) -> tuple[int, dict[str, Any]]:
        """Load a snapshot of this run (see ``startup``); returns what ``restore_run`` does."""
        if snap.get("tasks") != self.tasks_json:
            raise SnapshotError(
                f"cannot resume from {file}: its tasks differ from this run's (same env, "
                "seed and numbers of tasks are needed)"
            )
        check_settings(snap, file, self.settings(), moved=MOVED_SETTINGS)
        out = restore_run(snap, file, self.agent, self.algo, self.replay)
        try:
            self.rng.bit_generator.state = json.loads(snap["runner_rng"])
            samplers = (self.sampler, self.eval_sampler)
            for sampler, state in zip(samplers, json.loads(snap["env_rngs"]), strict=True):
                sampler.env.np_random.bit_generator.state = state
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"the runner's random states in {file}: {exc}") from None
        self.n_rollout_columns = snap.get("n_rollout_columns")
        return out

    # ------------------------------------------------------------------ collection
    def posterior(self, task: int) -> Belief:
        """The posterior of a fresh context sample of train task ``task``'s encoder buffer."""
        context = self.replay.sample_context(
            [task], self.algo.embedding_batch_size, device=self.agent.device
        )
        return self.agent.infer_posterior(context)

    def collect(self, task: int, n_steps: int, *, posterior: bool, to_encoder: bool) -> int:
        """Collect at least ``n_steps`` steps (whole trajectories) on train task ``task``.

        Args:
            task: the train task's index.
            n_steps: steps to collect (0: nothing).
            posterior: infer the posterior from the encoder buffer after every
                ``update_post_train`` trajectories (the phase starts from the prior).
            to_encoder: also write the trajectories to the task's encoder buffer.

        Returns:
            The steps collected.
        """

        def write(episodes: list[Episode], more: bool) -> Belief | None:
            last = episodes[-1]
            self.replay.append_samples(
                task, last.samples, to_encoder=to_encoder, context=last.context
            )
            if posterior and more and len(episodes) % self.update_post_train == 0:
                return self.posterior(task)
            return None

        self.sampler.set_task(self.train_tasks[task])
        episodes = self.sampler.collect(self.agent, n_steps, after_episode=write)
        steps = sum(e.length for e in episodes)
        self.stats.add_batch(steps, [e.traj_info for e in episodes])
        return steps

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float]:
        """The evaluation columns of the row (see the module docstring)."""
        picked = [int(t) for t in self.rng.integers(self.n_train_tasks, size=self.n_eval_tasks)]
        sample = functools.partial(self.replay.sample_context, device=self.agent.device)
        out, test_online = meta_evaluation(
            self.eval_sampler,
            self.agent,
            train_tasks=[self.train_tasks[t] for t in picked],
            contexts=[
                functools.partial(sample, [t], self.algo.embedding_batch_size) for t in picked
            ],
            test_tasks=self.eval_tasks,
            n_episodes=max(1, self.num_steps_per_eval // self.max_path_length),
            n_runs=self.num_evals,
            n_steps=self.num_steps_per_eval,
            first_posterior=self.num_exp_traj_eval,
        )
        if self.n_rollout_columns is None:  # the header of progress.csv stays fixed
            self.n_rollout_columns = len(test_online)
        for k in range(self.n_rollout_columns):
            out[f"AverageReturn_rollout_{k}"] = (
                float(test_online[k]) if k < len(test_online) else float("nan")
            )
        return out

    def online_returns(self, tasks: list[Any]) -> tuple[list[float], np.ndarray]:
        """``tdrl.samplers.episodes.online_returns`` of ``tasks``, as the evaluation runs it."""
        return episodes_online_returns(
            self.eval_sampler,
            self.agent,
            tasks,
            n_runs=self.num_evals,
            n_steps=self.num_steps_per_eval,
            first_posterior=self.num_exp_traj_eval,
        )

    # ------------------------------------------------------------------ logging
    def log_row(
        self, itr: int, infos: Mapping[str, list[torch.Tensor]], evals: Mapping[str, float]
    ) -> dict[str, float]:
        """Write the row of ``itr`` (and its snapshot); returns it."""
        logger, stats = get_logger(), self.stats
        check_finite_agent(itr, self.agent)
        stats.cum_time = time.perf_counter() - self.t_start
        row: dict[str, float] = {
            "Diagnostics/Iteration": itr,
            "Diagnostics/CumSteps": stats.cum_steps,
            "Diagnostics/CumCompletedTrajs": stats.cum_completed_trajs,
            "Diagnostics/CumUpdates": self.algo.update_counter,
            "Diagnostics/CumTime (s)": stats.cum_time,
            **evals,
            "ReturnAverage": evals["AverageReturn_all_test_tasks"],
        }
        for key, values in infos.items():
            row[f"{key}Average"] = float(torch.stack(values).float().mean())
        for key, value in row.items():
            logger.record_tabular(key, value)

        def make_snapshot(progress: dict[str, Any]) -> dict[str, Any]:
            samplers = (self.sampler, self.eval_sampler)
            return {
                **snapshot(itr, stats, self.agent, self.algo, progress=progress),
                "runner_rng": json.dumps(self.rng.bit_generator.state),
                "env_rngs": json.dumps([s.env.np_random.bit_generator.state for s in samplers]),
                "n_rollout_columns": self.n_rollout_columns,
                "settings": self.settings(),
                "tasks": self.tasks_json,
            }

        commit_log_point(itr, make_snapshot, self.replay if self.snapshot_replay else None)
        return row
