"""Soft Actor-Critic (v2: twin Q, learned temperature) with rlpyt's defaults.

Haarnoja et al. 2018, https://arxiv.org/abs/1812.05905. For a replay batch of n-step
transitions, with ``a~ ~ pi(.|o)`` and ``a' ~ pi(.|o')`` reparameterised tanh-Gaussian
actions::

    y       = s R^(n) + gamma^m (1 - terminal) (min_i Q'_i(o', a') - alpha log pi(a'|o'))
    L_Q     = sum_i E[0.5 (Q_i(o, a) - y)^2]
    L_pi    = E[alpha log pi(a~|o) - min_i Q_i(o, a~) - log p(a~)]
    L_alpha = -E[log alpha (log pi(a~|o) + H_target)]

(``s``: ``reward_scale``; ``p``: the action prior, uniform or standard normal). As in
rlpyt, all three losses are taken at the same parameters (the actor against the critics
before this update's critic step) and summed into one backward pass: the critics are
frozen while they score ``a~``, so ``L_pi`` reaches the actor through ``a~`` but adds nothing
to the critics' gradients, and ``log pi`` enters ``L_alpha`` detached. One optimizer then
steps the three parameter groups (``"pi"``, ``"q"``, ``"alpha"``) with the same arithmetic
as three separate Adams, and a Polyak target update follows every
``target_update_interval`` updates. Time-limit cuts bootstrap (``truncated`` is not
terminal). The temperature ``log_alpha`` is created on the agent's device; with
``compile=True`` the step and the target update run through ``torch.compile``
(``tdrl.utils.compile``). The loss terms are ``tdrl.algos.qpg.soft_terms``' (shared with
``SAC_V`` and ``PEARL``); the schedule is ``tdrl.algos.replay``'s.
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
from tdrl.agents.qpg.sac_agent import SacAgent
from tdrl.algos.qpg.soft_terms import (
    ACTION_PRIORS,
    action_log_prior,
    actor_loss,
    check_target_entropy,
    critic_loss,
    entropy_target,
    initial_log_alpha,
    soft_target,
    temperature_loss,
)
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
    param_group,
)
from tdrl.algos.updates import finish_update
from tdrl.keys import DISCOUNT_N, IS_WEIGHT, RETURN_N, BatchSpec
from tdrl.replays.n_step import ReplayBuffer
from tdrl.utils.checks import check_choice, check_optional_range, check_range
from tdrl.utils.compile import maybe_compiled
from tdrl.utils.optim import clipped_step
from tdrl.utils.tensor import frozen_call

__all__ = ["ACTION_PRIORS", "SAC", "action_log_prior", "check_sac_agent"]


def check_sac_agent(algo: str, agent: Agent, *, value_network: bool) -> SacAgent:
    """``agent`` if it is a ``SacAgent`` of the right kind, else a clear error."""
    wanted = (
        "SacVAgent (a SacAgent with value_network=True)"
        if value_network
        else "SacAgent (value_network=False)"
    )
    if not isinstance(agent, SacAgent):
        raise TypeError(f"{algo} needs a {wanted}, got {type(agent).__name__}")
    if agent.value_network != value_network:
        got = "SacVAgent" if agent.value_network else "SacAgent"
        raise TypeError(
            f"{algo} needs a {wanted}, got a {got} (value_network={agent.value_network})"
        )
    return agent


@dataclasses.dataclass(kw_only=True, eq=False)
class SAC:
    """SAC with twin critics and automatic entropy tuning.

    Args:
        discount: gamma.
        batch_size: transitions per update.
        min_steps_learn: env steps collected (with ``pretrain_std`` exploration) before
            the first update.
        replay_size: replay capacity in transitions.
        replay_ratio: transitions replayed per transition collected.
        target_update_tau: Polyak factor of the critic targets.
        target_update_interval: updates between target updates.
        learning_rate: step size of the actor, critics and temperature.
        fixed_alpha: a fixed temperature (None: learned).
        optim_cls: optimizer class.
        optim_kwargs: optimizer arguments.
        action_prior: ``"uniform"`` or ``"gaussian"`` (standard normal on actions).
        reward_scale: factor on rewards.
        target_entropy: ``"auto"`` (``-|A|``, resolved to that number by ``initialize``)
            or a number.
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
    fixed_alpha: float | None = None
    optim_cls: type[torch.optim.Optimizer] = torch.optim.Adam
    optim_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    action_prior: str = "uniform"
    reward_scale: float = 1.0
    target_entropy: str | float = "auto"
    clip_grad_norm: float = 1e9
    n_step_return: int = 1
    replay_storage: str = "memory"
    replay_scratch_dir: str | None = None
    replay_device: str | torch.device | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        self.replay = check_replay_settings(self)
        self.fixed_alpha = check_optional_range("fixed_alpha", self.fixed_alpha, 0.0, 1e12)
        self.action_prior = check_choice("action_prior", self.action_prior, ACTION_PRIORS)
        self.reward_scale = check_range("reward_scale", self.reward_scale, 0.0, 1e12)
        self.target_entropy = check_target_entropy(self.target_entropy)
        self.clip_grad_norm = check_range("clip_grad_norm", self.clip_grad_norm, 0.0, 1e12)
        self.update_counter = 0
        self.replay_buffer: ReplayBuffer | None = None
        self.replay_lock: contextlib.AbstractContextManager[Any] | None = None
        self.updates_per_optimize = 0  # set by initialize
        self.min_itr_learn = 0

    # ------------------------------------------------------------------ set-up
    def initialize(self, agent: Agent, *, n_itr: int, batch_spec: BatchSpec) -> None:
        """Bind the agent; build the optimizer, the temperature and the replay buffer."""
        self.agent = check_sac_agent(type(self).__name__, agent, value_network=False)
        self.batch_spec = batch_spec
        self.agent.set_pretrain_itr(start_replay(self, batch_spec))
        self.target_entropy = entropy_target(self.target_entropy, self.agent.action_size)
        self.device = self.agent.device
        self.log_alpha = initial_log_alpha(self.fixed_alpha, self.device)
        groups = [
            {"params": list(self.agent.model.parameters()), "name": "pi"},
            {"params": list(self.agent.q_model.parameters()), "name": "q"},
        ]
        if self.fixed_alpha is None:
            groups.append({"params": [self.log_alpha], "name": "alpha"})
        self.optimizer = algo_optimizer(self, groups)
        self.replay_buffer = make_replay_buffer(self.replay, batch_spec, discount=self.discount)
        self._pi_params = list(self.agent.model.parameters())
        self._q_params = list(self.agent.q_model.parameters())

    def param_group(self, name: str) -> dict[str, Any]:
        """The optimizer's parameter group ``name`` (``"pi"``, ``"q"``, ``"alpha"``).

        E.g. to give one network its own learning rate.
        """
        return param_group(self.optimizer, name)

    @property
    def alpha(self) -> float:
        """The current entropy temperature."""
        return float(self.log_alpha.detach().exp())

    # ------------------------------------------------------------------ the loss
    def loss(self, batch: TensorDictBase) -> TensorDict:
        """``L_Q + L_pi + L_alpha`` at the current parameters (see the module docstring).

        Returns:
            ``loss`` and its terms ``loss_q``, ``loss_pi`` and (learned temperature)
            ``loss_alpha``, with the diagnostics ``q_mean``, ``log_pi``, ``pi_log_std`` and
            ``alpha``.
        """
        agent = self.agent
        obs = batch.get(keys.OBSERVATION)
        next_obs = batch.get(keys.NEXT_OBSERVATION)
        alpha = self.log_alpha.detach().exp()
        new_action, log_pi, _, log_std = agent.pi(obs)
        with torch.no_grad():
            next_action, next_log_pi, _, _ = agent.pi(next_obs)
            next_q = agent.target_q(next_obs, next_action).min(0).values
            target = soft_target(
                self.reward_scale,
                batch.get(RETURN_N),
                batch.get(DISCOUNT_N),
                next_q - alpha * next_log_pi,
            )
        q = agent.q(obs, batch.get(keys.ACTION))
        loss_q = critic_loss(q, target, batch.get(IS_WEIGHT))
        # The critics score a~ frozen: the actor's gradient skips critic weight gradients.
        q_pi = frozen_call(agent.q_model, obs, new_action).min(0).values
        prior = action_log_prior(new_action, self.action_prior)
        loss_pi = actor_loss(log_pi, q_pi, alpha=alpha, prior=prior)
        terms = {"loss": loss_q + loss_pi, "loss_q": loss_q, "loss_pi": loss_pi}
        if self.fixed_alpha is None:
            loss_alpha = temperature_loss(self.log_alpha, log_pi, float(self.target_entropy))
            terms["loss"] = terms["loss"] + loss_alpha
            terms["loss_alpha"] = loss_alpha
        terms["q_mean"] = q.detach().mean()
        terms["log_pi"] = log_pi.detach().mean()
        terms["pi_log_std"] = log_std.detach().mean()
        terms["alpha"] = alpha
        return tensordict_from_trusted(terms, ())

    # ------------------------------------------------------------------ one update
    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """One SAC update: a backward pass of ``loss``, one step, the target when due."""
        info = maybe_compiled(self.compile, SAC.gradient_step, self.device, self, batch)
        return finish_update(self, info, batch)

    def gradient_step(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """``loss``, backward, gradient clips and optimizer step: what ``compile`` compiles."""
        parts = {"q": self._q_params, "pi": self._pi_params}
        return clipped_step([self.optimizer], self.loss(batch), parts, self.clip_grad_norm)

    # ------------------------------------------------------------------ the schedule
    def optimize_agent(self, itr: int, samples: TensorDictBase | None) -> dict[str, list[float]]:
        """Store the batch (None: already stored), then replay once learning started."""
        return replay_updates(self, itr, samples, device=self.device)

    # ------------------------------------------------------------------ state
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers this algorithm steps."""
        return [self.optimizer]

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state, temperature and update counter."""
        log_alpha = self.log_alpha.detach().clone()
        return counted_state(
            {"optimizer": self.optimizer}, self.update_counter, log_alpha=log_alpha
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        self.update_counter = load_counted_state({"optimizer": self.optimizer}, state)
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
