"""TorchRL envs batched for TorchRL's collectors (``tdrl.samplers.CollectorSampler``).

A TorchRL transform costs a call per env and step inside a ``SerialEnv``'s envs and one
call per batched step outside it, so ``batched_env`` puts the transforms a sampler adds
(``DoubleToFloat``, ``PrevActionReward``, a recurrent agent's ``InitTracker`` and state
primer) outside the batch of plain ``gym_env`` envs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from tdrl._compat import Compose, EnvBase, GymEnv, SerialEnv, Transform, TransformedEnv


def gym_env(id: str, **kwargs: Any) -> EnvBase:  # noqa: A002 - gymnasium's name
    """TorchRL's ``GymEnv(id)`` with integer (not one-hot) discrete actions.

    ``CollectorSampler``'s default env: no transform of its own, so a ``SerialEnv`` of them
    steps the gymnasium envs with one TorchRL call each (the sampler adds ``DoubleToFloat``
    and ``PrevActionReward`` once, outside the batch).

    Args:
        id: a registered gymnasium id.
        **kwargs: passed to ``GymEnv`` (and on to ``gymnasium.make``).
    """
    return GymEnv(id, categorical_action_encoding=True, **kwargs)


def has_float64(env: EnvBase) -> bool:
    """Whether an observation or reward entry of ``env`` is float64 (tdrl stores float32)."""
    specs = (env.observation_spec, env.full_reward_spec)
    return any(spec[k].dtype == torch.float64 for spec in specs for k in spec.keys(True, True))


def batched_env(
    env_fn: Callable[..., EnvBase],
    env_kwargs: dict[str, Any],
    *,
    n_envs: int,
    batched: bool,
    transforms: list[Transform],
) -> EnvBase:
    """``n_envs`` envs of ``env_fn`` as one TorchRL env, with ``transforms`` outside.

    Module-level, so that a ``functools.partial`` of it pickles into the worker processes of
    TorchRL's multi-process collectors.

    Args:
        env_fn: builds one env (or, with ``batched``, all ``n_envs``).
        env_kwargs: its keyword arguments.
        n_envs: envs of this collector.
        batched: ``env_fn`` returns an env of batch size ``[n_envs]``.
        transforms: appended outside the batch (copies are used).

    Returns:
        ``SerialEnv(n_envs, env_fn)`` (or the batched env) inside a ``TransformedEnv`` when
        there are transforms.
    """
    factory = functools.partial(env_fn, **env_kwargs)
    env = factory() if batched else SerialEnv(n_envs, factory)
    if not transforms:
        return env
    return TransformedEnv(env, Compose(*[t.clone() for t in transforms]))
