"""Gymnasium environments as tdrl uses them.

``make_gym_env`` builds the raw gymnasium env (what the samplers' fast loop steps);
``make_env`` wraps it as a TorchRL env with tdrl's data contract, for users who want a
TorchRL env (rollouts, TorchRL collectors, their own loops).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from tdrl import keys
from tdrl._compat import (
    Compose,
    DoubleToFloat,
    EnvBase,
    GymWrapper,
    RenameTransform,
    Transform,
    TransformedEnv,
)
from tdrl.envs.partial import CARTPOLE_NO_VEL_ID, register_partial_envs
from tdrl.envs.transforms import PrevActionReward


def _register_extras(env_id: str) -> None:
    """Register envs on first use: ale-py's ``ALE/`` ids (slow import), tdrl's own ids.

    tdrl's own: the partially observed envs of ``tdrl.envs.partial``.
    """
    if env_id == CARTPOLE_NO_VEL_ID:
        register_partial_envs()
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


#: What a sampler's ``env_fn`` may return, for error messages.
SUPPORTED_ENVS = (
    "a gymnasium.Env, a TorchRL GymWrapper/GymEnv over one, or a tdrl.envs.make_env(...) env "
    "whose only transforms are the ones make_env adds"
)


def _is_make_env_transform(transform: Transform) -> bool:
    """Whether ``transform`` is one ``make_env`` adds, whose effect the samplers reproduce.

    The samplers store float64 as float32 (``DoubleToFloat``), nest the entries of a
    ``Dict`` observation under ``"observation"`` (that ``RenameTransform``) and add
    ``prev_action``/``prev_reward`` themselves (``PrevActionReward``).
    """
    if isinstance(transform, DoubleToFloat | PrevActionReward):
        return True
    if isinstance(transform, RenameTransform):
        in_keys = list(transform.in_keys)
        return list(transform.out_keys) == [(keys.OBSERVATION, k) for k in in_keys]
    return False


def _transforms(env: TransformedEnv) -> list[Transform]:
    """Every transform of ``env`` (a ``Compose`` flattened), outermost env last."""
    pending: list[Transform] = [env.transform]
    found: list[Transform] = []
    while pending:
        transform = pending.pop(0)
        if isinstance(transform, Compose):
            pending = list(transform) + pending
        else:
            found.append(transform)
    return found


def unwrap_gym_env(env: Any, *, source: str | None = None) -> gym.Env:
    """The gymnasium env that gives ``env``'s data: itself, or the one a TorchRL env wraps.

    For code that wants tdrl's gymnasium fast loop under a TorchRL env (the samplers
    themselves step a TorchRL env through its own ``step``, transforms included, see
    ``tdrl.samplers.torchrl_loop``). A TorchRL env is unwrapped only where stepping the
    gymnasium env underneath gives the same data: a ``GymWrapper`` (or ``GymEnv``) without
    frame skipping or pixel rendering, possibly inside the ``TransformedEnv`` that
    ``make_env`` builds. Any other TorchRL transform (reward scaling, observation
    normalisation, frame stacking, step counting, ...) would be dropped silently, so such an
    env is refused; put that processing in a gymnasium wrapper (``gymnasium.wrappers``),
    or give the TorchRL env itself to a sampler.

    Args:
        env: what an ``env_fn`` returned.
        source: what produced ``env`` (``"make_cartpole(**env_kwargs)"``), for the message;
            None when ``env`` was given directly.

    Returns:
        The gymnasium env to step.

    Raises:
        TypeError: ``env`` is not one of the supported kinds (see ``SUPPORTED_ENVS``); the
            message says what it is and what would be lost.
    """
    found = _gym_env_under(env)
    if isinstance(found, gym.Env):
        return found
    what, why = found
    if source is None:
        raise TypeError(f"tdrl's gymnasium loop cannot step {what}: {why}")
    raise TypeError(
        f"env_fn must return an env tdrl's gymnasium loop can step; {source} returned {what}: {why}"
    )


def fast_path_env(env: Any) -> Any:
    """``env``, or the gymnasium env inside it when it is a TorchRL env that adds nothing.

    The samplers choose their path with this: a ``GymWrapper``/``GymEnv`` (no frame
    skipping, no pixels), bare or behind only the transforms ``make_env`` adds, gives the
    data of the gymnasium env underneath, which their fast loop steps (CartPole: ~7x the
    TorchRL path, see docs/torchrl.md); any other env is returned as it is.
    """
    if not isinstance(env, EnvBase) or env.batch_size:
        return env
    found = _gym_env_under(env)
    return found if isinstance(found, gym.Env) else env


def _gym_env_under(env: Any) -> gym.Env | tuple[str, str]:
    """The gymnasium env to step for ``env``, or ``(what env is, why it is refused)``."""
    if isinstance(env, gym.Env):
        return env
    if not isinstance(env, EnvBase):
        return _describe(env), f"expected {SUPPORTED_ENVS}"
    base = env
    transforms: list[Transform] = []
    while isinstance(base, TransformedEnv):
        transforms = _transforms(base) + transforms
        base = base.base_env
    foreign = [type(t).__name__ for t in transforms if not _is_make_env_transform(t)]
    if foreign:
        return (
            f"a TorchRL TransformedEnv with the transforms {', '.join(foreign)}",
            "stepping the gymnasium env underneath would drop them; do that processing "
            f"with gymnasium wrappers, return {SUPPORTED_ENVS}, or give the TorchRL env to a "
            "sampler as it is (the samplers step it, transforms included)",
        )
    inner = getattr(base, "_env", None) if isinstance(base, GymWrapper) else None
    if not isinstance(inner, gym.Env):
        return (
            f"the TorchRL env {type(base).__name__}",
            f"no gymnasium env inside; expected {SUPPORTED_ENVS}",
        )
    frame_skip, from_pixels = getattr(base, "frame_skip", 1), getattr(base, "from_pixels", False)
    if frame_skip != 1 or from_pixels:
        return (
            f"a TorchRL {type(base).__name__} with frame_skip={frame_skip}, "
            f"from_pixels={from_pixels}",
            "stepping the gymnasium env underneath would ignore them; use "
            "gymnasium wrappers (e.g. AddRenderObservation) or tdrl's AtariEnv(frame_skip=)",
        )
    return inner


def _describe(value: Any) -> str:
    """A short description of ``value`` for an error message (type, and the value if small)."""
    text = " ".join(repr(value).split())
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}" if value is not None else "None"
