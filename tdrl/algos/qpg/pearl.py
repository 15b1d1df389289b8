"""PEARL's meta-gradient step: SAC on ``o ⊕ z`` with a KL-regularised task encoder.

Rakelly et al. 2019, https://arxiv.org/abs/1903.08254, as the reference (oyster's
``PEARLSoftActorCritic._take_step``). For each of the ``tasks`` of a meta-batch, a context
``c`` (``[tasks, m]`` transitions, from the encoder buffers) gives the posterior
``q(z | c)``; ``z ~ q(z | c)`` is drawn reparameterised, once per task, and broadcast to the
task's ``n`` RL transitions (``[tasks, n]``, from the RL buffers). With
``a~ ~ pi(. | o ⊕ sg(z))`` a reparameterised tanh-Gaussian action and ``sg`` stop-gradient,
``value_network=True`` (``sac_variant="v1"``: the reference's SAC v1, the default) is::

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

``value_network=False`` (``sac_variant="v2"``) is tdrl's twin-Q learned-temperature SAC
(``tdrl.algos.qpg.SAC``) on ``o ⊕ z``: no value network; the critics bootstrap from their
Polyak targets ``Q'_i`` at ``a' ~ pi(. | o' ⊕ z)``, drawn without gradient; ``alpha =
exp(log_alpha)``::

    y       = s R + gamma^m (1 - terminal) (min_i Q'_i(o' ⊕ z, a') - alpha log pi(a'))
    L_Q     = sum_i E[(Q_i(o ⊕ z, a) - y)^2]                   (trains Q and the encoder)
    L_pi    = E[alpha log pi(a~) - min_i Q_i(o ⊕ sg(z), a~)]
              + c_mean E[mean^2] + c_std E[log_std^2]
    L_alpha = -E[log_alpha sg(log pi(a~) + H_target)]           (H_target "auto": -|A|)
    L_KL    as in v1

with ``alpha`` detached in ``y`` and ``L_pi``, and no ``L_alpha`` under ``fixed_alpha``. The
encoder again learns from ``L_Q`` and ``L_KL`` only (``y`` carries no gradient, the policy
sees ``sg(z)``). The agent builds the networks of its variant (``PearlAgent(sac_variant=)``)
and ``initialize`` refuses an agent of the other one. The terms are
``tdrl.algos.qpg.soft_terms``' (``half=False``), shared with ``SAC`` and ``SAC_V``.

PEARL keeps ``tdrl.algos.base.MetaAlgorithm``: its batch is one ``[tasks]`` TensorDict with
the RL batch under ``keys.META_RL`` and the context under ``keys.CONTEXT``, on the agent's
device; ``settings()`` lists what a resumed run must match. The module is over 450 lines:
one algorithm per file (STYLE), its two variants sharing the posterior, KL and checks.

One ``update`` is one batched computation over all tasks (no loop): the losses are taken
at the same parameters, summed into one backward pass, and each part's optimizer steps
(policy, critics, encoder, and the value network in v1 or the temperature in v2: one Adam
each, as oyster); then the target (V' in v1, the ``Q'_i`` in v2) moves by
``target_update_tau``. Oyster steps its parts one after the other (the value and policy
losses score ``a~`` with the critics after their step); here, as ``SAC_V`` and ``SAC``,
they use the critics before it, and ``L_alpha`` uses the ``log pi(a~)`` of this step's
policy (before its step), as ``SAC``. ``compile=True`` runs the step through
``torch.compile``.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl._compat import tensordict_from_trusted
from tdrl.agents.base import Agent
from tdrl.agents.qpg.pearl_agent import SAC_VARIANTS, PearlAgent, value_network_of
from tdrl.algos.qpg.soft_terms import (
    actor_loss,
    check_target_entropy,
    critic_loss,
    entropy_target,
    initial_log_alpha,
    soft_target,
    temperature_loss,
    value_loss,
)
from tdrl.algos.updates import targets_when_due
from tdrl.keys import DISCOUNT_N, RETURN_N, BatchSpec
from tdrl.utils.checks import (
    ArgumentError,
    check_bool,
    check_choice,
    check_int,
    check_optional_range,
    check_range,
)
from tdrl.utils.compile import maybe_compiled
from tdrl.utils.optim import (
    check_optimizer,
    clipped_step,
    load_optimizers_state,
    make_optimizer,
    optimizers_state,
)
from tdrl.utils.tensor import frozen_call

#: How the per-task KL terms are reduced: the mean over tasks, or oyster's sum.
KL_REDUCTIONS = ("mean", "sum")

#: The parts of the agent, each with its own optimizer, in v1 and in v2 (where the learned
#: temperature, ``"alpha"``, has an optimizer of its own too).
PARTS, V2_PARTS = ("pi", "q", "v", "context"), ("pi", "q", "context")

#: What a resumed run must match (``settings()``): PEARL's hyperparameters.
SETTINGS = (
    *("discount", "meta_batch", "batch_size", "embedding_batch_size", "kl_lambda"),
    *("kl_reduction", "reward_scale", "policy_mean_reg", "policy_std_reg"),
    *("target_update_tau", "learning_rates", "clip_grad_norm", "sac_variant"),
    *("target_entropy_arg", "fixed_alpha", "alpha_lr"),
)


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
        value_network: True (the default): the reference's value-network SAC (v1); False:
            twin-Q targets and a learned temperature (v2). The agent must have the same.
        target_entropy: the entropy target ``H_target`` of the temperature (v2): ``"auto"``
            (``-|A|``) or a number.
        alpha_lr: step size of ``log_alpha`` (v2; SAC's 3e-4).
        fixed_alpha: a fixed temperature instead of a learned one (v2 only; None: learned).
            ``target_entropy`` and ``alpha_lr`` are v2's and ``v_lr`` v1's: changing one
            for the other variant is refused.
        compile: run each meta-gradient step and target update through ``torch.compile``
            (CUDA graphs on CUDA; ``tdrl.utils.compile``), as tdrl's other off-policy
            algorithms; the same arithmetic as the eager step.
        sac_variant: the older name of ``value_network``: ``"v1"`` (True) or ``"v2"``
            (False); the attribute ``sac_variant`` keeps it either way.
    """

    #: Target update every meta-gradient step (``tdrl.algos.replay.targets_when_due``).
    target_update_interval = 1

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
        value_network: bool | None = None,
        target_entropy: str | float = "auto",
        alpha_lr: float = 3e-4,
        fixed_alpha: float | None = None,
        compile: bool = False,  # noqa: A002 - the name torch and the other algorithms use
        sac_variant: str | None = None,
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
        self.optim_cls, self.optim_kwargs = check_optimizer(optim_cls, optim_kwargs)
        self.clip_grad_norm = check_optional_range(
            "clip_grad_norm", clip_grad_norm, 1e-12, 1e12
        )  # 0 would zero every gradient
        v1 = value_network_of(value_network, sac_variant)
        self.sac_variant = SAC_VARIANTS[0] if v1 else SAC_VARIANTS[1]
        self.value_network = self.sac_variant == "v1"
        self.compile = check_bool("compile", compile)
        self.target_entropy_arg = check_target_entropy(target_entropy)
        self.learning_rates["alpha"] = check_range("alpha_lr", alpha_lr, 0.0, 10.0)
        self.fixed_alpha = check_optional_range("fixed_alpha", fixed_alpha, 0.0, 1e12)
        if self.fixed_alpha is not None and self.value_network:
            raise ArgumentError("fixed_alpha needs sac_variant='v2' (v1 has no temperature)")
        # The other variant's settings would be silently unused: refuse them if changed.
        if self.value_network and (target_entropy != "auto" or alpha_lr != 3e-4):
            name = "target_entropy" if target_entropy != "auto" else "alpha_lr"
            raise ArgumentError(f"{name} needs sac_variant='v2' (v1 has no temperature)")
        if not self.value_network and v_lr != 3e-4:
            raise ArgumentError("v_lr needs sac_variant='v1' (v2 has no value network)")
        #: The network parts, each with an optimizer and a ``grad_norm_<part>`` diagnostic.
        self.parts = PARTS if self.value_network else V2_PARTS
        self.update_counter = 0

    @property
    def alpha_lr(self) -> float:  # noqa: D102 - the argument, in SETTINGS
        return self.learning_rates["alpha"]

    def settings(self) -> dict[str, Any]:
        """What a resumed run must match: ``SETTINGS``, attribute name -> value."""
        return {name: getattr(self, name) for name in SETTINGS}

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
        if self.value_network:
            modules["v"] = agent.v_model
        self.params: dict[str, list[torch.Tensor]] = {
            part: list(modules[part].parameters()) for part in self.parts
        }
        self.target_entropy = entropy_target(self.target_entropy_arg, agent.action_size)
        self.log_alpha = initial_log_alpha(self.fixed_alpha, self.device)
        if not self.value_network and self.fixed_alpha is None:
            self.params["alpha"] = [self.log_alpha]
        self.optimizers_by_part: dict[str, torch.optim.Optimizer] = {
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

    def _check(self, batch: Any) -> tuple[TensorDictBase, TensorDictBase]:
        """``batch[META_RL]`` and ``batch[CONTEXT]``, or a one-line error naming the entry."""
        if not isinstance(batch, TensorDictBase) or batch.batch_dims != 1:
            got: Any = tuple(batch.batch_size) if isinstance(batch, TensorDictBase) else type(batch)
            raise ArgumentError(f"batch must be a [tasks] TensorDict, got {got}")
        rl, context = batch.get(keys.META_RL, None), batch.get(keys.CONTEXT, None)
        for key, td in ((keys.META_RL, rl), (keys.CONTEXT, context)):
            if not isinstance(td, TensorDictBase) or td.batch_dims != 2:
                got = tuple(td.batch_size) if isinstance(td, TensorDictBase) else "no entry"
                raise ArgumentError(f"batch[{key!r}] must be a [tasks, n] TensorDict, got {got}")
        obs, act = (self.agent.observation_size,), (self.agent.action_size,)
        lead, ctx = tuple(rl.batch_size), tuple(context.batch_size)
        expected: list[tuple[str, Any, tuple[int, ...] | None]] = [
            *((keys.META_RL, k, lead + obs) for k in (keys.OBSERVATION, keys.NEXT_OBSERVATION)),
            (keys.META_RL, keys.ACTION, lead + act),
            *((keys.META_RL, k, lead) for k in (RETURN_N, DISCOUNT_N)),
            (keys.CONTEXT, keys.OBSERVATION, ctx + obs),
            (keys.CONTEXT, keys.ACTION, ctx + act),
            (keys.CONTEXT, keys.NEXT_REWARD, None),  # one reward per transition
        ]
        for name, key, shape in expected:
            value = batch.get(name).get(key, None)
            ok = isinstance(value, torch.Tensor) and (
                tuple(value.shape) == shape if shape else value.numel() == context.numel()
            )
            if not ok:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else "no entry"
                want = f"shape {shape}" if shape else f"one reward per transition {ctx}"
                raise ArgumentError(f"batch[{name!r}][{key!r}] must have {want}, got {got}")
        return rl, context

    # ------------------------------------------------------------------ the loss
    def loss(
        self, batch: TensorDictBase, *, generator: torch.Generator | None = None
    ) -> TensorDict:
        """The summed loss at the current parameters (see the module docstring).

        ``L_Q + L_V + L_pi + L_KL`` (v1) or ``L_Q + L_pi + L_alpha + L_KL`` (v2).

        Args:
            batch: a ``[tasks]`` TensorDict: ``batch[keys.META_RL]`` the ``[tasks, n]``
                transitions (``MultiTaskReplay.sample_batch``), ``batch[keys.CONTEXT]``
                ``[tasks, m]`` transitions of the same tasks (``sample_context``), on the
                agent's device.
            generator: draws the ``eps`` of ``z = mu + sqrt(var) eps`` (None: torch's).

        Returns:
            ``loss`` and its terms ``loss_q``, ``loss_pi``, ``loss_kl`` and ``loss_v`` (v1)
            or ``loss_alpha`` (v2, learned temperature), with the diagnostics ``q_mean``,
            ``log_pi``, ``z_mean``, ``z_var`` and ``v_mean`` (v1) or ``alpha`` (v2).
        """
        rl, context = self._check(batch)
        agent = self.agent
        mu, var = agent.infer_posterior(context)
        n = rl.batch_size[1]
        z = agent.sample_z(mu, var, generator).unsqueeze(1).expand(-1, n, -1)  # [tasks, n, L]
        sac = self._v1_terms if self.value_network else self._v2_terms
        terms, diagnostics = sac(rl, z)
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

    def _critic(
        self, rl: TensorDictBase, z: torch.Tensor, next_value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``L_Q`` (oyster's MSE) and ``Q(o ⊕ z, a)`` for the target ``next_value``."""
        with torch.no_grad():
            y = soft_target(self.reward_scale, rl.get(RETURN_N), rl.get(DISCOUNT_N), next_value)
        q = self.agent.q(rl.get(keys.OBSERVATION), z, rl.get(keys.ACTION))  # [2, tasks, n]
        return critic_loss(q, y, half=False), q

    def _policy(self, obs: torch.Tensor, z_sg: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``a~``'s ``log pi``, the frozen critics' ``min_i Q_i`` and the regulariser."""
        agent = self.agent
        new_action, log_pi, mean, log_std = agent.pi(obs, z_sg)
        q_in = (agent.latent_input(obs, z_sg), agent.from_env(new_action))
        q_pi = frozen_call(agent.q_model, *q_in).min(0).values
        regularizer = self.policy_mean_reg * mean.pow(2).mean()
        regularizer = regularizer + self.policy_std_reg * log_std.pow(2).mean()
        return log_pi, q_pi, regularizer

    def _v1_terms(
        self, rl: TensorDictBase, z: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """v1's ``L_Q``, ``L_V``, ``L_pi`` and diagnostics (value network, weight 1)."""
        obs, z_sg = rl.get(keys.OBSERVATION), z.detach()
        with torch.no_grad():
            next_value = self.agent.target_v(rl.get(keys.NEXT_OBSERVATION), z)
        loss_q, q = self._critic(rl, z, next_value)
        log_pi, q_pi, regularizer = self._policy(obs, z_sg)
        v = self.agent.v(obs, z_sg)
        terms = {
            "loss_q": loss_q,
            "loss_v": value_loss(v, q_pi, log_pi, half=False),
            "loss_pi": actor_loss(log_pi, q_pi, regularizer=regularizer),
        }
        diagnostics = {
            "q_mean": q.detach().mean(),
            "v_mean": v.detach().mean(),
            "log_pi": log_pi.detach().mean(),
        }
        return terms, diagnostics

    def _v2_terms(
        self, rl: TensorDictBase, z: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """v2's ``L_Q``, ``L_pi``, ``L_alpha`` and diagnostics (twin-Q targets, alpha)."""
        agent, obs, z_sg = self.agent, rl.get(keys.OBSERVATION), z.detach()
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():  # a' is drawn before a~
            next_obs = rl.get(keys.NEXT_OBSERVATION)
            next_action, next_log_pi, _, _ = agent.pi(next_obs, z)
            next_q = agent.target_q(next_obs, z, next_action).min(0).values
            next_value = next_q - alpha * next_log_pi
        loss_q, q = self._critic(rl, z, next_value)
        log_pi, q_pi, regularizer = self._policy(obs, z_sg)
        terms = {
            "loss_q": loss_q,
            "loss_pi": actor_loss(log_pi, q_pi, alpha=alpha, regularizer=regularizer),
        }
        if self.fixed_alpha is None:
            terms["loss_alpha"] = temperature_loss(self.log_alpha, log_pi, self.target_entropy)
        diagnostics = {"q_mean": q.detach().mean(), "log_pi": log_pi.detach().mean()}
        diagnostics["alpha"] = alpha
        return terms, diagnostics

    # ------------------------------------------------------------------ one update
    def update(
        self, batch: TensorDictBase, *, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """One meta-gradient step over all tasks of the batch, then the target.

        One backward pass of the summed ``loss``, one step of each optimizer. In v2 the
        temperature steps on ``L_alpha`` of this same loss, i.e. with the ``log pi(a~)`` of
        the policy before its step (as ``SAC``).

        Args:
            batch: the ``[tasks]`` meta-batch (see ``loss``).
            generator: draws the latent's ``eps`` (None: torch's generator).

        Returns:
            The detached terms of ``loss`` and ``grad_norm_<part>`` (before clipping) of each
            network part: ``pi``, ``q``, ``context`` and (v1) ``v``.
        """
        info = maybe_compiled(
            self.compile, PEARL.gradient_step, self.device, self, batch, generator
        )
        self.update_counter += 1
        targets_when_due(self)
        return info

    def gradient_step(
        self, batch: TensorDictBase, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """``loss``, backward, gradient clips and optimizer steps: what ``compile`` compiles."""
        terms = self.loss(batch, generator=generator)
        parts = {part: self.params[part] for part in self.parts}
        return clipped_step(self.optimizers(), terms, parts, self.clip_grad_norm)

    # ------------------------------------------------------------------ state
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimizer: by part, in the order of ``parts``, then the temperature's (v2)."""
        return list(self.optimizers_by_part.values())

    def state_dict(self) -> dict[str, Any]:
        """The optimizers' state (by part), the temperature (v2) and the update counter."""
        state = optimizers_state(self._named_optimizers())
        if not self.value_network:
            state["log_alpha"] = self.log_alpha.detach().clone()
        state["update_counter"] = self.update_counter
        return state

    def _named_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {f"{part}_optimizer": opt for part, opt in self.optimizers_by_part.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        load_optimizers_state(self._named_optimizers(), state)
        if not self.value_network:
            with torch.no_grad():
                self.log_alpha.copy_(state["log_alpha"])
        self.update_counter = state["update_counter"]
