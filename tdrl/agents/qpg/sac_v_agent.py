"""SAC v1 agent: ``SacAgent`` plus a state-value network and its target (for ``SAC_V``)."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from tdrl._compat import TensorSpec
from tdrl.agents.qpg.sac_agent import SacAgent
from tdrl.models.qpg.mlp import VMlpModel
from tdrl.utils.tensor import polyak_update


class SacVAgent(SacAgent):
    """``SacAgent`` with a value network ``V(o)`` (``VMlpModel``, 256-256) whose Polyak
    target bootstraps the critics, as in the first SAC paper (rlpyt's ``SacVAgent``).

    Args:
        v_model: value network ``(observation) -> [N]``; ``VMlpModel`` when None.
        v_model_kwargs: keyword arguments of the default value network.
        **kwargs: ``SacAgent``'s arguments.
    """

    def __init__(
        self,
        *args: Any,
        v_model: nn.Module | None = None,
        v_model_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.v_model = v_model
        self.v_model_kwargs = dict(v_model_kwargs or {})
        self.target_v_model: nn.Module | None = None

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec) -> None:
        super().initialize(observation_spec, action_spec)
        self.target_q_model = None  # SAC_V bootstraps from the value target instead
        if self.v_model is None:
            self.v_model = VMlpModel(math.prod(observation_spec.shape), **self.v_model_kwargs)
        self.target_v_model = copy.deepcopy(self.v_model)
        self.target_v_model.requires_grad_(False)
        self._v_pairs = (list(self.target_v_model.parameters()), list(self.v_model.parameters()))

    def v(self, observation: Any) -> torch.Tensor:
        """``[N]`` state values."""
        return self.v_model(observation)

    @torch.no_grad()
    def target_v(self, observation: Any) -> torch.Tensor:
        """``[N]`` target state values."""
        return self.target_v_model(observation)

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """Polyak update of the value target (SAC_V bootstraps the critics from it)."""
        polyak_update(*self._v_pairs, tau)
