"""What the discrete-action agents ask of the env's spaces, and index observations.

``discrete_action_count`` is the check every discrete-action agent (the policy-gradient
``CategoricalPgAgent``, the DQN family, R2D1) makes of its action space;
``with_index_observations`` puts ``tdrl.models.one_hot.OneHotObservation`` in front of a
default model when the observation is a state index (a gymnasium ``Discrete`` space).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tdrl._compat import Binary, Categorical, MultiCategorical, TensorSpec, Unbounded
from tdrl.models.one_hot import one_hot_observations
from tdrl.models.running_mean_std import RunningMeanStd

__all__ = [
    "check_action_values",
    "check_channels_first",
    "discrete_action_count",
    "with_index_observations",
]


def _is_discrete(spec: TensorSpec) -> bool:
    """Gymnasium's ``Discrete``: not ``MultiDiscrete``, nor TorchRL's ``Binary``."""
    return isinstance(spec, Categorical) and not isinstance(spec, MultiCategorical | Binary)


def _is_state_index(spec: TensorSpec) -> bool:
    """A ``Discrete`` observation: one index per step (shape ``()``)."""
    return _is_discrete(spec) and tuple(spec.shape) == ()


def discrete_action_count(action_spec: TensorSpec, who: str, hint: str = "") -> int:
    """The number of actions of a gymnasium ``Discrete`` action spec.

    Raises:
        TypeError: naming ``who`` (and ending with ``hint``) for any other spec,
            ``MultiDiscrete`` included.
    """
    if _is_discrete(action_spec):
        return int(action_spec.space.n)
    name = type(action_spec).__name__
    got = {"MultiCategorical": "MultiDiscrete", "BoundedContinuous": "Box"}.get(name, name)
    raise TypeError(
        f"{who} needs a Discrete action space, got {got}" + (f"; {hint}" if hint else "")
    )


def check_action_values(values: torch.Tensor, n: int, who: object) -> torch.Tensor:
    """``values`` (logits or Q-values, actions last) if there is one per action of the env.

    Raises:
        ValueError: naming ``who`` (an agent), for another count: a model built for another
            env would otherwise act out of the action space, or learn on a phantom action.
    """
    if values.shape[-1] != n:
        raise ValueError(
            f"{type(who).__name__}'s model gives {values.shape[-1]} action values (its output "
            f"is {list(values.shape)}); the env has {n} actions"
        )
    return values


def check_channels_first(shape: tuple[int, ...], who: str) -> None:
    """Refuse an ``[H, W, C]`` image where the default conv models take ``[C, H, W]``.

    Gymnasium's ``ALE/...`` ids and rendered frames are laid out ``[H, W, C]``.

    Raises:
        TypeError: naming ``who``, the shape and the ways out.
    """
    if len(shape) == 3 and shape[-1] in (1, 3, 4) and shape[0] > 4:
        raise TypeError(
            f"{who}'s default conv model takes [C, H, W] frames; the observation {shape} looks "
            "like an [H, W, C] image: for Atari use tdrl's preprocessing (--env atari:pong, "
            "tdrl.envs.AtariEnv), otherwise move the channels first (e.g. gymnasium's "
            "AtariPreprocessing + FrameStackObservation) or pass model="
        )


def with_index_observations(
    observation_spec: TensorSpec, build: Callable[[TensorSpec], nn.Module]
) -> nn.Module:
    """``build(observation_spec)``, one-hot encoded for a state index.

    For a ``Discrete(n)`` observation: ``build`` of ``n``-vectors behind
    ``tdrl.models.one_hot.one_hot_observations`` (the batches keep the index).
    """
    if not _is_state_index(observation_spec):
        return build(observation_spec)
    n = int(observation_spec.space.n)
    model = build(Unbounded(shape=(n,), dtype=torch.float32))
    if any(isinstance(m, RunningMeanStd) for m in model.modules()):
        raise TypeError(
            "normalize_observation does not apply to a Discrete observation (a state index, "
            "one-hot encoded); leave it off"
        )
    return one_hot_observations(model, n)
