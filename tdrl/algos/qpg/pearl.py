"""PEARL's meta-gradient step: SAC on ``o ⊕ z`` with a KL-regularised task encoder.

Rakelly et al. 2019, https://arxiv.org/abs/1903.08254, as the reference (oyster's
``PEARLSoftActorCritic._take_step``). For each of the ``tasks`` of a meta-batch, a context
``c`` (``[tasks, m]`` transitions, from the encoder buffers) gives the posterior
``q(z | c)``; ``z ~ q(z | c)`` is drawn reparameterised, once per task, and broadcast to the
task's ``n`` RL transitions (``[tasks, n]``, from the RL buffers). With
``a~ ~ pi(. | o ⊕ sg(z))`` a reparameterised tanh-Gaussian action and ``sg`` stop-gradient,
``sac_variant="v1"`` (the reference's SAC v1, the default) is::

    y      = s R + gamma^m (1 - terminal) V'(o' ⊕ z)          (no gradient)
    L_Q    = sum_i E[(Q_i(o ⊕ z, a) - y)^2]                    (trains Q and the encoder)
    L_V    = E[(V(o ⊕ sg(z)) - sg(min_i Q_i(o ⊕ sg(z), a~) - log pi(a~)))^2]
    L_pi   = E[log pi(a~) - min_i Q_i(o ⊕ sg(z), a~)]
             + c_mean E[mean^2] + c_std E[log_std^2]
    L_KL   = kl_lambda * sum_tasks KL(q(z | c) || N(0, I))      (the encoder; kl_reduction)

``E`` is the mean over all ``tasks * n`` transitions; the squared errors carry no 1/2
(oyster's MSE, which sets the weight of the KL against the Bellman error). Only the
critics' Bellman error and the KL reach the encoder: V and the policy see ``sg(z)``, and
the critics are frozen while they score ``a~`` (their weights get no gradient from
``L_V`` or ``L_pi``). ``gamma^m (1 - terminal)`` is the replay's ``discount_n``: a
``terminated`` step stops bootstrapping, a ``truncated`` one (a time limit) does not.

``sac_variant="v2"`` is tdrl's twin-Q learned-temperature SAC (``tdrl.algos.qpg.SAC``) on
``o ⊕ z``: no value network; the critics bootstrap from their Polyak targets ``Q'_i`` at
``a' ~ pi(. | o' ⊕ z)``, drawn without gradient; ``alpha = exp(log_alpha)``::

    y       = s R + gamma^m (1 - terminal) (min_i Q'_i(o' ⊕ z, a') - alpha log pi(a'))
    L_Q     = sum_i E[(Q_i(o ⊕ z, a) - y)^2]                   (trains Q and the encoder)
    L_pi    = E[alpha log pi(a~) - min_i Q_i(o ⊕ sg(z), a~)]
              + c_mean E[mean^2] + c_std E[log_std^2]
    L_alpha = -E[log_alpha sg(log pi(a~) + H_target)]           (H_target "auto": -|A|)
    L_KL    as in v1

with ``alpha`` detached in ``y`` and ``L_pi``, and no ``L_alpha`` under ``fixed_alpha``. The
encoder again learns from ``L_Q`` and ``L_KL`` only (``y`` carries no gradient, the policy
sees ``sg(z)``). The agent builds the networks of its variant (``PearlAgent(sac_variant=)``)
and ``initialize`` refuses an agent of the other one.

One ``update`` is one batched computation over all tasks (no loop): the losses are taken
at the same parameters, summed into one backward pass, and each part's optimizer steps
(policy, critics, encoder, and the value network in v1 or the temperature in v2: one Adam
each, as oyster); then the target (V' in v1, the ``Q'_i`` in v2) moves by
``target_update_tau``. Oyster steps its parts one after the other (the value and policy
losses score ``a~`` with the critics after their step); here, as ``SAC_V`` and ``SAC``,
they use the critics before it, and ``L_alpha`` uses the ``log pi(a~)`` of this step's
policy (before its step), as ``SAC``. ``compile=True`` runs the step through
``torch.compile``.

The module is over 450 lines: one algorithm per file (STYLE), and its two SAC variants
share the posterior, the KL term, the batch checks and the per-part optimizers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl._compat import tensordict_from_trusted
from tdrl.agents.base import Agent
from tdrl.agents.qpg.pearl_agent import SAC_VARIANTS, PearlAgent
from tdrl.algos.base import (
    detached_diagnostics,
    grad_norm_clip,
    make_optimizer,
    maybe_compiled,
    update_targets,
)
from tdrl.keys import DISCOUNT_N, RETURN_N, BatchSpec
from tdrl.utils.checks import (
    ArgumentError,
    check_bool,
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

#: The parts of the agent, each with its own optimizer (``sac_variant="v1"``).
PARTS = ("pi", "q", "v", "context")

#: The parts of the agent under ``sac_variant="v2"`` (the temperature, ``"alpha"``, has an
#: optimizer of its own too when it is learned).
V2_PARTS = ("pi", "q", "context")


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
        target_update_tau: Polyak factor of the target, V' (v1) or the ``Q'_i`` (v2)
            (oyster: 0.005).
        policy_lr: step size of the policy (oyster: 3e-4).
        q_lr: step size of the critics (oyster: 3e-4).
        v_lr: step size of the value network (oyster: 3e-4; v1 only).
        context_lr: step size of the encoder (oyster: 3e-4).
        optim_cls: optimizer class (one optimizer per part).
        optim_kwargs: optimizer arguments.
        clip_grad_norm: gradient-norm clip of each network part (None: no clip, as oyster).
        sac_variant: ``"v1"`` (the reference's value-network SAC) or ``"v2"`` (twin-Q
            targets and a learned temperature); the agent must have the same.
        target_entropy: the entropy target ``H_target`` of the temperature (v2): ``"auto"``
            (``-|A|``) or a number.
        alpha_lr: step size of ``log_alpha`` (v2; SAC's 3e-4).
        fixed_alpha: a fixed temperature instead of a learned one (v2 only; None: learned).
            ``target_entropy`` and ``alpha_lr`` are v2's and ``v_lr`` v1's: changing one
            for the other variant is refused.
        compile: run each meta-gradient step and target update through ``torch.compile``
            (CUDA graphs on CUDA; ``tdrl.algos.base.compiled``), as tdrl's other
            off-policy algorithms; the same arithmetic as the eager step.
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
        sac_variant: str = "v1",
        target_entropy: str | float = "auto",
        alpha_lr: float = 3e-4,
        fixed_alpha: float | None = None,
        compile: bool = False,  # noqa: A002 - the name torch and the other algorithms use
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
        self.clip_grad_norm = check_optional_range(
            "clip_grad_norm", clip_grad_norm, 1e-12, 1e12
        )  # 0 would zero every gradient
        self.sac_variant = check_choice("sac_variant", sac_variant, SAC_VARIANTS)
        self.compile = check_bool("compile", compile)
        if target_entropy != "auto" and isinstance(target_entropy, str):
            raise ArgumentError(
                f"target_entropy must be 'auto' or a number, got {target_entropy!r}"
            )
        self.target_entropy_arg: str | float = (
            "auto"
            if target_entropy == "auto"
            else check_range("target_entropy", target_entropy, -1e6, 1e6)
        )
        self.learning_rates["alpha"] = check_range("alpha_lr", alpha_lr, 0.0, 10.0)
        self.fixed_alpha = check_optional_range("fixed_alpha", fixed_alpha, 0.0, 1e12)
        if self.fixed_alpha is not None and self.sac_variant != "v2":
            raise ArgumentError("fixed_alpha needs sac_variant='v2' (v1 has no temperature)")
        # The other variant's settings would be silently unused: refuse them if changed.
        if self.sac_variant == "v1" and (target_entropy != "auto" or alpha_lr != 3e-4):
            name = "target_entropy" if target_entropy != "auto" else "alpha_lr"
            raise ArgumentError(f"{name} needs sac_variant='v2' (v1 has no temperature)")
        if self.sac_variant == "v2" and v_lr != 3e-4:
            raise ArgumentError("v_lr needs sac_variant='v1' (v2 has no value network)")
        #: The network parts, each with an optimizer and a ``grad_norm_<part>`` diagnostic.
        self.parts = PARTS if self.sac_variant == "v1" else V2_PARTS
        self.update_counter = 0

    # ------------------------------------------------------------------ set-up
    def initialize(
        self, agent: Agent, *, n_itr: int = 0, batch_spec: BatchSpec | None = None
    ) -> None:
        """Bind a ``PearlAgent`` (initialized) and build one optimizer per part.

        In v2 also the temperature ``log_alpha`` (on the agent's device; ``log fixed_alpha``
        or 0) and, when it is learned, its optimizer (part ``"alpha"``). ``n_itr`` and
        ``batch_spec`` are the runners' arguments, unused by the step itself.
        """
        if not isinstance(agent, PearlAgent):
            raise ArgumentError(f"agent must be a PearlAgent, got {type(agent).__name__}")
        if agent.observation_spec is None:
            raise ArgumentError("agent must be initialized (agent.initialize(specs)) first")
        if agent.sac_variant != self.sac_variant:
            raise ArgumentError(
                f"sac_variant of PEARL ({self.sac_variant!r}) and of the agent "
                f"({agent.sac_variant!r}) must match"
            )
        self.agent = agent
        self.device = agent.device
        modules = {"pi": agent.model, "q": agent.q_model, "context": agent.encoder}
        if self.sac_variant == "v1":
            modules["v"] = agent.v_model
        self.params: dict[str, list[torch.Tensor]] = {
            part: list(modules[part].parameters()) for part in self.parts
        }
        self.target_entropy = (
            -float(agent.action_size)
            if self.target_entropy_arg == "auto"
            else float(self.target_entropy_arg)
        )
        self.log_alpha = torch.zeros((), requires_grad=True, device=self.device)
        if self.fixed_alpha is not None:
            self.log_alpha.data.fill_(math.log(max(self.fixed_alpha, 1e-30)))
        if self.sac_variant == "v2" and self.fixed_alpha is None:
            self.params["alpha"] = [self.log_alpha]
        self.optimizers_by_part = {
            part: make_optimizer(
                self.optim_cls,
                params,
                self.learning_rates[part],
                self.optim_kwargs,
                compile_on=self.device if self.compile else None,
            )
            for part, params in self.params.items()
        }

    @property
    def alpha(self) -> float:
        """The current entropy temperature (v2; v1 has none and reports 1, its fixed weight)."""
        return float(self.log_alpha.detach().exp())

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
        agent = self.agent
        obs, act = (agent.observation_size,), (agent.action_size,)
        lead = tuple(rl_batch.batch_size)
        expected = {
            ("rl_batch", keys.OBSERVATION): (rl_batch, lead + obs),
            ("rl_batch", keys.NEXT_OBSERVATION): (rl_batch, lead + obs),
            ("rl_batch", keys.ACTION): (rl_batch, lead + act),
            ("rl_batch", RETURN_N): (rl_batch, lead),
            ("rl_batch", DISCOUNT_N): (rl_batch, lead),
            ("context", keys.OBSERVATION): (context, tuple(context.batch_size) + obs),
            ("context", keys.ACTION): (context, tuple(context.batch_size) + act),
        }
        for (name, key), (td, shape) in expected.items():
            value = td.get(key, None)
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else "no entry"
                raise ArgumentError(f"{name}[{key!r}] must have shape {shape}, got {got}")
        reward = context.get(keys.NEXT_REWARD, None)
        if not isinstance(reward, torch.Tensor) or reward.numel() != context.numel():
            got = tuple(reward.shape) if isinstance(reward, torch.Tensor) else "no entry"
            raise ArgumentError(
                f"context[{keys.NEXT_REWARD!r}] must have one reward per transition "
                f"{tuple(context.batch_size)}, got {got}"
            )

    # ------------------------------------------------------------------ the loss
    def loss(
        self,
        rl_batch: TensorDictBase,
        context: TensorDictBase,
        *,
        generator: torch.Generator | None = None,
    ) -> TensorDict:
        """The summed loss at the current parameters (see the module docstring).

        ``L_Q + L_V + L_pi + L_KL`` (v1) or ``L_Q + L_pi + L_alpha + L_KL`` (v2).

        Args:
            rl_batch: ``[tasks, n]`` transitions (``MultiTaskReplay.sample_batch``).
            context: ``[tasks, m]`` transitions of the same tasks, in the same order
                (``MultiTaskReplay.sample_context``).
            generator: draws the ``eps`` of ``z = mu + sqrt(var) eps`` (None: torch's).

        Returns:
            ``loss`` and its terms ``loss_q``, ``loss_pi``, ``loss_kl`` and ``loss_v`` (v1)
            or ``loss_alpha`` (v2, learned temperature), with the diagnostics ``q_mean``,
            ``log_pi``, ``z_mean``, ``z_var`` and ``v_mean`` (v1) or ``alpha`` (v2).
        """
        self._check(rl_batch, context)
        agent = self.agent
        v2 = self.sac_variant == "v2"
        rl_batch = rl_batch.to(self.device)
        mu, var = agent.infer_posterior(context.to(self.device))
        n = rl_batch.batch_size[1]
        z = agent.sample_z(mu, var, generator).unsqueeze(1).expand(-1, n, -1)  # [tasks, n, L]
        z_sg = z.detach()
        obs = rl_batch.get(keys.OBSERVATION)
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            next_obs = rl_batch.get(keys.NEXT_OBSERVATION)
            if v2:  # a' is drawn before a~
                next_action, next_log_pi, _, _ = agent.pi(next_obs, z)
                next_q = agent.target_q(next_obs, z, next_action).min(0).values
                next_value = next_q - alpha * next_log_pi
            else:
                next_value = agent.target_v(next_obs, z)
            target_q = (
                self.reward_scale * rl_batch.get(RETURN_N) + rl_batch.get(DISCOUNT_N) * next_value
            )
        q = agent.q(obs, z, rl_batch.get(keys.ACTION))  # [2, tasks, n]
        terms = {"loss_q": ((q - target_q) ** 2).mean((1, 2)).sum()}

        new_action, log_pi, mean, log_std = agent.pi(obs, z_sg)
        q_pi = (
            frozen_call(agent.q_model, agent.latent_input(obs, z_sg), agent.from_env(new_action))
            .min(0)
            .values
        )
        diagnostics = {"q_mean": q.detach().mean()}
        if not v2:
            v = agent.v(obs, z_sg)
            terms["loss_v"] = ((v - (q_pi - log_pi).detach()) ** 2).mean()
            diagnostics["v_mean"] = v.detach().mean()
        regularizer = self.policy_mean_reg * mean.pow(2).mean()
        regularizer = regularizer + self.policy_std_reg * log_std.pow(2).mean()
        entropy_term = alpha * log_pi if v2 else log_pi
        terms["loss_pi"] = (entropy_term - q_pi).mean() + regularizer
        diagnostics["log_pi"] = log_pi.detach().mean()
        if v2:
            if self.fixed_alpha is None:
                gap = (log_pi + self.target_entropy).detach()
                terms["loss_alpha"] = -(self.log_alpha * gap).mean()
            diagnostics["alpha"] = alpha

        if agent.information_bottleneck and agent.use_context:
            kl = agent.encoder.kl(mu, var)  # [tasks]
            loss_kl = self.kl_lambda * (kl.mean() if self.kl_reduction == "mean" else kl.sum())
        else:  # a deterministic (or context-free) z has no KL term (oyster)
            loss_kl = torch.zeros((), device=self.device)
        out = {
            "loss": sum(terms.values()) + loss_kl,
            **terms,
            "loss_kl": loss_kl,
            **diagnostics,
            "z_mean": mu.detach().mean(),
            "z_var": var.detach().mean(),
        }
        return tensordict_from_trusted(out, ())

    # ------------------------------------------------------------------ one update
    def update(
        self,
        rl_batch: TensorDictBase,
        context: TensorDictBase,
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """One meta-gradient step over all tasks of the batches, then the target.

        One backward pass of the summed ``loss``, one step of each optimizer. In v2 the
        temperature steps on ``L_alpha`` of this same loss, i.e. with the ``log pi(a~)`` of
        the policy before its step (as ``SAC``).

        Args:
            rl_batch: ``[tasks, n]`` RL transitions (see ``loss``).
            context: ``[tasks, m]`` context transitions of the same tasks.
            generator: draws the latent's ``eps`` (None: torch's generator).

        Returns:
            The detached terms of ``loss`` and ``grad_norm_<part>`` (before clipping) of each
            network part: ``pi``, ``q``, ``context`` and (v1) ``v``.
        """
        info = maybe_compiled(
            self.compile, PEARL.gradient_step, self.device, self, rl_batch, context, generator
        )
        self.update_counter += 1
        update_targets(
            self.agent, self.target_update_tau, compiled_on=self.compile, device=self.device
        )
        return info

    def gradient_step(
        self,
        rl_batch: TensorDictBase,
        context: TensorDictBase,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """``loss``, backward, gradient clips and optimizer steps: what ``compile`` compiles."""
        terms = self.loss(rl_batch, context, generator=generator)
        optimizers = self.optimizers()
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        terms.get("loss").backward()
        info = detached_diagnostics(terms)
        for part in self.parts:
            info[f"grad_norm_{part}"] = grad_norm_clip(self.params[part], self.clip_grad_norm)
            info[f"grad_norm_{part}"] = info[f"grad_norm_{part}"].detach()
        for optimizer in optimizers:
            optimizer.step()
        return info

    # ------------------------------------------------------------------ state
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimizer: by part, in the order of ``parts``, then the temperature's.

        Policy, critics, value network and encoder (v1); policy, critics, encoder and, when
        it is learned, the temperature (v2).
        """
        return list(self.optimizers_by_part.values())

    def state_dict(self) -> dict[str, Any]:
        """The optimizers' state (by part), the temperature (v2) and the update counter."""
        state: dict[str, Any] = {
            f"{part}_optimizer": optimizer.state_dict()
            for part, optimizer in self.optimizers_by_part.items()
        }
        if self.sac_variant == "v2":
            state["log_alpha"] = self.log_alpha.detach().clone()
        state["update_counter"] = self.update_counter
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        for part, optimizer in self.optimizers_by_part.items():
            optimizer.load_state_dict(state[f"{part}_optimizer"])
        if self.sac_variant == "v2":
            with torch.no_grad():
                self.log_alpha.copy_(state["log_alpha"])
        self.update_counter = state["update_counter"]
