"""Per-episode statistics (rlpyt's ``TrajInfo``), tracked for a batch of envs at once."""

from __future__ import annotations

from typing import Any

import numpy as np


class TrajInfo:
    """Statistics of one completed episode.

    Public attributes (CamelCase) are logged by the runners as ``<Field>Average``,
    ``<Field>Std``, ... Attributes starting with ``_`` are not logged.

    Attributes:
        Length: number of steps in the episode.
        Return: undiscounted sum of rewards.
        NonzeroRewards: number of steps with a nonzero reward.
        DiscountedReturn: ``sum_k discount^k r_k`` with the algorithm's discount.

    Subclass it for env-specific fields: override ``step_info`` (called with the
    gymnasium ``info`` dict after every step of the episode; only subclasses that override
    it pay for the call) and/or ``terminate`` (called once with the last ``info``).
    """

    def __init__(self) -> None:
        self.Length = 0
        self.Return = 0.0
        self.NonzeroRewards = 0
        self.DiscountedReturn = 0.0

    def step_info(self, info: dict[str, Any]) -> None:
        """Accumulate env-specific fields from one step's ``info`` (no-op by default)."""

    def terminate(self, info: dict[str, Any]) -> None:
        """Finish env-specific fields from the episode's last ``info`` (no-op by default)."""

    def fields(self) -> dict[str, float]:
        """The logged fields: public attributes, as numbers."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.fields().items())
        return f"{type(self).__name__}({inner})"


class TrajTracker:
    """Running episode statistics of ``n_envs`` envs, updated once per time step.

    The base fields are NumPy arrays updated with one vectorised operation per step, so a
    sampler pays nothing per env for them; only ``TrajInfo`` subclasses that override
    ``step_info`` are called per env and step.

    Args:
        n_envs: number of envs tracked.
        traj_info_cls: the class of the completed-episode records.
        discount: discount of ``DiscountedReturn``.
    """

    def __init__(
        self, n_envs: int, traj_info_cls: type[TrajInfo] = TrajInfo, discount: float = 1.0
    ):
        if not (isinstance(traj_info_cls, type) and issubclass(traj_info_cls, TrajInfo)):
            raise TypeError(f"traj_info_cls must be a TrajInfo subclass, got {traj_info_cls!r}")
        self.n_envs = n_envs
        self.traj_info_cls = traj_info_cls
        self.discount = float(discount)
        self.needs_info = traj_info_cls.step_info is not TrajInfo.step_info
        self._length = np.zeros(n_envs, dtype=np.int64)
        self._return = np.zeros(n_envs, dtype=np.float64)
        self._nonzero = np.zeros(n_envs, dtype=np.int64)
        self._disc_return = np.zeros(n_envs, dtype=np.float64)
        self._disc = np.ones(n_envs, dtype=np.float64)
        self._custom = [traj_info_cls() for _ in range(n_envs)] if self.needs_info else None

    def step(self, reward: np.ndarray, active: np.ndarray | None = None) -> None:
        """Add one step's rewards (shape ``[n_envs]``) for every env, or only the active ones.

        Envs where ``active`` is False are frozen, waiting for a reset.
        """
        if active is None:
            self._length += 1
            self._return += reward
            self._nonzero += reward != 0
            self._disc_return += self._disc * reward
            self._disc *= self.discount
            return
        reward = np.where(active, reward, 0.0)
        self._length += active
        self._return += reward
        self._nonzero += reward != 0
        self._disc_return += self._disc * reward
        self._disc *= np.where(active, self.discount, 1.0)

    def step_one(self, b: int, reward: float) -> None:
        """Add one step's reward for env ``b`` only (used while decorrelating)."""
        self._length[b] += 1
        self._return[b] += reward
        self._nonzero[b] += reward != 0
        self._disc_return[b] += self._disc[b] * reward
        self._disc[b] *= self.discount

    def step_info(self, b: int, info: dict[str, Any]) -> None:
        """Pass env ``b``'s step ``info`` to its record (only when ``needs_info``)."""
        assert self._custom is not None, "step_info is called only when needs_info"
        self._custom[b].step_info(info)

    def finish(self, b: int, info: dict[str, Any] | None = None) -> TrajInfo:
        """Close env ``b``'s episode: return its record and start a fresh one."""
        traj = self._custom[b] if self._custom is not None else self.traj_info_cls()
        traj.Length = int(self._length[b])
        traj.Return = float(self._return[b])
        traj.NonzeroRewards = int(self._nonzero[b])
        traj.DiscountedReturn = float(self._disc_return[b])
        traj.terminate(info or {})
        self.reset_one(b)
        return traj

    def finish_many(self, envs: list[int], infos: list[dict[str, Any]]) -> list[TrajInfo]:
        """``[finish(b, info) for b, info in zip(envs, infos)]``, vectorised.

        One array read and one array write per statistic, for the many episodes that end
        at once in a vectorized env.
        """
        if len(envs) < 4:
            return [self.finish(b, info) for b, info in zip(envs, infos, strict=True)]
        index = np.asarray(envs, dtype=np.int64)
        stats = zip(
            self._length[index].tolist(),
            self._return[index].tolist(),
            self._nonzero[index].tolist(),
            self._disc_return[index].tolist(),
            strict=True,
        )
        custom, cls = self._custom, self.traj_info_cls
        out = []
        for b, info, (length, ret, nonzero, disc_return) in zip(envs, infos, stats, strict=True):
            traj = custom[b] if custom is not None else cls()
            traj.Length, traj.Return = length, ret
            traj.NonzeroRewards, traj.DiscountedReturn = nonzero, disc_return
            traj.terminate(info or {})
            out.append(traj)
        self._length[index] = 0
        self._return[index] = 0.0
        self._nonzero[index] = 0
        self._disc_return[index] = 0.0
        self._disc[index] = 1.0
        if custom is not None:
            for b in envs:
                custom[b] = cls()
        return out

    def reset_one(self, b: int) -> None:
        """Start a fresh episode for env ``b`` without recording the old one."""
        self._length[b] = 0
        self._return[b] = 0.0
        self._nonzero[b] = 0
        self._disc_return[b] = 0.0
        self._disc[b] = 1.0
        if self._custom is not None:
            self._custom[b] = self.traj_info_cls()
