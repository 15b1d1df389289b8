"""Twin Delayed DDPG (TD3) with rlpyt's defaults.

Fujimoto et al. 2018, https://arxiv.org/abs/1802.09477. DDPG's update (see
``tdrl.algos.qpg.ddpg``) with three changes: the target is the minimum of twin critics,
the target action is smoothed with clipped Gaussian noise
``a' = clip(mu'(o') + clip(N(0, 0.2^2), ±0.5), -1, 1)`` (in the ``[-1, 1]`` action space),
and the actor and the targets are updated every second critic update. Unlike rlpyt (whose
``mu_learning_rate`` was stored but never used), the actor's and the critics' learning
rates are both honoured.
"""

from __future__ import annotations

from typing import Any

import torch

from tdrl.agents.base import Agent
from tdrl.agents.qpg.ddpg_agent import DdpgAgent
from tdrl.algos.qpg.ddpg import DDPG
from tdrl.keys import BatchSpec


class TD3(DDPG):
    """TD3: DDPG with TD3's defaults.

    Batch 100, replay ratio 100, tau 0.005, actor and targets every 2 updates, learning
    rates 1e-3, target noise 0.2 clipped at 0.5. The agent must have twin critics
    (``Td3Agent``, or ``DdpgAgent(n_q=2)``). The arguments are ``DDPG``'s.
    """

    def __init__(
        self,
        *,
        discount: float = 0.99,
        batch_size: int = 100,
        min_steps_learn: int = 10_000,
        replay_size: int = 1_000_000,
        replay_ratio: float = 100.0,
        target_update_tau: float = 0.005,
        target_update_interval: int = 2,
        policy_update_interval: int = 2,
        learning_rate: float = 1e-3,
        q_learning_rate: float = 1e-3,
        optim_cls: type[torch.optim.Optimizer] = torch.optim.Adam,
        optim_kwargs: dict[str, Any] | None = None,
        clip_grad_norm: float = 1e8,
        q_target_clip: float = 1e6,
        target_noise_std: float = 0.2,
        target_noise_clip: float | None = 0.5,
        n_step_return: int = 1,
        replay_storage: str = "memory",
        replay_scratch_dir: str | None = None,
        replay_device: str | torch.device | None = None,
        compile: bool = False,  # noqa: A002 - the name torch and the issue use
    ):
        super().__init__(
            discount=discount,
            batch_size=batch_size,
            min_steps_learn=min_steps_learn,
            replay_size=replay_size,
            replay_ratio=replay_ratio,
            target_update_tau=target_update_tau,
            target_update_interval=target_update_interval,
            policy_update_interval=policy_update_interval,
            learning_rate=learning_rate,
            q_learning_rate=q_learning_rate,
            optim_cls=optim_cls,
            optim_kwargs=optim_kwargs,
            clip_grad_norm=clip_grad_norm,
            q_target_clip=q_target_clip,
            target_noise_std=target_noise_std,
            target_noise_clip=target_noise_clip,
            n_step_return=n_step_return,
            replay_storage=replay_storage,
            replay_scratch_dir=replay_scratch_dir,
            replay_device=replay_device,
            compile=compile,
        )

    def initialize(self, agent: Agent, *, n_itr: int, batch_spec: BatchSpec) -> None:
        """Check for twin critics, then ``DDPG.initialize``."""
        if isinstance(agent, DdpgAgent) and agent.n_q < 2:
            raise TypeError(
                f"{type(self).__name__} needs twin critics (Td3Agent or DdpgAgent(n_q=2)), "
                f"got a DdpgAgent with n_q={agent.n_q}"
            )
        super().initialize(agent, n_itr=n_itr, batch_spec=batch_spec)
