"""The runners' non-finite guard (``tdrl.utils.finite`` has the checks it calls).

``NonFiniteGuard`` wraps a runner's sampling and optimisation calls: it adds the iteration
to a ``NonFiniteError``'s message, checks each iteration's diagnostics, and with
``nonfinite="skip"`` skips and counts refused updates. ``tdrl.runners.base``'s
``check_finite_agent`` runs before every log row and snapshot (``log_iteration``). See
``docs/reliability.md``, "Numerical faults".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from tdrl.algos.base import Algorithm
from tdrl.envs.traj_info import TrajInfo
from tdrl.runners.base import NONFINITE_POLICIES
from tdrl.samplers.base import Sampler
from tdrl.utils.checks import NonFiniteError, check_choice
from tdrl.utils.finite import nonfinite_diagnostics

__all__ = ["NonFiniteGuard", "in_iteration"]


class NonFiniteGuard:
    """What a runner does about NaN and infinity (``tdrl.utils.finite``).

    The sampler refuses a batch with a non-finite observation or reward, and each eager
    gradient step refuses a non-finite loss or gradient before the optimizer steps; the
    guard adds the iteration to their message. After each iteration's updates it checks
    their diagnostics and, before every log row and snapshot, the agent's parameters (a
    compiled update is checked only there, after its step). With ``"skip"``, an iteration
    whose update was refused keeps the updates made before it, skips the rest and is
    counted; a non-finite parameter or env value always stops the run (the snapshot on
    disk is the last good one). To tolerate an env's NaNs, wrap it
    (``tdrl.envs.nonfinite.ZeroNonFinite``).

    Args:
        policy: ``"raise"`` or ``"skip"``.
    """

    def __init__(self, policy: str = "raise"):
        self.skip = check_choice("nonfinite", policy, NONFINITE_POLICIES) == "skip"
        self.skipped = 0

    def sample(self, itr: int, sampler: Sampler) -> tuple[Any, list[TrajInfo]]:
        """``sampler.obtain_samples(itr)``; a non-finite env value names the iteration."""
        with in_iteration(itr):
            return sampler.obtain_samples(itr)

    def optimize(self, itr: int, algo: Algorithm, samples: Any) -> dict[str, list[float]]:
        """``algo.optimize_agent(itr, samples)``, guarded (see the class docstring)."""
        try:
            opt_info = algo.optimize_agent(itr, samples)
        except NonFiniteError as err:
            if not self.skip:
                raise NonFiniteError(f"iteration {itr}: {err}") from None
            self.skipped += 1
            return {}
        bad = nonfinite_diagnostics(opt_info)
        if bad is not None:
            raise NonFiniteError(f"iteration {itr}: non-finite {bad}")
        return opt_info

    def columns(self) -> dict[str, float]:
        """The log columns of the guard (``Diagnostics/NonFiniteSkips`` with ``"skip"``)."""
        return {"Diagnostics/NonFiniteSkips": float(self.skipped)} if self.skip else {}


@contextlib.contextmanager
def in_iteration(itr: int) -> Iterator[None]:
    """Re-raise a ``NonFiniteError`` from the block with the iteration in its message."""
    try:
        yield
    except NonFiniteError as err:
        raise NonFiniteError(f"iteration {itr}: {err}") from None
