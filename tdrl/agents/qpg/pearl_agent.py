"""PEARL's agent: a context encoder ``q(z | c)`` and SAC networks conditioned on ``z``.

PEARL (Rakelly et al. 2019, https://arxiv.org/abs/1903.08254) infers a task variable ``z``
from a context of transitions and feeds it to every network beside the observation:

- the encoder (``ContextEncoder``): ``[tasks, n, context]`` -> posterior ``(mu, var)``,
  each ``[tasks, latent]``;
- the policy ``pi(a | o ⊕ z)`` (tanh-squashed Gaussian, ``PiMlpModel``) and the twin critics
  ``Q_i(o ⊕ z, a)`` (``QEnsembleMlpModel``), all at input size obs + latent;
- what the critics bootstrap from, chosen by ``sac_variant``: ``"v1"`` (the reference's SAC
  v1, the default) builds a state value ``V(o ⊕ z)`` and its Polyak target
  (``VMlpModel``); ``"v2"`` (tdrl's twin-Q learned-temperature SAC) builds Polyak targets
  ``Q'_i`` of the critics and no value network. ``PEARL`` must be built with the same
  ``sac_variant`` (its ``initialize`` checks), as it holds the matching loss and, for
  ``"v2"``, the temperature.

Acting uses a current ``z`` per env, which the collector sets with ``set_z`` (``[B, latent]``,
one row per env the sampler steps): a draw from the prior at the start of a task's
collection, a draw from the posterior of the context collected so far after that. The
agent keeps no other per-env state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from tdrl import keys
from tdrl._compat import TensorSpec
from tdrl.agents.base import Agent
from tdrl.agents.qpg.base import action_map, flat_sizes
from tdrl.agents.qpg.sac_agent import squashed_gaussian_sample
from tdrl.models.qpg.context import ContextEncoder, context_from_transitions
from tdrl.models.qpg.mlp import PiMlpModel, QEnsembleMlpModel, VMlpModel
from tdrl.utils.checks import (
    ArgumentError,
    check_bool,
    check_choice,
    check_int,
    check_int_list,
    check_range,
)
from tdrl.utils.tensor import frozen_copy, polyak_update

#: Key of the latent ``z`` (``[..., latent]``) in a TensorDict given to ``PearlAgent.forward``.
Z = "z"

#: The SAC variants: ``"v1"`` (value network and its target, the reference's) and ``"v2"``
#: (twin Q targets and a learned temperature, as ``tdrl.algos.qpg.SAC``).
SAC_VARIANTS = ("v1", "v2")


class PearlAgent(Agent):
    """Context encoder plus tanh-Gaussian policy, twin Q and a target over ``o ⊕ z``.

    The target is a value network ``V`` and its Polyak copy (``sac_variant="v1"``) or Polyak
    copies of the twin critics (``"v2"``); ``v``/``target_v`` exist in v1 only and
    ``target_q`` in v2 only.

    Networks are built by ``initialize`` from the env's specs (flat Box observations and
    actions). Actions are squashed to ``[-1, 1]`` and mapped to the env's bounds; the
    sample mode draws from the policy, the eval mode acts with ``tanh(mean)``.

    Args:
        latent_size: size of ``z`` (oyster: 5).
        encoder_hidden_sizes: hidden layers of the context encoder (oyster: 200, 200, 200).
        hidden_sizes: hidden layers of the policy, the critics and (v1) the value network
            (oyster's ``net_size``: 300, 300, 300).
        information_bottleneck: Gaussian posterior as a product of per-transition factors
            (True, oyster's default); False: deterministic mean of the factors.
        use_next_obs_in_context: contexts carry ``o'`` too (oyster's default False; True for
            hopper/walker rand-params).
        log_std_min: lower clamp of the policy's log std.
        log_std_max: upper clamp of the policy's log std.
        use_context: True (PEARL). False: the context-free baseline (multi-task SAC of
            either variant, with the same networks and schedule): ``z`` is always zeros,
            the prior and every posterior are ``N(0, 0)``, the encoder is never used and
            the loss has no KL.
        sac_variant: ``"v1"`` (the reference's: builds ``v_model`` and ``target_v_model``)
            or ``"v2"`` (tdrl's twin-Q learned-temperature SAC: builds ``target_q_model``,
            no value network). ``PEARL`` must be given the same value.
    """

    encoder: ContextEncoder
    q_model: nn.Module
    v_model: nn.Module
    target_v_model: nn.Module
    target_q_model: nn.Module
    action_scale: torch.Tensor
    action_bias: torch.Tensor

    def __init__(
        self,
        *,
        latent_size: int = 5,
        encoder_hidden_sizes: Sequence[int] = (200, 200, 200),
        hidden_sizes: Sequence[int] = (300, 300, 300),
        information_bottleneck: bool = True,
        use_next_obs_in_context: bool = False,
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
        use_context: bool = True,
        sac_variant: str = "v1",
    ):
        self.hidden_sizes = check_int_list("hidden_sizes", hidden_sizes, minimum=1)
        super().__init__(None, {"hidden_sizes": self.hidden_sizes})
        self.latent_size = check_int("latent_size", latent_size, minimum=1)
        self.encoder_hidden_sizes = check_int_list(
            "encoder_hidden_sizes", encoder_hidden_sizes, minimum=1
        )
        self.information_bottleneck = check_bool("information_bottleneck", information_bottleneck)
        self.use_next_obs_in_context = check_bool(
            "use_next_obs_in_context", use_next_obs_in_context
        )
        self.use_context = check_bool("use_context", use_context)
        self.sac_variant = check_choice("sac_variant", sac_variant, SAC_VARIANTS)
        self.log_std_min = check_range("log_std_min", log_std_min, -1e3, 1e3)
        self.log_std_max = check_range("log_std_max", log_std_max, -1e3, 1e3)
        if not self.log_std_min < self.log_std_max:
            raise ArgumentError(
                f"log_std_min must be below log_std_max, got {log_std_min}, {log_std_max}"
            )
        self._z: torch.Tensor | None = None
        self._target_pairs: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self.register_buffer("action_scale", torch.ones(()))
        self.register_buffer("action_bias", torch.zeros(()))

    # ------------------------------------------------------------------ set-up
    def make_model(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, **kwargs: Any
    ) -> nn.Module:
        """The policy, ``PiMlpModel`` over ``o ⊕ z``."""
        obs_size, act_size = flat_sizes(observation_spec, action_spec, type(self).__name__)
        return PiMlpModel(obs_size + self.latent_size, act_size, **kwargs)

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec) -> None:
        """Build the encoder, the policy, the critics, the frozen target and the action map.

        The target is ``V`` and its copy (v1) or a copy of the critics (v2).
        """
        super().initialize(observation_spec, action_spec)
        obs_size, act_size = flat_sizes(observation_spec, action_spec, type(self).__name__)
        device = self.device
        self.observation_size, self.action_size = obs_size, act_size
        self.context_size = (
            obs_size + act_size + 1 + (obs_size if self.use_next_obs_in_context else 0)
        )
        self.encoder = ContextEncoder(
            self.context_size,
            self.latent_size,
            hidden_sizes=self.encoder_hidden_sizes,
            information_bottleneck=self.information_bottleneck,
        ).to(device)
        in_size = obs_size + self.latent_size
        self.q_model = QEnsembleMlpModel(in_size, act_size, hidden_sizes=self.hidden_sizes).to(
            device
        )
        if self.sac_variant == "v1":
            self.v_model = VMlpModel(in_size, hidden_sizes=self.hidden_sizes).to(device)
            self.target_v_model = frozen_copy(self.v_model)
        else:
            self.target_q_model = frozen_copy(self.q_model)
        self._target_pairs = None
        self.action_scale, self.action_bias = (x.to(device) for x in action_map(action_spec))

    # ------------------------------------------------------------------ the task posterior
    def context(self, transitions: TensorDictBase) -> torch.Tensor:
        """The ``[tasks, n, context_size]`` context of ``[tasks, n]`` transitions.

        Actions enter normalised to ``[-1, 1]`` (``from_env``), as the reference's context
        holds the policy's actions before its env wrapper rescales them.
        """
        transitions = transitions.to(self.device)  # the collector's are on the CPU
        transitions = transitions.clone(recurse=False)
        transitions.set(keys.ACTION, self.from_env(transitions.get(keys.ACTION)))
        return context_from_transitions(transitions, use_next_obs=self.use_next_obs_in_context)

    def infer_posterior(
        self, context: torch.Tensor | TensorDictBase
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(mu, var)``, each ``[tasks, latent]``, of a ``[tasks, n, ...]`` context.

        Args:
            context: ``[tasks, n]`` transitions (e.g. ``MultiTaskReplay.sample_context``),
                turned into a context by ``context``; or a ``[tasks, n, context_size]``
                tensor, used as it is (its actions already normalised, see ``context``).
        """
        if not self.use_context:  # the context-free baseline: z = 0 whatever the context
            return self._zero_latent(context.shape[0])
        if isinstance(context, TensorDictBase):
            context = self.context(context)
        return self.encoder(context.to(self.device))

    def _zero_latent(self, tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(tasks, self.latent_size, device=self.device)
        return zeros, zeros.clone()

    def sample_z(
        self, mu: torch.Tensor, var: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Reparameterised ``z = mu + sqrt(var) * eps`` (``[tasks, latent]``)."""
        return self.encoder.sample(mu, var, generator)

    def prior_z(self, tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The prior ``N(0, I)`` as ``(mu, var)``, each ``[tasks, latent]``.

        ``agent.sample_z(*agent.prior_z(B))`` is a draw from the prior (oyster's
        ``clear_z``). Without the information bottleneck z is deterministic and the prior
        is ``z = 0`` (variance zeros, as oyster's ``clear_z``); without context
        (``use_context=False``) likewise.
        """
        if not self.use_context or not self.information_bottleneck:
            return self._zero_latent(check_int("tasks", tasks, minimum=1))
        return self.encoder.prior(tasks, device=self.device)

    def set_z(self, z: torch.Tensor) -> None:
        """Set the ``[B, latent]`` latent that ``step`` acts with, one row per env.

        The collector calls it before stepping a task's envs (prior draw) and after each
        posterior update. The tensor is detached and kept on the agent's device.
        """
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != self.latent_size:
            raise ArgumentError(f"z must be a [B, {self.latent_size}] tensor, got {z!r}")
        self._z = z.detach().to(self.device, torch.float32)

    @property
    def z(self) -> torch.Tensor | None:
        """The ``[B, latent]`` latent ``step`` acts with (None before ``set_z``)."""
        return self._z

    @property
    def has_per_env_state(self) -> bool:
        """True: the current ``z`` has one row per env."""
        return True

    # ------------------------------------------------------------------ networks
    def latent_input(self, observation: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``o ⊕ z`` along the last dim (``z`` broadcast to the observation's rows)."""
        z = z.to(observation.device, torch.float32).expand(*observation.shape[:-1], -1)
        return torch.cat([observation.float(), z], dim=-1)

    def distribution_params(
        self, observation: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy mean and clamped log std at ``o ⊕ z``."""
        mean, log_std = self.model(self.latent_input(observation, z))
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def to_env(self, squashed: torch.Tensor) -> torch.Tensor:
        """Map actions from ``[-1, 1]`` to the env's bounds."""
        return squashed * self.action_scale + self.action_bias

    def from_env(self, action: torch.Tensor) -> torch.Tensor:
        """Map env-space actions back to ``[-1, 1]`` (the inverse of ``to_env``).

        The critics and the encoder see normalised actions: with narrow bounds (the
        point robot's ±0.1) raw actions would be inputs ten times smaller than the rest.
        """
        action = action.to(self.action_scale.device, torch.float32)
        return (action - self.action_bias) / self.action_scale

    def pi(
        self, observation: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reparameterised env-space action, its log-probability, the mean and log std."""
        mean, log_std = self.distribution_params(observation, z)
        squashed, log_prob = squashed_gaussian_sample(mean, log_std)
        return self.to_env(squashed), log_prob, mean, log_std

    def q(self, observation: torch.Tensor, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``[2, ...]`` Q-values ``Q_i(o ⊕ z, a)`` of env-space actions (normalised first)."""
        return self.q_model(self.latent_input(observation, z), self.from_env(action))

    def v(self, observation: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``[...]`` state values ``V(o ⊕ z)`` (v1)."""
        self._require("v", "v1")
        return self.v_model(self.latent_input(observation, z))

    @torch.no_grad()
    def target_v(self, observation: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``[...]`` target state values (v1)."""
        self._require("target_v", "v1")
        return self.target_v_model(self.latent_input(observation, z))

    @torch.no_grad()
    def target_q(
        self, observation: torch.Tensor, z: torch.Tensor, action: torch.Tensor
    ) -> torch.Tensor:
        """``[2, ...]`` target Q-values ``Q'_i(o ⊕ z, a)`` of env-space actions (v2)."""
        self._require("target_q", "v2")
        return self.target_q_model(self.latent_input(observation, z), self.from_env(action))

    def _require(self, method: str, variant: str) -> None:
        if self.sac_variant != variant:
            raise RuntimeError(
                f"PearlAgent.{method} needs sac_variant={variant!r}, "
                f"this agent has sac_variant={self.sac_variant!r}"
            )

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def step(
        self,
        observation: Any,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        rnn_state: TensorDictBase | None = None,
    ) -> tuple[torch.Tensor, dict[Any, Any]]:
        """Actions for ``[B]`` envs with the current ``z`` (``set_z``); ``tanh(mean)`` in eval.

        Raises:
            RuntimeError: ``set_z`` was not called, or for a different number of envs.
        """
        z = self._z
        if z is None or z.shape[0] != observation.shape[0]:
            got = None if z is None else tuple(z.shape)
            raise RuntimeError(
                f"call set_z with a [{observation.shape[0]}, {self.latent_size}] latent before "
                f"step (one row per env), current z: {got}"
            )
        mean, log_std = self.distribution_params(observation.to(self.device), z)
        if self.mode == "eval":
            squashed = torch.tanh(mean)
        else:
            squashed = torch.tanh(mean + log_std.exp() * torch.randn_like(mean))
        return self.to_env(squashed), {}

    def forward(self, td: TensorDictBase) -> TensorDict:
        """Policy mean and log std for every row of ``td`` (``observation`` and ``Z``)."""
        mean, log_std = self.distribution_params(td[keys.OBSERVATION], td[Z])
        return TensorDict({keys.LOC: mean, keys.LOG_STD: log_std}, batch_size=td.batch_size)

    # ------------------------------------------------------------------ the target
    def target_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Target and online parameters, paired (built once): V (v1) or the critics (v2)."""
        if self._target_pairs is None:
            if self.sac_variant == "v1":
                online, target = self.v_model.parameters(), self.target_v_model.parameters()
            else:
                online, target = self.q_model.parameters(), self.target_q_model.parameters()
            self._target_pairs = (list(target), list(online))
        return self._target_pairs

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """``target <- tau * online + (1 - tau) * target``: ``target_v`` (v1), ``target_q`` (v2)."""
        polyak_update(*self.target_pairs(), tau)
