"""Advantage Actor-Critic (synchronous A3C), with rlpyt's defaults.

Mnih et al. 2016, https://arxiv.org/abs/1602.01783. One gradient step per ``[T, B]`` batch
on::

    L = -E[log pi(a|o) A] + c_v * E[0.5 (V(o) - R)^2] - c_e * E[H(pi(.|o))]

with ``A`` from GAE (``gae_lambda=1``: discounted return minus value). The batch is moved
to the agent's device once per iteration; ``compile=True`` runs the step (loss, backward,
clip, optimizer step) through ``torch.compile`` (``tdrl.utils.compile``).
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl.agents.base import Agent
from tdrl.algos import one_optimizer
from tdrl.algos.pg.base import check_pg_agent, training_batch
from tdrl.algos.settings import (
    algo_optimizer,
    check_optimizer_args,
)
from tdrl.keys import BatchSpec
from tdrl.utils.checks import check_bool, check_optional_range, check_range
from tdrl.utils.compile import maybe_compiled
from tdrl.utils.optim import clipped_step, stack_diagnostics
from tdrl.utils.returns import valid_mean


class A2C:
    """A2C.

    Args:
        discount: gamma.
        learning_rate: optimizer step size.
        value_loss_coeff: c_v.
        entropy_loss_coeff: c_e.
        optim_cls: optimizer class.
        optim_kwargs: extra optimizer arguments.
        clip_grad_norm: global gradient-norm clip (None: no clipping).
        gae_lambda: GAE lambda (1.0: discounted returns).
        normalize_advantage: standardise advantages per batch.
        reward_scale: multiply rewards by this before computing returns (1.0: rlpyt);
            with returns of order 1 the value loss no longer dominates a clipped gradient
            (what Stable-Baselines3's ``VecNormalize(norm_reward=True)`` does adaptively).
        compile: run each step through ``torch.compile`` (CUDA graphs on CUDA); the same
            results as the eager step up to float rounding.
    """

    def __init__(
        self,
        *,
        discount: float = 0.99,
        learning_rate: float = 1e-3,
        value_loss_coeff: float = 0.5,
        entropy_loss_coeff: float = 0.01,
        optim_cls: type[torch.optim.Optimizer] = torch.optim.Adam,
        optim_kwargs: dict[str, Any] | None = None,
        clip_grad_norm: float | None = 1.0,
        gae_lambda: float = 1.0,
        normalize_advantage: bool = False,
        reward_scale: float = 1.0,
        compile: bool = False,  # noqa: A002 - the name torch and the issue use
    ):
        self.discount = check_range("discount", discount, 0.0, 1.0)
        self.learning_rate, self.optim_cls, self.optim_kwargs = check_optimizer_args(
            learning_rate, optim_cls, optim_kwargs
        )
        self.value_loss_coeff = check_range("value_loss_coeff", value_loss_coeff, 0.0, 1e6)
        self.entropy_loss_coeff = check_range("entropy_loss_coeff", entropy_loss_coeff, 0.0, 1e6)
        self.clip_grad_norm = check_optional_range("clip_grad_norm", clip_grad_norm, 0.0, 1e12)
        self.gae_lambda = check_range("gae_lambda", gae_lambda, 0.0, 1.0)
        self.normalize_advantage = check_bool("normalize_advantage", normalize_advantage)
        self.reward_scale = check_range("reward_scale", reward_scale, 1e-12, 1e12)
        self.compile = check_bool("compile", compile)
        self.update_counter = 0
        self.batch_size = 0  # samples per gradient update, set by initialize

    def initialize(self, agent: Agent, *, n_itr: int, batch_spec: BatchSpec) -> None:
        """Bind the agent and build the optimizer."""
        self.agent = check_pg_agent(type(self).__name__, agent)
        self.batch_spec = batch_spec
        self.batch_size = batch_spec.size
        self.device = agent.device
        self.optimizer = algo_optimizer(self, agent.parameters())

    def loss(self, batch: TensorDictBase) -> TensorDict:
        """A2C loss on a batch of any shape.

        Args:
            batch: agent inputs, ``action``, the sampling ``log_prob``, ``advantage`` and
                ``return`` (and optionally ``valid``), as ``process_returns`` builds them.

        Returns:
            ``loss`` and its terms ``loss_pi``, ``loss_value``, ``loss_entropy``, with the
            detached diagnostics ``entropy``, ``perplexity`` and ``approx_kl``.
        """
        out = self.agent(batch)
        dist = self.agent.distribution(out)
        valid = batch.get(keys.VALID, None)
        log_prob = dist.log_prob(batch.get(keys.ACTION))
        loss_pi = -valid_mean(log_prob * batch.get(keys.ADVANTAGE), valid)
        value_error = out.get(keys.VALUE) - batch.get(keys.RETURN)
        loss_value = self.value_loss_coeff * valid_mean(0.5 * value_error**2, valid)
        entropy = valid_mean(dist.entropy(), valid)
        loss_entropy = -self.entropy_loss_coeff * entropy
        with torch.no_grad():
            log_ratio = log_prob - batch.get(keys.LOG_PROB)
            approx_kl = valid_mean(log_ratio.exp() - 1.0 - log_ratio, valid)
        return TensorDict(
            {
                "loss": loss_pi + loss_value + loss_entropy,
                "loss_pi": loss_pi,
                "loss_value": loss_value,
                "loss_entropy": loss_entropy,
                "entropy": entropy.detach(),
                "perplexity": entropy.detach().exp(),
                "approx_kl": approx_kl,
            }
        )

    def optimize_agent(self, itr: int, samples: TensorDictBase) -> dict[str, list[float]]:
        """One gradient step on the whole ``[T, B]`` batch."""
        batch = training_batch(self, samples)
        info = maybe_compiled(self.compile, A2C.gradient_step, self.device, self, batch)
        self.update_counter += 1
        return stack_diagnostics([info])

    def gradient_step(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """``loss``, backward, clip and optimizer step: what ``compile`` compiles."""
        terms = self.loss(batch)
        parts = {"": self.agent.parameters()}
        return clipped_step([self.optimizer], terms, parts, self.clip_grad_norm)

    optimizers = one_optimizer.optimizers
    state_dict = one_optimizer.state_dict
    load_state_dict = one_optimizer.load_state_dict
