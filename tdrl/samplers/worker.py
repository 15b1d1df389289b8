"""A parallel sampler's worker process: its envs, its columns of the shared buffer, its loop.

A worker builds and starts the envs of its column slice ``[b0, b1)`` of the shared-memory
``[T, B]`` buffer (env ``b`` seeded ``seed + b``, as in ``SerialSampler``; gymnasium or
TorchRL envs, built here from ``env_fn``, stepped by ``make_env_runner``'s loop), sends
``("ready", None)`` and then serves its parent's commands, one message each way per batch:

* ``("collect", (mode, itr))``: put its shared-memory copy of the agent in ``mode``
  (``"sample"``, ``"eval"`` or ``"train"``) and collect a whole batch with it
  (``CpuSampler``); answers ``("done", traj_infos)``;
* ``("serve", None)``: collect a batch with actions computed by the parent
  (``GpuSampler``, ``AlternatingSampler``): per time step it writes its inputs, releases
  ``obs_ready``, waits on ``act_ready`` and steps its envs; answers ``("done", traj_infos)``;
* ``("close", None)``: close its envs and exit.

An exception is sent to the parent as ``("error", traceback)`` (``report_failure``), where
it raises ``ChildFailed`` naming the worker. The worker is started with
``tdrl.utils.processes.start_child``, so it exits by itself once the parent is gone, even
while it waits on a semaphore for actions that will never come.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Semaphore

import torch
from tensordict import TensorDict

from tdrl.agents.base import Agent
from tdrl.samplers.base import SamplerSettings
from tdrl.samplers.env_build import make_envs
from tdrl.samplers.env_loop import EnvLoop
from tdrl.samplers.env_setup import env_specs
from tdrl.samplers.torchrl_loop import make_env_runner
from tdrl.utils.cpu import pin_process
from tdrl.utils.processes import report_failure


def set_worker_affinity(cpus: Sequence[int] | None, torch_threads: int) -> None:
    """Pin this process to ``cpus`` and set torch's thread count.

    Pinning is skipped, with a warning, where the platform or the container refuses it.
    """
    if cpus:
        pin_process(cpus)
    torch.set_num_threads(torch_threads)


def run_worker(
    conn: Connection,
    obs_ready: Semaphore,
    act_ready: Semaphore,
    *,
    settings: SamplerSettings,
    columns: tuple[int, int],
    samples: TensorDict,
    agent: Agent | None,
    seed: int,
    discount: float,
    cpus: Sequence[int] | None,
    torch_threads: int,
) -> None:
    """A worker's life (see the module docstring); the target of its process.

    Args:
        conn: this worker's end of its pipe to the parent.
        obs_ready: released once this worker's inputs of a time step are written.
        act_ready: released by the parent once the actions of a time step are written.
        settings: the sampler's settings.
        columns: ``(b0, b1)``, the envs (and buffer columns) this worker steps.
        samples: the whole shared-memory ``[T, B]`` buffer.
        agent: the shared-memory agent copy (``CpuSampler``), or None.
        seed: the sampler's seed.
        discount: for ``TrajInfo.DiscountedReturn``.
        cpus: CPUs to pin this worker to (None: no pinning).
        torch_threads: torch threads of this worker.
    """
    with report_failure(conn):
        set_worker_affinity(cpus, torch_threads)
        env_ranks = list(range(*columns))
        runner = start_env_runner(settings, env_ranks, seed=seed, discount=discount)
        runner.bind(samples[:, columns[0] : columns[1]])
        set_mode: dict[str, Callable[[int], None]] = {}
        if agent is not None:
            set_mode = prepare_agent(agent, samples.shape[1], env_ranks, seed)
        conn.send(("ready", None))
        _serve(conn, runner, agent, set_mode, obs_ready, act_ready)


def start_env_runner(
    settings: SamplerSettings, env_ranks: list[int], *, seed: int, discount: float
) -> EnvLoop:
    """Build the envs of ``env_ranks`` (env ``b`` seeded ``seed + b``), their loop, start them.

    What a parallel sampler's worker and a ``RaySampler`` actor do first.
    """
    envs = make_envs(settings.env_fn, settings.env_kwargs, len(env_ranks))
    runner = make_env_runner(
        envs,
        env_specs(envs[0], settings.extra_keys),
        env_ranks=env_ranks,
        seed=seed,
        traj_info_cls=settings.traj_info_cls,
        discount=discount,
        mid_batch_reset=settings.mid_batch_reset,
    )
    runner.start(settings.max_decorrelation_steps)
    return runner


def prepare_agent(
    agent: Agent, batch_B: int, env_ranks: list[int], seed: int
) -> dict[str, Callable[[int], None]]:
    """Set a worker's agent copy for its env ranks and seed its own stream; its mode setters.

    Returns:
        ``{"sample": agent.sample_mode, "eval": ..., "train": ...}``.
    """
    agent.collector_initialize(batch_B, env_ranks)
    torch.manual_seed(seed + 7919 * (1 + env_ranks[0]))  # own stream per worker
    return {"sample": agent.sample_mode, "eval": agent.eval_mode, "train": agent.train_mode}


def _serve(
    conn: Connection,
    runner: EnvLoop,
    agent: Agent | None,
    set_mode: dict[str, Callable[[int], None]],
    obs_ready: Semaphore,
    act_ready: Semaphore,
) -> None:
    """Answer the parent's commands until ``close``."""
    T = runner.samples.shape[0]
    while True:
        command, arg = conn.recv()
        if command == "collect" and agent is not None:
            mode, itr = arg
            set_mode[mode](itr)
            with torch.no_grad():
                completed = runner.collect(agent)
            conn.send(("done", completed))
        elif command == "serve":
            completed = []
            for t in range(T):
                runner.write_inputs(t)
                obs_ready.release()
                act_ready.acquire()
                completed.extend(runner.step_envs(t))
            conn.send(("done", completed))
        elif command == "close":
            runner.close()
            conn.send(("closed", None))
            return
        else:
            raise ValueError(f"unknown worker command {command!r}")
