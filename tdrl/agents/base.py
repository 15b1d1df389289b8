"""The agent interface every sampler and algorithm relies on.

An agent owns its model(s) and answers two calls:

* ``step(observation, prev_action, prev_reward) -> (action, info)``: action selection for a
  batch of envs at one time step, under ``no_grad``, on plain tensors (this sits in the
  sampler's hot loop, so no TensorDict is built per step). ``info`` maps canonical keys
  (``log_prob``, ``value``, distribution parameters) to ``[B, ...]`` tensors the sampler
  stores beside the action.
* ``forward(td) -> TensorDict``: the training-time forward pass over a TensorDict of any
  batch shape (``[T, B]`` or a minibatch) holding the agent inputs.

Modes follow rlpyt: ``sample_mode(itr)`` while collecting training data,
``train_mode(itr)`` while optimising, ``eval_mode(itr)`` while evaluating.

``Agent`` is the one in-project base class of every concrete agent. ``PgAgent`` declares
what the policy-gradient algorithms (A2C, PPO) rely on beyond it: the action distribution
of a forward pass and the state value. An agent may hold an ``Exploration`` (the DQN
agents' ``EpsilonGreedy``) that its modes drive, and reports the ``RunningStatistics`` that
``SyncRl`` merges across ranks (``statistics``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypeAlias, cast, runtime_checkable

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor, nn

from tdrl._compat import TensorSpec
from tdrl.utils.checks import ArgumentError, check_mapping

#: The recurrent state ``step`` receives (TensorDict of ``h``, ``c``, ...; None: feed-forward).
State: TypeAlias = TensorDictBase | None

#: What ``step`` returns: the ``[B]`` actions and their info, canonical key -> ``[B, ...]``.
StepOutput: TypeAlias = tuple[Tensor, dict[Any, Any]]


def check_model(name: str, model: Any) -> nn.Module | None:
    """``model`` if it is ``None`` or a ``torch.nn.Module``, else an error naming ``name``.

    Without this check a model of the wrong type would be ignored silently: the agent
    would build its default model instead.
    """
    if model is not None and not isinstance(model, nn.Module):
        raise ArgumentError(f"{name} must be a torch.nn.Module or None, got {model!r}")
    return model


@runtime_checkable
class RunningStatistics(Protocol):
    """Running statistics in a model (``RunningMeanStd``); ``SyncRl`` sets ``sync_across_ranks``."""

    sync_across_ranks: bool

    def update(self, x: torch.Tensor) -> None:
        """Merge a batch into the statistics."""
        ...


class Exploration(Protocol):
    """An agent's exploration component (``EpsilonGreedy``), driven by the agent's modes."""

    @property
    def per_env(self) -> bool:
        """Whether it keeps one value per env (``Agent.has_per_env_state``)."""

    def collector_initialize(self, global_B: int, env_ranks: Sequence[int], device: Any) -> None:
        """As ``Agent.collector_initialize``, with the agent's device."""

    def sample_mode(self, itr: int) -> None:
        """Exploration of training iteration ``itr``."""

    def eval_mode(self) -> None:
        """Exploration while evaluating."""


@runtime_checkable
class RecurrentModel(Protocol):
    """A model with a recurrent state (``tdrl.models.lstm``): it can make the zero state."""

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> TensorDict:
        """Zeros of ``batch_size`` rows (a TensorDict, e.g. ``h`` and ``c``)."""
        ...


def is_recurrent_model(model: object) -> bool:
    """``isinstance(model, RecurrentModel)``, in about a tenth of its time.

    The same test the protocol makes (an ``initial_state`` that is not None) without
    ``typing``'s protocol machinery, ~13 us a call on the test machine: agents ask at
    every step.
    """
    return getattr(model, "initial_state", None) is not None


class Agent(nn.Module):
    """Base class of tdrl agents (the one in-project ancestor of each concrete agent).

    ``model`` is the trained network the agent acts with; a model not given to the
    constructor is built by ``initialize`` from the env's specs (``make_model``), so it
    exists from then on.

    Args:
        model: a ready model; when ``None`` the agent builds its default model from the
            env's specs in ``initialize`` using ``model_kwargs``.
        model_kwargs: keyword arguments of the default model.
    """

    model: nn.Module
    exploration: Exploration | None

    def __init__(self, model: nn.Module | None = None, model_kwargs: dict[str, Any] | None = None):
        super().__init__()
        model = check_model("model", model)
        if model is not None:
            self.model = model
        self.model_kwargs = check_mapping("model_kwargs", model_kwargs)
        self.exploration = None  # an agent with an exploration component sets it
        self.mode = "train"
        self.observation_spec: TensorSpec | None = None
        self.action_spec: TensorSpec | None = None

    # --- set-up -------------------------------------------------------------------------
    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec) -> None:
        """Receive the env's specs (from the sampler) and build the model if needed."""
        self.observation_spec = observation_spec
        self.action_spec = action_spec
        if self._modules.get("model") is None:
            self.model = self.make_model(observation_spec, action_spec, **self.model_kwargs)

    def collector_initialize(self, global_B: int, env_ranks: Sequence[int]) -> None:
        """Learn which of the sampler's ``global_B`` envs this agent steps.

        For per-env exploration such as Ape-X epsilons (passed to ``exploration``); a no-op
        without an exploration component.
        """
        if self.exploration is not None:
            self.exploration.collector_initialize(global_B, env_ranks, self.device)

    @property
    def recurrent(self) -> bool:
        """Whether the agent is recurrent: its model is a ``RecurrentModel``.

        A recurrent agent's ``step`` takes the state before the step (``rnn_state``) and
        returns the state after it in ``info[keys.NEXT_RNN_STATE]``; the sampler carries
        the state per env, resets it to zeros where an episode begins and records it in
        the batch (``tdrl.keys``). The agent itself keeps no per-env state, so sampling,
        training and evaluation (its own envs, its own states) never disturb each other.
        """
        return is_recurrent_model(self._modules.get("model"))

    def initial_rnn_state(self, batch_size: int) -> TensorDict | None:
        """The zero recurrent state of ``batch_size`` envs on the agent's device (None: FF)."""
        model = self._modules.get("model")
        if not is_recurrent_model(model):
            return None
        return cast(RecurrentModel, model).initial_state(batch_size, self.device)

    @property
    def has_per_env_state(self) -> bool:
        """Whether ``step`` keeps state per env row (per-env epsilons, recurrent state).

        Such an agent must see all the sampler's envs in every call.
        """
        return self.exploration is not None and self.exploration.per_env

    def make_model(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, **kwargs: Any
    ) -> nn.Module:
        """Build the default model for these specs."""
        raise NotImplementedError(f"{type(self).__name__} needs a model= argument")

    @property
    def device(self) -> torch.device:
        """The device of the agent's parameters (CPU when it has none)."""
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    # --- modes --------------------------------------------------------------------------
    def sample_mode(self, itr: int) -> None:
        """Collecting training data: exploration on, no gradients needed."""
        self.mode = "sample"
        self.eval()
        if self.exploration is not None:
            self.exploration.sample_mode(itr)

    def train_mode(self, itr: int) -> None:
        """Optimising."""
        self.mode = "train"
        self.train()

    def eval_mode(self, itr: int) -> None:
        """Evaluating: the agent's evaluation behaviour (e.g. deterministic actions)."""
        self.mode = "eval"
        self.eval()
        if self.exploration is not None:
            self.exploration.eval_mode()

    # --- statistics ---------------------------------------------------------------------
    def update_obs_rms(self, observation: torch.Tensor) -> None:
        """Merge observations into the model's ``obs_rms`` statistics, when it keeps them."""
        rms = self.model._modules.get("obs_rms")
        if isinstance(rms, RunningStatistics):
            rms.update(observation)

    def statistics(self) -> list[RunningStatistics]:
        """The model's running statistics (``obs_rms``), which ``SyncRl`` merges across ranks."""
        model = self._modules.get("model")
        return (
            []
            if model is None
            else [m for m in model.modules() if isinstance(m, RunningStatistics)]
        )

    # --- acting -------------------------------------------------------------------------
    def step(
        self, observation: Any, prev_action: Tensor, prev_reward: Tensor, rnn_state: State = None
    ) -> StepOutput:
        """Select actions for a batch ``[B]`` of envs; returns ``(action, info)``.

        ``rnn_state`` is the recurrent state before this step (recurrent agents only, see
        ``recurrent``).
        """
        raise NotImplementedError

    def forward(self, td: TensorDictBase) -> TensorDict:
        """Training forward pass over a TensorDict of agent inputs (any batch shape)."""
        raise NotImplementedError


@runtime_checkable
class PgAgent(Protocol):
    """What A2C and PPO need of an agent (``CategoricalPgAgent``, ``GaussianPgAgent``).

    ``forward`` (``agent(td)``) writes the distribution parameters and ``value`` for every
    row; ``distribution`` turns them (or the ones the sampler stored) into a
    ``torch.distributions`` object; ``value`` is V(o) for bootstrapping.
    """

    def __call__(self, td: TensorDictBase) -> TensorDict:
        """Training forward pass: distribution parameters and ``value`` per row."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """The trained parameters."""
        ...

    def update_obs_rms(self, observation: torch.Tensor) -> None:
        """Merge observations into the running statistics (no-op without them)."""
        ...

    def distribution(self, out: TensorDictBase) -> torch.distributions.Distribution:
        """The action distribution of a forward output or of stored sample info."""
        ...

    def value(
        self, observation: Any, prev_action: Tensor, prev_reward: Tensor, rnn_state: State = None
    ) -> Tensor:
        """V(o) for a batch of agent inputs (from ``rnn_state`` for recurrent agents)."""
        ...
