"""Gymnasium environments as tdrl uses them.

``make_gym_env`` builds the raw gymnasium env (what the samplers' fast loop steps);
``make_env`` wraps it as a TorchRL env with tdrl's data contract, for users who want a
TorchRL env (rollouts, TorchRL collectors, their own loops).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from tdrl import keys
from tdrl._compat import Compose, DoubleToFloat, GymWrapper, RenameTransform, TransformedEnv
from tdrl.envs.transforms import PrevActionReward


def _register_extras(env_id: str) -> None:
    """Register ale-py's envs on first use of an ``ALE/`` id (the import is slow)."""
    if env_id.startswith("ALE/") and "ALE/Pong-v5" not in gym.registry:
        try:
            import ale_py
        except ImportError as e:
            raise ImportError(
                f'environment {env_id!r} needs ale-py: pip install "tdrl[atari]"'
            ) from e
        gym.register_envs(ale_py)


def make_gym_env(id: str, **kwargs: Any) -> gym.Env:  # noqa: A002 - gymnasium's name
    """``gymnasium.make(id, **kwargs)`` with errors that name what was wrong.

    Args:
        id: a registered gymnasium id (``"CartPole-v1"``, ``"HalfCheetah-v5"``,
            ``"ALE/Pong-v5"``, or any id your own code registered).
        **kwargs: passed to ``gymnasium.make`` (e.g. ``max_episode_steps``) and on to the
            env's constructor.

    Returns:
        The gymnasium env.

    Raises:
        ValueError: ``id`` is not a registered environment.
        TypeError: ``id`` is not a string, or a keyword argument is not accepted.
        ImportError: the env needs an optional dependency (MuJoCo, ale-py).
    """
    if not isinstance(id, str):
        raise TypeError(f"make_env: id must be a gymnasium id string, got {id!r}")
    _register_extras(id)
    try:
        return gym.make(id, **kwargs)
    except gym.error.DependencyNotInstalled as e:
        raise ImportError(
            f"environment {id!r} needs an optional dependency ({e}); "
            'try pip install "tdrl[mujoco]" or "tdrl[atari]"'
        ) from e
    except gym.error.Error as e:
        raise ValueError(f"make_env: unknown environment id {id!r} ({e})") from e
    except TypeError as e:
        if "unexpected keyword argument" in str(e) or "got an unexpected" in str(e):
            raise TypeError(
                f"make_env({id!r}): keyword argument not accepted by the environment: {e}"
            ) from e
        raise


def make_env(id: str | gym.Env, *, seed: int | None = None, **kwargs: Any) -> TransformedEnv:  # noqa: A002
    """A TorchRL env for a gymnasium id, following tdrl's data contract.

    The env's observation sits under ``"observation"`` (a gymnasium ``Dict`` space becomes a
    nested ``Composite`` under that key, handed to the model untouched); float64 entries
    become float32; discrete actions are integer indices; ``prev_action`` and
    ``prev_reward`` are added as inputs (null action and zero reward after every reset);
    ``("next", "terminated")`` and ``("next", "truncated")`` are kept apart.

    Args:
        id: a gymnasium id, or an already built gymnasium env.
        seed: seeds the env when given.
        **kwargs: passed to ``gymnasium.make``.

    Returns:
        A ``TransformedEnv`` over TorchRL's ``GymWrapper``.
    """
    gym_env = id if isinstance(id, gym.Env) else make_gym_env(id, **kwargs)
    base = GymWrapper(gym_env, categorical_action_encoding=True)
    transforms = []
    if isinstance(gym_env.observation_space, gym.spaces.Dict):
        names = list(gym_env.observation_space.spaces)
        transforms.append(
            RenameTransform(
                in_keys=names,
                out_keys=[(keys.OBSERVATION, name) for name in names],
                create_copy=False,
            )
        )
    transforms.append(DoubleToFloat())
    transforms.append(PrevActionReward())
    env = TransformedEnv(base, Compose(*transforms))
    if seed is not None:
        env.set_seed(seed)
    return env


def unwrap_gym_env(env: Any) -> gym.Env:
    """The gymnasium env behind ``env``: itself, or the one a ``make_env`` env wraps.

    Raises:
        TypeError: ``env`` is neither a gymnasium env nor a TorchRL env wrapping one.
    """
    if isinstance(env, gym.Env):
        return env
    base = getattr(env, "base_env", env)
    inner = getattr(base, "_env", None)
    if isinstance(inner, gym.Env):
        return inner
    raise TypeError(
        "env_fn must return a gymnasium.Env or a tdrl.envs.make_env(...) env, got "
        f"{type(env).__name__}"
    )
