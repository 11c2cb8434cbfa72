"""Leaderboard tables: rows of models -> ranked Markdown tables in the leaderboard's own layout.

The building blocks, from data to text:

- :class:`Entry`: one model row (a published baseline row, or a run from ``--koembed-json``).
- :func:`build_tables`: entries of one suite -> :class:`Table` objects (the overall table and/or
  the per-category tables), sorted and ranked as the leaderboard does.
- :meth:`Table.to_markdown`: the Markdown text, in one of two styles: ``"aligned"`` (leaderboard v1:
  ``| :--- | ---: |``, columns padded to the widest cell) or ``"tabulate"`` (leaderboard v2, written
  by pandas ``to_markdown``: ``|:---|---:|``, numbers aligned on the decimal point).
- :func:`leaderboard_tables`: the whole thing for a suite: its shipped baselines plus any runs.
  The plugin prints a run's own row(s), ranked among the published models, with
  ``leaderboard_tables(suite, [entry_from_run(record, suite)])`` and :meth:`Table.only_runs`.

Sort order: by the shown (rounded) number, highest first; rows with equal numbers keep their input
order (baseline rows in file order, then runs). The published STS tie at 83.26 (FronyAI
arctic-ko-v2.5 above kanana-nano) is reproduced because ``baselines/ko-leaderboard-v1.csv`` keeps
the leaderboard's own listing order (its instruction table), where FronyAI comes first.
Rows with no value (an errored task) go last with rank ``-``.

This module imports neither pytest nor torch nor mteb.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.leaderboards import (
    Leaderboard,
    leaderboard_encoder_type,
    leaderboards_for_suite,
    load_leaderboard,
    run_encoder_type,
)
from pytest_koembed.protocol.scoring import (
    Summary,
    TaskRow,
    format_value,
    get_scheme,
    rank,
    summarize,
)
from pytest_koembed.protocol.spec import CATEGORIES, Suite

Style = Literal["aligned", "tabulate"]
TABLE_CHOICES: tuple[str, ...] = ("overall", *CATEGORIES, "all")
"""What ``--table`` accepts: the overall table, one category's table, or all of them."""

RANK_HEADER = "Rank"
WEIGHTED_HEADER = "Weighted_Average"


@dataclass(frozen=True)
class Layout:
    """How a leaderboard prints: Markdown style, headings, and labels.

    ``average_label`` names the average column of a task-mean overall table (default
    ``<Category>_Average`` for a single-category suite, else ``Average``). ``takes_runs``: whether
    ``--add`` runs join this leaderboard when it is printed by default (v2's sparse table does not:
    the plugin runs dense models).
    """

    style: Style = "aligned"
    overall_heading: str = "Overall"
    average_label: str | None = None
    takes_runs: bool = True


LAYOUTS: dict[str, Layout] = {
    "ko-leaderboard-v1": Layout(style="aligned", overall_heading="종합 순위"),
    "ko-leaderboard-v2-dense": Layout(
        style="tabulate",
        overall_heading="Dense 임베딩 모델 IR 순위",
        average_label="Retrieval_Average",
    ),
    "ko-leaderboard-v2-sparse": Layout(
        style="tabulate",
        overall_heading="Sparse 임베딩 모델 IR 순위",
        average_label="Sparse_Retrieval_Average",
    ),
}
"""The layout of each shipped leaderboard, as published; others get ``Layout()``."""


def layout_for(leaderboard: str | None) -> Layout:
    return LAYOUTS.get(leaderboard or "", Layout())


def runs_join(leaderboard: str, encoder_type: str) -> bool:
    """Whether a run of an ``encoder_type`` model (dense / sparse) is ranked in ``leaderboard``
    by default: its layout takes runs, and it ranks that kind of model (a sparse run: the sparse
    table; a dense run: the dense one)."""
    return layout_for(leaderboard).takes_runs and leaderboard_encoder_type(leaderboard) in (
        None,
        encoder_type,
    )


@dataclass(frozen=True)
class Entry:
    """One model row: its name and its task values (column -> value x100; None = no value).

    Values may be unrounded (a run) or the published 2-dp numbers (a baseline); tables round them
    half-up for display. A column the mapping lacks counts as no value.
    """

    name: str
    values: Mapping[str, float | None]
    is_run: bool = False
    encoder_type: str = "dense"  # a run's model: dense or sparse (joins the matching tables)


@dataclass(frozen=True)
class Table:
    """One rendered table: a heading, the header cells (first one: the empty name header), the
    body rows as display strings, and the Markdown style."""

    heading: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    style: Style = "aligned"
    kinds: tuple[str, ...] = field(default=())  # per column: "text", "float" or "int"
    runs: tuple[int, ...] = field(default=())  # indices into rows of the rows that are runs

    def only_runs(self) -> Table:
        """The same table with only its run rows (rank and values as among all rows).

        What the plugin prints after a run: the run's leaderboard row(s) with their rank among
        the published models.
        """
        rows = tuple(self.rows[i] for i in self.runs)
        return replace(self, rows=rows, runs=tuple(range(len(rows))))

    def to_markdown(self) -> str:
        """The table as Markdown lines (no heading, no trailing newline)."""
        kinds = self.kinds or ("text",) + ("float",) * (len(self.header) - 1)
        return render_markdown(self.header, self.rows, kinds, self.style)

    def to_text(self) -> str:
        """``# heading``, then the table (no trailing newline)."""
        return f"# {self.heading}\n{self.to_markdown()}"


# ---------------------------------------------------------------------------------------------
# Markdown rendering
# ---------------------------------------------------------------------------------------------


def _decimals(cell: str) -> int:
    """Characters after the decimal point; -1 when there is none (tabulate's ``_afterpoint``)."""
    try:
        float(cell)
    except ValueError:
        return -1
    return len(cell) - cell.index(".") - 1 if "." in cell else -1


def render_markdown(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    kinds: Sequence[str],
    style: Style = "aligned",
) -> str:
    """Markdown text of a table whose cells are already strings.

    ``kinds`` gives each column's type: ``"text"`` (left-aligned) or ``"float"`` / ``"int"``
    (right-aligned). ``"aligned"`` reproduces leaderboard v1 (every column as wide as its widest
    cell, header included; alignment row ``| :--- | ---: |``). ``"tabulate"`` reproduces leaderboard
    v2 (pandas ``to_markdown``: floats padded to line up on the decimal point, columns at least
    2 wider than their header, alignment row ``|:---|---:|``).
    """
    n = len(header)
    if any(len(r) != n for r in rows) or len(kinds) != n:
        raise ValueError("every row and the kinds must have one cell per header cell")
    columns = [[str(r[i]) for r in rows] for i in range(n)]
    if style == "tabulate":
        for i, kind in enumerate(kinds):
            if kind == "float" and columns[i]:
                decs = [_decimals(c) for c in columns[i]]
                most = max(decs)
                columns[i] = [c + " " * (most - d) for c, d in zip(columns[i], decs, strict=True)]
        pad, minimum = 2, 0
    elif style == "aligned":
        pad, minimum = 0, 3  # an alignment cell needs ":--" at least
    else:
        raise ValueError(f"unknown table style {style!r}")
    widths = [max([len(header[i]) + pad, minimum, *(len(c) for c in columns[i])]) for i in range(n)]

    def fit(text: str, i: int) -> str:
        return text.ljust(widths[i]) if kinds[i] == "text" else text.rjust(widths[i])

    lines = []
    lines.append("| " + " | ".join(fit(h, i) for i, h in enumerate(header)) + " |")
    if style == "aligned":
        marks = [
            ":" + "-" * (w - 1) if k == "text" else "-" * (w - 1) + ":"
            for w, k in zip(widths, kinds, strict=True)
        ]
        lines.append("| " + " | ".join(marks) + " |")
    else:
        marks = [
            ":" + "-" * (w + 1) if k == "text" else "-" * (w + 1) + ":"
            for w, k in zip(widths, kinds, strict=True)
        ]
        lines.append("|" + "|".join(marks) + "|")
    for j in range(len(rows)):
        lines.append("| " + " | ".join(fit(columns[i][j], i) for i in range(n)) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Building tables from entries
# ---------------------------------------------------------------------------------------------


def _summaries(suite: Suite, entries: Sequence[Entry], scheme: str) -> list[Summary]:
    return [
        summarize(
            [TaskRow(t.column, t.category, e.values.get(t.column)) for t in suite.tasks], scheme
        )
        for e in entries
    ]


def _ranked(
    heading: str,
    entries: Sequence[Entry],
    cells: Sequence[Sequence[str]],
    keys: Sequence[float | None],
    header: Sequence[str],
    style: Style,
) -> Table:
    """Sort rows by ``keys`` (highest first, stable, None last) and append the rank column."""
    ranks = rank({str(i): k for i, k in enumerate(keys) if k is not None})
    order = sorted(range(len(entries)), key=lambda i: (keys[i] is None, -(keys[i] or 0.0)))
    rows = tuple(
        (entries[i].name, *cells[i], str(ranks[str(i)]) if str(i) in ranks else "-") for i in order
    )
    kinds = ("text",) + ("float",) * len(header) + ("int",)
    return Table(
        heading=heading,
        header=("", *header, RANK_HEADER),
        rows=rows,
        style=style,
        kinds=kinds,
        runs=tuple(pos for pos, i in enumerate(order) if entries[i].is_run),
    )


def _check_table_choice(table: str) -> None:
    if table not in TABLE_CHOICES:
        raise KoembedError(f"unknown table {table!r}; choose one of {', '.join(TABLE_CHOICES)}")


def build_tables(
    suite: Suite,
    entries: Sequence[Entry],
    *,
    table: str = "all",
    scheme: str | None = None,
    layout: Layout | None = None,
) -> list[Table]:
    """The ranked tables of ``entries`` under ``suite`` (and ``scheme``, default the suite's).

    ``table`` is ``"overall"``, a category name, or ``"all"`` (the overall table, then one table
    per category of the suite; for a single-category suite under a task-mean scheme the overall
    table already is the category table, so ``"all"`` gives just that one). The overall table of a
    category-weighted scheme shows ``<Category>_Average`` columns and ``Weighted_Average``; that of
    the task-mean scheme shows every task column and the average. Raises :class:`KoembedError` for
    an unknown table or a category the suite does not have.
    """
    _check_table_choice(table)
    lay = layout or Layout()
    sch = get_scheme(scheme or suite.scheme)
    categories = [c for c in CATEGORIES if any(t.category == c for t in suite.tasks)]
    if table in CATEGORIES and table not in categories:
        raise KoembedError(
            f"suite {suite.name!r} has no {table} tasks; its tables are "
            f"{', '.join(['overall', *categories])}"
        )
    if not sch.needs and len(categories) == 1 and table == categories[0]:
        table = "overall"  # a task-mean table of one category: the overall table is that table
    summaries = _summaries(suite, entries, sch.name)
    tables: list[Table] = []

    if table in ("overall", "all"):
        if sch.needs:
            header = [f"{c}_Average" for c in categories] + [WEIGHTED_HEADER]
            cells = [
                [format_value(s.category_averages.get(c)) for c in categories]
                + [format_value(s.weighted)]
                for s in summaries
            ]
        else:
            label = lay.average_label or (
                f"{categories[0]}_Average" if len(categories) == 1 else "Average"
            )
            header = [t.column for t in suite.tasks] + [label]
            cells = [
                [format_value(s.shown[t.column]) for t in suite.tasks] + [format_value(s.weighted)]
                for s in summaries
            ]
        keys = [s.weighted for s in summaries]
        tables.append(_ranked(lay.overall_heading, entries, cells, keys, header, lay.style))

    if table == "all":
        wanted = [] if (not sch.needs and len(categories) == 1) else categories
    elif table in CATEGORIES:
        wanted = [table]
    else:
        wanted = []
    for cat in wanted:
        tasks = [t for t in suite.tasks if t.category == cat]
        header = [t.column for t in tasks] + [f"{cat}_Average"]
        cells = [
            [format_value(s.shown[t.column]) for t in tasks]
            + [format_value(s.category_averages.get(cat))]
            for s in summaries
        ]
        keys = [s.category_averages.get(cat) for s in summaries]
        tables.append(_ranked(cat, entries, cells, keys, header, lay.style))
    return tables


# ---------------------------------------------------------------------------------------------
# Entries from baselines and run records
# ---------------------------------------------------------------------------------------------


def entries_from_leaderboard(leaderboard: Leaderboard, suite: Suite) -> list[Entry]:
    """The baseline rows as entries; a column the suite lacks is a one-line error."""
    known = {t.column for t in suite.tasks}
    extra = [c for c in leaderboard.columns if c not in known]
    if extra:
        raise KoembedError(
            f"baseline {leaderboard.path} has column(s) {', '.join(extra)} that suite "
            f"{suite.name!r} does not define"
        )
    return [Entry(name, dict(values)) for name, values in leaderboard.rows.items()]


def _run_value(task: Mapping[str, Any], where: str) -> float | None:
    if task.get("status", "ok") != "ok":
        return None
    value = task.get("value")
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise KoembedError(f"{where}: 'value' must be a finite number or null, got {value!r}")
    return float(value)


def entry_from_run(record: Mapping[str, Any], suite: Suite, source: str = "run record") -> Entry:
    """An entry from a run record (the JSON the plugin writes with ``--koembed-json``).

    Reads ``model.row_name``, ``suite.name`` (must be the suite's name) and ``tasks``: each with
    ``column``, ``status`` (``"ok"`` or ``"error"``) and ``value`` (x100, unrounded; null when the
    task errored). A suite task the record lacks counts as no value. Raises a one-line
    :class:`KoembedError` naming ``source`` for anything malformed.
    """
    if not isinstance(record, Mapping):
        raise KoembedError(f"{source}: expected a JSON object at the top level")
    model = record.get("model")
    row_name = model.get("row_name") if isinstance(model, Mapping) else None
    if not isinstance(row_name, str) or not row_name.strip():
        raise KoembedError(f"{source}: missing 'model.row_name' (the model's leaderboard row name)")
    suite_info = record.get("suite")
    suite_name = suite_info.get("name") if isinstance(suite_info, Mapping) else suite_info
    if suite_name is not None and suite_name != suite.name:
        raise KoembedError(
            f"{source}: the run is for suite {suite_name!r}, not {suite.name!r}; "
            f"pass --suite {suite_name}"
        )
    tasks = record.get("tasks")
    if not isinstance(tasks, list):
        raise KoembedError(f"{source}: missing 'tasks' (a list of task results)")
    known = {t.column for t in suite.tasks}
    values: dict[str, float | None] = {}
    for i, task in enumerate(tasks, start=1):
        if not isinstance(task, Mapping) or not isinstance(task.get("column"), str):
            raise KoembedError(f"{source}: tasks[{i}] must be an object with a 'column'")
        column = task["column"]
        where = f"{source}, task {column!r}"
        if column not in known:
            raise KoembedError(f"{where}: suite {suite.name!r} has no such column")
        if column in values:
            raise KoembedError(f"{where}: appears twice")
        values[column] = _run_value(task, where)
    return Entry(row_name.strip(), values, is_run=True, encoder_type=run_encoder_type(model))


def _unique_names(base: Sequence[Entry], runs: Sequence[Entry]) -> list[Entry]:
    """Runs renamed ``NAME (run)``, ``NAME (run 2)``... where their name is already taken."""
    taken = {e.name for e in base}
    out: list[Entry] = []
    for run in runs:
        name, n = run.name, 1
        while name in taken:
            name = f"{run.name} (run)" if n == 1 else f"{run.name} (run {n})"
            n += 1
        taken.add(name)
        out.append(replace(run, name=name, is_run=True))
    return out


def leaderboard_tables(
    suite: Suite,
    runs: Sequence[Entry] = (),
    *,
    baseline: str | None = None,
    table: str = "all",
    scheme: str | None = None,
) -> list[Table]:
    """The tables ``koembed leaderboard`` prints: each shipped baseline of ``suite`` plus ``runs``.

    With ``baseline`` (a leaderboard name or CSV path) only that leaderboard is used and the runs
    join it; otherwise every shipped leaderboard of the suite is printed (sorted by name) and each
    run joins those that rank its kind of model (:func:`runs_join`: a sparse run the sparse table,
    a dense run the dense one). A suite with no baseline prints the runs alone
    (an error if there are none either). A run whose name is a baseline row's name is shown as
    ``NAME (run)``.
    """
    _check_table_choice(table)
    names = [baseline] if baseline else leaderboards_for_suite(suite.name)
    if not names:
        if not runs:
            raise KoembedError(
                f"no baseline leaderboard for suite {suite.name!r}; pass --add RUN.json to "
                "print runs alone"
            )
        return build_tables(suite, _unique_names([], runs), table=table, scheme=scheme)
    tables: list[Table] = []
    for name in names:
        lb = load_leaderboard(name)
        lay = layout_for(lb.name)
        entries = entries_from_leaderboard(lb, suite)
        joining = [r for r in runs if baseline or runs_join(lb.name, r.encoder_type)]
        if joining:
            entries += _unique_names(entries, joining)
        tables += build_tables(suite, entries, table=table, scheme=scheme, layout=lay)
    return tables


def render_tables(tables: Sequence[Table]) -> str:
    """Tables as printed by the CLI: ``# heading`` + table, blank line between, final newline."""
    return "\n\n".join(t.to_text() for t in tables) + "\n"
