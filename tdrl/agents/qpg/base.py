"""What the continuous-action agents (DDPG/TD3 and SAC) share: the affine map from
``[-1, 1]^A`` to the env's action bounds, the critics and their frozen target copy, the
warm-up (``pretrain``) switch, and the sizes of the default MLPs."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from tdrl._compat import Bounded, TensorSpec
from tdrl.agents.base import Agent
from tdrl.models.qpg.mlp import QEnsembleMlpModel


class QpgAgent(Agent):
    """Base of ``DdpgAgent`` and ``SacAgent``: subclasses build the actor
    (``make_model``) and act (``step``).

    Args:
        model: the actor (None: ``make_model``).
        q_model: critics ``(observation, action) -> [n_q, N]`` (None: a
            ``QEnsembleMlpModel`` from ``q_model_kwargs``).
        model_kwargs: keyword arguments of the default actor.
        q_model_kwargs: keyword arguments of the default critics.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        q_model: nn.Module | None = None,
        *,
        model_kwargs: dict[str, Any] | None = None,
        q_model_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__(model, model_kwargs)
        self.q_model = q_model
        self.q_model_kwargs = dict(q_model_kwargs or {})
        self.pretrain_itr = 0
        self._pretraining = False
        self.target_q_model: nn.Module | None = None
        self._target_pairs: tuple | None = None
        self.register_buffer("action_scale", torch.ones(()))
        self.register_buffer("action_bias", torch.zeros(()))

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec) -> None:
        """Build the actor and critics, the frozen target critics and the action map."""
        super().initialize(observation_spec, action_spec)
        obs_size, act_size = flat_sizes(observation_spec, action_spec, type(self).__name__)
        if self.q_model is None:
            self.q_model = QEnsembleMlpModel(obs_size, act_size, **self.q_model_kwargs)
        self.target_q_model = frozen_copy(self.q_model)
        self._target_pairs = None
        low, high = action_spec.space.low.float(), action_spec.space.high.float()
        self.action_scale = (high - low) / 2.0
        self.action_bias = (high + low) / 2.0
        self.action_size = act_size

    def set_pretrain_itr(self, itr: int) -> None:
        """Use the warm-up exploration in sample mode before iteration ``itr``."""
        self.pretrain_itr = int(itr)

    def sample_mode(self, itr: int) -> None:
        super().sample_mode(itr)
        self._pretraining = itr < self.pretrain_itr

    def to_env(self, squashed: torch.Tensor) -> torch.Tensor:
        """Map actions from ``[-1, 1]`` to the env's bounds."""
        return squashed * self.action_scale + self.action_bias

    def q(self, observation: Any, action: torch.Tensor) -> torch.Tensor:
        """``[n_q, N]`` Q-values of env-space actions."""
        return self.q_model(observation, action)

    @torch.no_grad()
    def target_q(self, observation: Any, action: torch.Tensor) -> torch.Tensor:
        """``[n_q, N]`` target Q-values."""
        return self.target_q_model(observation, action)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters do not require gradients (a target)."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


def flat_sizes(observation_spec: TensorSpec, action_spec: TensorSpec, who: str) -> tuple[int, int]:
    """``(observation size, action size)`` for the default MLPs; raises naming ``who`` for
    non-Box actions or non-flat observations."""
    if not isinstance(action_spec, Bounded) or not action_spec.dtype.is_floating_point:
        raise TypeError(f"{who} needs a continuous Box action space, got {action_spec}")
    if len(tuple(observation_spec.shape)) != 1:
        raise TypeError(
            f"{who}'s default models need flat vector observations, got shape "
            f"{tuple(observation_spec.shape)}; pass model= and q_model="
        )
    return math.prod(observation_spec.shape), math.prod(action_spec.shape)
