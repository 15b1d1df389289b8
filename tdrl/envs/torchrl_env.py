"""TorchRL envs as tdrl's samplers read them: which env key goes where in a ``[T, B]`` batch.

The samplers step any TorchRL ``EnvBase`` through the env's own ``step``,
``step_and_maybe_reset`` and ``reset`` (``tdrl.samplers.torchrl_loop``), so its transforms
act as they would in a TorchRL rollout. ``torchrl_layout`` reads once, from the env's
(unbatched) specs, where each entry of the batch comes from:

* **observation**: the entries of the env's ``observation_spec``, less ``prev_action`` and
  ``prev_reward`` (the sampler records those itself, as for ``tdrl.envs.make_env`` envs)
  and the named extra keys. When exactly one entry named ``"observation"`` is left, the
  agent's observation is that entry (a tensor, or a nested ``Composite``): ``GymEnv`` gives
  the batch of the gymnasium path. Otherwise it is a ``Composite`` of all of them, nested as
  in the env (``("observation", "pos")``, ...). float64 leaves are stored as float32, as on
  the gymnasium path.
* **action**: the env's one action key. ``Categorical`` (integer indices, shape ``()`` or
  ``(1,)``; the agent sees shape ``()``), ``MultiCategorical`` and ``Bounded`` specs are
  what tdrl's agents act with; continuous actions are clipped to the bounds before the
  env steps (the stored action stays unclipped). Anything else (``OneHot``, ``Unbounded``,
  ``Binary``, several action keys) is refused.
* **reward**: the env's one reward key (among several, the one named ``"reward"``), one
  number per step, stored as ``("next", "reward")`` ``[T, B, 1]`` float32.
* **done**: the root ``done``, ``terminated`` and ``truncated`` keys. Without
  ``terminated`` the episode end is a termination; without ``truncated`` it is
  ``done and not terminated``; ``("next", "done")`` is ``terminated or truncated``.
* **extra keys**: entries the user names (``extra_keys``), declared anywhere in the env's
  observation, reward or done spec; recorded under ``("next", *key)`` with their spec.
* **columns**: an env of batch size ``[]`` fills one column of the batch, a batched env
  (``SerialEnv``, ``ParallelEnv``, a vectorized env) of batch size ``[B']`` fills ``B'``.

Every refusal is one line that names the key and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tdrl import keys
from tdrl._compat import Bounded, Categorical, Composite, EnvBase, MultiCategorical, TensorSpec
from tdrl.utils.checks import ArgumentError

#: A key as tdrl stores it: a tuple of names (``"cost"`` becomes ``("cost",)``).
Path = tuple[str, ...]

#: Observation entries the sampler records itself (``PrevActionReward`` of ``make_env``).
SAMPLER_INPUTS = (keys.PREV_ACTION, keys.PREV_REWARD)

#: Observation-spec entries that are agent inputs or recurrent state, not observations
#: (``InitTracker``'s ``is_init``, a ``TensorDictPrimer``'s ``rnn_state``).
NOT_OBSERVED = (*SAMPLER_INPUTS, keys.IS_INIT, keys.RNN_STATE)

#: Names an extra key may not start with: the batch's own ``("next", ...)`` entries.
RESERVED = (keys.OBSERVATION, keys.REWARD, keys.DONE, keys.TERMINATED, keys.TRUNCATED)


def as_path(key: Any, *, name: str = "extra_keys") -> Path:
    """``key`` (a string or a tuple of strings) as a tuple of strings.

    Raises:
        ArgumentError: ``key`` is neither, naming ``name``.
    """
    if isinstance(key, str) and key:
        return (key,)
    if isinstance(key, tuple) and key and all(isinstance(k, str) and k for k in key):
        return key
    raise ArgumentError(f"{name} entries must be strings or tuples of strings, got {key!r}")


def check_extra_keys(extra_keys: Any) -> tuple[Path, ...]:
    """The checked ``extra_keys`` argument of a sampler, as tuples of strings.

    Raises:
        ArgumentError: not a sequence of keys, a repeated key, or a key the batch already
            holds under ``"next"`` (observation, reward, done, ...).
    """
    if isinstance(extra_keys, str) or not isinstance(extra_keys, Sequence):
        raise ArgumentError(
            f"extra_keys must be a sequence of keys (e.g. ['cost']), got {extra_keys!r}"
        )
    paths = [as_path(k) for k in extra_keys]
    for path in paths:
        if path[0] in RESERVED:
            raise ArgumentError(
                f"extra_keys: {show(path)} is recorded by every sampler already (the batch holds "
                f"('next', {path[0]!r})); name other keys"
            )
    if len(set(paths)) != len(paths):
        raise ArgumentError(f"extra_keys has a repeated key: {list(extra_keys)!r}")
    return tuple(paths)


@dataclass(frozen=True)
class TorchEnvLayout:
    """Where each entry of a sampler batch comes from in a TorchRL env (module docstring).

    Attributes:
        columns: batch columns one env fills (1 for batch size ``[]``, else ``B'``).
        batch_dims: the env's batch dims (0 or 1).
        observation_keys: ``(env key, path under "observation")`` per observation leaf;
            the path is ``()`` when the observation is a single tensor.
        observation_spec: the agent's observation spec (a tensor spec or a ``Composite``).
        action_key: the env's action key.
        action_spec: the agent's action spec.
        env_action_shape: the shape of one env's action in the env.
        action_low: lower bounds continuous actions are clipped to (None: no clipping).
        action_high: upper bounds.
        reward_key: the env's reward key.
        done_key: the env's root ``done`` key (None when it has only ``terminated``).
        terminated_key: its root ``terminated`` key (None: ``done`` is a termination).
        truncated_key: its root ``truncated`` key (None: ``done and not terminated``).
        extra_specs: spec of each extra key (one env), by its path.
        device: the env's device.
    """

    columns: int
    batch_dims: int
    observation_keys: tuple[tuple[Path, Path], ...]
    observation_spec: TensorSpec
    action_key: Path
    action_spec: TensorSpec
    env_action_shape: torch.Size
    action_low: torch.Tensor | None
    action_high: torch.Tensor | None
    reward_key: Path
    done_key: Path | None
    terminated_key: Path | None
    truncated_key: Path | None
    extra_specs: dict[Path, TensorSpec] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def _leaves(spec: Composite) -> dict[Path, TensorSpec]:
    """Every leaf spec of a ``Composite``, by its path."""
    return {as_path(k, name="spec key"): spec[k] for k in spec.keys(True, True)}


def _stored(spec: TensorSpec) -> TensorSpec:
    """The spec as the batch stores it: on the CPU, float64 as float32."""
    spec = spec.clone().cpu()
    return spec.to(torch.float32) if spec.dtype == torch.float64 else spec


def _nest(leaves: dict[Path, TensorSpec]) -> Composite:
    """A ``Composite`` holding ``leaves`` at their paths."""
    out = Composite(shape=())
    for path, spec in leaves.items():
        out[path] = spec
    return out


def show(path: Path) -> str:
    """A key for a message: ``'cost'``, or ``('info', 'cost')`` when nested."""
    return repr(path[0] if len(path) == 1 else path)


def _keys_text(paths: Iterable[Path]) -> str:
    return "[" + ", ".join(show(p) for p in paths) + "]"


def _one_number(what: str, key: Path, spec: TensorSpec) -> None:
    if math.prod(spec.shape) != 1:
        raise TypeError(
            f"the env's {what} {show(key)} has shape {tuple(spec.shape)} per env; tdrl records one "
            f"{what} per env and step (name other entries in extra_keys)"
        )


def torchrl_layout(env: EnvBase, *, extra_keys: Sequence[Path] = ()) -> TorchEnvLayout:
    """Read where a sampler batch's entries come from in ``env`` (see the module docstring).

    Args:
        env: the TorchRL env (batch size ``[]`` or ``[B']``).
        extra_keys: keys to record under ``("next", *key)``, as ``check_extra_keys`` returns.

    Returns:
        The layout.

    Raises:
        TypeError: a spec tdrl cannot use (no reward key, an action spec its agents cannot
            act with, a non-tensor observation, an env batched over more than one dim); the
            message names the key.
        ArgumentError: an extra key the env does not declare (the message lists those it
            declares).
    """
    name = type(env).__name__
    if len(env.batch_size) > 1:
        raise TypeError(
            f"{name} has batch size {tuple(env.batch_size)}; tdrl's samplers step envs of "
            "batch size [] or [B'] (flatten the others, e.g. one SerialEnv of B' envs)"
        )
    observations = _leaves(env.full_observation_spec_unbatched)
    rewards = _leaves(env.full_reward_spec_unbatched)
    dones = _leaves(env.full_done_spec_unbatched)
    declared = {**observations, **rewards, **dones}
    extra_specs: dict[Path, TensorSpec] = {}
    for path in extra_keys:
        found = {p: s for p, s in declared.items() if p[: len(path)] == path}
        if not found:
            raise ArgumentError(
                f"extra_keys: {name} declares no key {show(path)}; its observation, reward and "
                f"done specs hold {_keys_text(declared)}"
            )
        for p, s in found.items():
            extra_specs[p] = _stored(s)
    reward_key = _reward_key(name, rewards)
    done_key, terminated_key, truncated_key = _done_keys(name, dones)
    for key in (reward_key, done_key, terminated_key, truncated_key):
        if key is not None and key in extra_specs:
            raise ArgumentError(f"extra_keys: {show(key)} is recorded already (reward or done)")
    pairs, obs_spec = _observations(name, observations, set(extra_specs))
    action_key, action_spec, low, high, env_shape = _action(name, env)
    return TorchEnvLayout(
        columns=int(env.batch_size[0]) if env.batch_size else 1,
        batch_dims=len(env.batch_size),
        observation_keys=pairs,
        observation_spec=obs_spec,
        action_key=action_key,
        action_spec=action_spec,
        env_action_shape=env_shape,
        action_low=low,
        action_high=high,
        reward_key=reward_key,
        done_key=done_key,
        terminated_key=terminated_key,
        truncated_key=truncated_key,
        extra_specs=extra_specs,
        device=torch.device(env.device) if env.device is not None else torch.device("cpu"),
    )


def observation_layout(env: EnvBase) -> tuple[tuple[tuple[Path, Path], ...], TensorSpec]:
    """What the agent observes of ``env``: ``(env path, batch path)`` pairs and its spec.

    The rule every sampler applies (``torchrl_layout``) and ``AgentPolicy`` too: every
    observation leaf but ``NOT_OBSERVED`` (``prev_action``, ``prev_reward``, ``is_init``,
    ``rnn_state``); when all lie under
    ``observation`` the agent gets that entry (a tensor, or a nested TensorDict), otherwise
    a ``Composite`` of them at their paths. Specs are as the batch stores them (on the CPU,
    float64 as float32).
    """
    name = type(env).__name__
    return _observations(name, _leaves(env.full_observation_spec_unbatched), set())


def _observations(
    name: str, observations: dict[Path, TensorSpec], extras: set[Path]
) -> tuple[tuple[tuple[Path, Path], ...], TensorSpec]:
    kept = {p: s for p, s in observations.items() if p[0] not in NOT_OBSERVED and p not in extras}
    for path, spec in kept.items():
        if spec.dtype is None:  # NonTensor
            raise TypeError(
                f"the env's observation {show(path)} is a non-tensor entry; tdrl stores tensors "
                "(drop it with a transform, e.g. ExcludeTransform)"
            )
    if not kept:
        raise TypeError(f"{name} declares no observation (its observation_spec is empty)")
    if {p[0] for p in kept} == {keys.OBSERVATION}:
        observation = kept.get((keys.OBSERVATION,))
        spec = (
            _stored(observation)
            if observation is not None
            else _nest({p[1:]: _stored(s) for p, s in kept.items()})
        )
        return tuple((p, p[1:]) for p in kept), spec
    return tuple((p, p) for p in kept), _nest({p: _stored(s) for p, s in kept.items()})


def reward_key(env: EnvBase) -> Path:
    """The env's reward key as the samplers read it (the one named ``reward`` among several)."""
    return _reward_key(type(env).__name__, _leaves(env.full_reward_spec_unbatched))


def _reward_key(name: str, rewards: dict[Path, TensorSpec]) -> Path:
    """The one reward key (or the one named ``"reward"`` among several)."""
    if not rewards:
        raise TypeError(
            f"{name} declares no reward key (its reward_spec is empty); tdrl's batch needs "
            "('next', 'reward')"
        )
    if len(rewards) == 1:
        (key,) = rewards
    elif (keys.REWARD,) in rewards:
        key = (keys.REWARD,)
    else:
        raise TypeError(
            f"{name} declares several reward keys {_keys_text(rewards)} and none named "
            "'reward'; tdrl records one reward (rename it, name the others in extra_keys)"
        )
    _one_number("reward", key, rewards[key])
    return key


def _done_keys(name: str, dones: dict[Path, TensorSpec]) -> tuple[Path | None, ...]:
    """The root ``done``, ``terminated`` and ``truncated`` keys (None where missing)."""
    found = {k: (k,) if (k,) in dones else None for k in (keys.DONE, keys.TERMINATED)}
    truncated = (keys.TRUNCATED,) if (keys.TRUNCATED,) in dones else None
    if found[keys.DONE] is None and found[keys.TERMINATED] is None:
        raise TypeError(
            f"{name} declares no root 'done' or 'terminated' key (done keys: "
            f"{_keys_text(dones)}); tdrl's batch needs ('next', 'done')"
        )
    for key in (found[keys.DONE], found[keys.TERMINATED], truncated):
        if key is not None:
            _one_number("done flag", key, dones[key])
    return found[keys.DONE], found[keys.TERMINATED], truncated


def _action(
    name: str, env: EnvBase
) -> tuple[Path, TensorSpec, torch.Tensor | None, torch.Tensor | None, torch.Size]:
    """The action key, the agent's action spec, clipping bounds and the env's shape."""
    actions = _leaves(env.full_action_spec_unbatched)
    if len(actions) != 1:
        raise TypeError(
            f"{name} declares {len(actions)} action keys {_keys_text(actions)}; tdrl's agents "
            "write one action"
        )
    ((key, spec),) = actions.items()
    kind = type(spec).__name__
    shape = torch.Size(spec.shape)
    if type(spec) is Categorical:  # not its subclasses Binary and MultiCategorical
        if math.prod(shape) != 1:
            raise TypeError(
                f"the env's action {show(key)} is a Categorical of shape {tuple(shape)}; tdrl's "
                "agents write one integer index per env"
            )
        n = int(spec.space.n)
        return key, Categorical(n=n, shape=(), dtype=spec.dtype), None, None, shape
    if isinstance(spec, MultiCategorical):
        return key, spec.clone().cpu(), None, None, shape
    if isinstance(spec, Bounded):
        stored = spec.clone().cpu()
        if not spec.dtype.is_floating_point:
            return key, stored, None, None, shape
        low, high = stored.space.low.clone(), stored.space.high.clone()
        return key, stored, low, high, shape
    hint = (
        "for GymEnv/GymWrapper pass categorical_action_encoding=True"
        if "OneHot" in kind
        else "give the env a Bounded action spec (continuous actions are clipped to it)"
    )
    raise TypeError(
        f"the env's action {show(key)} has a {kind} spec; tdrl's agents act with Categorical "
        f"(integer index), MultiCategorical or Bounded actions: {hint}"
    )
