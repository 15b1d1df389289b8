"""Learning curves from run directories: ``tdrl plot``'s reading, grouping and drawing.

A *run* is a directory holding a ``progress.csv`` (tdrl's, rlpyt's or any viskit-style
one). Runs are found under each given path, grouped, and each group becomes one curve per
plotted column: the mean over its runs, with a band of one standard deviation.

* **Grouping.** By default the runs of one directory form a group: ``tdrl train --log-dir
  D --run-ID N`` puts seeds in ``D/run_N`` (group ``D``), the launcher puts the repeats of
  a variant in ``EXPERIMENT/VARIANT/run_N`` (one group per variant), as does rlpyt.
  ``group_by`` names setting keys instead (dotted for nested ones:
  ``algo_kwargs.learning_rate``), read from the run's ``variant.json`` first, then its
  ``params.json``; the group's label is ``key=value, ...``.
* **Alignment.** Runs of a group that logged at the same x values are averaged row by row;
  otherwise each run is interpolated linearly onto the x values of the group's longest
  run, within the range every run covers.
* **Smoothing.** ``smooth=K`` replaces each run's y by the mean of its last ``K`` logged
  values (fewer at the start) before averaging: a curve keeps one point per log row.

Values written ``nan`` (a column a row does not have) are left out of a run's curve.
matplotlib (``pip install "tdrl[plot]"``) is imported by ``plot_curves`` only.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "X_COLUMNS",
    "Curve",
    "Run",
    "find_runs",
    "group_runs",
    "learning_curves",
    "plot_curves",
    "read_progress",
]

#: ``x`` choices of ``tdrl plot`` and the ``progress.csv`` columns they read (tdrl's and
#: rlpyt's names).
X_COLUMNS: dict[str, tuple[str, ...]] = {
    "steps": ("Diagnostics/CumSteps", "CumSteps"),
    "time": ("Diagnostics/CumTime (s)", "CumTime (s)"),
    "iterations": ("Diagnostics/Iteration", "Iteration"),
}


@dataclass
class Run:
    """One run: its directory, its logged columns and its settings.

    Attributes:
        path: the run directory.
        columns: ``progress.csv``'s columns as float arrays (one entry per row; ``nan``
            where a row has no number).
        settings: ``params.json`` updated with ``variant.json`` (either may be missing).
    """

    path: Path
    columns: dict[str, np.ndarray]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        """The number of logged rows."""
        return len(next(iter(self.columns.values()))) if self.columns else 0


@dataclass
class Curve:
    """One group's curve of one column: mean and standard deviation over its runs.

    Attributes:
        label: the group's label.
        y_key: the plotted column.
        x: x values.
        mean: mean over the runs at each x.
        std: standard deviation over the runs (0 for a single run).
        n_runs: runs averaged.
    """

    label: str
    y_key: str
    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n_runs: int


def read_progress(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """``progress.csv`` as ``{column: float array}``; cells that are not numbers are nan.

    Raises:
        ValueError: (one line) the file has no header, or is not a CSV table.
    """
    with open(path, newline="", encoding="utf-8") as f:
        try:
            rows = list(csv.reader(f))
        except (csv.Error, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a CSV table: {e}") from None
    if not rows or not rows[0]:
        raise ValueError(f"{path} has no header row")
    header, body = rows[0], rows[1:]
    out = {}
    for j, name in enumerate(header):
        out[name] = np.array([_number(r[j]) if j < len(r) else math.nan for r in body])
    return out


def _number(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return math.nan


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file, or ``{}`` when it is missing or not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def find_runs(paths: Iterable[str | os.PathLike[str]]) -> list[Run]:
    """Every run at or under ``paths``, in path order.

    Raises:
        FileNotFoundError: (one line) a path does not exist, or holds no ``progress.csv``.
        ValueError: (one line) a ``progress.csv`` cannot be read as a table.
    """
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise FileNotFoundError(f"{given}: no such file or directory")
        if path.is_file():
            path = path.parent
        csvs = [path / "progress.csv"] if (path / "progress.csv").is_file() else []
        csvs = csvs or sorted(path.rglob("progress.csv"))
        if not csvs:
            raise FileNotFoundError(f"{given}: no progress.csv in it or under it")
        found += [p.parent for p in csvs if p.parent not in found]
    runs = []
    for run_dir in found:
        settings = _read_json(run_dir / "params.json") | _read_json(run_dir / "variant.json")
        runs.append(Run(run_dir, read_progress(run_dir / "progress.csv"), settings))
    return runs


def _setting(settings: Mapping[str, Any], key: str) -> Any:
    """``settings[a][b]...`` for ``key = "a.b..."`` (``key`` itself first); None if absent."""
    if key in settings:
        return settings[key]
    value: Any = settings
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def group_runs(runs: Sequence[Run], group_by: Sequence[str] = ()) -> dict[str, list[Run]]:
    """Runs grouped by their directory's parent, or by the settings ``group_by`` names.

    A directory group is labelled with the directory's name, or its path where two groups'
    names are the same.

    Returns:
        ``{label: runs}`` in the order the groups first appear.

    Raises:
        ValueError: (one line) no run has a setting ``group_by`` names.
    """
    for key in group_by:
        if all(_setting(r.settings, key) is None for r in runs):
            raise ValueError(f"group_by {key!r}: no run has this setting in variant/params.json")
    groups: dict[str, list[Run]] = {}
    short = len({r.path.parent.name for r in runs}) == len({r.path.parent for r in runs})
    for run in runs:
        if group_by:
            label = ", ".join(f"{k}={_setting(run.settings, k)}" for k in group_by)
        else:  # the directory's name where it tells the groups apart, else its path
            label = run.path.parent.name if short else str(run.path.parent)
        groups.setdefault(label, []).append(run)
    return groups


def _x_column(run: Run, x: str) -> np.ndarray:
    for name in X_COLUMNS[x]:
        if name in run.columns:
            return run.columns[name]
    raise ValueError(f"x={x!r}: {run.path}/progress.csv has none of {list(X_COLUMNS[x])}")


def _smoothed(y: np.ndarray, k: int) -> np.ndarray:
    """Mean of the last ``k`` values at each point (fewer at the start)."""
    if k <= 1:
        return y
    total = np.cumsum(y)
    out = total.copy()
    out[k:] = total[k:] - total[:-k]
    return out / np.minimum(np.arange(1, len(y) + 1), k)


def learning_curves(
    runs: Sequence[Run],
    y_keys: Sequence[str],
    *,
    x: str = "steps",
    group_by: Sequence[str] = (),
    smooth: int = 1,
) -> list[Curve]:
    """One ``Curve`` per group and ``y_keys`` entry (the module docstring says how).

    Args:
        runs: the runs (``find_runs``).
        y_keys: the columns to plot.
        x: ``"steps"``, ``"time"`` or ``"iterations"`` (``X_COLUMNS``).
        group_by: setting keys to group by (default: the run directory's parent).
        smooth: trailing moving-average window in log rows (1: none).

    Raises:
        ValueError: (one line) bad ``x``, ``smooth`` or ``y_keys``; a column no run of a
            group has.
    """
    if x not in X_COLUMNS:
        raise ValueError(f"x must be one of {', '.join(X_COLUMNS)}, got {x!r}")
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1:
        raise ValueError(f"smooth must be a positive int (log rows), got {smooth!r}")
    if not y_keys:
        raise ValueError("y_keys must name at least one progress.csv column")
    curves = []
    for label, group in group_runs(runs, group_by).items():
        for key in y_keys:
            have = [r for r in group if key in r.columns and r.n_rows]
            if not have:
                raise ValueError(f"no run of group {label!r} logs {key!r}")
            series = []
            for run in have:
                xs, ys = _x_column(run, x), run.columns[key]
                keep = ~(np.isnan(xs) | np.isnan(ys))
                if keep.any():
                    series.append((xs[keep], _smoothed(ys[keep], smooth)))
            if not series:
                continue
            xs, mean, std = _aligned(series)
            curves.append(Curve(label, key, xs, mean, std, n_runs=len(series)))
    return curves


def _aligned(
    series: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, mean, std)`` of runs' ``(x, y)``: row by row, or interpolated (docstring)."""
    first = series[0][0]
    if all(len(xs) == len(first) and np.array_equal(xs, first) for xs, _ in series):
        ys = np.stack([y for _, y in series])
        return first, ys.mean(0), ys.std(0)
    grid = max((xs for xs, _ in series), key=len)
    lo = max(xs.min() for xs, _ in series)
    hi = min(xs.max() for xs, _ in series)
    grid = grid[(grid >= lo) & (grid <= hi)]
    ys = np.stack([np.interp(grid, xs, y) for xs, y in series])
    return grid, ys.mean(0), ys.std(0)


def plot_curves(
    curves: Sequence[Curve],
    output: str | os.PathLike[str],
    *,
    x: str = "steps",
    title: str | None = None,
    panel_per_group: bool = False,
) -> Any:
    """Draw ``curves`` (one panel per column, mean line and ± std band) into ``output``.

    The format follows ``output``'s suffix (``.png``, ``.pdf``, ``.svg``, ...). With
    ``panel_per_group`` each group gets its own panel instead (groups on different scales,
    e.g. one per env), titled with the group's label.

    Returns:
        The matplotlib ``Figure``.

    Raises:
        ImportError: (one line) matplotlib is not installed.
        ValueError: (one line) no curve to draw, or a format matplotlib cannot write.
    """
    if not curves:
        raise ValueError("no curve to draw: the runs have no logged rows")
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('tdrl plot needs matplotlib: pip install "tdrl[plot]"') from None
    if panel_per_group:
        panels = list(dict.fromkeys(c.label for c in curves))
        chosen = [[c for c in curves if c.label == label] for label in panels]
    else:
        panels = list(dict.fromkeys(c.y_key for c in curves))
        chosen = [[c for c in curves if c.y_key == key] for key in panels]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(6 * len(panels), 4), squeeze=False, layout="constrained"
    )
    for ax, panel, group in zip(axes[0], panels, chosen, strict=True):
        for c in group:
            (line,) = ax.plot(c.x, c.mean, label=f"{c.label} ({c.n_runs})")
            if c.n_runs > 1:
                ax.fill_between(c.x, c.mean - c.std, c.mean + c.std, alpha=0.2,
                                color=line.get_color())  # fmt: skip
        ax.set_xlabel(X_COLUMNS[x][0])
        ax.set_ylabel(group[0].y_key)
        if panel_per_group:
            ax.set_title(panel, fontsize="small")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    try:
        fig.savefig(output, dpi=100)
    except ValueError as e:
        plt.close(fig)
        raise ValueError(f"-o {output}: {e}") from None
    plt.close(fig)
    return fig
