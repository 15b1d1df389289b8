"""Deterministic-actor agents for DDPG and TD3."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from tdrl import keys
from tdrl._compat import TensorSpec
from tdrl.agents.qpg.base import QpgAgent, flat_sizes, frozen_copy
from tdrl.models.qpg.mlp import MuMlpModel
from tdrl.utils.tensor import polyak_update


class DdpgAgent(QpgAgent):
    """Deterministic actor ``mu(o)`` in ``[-1, 1]^A`` with Gaussian exploration, ``n_q``
    critics and target copies of both (rlpyt's ``DdpgAgent``).

    Exploration adds ``N(0, action_std^2)`` noise (clipped to ``±action_noise_clip`` when
    given) to the actor's output in ``[-1, 1]``, clips to ``[-1, 1]`` and maps affinely to
    the env's bounds; before learning starts (``set_pretrain_itr``) ``pretrain_std``
    replaces ``action_std`` when set. Evaluation is deterministic.

    Args:
        model: actor ``(observation, ...) -> [-1, 1]^A``; ``MuMlpModel`` when None.
        q_model: critics ``(observation, action) -> [n_q, N]``; ``QEnsembleMlpModel`` when
            None.
        model_kwargs: keyword arguments of the default actor (``hidden_sizes``: 400, 300).
        q_model_kwargs: keyword arguments of the default critics (``hidden_sizes``: 400, 300).
        n_q: number of critics (DDPG 1, TD3 2).
        action_std: exploration noise std in the ``[-1, 1]`` action space.
        action_noise_clip: clip of the exploration noise (None: no clip).
        pretrain_std: exploration std before learning starts (None: ``action_std``).
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        q_model: nn.Module | None = None,
        *,
        model_kwargs: dict[str, Any] | None = None,
        q_model_kwargs: dict[str, Any] | None = None,
        n_q: int = 1,
        action_std: float = 0.1,
        action_noise_clip: float | None = None,
        pretrain_std: float | None = None,
    ):
        q_model_kwargs = {"hidden_sizes": (400, 300), "n_q": n_q, **(q_model_kwargs or {})}
        super().__init__(model, q_model, model_kwargs=model_kwargs, q_model_kwargs=q_model_kwargs)
        if n_q < 1:
            raise ValueError(f"n_q must be >= 1, got {n_q!r}")
        if action_std < 0:
            raise ValueError(f"action_std must be >= 0, got {action_std!r}")
        if action_noise_clip is not None and action_noise_clip <= 0:
            raise ValueError(f"action_noise_clip must be positive, got {action_noise_clip!r}")
        if pretrain_std is not None and pretrain_std < 0:
            raise ValueError(f"pretrain_std must be >= 0, got {pretrain_std!r}")
        self.n_q = n_q
        self.action_std = float(action_std)
        self.action_noise_clip = action_noise_clip
        self.pretrain_std = pretrain_std
        self.target_model: nn.Module | None = None

    # ------------------------------------------------------------------ set-up
    def make_model(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, **kwargs: Any
    ) -> nn.Module:
        obs_size, act_size = flat_sizes(observation_spec, action_spec, type(self).__name__)
        return MuMlpModel(obs_size, act_size, **kwargs)

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec) -> None:
        super().initialize(observation_spec, action_spec)
        self.target_model = frozen_copy(self.model)

    def add_noise(self, action: torch.Tensor, std: float, noise_clip: float | None) -> torch.Tensor:
        """``clip(action + clip(N(0, std^2), ±noise_clip), -1, 1)`` in ``[-1, 1]`` space."""
        if std == 0:
            return action
        noise = torch.randn_like(action) * std
        if noise_clip is not None:
            noise = noise.clamp(-noise_clip, noise_clip)
        return (action + noise).clamp(-1.0, 1.0)

    @torch.no_grad()
    def step(
        self, observation: Any, prev_action: torch.Tensor, prev_reward: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        action = self.model(observation)
        if self.mode != "eval":
            std = self.action_std
            if self._pretraining and self.pretrain_std is not None:
                std = self.pretrain_std
            action = self.add_noise(action, std, self.action_noise_clip)
        return self.to_env(action), {}

    def mu(self, observation: Any) -> torch.Tensor:
        """The actor's env-space action (with gradient)."""
        return self.to_env(self.model(observation))

    @torch.no_grad()
    def target_mu(
        self, observation: Any, noise_std: float = 0.0, noise_clip: float | None = None
    ) -> torch.Tensor:
        """The target actor's env-space action, optionally smoothed with clipped noise."""
        return self.to_env(self.add_noise(self.target_model(observation), noise_std, noise_clip))

    def forward(self, td: TensorDictBase) -> TensorDict:
        """The actor's ``[-1, 1]`` output (``loc``) for every row of ``td``."""
        return TensorDict({keys.LOC: self.model(td[keys.OBSERVATION])}, batch_size=td.batch_size)

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """Polyak update of the target actor and critics."""
        if self._target_pairs is None:
            self._target_pairs = (
                [*self.target_model.parameters(), *self.target_q_model.parameters()],
                [*self.model.parameters(), *self.q_model.parameters()],
            )
        polyak_update(*self._target_pairs, tau)


class Td3Agent(DdpgAgent):
    """``DdpgAgent`` with TD3's defaults: twin critics and ``pretrain_std=0.5`` before
    learning starts (networks 400-300 as in rlpyt)."""

    def __init__(
        self,
        model: nn.Module | None = None,
        q_model: nn.Module | None = None,
        *,
        model_kwargs: dict[str, Any] | None = None,
        q_model_kwargs: dict[str, Any] | None = None,
        action_std: float = 0.1,
        action_noise_clip: float | None = None,
        pretrain_std: float | None = 0.5,
    ):
        super().__init__(
            model,
            q_model,
            model_kwargs=model_kwargs,
            q_model_kwargs=q_model_kwargs,
            n_q=2,
            action_std=action_std,
            action_noise_clip=action_noise_clip,
            pretrain_std=pretrain_std,
        )
