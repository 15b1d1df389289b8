"""Deep Q-Network with rlpyt's options and defaults.

Mnih et al. 2015 (https://doi.org/10.1038/nature14236); double DQN: van Hasselt et al.
2016 (https://arxiv.org/abs/1509.06461); prioritized replay: Schaul et al. 2016
(https://arxiv.org/abs/1511.05952). For a replay batch of n-step transitions::

    y      = R^(n) + gamma^m (1 - terminal) Q_target(o', a*)
    a*     = argmax_a Q_target(o', a)            (argmax_a Q(o', a) with double_dqn)
    delta  = y - Q(o, a)
    L      = E_i[w_i * huber_c(delta_i)]         (0.5 delta^2 when delta_clip is None)

with importance weights ``w_i`` (ones for uniform replay) and new priorities
``min(|delta|, delta_clip)``. Each iteration appends the sampler's batch to the replay buffer
and, once ``min_steps_learn`` steps were collected, makes
``round(replay_ratio * T * B / batch_size)`` updates; the target network is updated every
``target_update_interval`` updates (hard copy when ``target_update_tau == 1``). Minibatches
are drawn onto the agent's device; with ``compile=True`` the step (loss, backward, clip,
optimizer) and the target update run through ``torch.compile`` (``tdrl.utils.compile``),
the counter, priorities and schedules staying in Python. The schedule is
``tdrl.algos.replay``'s; ``R2D1`` derives from this class for its set-up and schedule.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, ClassVar

import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl._compat import tensordict_from_trusted
from tdrl.agents.base import Agent
from tdrl.agents.dqn.dqn_agent import DqnAgent
from tdrl.algos import one_optimizer
from tdrl.algos.replay import (
    check_replay_settings,
    make_replay_buffer,
    replay_updates,
    start_replay,
)
from tdrl.algos.settings import (
    algo_optimizer,
)
from tdrl.algos.updates import finish_update
from tdrl.keys import DISCOUNT_N, IS_WEIGHT, RETURN_N, BatchSpec
from tdrl.replays.frame import FrameReplayBuffer
from tdrl.replays.n_step import ReplayBuffer
from tdrl.replays.prioritized import PrioritizedSampler
from tdrl.utils.checks import check_bool, check_int, check_optional_range, check_range
from tdrl.utils.compile import maybe_compiled
from tdrl.utils.losses import huber
from tdrl.utils.optim import clipped_step


def online_q(agent: DqnAgent, td: TensorDictBase) -> torch.Tensor:
    """The online network's output for the rows of ``td`` (model called on its tensors)."""
    return agent.model(td[keys.OBSERVATION], td[keys.PREV_ACTION], td[keys.PREV_REWARD])


def check_dqn_agent(algo: str, agent: Agent, *, categorical: bool = False) -> DqnAgent:
    """``agent`` if it is a ``DqnAgent`` of the right kind, else a clear error naming ``algo``.

    Args:
        algo: the algorithm's name, for the message.
        agent: the agent to check.
        categorical: whether the algorithm needs a return distribution (``n_atoms`` set,
            ``CategoricalDQN``) or plain Q-values (``n_atoms=None``, ``DQN``).
    """
    if not isinstance(agent, DqnAgent):
        wanted = "a DqnAgent built with n_atoms (e.g. 51)" if categorical else "a DqnAgent"
        raise TypeError(f"{algo} needs {wanted}, got {type(agent).__name__}")
    if categorical and not agent.n_atoms:
        raise TypeError(
            f"{algo} needs a DqnAgent built with n_atoms (e.g. 51), got a DqnAgent without "
            "n_atoms (plain Q-values)"
        )
    if not categorical and agent.n_atoms:
        raise TypeError(
            f"{algo} needs a DqnAgent without n_atoms (plain Q-values), got a DqnAgent with "
            f"n_atoms={agent.n_atoms}; use CategoricalDQN for a return distribution"
        )
    return agent


@dataclasses.dataclass(kw_only=True, eq=False)
class DQN:
    """DQN and its double / n-step / prioritized variants (dueling is a model option).

    Args:
        discount: gamma.
        batch_size: transitions per update.
        min_steps_learn: env steps collected before the first update.
        delta_clip: Huber threshold (None: squared error).
        replay_size: replay capacity in transitions.
        replay_ratio: target ratio of transitions replayed to transitions collected.
        target_update_tau: Polyak factor of target updates (1: hard copy).
        target_update_interval: updates between target updates.
        n_step_return: n of the n-step returns.
        learning_rate: optimizer step size.
        optim_cls: optimizer class.
        optim_kwargs: optimizer arguments (default for Adam: ``eps=0.01 / batch_size``).
        clip_grad_norm: global gradient-norm clip (None: none).
        eps_steps: env steps over which epsilon anneals, starting at ``min_steps_learn``.
        double_dqn: pick the bootstrap action with the online network.
        prioritized_replay: sample by priority (own sum tree).
        pri_alpha: priority exponent.
        pri_beta_init: initial importance-sampling exponent.
        pri_beta_final: final importance-sampling exponent.
        pri_beta_steps: env steps over which beta anneals, from ``min_steps_learn``.
        default_priority: priority of new transitions (default: ``delta_clip`` or 1).
        replay_storage: ``"memory"`` or ``"memmap"`` (disk-backed, for large buffers).
        replay_scratch_dir: directory of memmap files.
        frame_replay: store each frame of stacked-frame observations once (None: when
            observations are ``[C, H, W]`` uint8 stacks).
        replay_device: where the replay buffer lives (None: the CPU; see ``ReplayConfig``).
        compile: run each update through ``torch.compile`` (CUDA graphs on CUDA); the same
            results as the eager update up to float rounding.
    """

    #: Whether the agent gives a return distribution (``CategoricalDQN``), not Q-values.
    categorical: ClassVar[bool] = False
    #: The per-item ``loss`` output that is the new priority (reported as its mean).
    priority_key: ClassVar[str] = "td_abs_err"

    discount: float = 0.99
    batch_size: int = 32
    min_steps_learn: int = 50_000
    delta_clip: float | None = 1.0
    replay_size: int = 1_000_000
    replay_ratio: float = 8.0
    target_update_tau: float = 1.0
    target_update_interval: int = 312
    n_step_return: int = 1
    learning_rate: float = 2.5e-4
    optim_cls: type[torch.optim.Optimizer] = torch.optim.Adam
    optim_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    clip_grad_norm: float | None = 10.0
    eps_steps: int = 1_000_000
    double_dqn: bool = False
    prioritized_replay: bool = False
    pri_alpha: float = 0.6
    pri_beta_init: float = 0.4
    pri_beta_final: float = 1.0
    pri_beta_steps: int = 50_000_000
    default_priority: float | None = None
    replay_storage: str = "memory"
    replay_scratch_dir: str | None = None
    frame_replay: bool | None = None
    replay_device: str | torch.device | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        self.replay = check_replay_settings(self)
        self.delta_clip = check_optional_range("delta_clip", self.delta_clip, 1e-12, 1e12)
        if self.optim_cls is torch.optim.Adam and "eps" not in self.optim_kwargs:
            self.optim_kwargs["eps"] = 0.01 / self.batch_size
        self.clip_grad_norm = check_optional_range("clip_grad_norm", self.clip_grad_norm, 0.0, 1e12)
        self.eps_steps = check_int("eps_steps", self.eps_steps, minimum=1)
        self.double_dqn = check_bool("double_dqn", self.double_dqn)
        self.prioritized_replay = check_bool("prioritized_replay", self.prioritized_replay)
        self.pri_alpha = check_range("pri_alpha", self.pri_alpha, 0.0, 10.0)
        self.pri_beta_init = check_range("pri_beta_init", self.pri_beta_init, 0.0, 1.0)
        self.pri_beta_final = check_range("pri_beta_final", self.pri_beta_final, 0.0, 1.0)
        self.pri_beta_steps = check_int("pri_beta_steps", self.pri_beta_steps, minimum=1)
        self.default_priority = check_range(
            "default_priority",
            self.default_priority
            if self.default_priority is not None
            else (self.delta_clip or 1.0),
            1e-12,
            1e12,
        )
        if self.frame_replay is not None:
            self.frame_replay = check_bool("frame_replay", self.frame_replay)
        self.draw_size = self.batch_size  # items per replayed minibatch
        self.update_counter = 0
        self.replay_buffer: Any = None
        self._prioritized: PrioritizedSampler | None = None
        self.replay_lock: contextlib.AbstractContextManager[Any] | None = None
        self.updates_per_optimize = 0  # set by initialize
        self.min_itr_learn = 0

    # ------------------------------------------------------------------ set-up
    def check_agent(self, agent: Agent) -> Any:
        """``agent`` if this algorithm can train it, else a clear ``TypeError``."""
        return check_dqn_agent(type(self).__name__, agent, categorical=self.categorical)

    def initialize(self, agent: Agent, *, n_itr: int, batch_spec: BatchSpec) -> None:
        """Bind the agent; build the optimizer, the replay buffer and the schedules."""
        self.agent = self.check_agent(agent)
        self.batch_spec = batch_spec
        start = start_replay(self, batch_spec)
        self.agent.set_epsilon_schedule(start, start + self.eps_steps // batch_spec.size)
        self.pri_beta_itr = max(1, self.pri_beta_steps // batch_spec.size)
        self.device = self.agent.device
        self.optimizer = algo_optimizer(self, self.agent.model.parameters())
        self._params = list(self.agent.model.parameters())
        self.replay_buffer = self.make_replay_buffer(batch_spec)

    def prioritized_sampler(self, capacity: int, seed: int) -> PrioritizedSampler | None:
        """The prioritized index sampler over ``capacity`` items (None: uniform replay)."""
        self._prioritized = None
        if self.prioritized_replay:
            self._prioritized = PrioritizedSampler(
                capacity,
                alpha=self.pri_alpha,
                beta=self.pri_beta_init,
                beta_final=self.pri_beta_final,
                beta_steps=self.pri_beta_itr,
                default_priority=self.default_priority,
                seed=seed,
            )
        return self._prioritized

    def frame_stacks(self) -> bool:
        """Whether observations are ``[C, H, W]`` uint8 frame stacks (frame replay)."""
        spec = self.agent.observation_spec
        is_frames = spec is not None and len(tuple(spec.shape)) == 3 and spec.dtype == torch.uint8
        return self.frame_replay if self.frame_replay is not None else bool(is_frames)

    def make_replay_buffer(self, batch_spec: BatchSpec) -> Any:
        """Uniform or prioritized; frame-based for uint8 frame stacks."""
        seed = int(torch.randint(2**31 - 1, ()).item())
        return make_replay_buffer(
            self.replay,
            batch_spec,
            discount=self.discount,
            sampler=self.prioritized_sampler(self.replay.capacity(batch_spec), seed),
            buffer_cls=FrameReplayBuffer if self.frame_stacks() else ReplayBuffer,
            seed=seed,
        )

    # ------------------------------------------------------------------ the loss
    def loss(self, batch: TensorDictBase) -> TensorDict:
        """DQN loss on a replay batch (see the module docstring).

        Returns:
            ``loss`` with the diagnostics ``td_abs_err`` (per transition, the new
            priorities) and ``q_mean``.
        """
        agent = self.agent
        nxt = batch.get(keys.NEXT)
        q = online_q(agent, batch)
        q_a = q.gather(-1, batch.get(keys.ACTION).long().unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():  # o' passes hold no graph: backward only through Q(o)
            target_q = agent.target(nxt)
            choose = online_q(agent, nxt) if self.double_dqn else target_q
            next_a = choose.argmax(dim=-1, keepdim=True)
            bootstrap = target_q.gather(-1, next_a).squeeze(-1)
            target = batch.get(RETURN_N) + batch.get(DISCOUNT_N) * bootstrap
        delta = target - q_a
        losses = huber(delta, self.delta_clip)
        loss = (batch.get(IS_WEIGHT) * losses).mean()
        terms = {"loss": loss, "td_abs_err": self.abs_td(delta), "q_mean": q_a.detach().mean()}
        return tensordict_from_trusted(terms, ())

    def abs_td(self, delta: torch.Tensor) -> torch.Tensor:
        """``min(|delta|, delta_clip)``, detached: the new priorities."""
        abs_delta = delta.detach().abs()
        return abs_delta if self.delta_clip is None else abs_delta.clamp(max=self.delta_clip)

    # ------------------------------------------------------------------ the schedule
    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """One gradient step on a replay batch (on the agent's device).

        ``gradient_step``, then the batch's new priorities (prioritized replay), the update
        counter and the target network update when due (``finish_update``).
        """
        info = maybe_compiled(self.compile, type(self).gradient_step, self.device, self, batch)
        buffer = self.replay_buffer if self.prioritized_replay else None
        return finish_update(self, info, batch, priority=self.priority_key, buffer=buffer)

    def gradient_step(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """``loss``, backward, gradient clip and optimizer step: what ``compile`` compiles.

        Returns:
            The detached loss terms (the priorities per item) and ``grad_norm``.
        """
        terms = self.loss(batch)
        return clipped_step([self.optimizer], terms, {"": self._params}, self.clip_grad_norm)

    def optimize_agent(self, itr: int, samples: TensorDictBase | None) -> dict[str, list[float]]:
        """Store the batch, then replay ``updates_per_optimize`` minibatches.

        ``samples`` None: the batch is already stored (``AsyncRl``). No update is made
        before ``min_itr_learn`` or while no n-step window is complete.
        """
        info = replay_updates(self, itr, samples, device=self.device, draw=self.draw_size)
        if info and self._prioritized is not None:
            self._prioritized.anneal_beta(itr - self.min_itr_learn)
        return info

    # ------------------------------------------------------------------ state
    optimizers = one_optimizer.optimizers
    state_dict = one_optimizer.state_dict
    load_state_dict = one_optimizer.load_state_dict
