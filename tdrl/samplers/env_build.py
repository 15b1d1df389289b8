"""Building a sampler's envs from its factory, and the checks that go with it.

``make_envs`` calls ``env_fn(**env_kwargs)`` once per column (or per batched TorchRL env of
``B'`` columns) and refuses, in one line naming the factory, what a sampler cannot step:
``None``, a dict, a gymnasium ``VectorEnv`` (with the two ways to use one), a TorchRL env
batched over several dims, a mix of kinds, the same env object returned twice (every column
would step one env), or ``env_kwargs`` that do not fit the factory's signature
(``tdrl.samplers.base.check_env_kwargs``, which ``SamplerSettings`` calls).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym

from tdrl._compat import EnvBase
from tdrl.envs.gym import fast_path_env
from tdrl.samplers.base import callable_name
from tdrl.utils.checks import ArgumentError

__all__ = [
    "check_columns",
    "close_env",
    "env_source",
    "make_envs",
    "make_example_env",
]


def make_envs(
    env_fn: Callable[..., Any], env_kwargs: dict[str, Any], n: int, *, name: str = "batch_B"
) -> list[Any]:
    """Build the envs of ``n`` sampler columns from the factory.

    The factory returns gymnasium envs (``n`` of them are built) or TorchRL envs
    (``EnvBase``): of batch size ``[]`` (``n`` built) or batched, ``[B']`` (``n / B'`` built).

    Args:
        env_fn: the factory.
        env_kwargs: its keyword arguments.
        n: the columns the envs fill.
        name: the argument ``n`` comes from, for messages (``batch_B``, ``eval_n_envs``).

    Raises:
        TypeError: ``env_fn`` returned something a sampler cannot step (``None``, a dict,
            a TorchRL env batched over several dims, ...), or a mix; the message names
            ``env_fn`` and what it returned.
        ArgumentError: ``n`` is not a multiple of a batched env's ``B'``, naming ``name``.
    """
    first, columns = make_example_env(env_fn, env_kwargs)
    envs: list[Any] = [first]
    try:
        check_columns(name, n, columns, env_fn)
        for _ in range(n // columns - 1):
            env = fast_path_env(env_fn(**env_kwargs))
            if any(env is built for built in envs):  # every column would step one env
                raise TypeError(
                    f"env_fn must build a new env at each call; {env_source(env_fn)} returned "
                    f"the same {type(env).__name__} object again"
                )
            envs.append(env)
            if type(env) is not type(first) or _columns(env, env_fn) != columns:
                raise TypeError(
                    f"env_fn must return envs of one kind; {env_source(env_fn)} returned a "
                    f"{type(first).__name__} then a {type(env).__name__}"
                )
    except BaseException:
        for built in envs:
            close_env(built)
        raise
    return envs


def make_example_env(env_fn: Callable[..., Any], env_kwargs: dict[str, Any]) -> tuple[Any, int]:
    """One env from the factory, checked, and the sampler columns it fills.

    Raises:
        TypeError: as ``make_envs``.
    """
    env = fast_path_env(env_fn(**env_kwargs))
    try:
        return env, _columns(env, env_fn)
    except BaseException:
        close_env(env)
        raise


def close_env(env: Any) -> None:
    """Close a gymnasium or TorchRL env (a batched TorchRL env only once it started)."""
    if isinstance(env, EnvBase):
        if not env.is_closed:
            env.close()
    elif isinstance(env, gym.Env):
        env.close()


def check_columns(name: str, n: int, columns: int, env_fn: Callable[..., Any]) -> None:
    """Refuse ``n`` columns that batched envs of ``columns`` columns cannot fill.

    Raises:
        ArgumentError: naming ``name``, ``n`` and the env's batch size.
    """
    if n % columns:
        raise ArgumentError(
            f"{name}={n} is not a multiple of {columns}: {env_source(env_fn)} returns batched "
            f"TorchRL envs of batch size [{columns}], each filling {columns} columns"
        )


def env_source(env_fn: Callable[..., Any]) -> str:
    """How messages name a call of ``env_fn``: ``"make_env(**env_kwargs)"``."""
    return f"{callable_name(env_fn)}(**env_kwargs)"


def _columns(env: Any, env_fn: Callable[..., Any]) -> int:
    """Buffer columns ``env`` fills, or a ``TypeError`` when a sampler cannot step it."""
    if isinstance(env, gym.Env):
        return 1
    if isinstance(env, EnvBase):
        if len(env.batch_size) > 1:
            raise TypeError(
                f"env_fn must return envs of batch size [] or [B']; {env_source(env_fn)} "
                f"returned a {type(env).__name__} of batch size {list(env.batch_size)}"
            )
        return int(env.batch_size[0]) if env.batch_size else 1
    text = " ".join(repr(env).split())
    what = "None" if env is None else f"{type(env).__name__} {text[:57]}"
    hint = ""
    if isinstance(env, gym.vector.VectorEnv):
        hint = (
            " (for a VectorEnv: give env_fn the one-env factory and batch_B its num_envs, or "
            "wrap it in TorchRL's GymWrapper with autoreset_mode=SAME_STEP)"
        )
    raise TypeError(
        f"env_fn must return an env tdrl's samplers can step; {env_source(env_fn)} returned "
        f"{what}: expected a gymnasium.Env or a TorchRL EnvBase{hint}"
    )
