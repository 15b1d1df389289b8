"""Deep Deterministic Policy Gradient with rlpyt's defaults.

Lillicrap et al. 2016, https://arxiv.org/abs/1509.02971. For a replay batch of n-step
transitions::

    y     = clip(R^(n) + gamma^m (1 - terminal) min_i Q'_i(o', mu'(o')), ±q_target_clip)
    L_Q   = sum_i E[0.5 (Q_i(o, a) - y)^2]
    L_mu  = -E[Q_1(o, mu(o))]          (every ``policy_update_interval`` updates)

with Polyak target updates of actor and critics every ``target_update_interval`` updates.
The actor and the critics have their own optimizers and learning rates (``learning_rate``
and ``q_learning_rate``), both honoured. Time-limit cuts bootstrap from the true next
observation (rlpyt instead dropped them from the loss).
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase

from tdrl import keys
from tdrl.agents.qpg.ddpg_agent import DdpgAgent
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
    """

    def __init__(
        self,
        *,
        discount: float = 0.99,
        batch_size: int = 64,
        min_steps_learn: int = 10_000,
        replay_size: int = 1_000_000,
        replay_ratio: float = 64.0,
        target_update_tau: float = 0.01,
        target_update_interval: int = 1,
        policy_update_interval: int = 1,
        learning_rate: float = 1e-4,
        q_learning_rate: float = 1e-3,
        optim_cls: type[torch.optim.Optimizer] = torch.optim.Adam,
        optim_kwargs: dict[str, Any] | None = None,
        clip_grad_norm: float = 1e8,
        q_target_clip: float = 1e6,
        target_noise_std: float = 0.0,
        target_noise_clip: float | None = None,
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
        self.policy_update_interval = check_positive_int(
            "policy_update_interval", policy_update_interval
        )
        self.learning_rate = check_range("learning_rate", learning_rate, 0.0, 10.0)
        self.q_learning_rate = check_range("q_learning_rate", q_learning_rate, 0.0, 10.0)
        self.optim_cls = optim_cls
        self.optim_kwargs = dict(optim_kwargs or {})
        self.clip_grad_norm = check_range("clip_grad_norm", clip_grad_norm, 0.0, float("inf"))
        self.q_target_clip = check_range("q_target_clip", q_target_clip, 0.0, float("inf"))
        self.target_noise_std = check_range("target_noise_std", target_noise_std, 0.0, 10.0)
        if target_noise_clip is not None:
            check_range("target_noise_clip", target_noise_clip, 1e-12, 10.0)
        self.target_noise_clip = target_noise_clip
        self.n_step_return = check_positive_int("n_step_return", n_step_return)
        if replay_storage not in STORAGES:
            raise ValueError(f"replay_storage must be one of {STORAGES}, got {replay_storage!r}")
        self.replay_storage = replay_storage
        self.replay_scratch_dir = replay_scratch_dir
        self.update_counter = 0
        self.replay_buffer: ReplayBuffer | None = None

    # ------------------------------------------------------------------ set-up
    def initialize(self, agent: DdpgAgent, *, n_itr: int, batch_spec: BatchSpec) -> None:
        """Bind the agent; build the two optimizers and the replay buffer."""
        if not hasattr(agent, "target_mu"):
            raise TypeError(
                f"{type(self).__name__} needs a DdpgAgent or Td3Agent, got {type(agent).__name__}"
            )
        self.agent = agent
        self.batch_spec = batch_spec
        sampler_bs = batch_spec.size
        self.updates_per_optimize = max(1, round(self.replay_ratio * sampler_bs / self.batch_size))
        self.min_itr_learn = self.min_steps_learn // sampler_bs
        agent.set_pretrain_itr(self.min_itr_learn)
        self.mu_optimizer = make_optimizer(
            self.optim_cls, agent.model.parameters(), self.learning_rate, self.optim_kwargs
        )
        self.q_optimizer = make_optimizer(
            self.optim_cls, agent.q_model.parameters(), self.q_learning_rate, self.optim_kwargs
        )
        self.replay_buffer = make_replay_buffer(self, batch_spec)
        self._mu_params = list(agent.model.parameters())
        self._q_params = list(agent.q_model.parameters())

    # ------------------------------------------------------------------ one update
    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """One critic update, an actor update every ``policy_update_interval``, targets."""
        agent = self.agent
        obs = batch.get(keys.OBSERVATION)
        with torch.no_grad():
            next_obs = batch.get(keys.NEXT_OBSERVATION)
            next_action = agent.target_mu(next_obs, self.target_noise_std, self.target_noise_clip)
            next_q = agent.target_q(next_obs, next_action).min(0).values
            target = batch.get(RETURN_N) + batch.get(DISCOUNT_N) * next_q
            target = target.clamp(-self.q_target_clip, self.q_target_clip)
        q = agent.q(obs, batch.get(keys.ACTION))
        q_loss = 0.5 * ((q - target) ** 2 * batch.get(IS_WEIGHT)).mean(1).sum()
        self.q_optimizer.zero_grad(set_to_none=True)
        q_loss.backward()
        q_grad_norm = grad_norm_clip(self._q_params, self.clip_grad_norm)
        self.q_optimizer.step()
        self.update_counter += 1
        info = {
            "loss_q": q_loss.detach(),
            "q_grad_norm": q_grad_norm.detach(),
            "q_mean": q.detach().mean(),
        }
        if self.update_counter % self.policy_update_interval == 0:
            agent.q_model.requires_grad_(False)  # the actor's backward skips critic weights
            try:
                mu_loss = -agent.q(obs, agent.mu(obs))[0].mean()
            finally:
                agent.q_model.requires_grad_(True)
            self.mu_optimizer.zero_grad(set_to_none=True)
            mu_loss.backward()
            info["mu_grad_norm"] = grad_norm_clip(self._mu_params, self.clip_grad_norm).detach()
            self.mu_optimizer.step()
            info["loss_mu"] = mu_loss.detach()
        if self.update_counter % self.target_update_interval == 0:
            agent.update_target(self.target_update_tau)
        return info

    # ------------------------------------------------------------------ the schedule
    def optimize_agent(self, itr: int, samples: TensorDictBase | None) -> dict[str, list[float]]:
        """Store the batch; ``updates_per_optimize`` updates once learning started."""
        return replay_updates(self, itr, samples)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "mu_optimizer": self.mu_optimizer.state_dict(),
            "q_optimizer": self.q_optimizer.state_dict(),
            "update_counter": self.update_counter,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mu_optimizer.load_state_dict(state["mu_optimizer"])
        self.q_optimizer.load_state_dict(state["q_optimizer"])
        self.update_counter = state["update_counter"]
