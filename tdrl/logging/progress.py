"""``ProgressBar``: a thin tqdm wrapper for training loops."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

import tqdm

if TYPE_CHECKING:
    from typing_extensions import Self


class ProgressBar:
    """Progress bar over a known number of steps, with a key=value postfix.

    Example::

        with ProgressBar(n_steps, desc="train") as bar:
            for ...:
                bar.update(batch_size, loss=loss, fps=fps)
    """

    def __init__(
        self,
        total: int,
        *,
        desc: str = "",
        disable: bool | None = None,
        unit: str = "step",
    ) -> None:
        """Starts the bar.

        Args:
            total: Number of steps at 100%.
            desc: Text before the bar.
            disable: True hides it, False shows it, None lets tqdm hide it when the output
                is not a terminal.
            unit: Name of one step.
        """
        self._bar = tqdm.tqdm(
            total=total,
            desc=desc,
            disable=disable,
            unit=unit,
            dynamic_ncols=True,
            smoothing=0.1,
        )

    @property
    def n(self) -> int:
        """Steps counted so far (stays 0 when the bar is disabled)."""
        return int(self._bar.n)

    def update(self, n: int, **postfix: Any) -> None:
        """Advances by ``n`` steps and shows ``postfix`` (floats with one decimal).

        Args:
            n: Steps done since the last update.
            **postfix: Values to show after the bar, e.g. ``loss=0.31``.
        """
        if postfix:
            self._bar.set_postfix(
                {k: _format(v) for k, v in postfix.items()},
                refresh=False,
            )
        self._bar.update(n)

    def close(self) -> None:
        """Finishes the bar; calling it again does nothing."""
        self._bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _format(value: Any) -> str:
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()  # numpy scalar or 0-dim tensor
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)
