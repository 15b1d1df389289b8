"""Deep Deterministic Policy Gradient with rlpyt's defaults.

Lillicrap et al. 2016, https://arxiv.org/abs/1509.02971. For a replay batch of n-step
transitions::

    y     = clip(R^(n) + gamma^m (1 - terminal) min_i Q'_i(o', mu'(o')), ±q_target_clip)
    L_Q   = sum_i E[0.5 (Q_i(o, a) - y)^2]
    L_pi  = -E[Q_1(o, mu(o))]          (every ``policy_update_interval`` updates)

with Polyak target updates of actor and critics every ``target_update_interval`` updates.
``loss`` returns both terms at the current parameters (``critic_loss`` and
``actor_loss``, each pure); ``update`` takes them in rlpyt's order: a critic step, then,
when due, the actor's loss against the *updated* critics and an actor step. The actor and
the critics have their own optimizers and learning rates (``learning_rate`` and
``q_learning_rate``), both honoured. Time-limit cuts bootstrap from the true next
observation (rlpyt instead dropped them from the loss). With ``compile=True`` the critic
step, the actor step and the target update are each compiled with ``torch.compile``
(``tdrl.utils.compile``); when the actor and the targets are due stays in Python. The
schedule is ``tdrl.algos.replay``'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl._compat import tensordict_from_trusted
from tdrl.agents.base import Agent
from tdrl.agents.qpg.ddpg_agent import DdpgAgent
from tdrl.algos.qpg.soft_terms import critic_loss
from tdrl.algos.replay import (
    check_replay_settings,
    make_replay_buffer,
    replay_updates,
    start_replay,
)
from tdrl.algos.settings import (
    algo_optimizer,
    counted_state,
    load_counted_state,
)
from tdrl.algos.updates import targets_when_due
from tdrl.keys import DISCOUNT_N, IS_WEIGHT, RETURN_N, BatchSpec
from tdrl.replays.n_step import ReplayBuffer
from tdrl.utils.checks import check_int, check_optional_range, check_range
from tdrl.utils.compile import maybe_compiled
from tdrl.utils.optim import clipped_step
from tdrl.utils.tensor import frozen_call


@dataclasses.dataclass(kw_only=True, eq=False)
class DDPG:
    """DDPG (and, through its arguments, the base of TD3).

    Args:
        discount: gamma.
        batch_size: transitions per update.
        min_steps_learn: env steps collected before the first update.
        replay_size: replay capacity in transitions.
        replay_ratio: transitions replayed per transition collected.
        target_update_tau: Polyak factor of the targets.
        target_update_interval: updates between target updates.
        policy_update_interval: critic updates per actor update.
        learning_rate: actor step size.
        q_learning_rate: critic step size.
        optim_cls: optimizer class.
        optim_kwargs: optimizer arguments.
        clip_grad_norm: gradient-norm clip of each network.
        q_target_clip: bound on the critic targets.
        target_noise_std: std of the target-policy smoothing noise (0: none).
        target_noise_clip: clip of that noise.
        n_step_return: n of the n-step returns.
        replay_storage: ``"memory"`` or ``"memmap"``.
        replay_scratch_dir: directory of memmap files.
        replay_device: where the replay buffer lives (None: the CPU; see ``ReplayConfig``).
        compile: run each update through ``torch.compile`` (CUDA graphs on CUDA); the same
            results as the eager update up to float rounding.
    """

    discount: float = 0.99
    batch_size: int = 64
    min_steps_learn: int = 10_000
    replay_size: int = 1_000_000
    replay_ratio: float = 64.0
    target_update_tau: float = 0.01
    target_update_interval: int = 1
    policy_update_interval: int = 1
    learning_rate: float = 1e-4
    q_learning_rate: float = 1e-3
    optim_cls: type[torch.optim.Optimizer] = torch.optim.Adam
    optim_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    clip_grad_norm: float = 1e8
    q_target_clip: float = 1e6
    target_noise_std: float = 0.0
    target_noise_clip: float | None = None
    n_step_return: int = 1
    replay_storage: str = "memory"
    replay_scratch_dir: str | None = None
    replay_device: str | torch.device | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        self.replay = check_replay_settings(self)
        self.policy_update_interval = check_int(
            "policy_update_interval", self.policy_update_interval, minimum=1
        )
        self.q_learning_rate = check_range("q_learning_rate", self.q_learning_rate, 0.0, 10.0)
        self.clip_grad_norm = check_range("clip_grad_norm", self.clip_grad_norm, 0.0, 1e12)
        self.q_target_clip = check_range("q_target_clip", self.q_target_clip, 0.0, 1e12)
        self.target_noise_std = check_range("target_noise_std", self.target_noise_std, 0.0, 10.0)
        self.target_noise_clip = check_optional_range(
            "target_noise_clip", self.target_noise_clip, 1e-12, 10.0
        )
        self.update_counter = 0
        self.replay_buffer: ReplayBuffer | None = None
        self.replay_lock: contextlib.AbstractContextManager[Any] | None = None
        self.updates_per_optimize = 0  # set by initialize
        self.min_itr_learn = 0

    # ------------------------------------------------------------------ set-up
    def initialize(self, agent: Agent, *, n_itr: int, batch_spec: BatchSpec) -> None:
        """Bind the agent; build the two optimizers and the replay buffer."""
        if not isinstance(agent, DdpgAgent):
            raise TypeError(
                f"{type(self).__name__} needs a DdpgAgent (or Td3Agent), got {type(agent).__name__}"
            )
        self.agent = agent
        self.batch_spec = batch_spec
        agent.set_pretrain_itr(start_replay(self, batch_spec))
        self.device = agent.device
        self.mu_optimizer = algo_optimizer(self, agent.model.parameters())
        q_lr = self.q_learning_rate
        self.q_optimizer = algo_optimizer(self, agent.q_model.parameters(), learning_rate=q_lr)
        self.replay_buffer = make_replay_buffer(self.replay, batch_spec, discount=self.discount)
        self._mu_params = list(agent.model.parameters())
        self._q_params = list(agent.q_model.parameters())

    # ------------------------------------------------------------------ the losses
    def critic_loss(self, batch: TensorDictBase) -> TensorDict:
        """``L_Q`` on a replay batch, with the diagnostic ``q_mean``."""
        agent = self.agent
        with torch.no_grad():
            next_obs = batch.get(keys.NEXT_OBSERVATION)
            next_action = agent.target_mu(next_obs, self.target_noise_std, self.target_noise_clip)
            next_q = agent.target_q(next_obs, next_action).min(0).values
            target = batch.get(RETURN_N) + batch.get(DISCOUNT_N) * next_q
            target = target.clamp(-self.q_target_clip, self.q_target_clip)
        q = agent.q(batch.get(keys.OBSERVATION), batch.get(keys.ACTION))
        loss_q = critic_loss(q, target, batch.get(IS_WEIGHT))
        return tensordict_from_trusted({"loss_q": loss_q, "q_mean": q.detach().mean()}, ())

    def actor_loss(self, batch: TensorDictBase) -> TensorDict:
        """``L_pi`` on a replay batch.

        The critics are frozen while they score the actor's action, so the backward pass
        reaches the actor only.
        """
        agent = self.agent
        obs = batch.get(keys.OBSERVATION)
        loss_pi = -frozen_call(agent.q_model, obs, agent.mu(obs))[0].mean()
        return tensordict_from_trusted({"loss_pi": loss_pi}, ())

    def loss(self, batch: TensorDictBase) -> TensorDict:
        """Both terms at the current parameters: ``loss = loss_q + loss_pi`` and ``q_mean``.

        One backward pass of ``loss`` gives each network the gradient of its own term
        (``update`` steps them in turn instead, as rlpyt does).
        """
        terms = self.critic_loss(batch).update(self.actor_loss(batch))
        terms.set("loss", terms.get("loss_q") + terms.get("loss_pi"))
        return terms

    # ------------------------------------------------------------------ one update
    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """One critic step, an actor step every ``policy_update_interval``, the targets."""
        info = maybe_compiled(self.compile, DDPG.critic_step, self.device, self, batch)
        self.update_counter += 1
        if self.update_counter % self.policy_update_interval == 0:
            info.update(maybe_compiled(self.compile, DDPG.actor_step, self.device, self, batch))
        targets_when_due(self)
        return info

    def critic_step(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """``critic_loss``, backward, clip and critic step (what ``compile`` compiles)."""
        terms, parts = self.critic_loss(batch), {"q": self._q_params}
        return clipped_step([self.q_optimizer], terms, parts, self.clip_grad_norm, loss="loss_q")

    def actor_step(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """``actor_loss`` (against the critics as they are now), backward, clip, actor step."""
        terms, parts = self.actor_loss(batch), {"pi": self._mu_params}
        return clipped_step([self.mu_optimizer], terms, parts, self.clip_grad_norm, loss="loss_pi")

    # ------------------------------------------------------------------ the schedule
    def optimize_agent(self, itr: int, samples: TensorDictBase | None) -> dict[str, list[float]]:
        """Store the batch (None: already stored), then replay once learning started."""
        return replay_updates(self, itr, samples, device=self.device)

    # ------------------------------------------------------------------ state
    def _named_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"mu_optimizer": self.mu_optimizer, "q_optimizer": self.q_optimizer}

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers this algorithm steps."""
        return list(self._named_optimizers().values())

    def state_dict(self) -> dict[str, Any]:
        """Both optimizers' state and the update counter."""
        return counted_state(self._named_optimizers(), self.update_counter)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        self.update_counter = load_counted_state(self._named_optimizers(), state)
