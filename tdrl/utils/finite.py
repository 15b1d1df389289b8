"""The non-finite guard: NaN or infinity never trained silently.

A NaN reward or observation from an env, or a NaN/inf loss or gradient in an update, turns
every weight into NaN within a few steps, and the run then "trains" on garbage. tdrl checks
at four places, each once per batch or per update (a few vectorised reductions, never a
Python loop over elements), and stops with one line naming what, where and when:

* the sampler checks each batch's rewards and observations (``check_finite_samples``): the
  message names the key, the env column ``b`` and the time step ``t``;
* an agent that fails on its inputs while sampling (a categorical policy given a NaN
  observation raises inside ``torch.multinomial``) is reported the same way, when its
  inputs hold a non-finite value (``nonfinite_inputs``);
* every gradient step (``tdrl.utils.optim.clipped_step``) checks the loss and the gradient
  norms *before* the optimizer steps, so the parameters are never stepped with a
  non-finite gradient (``tdrl.utils.optim.check_finite_step``);
* the runner checks each iteration's diagnostics and the agent's parameters before it
  logs or snapshots them (``nonfinite_diagnostics``, ``nonfinite_parameters``), which
  covers compiled updates (checked after the step) and algorithms of your own.

The error is ``tdrl.utils.checks.NonFiniteError`` (a ``RuntimeError``, importable from
here too); the runner adds the iteration. What a user can switch is in
``tdrl.runners.nonfinite.NonFiniteGuard``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from tensordict import TensorDictBase

from tdrl import keys
from tdrl.utils.checks import NonFiniteError

#: What an env writes into a batch and training reads: observations and rewards.
ENV_KEYS = (keys.OBSERVATION, keys.NEXT_OBSERVATION, keys.NEXT_REWARD)

__all__ = [
    "ENV_KEYS",
    "NonFiniteError",
    "check_env_batch",
    "check_finite_samples",
    "nonfinite_diagnostics",
    "nonfinite_inputs",
    "nonfinite_parameters",
]


def _show(key: Any) -> str:
    return ".".join(key) if isinstance(key, tuple) else str(key)


def _first_bad(value: torch.Tensor) -> tuple[int, ...]:
    """Index of the first non-finite entry of ``value`` (which has one)."""
    return tuple(int(i) for i in torch.nonzero(~torch.isfinite(value))[0].tolist())


def _float_leaves(data: TensorDictBase, key: Any) -> list[tuple[Any, torch.Tensor]]:
    """``(full key, tensor)`` of the floating-point leaves under ``key`` (none if absent)."""
    value = data.get(key, None)
    if value is None:
        return []
    if isinstance(value, TensorDictBase):
        prefix = key if isinstance(key, tuple) else (key,)
        return [
            (prefix + (k if isinstance(k, tuple) else (k,)), v)
            for k, v in value.items(include_nested=True, leaves_only=True)
            if v.is_floating_point()
        ]
    return [(key, value)] if value.is_floating_point() else []


def check_finite_samples(samples: TensorDictBase, keys: Iterable[Any], *, what: str) -> None:
    """Raise ``NonFiniteError`` if a float leaf under ``keys`` of a ``[T, B]`` batch is not finite.

    One ``isfinite().all()`` per leaf; the index is looked up only when one fails.

    Args:
        samples: the batch (leading dims ``[T, B]``).
        keys: the keys to check (absent ones are skipped; nested ones are walked).
        what: who produced it, for the message (``"the env"``).
    """
    for key in keys:
        for name, value in _float_leaves(samples, key):
            if not bool(torch.isfinite(value).all()):
                index = _first_bad(value)
                bad = float(value[index])
                t, b = (*index, 0, 0)[:2]
                raise NonFiniteError(
                    f"{what} returned a non-finite {_show(name)} ({bad}) in env column b={b} "
                    f"at time step t={t} of the batch"
                )


def check_env_batch(samples: TensorDictBase) -> TensorDictBase:
    """``samples`` if its observations and rewards (``ENV_KEYS``) are finite, else raise.

    Every sampler calls it on each batch before returning it.

    Raises:
        NonFiniteError: naming the key, the env column and the time step.
    """
    check_finite_samples(samples, ENV_KEYS, what="the env")
    return samples


def nonfinite_inputs(inputs: Iterable[tuple[str, Any]]) -> str | None:
    """A description of the first non-finite agent input (None: all finite).

    Args:
        inputs: ``(name, tensor or TensorDict)`` of a time step's inputs, leading dim B.
    """
    for name, value in inputs:
        leaves = (
            [(f"{name}.{_show(k)}", v) for k, v in value.items(True, True)]
            if isinstance(value, TensorDictBase)
            else [(name, value)]
        )
        for label, leaf in leaves:
            floating = isinstance(leaf, torch.Tensor) and leaf.is_floating_point()
            if floating and not bool(torch.isfinite(leaf).all()):
                b = _first_bad(leaf)[0] if leaf.dim() else 0
                return f"a non-finite {label} in env column b={b}"
    return None


def check_agent_inputs_after(
    err: BaseException, observation: Any, prev_reward: torch.Tensor, where: str
) -> None:
    """After ``agent.step`` raised ``err``: ``NonFiniteError`` if its inputs were not finite.

    NaN observations fail deep inside torch (``multinomial``, a linear layer); this names
    the input, the env column and ``where`` (e.g. the time step) instead. Returns when
    every input was finite, for the caller to re-raise ``err``.
    """
    bad = nonfinite_inputs([("observation", observation), ("prev_reward", prev_reward)])
    if bad is not None:
        first = (str(err).splitlines() or [""])[0]
        raise NonFiniteError(
            f"the agent cannot act on {bad} {where} (the env returned it): "
            f"{type(err).__name__}: {first}"
        ) from None


def nonfinite_diagnostics(opt_info: Mapping[str, list[float]]) -> str | None:
    """The first loss or gradient-norm diagnostic of an iteration that is not finite."""
    for key, values in opt_info.items():
        if key.startswith(("loss", "grad_norm")):
            for i, v in enumerate(values):
                if not math.isfinite(float(v)):
                    return f"{key} = {v} at update {i} of the iteration"
    return None


def nonfinite_parameters(named: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The first parameter holding a non-finite value (None: all finite).

    One ``isfinite().all()`` per parameter and a single host read; names are looked up
    only when one fails.
    """
    params = list(named)
    if not params:
        return None
    finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in params]).cpu()
    if bool(finite.all()):
        return None
    return f"parameter {params[int((~finite).nonzero()[0])][0]}"
