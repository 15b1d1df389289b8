"""Soft actor-critic agent: a tanh-squashed Gaussian policy, twin Q-functions and a target.

``SacAgent`` serves SAC (targets of the Q-functions) and, with ``value_network=True``,
SAC_V (a state-value network and its target instead); ``SacVAgent`` is that preset.

The policy and critic code is written once, as functions of the network input
(``tdrl.agents.qpg.squashed_gaussian``): ``SacAgent`` calls them with the observation,
``PearlAgent`` with ``o ⊕ z``.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor, nn

from tdrl import keys
from tdrl._compat import TensorSpec
from tdrl.agents.base import Agent, State, StepOutput, check_model
from tdrl.agents.qpg.base import (
    flat_sizes,
    register_action_map,
    set_action_map,
)
from tdrl.agents.qpg.squashed_gaussian import (
    check_log_std,
    policy_action,
    policy_params,
    policy_sample,
    sac_critics,
)
from tdrl.models.qpg.mlp import PiMlpModel
from tdrl.utils.checks import check_bool, check_mapping, check_range


class SacAgent(Agent):
    """Tanh-Gaussian policy, twin Q-functions and a Polyak target (rlpyt's ``SacAgent``).

    Actions are squashed to ``[-1, 1]`` and mapped affinely to the env's bounds. Before the
    algorithm starts learning (``set_pretrain_itr``) actions are drawn around the policy
    mean with a fixed ``pretrain_std``; evaluation is deterministic (``tanh(mean)``). Default
    networks, the action map and all noise are made on the device of the policy.

    What the target is made of is chosen at construction: SAC bootstraps from target
    Q-functions (``target_q_model``); SAC_V (``value_network=True``) from the target of a
    state-value network (``v_model``, ``target_v_model``), and builds no Q target.

    Args:
        model: policy ``(observation, ...) -> (mean, log_std)``; ``PiMlpModel`` when None.
        q_model: critics ``(observation, action) -> [n_q, N]``; ``QEnsembleMlpModel`` with
            two Q-functions when None.
        v_model: value network ``(observation) -> [N]`` (with ``value_network``);
            ``VMlpModel`` when None.
        model_kwargs: keyword arguments of the default policy (``hidden_sizes``).
        q_model_kwargs: keyword arguments of the default critics.
        v_model_kwargs: keyword arguments of the default value network.
        value_network: hold a value network and bootstrap from its target (SAC_V).
        pretrain_std: exploration std (pre-squash) before learning starts.
        log_std_min: lower clamp of the policy's log std.
        log_std_max: upper clamp of the policy's log std.
    """

    q_model: nn.Module
    target_q_model: nn.Module
    v_model: nn.Module
    target_v_model: nn.Module
    action_scale: torch.Tensor
    action_bias: torch.Tensor

    def __init__(
        self,
        model: nn.Module | None = None,
        q_model: nn.Module | None = None,
        v_model: nn.Module | None = None,
        *,
        model_kwargs: dict[str, Any] | None = None,
        q_model_kwargs: dict[str, Any] | None = None,
        v_model_kwargs: dict[str, Any] | None = None,
        value_network: bool = False,
        pretrain_std: float = 0.75,
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
    ):
        super().__init__(model, model_kwargs)
        self.value_network = check_bool("value_network", value_network)
        if v_model is not None and not self.value_network:
            raise ValueError("v_model is given but value_network is False")
        q_model = check_model("q_model", q_model)
        if q_model is not None:
            self.q_model = q_model
        v_model = check_model("v_model", v_model)
        if v_model is not None:
            self.v_model = v_model
        self.q_model_kwargs = check_mapping("q_model_kwargs", q_model_kwargs)
        self.v_model_kwargs = check_mapping("v_model_kwargs", v_model_kwargs)
        self.pretrain_std = check_range("pretrain_std", pretrain_std, 1e-12, 1e6)
        self.log_std_min, self.log_std_max = check_log_std(log_std_min, log_std_max)
        self.pretrain_itr = 0
        self._pretraining = False
        register_action_map(self)

    # ------------------------------------------------------------------ set-up
    def make_model(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, **kwargs: Any
    ) -> nn.Module:
        """The default policy, ``PiMlpModel``."""
        obs_size, act_size = flat_sizes(observation_spec, action_spec, type(self).__name__)
        return PiMlpModel(obs_size, act_size, **kwargs)

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec) -> None:
        """Build the networks not given, the frozen target and the action map."""
        super().initialize(observation_spec, action_spec)
        obs_size, act_size = flat_sizes(observation_spec, action_spec, type(self).__name__)
        self._targets = sac_critics(
            self,
            obs_size,
            act_size,
            value_network=self.value_network,
            q_model_kwargs=self.q_model_kwargs,
            v_model_kwargs=self.v_model_kwargs,
        )
        set_action_map(self, action_spec, self.device)
        self.action_size = act_size

    def set_pretrain_itr(self, itr: int) -> None:
        """Explore with ``pretrain_std`` in sample mode before iteration ``itr``."""
        self.pretrain_itr = int(itr)

    def sample_mode(self, itr: int) -> None:
        """Sampling: warm-up exploration before ``pretrain_itr``."""
        super().sample_mode(itr)
        self._pretraining = itr < self.pretrain_itr

    # ------------------------------------------------------------------ acting
    def to_env(self, squashed: torch.Tensor) -> torch.Tensor:
        """Map actions from ``[-1, 1]`` to the env's bounds."""
        return squashed * self.action_scale + self.action_bias

    def distribution_params(self, observation: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy mean and clamped log std."""
        return policy_params(self, observation)

    @torch.no_grad()
    def step(
        self, observation: Any, prev_action: Tensor, prev_reward: Tensor, rnn_state: State = None
    ) -> StepOutput:
        """Sampled actions in the env's bounds (``tanh(mean)`` in eval mode); no info."""
        std = self.pretrain_std if self._pretraining else None
        return policy_action(self, observation, deterministic=self.mode == "eval", std=std), {}

    def pi(self, observation: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reparameterised env-space action, its log-probability, the mean and log std."""
        return policy_sample(self, observation)

    def q(self, observation: Any, action: torch.Tensor) -> torch.Tensor:
        """``[n_q, N]`` Q-values of env-space actions."""
        return self.q_model(observation, action)

    @torch.no_grad()
    def target_q(self, observation: Any, action: torch.Tensor) -> torch.Tensor:
        """``[n_q, N]`` target Q-values of env-space actions (SAC)."""
        return self.target_q_model(observation, action)

    def v(self, observation: Any) -> torch.Tensor:
        """``[N]`` state values (SAC_V)."""
        return self.v_model(observation)

    @torch.no_grad()
    def target_v(self, observation: Any) -> torch.Tensor:
        """``[N]`` target state values (SAC_V)."""
        return self.target_v_model(observation)

    def forward(self, td: TensorDictBase) -> TensorDict:
        """Policy mean and log std for every row of ``td``."""
        mean, log_std = self.distribution_params(td[keys.OBSERVATION])
        return TensorDict({keys.LOC: mean, keys.LOG_STD: log_std}, batch_size=td.batch_size)

    def target_pairs(self) -> tuple[list[torch.Tensor], ...]:
        """Target and online parameters (value network or critics), paired (built once)."""
        return self._targets.tensors()

    def update_target(self, tau: float) -> None:
        """``target <- tau * online + (1 - tau) * target`` for the target network."""
        self._targets.update(tau)


#: The agent of SAC_V (rlpyt's ``SacVAgent``): a ``SacAgent`` with ``value_network=True``,
#: i.e. ``V(o)`` (``VMlpModel``, 256-256, by default) and its Polyak target, which
#: bootstraps the critics; no Q target. The arguments are ``SacAgent``'s.
SacVAgent = functools.partial(SacAgent, value_network=True)
