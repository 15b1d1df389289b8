"""SAC v1 (``SAC_V``): twin critics bootstrapped from a state-value network.

Haarnoja et al. 2018, https://arxiv.org/abs/1801.01290, as rlpyt's ``SAC_V``. The entropy
weight is fixed and folded into ``reward_scale`` (rlpyt's config uses 5). With
``a~ ~ pi(.|o)`` a reparameterised tanh-Gaussian action::

    L_Q  = sum_i E[0.5 (Q_i(o, a) - (s R^(n) + gamma^m (1 - terminal) V'(o')))^2]
    L_V  = E[0.5 (V(o) - (min_i Q_i(o, a~) - log pi(a~|o) + log p(a~)))^2]
    L_pi = E[log pi(a~|o) - min_i Q_i(o, a~) - log p(a~)]
           + c * E[0.5 (mean^2 + log_std^2)]          (c: policy_output_regularization)

with a Polyak target for V. As in ``SAC`` (and rlpyt), the three losses are taken at the
same parameters and summed into one backward pass (the critics frozen while they score
``a~``); one optimizer steps the groups ``"pi"``, ``"q"`` and ``"v"``. The agent is a
``SacVAgent`` (a ``SacAgent`` built with ``value_network=True``). ``compile=True`` runs the
step and the target update through ``torch.compile`` (``tdrl.utils.compile``). The loss
terms are ``tdrl.algos.qpg.soft_terms``'; the schedule is ``tdrl.algos.replay``'s.
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
from tdrl.algos import one_optimizer
from tdrl.algos.qpg.sac import check_sac_agent
from tdrl.algos.qpg.soft_terms import (
    ACTION_PRIORS,
    action_log_prior,
    actor_loss,
    critic_loss,
    soft_target,
    value_loss,
)
from tdrl.algos.replay import (
    check_replay_settings,
    make_replay_buffer,
    replay_updates,
    start_replay,
)
from tdrl.algos.settings import (
    algo_optimizer,
    param_group,
)
from tdrl.algos.updates import finish_update
from tdrl.keys import DISCOUNT_N, IS_WEIGHT, RETURN_N, BatchSpec
from tdrl.replays.n_step import ReplayBuffer
from tdrl.utils.checks import check_choice, check_range
from tdrl.utils.compile import maybe_compiled
from tdrl.utils.optim import clipped_step
from tdrl.utils.tensor import frozen_call


@dataclasses.dataclass(kw_only=True, eq=False)
class SAC_V:  # noqa: N801 - rlpyt's name
    """SAC with a value network and a fixed entropy weight.

    Args:
        discount: gamma.
        batch_size: transitions per update.
        min_steps_learn: env steps collected (with ``pretrain_std`` exploration) before
            the first update.
        replay_size: replay capacity in transitions.
        replay_ratio: transitions replayed per transition collected.
        target_update_tau: Polyak factor of the value target.
        target_update_interval: updates between target updates.
        learning_rate: step size of the actor, critics and value network.
        optim_cls: optimizer class.
        optim_kwargs: optimizer arguments.
        action_prior: ``"uniform"`` or ``"gaussian"`` (standard normal on actions).
        reward_scale: factor on rewards; sets the entropy weight (rlpyt's config uses 5).
        policy_output_regularization: weight ``c`` of the penalty on the policy's mean and
            log std.
        clip_grad_norm: gradient-norm clip of each network.
        n_step_return: n of the n-step returns.
        replay_storage: ``"memory"`` or ``"memmap"``.
        replay_scratch_dir: directory of memmap files.
        replay_device: where the replay buffer lives (None: the CPU; see ``ReplayConfig``).
        compile: run each update through ``torch.compile`` (CUDA graphs on CUDA); the same
            results as the eager update up to float rounding.
    """

    discount: float = 0.99
    batch_size: int = 256
    min_steps_learn: int = 10_000
    replay_size: int = 1_000_000
    replay_ratio: float = 256.0
    target_update_tau: float = 0.005
    target_update_interval: int = 1
    learning_rate: float = 3e-4
    optim_cls: type[torch.optim.Optimizer] = torch.optim.Adam
    optim_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    action_prior: str = "uniform"
    reward_scale: float = 1.0
    policy_output_regularization: float = 1e-3
    clip_grad_norm: float = 1e9
    n_step_return: int = 1
    replay_storage: str = "memory"
    replay_scratch_dir: str | None = None
    replay_device: str | torch.device | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        self.replay = check_replay_settings(self)
        self.action_prior = check_choice("action_prior", self.action_prior, ACTION_PRIORS)
        self.reward_scale = check_range("reward_scale", self.reward_scale, 0.0, 1e12)
        self.policy_output_regularization = check_range(
            "policy_output_regularization", self.policy_output_regularization, 0.0, 1e12
        )
        self.clip_grad_norm = check_range("clip_grad_norm", self.clip_grad_norm, 0.0, 1e12)
        self.update_counter = 0
        self.replay_buffer: ReplayBuffer | None = None
        self.replay_lock: contextlib.AbstractContextManager[Any] | None = None
        self.updates_per_optimize = 0  # set by initialize
        self.min_itr_learn = 0

    # ------------------------------------------------------------------ set-up
    def initialize(self, agent: Agent, *, n_itr: int, batch_spec: BatchSpec) -> None:
        """Bind the agent; build the optimizer and the replay buffer."""
        self.agent = check_sac_agent(type(self).__name__, agent, value_network=True)
        self.batch_spec = batch_spec
        self.agent.set_pretrain_itr(start_replay(self, batch_spec))
        groups = [
            {"params": list(self.agent.model.parameters()), "name": "pi"},
            {"params": list(self.agent.q_model.parameters()), "name": "q"},
            {"params": list(self.agent.v_model.parameters()), "name": "v"},
        ]
        self.device = self.agent.device
        self.optimizer = algo_optimizer(self, groups)
        self.replay_buffer = make_replay_buffer(self.replay, batch_spec, discount=self.discount)
        self._pi_params = list(self.agent.model.parameters())
        self._q_params = list(self.agent.q_model.parameters())
        self._v_params = list(self.agent.v_model.parameters())

    def param_group(self, name: str) -> dict[str, Any]:
        """The optimizer's parameter group ``name`` (``"pi"``, ``"q"``, ``"v"``)."""
        return param_group(self.optimizer, name)

    # ------------------------------------------------------------------ the loss
    def loss(self, batch: TensorDictBase) -> TensorDict:
        """``L_Q + L_V + L_pi`` at the current parameters (see the module docstring).

        Returns:
            ``loss`` and its terms ``loss_q``, ``loss_v``, ``loss_pi``, with the diagnostics
            ``q_mean``, ``v_mean`` and ``log_pi``.
        """
        agent = self.agent
        obs = batch.get(keys.OBSERVATION)
        weight = batch.get(IS_WEIGHT)
        with torch.no_grad():
            next_v = agent.target_v(batch.get(keys.NEXT_OBSERVATION))
            target_q = soft_target(
                self.reward_scale, batch.get(RETURN_N), batch.get(DISCOUNT_N), next_v
            )
        q = agent.q(obs, batch.get(keys.ACTION))
        loss_q = critic_loss(q, target_q, weight)

        new_action, log_pi, mean, log_std = agent.pi(obs)
        prior = action_log_prior(new_action, self.action_prior)
        q_pi = frozen_call(agent.q_model, obs, new_action).min(0).values
        v = agent.v(obs)
        loss_v = value_loss(v, q_pi, log_pi, prior, weight)
        regularizer = 0.5 * (mean.pow(2).mean() + log_std.pow(2).mean())
        regularizer = self.policy_output_regularization * regularizer
        loss_pi = actor_loss(log_pi, q_pi, prior=prior, regularizer=regularizer)
        terms = {
            "loss": loss_q + loss_v + loss_pi,
            "loss_q": loss_q,
            "loss_v": loss_v,
            "loss_pi": loss_pi,
            "q_mean": q.detach().mean(),
            "v_mean": v.detach().mean(),
            "log_pi": log_pi.detach().mean(),
        }
        return tensordict_from_trusted(terms, ())

    # ------------------------------------------------------------------ one update
    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """One update: a backward pass of ``loss``, one step, the value target when due."""
        info = maybe_compiled(self.compile, SAC_V.gradient_step, self.device, self, batch)
        return finish_update(self, info, batch)

    def gradient_step(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """``loss``, backward, gradient clips and optimizer step: what ``compile`` compiles."""
        parts = {"q": self._q_params, "v": self._v_params, "pi": self._pi_params}
        return clipped_step([self.optimizer], self.loss(batch), parts, self.clip_grad_norm)

    # ------------------------------------------------------------------ the schedule
    def optimize_agent(self, itr: int, samples: TensorDictBase | None) -> dict[str, list[float]]:
        """Store the batch (None: already stored), then replay once learning started."""
        return replay_updates(self, itr, samples, device=self.device)

    # ------------------------------------------------------------------ state
    optimizers = one_optimizer.optimizers
    state_dict = one_optimizer.state_dict
    load_state_dict = one_optimizer.load_state_dict
