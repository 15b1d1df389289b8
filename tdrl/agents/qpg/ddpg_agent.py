"""Deterministic-actor agent for DDPG, and the TD3 preset of it."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor, nn

from tdrl import keys
from tdrl._compat import TensorSpec
from tdrl.agents.base import Agent, State, StepOutput, check_model
from tdrl.agents.qpg.base import (
    default_critics,
    flat_sizes,
    register_action_map,
    set_action_map,
)
from tdrl.agents.targets import TargetNetworks
from tdrl.models.qpg.mlp import MuMlpModel
from tdrl.utils.checks import (
    check_choice,
    check_int,
    check_mapping,
    check_optional_range,
    check_range,
)
from tdrl.utils.tensor import frozen_copy

#: The key of the Ornstein-Uhlenbeck process in an OU-exploring agent's state.
OU_NOISE = "ou_noise"


class DdpgAgent(Agent):
    """Deterministic actor ``mu(o)`` in ``[-1, 1]^A``, ``n_q`` critics, target copies of both.

    rlpyt's ``DdpgAgent``. Exploration adds ``N(0, action_std^2)`` noise (clipped to
    ``±action_noise_clip`` when given) to the actor's output in ``[-1, 1]``, clips to
    ``[-1, 1]`` and maps affinely to the env's bounds; before learning starts
    (``set_pretrain_itr``) ``pretrain_std`` replaces ``action_std`` when set. Evaluation is
    deterministic. Default networks, the action map and all noise are made on the device of
    the actor.

    ``exploration_noise="ou"`` draws temporally correlated noise instead, an
    Ornstein-Uhlenbeck process per env (DDPG's original exploration; rl-zoo3's
    ``noise_type: ornstein-uhlenbeck``, as SB3's ``OrnsteinUhlenbeckActionNoise`` with mean
    0): ``x <- x - ou_theta * x * ou_dt + std * sqrt(ou_dt) * N(0, 1)`` each step, with
    ``std`` as above. The process is the agent's per-env state, handled like an LSTM's
    (``Agent.recurrent``): the sampler carries it per env and resets it to 0 where an episode
    begins (SB3 resets its noise at episode ends), evaluation keeps its own (unused: no
    noise), and the batch records it; replay stores only the transitions.

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
        exploration_noise: ``"gaussian"`` (independent per step) or ``"ou"``
            (Ornstein-Uhlenbeck, above).
        ou_theta: the OU process's mean reversion rate (SB3's default).
        ou_dt: the OU process's time step (SB3's default).
    """

    q_model: nn.Module
    target_model: nn.Module
    target_q_model: nn.Module
    action_scale: torch.Tensor
    action_bias: torch.Tensor

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
        exploration_noise: str = "gaussian",
        ou_theta: float = 0.15,
        ou_dt: float = 1e-2,
    ):
        super().__init__(model, model_kwargs)
        self.n_q = check_int("n_q", n_q, minimum=1)
        self.q_model_kwargs = {
            "hidden_sizes": (400, 300),
            "n_q": self.n_q,
            **check_mapping("q_model_kwargs", q_model_kwargs),
        }
        q_model = check_model("q_model", q_model)
        if q_model is not None:
            self.q_model = q_model
        self.action_std = check_range("action_std", action_std, 0.0, 1e6)
        self.action_noise_clip = check_optional_range(
            "action_noise_clip", action_noise_clip, 1e-12, 1e6
        )
        self.pretrain_std = check_optional_range("pretrain_std", pretrain_std, 0.0, 1e6)
        self.exploration_noise = check_choice(
            "exploration_noise", exploration_noise, ("gaussian", "ou")
        )
        self.ou_theta = check_range("ou_theta", ou_theta, 0.0, 1e6)
        self.ou_dt = check_range("ou_dt", ou_dt, 1e-12, 1e6)
        self.pretrain_itr = 0
        self._pretraining = False
        register_action_map(self)

    # ------------------------------------------------------------------ set-up
    def make_model(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, **kwargs: Any
    ) -> nn.Module:
        """The default actor, ``MuMlpModel``."""
        obs_size, act_size = flat_sizes(observation_spec, action_spec, type(self).__name__)
        return MuMlpModel(obs_size, act_size, **kwargs)

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec) -> None:
        """Build the actor and critics (unless given), their frozen targets, the action map."""
        super().initialize(observation_spec, action_spec)
        obs_size, act_size = flat_sizes(observation_spec, action_spec, type(self).__name__)
        device = self.device  # the actor's (a user's model may be on a GPU already)
        q_model = default_critics(self, obs_size, act_size, self.q_model_kwargs, device)
        self.target_model = frozen_copy(self.model)
        self.target_q_model = frozen_copy(q_model)
        self._targets = TargetNetworks(
            [(self.target_model, self.model), (self.target_q_model, q_model)]
        )
        set_action_map(self, action_spec, device)
        self.action_size = act_size

    @property
    def recurrent(self) -> bool:
        """True with Ornstein-Uhlenbeck noise: its process is per-env state."""
        return self.exploration_noise == "ou" or super().recurrent

    def initial_rnn_state(self, batch_size: int) -> TensorDict | None:
        """The OU process at 0 for ``batch_size`` envs (None with Gaussian noise)."""
        if self.exploration_noise != "ou":
            return super().initial_rnn_state(batch_size)
        size = self.action_size if hasattr(self, "action_size") else 1
        zeros = torch.zeros(batch_size, size, device=self.device)
        return TensorDict({OU_NOISE: zeros}, batch_size=[batch_size], device=self.device)

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

    def add_noise(self, action: torch.Tensor, std: float, noise_clip: float | None) -> torch.Tensor:
        """``clip(action + clip(N(0, std^2), ±noise_clip), -1, 1)`` in ``[-1, 1]`` space."""
        if std == 0:
            return action
        noise = torch.randn_like(action) * std
        if noise_clip is not None:
            noise = noise.clamp(-noise_clip, noise_clip)
        return (action + noise).clamp(-1.0, 1.0)

    def ou_noise(self, state: TensorDictBase, std: float) -> torch.Tensor:
        """The OU process one step on from ``state``'s ``[B, A]`` values."""
        x = state.get(OU_NOISE)
        step = std * math.sqrt(self.ou_dt) * torch.randn_like(x)
        return x - self.ou_theta * self.ou_dt * x + step

    @torch.no_grad()
    def step(
        self, observation: Any, prev_action: Tensor, prev_reward: Tensor, rnn_state: State = None
    ) -> StepOutput:
        """Noisy actor actions in the env's bounds (noiseless in eval mode).

        No info with Gaussian noise; with OU noise the process after the step in
        ``info[keys.NEXT_RNN_STATE]`` (``rnn_state``: before it; None: at 0).
        """
        action = self.model(observation)
        std = self.action_std
        if self._pretraining and self.pretrain_std is not None:
            std = self.pretrain_std
        if self.exploration_noise == "gaussian":
            if self.mode != "eval":
                action = self.add_noise(action, std, self.action_noise_clip)
            return self.to_env(action), {}
        if rnn_state is None:
            rnn_state = self.initial_rnn_state(action.shape[0])
        assert rnn_state is not None  # OU noise has a state
        if self.mode == "eval":
            return self.to_env(action), {keys.NEXT_RNN_STATE: rnn_state}
        noise = self.ou_noise(rnn_state, std)
        clipped = noise
        if self.action_noise_clip is not None:
            clipped = noise.clamp(-self.action_noise_clip, self.action_noise_clip)
        action = (action + clipped).clamp(-1.0, 1.0)
        state = TensorDict({OU_NOISE: noise}, batch_size=rnn_state.batch_size, device=noise.device)
        return self.to_env(action), {keys.NEXT_RNN_STATE: state}

    def mu(self, observation: Any) -> torch.Tensor:
        """The actor's env-space action (with gradient)."""
        return self.to_env(self.model(observation))

    @torch.no_grad()
    def target_mu(
        self, observation: Any, noise_std: float = 0.0, noise_clip: float | None = None
    ) -> torch.Tensor:
        """The target actor's env-space action, optionally smoothed with clipped noise."""
        return self.to_env(self.add_noise(self.target_model(observation), noise_std, noise_clip))

    def q(self, observation: Any, action: torch.Tensor) -> torch.Tensor:
        """``[n_q, N]`` Q-values of env-space actions."""
        return self.q_model(observation, action)

    @torch.no_grad()
    def target_q(self, observation: Any, action: torch.Tensor) -> torch.Tensor:
        """``[n_q, N]`` target Q-values of env-space actions."""
        return self.target_q_model(observation, action)

    def forward(self, td: TensorDictBase) -> TensorDict:
        """The actor's ``[-1, 1]`` output (``loc``) for every row of ``td``."""
        return TensorDict({keys.LOC: self.model(td[keys.OBSERVATION])}, batch_size=td.batch_size)

    def target_pairs(self) -> tuple[list[torch.Tensor], ...]:
        """Target and online parameters of actor and critics, paired (built once)."""
        return self._targets.tensors()

    def update_target(self, tau: float) -> None:
        """Polyak update of the target actor and critics."""
        self._targets.update(tau)


#: ``DdpgAgent`` with TD3's defaults: twin critics (``n_q=2``) and ``pretrain_std=0.5``
#: before learning starts; networks are 400-300 as in rlpyt. The arguments are
#: ``DdpgAgent``'s (rlpyt's class name, kept so configs and examples read the same).
Td3Agent = functools.partial(DdpgAgent, n_q=2, pretrain_std=0.5)
