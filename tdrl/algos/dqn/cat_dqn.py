"""Categorical DQN (C51) with rlpyt's defaults.

Bellemare et al. 2017, https://arxiv.org/abs/1707.06887. The return distribution is a
categorical over ``n_atoms`` fixed atoms ``z_j = linspace(V_min, V_max)``. For an n-step
replay transition the target atoms ``Tz_i = clip(R^(n) + gamma^m (1 - terminal) z_i)`` carry
the target network's probabilities ``p'_i`` at the bootstrap action and are projected back
onto the support with the triangular kernel::

    m_j = sum_i p'_i * clip(1 - |Tz_i - z_j| / dz, 0, 1)
    L   = E_i[w_i * (-sum_j m_j log p_j(o, a))]

The bootstrap action maximises the expected target return (the online one with
``double_dqn``). Priorities are ``KL(m || p)`` clamped to ``[1e-6, 1e6]``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl._compat import tensordict_from_trusted
from tdrl.agents.base import Agent
from tdrl.algos.dqn.dqn import DQN, check_dqn_agent
from tdrl.keys import DISCOUNT_N, IS_WEIGHT, RETURN_N, BatchSpec, Q
from tdrl.utils.checks import check_range


def project_distribution(
    probs: torch.Tensor, return_n: torch.Tensor, discount_n: torch.Tensor, support: torch.Tensor
) -> torch.Tensor:
    """Project ``probs`` on atoms ``R + discount * z`` back onto ``support`` (C51).

    Args:
        probs: ``[N, P]`` probabilities of the bootstrap distribution.
        return_n: ``[N]`` n-step returns.
        discount_n: ``[N]`` bootstrap discounts (0 at terminal states).
        support: ``[P]`` evenly spaced atoms.

    Returns:
        ``[N, P]`` projected probabilities (rows sum to 1).
    """
    v_min, v_max = support[0], support[-1]
    delta_z = (v_max - v_min) / (support.numel() - 1)
    target_z = (return_n[:, None] + discount_n[:, None] * support[None, :]).clamp(v_min, v_max)
    kernel = (1.0 - (target_z[:, None, :] - support[None, :, None]).abs() / delta_z).clamp(0, 1)
    return (kernel * probs[:, None, :]).sum(-1)


@dataclasses.dataclass(kw_only=True, eq=False)
class CategoricalDQN(DQN):
    """C51 on DQN's replay and update schedule.

    The agent must be a ``DqnAgent(n_atoms=...)``; its support is set to
    ``linspace(V_min, V_max, n_atoms)``.

    Args:
        V_min: lowest atom.
        V_max: highest atom.
        discount, batch_size, ...: every other argument is ``DQN``'s, with its default and
            meaning (``default_priority`` and ``td_abs_err`` here are KL divergences).
    """

    categorical: ClassVar[bool] = True

    V_min: float = -10.0
    V_max: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.V_min = check_range("V_min", self.V_min, -1e12, 1e12)
        self.V_max = check_range("V_max", self.V_max, -1e12, 1e12)
        if not self.V_min < self.V_max:
            raise ValueError(
                f"V_min must be below V_max, got V_min={self.V_min}, V_max={self.V_max}"
            )

    def initialize(self, agent: Agent, *, n_itr: int, batch_spec: BatchSpec) -> None:
        """Set the agent's support, then ``DQN.initialize``."""
        dqn_agent = check_dqn_agent(type(self).__name__, agent, categorical=True)
        dqn_agent.set_support(self.V_min, self.V_max)
        super().initialize(dqn_agent, n_itr=n_itr, batch_spec=batch_spec)

    def loss(self, batch: TensorDictBase) -> TensorDict:
        """Cross-entropy between the projected target and the predicted distributions.

        Returns:
            ``loss`` with the diagnostics ``td_abs_err`` (per transition: the KL divergence
            used as priority) and ``q_mean``.
        """
        agent = self.agent
        support = agent.support
        logits = agent(batch).get(Q)  # [N, A, P]
        action = batch.get(keys.ACTION).long()
        index = action.view(-1, 1, 1).expand(-1, 1, logits.shape[-1])
        log_p = torch.log_softmax(logits.gather(1, index).squeeze(1), dim=-1)
        with torch.no_grad():
            nxt = batch.get(keys.NEXT)
            target_probs = torch.softmax(agent.target(nxt), dim=-1)
            if self.double_dqn:
                next_q = agent.q_values(agent(nxt).get(Q))
            else:
                next_q = (target_probs * support).sum(-1)
            next_a = next_q.argmax(dim=-1).view(-1, 1, 1).expand(-1, 1, logits.shape[-1])
            next_probs = target_probs.gather(1, next_a).squeeze(1)
            target = project_distribution(
                next_probs, batch.get(RETURN_N), batch.get(DISCOUNT_N), support
            )
        cross_entropy = -(target * log_p).sum(-1)
        loss = (batch.get(IS_WEIGHT) * cross_entropy).mean()
        with torch.no_grad():
            kl = (target * (torch.log(target.clamp_min(1e-12)) - log_p)).sum(-1)
            td_abs_err = kl.clamp(1e-6, 1e6)
            q_mean = (log_p.exp() * support).sum(-1).mean()
        terms = {"loss": loss, "td_abs_err": td_abs_err, "q_mean": q_mean}
        return tensordict_from_trusted(terms, ())
