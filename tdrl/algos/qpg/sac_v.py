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
``a~``); one optimizer steps the groups ``"pi"``, ``"q"`` and ``"v"``. Shares SAC's replay
buffer and schedule.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase

from tdrl import keys
from tdrl.agents.qpg.sac_v_agent import SacVAgent
from tdrl.algos.base import check_range
from tdrl.algos.pg.base import grad_norm_clip
from tdrl.algos.qpg.sac import SAC
from tdrl.replays.base import DISCOUNT_N, IS_WEIGHT, RETURN_N
from tdrl.samplers.base import BatchSpec
from tdrl.utils.tensor import frozen


class SAC_V(SAC):  # noqa: N801 - rlpyt's name
    """SAC with a value network (``SAC``'s arguments apply, except the temperature ones).

    Args:
        policy_output_regularization: weight ``c`` of the penalty on the policy's mean and
            log std.
        **kwargs: ``SAC``'s arguments (``reward_scale`` sets the entropy weight).
    """

    def __init__(self, *, policy_output_regularization: float = 1e-3, **kwargs: Any):
        kwargs.setdefault("fixed_alpha", 1.0)
        super().__init__(**kwargs)
        self.policy_output_regularization = check_range(
            "policy_output_regularization", policy_output_regularization, 0.0, float("inf")
        )

    def initialize(self, agent: SacVAgent, *, n_itr: int, batch_spec: BatchSpec) -> None:
        if not hasattr(agent, "v_model"):
            raise TypeError(f"SAC_V needs a SacVAgent, got {type(agent).__name__}")
        super().initialize(agent, n_itr=n_itr, batch_spec=batch_spec)
        self.optimizer.add_param_group({"params": list(agent.v_model.parameters()), "name": "v"})
        self._v_params = list(agent.v_model.parameters())

    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """One update: one backward pass of ``L_Q + L_V + L_pi``, one optimizer step, then
        the value target update when due."""
        agent = self.agent
        obs = batch.get(keys.OBSERVATION)
        weight = batch.get(IS_WEIGHT)
        with torch.no_grad():
            next_v = agent.target_v(batch.get(keys.NEXT_OBSERVATION))
            target_q = self.reward_scale * batch.get(RETURN_N) + batch.get(DISCOUNT_N) * next_v
        q = agent.q(obs, batch.get(keys.ACTION))
        q_loss = 0.5 * ((q - target_q) ** 2 * weight).mean(1).sum()

        new_action, log_pi, mean, log_std = agent.pi(obs)
        prior = self._log_prior(new_action)
        with frozen(agent.q_model):
            q_pi = agent.q(obs, new_action).min(0).values
        v = agent.v(obs)
        v_target = (q_pi - log_pi + prior).detach()
        v_loss = 0.5 * ((v - v_target) ** 2 * weight).mean()
        regularizer = 0.5 * (mean.pow(2).mean() + log_std.pow(2).mean())
        pi_loss = (log_pi - q_pi - prior).mean() + self.policy_output_regularization * regularizer

        self.optimizer.zero_grad(set_to_none=True)
        (q_loss + v_loss + pi_loss).backward()
        q_grad_norm = grad_norm_clip(self._q_params, self.clip_grad_norm)
        v_grad_norm = grad_norm_clip(self._v_params, self.clip_grad_norm)
        pi_grad_norm = grad_norm_clip(self._pi_params, self.clip_grad_norm)
        self.optimizer.step()

        self.update_counter += 1
        if self.update_counter % self.target_update_interval == 0:
            agent.update_target(self.target_update_tau)
        return {
            "loss_q": q_loss.detach(),
            "loss_v": v_loss.detach(),
            "loss_pi": pi_loss.detach(),
            "q_grad_norm": q_grad_norm.detach(),
            "v_grad_norm": v_grad_norm.detach(),
            "pi_grad_norm": pi_grad_norm.detach(),
            "q_mean": q.detach().mean(),
            "v_mean": v.detach().mean(),
            "log_pi": log_pi.detach().mean(),
        }
