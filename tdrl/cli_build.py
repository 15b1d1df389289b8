"""What ``tdrl train`` and ``tdrl eval`` build for an (``--algo``, ``--env``) pair.

The algorithm tables, the algorithm and agent of a pair, and the env factory of an
``--env``.

Imports torch, gymnasium and the roles only when called, so that ``import tdrl.cli``
stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tdrl.utils.checks import ArgumentError
from tdrl.utils.meta_env_names import META_ENV_NAMES

if TYPE_CHECKING:  # imported only when a command runs
    from tdrl.agents import Agent
    from tdrl.algos import Algorithm

PG_ALGOS = ("a2c", "ppo")
DQN_ALGOS = ("dqn", "catdqn", "rainbow", "r2d1")
QPG_ALGOS = ("ddpg", "td3", "sac", "sac_v")
META_ALGOS = ("pearl",)
ALGOS = PG_ALGOS + DQN_ALGOS + QPG_ALGOS + META_ALGOS
#: The meta-RL task families (``tdrl.envs.meta.META_ENV_NAMES``).
META_ENVS = META_ENV_NAMES
#: Steps of ``--n-steps`` when not given (PEARL: the preset's iterations instead).
DEFAULT_N_STEPS = 100_000
#: Sampler shape when --batch-T/--batch-B are not given.
DEFAULT_BATCH = {
    "a2c": (128, 8),
    "ppo": (128, 8),
    "dqn": (4, 8),
    "catdqn": (4, 8),
    "rainbow": (4, 8),
    "r2d1": (40, 8),  # a multiple of R2D1's store_rnn_state_interval
    "ddpg": (100, 1),
    "td3": (100, 1),
    "sac": (100, 1),
    "sac_v": (100, 1),
}


def _make_algo_agent(
    name: str,
    kwargs: dict[str, Any],
    env_id: str,
    *,
    recurrent: bool = False,
    agent_kwargs: dict[str, Any] | None = None,
) -> tuple[Algorithm, Agent]:
    """The algorithm ``name`` with hyperparameters ``kwargs`` and an agent for the env.

    ``recurrent`` asks for an LSTM agent (policy-gradient algorithms only);
    ``agent_kwargs`` are the agent's arguments (``--agent-arg``, checked by name).
    """
    agent_kwargs = dict(agent_kwargs or {})

    def make(cls: Callable[..., Agent], **fixed: Any) -> Agent:
        import inspect

        known = [p for p in inspect.signature(cls).parameters if p not in fixed and p != "model"]
        owner = getattr(cls, "__name__", str(cls))
        pairs = list(agent_kwargs.items())
        return cls(**fixed, **_flag_kwargs("--agent-arg", pairs, known, owner))

    import gymnasium as gym

    from tdrl.agents import (
        CategoricalPgAgent,
        DdpgAgent,
        DqnAgent,
        GaussianPgAgent,
        R2d1Agent,
        SacAgent,
        SacVAgent,
        Td3Agent,
    )
    from tdrl.algos import (
        A2C,
        DDPG,
        DQN,
        PPO,
        R2D1,
        SAC,
        SAC_V,
        TD3,
        CategoricalDQN,
        rainbow_minus_noisy,
    )

    env_fn, env_kwargs = _env_fn(env_id)
    env = env_fn(**env_kwargs)
    try:
        space = env.action_space
    finally:
        env.close()
    if name == "r2d1":  # recurrent by construction (--recurrent changes nothing)
        if not isinstance(space, gym.spaces.Discrete):
            raise ValueError(
                f"--algo r2d1 needs a Discrete action space, but --env {env_id} has {space}"
            )
        return R2D1(**kwargs), make(R2d1Agent)
    if recurrent and name not in PG_ALGOS:
        raise ValueError(
            f"--recurrent applies to {', '.join(PG_ALGOS)} (an LSTM policy), not --algo {name}"
        )
    if name in PG_ALGOS:
        algo = {"a2c": A2C, "ppo": PPO}[name](**kwargs)
        if isinstance(space, gym.spaces.Discrete):
            return algo, make(CategoricalPgAgent, recurrent=recurrent)
        if isinstance(space, gym.spaces.Box):
            return algo, make(GaussianPgAgent, recurrent=recurrent)
        raise ValueError(
            f"--algo {name} needs a Discrete or Box action space, but --env {env_id} has {space}"
        )
    if name in QPG_ALGOS:
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(
                f"--algo {name} needs a Box action space, but --env {env_id} has {space}"
            )
        if name == "ddpg":
            return DDPG(**kwargs), make(DdpgAgent)
        if name == "td3":
            return TD3(**kwargs), make(Td3Agent)
        if name == "sac_v":
            return SAC_V(**kwargs), make(SacVAgent)
        return SAC(**kwargs), make(SacAgent)
    if not isinstance(space, gym.spaces.Discrete):
        raise ValueError(
            f"--algo {name} needs a Discrete action space, but --env {env_id} has {space}"
        )
    if name == "rainbow":
        return rainbow_minus_noisy(algo_kwargs=kwargs, agent_kwargs=agent_kwargs)
    if name == "catdqn":
        return CategoricalDQN(**kwargs), make(DqnAgent, n_atoms=51)
    return DQN(**kwargs), make(DqnAgent)


def _algo_kwargs(name: str, pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """The ``--algo-arg`` pairs as keyword arguments of the algorithm ``name``.

    Raises:
        ArgumentError: A name given twice, or one the algorithm does not take (the message
            lists the arguments it takes).
    """
    import inspect

    from tdrl.algos import A2C, DDPG, DQN, PEARL, PPO, R2D1, SAC, SAC_V, TD3, CategoricalDQN

    classes = {"a2c": A2C, "ppo": PPO, "dqn": DQN, "catdqn": CategoricalDQN}
    classes |= {"rainbow": CategoricalDQN, "ddpg": DDPG, "td3": TD3, "sac": SAC, "sac_v": SAC_V}
    classes |= {"r2d1": R2D1, "pearl": PEARL}
    cls = classes[name]
    known = [p for p in inspect.signature(cls).parameters]
    return _flag_kwargs("--algo-arg", pairs, known, f"--algo {name} ({cls.__name__})")


def _flag_kwargs(
    flag: str, pairs: Sequence[tuple[str, Any]], known: Sequence[str], owner: str
) -> dict[str, Any]:
    """``NAME=VALUE`` pairs of ``flag`` as keyword arguments of ``owner``, which takes ``known``.

    Raises:
        ArgumentError: A name given twice, or one not in ``known`` (the message lists them).
    """
    kwargs: dict[str, Any] = {}
    for key, value in pairs:
        if key in kwargs:
            raise ArgumentError(f"{flag} {key} is given twice")
        if key not in known:
            raise ArgumentError(
                f"{flag} {key} is not an argument of {owner}; it takes: {', '.join(known)}"
            )
        kwargs[key] = value
    return kwargs


def _env_fn(env_id: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """``(env_fn, env_kwargs)`` for a gymnasium id or ``atari:GAME``."""
    from tdrl.envs import make_atari_env, make_gym_env

    if env_id.startswith("atari:"):
        return make_atari_env, {"game": env_id.split(":", 1)[1]}
    return make_gym_env, {"id": env_id}


def _env_settings(
    env_id: str, extra_kwargs: dict[str, Any] | None = None
) -> tuple[Callable[..., Any], dict[str, Any], dict[str, Any], type]:
    """``(env_fn, env_kwargs, eval_env_kwargs, traj_info_cls)`` of an ``--env``.

    ``extra_kwargs`` (a preset's ``env_kwargs``) update both kwargs. Atari evaluates whole
    games (``episodic_lives=False``) and records ``GameScore`` (``AtariTrajInfo``), as
    ``tdrl train`` and ``tdrl eval`` both do.
    """
    from tdrl.envs import AtariTrajInfo, TrajInfo

    env_fn, env_kwargs = _env_fn(env_id)
    env_kwargs |= dict(extra_kwargs or {})
    if env_id.startswith("atari:"):
        return env_fn, env_kwargs, {**env_kwargs, "episodic_lives": False}, AtariTrajInfo
    return env_fn, env_kwargs, dict(env_kwargs), TrajInfo
