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
terminal).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tensordict import TensorDictBase

from tdrl import keys
from tdrl.agents.qpg.sac_agent import SacAgent
from tdrl.algos.base import check_range, make_optimizer, replay_updates
from tdrl.algos.pg.base import grad_norm_clip
from tdrl.replays.base import (
    DISCOUNT_N,
    IS_WEIGHT,
    RETURN_N,
    STORAGES,
    ReplayBuffer,
    make_replay_buffer,
)
from tdrl.samplers.base import BatchSpec, check_positive_int
from tdrl.utils.tensor import frozen

ACTION_PRIORS = ("uniform", "gaussian")


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
        target_entropy: ``"auto"`` (``-|A|``) or a number.
        clip_grad_norm: gradient-norm clip of each network.
        n_step_return: n of the n-step returns.
        replay_storage: ``"memory"`` or ``"memmap"``.
        replay_scratch_dir: directory of memmap files.
    """

    def __init__(
        self,
        *,
        discount: float = 0.99,
        batch_size: int = 256,
        min_steps_learn: int = 10_000,
        replay_size: int = 1_000_000,
        replay_ratio: float = 256.0,
        target_update_tau: float = 0.005,
        target_update_interval: int = 1,
        learning_rate: float = 3e-4,
        fixed_alpha: float | None = None,
        optim_cls: type[torch.optim.Optimizer] = torch.optim.Adam,
        optim_kwargs: dict[str, Any] | None = None,
        action_prior: str = "uniform",
        reward_scale: float = 1.0,
        target_entropy: str | float = "auto",
        clip_grad_norm: float = 1e9,
        n_step_return: int = 1,
        replay_storage: str = "memory",
        replay_scratch_dir: str | None = None,
    ):
        self.discount = check_range("discount", discount, 0.0, 1.0)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.min_steps_learn = check_positive_int("min_steps_learn", min_steps_learn, 0)
        self.replay_size = check_positive_int("replay_size", replay_size)
        self.replay_ratio = check_range("replay_ratio", replay_ratio, 1e-12, float("inf"))
        self.target_update_tau = check_range("target_update_tau", target_update_tau, 1e-12, 1.0)
        self.target_update_interval = check_positive_int(
            "target_update_interval", target_update_interval
        )
        self.learning_rate = check_range("learning_rate", learning_rate, 0.0, 10.0)
        if fixed_alpha is not None:
            check_range("fixed_alpha", fixed_alpha, 0.0, float("inf"))
        self.fixed_alpha = fixed_alpha
        self.optim_cls = optim_cls
        self.optim_kwargs = dict(optim_kwargs or {})
        if action_prior not in ACTION_PRIORS:
            raise ValueError(f"action_prior must be one of {ACTION_PRIORS}, got {action_prior!r}")
        self.action_prior = action_prior
        self.reward_scale = check_range("reward_scale", reward_scale, 0.0, float("inf"))
        if target_entropy != "auto" and not isinstance(target_entropy, (int, float)):
            raise ValueError(f"target_entropy must be 'auto' or a number, got {target_entropy!r}")
        self.target_entropy_arg = target_entropy
        self.clip_grad_norm = check_range("clip_grad_norm", clip_grad_norm, 0.0, float("inf"))
        self.n_step_return = check_positive_int("n_step_return", n_step_return)
        if replay_storage not in STORAGES:
            raise ValueError(f"replay_storage must be one of {STORAGES}, got {replay_storage!r}")
        self.replay_storage = replay_storage
        self.replay_scratch_dir = replay_scratch_dir
        self.update_counter = 0
        self.replay_buffer: ReplayBuffer | None = None

    # ------------------------------------------------------------------ set-up
    def initialize(self, agent: SacAgent, *, n_itr: int, batch_spec: BatchSpec) -> None:
        """Bind the agent; build optimizers, temperature and replay buffer."""
        if not hasattr(agent, "q_model"):
            raise TypeError(f"SAC needs a SacAgent, got {type(agent).__name__}")
        self.agent = agent
        self.batch_spec = batch_spec
        sampler_bs = batch_spec.size
        self.updates_per_optimize = max(1, round(self.replay_ratio * sampler_bs / self.batch_size))
        self.min_itr_learn = self.min_steps_learn // sampler_bs
        agent.set_pretrain_itr(self.min_itr_learn)
        self.target_entropy = (
            -float(agent.action_size)
            if self.target_entropy_arg == "auto"
            else float(self.target_entropy_arg)
        )
        self.log_alpha = torch.zeros((), requires_grad=True)
        if self.fixed_alpha is not None:
            self.log_alpha.data.fill_(math.log(max(self.fixed_alpha, 1e-30)))
        groups = [
            {"params": list(agent.model.parameters()), "name": "pi"},
            {"params": list(agent.q_model.parameters()), "name": "q"},
        ]
        if self.fixed_alpha is None:
            groups.append({"params": [self.log_alpha], "name": "alpha"})
        self.optimizer = make_optimizer(
            self.optim_cls, groups, self.learning_rate, self.optim_kwargs
        )
        self.replay_buffer = make_replay_buffer(self, batch_spec)
        self._pi_params = list(agent.model.parameters())
        self._q_params = list(agent.q_model.parameters())

    def param_group(self, name: str) -> dict[str, Any]:
        """The optimizer's parameter group ``name`` (``"pi"``, ``"q"``, ``"alpha"``, ...),
        e.g. to change one network's learning rate."""
        for group in self.optimizer.param_groups:
            if group.get("name") == name:
                return group
        names = [g.get("name") for g in self.optimizer.param_groups]
        raise KeyError(f"no parameter group {name!r}; groups: {names}")

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    # ------------------------------------------------------------------ one update
    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """One SAC update on a replay batch: one backward pass of ``L_Q + L_pi + L_alpha``,
        one optimizer step, then the target update when due."""
        agent = self.agent
        obs = batch.get(keys.OBSERVATION)
        next_obs = batch.get(keys.NEXT_OBSERVATION)
        alpha = self.log_alpha.detach().exp()
        new_action, log_pi, _, log_std = agent.pi(obs)
        with torch.no_grad():
            next_action, next_log_pi, _, _ = agent.pi(next_obs)
            next_q = agent.target_q(next_obs, next_action).min(0).values
            target = self.reward_scale * batch.get(RETURN_N) + batch.get(DISCOUNT_N) * (
                next_q - alpha * next_log_pi
            )
        q = agent.q(obs, batch.get(keys.ACTION))
        q_loss = 0.5 * ((q - target) ** 2 * batch.get(IS_WEIGHT)).mean(1).sum()
        with frozen(agent.q_model):  # the actor's gradient skips critic weight grads
            q_pi = agent.q(obs, new_action).min(0).values
        pi_loss = (alpha * log_pi - q_pi - self._log_prior(new_action)).mean()
        loss = q_loss + pi_loss
        info: dict[str, torch.Tensor] = {}
        if self.fixed_alpha is None:
            alpha_loss = -(self.log_alpha * (log_pi.detach() + self.target_entropy)).mean()
            loss = loss + alpha_loss
            info["alpha_loss"] = alpha_loss.detach()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        q_grad_norm = grad_norm_clip(self._q_params, self.clip_grad_norm)
        pi_grad_norm = grad_norm_clip(self._pi_params, self.clip_grad_norm)
        self.optimizer.step()

        self.update_counter += 1
        if self.update_counter % self.target_update_interval == 0:
            agent.update_target(self.target_update_tau)
        info.update(
            {
                "loss_q": q_loss.detach(),
                "loss_pi": pi_loss.detach(),
                "q_grad_norm": q_grad_norm.detach(),
                "pi_grad_norm": pi_grad_norm.detach(),
                "q_mean": q.detach().mean(),
                "log_pi": log_pi.detach().mean(),
                "pi_log_std": log_std.detach().mean(),
                "alpha": alpha,
            }
        )
        return info

    def _log_prior(self, action: torch.Tensor) -> torch.Tensor:
        if self.action_prior == "uniform":
            return torch.zeros((), dtype=action.dtype)
        return (-0.5 * action.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)

    # ------------------------------------------------------------------ the schedule
    def optimize_agent(self, itr: int, samples: TensorDictBase | None) -> dict[str, list[float]]:
        """Store the batch; ``updates_per_optimize`` updates once learning started."""
        return replay_updates(self, itr, samples)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "update_counter": self.update_counter,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.update_counter = state["update_counter"]
