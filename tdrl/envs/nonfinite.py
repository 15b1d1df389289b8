"""Tolerating an env's NaNs: replace them at the source, and count them.

tdrl's samplers stop a run at the first NaN or infinite observation or reward
(``tdrl.utils.finite``). For an env known to emit a few (a physics blow-up, a sensor
dropout) and meant to be trained anyway, wrap it::

    env_fn = lambda **kw: ZeroNonFinite(make_gym_env(**kw))
    sampler = SerialSampler(env_fn, {"env_id": ...}, ..., traj_info_cls=NonFiniteTrajInfo)

``ZeroNonFinite`` replaces every non-finite observation entry and reward by 0 before the
agent or the sampler sees it, and reports how many it replaced at each step in
``info["nonfinite"]``; ``NonFiniteTrajInfo`` sums them per episode, so the log has
``NonFiniteValuesAverage`` (and ``Std``, ``Min``, ``Max``) beside the returns.
"""

from __future__ import annotations

import math
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from tdrl.envs.traj_info import TrajInfo

__all__ = ["NonFiniteTrajInfo", "ZeroNonFinite"]


def _zeroed(value: Any) -> tuple[Any, int]:
    """``value`` (an array, a number or a dict of them) with non-finite entries set to 0."""
    if isinstance(value, dict):
        out, count = {}, 0
        for key, item in value.items():
            out[key], n = _zeroed(item)
            count += n
        return out, count
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        return value, 0
    bad = ~np.isfinite(array)
    n = int(bad.sum())
    if n == 0:
        return value, 0
    array = array.copy()
    array[bad] = 0
    return array, n


class ZeroNonFinite(gym.Wrapper):
    """Replace non-finite observation entries and rewards by 0; count them in ``info``.

    Args:
        env: the gymnasium env.

    Attributes:
        replaced: non-finite values replaced since the wrapper was made.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.replaced = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """``env.reset`` with a finite observation (``info["nonfinite"]``: values replaced)."""
        obs, info = self.env.reset(**kwargs)
        obs, n = _zeroed(obs)
        self.replaced += n
        return obs, {**info, "nonfinite": n}

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """``env.step`` with a finite observation and reward (``info["nonfinite"]``)."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs, n = _zeroed(obs)
        if not math.isfinite(float(reward)):
            reward, n = 0.0, n + 1
        self.replaced += n
        return obs, reward, terminated, truncated, {**info, "nonfinite": n}


class NonFiniteTrajInfo(TrajInfo):
    """``TrajInfo`` with ``NonFiniteValues``: the values ``ZeroNonFinite`` replaced."""

    def __init__(self) -> None:
        super().__init__()
        self.NonFiniteValues = 0

    def step_info(self, info: dict[str, Any]) -> None:
        """Add the step's ``info["nonfinite"]``."""
        self.NonFiniteValues += int(info.get("nonfinite", 0))
