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

from typing import Any, ClassVar

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

    def __init__(
        self,
        *,
        V_min: float = -10.0,
        V_max: float = 10.0,
        discount: float = 0.99,
        batch_size: int = 32,
        min_steps_learn: int = 50_000,
        delta_clip: float | None = 1.0,
        replay_size: int = 1_000_000,
        replay_ratio: float = 8.0,
        target_update_tau: float = 1.0,
        target_update_interval: int = 312,
        n_step_return: int = 1,
        learning_rate: float = 2.5e-4,
        optim_cls: type[torch.optim.Optimizer] = torch.optim.Adam,
        optim_kwargs: dict[str, Any] | None = None,
        clip_grad_norm: float | None = 10.0,
        eps_steps: int = 1_000_000,
        double_dqn: bool = False,
        prioritized_replay: bool = False,
        pri_alpha: float = 0.6,
        pri_beta_init: float = 0.4,
        pri_beta_final: float = 1.0,
        pri_beta_steps: int = 50_000_000,
        default_priority: float | None = None,
        replay_storage: str = "memory",
        replay_scratch_dir: str | None = None,
        frame_replay: bool | None = None,
        replay_device: str | torch.device | None = None,
        compile: bool = False,  # noqa: A002 - the name torch and the issue use
    ):
        super().__init__(
            discount=discount,
            batch_size=batch_size,
            min_steps_learn=min_steps_learn,
            delta_clip=delta_clip,
            replay_size=replay_size,
            replay_ratio=replay_ratio,
            target_update_tau=target_update_tau,
            target_update_interval=target_update_interval,
            n_step_return=n_step_return,
            learning_rate=learning_rate,
            optim_cls=optim_cls,
            optim_kwargs=optim_kwargs,
            clip_grad_norm=clip_grad_norm,
            eps_steps=eps_steps,
            double_dqn=double_dqn,
            prioritized_replay=prioritized_replay,
            pri_alpha=pri_alpha,
            pri_beta_init=pri_beta_init,
            pri_beta_final=pri_beta_final,
            pri_beta_steps=pri_beta_steps,
            default_priority=default_priority,
            replay_storage=replay_storage,
            replay_scratch_dir=replay_scratch_dir,
            frame_replay=frame_replay,
            replay_device=replay_device,
            compile=compile,
        )
        self.V_min = check_range("V_min", V_min, -1e12, 1e12)
        self.V_max = check_range("V_max", V_max, -1e12, 1e12)
        if not self.V_min < self.V_max:
            raise ValueError(f"V_min must be below V_max, got V_min={V_min}, V_max={V_max}")

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
