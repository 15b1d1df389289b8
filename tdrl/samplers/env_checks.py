"""Checks of a gymnasium env's first ``reset`` and ``step`` outputs against its spaces.

The gymnasium loop (``tdrl.samplers.env_loop.EnvRunner``) writes each output straight into
NumPy views of the batch, where a malformed one either fails with a message about arrays
(``setting an array element with a sequence``) or, worse, is stored silently wrong: a
reward of ``None`` becomes NaN, a ``terminated`` of ``"no"`` becomes True. The first reset
and the first step of each env are checked here instead (later ones are not: the loop
stays as fast as the raw env), with a one-line ``EnvOutputError`` naming the env's column
and class, the output, and what was expected:

* ``reset()`` returns ``(observation, info)`` and ``step()`` returns ``(observation,
  reward, terminated, truncated, info)`` (gymnasium >= 0.26; the old gym API is named);
* each observation leaf (nested ``Dict`` spaces included) is numeric with the shape of its
  space;
* ``reward`` is a real number (a Python, NumPy or 0-d torch scalar, or a 0-d array);
* ``terminated`` and ``truncated`` are booleans (``bool``, ``numpy.bool_``, a 0-d bool
  array or tensor, or 0 / 1);
* ``info`` is a dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tdrl._compat import Composite, TensorSpec

__all__ = ["EnvOutputError", "check_reset_output", "check_step_output"]


class EnvOutputError(ValueError, TypeError):
    """An env returned something the gymnasium API (or its own spaces) does not allow."""


def _name(env: Any, column: int) -> str:
    inner = getattr(env, "unwrapped", env)
    return f"env column {column} ({type(inner).__name__})"


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, tuple):
        return f"a {len(value)}-tuple"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"{type(value).__name__} {value!r:.60}"


def check_reset_output(out: Any, env: Any, column: int, observation_spec: TensorSpec) -> None:
    """Check a ``reset()`` output (module docstring); raises ``EnvOutputError``."""
    where = f"{_name(env, column)}: reset()"
    if not isinstance(out, tuple) or len(out) != 2:
        raise EnvOutputError(
            f"{where} returned {_kind(out)}; expected (observation, info), gymnasium's API "
            "since 0.26 (an old gym env returns the observation alone: port it, or wrap it "
            "with shimmy)"
        )
    _check_observation(out[0], observation_spec, where)
    _check_info(out[1], where)


def check_step_output(out: Any, env: Any, column: int, observation_spec: TensorSpec) -> None:
    """Check a ``step()`` output (module docstring); raises ``EnvOutputError``."""
    where = f"{_name(env, column)}: step()"
    if not isinstance(out, tuple) or len(out) != 5:
        old = isinstance(out, tuple) and len(out) == 4
        raise EnvOutputError(
            f"{where} returned {_kind(out)}; expected (observation, reward, terminated, "
            "truncated, info), gymnasium's API since 0.26"
            + (" (4 values is the old gym API: port it, or wrap it with shimmy)" if old else "")
        )
    observation, reward, terminated, truncated, info = out
    _check_observation(observation, observation_spec, where)
    if not _is_real(reward):
        raise EnvOutputError(f"{where} returned reward = {_kind(reward)}; expected a real number")
    for name, flag in (("terminated", terminated), ("truncated", truncated)):
        if not _is_flag(flag):
            raise EnvOutputError(f"{where} returned {name} = {_kind(flag)}; expected a bool")
    _check_info(info, where)


def _scalar_kind(value: Any) -> str:
    """The NumPy dtype kind of a 0-d value (Python, NumPy or torch), "" for anything else."""
    try:
        array = np.asarray(value)
    except Exception:
        return ""
    return array.dtype.kind if array.ndim == 0 else ""


def _is_real(value: Any) -> bool:
    return _scalar_kind(value) in tuple("biuf")


def _is_flag(value: Any) -> bool:
    kind = _scalar_kind(value)
    return kind == "b" or (kind in ("i", "u") and np.asarray(value).item() in (0, 1))


def _check_info(info: Any, where: str) -> None:
    if not isinstance(info, Mapping):
        raise EnvOutputError(f"{where} returned info = {_kind(info)}; expected a dict")


def _check_observation(observation: Any, spec: TensorSpec, where: str) -> None:
    """Each leaf of ``spec`` is in ``observation``, numeric, with the spec's shape."""
    if isinstance(spec, Composite):
        leaves = [(k if isinstance(k, tuple) else (k,)) for k in spec.keys(True, True)]
    else:
        leaves = [()]
    for path in leaves:
        value = observation
        for i, k in enumerate(path):
            if not isinstance(value, Mapping) or k not in value:
                found = sorted(value) if isinstance(value, Mapping) else _kind(value)
                raise EnvOutputError(
                    f"{where} returned an observation without {'/'.join(path[: i + 1])!r} "
                    f"(found {found}); its observation space has it"
                )
            value = value[k]
        label = "observation" + "".join(f"[{k!r}]" for k in path)
        shape = tuple(spec[path].shape if path else spec.shape)
        array = np.asarray(value) if not isinstance(value, np.ndarray) else value
        if array.dtype.kind not in "biuf":
            raise EnvOutputError(f"{where} returned {label} = {_kind(value)}; expected numbers")
        if array.shape != shape:
            raise EnvOutputError(
                f"{where} returned {label} of shape {array.shape}; its observation space "
                f"says {shape}"
            )
