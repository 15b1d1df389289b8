"""``RaySampler``: sampler workers as Ray actors, on this machine or across a Ray cluster.

Each actor steps a contiguous slice of the B envs with the shared env loop
(``tdrl.samplers.torchrl_loop.make_env_runner``, so gymnasium and TorchRL envs, recurrent
agents and ``prev_action``/``prev_reward`` work as in every sampler) and acts with its own
CPU copy of the agent, as ``CpuSampler``'s workers do; env ``b`` is seeded ``seed + b``
and the agent's per-env state (Ape-X's per-env ε for DQN and R2D1) is set for the actor's
global env ranks (``collector_initialize``), so with a deterministic agent the
``[T, B]`` batch equals ``SerialSampler``'s. The parent (the learner) assembles the
actors' slices into one ``[T, B]`` buffer; offline evaluation runs in the parent on its own
envs (``Evaluator``).

**Weights** go through Ray's object store: the learner's agent state is put there once
per ``weight_sync_interval`` batches and each actor loads the newest version it has not
loaded before acting.

**Two schedules:**

* ``prefetch=False`` (synchronous, as ``CpuSampler``): each ``obtain_samples`` sends the
  current weights and waits for every actor's batch.
* ``prefetch=True`` (the Ape-X / R2D2 layout): as soon as a batch is assembled, every actor
  starts the next one with the weights published then, so the actors sample while the
  learner optimises; each batch is acted with weights one optimisation (or, with
  ``weight_sync_interval=k``, up to ``k``) behind, and in the mode and iteration of the
  call before. Under ``AsyncRl`` (a sampler thread) the replay-ratio throttle applies as
  for any sampler.

**Failures.** An actor that raises (env or agent code) fails the run with ``ChildFailed``
naming it (``tdrl-ray-sampler-<w>``) and its traceback. An actor that is lost (its
process or node died, or ``ray.kill``) is named the same way and, per
``on_worker_failure``, either fails the run (``"raise"``, default) or is replaced
(``"restart"``): a new actor steps the same columns with fresh envs (seeded
``seed + b + 1_000_003 * restarts``) and collects the lost batch again, so the batch keeps
its ``[T, B]`` shape (replay buffers hold fixed columns); ``restarts`` counts them and
``max_restarts`` bounds them. An actor that returns no batch for ``worker_timeout_s``
(start-up: at least 300 s) is reported stuck.

Ray is imported at ``initialize`` (``pip install "tdrl[ray]"``), which joins the Ray
instance this process joined or ``address``, or starts a local one (shut down again by
``shutdown``). A sampler built in another process (``AsyncRl(sampler_process=True)``)
joins no instance of its parent by itself: give it ``address="auto"`` there.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from tdrl._compat import TensorSpec
from tdrl.agents.base import Agent
from tdrl.envs.gym import make_gym_env
from tdrl.envs.traj_info import TrajInfo
from tdrl.samplers.base import SamplerSettings, iterate
from tdrl.samplers.env_build import check_columns, close_env, make_example_env
from tdrl.samplers.env_setup import EnvSpecs, allocate_samples, env_specs, initialize_agent
from tdrl.samplers.evaluation import Evaluator
from tdrl.samplers.parallel import env_slices
from tdrl.samplers.ray_worker import RaySamplerWorker, copy_from_wire, to_wire
from tdrl.utils.checks import ArgumentError, check_bool, check_choice, check_int, check_range
from tdrl.utils.finite import check_env_batch
from tdrl.utils.processes import STARTUP_ALLOWANCE_S, STUCK_AFTER_S, ChildFailed
from tdrl.utils.ray_support import connect, import_ray
from tdrl.utils.timeouts import check_timeout

#: Seed offset per restart of an actor (a prime, so restarted envs see new episodes).
RESTART_SEED_STRIDE = 1_000_003


class RaySampler:
    """Sampler workers as Ray actors, each stepping a slice of the envs with its agent copy.

    Args:
        env_fn: builds one env from ``**env_kwargs`` (gymnasium or TorchRL); must be
            importable by the actors (module level), on every node of a cluster.
        env_kwargs: keyword arguments of ``env_fn``.
        batch_T: time steps per batch.
        batch_B: envs over all actors.
        mid_batch_reset: see ``SerialSampler``.
        n_workers: actors (default: as many as the Ray instance has CPUs for, at
            ``cpus_per_worker`` each, at most one per env).
        max_decorrelation_steps: random start-up steps per env, in ``[0, max)``.
        eval_n_envs: envs for offline evaluation (in this process; 0: none).
        eval_env_kwargs: ``env_kwargs`` of the evaluation envs (default: ``env_kwargs``).
        eval_max_steps: env steps per evaluation, over all eval envs.
        eval_max_trajectories: stop evaluating once this many episodes completed.
        traj_info_cls: per-episode record class.
        extra_keys: env entries to record under ``("next", *key)``.
        address: the Ray instance (None: the one this process joined, else a new local
            one; ``"auto"``; ``"HOST:PORT"``; see ``tdrl.utils.ray_support.connect``).
        cpus_per_worker: CPUs each actor declares to Ray (a fraction packs several actors
            per CPU; Ray's CPUs are counts, not cores).
        torch_threads: torch threads per actor.
        prefetch: start each next batch as soon as one is returned (see the module
            docstring); False: synchronous batches.
        weight_sync_interval: batches between two weight broadcasts (1: every batch).
        on_worker_failure: ``"raise"`` or ``"restart"`` a lost actor.
        max_restarts: restarts allowed over the run (``"restart"`` only).
        worker_timeout_s: seconds an actor may take for a batch before it counts as stuck
            (start-up and first batch: at least 300 s); None: no limit.

    Attributes:
        settings: the checked arguments shared with ``SerialSampler``.
        restarts: actors replaced so far.
        startup_seconds: how long the actors took to start and return their first batch.
        last_traj_infos: the episodes that ended during the batch iteration yielded last.
    """

    samples: TensorDict
    observation_spec: TensorSpec
    action_spec: TensorSpec
    specs: EnvSpecs

    def __init__(
        self,
        env_fn: Callable[..., Any] = make_gym_env,
        env_kwargs: dict[str, Any] | None = None,
        *,
        batch_T: int,
        batch_B: int,
        mid_batch_reset: bool = True,
        n_workers: int | None = None,
        max_decorrelation_steps: int = 100,
        eval_n_envs: int = 0,
        eval_env_kwargs: dict[str, Any] | None = None,
        eval_max_steps: int | None = None,
        eval_max_trajectories: int | None = None,
        traj_info_cls: type[TrajInfo] = TrajInfo,
        extra_keys: Sequence[str | tuple[str, ...]] = (),
        address: str | None = None,
        cpus_per_worker: float = 1.0,
        torch_threads: int = 1,
        prefetch: bool = False,
        weight_sync_interval: int = 1,
        on_worker_failure: str = "raise",
        max_restarts: int = 10,
        worker_timeout_s: float | None = STUCK_AFTER_S,
    ):
        self.settings = SamplerSettings.from_arguments(locals())
        self.batch_spec = self.settings.batch_spec
        self.eval_n_envs = self.settings.eval_n_envs
        B = self.batch_spec.B
        self._n_workers = (
            None if n_workers is None else check_int("n_workers", n_workers, minimum=1, maximum=B)
        )
        if address is not None and not isinstance(address, str):
            raise ArgumentError(f"address must be a Ray address string or None, got {address!r}")
        self.address = address
        self.cpus_per_worker = check_range("cpus_per_worker", cpus_per_worker, 1e-4, 1e6)
        self.torch_threads = check_int("torch_threads", torch_threads, minimum=1)
        self.prefetch = check_bool("prefetch", prefetch)
        self.weight_sync_interval = check_int(
            "weight_sync_interval", weight_sync_interval, minimum=1
        )
        self.on_worker_failure = check_choice(
            "on_worker_failure", on_worker_failure, ("raise", "restart")
        )
        self.max_restarts = check_int("max_restarts", max_restarts, minimum=0)
        self.worker_timeout_s = check_timeout("worker_timeout_s", worker_timeout_s)
        self.evaluator = Evaluator(self.settings)
        self.agent: Agent | None = None
        self.restarts = 0
        self.startup_seconds: float | None = None
        self.last_traj_infos: list[TrajInfo] = []
        self._ray: Any = None
        self._started_ray = False
        self._actors: list[Any] = []
        self._pending: list[Any] = []  # one in-flight batch per actor (prefetch)
        self._actor_version: list[int] = []
        self._version = -1
        self._weights: Any = None
        self._batches = 0

    @property
    def n_workers(self) -> int:
        """The actors (known once ``initialize`` has asked Ray for its CPUs)."""
        if self._n_workers is None:
            raise RuntimeError("n_workers is chosen by initialize when not given")
        return self._n_workers

    # --------------------------------------------------------------------------- set-up
    def initialize(
        self, agent: Agent, *, seed: int = 0, traj_info_kwargs: dict[str, Any] | None = None
    ) -> TensorDict:
        """Join Ray, read the specs, initialise the agent, allocate the buffer.

        The actors start at the first batch (after the algorithm configured the agent).
        See ``Sampler.initialize`` (``tdrl.samplers.base``) for the arguments and result.
        """
        settings, B = self.settings, self.batch_spec.B
        self.seed = int(seed)
        example, columns = make_example_env(settings.env_fn, settings.env_kwargs)
        try:
            check_columns("batch_B", B, columns, settings.env_fn)
            self.specs = env_specs(example, settings.extra_keys)
        finally:
            close_env(example)
        self.observation_spec, self.action_spec = self.specs.observation, self.specs.action
        initialize_agent(agent, self.specs, B)
        self.agent = agent
        self._discount = float((traj_info_kwargs or {}).get("discount", 1.0))
        obs, action = self.observation_spec.zeros((B,)), self.action_spec.zeros((B,))
        self.samples = allocate_samples(
            settings, agent, self.specs, (obs, action, torch.zeros(B, 1))
        )
        self._ray = import_ray()
        self._started_ray = connect(self.address)
        n_envs = B // self.specs.columns
        cpus = float(self._ray.cluster_resources().get("CPU", 0))
        if self._n_workers is None:
            self._n_workers = max(1, min(n_envs, int(cpus // self.cpus_per_worker)))
        elif self._n_workers > n_envs:
            raise ArgumentError(f"n_workers={self._n_workers} exceeds the {n_envs} envs")
        self._check_room(cpus)
        self._slices = env_slices(B, self.n_workers, self.specs.columns)
        self._slice_leaves = [  # views of each actor's columns
            list(self.samples[:, b0:b1].values(True, True)) for b0, b1 in self._slices
        ]
        self.evaluator.initialize_for(
            self.specs, seed=self.seed, discount=self._discount, agent=agent
        )
        return self.samples

    def _check_room(self, cpus: float) -> None:
        """Refuse actors the Ray instance can never place (they would wait forever).

        Raises:
            ArgumentError: the instance has fewer CPUs than the actors declare.
        """
        need = self.n_workers * self.cpus_per_worker
        if need > cpus:
            raise ArgumentError(
                f"n_workers={self.n_workers} actors of cpus_per_worker={self.cpus_per_worker} "
                f"need {need:g} CPUs; the Ray instance has {cpus:g} (lower either, or start "
                "Ray with more num_cpus)"
            )

    def _start_actor(self, w: int, seed: int) -> Any:
        assert self.agent is not None
        b0, b1 = self._slices[w]
        actor_cls = self._ray.remote(RaySamplerWorker).options(
            num_cpus=self.cpus_per_worker, max_restarts=0, max_task_retries=0
        )
        return actor_cls.remote(
            self.settings,
            (b0, b1),
            self.samples[:, b0:b1].clone().zero_(),
            copy.deepcopy(self.agent).cpu(),
            self.batch_spec.B,
            seed,
            self._discount,
            self.torch_threads,
        )

    # ------------------------------------------------------------------------- sampling
    def _publish(self) -> None:
        """Put the agent's state in the object store when a broadcast is due."""
        assert self.agent is not None
        if self._weights is None or self._batches % self.weight_sync_interval == 0:
            state = {k: to_wire(v.detach().cpu()) for k, v in self.agent.state_dict().items()}
            self._weights = self._ray.put(state)
            self._version += 1

    def _submit(self, w: int, itr: int) -> Any:
        assert self.agent is not None
        state = self._weights if self._actor_version[w] != self._version else None
        self._actor_version[w] = self._version
        return self._actors[w].collect.remote(self.agent.mode, itr, state)

    def _submit_all(self, itr: int) -> None:
        self._publish()
        self._pending = [self._submit(w, itr) for w in range(self.n_workers)]

    @torch.no_grad()
    def obtain_samples(self, itr: int) -> tuple[TensorDict, list[TrajInfo]]:
        """Collect one ``[batch_T, batch_B]`` batch (see the module docstring's schedules).

        Returns:
            ``(samples, traj_infos)``: the buffer (valid until the next call) and the
            episodes that ended during the batch, in env order.

        Raises:
            ChildFailed: an actor failed (its traceback), was lost (``"raise"``, or more
                than ``max_restarts`` losses) or is stuck.
            NonFiniteError: the env returned a NaN or infinite observation or reward.
        """
        if self.agent is None:
            raise RuntimeError("call initialize(agent, seed=...) before obtain_samples")
        first = not self._actors
        if first:
            start = time.monotonic()
            self._actors = [self._start_actor(w, self.seed) for w in range(self.n_workers)]
            self._actor_version = [-1] * self.n_workers
        if not self._pending:
            self._submit_all(itr)
        completed: list[TrajInfo] = []
        for w in range(self.n_workers):
            part, infos = self._receive(w, itr, first)
            for dst, src in zip(self._slice_leaves[w], part, strict=True):
                copy_from_wire(dst, src)
            completed.extend(infos)
        if first:
            self.startup_seconds = time.monotonic() - start
        self._batches += 1
        self._pending = []
        if self.prefetch:
            self._submit_all(itr + 1)
        return check_env_batch(self.samples), completed

    def _receive(
        self, w: int, itr: int, first: bool
    ) -> tuple[list[np.ndarray | torch.Tensor], list[TrajInfo]]:
        """Actor ``w``'s batch, replacing the actor when it was lost (``"restart"``)."""
        ray, name = self._ray, f"tdrl-ray-sampler-{w}"
        timeout = self.worker_timeout_s
        if first and timeout is not None:
            timeout = max(timeout, STARTUP_ALLOWANCE_S)
        while True:
            ready, _ = ray.wait([self._pending[w]], timeout=timeout)
            if not ready:
                raise ChildFailed(name, f"is stuck: no batch after {timeout:.0f} s", stuck=True)
            try:
                return ray.get(self._pending[w])
            except ray.exceptions.RayActorError as e:
                if getattr(e, "actor_init_failed", False):  # __init__ raised: not a loss
                    raise ChildFailed(name, "failed to start", str(e)) from None
                lost = f"was lost ({type(e).__name__}: {_first_line(e)})"
                if self.on_worker_failure == "raise" or self.restarts >= self.max_restarts:
                    raise ChildFailed(name, lost) from None
                self.restarts += 1
                print(f"tdrl: {name} {lost}; restarting it ({self.restarts})", flush=True)
                seed = self.seed + RESTART_SEED_STRIDE * self.restarts
                self._actors[w] = self._start_actor(w, seed)
                self._actor_version[w] = -1
                self._pending[w] = self._submit(w, itr)
            except ray.exceptions.RayTaskError as e:
                raise ChildFailed(name, "failed", str(e)) from None

    def __iter__(self) -> Iterator[TensorDict]:
        """``for samples in sampler:`` the batches of iterations 0, 1, ... (``iterate``)."""
        return iterate(self)

    def update_policy_weights_(self) -> None:
        """Broadcast the agent's weights now; every actor loads them before its next batch."""
        if self._ray is not None and self.agent is not None:
            self._weights = None
            self._publish()

    # ----------------------------------------------------------------------- evaluation
    def evaluate_agent(self, itr: int) -> list[TrajInfo]:
        """Run the agent in eval mode on the eval envs, here; returns completed episodes."""
        return self.evaluator.evaluate(self.agent, itr)

    # ------------------------------------------------------------------------ shut-down
    def shutdown(self) -> None:
        """Stop the actors (and the local Ray instance this sampler started)."""
        ray = self._ray
        if ray is not None and ray.is_initialized():
            for actor in self._actors:
                ray.kill(actor)
            if self._started_ray:
                ray.shutdown()
        self._actors, self._pending = [], []
        self._started_ray = False
        self.evaluator.close()


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""
