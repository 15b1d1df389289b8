"""The "Rainbow minus Noisy Nets" preset (rlpyt's ``ernbw`` config).

Hessel et al. 2018, https://arxiv.org/abs/1710.02298, without noisy nets: categorical
returns (C51), double Q-learning, a dueling network, 3-step returns and prioritized replay.
"""

from __future__ import annotations

from typing import Any

from tdrl.agents.dqn.dqn_agent import DqnAgent
from tdrl.algos.dqn.cat_dqn import CategoricalDQN
from tdrl.utils.checks import check_mapping

RAINBOW_ALGO_DEFAULTS: dict[str, Any] = {
    "double_dqn": True,
    "prioritized_replay": True,
    "n_step_return": 3,
    "learning_rate": 6.25e-5,
}


def rainbow_minus_noisy(
    *,
    algo_kwargs: dict[str, Any] | None = None,
    agent_kwargs: dict[str, Any] | None = None,
    n_atoms: int = 51,
) -> tuple[CategoricalDQN, DqnAgent]:
    """A ``CategoricalDQN`` and a dueling categorical ``DqnAgent`` configured as Rainbow.

    Args:
        algo_kwargs: overrides of ``CategoricalDQN`` arguments (on top of the preset's
            double DQN, prioritized replay, 3-step returns and learning rate 6.25e-5).
        agent_kwargs: overrides of ``DqnAgent`` arguments (``model_kwargs`` is merged
            with ``{"dueling": True}``).
        n_atoms: atoms of the return distribution.

    Returns:
        ``(algo, agent)``.
    """
    algo = CategoricalDQN(**{**RAINBOW_ALGO_DEFAULTS, **check_mapping("algo_kwargs", algo_kwargs)})
    agent_kwargs = check_mapping("agent_kwargs", agent_kwargs)
    model_kwargs = {
        "dueling": True,
        **check_mapping("agent_kwargs['model_kwargs']", agent_kwargs.pop("model_kwargs", None)),
    }
    agent = DqnAgent(n_atoms=n_atoms, model_kwargs=model_kwargs, **agent_kwargs)
    return algo, agent
