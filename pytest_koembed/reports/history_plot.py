"""The trend chart of a checkpoint history (``koembed history --plot``): one panel per column
of the table (categories, or tasks with ``--tasks``, and the weighted average), the checkpoints
along x in row order, each run's own interval as a band, the observed best marked and its tie
group ringed. ``plot_history(table, path)`` is what the pytest-html section embeds."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.gate.history import WEIGHTED, HistoryTable
from pytest_koembed.reports import text
from pytest_koembed.reports.plot import (
    CATEGORY_COLORS,
    WEIGHTED_COLOR,
    WEIGHTED_LABEL,
    check_matplotlib,
)

BAND_GID = "koembed-history-band"
BEST_GID = "koembed-history-best"
"""The gids of the interval bands and of the best checkpoint's marker (tests find them)."""


def _series(table: HistoryTable, name: str) -> tuple[list[float], list[float], list[float]]:
    values, lows, highs = [], [], []
    for row in table.rows:
        entry = row.values[name]
        value = entry.get("value")
        ci = entry.get("ci") or {}
        values.append(math.nan if value is None else float(value))
        lows.append(float(ci["low"]) if ci.get("low") is not None else math.nan)
        highs.append(float(ci["high"]) if ci.get("high") is not None else math.nan)
    return values, lows, highs


def _panel(ax: Any, table: HistoryTable, name: str) -> None:
    xs = list(range(len(table.rows)))
    values, lows, highs = _series(table, name)
    color = WEIGHTED_COLOR if name == WEIGHTED else CATEGORY_COLORS.get(name, "#4C72B0")
    band = ax.fill_between(xs, lows, highs, color=color, alpha=0.2, linewidth=0)
    band.set_gid(BAND_GID)
    ax.plot(xs, values, marker="o", color=color, linewidth=1.5, markersize=4)
    for i, row in enumerate(table.rows):
        if row.in_tie_group and i != table.best and not math.isnan(values[i]):
            ax.plot([i], [values[i]], marker="o", markersize=9, markerfacecolor="none",
                    markeredgecolor="#1a7f37", linestyle="none")  # fmt: skip
    if table.best is not None and not math.isnan(values[table.best]):
        (mark,) = ax.plot(
            [table.best], [values[table.best]], marker="*", markersize=14, color="#1a7f37",
            linestyle="none", zorder=5,
        )  # fmt: skip
        mark.set_gid(BEST_GID)
    ax.set_title(WEIGHTED_LABEL if name == WEIGHTED else name, fontsize=10, loc="left")
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_xticks(xs, [r.run.label for r in table.rows], rotation=30, ha="right", fontsize=8)


def build_history_figure(table: HistoryTable) -> Any:
    """The chart as a matplotlib ``Figure`` (Agg canvas)."""
    check_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(table.columns)
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    width = max(4.2 * ncols, 0.9 * len(table.rows) * ncols / 2)
    fig = Figure(figsize=(width, 3.1 * nrows + 0.9), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k < len(names):
            _panel(ax, table, names[k])
        else:
            ax.set_visible(False)
    best = table.rows[table.best].run.label if table.best is not None else "none"
    level = text.level(table.settings.confidence)
    fig.suptitle(
        f"{table.suite} ({table.split} split): {len(table.rows)} runs; star: observed best "
        f"{best}; ringed: its tie group; bands: each run's {level} interval",
        fontsize=11,
    )
    return fig


def plot_history(table: HistoryTable, path: str | Path) -> Path:
    """Draw ``table``'s trend chart into ``path`` (PNG, or any format matplotlib knows by its
    suffix); the path written. A one-line KoembedError when it cannot be saved."""
    fig = build_history_figure(table)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(target)
    except (OSError, ValueError) as exc:
        raise KoembedError(f"cannot save the history chart to {target}: {exc}") from None
    return target
