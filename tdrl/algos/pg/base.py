"""What A2C and PPO share: the training batch, with GAE advantages, from a ``[T, B]`` batch."""

from __future__ import annotations

from typing import Protocol

import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl.agents.base import Agent, PgAgent
from tdrl.utils.device import to_device
from tdrl.utils.returns import generalized_advantage_estimate


@torch.no_grad()
def process_returns(
    agent: PgAgent,
    samples: TensorDictBase,
    *,
    discount: float,
    gae_lambda: float,
    normalize_advantage: bool,
    reward_scale: float = 1.0,
) -> TensorDict:
    """The training batch of an on-policy algorithm, still ``[T, B]``.

    Values of the next observations are computed with the current agent, so targets
    bootstrap at the batch end and where a time limit cut an episode (``truncated``), and
    not at true terminal states. ``gae_lambda=1`` gives discounted returns. A recurrent
    agent computes each next value from the stored state after the step
    (``("next", "rnn_state")``), and the batch keeps ``rnn_state`` and ``is_init`` so the
    training forward replays the sequences from their stored first state.

    Args:
        agent: a policy-gradient agent (``value(observation, prev_action, prev_reward)``).
        samples: the sampler's ``[T, B]`` batch with the agent's stored ``value`` and
            ``log_prob``; a ``valid`` entry, when present, masks steps out.
        discount: gamma.
        gae_lambda: GAE lambda.
        normalize_advantage: standardise advantages over the valid steps.
        reward_scale: rewards are multiplied by it before returns and advantages are
            computed (the value function then learns scaled returns).

    Returns:
        A new TensorDict with the agent inputs, ``action``, the sampling ``log_prob`` and
        ``value``, plus ``advantage`` and ``return`` (and ``valid`` if present).
    """
    reward = samples.get(keys.NEXT_REWARD)[..., 0]
    if reward_scale != 1.0:
        reward = reward * reward_scale
    next_inputs = (
        samples.get(keys.NEXT_OBSERVATION),
        samples.get(keys.ACTION),
        samples.get(keys.NEXT_REWARD),
    )
    next_state = samples.get(keys.NEXT_RNN_STATE, None)
    if next_state is None:
        next_value = agent.value(*next_inputs)
    else:  # the state after each step, as the agent would have continued from it
        next_value = agent.value(*next_inputs, next_state)
    advantage, return_ = generalized_advantage_estimate(
        reward,
        samples.get(keys.VALUE),
        next_value,
        samples.get(keys.NEXT_DONE)[..., 0],
        samples.get(keys.NEXT_TERMINATED)[..., 0],
        discount=discount,
        gae_lambda=gae_lambda,
    )
    valid = samples.get(keys.VALID, None)
    if normalize_advantage:
        if valid is None:
            mean, std = advantage.mean(), advantage.std()
        else:
            n = valid.sum().clamp_min(1.0)
            mean = (advantage * valid).sum() / n
            std = (((advantage - mean) ** 2 * valid).sum() / n).sqrt()
        advantage = (advantage - mean) / (std + 1e-8)
    batch = samples.select(*keys.AGENT_INPUTS, keys.ACTION, keys.LOG_PROB, keys.VALUE)
    if next_state is not None:  # recurrent: training runs the sequences from their states
        batch.set(keys.RNN_STATE, samples.get(keys.RNN_STATE))
        batch.set(keys.IS_INIT, samples.get(keys.IS_INIT))
    batch.set(keys.ADVANTAGE, advantage)
    batch.set(keys.RETURN, return_)
    if valid is not None:
        batch.set(keys.VALID, valid)
    return batch


def check_pg_agent(algo: str, agent: Agent) -> PgAgent:
    """``agent`` if it provides what A2C and PPO need (``PgAgent``), else a clear error."""
    if not isinstance(agent, PgAgent):
        raise TypeError(
            f"{algo} needs a policy-gradient agent (distribution and value, e.g. "
            f"CategoricalPgAgent or GaussianPgAgent), got {type(agent).__name__}"
        )
    return agent


class PgSettings(Protocol):
    """What ``training_batch`` reads from A2C or PPO."""

    agent: PgAgent
    device: torch.device
    discount: float
    gae_lambda: float
    normalize_advantage: bool
    reward_scale: float


def training_batch(algo: PgSettings, samples: TensorDictBase) -> TensorDict:
    """The sampler's batch moved to the agent's device once, as ``process_returns`` makes it.

    Then the agent's observation statistics (if it normalises observations) take in the
    batch's observations, after the values were computed with the old statistics.
    """
    samples = to_device(samples, algo.device)  # once per batch
    batch = process_returns(
        algo.agent,
        samples,
        discount=algo.discount,
        gae_lambda=algo.gae_lambda,
        normalize_advantage=algo.normalize_advantage,
        reward_scale=algo.reward_scale,
    )
    algo.agent.update_obs_rms(samples.get(keys.OBSERVATION))
    return batch
