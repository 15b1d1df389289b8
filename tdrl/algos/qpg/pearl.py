"""PEARL's meta-gradient step: SAC v1 on ``o ⊕ z`` with a KL-regularised task encoder.

Rakelly et al. 2019, https://arxiv.org/abs/1903.08254, as the reference (oyster's
``PEARLSoftActorCritic._take_step``). For each of the ``tasks`` of a meta-batch, a context
``c`` (``[tasks, m]`` transitions, from the encoder buffers) gives the posterior
``q(z | c)``; ``z ~ q(z | c)`` is drawn reparameterised, once per task, and broadcast to the
task's ``n`` RL transitions (``[tasks, n]``, from the RL buffers). With
``a~ ~ pi(. | o ⊕ sg(z))`` a reparameterised tanh-Gaussian action and ``sg`` stop-gradient::

    y      = s R + gamma^m (1 - terminal) V'(o' ⊕ z)          (no gradient)
    L_Q    = sum_i E[(Q_i(o ⊕ z, a) - y)^2]                    (trains Q and the encoder)
    L_V    = E[(V(o ⊕ sg(z)) - sg(min_i Q_i(o ⊕ sg(z), a~) - log pi(a~)))^2]
    L_pi   = E[log pi(a~) - min_i Q_i(o ⊕ sg(z), a~)]
             + c_mean E[mean^2] + c_std E[log_std^2]
    L_KL   = kl_lambda * mean_tasks KL(q(z | c) || N(0, I))     (the encoder)

``E`` is the mean over all ``tasks * n`` transitions; the squared errors carry no 1/2
(oyster's MSE, which sets the weight of the KL against the Bellman error). Only the
critics' Bellman error and the KL reach the encoder: V and the policy see ``sg(z)``, and
the critics are frozen while they score ``a~`` (their weights get no gradient from
``L_V`` or ``L_pi``). ``gamma^m (1 - terminal)`` is the replay's ``discount_n``: a
``terminated`` step stops bootstrapping, a ``truncated`` one (a time limit) does not.

One ``update`` is one batched computation over all tasks (no loop): the four losses are
taken at the same parameters, summed into one backward pass, and each part's optimizer
steps (policy, critics, value, encoder: one Adam each, as oyster); then the value target
moves by ``target_update_tau``. Oyster steps its parts one after the other (the value and
policy losses score ``a~`` with the critics after their step); here, as ``SAC_V``, they
use the critics before it.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl._compat import tensordict_from_trusted
from tdrl.agents.base import Agent
from tdrl.agents.qpg.pearl_agent import PearlAgent
from tdrl.algos.base import (
    detached_diagnostics,
    grad_norm_clip,
    make_optimizer,
    update_targets,
)
from tdrl.keys import DISCOUNT_N, RETURN_N, BatchSpec
from tdrl.utils.checks import (
    ArgumentError,
    check_callable,
    check_choice,
    check_int,
    check_mapping,
    check_optional_range,
    check_range,
)
from tdrl.utils.tensor import frozen_call

#: How the per-task KL terms are reduced: the mean over tasks, or oyster's sum.
KL_REDUCTIONS = ("mean", "sum")

#: The parts of the agent, each with its own optimizer.
PARTS = ("pi", "q", "v", "context")


class PEARL:
    """PEARL's batched meta-gradient step (see the module docstring).

    Args:
        discount: gamma; the replay's ``discount_n`` carries it, so the ``MultiTaskReplay``
            must be built with the same value.
        batch_size: RL transitions per task in a meta-batch (oyster: 256).
        embedding_batch_size: context transitions per task (oyster: 64).
        meta_batch: tasks per meta-gradient step (oyster: 16).
        kl_lambda: weight of the KL term (oyster: 0.1).
        kl_reduction: ``"sum"`` over the tasks of the meta-batch (oyster's
            ``compute_kl_div``), or ``"mean"``.
        reward_scale: factor on rewards; sets the entropy weight (oyster: 5).
        policy_mean_reg: weight ``c_mean`` of ``E[mean^2]`` (oyster: 1e-3).
        policy_std_reg: weight ``c_std`` of ``E[log_std^2]`` (oyster: 1e-3).
        target_update_tau: Polyak factor of the value target (oyster: 0.005).
        policy_lr: step size of the policy (oyster: 3e-4).
        q_lr: step size of the critics (oyster: 3e-4).
        v_lr: step size of the value network (oyster: 3e-4).
        context_lr: step size of the encoder (oyster: 3e-4).
        optim_cls: optimizer class (one optimizer per part).
        optim_kwargs: optimizer arguments.
        clip_grad_norm: gradient-norm clip of each part (None: no clip, as oyster).
    """

    def __init__(
        self,
        *,
        discount: float = 0.99,
        batch_size: int = 256,
        embedding_batch_size: int = 64,
        meta_batch: int = 16,
        kl_lambda: float = 0.1,
        kl_reduction: str = "sum",
        reward_scale: float = 5.0,
        policy_mean_reg: float = 1e-3,
        policy_std_reg: float = 1e-3,
        target_update_tau: float = 0.005,
        policy_lr: float = 3e-4,
        q_lr: float = 3e-4,
        v_lr: float = 3e-4,
        context_lr: float = 3e-4,
        optim_cls: type[torch.optim.Optimizer] = torch.optim.Adam,
        optim_kwargs: dict[str, Any] | None = None,
        clip_grad_norm: float | None = None,
    ):
        self.discount = check_range("discount", discount, 0.0, 1.0)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.embedding_batch_size = check_int(
            "embedding_batch_size", embedding_batch_size, minimum=1
        )
        self.meta_batch = check_int("meta_batch", meta_batch, minimum=1)
        self.kl_lambda = check_range("kl_lambda", kl_lambda, 0.0, 1e12)
        self.kl_reduction = check_choice("kl_reduction", kl_reduction, KL_REDUCTIONS)
        self.reward_scale = check_range("reward_scale", reward_scale, 0.0, 1e12)
        self.policy_mean_reg = check_range("policy_mean_reg", policy_mean_reg, 0.0, 1e12)
        self.policy_std_reg = check_range("policy_std_reg", policy_std_reg, 0.0, 1e12)
        self.target_update_tau = check_range("target_update_tau", target_update_tau, 1e-12, 1.0)
        self.learning_rates = {
            "pi": check_range("policy_lr", policy_lr, 0.0, 10.0),
            "q": check_range("q_lr", q_lr, 0.0, 10.0),
            "v": check_range("v_lr", v_lr, 0.0, 10.0),
            "context": check_range("context_lr", context_lr, 0.0, 10.0),
        }
        self.optim_cls = check_callable("optim_cls", optim_cls)
        self.optim_kwargs = check_mapping("optim_kwargs", optim_kwargs)
        self.clip_grad_norm = check_optional_range("clip_grad_norm", clip_grad_norm, 0.0, 1e12)
        self.update_counter = 0

    # ------------------------------------------------------------------ set-up
    def initialize(
        self, agent: Agent, *, n_itr: int = 0, batch_spec: BatchSpec | None = None
    ) -> None:
        """Bind a ``PearlAgent`` (initialized) and build one optimizer per part.

        ``n_itr`` and ``batch_spec`` are the runners' arguments, unused by the step itself.
        """
        if not isinstance(agent, PearlAgent):
            raise ArgumentError(f"agent must be a PearlAgent, got {type(agent).__name__}")
        if agent.observation_spec is None:
            raise ArgumentError("agent must be initialized (agent.initialize(specs)) first")
        self.agent = agent
        self.device = agent.device
        modules = {
            "pi": agent.model,
            "q": agent.q_model,
            "v": agent.v_model,
            "context": agent.encoder,
        }
        self.params = {part: list(m.parameters()) for part, m in modules.items()}
        self.optimizers_by_part = {
            part: make_optimizer(
                self.optim_cls, self.params[part], self.learning_rates[part], self.optim_kwargs
            )
            for part in PARTS
        }

    def _check(self, rl_batch: Any, context: Any) -> None:
        for name, td in (("rl_batch", rl_batch), ("context", context)):
            if not isinstance(td, TensorDictBase) or td.batch_dims != 2:
                got = tuple(td.batch_size) if isinstance(td, TensorDictBase) else type(td).__name__
                raise ArgumentError(f"{name} must be a [tasks, n] TensorDict, got {got}")
        if rl_batch.batch_size[0] != context.batch_size[0]:
            raise ArgumentError(
                f"context must have the tasks of rl_batch ({rl_batch.batch_size[0]}), "
                f"got {context.batch_size[0]}"
            )

    # ------------------------------------------------------------------ the loss
    def loss(
        self,
        rl_batch: TensorDictBase,
        context: TensorDictBase,
        *,
        generator: torch.Generator | None = None,
    ) -> TensorDict:
        """``L_Q + L_V + L_pi + L_KL`` at the current parameters (see the module docstring).

        Args:
            rl_batch: ``[tasks, n]`` transitions (``MultiTaskReplay.sample_batch``).
            context: ``[tasks, m]`` transitions of the same tasks, in the same order
                (``MultiTaskReplay.sample_context``).
            generator: draws the ``eps`` of ``z = mu + sqrt(var) eps`` (None: torch's).

        Returns:
            ``loss`` and its terms ``loss_q``, ``loss_v``, ``loss_pi``, ``loss_kl``, with the
            diagnostics ``q_mean``, ``v_mean``, ``log_pi``, ``z_mean`` and ``z_var``.
        """
        self._check(rl_batch, context)
        agent = self.agent
        rl_batch = rl_batch.to(self.device)
        mu, var = agent.infer_posterior(context.to(self.device))
        n = rl_batch.batch_size[1]
        z = agent.sample_z(mu, var, generator).unsqueeze(1).expand(-1, n, -1)  # [tasks, n, L]
        z_sg = z.detach()
        obs = rl_batch.get(keys.OBSERVATION)
        with torch.no_grad():
            next_v = agent.target_v(rl_batch.get(keys.NEXT_OBSERVATION), z)
            target_q = (
                self.reward_scale * rl_batch.get(RETURN_N) + rl_batch.get(DISCOUNT_N) * next_v
            )
        q = agent.q(obs, z, rl_batch.get(keys.ACTION))  # [2, tasks, n]
        loss_q = ((q - target_q) ** 2).mean((1, 2)).sum()

        new_action, log_pi, mean, log_std = agent.pi(obs, z_sg)
        q_pi = frozen_call(agent.q_model, agent.latent_input(obs, z_sg), new_action).min(0).values
        v = agent.v(obs, z_sg)
        loss_v = ((v - (q_pi - log_pi).detach()) ** 2).mean()
        regularizer = self.policy_mean_reg * mean.pow(2).mean()
        regularizer = regularizer + self.policy_std_reg * log_std.pow(2).mean()
        loss_pi = (log_pi - q_pi).mean() + regularizer

        if agent.information_bottleneck:
            kl = agent.encoder.kl(mu, var)  # [tasks]
            loss_kl = self.kl_lambda * (kl.mean() if self.kl_reduction == "mean" else kl.sum())
        else:  # a deterministic z has no KL term (oyster)
            loss_kl = torch.zeros((), device=self.device)
        terms = {
            "loss": loss_q + loss_v + loss_pi + loss_kl,
            "loss_q": loss_q,
            "loss_v": loss_v,
            "loss_pi": loss_pi,
            "loss_kl": loss_kl,
            "q_mean": q.detach().mean(),
            "v_mean": v.detach().mean(),
            "log_pi": log_pi.detach().mean(),
            "z_mean": mu.detach().mean(),
            "z_var": var.detach().mean(),
        }
        return tensordict_from_trusted(terms, ())

    # ------------------------------------------------------------------ one update
    def update(
        self,
        rl_batch: TensorDictBase,
        context: TensorDictBase,
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """One meta-gradient step over all tasks of the batches, then the value target.

        Args:
            rl_batch: ``[tasks, n]`` RL transitions (see ``loss``).
            context: ``[tasks, m]`` context transitions of the same tasks.
            generator: draws the latent's ``eps`` (None: torch's generator).

        Returns:
            The detached terms of ``loss`` and ``grad_norm_{pi,q,v,context}`` (before clipping).
        """
        terms = self.loss(rl_batch, context, generator=generator)
        optimizers = self.optimizers()
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        terms.get("loss").backward()
        info = detached_diagnostics(terms)
        for part in PARTS:
            info[f"grad_norm_{part}"] = grad_norm_clip(self.params[part], self.clip_grad_norm)
            info[f"grad_norm_{part}"] = info[f"grad_norm_{part}"].detach()
        for optimizer in optimizers:
            optimizer.step()
        self.update_counter += 1
        update_targets(self.agent, self.target_update_tau, compiled_on=False, device=self.device)
        return info

    # ------------------------------------------------------------------ state
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers of the policy, the critics, the value network and the encoder."""
        return [self.optimizers_by_part[part] for part in PARTS]

    def state_dict(self) -> dict[str, Any]:
        """The optimizers' state (by part) and the update counter."""
        state: dict[str, Any] = {
            f"{part}_optimizer": self.optimizers_by_part[part].state_dict() for part in PARTS
        }
        state["update_counter"] = self.update_counter
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        for part in PARTS:
            self.optimizers_by_part[part].load_state_dict(state[f"{part}_optimizer"])
        self.update_counter = state["update_counter"]
