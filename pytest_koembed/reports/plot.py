"""``--koembed-plot``: one chart of a run against its baseline and the published leaderboard.

:func:`chart_data` gathers the numbers (plain data, testable without matplotlib);
:func:`plot_run` draws them with matplotlib's Agg canvas (no pyplot, so no global backend state).
matplotlib is an optional extra (``pip install pytest-koembed[plot]``), imported only here.

What the chart shows, top to bottom: the weighted average and the category averages, then every
task grouped by category. Per row: a bar for this run (coloured by category), the leaderboard's
median (black tick) and best (black triangle), the baseline (hollow diamond, when the record
carries one), the run's confidence interval as an error bar (when the record has one: its
tasks' ``ci``, ``category_average_ci`` and ``weighted_average_ci``), and on the right the run's
value with its difference to the baseline.
"""

from __future__ import annotations

import importlib.util
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.averages import count_tasks
from pytest_koembed.protocol.leaderboards import (
    leaderboards_for_suite,
    load_leaderboard,
    run_encoder_type,
)
from pytest_koembed.protocol.scoring import (
    Scheme,
    Summary,
    TaskRow,
    category_average,
    get_scheme,
    round_half_up,
    summarize,
)
from pytest_koembed.protocol.spec import CATEGORIES, Suite
from pytest_koembed.reports import text

CATEGORY_COLORS = {
    "STS": "#4C72B0",
    "NLI": "#DD8452",
    "Clustering": "#55A868",
    "Retrieval": "#8172B3",
    "Classification": "#937860",
    "Reranking": "#DA8BC3",
}
WEIGHTED_COLOR = "#4d4d4d"
WEIGHTED_LABEL = "Weighted average"
CI_COLOR = "#222222"
CI_GID = "koembed-ci"
"""The gid of the artists that draw the run's confidence intervals (error bars)."""


def check_matplotlib() -> None:
    """A one-line :class:`KoembedError` when matplotlib is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        raise KoembedError(
            "--koembed-plot needs matplotlib, which is not installed: "
            "pip install 'pytest-koembed[plot]' (or pip install matplotlib)"
        )


@dataclass
class ChartRow:
    """One horizontal bar: a task, a category average or the weighted average (values x100)."""

    label: str
    category: str  # a category name, or "" for the weighted average
    value: float | None
    baseline: float | None = None
    best: float | None = None
    best_name: str | None = None
    median: float | None = None
    low: float | None = None  # the leaderboard's lowest value
    verdict: str | None = None  # the task's verdict against its baseline, if it was judged
    is_average: bool = False  # a category or weighted average (None: incomplete)
    incomplete_note: str | None = None  # an incomplete average: "77.32 over 2 of 3 tasks"
    ci_low: float | None = None  # the run's confidence interval (x100), when it has one
    ci_high: float | None = None
    # an average: the worst verdict of its tasks (regressed > warned > improved > pass), None
    # when none was judged; a negative delta is red only when a task regressed
    scope_verdict: str | None = None


@dataclass
class ChartData:
    title: str
    subtitle: str
    averages: list[ChartRow]
    tasks: list[ChartRow]
    baseline_label: str | None = None
    leaderboard: str | None = None  # name of the published leaderboard compared with
    notes: list[str] = field(default_factory=list)
    ci_level: float | None = None  # the level of the run's intervals, when it has any


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _task_baseline(task: Mapping[str, Any]) -> float | None:
    """A task's baseline value: ``baseline`` as a number, or a mapping with ``value``/``shown``."""
    baseline = task.get("baseline")
    if isinstance(baseline, Mapping):
        for key in ("value", "shown", "baseline"):
            number = _number(baseline.get(key))
            if number is not None:
                return number
        return None
    return _number(baseline)


def _ci(value: Any) -> tuple[float | None, float | None]:
    """``(low, high)`` of a record's interval (``{"level", "low", "high"}``), or two Nones."""
    if not isinstance(value, Mapping):
        return None, None
    low, high = _number(value.get("low")), _number(value.get("high"))
    return (low, high) if low is not None and high is not None else (None, None)


def _baseline_label(record: Mapping[str, Any]) -> str:
    """``baseline: <source>`` (the record's ``baseline.sources``), else ``baseline``."""
    info = record.get("baseline")
    sources: list[str] = []
    if isinstance(info, Mapping) and isinstance(info.get("sources"), list):
        sources = [s for s in info["sources"] if isinstance(s, str) and s]
    if not sources:
        for task in record.get("tasks") or []:
            source = task.get("baseline_source") if isinstance(task, Mapping) else None
            if isinstance(source, str) and source and source not in sources:
                sources.append(source)
    return f"baseline: {sources[0]}" if len(sources) == 1 else "baseline"


Spread = tuple[float | None, str | None, float | None, float | None]


def _spread(values: Sequence[tuple[str, float | None]]) -> Spread:
    """(best, name of the best row, median, lowest) of (row name, value) pairs; None ignored."""
    known = [(name, v) for name, v in values if v is not None]
    if not known:
        return None, None, None, None
    name, best = max(known, key=lambda item: item[1])
    return best, name, statistics.median(v for _, v in known), min(v for _, v in known)


def _published(suite: Suite, encoder_type: str) -> tuple[str | None, dict[str, dict[str, float]]]:
    """The published leaderboard a run of an ``encoder_type`` model is ranked in (the first that
    takes it: a sparse run the sparse table)."""
    from pytest_koembed.protocol.tables import runs_join

    for name in leaderboards_for_suite(suite.name):
        if runs_join(name, encoder_type):
            board = load_leaderboard(name)
            return board.name, {row: dict(values) for row, values in board.rows.items()}
    return None, {}


@dataclass
class _RunColumns:
    """A run record's numbers per task column of its suite, as the chart reads them."""

    tasks: dict[str, Mapping[str, Any]]  # the record's task entries by column
    values: dict[str, float | None] = field(default_factory=dict)
    cis: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    baselines: dict[str, float | None] = field(default_factory=dict)
    verdicts: dict[str, str | None] = field(default_factory=dict)


def _run_columns(record: Mapping[str, Any], suite: Suite) -> _RunColumns:
    by_column = {
        t["column"]: t
        for t in record.get("tasks") or []
        if isinstance(t, Mapping) and isinstance(t.get("column"), str)
    }
    run = _RunColumns(by_column)
    for spec in suite.tasks:
        task = by_column.get(spec.column, {})
        ok = task.get("status", "ok") == "ok"
        run.values[spec.column] = _number(task.get("value")) if ok else None
        run.cis[spec.column] = _ci(task.get("ci")) if ok else (None, None)
        run.baselines[spec.column] = _task_baseline(task)
        verdict = task.get("verdict")
        run.verdicts[spec.column] = verdict if isinstance(verdict, str) and ok else None
    return run


def _summaries(suite: Suite, scheme: Scheme, columns: Mapping[str, float | None]) -> Summary:
    return summarize(
        [TaskRow(t.column, t.category, columns.get(t.column)) for t in suite.tasks], scheme
    )


def _average_rows(
    record: Mapping[str, Any],
    suite: Suite,
    scheme: Scheme,
    run: _RunColumns,
    board: Mapping[str, Mapping[str, float]],
) -> list[ChartRow]:
    """The weighted (or plain) average's row and one per category, with the published spread."""
    run_summary = _summaries(suite, scheme, run.values)
    have_baseline = any(v is not None for v in run.baselines.values())
    base_summary = _summaries(suite, scheme, run.baselines) if have_baseline else None
    board_summaries = {row: _summaries(suite, scheme, values) for row, values in board.items()}
    categories = [c for c in CATEGORIES if any(t.category == c for t in suite.tasks)]
    averages: list[ChartRow] = []
    category_cis = record.get("category_average_ci")
    category_cis = category_cis if isinstance(category_cis, Mapping) else {}
    if scheme.needs or len(categories) > 1:  # a weighted (or plain) average over categories
        has_weighted = run_summary.weighted is not None
        low, high = _ci(record.get("weighted_average_ci")) if has_weighted else (None, None)
        averages.append(
            ChartRow(
                WEIGHTED_LABEL if scheme.needs else "Average",
                "",
                run_summary.weighted,
                base_summary.weighted if base_summary else None,
                *_spread([(r, s.weighted) for r, s in board_summaries.items()]),
                is_average=True,
                ci_low=low,
                ci_high=high,
            )
        )
    for cat in categories:
        values = [run.values[t.column] for t in suite.tasks if t.category == cat]
        scored = [v for v in values if v is not None]
        has_average = run_summary.category_averages.get(cat) is not None
        low, high = _ci(category_cis.get(cat)) if has_average else (None, None)
        averages.append(
            ChartRow(
                f"{cat} average",
                cat,
                run_summary.category_averages.get(cat),
                base_summary.category_averages.get(cat) if base_summary else None,
                *_spread([(r, s.category_averages.get(cat)) for r, s in board_summaries.items()]),
                is_average=True,
                # the summary's partial average, same rule (pytest_koembed.protocol.averages)
                incomplete_note=(
                    f"{text.fixed(category_average(scored) or 0.0) if scored else 'n/a'} over "
                    f"{len(scored)} of {len(values)} tasks"
                ),
                ci_low=low,
                ci_high=high,
            )
        )
    for row in averages:
        in_scope = [t for t in suite.tasks if row.category == "" or t.category == row.category]
        row.scope_verdict = _worst_verdict([run.verdicts[t.column] for t in in_scope])
    return averages


def _task_rows(
    suite: Suite, run: _RunColumns, board: Mapping[str, Mapping[str, float]]
) -> list[ChartRow]:
    """One row per task, category by category."""
    categories = [c for c in CATEGORIES if any(t.category == c for t in suite.tasks)]
    return [
        ChartRow(
            spec.column,
            cat,
            run.values[spec.column],
            run.baselines[spec.column],
            *_spread([(r, values.get(spec.column)) for r, values in board.items()]),
            verdict=run.verdicts[spec.column],
            ci_low=run.cis[spec.column][0],
            ci_high=run.cis[spec.column][1],
        )
        for cat in categories
        for spec in suite.tasks
        if spec.category == cat
    ]


def _subtitle(
    record: Mapping[str, Any],
    suite: Suite,
    run: _RunColumns,
    averages: Sequence[ChartRow],
    board_name: str | None,
    scheme_name: str,
) -> str:
    """``6 of 6 tasks scored · weighted average 20.94 · rank 3 of 40 on ko-leaderboard-v1``."""
    from pytest_koembed.protocol.tables import entry_from_run
    from pytest_koembed.reports.publish import run_tables

    counts = count_tasks(
        suite,
        {c: str(t.get("status", "ok")) for c, t in run.tasks.items()},
        [t.column for t in suite.tasks if t.column not in set(record.get("deselected") or [])],
    )
    parts = [counts.describe()]
    headline = averages[0] if averages and averages[0].category == "" else None
    if headline is not None and headline.value is not None:
        parts.append(f"{headline.label.lower()} {text.cell(headline.value)}")
    if board_name is not None:
        try:
            tables = run_tables(
                suite, [entry_from_run(record, suite)], table="overall", scheme=scheme_name
            )
        except KoembedError:
            tables = []
        if tables and tables[0].runs:
            rank = tables[0].rows[tables[0].runs[0]][-1]
            if rank != "-":
                parts.append(f"rank {rank} of {len(tables[0].rows)} on {board_name}")
    return " · ".join(parts)


def chart_data(record: Mapping[str, Any], suite: Suite) -> ChartData:
    """The numbers the chart shows, from a run record and its suite."""
    scheme_name = str(record.get("scheme") or suite.scheme)
    scheme = get_scheme(scheme_name)
    run = _run_columns(record, suite)
    board_name, board = _published(suite, run_encoder_type(record.get("model")))
    averages = _average_rows(record, suite, scheme, run, board)
    model = record.get("model") if isinstance(record.get("model"), Mapping) else {}
    assert isinstance(model, Mapping)
    name = str(model.get("row_name") or model.get("name") or "this run")
    category_cis = record.get("category_average_ci")
    levels = [
        _number(ci.get("level"))
        for ci in [
            *(t.get("ci") for t in run.tasks.values()),
            *(category_cis.values() if isinstance(category_cis, Mapping) else []),
            record.get("weighted_average_ci"),
        ]
        if isinstance(ci, Mapping)
    ]
    have_baseline = any(v is not None for v in run.baselines.values())
    return ChartData(
        title=f"{name} on {suite.name}",
        subtitle=_subtitle(record, suite, run, averages, board_name, scheme_name),
        averages=averages,
        tasks=_task_rows(suite, run, board),
        baseline_label=_baseline_label(record) if have_baseline else None,
        leaderboard=board_name,
        notes=[]
        if board_name is not None
        else [f"no published leaderboard for suite {suite.name!r}"],
        ci_level=next((level for level in levels if level is not None), None),
    )


def _worst_verdict(verdicts: Sequence[str | None]) -> str | None:
    """Of the tasks' verdicts, the one an average's colour follows."""
    judged = [v for v in verdicts if v]
    for verdict in ("regressed", "not paired", "warned", "improved"):
        if verdict in judged:
            return "regressed" if verdict == "not paired" else verdict
    return "pass" if judged else None


def clip_note(row: ChartRow, low: float, high: float) -> str | None:
    """``interval clipped at 0 (low -13.57)`` when the row's interval runs past the axis."""
    if row.value is None or row.ci_low is None or row.ci_high is None:
        return None
    parts = []
    if row.ci_low < low:
        parts.append(f"at {low:g} (low {text.fixed(row.ci_low)})")
    if row.ci_high > high:
        parts.append(f"at {high:g} (high {text.fixed(row.ci_high)})")
    return "interval clipped " + " and ".join(parts) if parts else None


VERDICT_COLORS = {"regressed": "#b00020", "warned": "#c77700", "improved": "#1a7f37"}


def _delta_text(row: ChartRow) -> tuple[str, str]:
    """The right-hand text for a row, and its colour.

    With a verdict (a judged task) the colour is the verdict's: red regressed, amber warned
    (below a stale baseline cell), green improved, dark within tolerance. Without one (the
    averages) it is the sign of the difference.
    """
    if row.value is None:
        if row.is_average:
            note = f": {row.incomplete_note}" if row.incomplete_note else ""
            return f"incomplete{note}", "#b00020"
        return "not scored", "#b00020"
    label = text.fixed(row.value)
    if row.baseline is None:
        return label, "#222222"
    delta = round_half_up(row.value, 2) - round_half_up(row.baseline, 2)
    if abs(delta) < 0.005:
        label = f"{label}  (= baseline)"
    else:
        sign = "+" if delta > 0 else "\u2212"
        label = f"{label}  ({sign}{text.fixed(abs(delta))})"
    if row.verdict is not None:
        if row.verdict in ("regressed", "warned"):
            label += f"  {row.verdict}"
        return label, VERDICT_COLORS.get(row.verdict, "#222222")
    if abs(delta) < 0.005:
        return label, "#222222"
    if row.is_average and row.scope_verdict is not None:
        # an average's delta is not a verdict: red only when one of its tasks regressed
        if row.scope_verdict in ("regressed", "warned"):
            return label, VERDICT_COLORS[row.scope_verdict]
        return label, "#1a7f37" if delta > 0 else "#222222"
    return label, "#1a7f37" if delta > 0 else "#b00020"


def _x_range(rows: Sequence[ChartRow], *, from_zero: bool) -> tuple[float, float]:
    """An x range on multiples of 5 that holds every number of the rows (zoomed unless
    ``from_zero``)."""
    values = [
        v
        for r in rows
        for v in (r.value, r.baseline, r.best, r.median, r.low, r.ci_low, r.ci_high)
        if v is not None
    ]
    if not values:
        return 0.0, 100.0
    low = 0.0 if from_zero else max(0.0, math.floor((min(values) - 2.0) / 5.0) * 5.0)
    high = min(100.0, math.ceil((max(values) + 2.0) / 5.0) * 5.0)
    if high - low < 10:
        high = min(100.0, low + 10.0)
        low = high - 10.0
    return low, high


def _draw_rows(ax: Any, rows: Sequence[ChartRow], *, show_best_names: bool, stems: bool) -> None:
    """One row per ChartRow. ``stems``: a line from 0 to each value (a lollipop chart), for
    charts with nothing to compare with, where the axis then starts at 0."""
    ys = list(range(len(rows)))[::-1]  # first row on top
    low, high = _x_range(rows, from_zero=stems)
    for y, row in zip(ys, rows, strict=True):
        _draw_marks(ax, y, row, stems=stems)
        if row.value is not None and row.ci_low is not None and row.ci_high is not None:
            _draw_interval(ax, y, row, low, high)
        if row.value is not None:
            ax.plot(
                [row.value],
                [y],
                marker="o",
                markersize=10,
                color=CATEGORY_COLORS.get(row.category, WEIGHTED_COLOR),
                markeredgecolor="white",
                markeredgewidth=1.2,
                linestyle="none",
                zorder=4,
            )
    _draw_labels(ax, ys, rows, low, high, show_best_names=show_best_names)
    _style_axis(ax, ys, rows, low, high)


def _draw_marks(ax: Any, y: int, row: ChartRow, *, stems: bool) -> None:
    """A row's band, stem, published range, median, best and baseline marks."""
    color = CATEGORY_COLORS.get(row.category, WEIGHTED_COLOR)
    ax.axhspan(y - 0.5, y + 0.5, color="#f4f4f4" if y % 2 else "white", zorder=0)
    if stems and row.value is not None:
        ax.plot([0, row.value], [y, y], color=color, linewidth=3, alpha=0.55, zorder=2)
    if row.low is not None and row.best is not None:
        ax.plot(
            [row.low, row.best],
            [y, y],
            color="#c8c8c8",
            linewidth=5,
            solid_capstyle="round",
            zorder=1,
        )
    if row.median is not None:
        ax.plot(
            [row.median],
            [y],
            marker="|",
            markersize=16,
            markeredgewidth=2.6,
            color="#222222",
            linestyle="none",
            zorder=3,
        )
    if row.best is not None:
        ax.plot(
            [row.best],
            [y],
            marker="*",
            markersize=13,
            color="#222222",
            markeredgecolor="white",
            markeredgewidth=0.8,
            linestyle="none",
            zorder=3,
        )
    if row.baseline is not None:
        ax.plot(
            [row.baseline],
            [y],
            marker="D",
            markersize=13,
            markerfacecolor="none",
            markeredgecolor="#c0392b",
            markeredgewidth=2.2,
            linestyle="none",
            zorder=5,
        )


def _draw_interval(ax: Any, y: int, row: ChartRow, low: float, high: float) -> None:
    """The run's interval: dark and thin, so that it stands out from the category-coloured
    stem beneath it; an arrow where it runs past the axis."""
    assert row.ci_low is not None and row.ci_high is not None
    ci_low, ci_high = max(row.ci_low, low), min(row.ci_high, high)  # drawn on the axis
    bar = ax.hlines(y, ci_low, ci_high, colors=CI_COLOR, linewidth=1.6, zorder=4)
    bar.set_gid(CI_GID)
    for end, past, marker in (
        (low, row.ci_low < low, "<"),
        (high, row.ci_high > high, ">"),
    ):
        if past:  # an arrow at the axis: the interval goes on beyond it
            ax.plot([end], [y], marker=marker, markersize=8, color=CI_COLOR, zorder=4)
    caps = ax.plot(
        [ci_low, ci_high],
        [y, y],
        marker="|",
        markersize=9,
        markeredgewidth=1.6,
        color=CI_COLOR,
        linestyle="none",
        zorder=4,
    )
    caps[0].set_gid(CI_GID)


def _draw_labels(
    ax: Any,
    ys: Sequence[int],
    rows: Sequence[ChartRow],
    low: float,
    high: float,
    *,
    show_best_names: bool,
) -> None:
    """The right-hand texts: the header, each row's value and delta, the best model's name."""
    from matplotlib.transforms import blended_transform_factory

    transform = blended_transform_factory(ax.transAxes, ax.transData)
    header = "this run" + (" (vs baseline)" if any(r.baseline is not None for r in rows) else "")
    ax.text(
        1.015,
        len(rows) - 0.45,
        header,
        transform=transform,
        va="bottom",
        ha="left",
        fontsize=9,
        color="#666666",
    )
    for y, row in zip(ys, rows, strict=True):
        label, color = _delta_text(row)
        clipped = clip_note(row, low, high)
        if clipped is not None:
            label += f"  [{clipped}]"
        bold = "bold" if row.category == "" else "normal"
        ax.text(
            1.015,
            y,
            label,
            transform=transform,
            va="center",
            ha="left",
            fontsize=10.5,
            color=color,
            fontweight=bold,
        )
        if show_best_names and row.best_name and row.best is not None:
            ax.text(
                1.25,
                y,
                f"best: {row.best_name}",
                transform=transform,
                va="center",
                ha="left",
                fontsize=8,
                color="#666666",
            )


def _style_axis(
    ax: Any, ys: Sequence[int], rows: Sequence[ChartRow], low: float, high: float
) -> None:
    """Row names in their category's colour, the limits, the grid, no frame."""
    ax.set_yticks(ys)
    ax.set_yticklabels([r.label for r in rows], fontsize=10.5)
    for label, row in zip(ax.get_yticklabels(), rows, strict=True):
        label.set_color(CATEGORY_COLORS.get(row.category, WEIGHTED_COLOR))
        if row.category == "":
            label.set_fontweight("bold")
    ax.set_ylim(-0.5, len(rows) - 0.5)
    ax.set_xlim(low, high)
    ax.grid(axis="x", color="#d9d9d9", linewidth=0.8, zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)
    ax.tick_params(axis="x", labelsize=9.5)


def _category_separators(ax: Any, rows: Sequence[ChartRow]) -> None:
    n = len(rows)
    for i in range(1, n):
        if rows[i].category != rows[i - 1].category:
            ax.axhline(n - i - 0.5, color="#999999", linewidth=0.9, zorder=1)


def plot_run(record: Mapping[str, Any], suite: Suite, path: Path) -> Path:
    """Draw the run's chart into ``path`` (PNG, or any format matplotlib knows by suffix)."""
    fig = build_figure(record, suite)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path)
    except (OSError, ValueError) as exc:
        raise KoembedError(f"cannot save the chart to {path}: {exc}") from None
    return path


def chart_png(record: Mapping[str, Any], suite: Suite) -> bytes:
    """The run's chart as PNG bytes (the pytest-html report embeds them)."""
    import io

    buffer = io.BytesIO()
    build_figure(record, suite).savefig(buffer, format="png")
    return buffer.getvalue()


def build_figure(record: Mapping[str, Any], suite: Suite) -> Any:
    """The run's chart as a matplotlib ``Figure`` (Agg canvas; axes: averages, then tasks)."""
    check_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = chart_data(record, suite)
    n_avg, n_task = len(data.averages), len(data.tasks)
    row_h = 0.34
    top_h, bottom_h, gap_h = 1.55, 0.75, 0.7
    height = top_h + row_h * (n_avg + n_task) + gap_h + bottom_h
    fig = Figure(figsize=(14, height), dpi=110)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(
        2,
        1,
        height_ratios=[max(n_avg, 1), max(n_task, 1)],
        hspace=gap_h / (row_h * (n_avg + n_task) / 2),
        left=0.215,
        right=0.66 if data.leaderboard is not None else 0.82,
        top=1 - top_h / height,
        bottom=bottom_h / height,
    )
    ax_avg = fig.add_subplot(grid[0])
    ax_task = fig.add_subplot(grid[1])
    compared = data.leaderboard is not None or data.baseline_label is not None
    _draw_rows(
        ax_avg, data.averages, show_best_names=data.leaderboard is not None, stems=not compared
    )
    _draw_rows(ax_task, data.tasks, show_best_names=False, stems=not compared)
    _category_separators(ax_task, data.tasks)
    ax_avg.set_title("Averages", loc="left", fontsize=11, color="#444444")
    ax_task.set_title("Tasks", loc="left", fontsize=11, color="#444444")
    ax_task.set_xlabel("score (x100, as the leaderboard shows it)", fontsize=10)

    fig.text(0.015, 1 - 0.25 / height, data.title, fontsize=15, fontweight="bold", va="top")
    subtitle = data.subtitle + (f" \u00b7 {'; '.join(data.notes)}" if data.notes else "")
    fig.text(0.015, 1 - 0.62 / height, subtitle, fontsize=10.5, color="#444444", va="top")

    handles = _legend_handles(data)
    fig.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(0.012, 1 - 0.92 / height),
        ncol=len(handles),
        fontsize=9.5,
        frameon=False,
        handletextpad=0.3,
        columnspacing=1.4,
    )
    return fig


def _legend_handles(data: ChartData) -> list[Any]:
    """The legend: this run, its interval, the baseline, the published range, median, best."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [
        Line2D(
            [],
            [],
            marker="o",
            markersize=10,
            color="#777777",
            linestyle="none",
            markeredgecolor="white",
            label="this run (colour: category)",
        )
    ]
    if data.ci_level is not None:
        handles.append(
            Line2D(
                [],
                [],
                marker="|",
                markersize=9,
                markeredgewidth=1.6,
                color=CI_COLOR,
                linewidth=1.6,
                label=f"{text.level(data.ci_level)} interval",
            )
        )
    if data.baseline_label is not None:
        handles.append(
            Line2D(
                [],
                [],
                marker="D",
                markersize=8,
                markerfacecolor="none",
                markeredgecolor="#c0392b",
                markeredgewidth=2,
                linestyle="none",
                label=data.baseline_label,
            )
        )
    if data.leaderboard is not None:
        handles += [
            Patch(color="#c8c8c8", label=f"{data.leaderboard}: range"),
            Line2D(
                [],
                [],
                marker="|",
                markersize=12,
                markeredgewidth=2.4,
                color="#222222",
                linestyle="none",
                label="median",
            ),
            Line2D(
                [], [], marker="*", markersize=11, color="#222222", linestyle="none", label="best"
            ),
        ]
    return handles
