"""Proximal Policy Optimization (clipped surrogate), with rlpyt's defaults.

Schulman et al. 2017, https://arxiv.org/abs/1707.06347. For a minibatch with advantages
``A`` (GAE), returns ``R``, ratio ``rho = pi(a|o) / pi_old(a|o)`` and clip ``eps``::

    L = -E[min(rho A, clip(rho, 1 - eps, 1 + eps) A)]
        + c_v * E[0.5 (V(o) - R)^2] - c_e * E[H(pi(.|o))]

Each iteration runs ``epochs`` passes over the ``T*B`` samples in ``minibatches`` shuffled
minibatches; for a recurrent agent the minibatches split the ``B`` envs and keep whole
``T``-step sequences, run from their stored first state (rlpyt's rule). With
``linear_lr_schedule`` both the learning rate and ``eps`` decay linearly to zero over the
run, as in rlpyt. The batch is moved to the agent's device once per
iteration; with ``compile=True`` each minibatch step (loss, backward, clip, optimizer step)
runs through ``torch.compile`` (``tdrl.utils.compile``), the learning rate and ``eps`` held in
tensors that the schedule fills.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl.agents.base import Agent
from tdrl.algos.pg.base import check_pg_agent, training_batch
from tdrl.keys import BatchSpec
from tdrl.utils.checks import (
    check_bool,
    check_int,
    check_optional_range,
    check_range,
)
from tdrl.utils.compile import maybe_compiled
from tdrl.utils.optim import (
    check_optimizer,
    clipped_step,
    load_optimizer_state,
    make_optimizer,
    portable_optimizer_state,
    stack_diagnostics,
)
from tdrl.utils.returns import valid_mean


class PPO:
    """PPO-clip.

    Args:
        discount: gamma.
        learning_rate: Adam step size (annealed with ``linear_lr_schedule``).
        value_loss_coeff: c_v.
        entropy_loss_coeff: c_e.
        optim_cls: optimizer class.
        optim_kwargs: extra optimizer arguments.
        clip_grad_norm: global gradient-norm clip (None: no clipping).
        gae_lambda: GAE lambda (1.0: discounted returns).
        minibatches: minibatches per epoch.
        epochs: passes over each batch.
        ratio_clip: eps of the clipped surrogate (annealed with ``linear_lr_schedule``).
        linear_lr_schedule: decay learning rate and ``ratio_clip`` linearly to 0.
        normalize_advantage: standardise advantages per batch.
        reward_scale: multiply rewards by this before computing returns (1.0: rlpyt);
            with returns of order 1 the value loss no longer dominates a clipped gradient
            (what Stable-Baselines3's ``VecNormalize(norm_reward=True)`` does adaptively).
        compile: run each minibatch step through ``torch.compile`` (CUDA graphs on CUDA);
            the same results as the eager step up to float rounding.
    """

    def __init__(
        self,
        *,
        discount: float = 0.99,
        learning_rate: float = 1e-3,
        value_loss_coeff: float = 1.0,
        entropy_loss_coeff: float = 0.01,
        optim_cls: type[torch.optim.Optimizer] = torch.optim.Adam,
        optim_kwargs: dict[str, Any] | None = None,
        clip_grad_norm: float | None = 1.0,
        gae_lambda: float = 1.0,
        minibatches: int = 4,
        epochs: int = 4,
        ratio_clip: float = 0.1,
        linear_lr_schedule: bool = True,
        normalize_advantage: bool = False,
        reward_scale: float = 1.0,
        compile: bool = False,  # noqa: A002 - the name torch and the issue use
    ):
        self.discount = check_range("discount", discount, 0.0, 1.0)
        self.learning_rate = check_range("learning_rate", learning_rate, 0.0, 10.0)
        self.value_loss_coeff = check_range("value_loss_coeff", value_loss_coeff, 0.0, 1e6)
        self.entropy_loss_coeff = check_range("entropy_loss_coeff", entropy_loss_coeff, 0.0, 1e6)
        self.optim_cls, self.optim_kwargs = check_optimizer(optim_cls, optim_kwargs)
        self.clip_grad_norm = check_optional_range("clip_grad_norm", clip_grad_norm, 0.0, 1e12)
        self.gae_lambda = check_range("gae_lambda", gae_lambda, 0.0, 1.0)
        self.minibatches = check_int("minibatches", minibatches, minimum=1)
        self.epochs = check_int("epochs", epochs, minimum=1)
        self.initial_ratio_clip = check_range("ratio_clip", ratio_clip, 0.0, 10.0)
        self.ratio_clip = self.initial_ratio_clip
        self.linear_lr_schedule = check_bool("linear_lr_schedule", linear_lr_schedule)
        self.normalize_advantage = check_bool("normalize_advantage", normalize_advantage)
        self.reward_scale = check_range("reward_scale", reward_scale, 1e-12, 1e12)
        self.compile = check_bool("compile", compile)
        self.update_counter = 0
        self.batch_size = 0  # samples per gradient update, set by initialize

    def initialize(self, agent: Agent, *, n_itr: int, batch_spec: BatchSpec) -> None:
        """Bind the agent and build the optimizer (and the schedule over ``n_itr``)."""
        self.agent = check_pg_agent(type(self).__name__, agent)
        if agent.recurrent and self.minibatches > batch_spec.B:
            raise ValueError(
                f"minibatches={self.minibatches} is larger than batch_B={batch_spec.B}: a "
                "recurrent agent's minibatches split the envs and keep whole sequences"
            )
        if batch_spec.size < self.minibatches:
            raise ValueError(
                f"minibatches={self.minibatches} is larger than the batch of "
                f"{batch_spec.size} samples (batch_T * batch_B)"
            )
        self.n_itr = max(1, int(n_itr))
        self.batch_spec = batch_spec
        self.batch_size = batch_spec.size // self.minibatches
        self.device = agent.device
        self.optimizer = make_optimizer(
            self.optim_cls,
            agent.parameters(),
            self.learning_rate,
            self.optim_kwargs,
            compile_on=self.device if self.compile else None,
            tensor_lr=self.compile and self.linear_lr_schedule,
        )
        # The compiled step reads eps from a tensor (a new float would mean a recompile).
        self._ratio_clip_tensor = torch.tensor(self.ratio_clip, device=self.device)
        self.lr_scheduler = None
        if self.linear_lr_schedule:
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lr_lambda=lambda itr: max(0.0, (self.n_itr - itr) / self.n_itr)
            )

    def loss(
        self, batch: TensorDictBase, ratio_clip: float | torch.Tensor | None = None
    ) -> TensorDict:
        """PPO loss on a batch of any shape.

        Args:
            batch: agent inputs, ``action``, the sampling ``log_prob``, ``advantage`` and
                ``return`` (and optionally ``valid``), as ``process_returns`` builds them.
            ratio_clip: eps (None: the current ``self.ratio_clip``).

        Returns:
            ``loss`` and its terms ``loss_pi``, ``loss_value``, ``loss_entropy``, with the
            detached diagnostics ``entropy``, ``perplexity``, ``clip_fraction`` and
            ``approx_kl``.
        """
        eps = self.ratio_clip if ratio_clip is None else ratio_clip
        out = self.agent(batch)
        dist = self.agent.distribution(out)
        valid = batch.get(keys.VALID, None)
        log_prob = dist.log_prob(batch.get(keys.ACTION))
        log_ratio = log_prob - batch.get(keys.LOG_PROB)
        ratio = log_ratio.exp()
        advantage = batch.get(keys.ADVANTAGE)
        clipped = ratio.clamp(1.0 - eps, 1.0 + eps)
        loss_pi = -valid_mean(torch.min(ratio * advantage, clipped * advantage), valid)
        value_error = out.get(keys.VALUE) - batch.get(keys.RETURN)
        loss_value = self.value_loss_coeff * valid_mean(0.5 * value_error**2, valid)
        entropy = valid_mean(dist.entropy(), valid)
        loss_entropy = -self.entropy_loss_coeff * entropy
        with torch.no_grad():
            clip_fraction = valid_mean(((ratio - 1.0).abs() > eps).float(), valid)
            approx_kl = valid_mean((ratio - 1.0) - log_ratio, valid)
        return TensorDict(
            {
                "loss": loss_pi + loss_value + loss_entropy,
                "loss_pi": loss_pi,
                "loss_value": loss_value,
                "loss_entropy": loss_entropy,
                "entropy": entropy.detach(),
                "perplexity": entropy.detach().exp(),
                "clip_fraction": clip_fraction,
                "approx_kl": approx_kl,
            }
        )

    def optimize_agent(self, itr: int, samples: TensorDictBase) -> dict[str, list[float]]:
        """``epochs`` x ``minibatches`` gradient steps on one ``[T, B]`` batch."""
        batch = training_batch(self, samples)
        recurrent = keys.RNN_STATE in batch
        # Recurrent: minibatches of whole [T, b] sequences (envs shuffled), from their
        # stored first state; feed-forward: of single steps, all T * B shuffled.
        flat = batch if recurrent else batch.reshape(-1)
        n = flat.shape[1] if recurrent else flat.shape[0]
        mb_size = n // self.minibatches
        steps = []
        if self.compile:
            self._ratio_clip_tensor.fill_(self.ratio_clip)
        for _ in range(self.epochs):
            perm = torch.randperm(n, device=self.device)
            for m in range(self.minibatches):
                idx = perm[m * mb_size : (m + 1) * mb_size]
                minibatch = flat[:, idx] if recurrent else flat[idx]
                eps = self._ratio_clip_tensor if self.compile else self.ratio_clip
                steps.append(
                    maybe_compiled(
                        self.compile, PPO.minibatch_step, self.device, self, minibatch, eps
                    )
                )
                self.update_counter += 1
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
            self.ratio_clip = self.initial_ratio_clip * max(
                0.0, (self.n_itr - itr - 1) / self.n_itr
            )
        return stack_diagnostics(steps)

    def minibatch_step(
        self, minibatch: TensorDictBase, ratio_clip: float | torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``loss``, backward, clip and optimizer step: what ``compile`` compiles."""
        terms = self.loss(minibatch, ratio_clip)
        parts = {"": self.agent.parameters()}
        return clipped_step([self.optimizer], terms, parts, self.clip_grad_norm)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers this algorithm steps."""
        return [self.optimizer]

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, learning-rate schedule, current ratio clip and update counter.

        Learning rates are numbers even where a compiled step holds them in tensors.
        """
        schedule = None if self.lr_scheduler is None else self.lr_scheduler.state_dict()
        if schedule is not None:
            schedule = {k: _numbers(v) for k, v in schedule.items()}
        return {
            "optimizer": portable_optimizer_state(self.optimizer),
            "lr_scheduler": schedule,
            "ratio_clip": self.ratio_clip,
            "update_counter": self.update_counter,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        load_optimizer_state(self.optimizer, state["optimizer"])
        if self.lr_scheduler is not None and state.get("lr_scheduler") is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.ratio_clip = state["ratio_clip"]
        self.update_counter = state["update_counter"]


def _numbers(value: Any) -> Any:
    """``value`` with 0-dim tensors in it (a list of learning rates) as floats."""
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return float(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value
