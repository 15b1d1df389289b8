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
3. ``num_train_steps_per_itr`` calls of ``PEARL.update`` on ``meta_batch`` train tasks
   drawn with replacement (``batch_size`` RL and ``embedding_batch_size`` context
   transitions per task);
4. evaluation with the deterministic policy (``agent.eval_mode``; ``z`` is still a draw):
   (a) on ``n_eval_tasks`` train tasks drawn with replacement, ``num_steps_per_eval //
   max_episode_steps`` trajectories, each with ``z`` from the posterior of a fresh context
   sample of the encoder buffer: ``AverageTrainReturn_all_train_tasks`` (mean return);
   (b) on the same train tasks and (c) on the test tasks, ``num_evals`` times: start from
   the prior, accumulate the context of the trajectories online, infer the posterior after
   every trajectory from the ``num_exp_traj_eval``-th on, roll out until
   ``num_steps_per_eval`` steps: ``AverageReturn_all_train_tasks`` and
   ``AverageReturn_all_test_tasks`` are the return of the *last* trajectory (averaged over
   runs and tasks), ``AverageReturn_rollout_{k}`` the test tasks' return of the ``k``-th.

With ``sparse_rewards`` (sparse-point-robot) the encoder sees ``info["sparse_reward"]``
(encoder buffer and online context, as oyster's agent and ``sample_context``), the critic
the dense reward, and the evaluation reports sparse returns.

Each iteration writes one ``progress.csv`` row through the active ``tdrl.logging`` logger
and a snapshot by its ``snapshot_mode``: ``agent_state_dict``, ``algo_state_dict``, the
counters, the global, runner and env random states, the tasks as JSON data and, with
``snapshot_replay``, the per-task buffers (``run_dir/replay``, in the crash-safe order of
``tdrl.logging.snapshot.commit_log_point``); the task lists also go to ``debug.log``.
``resume_from`` continues a run from its snapshot (the tasks must be the same); a train
task whose RL buffer is empty when an iteration starts (iteration 0, or a resume without a
saved replay) first gets ``num_initial_steps`` with ``z`` from the prior.

The module is over 450 lines: oyster's collection schedule, its three-part evaluation and
the snapshot/resume of the run are one runner's state (the same envs, tasks, replay and
random generators), and reading them together is how the schedule is checked against
the reference.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tensordict import TensorDict

from tdrl import keys
from tdrl.agents.qpg.pearl_agent import PearlAgent
from tdrl.algos.qpg.pearl import PEARL
from tdrl.envs.meta import META_ENV_NAMES, make_meta_env, task_to_json
from tdrl.envs.spaces import space_to_spec
from tdrl.logging import find_snapshot, get_logger, load_snapshot
from tdrl.logging.files import SnapshotError
from tdrl.logging.snapshot import (
    check_resume,
    commit_log_point,
    describe,
    repair_progress,
    restore_replay,
    restore_state,
    run_identity,
)
from tdrl.replays.multi_task import MultiTaskReplay
from tdrl.runners.base import cpu_state
from tdrl.utils.checks import (
    ArgumentError,
    check_bool,
    check_choice,
    check_instance,
    check_int,
    check_mapping,
)
from tdrl.utils.seed import rng_state, set_seed
from tdrl.utils.tensor import check_device

#: Families whose ``step`` reports ``info["sparse_reward"]`` (``sparse_rewards=True``).
SPARSE_FAMILIES = ("sparse-point-robot",)

#: What a resumed run must share with its snapshot beyond ``run_identity``: the settings
#: of the agent, the algorithm and the schedule (attribute names; ``settings``).
AGENT_SETTINGS = (
    "latent_size",
    "encoder_hidden_sizes",
    "hidden_sizes",
    "information_bottleneck",
    "use_next_obs_in_context",
    "use_context",
    "sac_variant",
    "log_std_min",
    "log_std_max",
)
ALGO_SETTINGS = (
    "discount",
    "kl_lambda",
    "kl_reduction",
    "reward_scale",
    "policy_mean_reg",
    "policy_std_reg",
    "target_update_tau",
    "learning_rates",
    "clip_grad_norm",
    "sac_variant",
    "target_entropy_arg",
    "fixed_alpha",
    "alpha_lr",
)
RUNNER_SETTINGS = (
    "num_initial_steps",
    "num_tasks_sample",
    "num_steps_prior",
    "num_steps_posterior",
    "num_extra_rl_steps_posterior",
    "num_train_steps_per_itr",
    "meta_batch",
    "batch_size",
    "embedding_batch_size",
    "update_post_train",
    "num_exp_traj_eval",
    "num_steps_per_eval",
    "num_evals",
    "replay_size",
    "sparse_rewards",
)


class Trajectory(NamedTuple):
    """One collected episode.

    Attributes:
        samples: ``[T, 1]`` sampler batch (``keys.AGENT_INPUTS``, ``action`` and ``next``).
        context_samples: what the encoder sees: ``samples`` with the sparse reward when the
            runner uses sparse rewards, else ``samples`` itself.
        ret: the undiscounted return, of the sparse reward with ``sparse_rewards``.
    """

    samples: TensorDict
    context_samples: TensorDict
    ret: float


class MetaRl:
    """Meta-trains PEARL on a multi-task env and evaluates it (see the module docstring).

    Defaults are oyster's ``configs/default.py``; its point-robot config sets
    ``n_train_tasks=80, n_eval_tasks=20, num_initial_steps=200, num_steps_prior=200,
    num_extra_rl_steps_posterior=200, num_train_steps_per_itr=1000,
    num_steps_per_eval=60`` (and ``reward_scale=100`` on the algorithm).

    Args:
        algo: the ``PEARL`` algorithm (initialised here).
        agent: the ``PearlAgent`` (initialised here from the env's spaces).
        env_name: a family of ``tdrl.envs.make_meta_env`` (``"point-robot"``, ...).
        env_kwargs: keyword arguments of the family (None: none).
        n_train_tasks: train tasks.
        n_eval_tasks: test tasks.
        n_iterations: iterations (one row each).
        seed: seeds torch, NumPy, the task draw, the envs and the replay.
        device: where the agent acts and trains (``"cpu"``, ``"cuda"``, ...); None keeps it
            where its parameters are. Checked first, before anything is built.
        num_initial_steps: steps per train task at iteration 0, ``z`` from the prior.
        num_tasks_sample: train tasks collected for per iteration.
        num_steps_prior: steps per sampled task with ``z`` from the prior.
        num_steps_posterior: steps per sampled task with ``z`` from the posterior, into
            both buffers.
        num_extra_rl_steps_posterior: steps per sampled task with ``z`` from the posterior,
            into the RL buffer only.
        num_train_steps_per_itr: ``PEARL.update`` calls per iteration.
        meta_batch: tasks per update (None: ``algo.meta_batch``).
        batch_size: RL transitions per task and update (None: ``algo.batch_size``).
        embedding_batch_size: context transitions per task (None:
            ``algo.embedding_batch_size``), also for the collection's posterior.
        update_post_train: trajectories between posterior updates while collecting.
        num_exp_traj_eval: trajectories from the prior before the first posterior in the
            online evaluation.
        num_steps_per_eval: steps of each evaluation run per task.
        num_evals: online evaluation runs per task.
        replay_size: capacity of each task's RL buffer (oyster: 1e6); the encoder buffer
            holds ``min(replay_size, steps written between clears)``.
        sparse_rewards: the encoder and the evaluation use ``info["sparse_reward"]``.
        resume_from: a snapshot file or run directory to continue from (agent, algorithm,
            counters, random states and, if saved with it, the replay); the run must have
            the same algorithm, agent, env, tasks and seed.
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
        meta_batch: int | None = None,
        batch_size: int | None = None,
        embedding_batch_size: int | None = None,
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
        self.meta_batch = check_int(
            "meta_batch", algo.meta_batch if meta_batch is None else meta_batch, minimum=1
        )
        self.batch_size = check_int(
            "batch_size", algo.batch_size if batch_size is None else batch_size, minimum=1
        )
        self.embedding_batch_size = check_int(
            "embedding_batch_size",
            algo.embedding_batch_size if embedding_batch_size is None else embedding_batch_size,
            minimum=1,
        )
        self.update_post_train = check_int("update_post_train", update_post_train, minimum=1)
        self.num_exp_traj_eval = check_int("num_exp_traj_eval", num_exp_traj_eval, minimum=1)
        self.num_steps_per_eval = check_int("num_steps_per_eval", num_steps_per_eval, minimum=1)
        self.num_evals = check_int("num_evals", num_evals, minimum=1)
        self.replay_size = check_int("replay_size", replay_size, minimum=3)
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

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict[str, float]:
        """Run every iteration; returns the last logged row."""
        start_itr = self.startup()
        row: dict[str, float] = {}
        for itr in range(start_itr, self.n_iterations):
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
            for _ in range(self.num_train_steps_per_itr):
                tasks = [
                    int(t) for t in self.rng.integers(self.n_train_tasks, size=self.meta_batch)
                ]
                device = self.agent.device  # moved once here, not in the (compiled) step
                rl_batch = self.replay.sample_batch(tasks, self.batch_size, device=device)
                context = self.replay.sample_context(
                    tasks, self.embedding_batch_size, device=device
                )
                for key, value in self.algo.update(rl_batch, context).items():
                    infos.setdefault(key, []).append(value)
            self.agent.eval_mode(itr)
            evals = self.evaluate()
            row = self.log_row(itr, infos, evals)
        return row

    def startup(self) -> int:
        """Seed, draw the tasks, build the envs and the replay, initialise agent and algo.

        Returns:
            The first iteration to run (after a resumed snapshot's).

        Raises:
            FileNotFoundError: ``resume_from`` holds no snapshot.
            SnapshotError: the snapshot is corrupt, of another run or finished, or does not
                fit (named).
        """
        snap, snap_file = None, None
        if self.resume_from is not None:
            snap_file = find_snapshot(self.resume_from)
            snap = load_snapshot(snap_file)
            repair_progress(snap, snap_file)  # also when the checks below refuse to go on
            check_resume(snap, snap_file, identity=self.identity(), n_itr=sys.maxsize, n_steps=0)
            if int(snap["itr"]) + 1 >= self.n_iterations:
                raise SnapshotError(
                    f"the run in {snap_file} is finished: its snapshot is of iteration "
                    f"{int(snap['itr'])}, the last of n_iterations={self.n_iterations}; pass a "
                    "larger n_iterations to train it further"
                )
        set_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)
        self.envs: list[Any] = [make_meta_env(self.env_name, **self.env_kwargs) for _ in range(2)]
        env = self.envs[0]
        tasks = env.sample_tasks(self.n_train_tasks + self.n_eval_tasks, seed=self.seed)
        self.train_tasks, self.eval_tasks = tasks[: self.n_train_tasks], tasks[self.n_train_tasks :]
        for i, e in enumerate(self.envs):
            e.reset(seed=self.seed + 1 + i)
        self.max_path_length = int(getattr(env, "max_episode_steps", 0) or 1)
        if self.replay_size < self.max_path_length:
            raise ArgumentError(
                f"replay_size must hold a whole trajectory ({self.max_path_length} steps of "
                f"{self.env_name}), got {self.replay_size}"
            )
        self.agent.initialize(space_to_spec(env.observation_space), space_to_spec(env.action_space))
        if self.device is not None:
            self.agent.to(self.device)
        self.algo.initialize(self.agent)
        written = max(self.num_initial_steps, self.num_steps_prior + self.num_steps_posterior)
        self.replay = MultiTaskReplay(
            self.n_train_tasks,
            size=self.replay_size,
            batch_B=1,
            encoder_size=min(self.replay_size, written + 2 * self.max_path_length),
            discount=self.algo.discount,
            seed=self.seed,
        )
        self.cum_steps, self.cum_trajs, self.t_start = 0, 0, time.perf_counter()
        self.tasks_json = {
            "train_tasks": [task_to_json(t) for t in self.train_tasks],
            "eval_tasks": [task_to_json(t) for t in self.eval_tasks],
        }
        start_itr = 0
        if snap is not None and snap_file is not None:
            start_itr = self.restore(snap, snap_file)
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
        env = {"name": self.env_name, **self.env_kwargs}
        env |= {"n_train_tasks": self.n_train_tasks, "n_eval_tasks": self.n_eval_tasks}
        env["seed"] = self.seed
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
        parts = (
            ("agent", self.agent, AGENT_SETTINGS),
            ("algo", self.algo, ALGO_SETTINGS),
            ("runner", self, RUNNER_SETTINGS),
        )
        return {
            f"{part}.{name}": describe(getattr(obj, name, None))
            for part, obj, names in parts
            for name in names
        }

    def restore(self, snap: Mapping[str, Any], file: Path) -> int:
        """Load a snapshot of this run (see ``startup``); returns the iteration to run next."""
        if snap.get("tasks") != self.tasks_json:
            raise SnapshotError(
                f"cannot resume from {file}: its tasks differ from this run's (same env, "
                "seed and numbers of tasks are needed)"
            )
        saved, now = snap.get("settings"), self.settings()
        if not isinstance(saved, Mapping):
            raise SnapshotError(f"{file} does not record the run's settings: it cannot be checked")
        diffs = [
            f"{key} {saved.get(key)!r} in the snapshot, {value!r} requested"
            for key, value in now.items()
            if saved.get(key) != value
        ]
        if diffs:
            raise SnapshotError(f"cannot resume from {file}: " + "; ".join(diffs))
        start_itr = restore_state(snap, self.agent, self.algo, file=file)
        try:
            self.rng.bit_generator.state = json.loads(snap["runner_rng"])
            for env, state in zip(self.envs, json.loads(snap["env_rngs"]), strict=True):
                env.np_random.bit_generator.state = state
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"the runner's random states in {file}: {exc}") from None
        self.cum_steps = int(snap["cum_steps"])
        self.cum_trajs = int(snap.get("cum_completed_trajs", 0))
        self.t_start = time.perf_counter() - float(snap.get("cum_time", 0.0))
        self.n_rollout_columns = snap.get("n_rollout_columns")
        restore_replay(self.replay, snap, file)
        get_logger().log(f"resumed from iteration {start_itr - 1} ({self.cum_steps} steps)")
        return start_itr

    # ------------------------------------------------------------------ collection
    @torch.no_grad()
    def _posterior(self, context: TensorDict) -> tuple[torch.Tensor, torch.Tensor]:
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
        env = self.envs[0]
        env.set_task(self.train_tasks[task])
        mu, var = self.agent.prior_z(1)
        steps, trajs = 0, 0
        while steps < n_steps:
            self.agent.set_z(self.agent.sample_z(mu, var))
            traj = self.rollout(env)
            self.replay.append_samples(task, traj.samples, to_encoder=False)
            if to_encoder:
                encoder = self.replay.encoder_buffers[task]
                encoder.append_samples(traj.context_samples[-encoder.T_capacity :])
            steps, trajs = steps + traj.samples.shape[0], trajs + 1
            if posterior and trajs % self.update_post_train == 0 and steps < n_steps:
                mu, var = self._posterior(
                    self.replay.sample_context([task], self.embedding_batch_size)
                )
        self.cum_steps += steps
        self.cum_trajs += trajs
        return steps

    def rollout(self, env: Any) -> Trajectory:
        """One episode of ``env`` with the agent's current ``z`` and mode."""
        obs, _ = env.reset()
        act_size = int(np.prod(env.action_space.shape))
        o = torch.as_tensor(np.asarray(obs), dtype=torch.float32).reshape(1, -1)
        prev_action, prev_reward = torch.zeros(1, act_size), torch.zeros(1, 1)
        observations, actions = [o], []  # one tensor per step; numbers in plain lists
        rewards, sparse, terminated, truncated = [], [], [], []
        while True:
            action, _ = self.agent.step(o, prev_action, prev_reward)
            action = action.cpu().reshape(1, act_size)
            obs, reward, term, trunc, info = env.step(action[0].numpy())
            o = torch.as_tensor(np.asarray(obs), dtype=torch.float32).reshape(1, -1)
            observations.append(o)  # the next step's input too
            actions.append(action)
            rewards.append(float(reward))
            sparse.append(float(info["sparse_reward"]) if self.sparse_rewards else rewards[-1])
            terminated.append(bool(term))
            truncated.append(bool(trunc))
            prev_action, prev_reward = action, torch.tensor([[rewards[-1]]])
            if term or trunc:
                break
        T = len(actions)
        obs_t = torch.stack(observations)  # [T + 1, 1, obs]
        act_t = torch.stack(actions)  # [T, 1, act]
        rew_t = torch.tensor(rewards).reshape(T, 1, 1)
        term_t = torch.tensor(terminated).reshape(T, 1, 1)
        trunc_t = torch.tensor(truncated).reshape(T, 1, 1)
        samples = TensorDict(
            {
                keys.OBSERVATION: obs_t[:-1],
                keys.PREV_ACTION: torch.cat([torch.zeros(1, 1, act_size), act_t[:-1]]),
                keys.PREV_REWARD: torch.cat([torch.zeros(1, 1, 1), rew_t[:-1]]),
                keys.ACTION: act_t,
                keys.NEXT: {
                    keys.OBSERVATION: obs_t[1:],
                    keys.REWARD: rew_t,
                    keys.DONE: term_t | trunc_t,
                    keys.TERMINATED: term_t,
                    keys.TRUNCATED: trunc_t,
                },
            },
            batch_size=[T, 1],
        )
        context_samples = samples
        if self.sparse_rewards:
            sparse_t = torch.tensor(sparse).reshape(T, 1, 1)
            context_samples = samples.clone()
            context_samples.set(keys.NEXT_REWARD, sparse_t)
            context_samples.set(keys.PREV_REWARD, torch.cat([torch.zeros(1, 1, 1), sparse_t[:-1]]))
        return Trajectory(samples, context_samples, float(torch.tensor(sparse).sum()))

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float]:
        """The evaluation columns of the row (see the module docstring)."""
        env = self.envs[1]
        picked = [int(t) for t in self.rng.integers(self.n_train_tasks, size=self.n_eval_tasks)]
        n_trajs = max(1, self.num_steps_per_eval // self.max_path_length)
        replay_returns = []
        for task in picked:
            env.set_task(self.train_tasks[task])
            rets = []
            for _ in range(n_trajs):
                context = self.replay.sample_context([task], self.embedding_batch_size)
                self.agent.set_z(self.agent.sample_z(*self._posterior(context)))
                rets.append(self.rollout(env).ret)
            replay_returns.append(float(np.mean(rets)))
        train_final, _ = self.online_returns([self.train_tasks[t] for t in picked])
        test_final, test_online = self.online_returns(self.eval_tasks)
        out = {
            "AverageTrainReturn_all_train_tasks": float(np.mean(replay_returns)),
            "AverageReturn_all_train_tasks": float(np.mean(train_final)),
            "AverageReturn_all_test_tasks": float(np.mean(test_final)),
        }
        if self.n_rollout_columns is None:  # the header of progress.csv stays fixed
            self.n_rollout_columns = len(test_online)
        for k in range(self.n_rollout_columns):
            out[f"AverageReturn_rollout_{k}"] = (
                float(test_online[k]) if k < len(test_online) else float("nan")
            )
        return out

    def online_returns(self, tasks: list[Any]) -> tuple[list[float], np.ndarray]:
        """Online evaluation of ``tasks`` from the prior, ``num_evals`` runs each.

        Returns:
            Per task the last trajectory's return (mean over runs); and the mean return
            per rollout index over tasks and runs (cut to the shortest run).
        """
        env = self.envs[1]
        final, online = [], []
        for task in tasks:
            env.set_task(task)
            runs = []
            for _ in range(self.num_evals):
                mu, var = self.agent.prior_z(1)
                steps, rets, context = 0, [], []
                while steps < self.num_steps_per_eval:
                    self.agent.set_z(self.agent.sample_z(mu, var))
                    traj = self.rollout(env)
                    steps += traj.samples.shape[0]
                    rets.append(traj.ret)
                    context.append(traj.context_samples)
                    if len(rets) >= self.num_exp_traj_eval:
                        mu, var = self._posterior(torch.cat(context, 0).squeeze(1).unsqueeze(0))
                runs.append(rets)
            final.append(float(np.mean([r[-1] for r in runs])))
            n = min(len(r) for r in runs)
            online.append(np.mean([r[:n] for r in runs], axis=0))
        n = min(len(o) for o in online)
        return final, np.mean([o[:n] for o in online], axis=0)

    # ------------------------------------------------------------------ logging
    def log_row(
        self, itr: int, infos: Mapping[str, list[torch.Tensor]], evals: Mapping[str, float]
    ) -> dict[str, float]:
        """Write the row of ``itr`` (and its snapshot); returns it."""
        logger = get_logger()
        row: dict[str, float] = {
            "Diagnostics/Iteration": itr,
            "Diagnostics/CumSteps": self.cum_steps,
            "Diagnostics/CumCompletedTrajs": self.cum_trajs,
            "Diagnostics/CumUpdates": self.algo.update_counter,
            "Diagnostics/CumTime (s)": time.perf_counter() - self.t_start,
            **evals,
            "ReturnAverage": evals["AverageReturn_all_test_tasks"],
        }
        for key, values in infos.items():
            row[f"{key}Average"] = float(torch.stack(values).float().mean())
        for key, value in row.items():
            logger.record_tabular(key, value)

        def make_snapshot(progress: dict[str, Any]) -> dict[str, Any]:
            return {
                "itr": itr,
                "cum_steps": self.cum_steps,
                "cum_completed_trajs": self.cum_trajs,
                "cum_time": row["Diagnostics/CumTime (s)"],
                "agent_state_dict": cpu_state(self.agent.state_dict()),
                "algo_state_dict": cpu_state(self.algo.state_dict()),
                "rng": rng_state(),
                "runner_rng": json.dumps(self.rng.bit_generator.state),
                "env_rngs": json.dumps([e.np_random.bit_generator.state for e in self.envs]),
                "n_rollout_columns": self.n_rollout_columns,
                "run": self.identity(),
                "settings": self.settings(),
                "tasks": self.tasks_json,
                "progress": progress,
            }

        commit_log_point(itr, make_snapshot, self.replay if self.snapshot_replay else None)
        return row
