"""PEARL's agent: a context encoder ``q(z | c)`` and SAC networks conditioned on ``z``.

PEARL (Rakelly et al. 2019, https://arxiv.org/abs/1903.08254) infers a task variable ``z``
from a context of transitions and feeds it to every network beside the observation:

- the encoder (``ContextEncoder``): ``[tasks, n, context]`` -> posterior ``(mu, var)``,
  each ``[tasks, latent]``;
- the policy ``pi(a | o ⊕ z)`` (tanh-squashed Gaussian, ``PiMlpModel``) and the twin critics
  ``Q_i(o ⊕ z, a)`` (``QEnsembleMlpModel``), all at input size obs + latent;
- what the critics bootstrap from, chosen by ``value_network`` (as ``SacAgent``'s): True
  (``sac_variant="v1"``, the reference's SAC v1, the default) builds a state value
  ``V(o ⊕ z)`` and its Polyak target (``VMlpModel``); False (``"v2"``, tdrl's twin-Q
  learned-temperature SAC) builds Polyak targets ``Q'_i`` of the critics and no value
  network. ``PEARL`` must be built with the same variant (its ``initialize`` checks), as
  it holds the matching loss and, for ``"v2"``, the temperature.

The policy and critics are ``SacAgent``'s, written once as functions of the network input
(``tdrl.agents.qpg.sac_agent``): this agent calls them with ``o ⊕ z`` (``latent_input``).
Like every agent it moves no input: ``step``'s arrive on its device from the sampler, and
the caller of ``context`` / ``infer_posterior`` moves the transitions there.

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
from torch import Tensor, nn

from tdrl import keys
from tdrl._compat import TensorSpec
from tdrl.agents.base import Agent, State, StepOutput
from tdrl.agents.qpg.base import flat_sizes, register_action_map, set_action_map
from tdrl.agents.qpg.squashed_gaussian import (
    check_log_std,
    policy_action,
    policy_params,
    policy_sample,
    sac_critics,
)
from tdrl.models.qpg.context import ContextEncoder, context_from_transitions
from tdrl.models.qpg.mlp import PiMlpModel
from tdrl.utils.checks import ArgumentError, check_bool, check_choice, check_int, check_int_list

#: Key of the latent ``z`` (``[..., latent]``) in a TensorDict given to ``PearlAgent.forward``.
Z = "z"

#: The SAC variants: ``"v1"`` (value network and its target, the reference's) and ``"v2"``
#: (twin Q targets and a learned temperature, as ``tdrl.algos.qpg.SAC``).
SAC_VARIANTS = ("v1", "v2")

#: The constructor settings a resumed run must share with its snapshot (``settings``).
SETTINGS = (
    "latent_size",
    "encoder_hidden_sizes",
    "hidden_sizes",
    "information_bottleneck",
    "use_next_obs_in_context",
    "use_context",
    "sac_variant",
    "log_std_min",
    "log_std_max",
)


class PearlAgent(Agent):
    """Context encoder plus tanh-Gaussian policy, twin Q and a target over ``o ⊕ z``.

    The target is a value network ``V`` and its Polyak copy (``value_network=True``,
    ``sac_variant="v1"``) or Polyak copies of the twin critics (``value_network=False``,
    ``"v2"``); ``v``/``target_v`` exist in v1 only and ``target_q`` in v2 only.

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
        value_network: True (the reference's SAC v1: builds ``v_model`` and
            ``target_v_model``) or False (tdrl's twin-Q learned-temperature SAC v2: builds
            ``target_q_model``, no value network); the name ``SacAgent`` uses. None: as
            ``sac_variant`` says, else True. ``PEARL`` must be given the same variant.
        sac_variant: the same choice under oyster's name, kept as an alias: ``"v1"``
            (``value_network=True``) or ``"v2"`` (``value_network=False``). Given with
            ``value_network``, the two must agree. The attribute ``sac_variant`` always
            holds the variant.
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
        value_network: bool | None = None,
        sac_variant: str | None = None,
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
        self.value_network = value_network_of(value_network, sac_variant)
        self.sac_variant = SAC_VARIANTS[0] if self.value_network else SAC_VARIANTS[1]
        self.log_std_min, self.log_std_max = check_log_std(log_std_min, log_std_max)
        self._z: torch.Tensor | None = None
        register_action_map(self)

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
        self.observation_size, self.action_size = obs_size, act_size
        self.context_size = (
            obs_size + act_size + 1 + (obs_size if self.use_next_obs_in_context else 0)
        )
        self.encoder = ContextEncoder(
            self.context_size,
            self.latent_size,
            hidden_sizes=self.encoder_hidden_sizes,
            information_bottleneck=self.information_bottleneck,
        ).to(self.device)
        sizes = {"hidden_sizes": self.hidden_sizes}
        self._targets = sac_critics(
            self,
            obs_size + self.latent_size,
            act_size,
            value_network=self.value_network,
            q_model_kwargs=sizes,
            v_model_kwargs=sizes,
        )
        set_action_map(self, action_spec, self.device)

    def settings(self) -> dict[str, Any]:
        """What a resumed run must share with this agent's snapshot: name -> value.

        The sizes of the networks and the encoder, the posterior's form, the context's
        content, the SAC variant and the policy's log-std clamp.
        """
        return {name: getattr(self, name) for name in SETTINGS}

    # ------------------------------------------------------------------ the task posterior
    def context(self, transitions: TensorDictBase) -> torch.Tensor:
        """The ``[tasks, n, context_size]`` context of ``[tasks, n]`` transitions.

        Actions enter normalised to ``[-1, 1]`` (``from_env``), as the reference's context
        holds the policy's actions before its env wrapper rescales them. The transitions
        must be on the agent's device (the caller moves them).
        """
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
                On the agent's device.
        """
        if not self.use_context:  # the context-free baseline: z = 0 whatever the context
            return self._zero_latent(context.shape[0])
        if isinstance(context, TensorDictBase):
            context = self.context(context)
        return self.encoder(context)

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
        z = z.to(torch.float32).expand(*observation.shape[:-1], -1)
        return torch.cat([observation.float(), z], dim=-1)

    def distribution_params(
        self, observation: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy mean and clamped log std at ``o ⊕ z``."""
        return policy_params(self, self.latent_input(observation, z))

    def to_env(self, squashed: torch.Tensor) -> torch.Tensor:
        """Map actions from ``[-1, 1]`` to the env's bounds."""
        return squashed * self.action_scale + self.action_bias

    def from_env(self, action: torch.Tensor) -> torch.Tensor:
        """Map env-space actions back to ``[-1, 1]`` (the inverse of ``to_env``).

        The critics and the encoder see normalised actions: with narrow bounds (the
        point robot's ±0.1) raw actions would be inputs ten times smaller than the rest.
        """
        action = action.to(torch.float32)
        return (action - self.action_bias) / self.action_scale

    def pi(
        self, observation: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reparameterised env-space action, its log-probability, the mean and log std."""
        return policy_sample(self, self.latent_input(observation, z))

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
        self, observation: Any, prev_action: Tensor, prev_reward: Tensor, rnn_state: State = None
    ) -> StepOutput:
        """Actions for ``[B]`` envs with the current ``z`` (``set_z``); ``tanh(mean)`` in eval.

        The inputs are on the agent's device (the sampler puts them there), as ``z`` is.

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
        x = self.latent_input(observation, z)
        return policy_action(self, x, deterministic=self.mode == "eval"), {}

    def forward(self, td: TensorDictBase) -> TensorDict:
        """Policy mean and log std for every row of ``td`` (``observation`` and ``Z``)."""
        mean, log_std = self.distribution_params(td[keys.OBSERVATION], td[Z])
        return TensorDict({keys.LOC: mean, keys.LOG_STD: log_std}, batch_size=td.batch_size)

    # ------------------------------------------------------------------ the target
    def target_pairs(self) -> tuple[list[torch.Tensor], ...]:
        """Target and online parameters, paired (built once): V (v1) or the critics (v2)."""
        return self._targets.tensors()

    def update_target(self, tau: float) -> None:
        """``target <- tau * online + (1 - tau) * target``: ``target_v`` (v1), ``target_q`` (v2)."""
        self._targets.update(tau)


def value_network_of(value_network: bool | None, sac_variant: str | None) -> bool:
    """``value_network`` from it and its alias ``sac_variant`` (both None: True, v1).

    Raises:
        ArgumentError: a bad value, or the two disagree.
    """
    from_variant = None
    if sac_variant is not None:
        from_variant = check_choice("sac_variant", sac_variant, SAC_VARIANTS) == SAC_VARIANTS[0]
    if value_network is None:
        return True if from_variant is None else from_variant
    value_network = check_bool("value_network", value_network)
    if from_variant is not None and from_variant != value_network:
        raise ArgumentError(
            f"value_network={value_network} and sac_variant={sac_variant!r} disagree "
            "(value_network=True is sac_variant='v1', False is 'v2'); give one of them"
        )
    return value_network
