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

from tdrl.agents.qpg.ddpg_agent import DdpgAgent
from tdrl.algos.qpg.ddpg import DDPG
from tdrl.samplers.base import BatchSpec

TD3_DEFAULTS: dict[str, Any] = {
    "batch_size": 100,
    "replay_ratio": 100.0,
    "target_update_tau": 0.005,
    "target_update_interval": 2,
    "policy_update_interval": 2,
    "learning_rate": 1e-3,
    "q_learning_rate": 1e-3,
    "target_noise_std": 0.2,
    "target_noise_clip": 0.5,
}


class TD3(DDPG):
    """TD3: DDPG's arguments with TD3's defaults (``TD3_DEFAULTS``); any can be overridden.

    The agent must have twin critics (``Td3Agent``, or ``DdpgAgent(n_q=2)``).
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**{**TD3_DEFAULTS, **kwargs})

    def initialize(self, agent: DdpgAgent, *, n_itr: int, batch_spec: BatchSpec) -> None:
        if getattr(agent, "n_q", 0) < 2:
            raise TypeError("TD3 needs twin critics: use Td3Agent or DdpgAgent(n_q=2)")
        super().initialize(agent, n_itr=n_itr, batch_spec=batch_spec)
