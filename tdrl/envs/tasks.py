"""The task interface of multi-task envs (meta-RL, PEARL): tasks as plain data.

A task is plain data: a dict from names to floats or NumPy float arrays (a goal, a
target velocity, a table of body masses). A multi-task env (``MultiTaskEnv``) offers three
methods:

- ``sample_tasks(n, *, seed=None)`` draws ``n`` tasks from the family's distribution,
  from ``numpy.random.default_rng(seed)`` when a seed is given (reproducible) and from
  the env's own ``np_random`` otherwise. Where the reference defines a finite task set
  (cheetah-dir's ±1, ant-dir's forward/backward, sparse-point-robot's goals on the half
  circle) the draw is without replacement: a shuffled pass over the set, followed by
  further shuffled passes when ``n`` is larger than the set.
- ``set_task(task)`` makes ``task`` the current one; it lasts across resets.
- ``get_task()`` returns a copy of the current task.

``task_to_json`` turns a task into JSON-able data for logs and snapshots, and
``task_from_json`` turns it back. The families themselves live in ``tdrl.envs.meta`` (the
point robots and ``make_meta_env``) and ``tdrl.envs.meta_mujoco``; both import this module
and neither imports the other back.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from tdrl.utils.checks import ArgumentError, check_int

#: A task: names to floats or float arrays (JSON-able through ``task_to_json``).
Task = dict[str, Any]


@runtime_checkable
class MultiTaskEnv(Protocol):
    """What a meta-RL sampler or runner may rely on, beside the gymnasium env API."""

    def sample_tasks(self, n: int, *, seed: int | None = None) -> list[Task]:
        """``n`` tasks from the family's distribution (reproducible under ``seed``)."""
        ...

    def set_task(self, task: Task) -> None:
        """Makes ``task`` the current task (kept across resets)."""
        ...

    def get_task(self) -> Task:
        """A copy of the current task."""
        ...


def task_to_json(task: Mapping[str, Any]) -> dict[str, Any]:
    """A task as JSON-able data: arrays become (nested) lists, NumPy scalars floats."""
    out: dict[str, Any] = {}
    for key, value in task.items():
        array = np.asarray(value)
        out[str(key)] = array.tolist() if array.ndim else float(array)
    return out


def task_from_json(data: Mapping[str, Any]) -> Task:
    """The inverse of ``task_to_json``: lists become float64 arrays, numbers floats."""
    return {
        str(k): np.asarray(v, dtype=np.float64) if isinstance(v, list) else float(v)
        for k, v in data.items()
    }


def as_task(name: str, task: Any, keys: Collection[str]) -> Task:
    """A copy of ``task`` (floats and float64 arrays) if it has exactly ``keys``.

    Raises:
        ArgumentError: ``task`` is not a mapping with exactly ``keys``, or a value is not
            numeric.
    """
    if not isinstance(task, Mapping) or set(task) != set(keys):
        got = sorted(task) if isinstance(task, Mapping) else type(task).__name__
        raise ArgumentError(f"{name} must be a dict with keys {sorted(keys)}, got {got}")
    out: Task = {}
    for key in keys:
        try:
            value = np.array(task[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise ArgumentError(f"{name}[{key!r}] must be numeric, got {task[key]!r}") from None
        if not np.all(np.isfinite(value)):
            raise ArgumentError(f"{name}[{key!r}] must be finite, got {task[key]!r}")
        out[key] = value if value.ndim else float(value)
    return out


def copy_task(task: Task) -> Task:
    """A deep copy of a task (arrays copied)."""
    return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in task.items()}


def task_rng(env: gym.Env[Any, Any], seed: int | None) -> np.random.Generator:
    """The generator ``sample_tasks`` draws from: ``default_rng(seed)`` or the env's own."""
    if seed is None:
        return env.np_random
    return np.random.default_rng(check_int("seed", seed, minimum=0))


def draw_without_replacement(values: Sequence[Any], n: int, rng: np.random.Generator) -> list[Any]:
    """``n`` items of a finite task set: shuffled passes over ``values``, cut at ``n``."""
    order: list[int] = []
    while len(order) < n:
        order.extend(int(i) for i in rng.permutation(len(values)))
    return [values[i] for i in order[:n]]
