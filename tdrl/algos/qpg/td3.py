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

import dataclasses

from tdrl.agents.base import Agent
from tdrl.agents.qpg.ddpg_agent import DdpgAgent
from tdrl.algos.qpg.ddpg import DDPG
from tdrl.keys import BatchSpec


@dataclasses.dataclass(kw_only=True, eq=False)
class TD3(DDPG):
    """TD3: DDPG with TD3's defaults.

    Batch 100, replay ratio 100, tau 0.005, actor and targets every 2 updates, learning
    rates 1e-3, target noise 0.2 clipped at 0.5. The agent must have twin critics
    (``Td3Agent``, or ``DdpgAgent(n_q=2)``). The arguments are ``DDPG``'s.
    """

    batch_size: int = 100
    replay_ratio: float = 100.0
    target_update_tau: float = 0.005
    target_update_interval: int = 2
    policy_update_interval: int = 2
    learning_rate: float = 1e-3
    target_noise_std: float = 0.2
    target_noise_clip: float | None = 0.5

    def initialize(self, agent: Agent, *, n_itr: int, batch_spec: BatchSpec) -> None:
        """Check for twin critics, then ``DDPG.initialize``."""
        if isinstance(agent, DdpgAgent) and agent.n_q < 2:
            raise TypeError(
                f"{type(self).__name__} needs twin critics (Td3Agent or DdpgAgent(n_q=2)), "
                f"got a DdpgAgent with n_q={agent.n_q}"
            )
        super().initialize(agent, n_itr=n_itr, batch_spec=batch_spec)
