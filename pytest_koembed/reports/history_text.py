"""``koembed history`` as text, Markdown and JSON: the checkpoint table, the best checkpoint and
its tie group, and the lines that say what selecting on the numbers means (the statistics are
``gate.history``'s; every number goes through :mod:`reports.text`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_koembed.gate.history import WEIGHTED, HistoryTable, Row, Step, table_dict
from pytest_koembed.reports import text

PREVIOUS = "Δ previous [CI]"
PREVIOUS_TASKS = "tasks vs previous"
BEST_SO_FAR = "Δ best so far [CI]"
VS_BEST = "vs best (p Holm)"


def _value_cell(entry: Mapping[str, Any]) -> str:
    value = entry.get("value")
    if value is None:
        return text.value(None)
    spread = text.value_interval(float(value), entry.get("ci"))
    return f"{text.value(float(value))} {spread}".rstrip()


def _step_cell(s: Step | None, *, label: bool = False) -> str:
    if s is None:
        return ""
    if s.note is not None or not s.weighted or s.weighted.get("delta") is None:
        return "not paired"
    ci = s.weighted.get("delta_ci")
    cell = text.delta_interval(s.weighted["delta"], (ci["low"], ci["high"]) if ci else None)
    return f"{s.against}: {cell}" if label else cell


def _tasks_cell(s: Step | None) -> str:
    if s is None or s.note is not None:
        return ""
    marks = [f"-{c}" for c in s.regressed] + [f"+{c}" for c in s.improved]
    return " ".join(marks) or "within noise"


def _vs_best_cell(table: HistoryTable, index: int, row: Row) -> str:
    if index == table.best:
        return "best"
    test = row.vs_best
    if not test:
        return ""
    if test.get("p_adjusted") is None:
        return "not tested"
    return f"{test['verdict']} (p {text.p(test['p_adjusted'])})"


def _step_text(row: Row) -> str:
    step = row.run.checkpoint.get("step")
    if step is not None:
        return text.count(int(step))
    epoch = row.run.checkpoint.get("epoch")
    return f"epoch {text.fixed(float(epoch))}" if epoch is not None else ""


def cells(table: HistoryTable) -> list[dict[str, str]]:
    """One dict of strings per row, in column order (the text and Markdown tables)."""
    out = []
    for i, row in enumerate(table.rows):
        cell = {"checkpoint": row.run.label, "step": _step_text(row)}
        for name in table.columns:
            cell["weighted" if name == WEIGHTED else name] = _value_cell(row.values[name])
        cell[PREVIOUS] = _step_cell(row.vs_previous)
        cell[PREVIOUS_TASKS] = _tasks_cell(row.vs_previous)
        same = row.vs_best_so_far is row.vs_previous
        cell[BEST_SO_FAR] = "= previous" if same and row.vs_previous else ""
        if not same:
            cell[BEST_SO_FAR] = _step_cell(row.vs_best_so_far, label=True)
        cell[VS_BEST] = _vs_best_cell(table, i, row)
        out.append(cell)
    return out


def best_lines(table: HistoryTable) -> list[str]:
    """The best checkpoint, its tie group, and the post-selection warning."""
    n = len(table.rows)
    if table.best is None:
        return ["best: none (no run has a weighted average)"]
    best = table.rows[table.best]
    value = text.value(best.values[WEIGHTED]["value"])
    if n == 1:
        return [f"one checkpoint: {best.run.label} (weighted {value}); nothing to compare"]
    level = text.level(table.settings.confidence)
    rule = (
        f"one-sided paired test of the weighted average, Holm over the {n - 1} other "
        f"checkpoint{'s' if n > 2 else ''}, at {level}, min effect "
        f"{text.fixed(table.settings.min_effect)} points"
    )
    group = table.tie_group
    if table.winner is not None:
        lines = [
            f"best: {best.run.label} (weighted {value}); every other checkpoint is worse by the "
            f"{rule}"
        ]
    else:
        others = ", ".join(r.run.label for r in group if r is not best)
        lines = [
            f"observed best: {best.run.label} (weighted {value}); no single best: {len(group)} "
            f"checkpoints cannot be told apart from it by the {rule}: {best.run.label}, {others}"
        ]
    lines.append(
        f"picking the best of {n} checkpoints is a post-selection: the best's own values are the "
        f"largest of {n} noisy estimates and read high, and its interval does not cover the choice"
    )
    if table.selected_on_dev is not None:
        row = next(r for r in table.rows if r.run.label == table.selected_on_dev)
        lines.append(
            f"selected on the dev split: {row.run.label}; reported on {table.split}: weighted "
            f"{_value_cell(row.values[WEIGHTED])} (this table's own best is not the selection)"
        )
    elif table.many_on_test:
        lines.append(
            f"these are the suite's test splits (the leaderboard's): selecting the best of {n} "
            "checkpoints on them overfits to the benchmark; select on a development split "
            "(pytest --koembed-split=dev where the suite names one) and report the chosen "
            "checkpoint's test run"
        )
    return lines


def legend(table: HistoryTable) -> str:
    level = text.level(table.settings.confidence)
    return (
        f"values: each run's own {level} bootstrap interval; {PREVIOUS} and {BEST_SO_FAR}: the "
        f"weighted average's paired delta with its {level} paired bootstrap interval; tasks: "
        "regressed (-) or improved (+) by the gate's rule (one-sided, Holm over the tasks, "
        f"min effect {text.fixed(table.settings.min_effect)} points); "
        f"{VS_BEST}: the tie test against the observed best (tested on the gate's statistics: "
        "clustering on leave-one-out centroid accuracy)"
    )


def _header(table: HistoryTable) -> str:
    n = len(table.rows)
    return (
        f"koembed history: suite {table.suite}, scheme {table.scheme}, split {table.split}, "
        f"{n} run{'s' if n != 1 else ''}"
    )


def render_text(table: HistoryTable) -> str:
    rows = cells(table)
    names = list(rows[0])
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in names}
    left = ("checkpoint", PREVIOUS_TASKS, BEST_SO_FAR, VS_BEST, PREVIOUS)

    def line(values: Mapping[str, str]) -> str:
        return "  ".join(
            values[c].ljust(widths[c]) if c in left else values[c].rjust(widths[c]) for c in names
        ).rstrip()

    lines = [_header(table), line({c: c for c in names}), *(line(r) for r in rows)]
    lines += best_lines(table)
    lines.append(legend(table))
    lines += [f"note: {note}" for note in _notes(table)]
    return "\n".join(lines) + "\n"


def _notes(table: HistoryTable) -> list[str]:
    notes = list(table.notes)
    for row in table.rows:
        if row.run.frames is None:
            notes.append(f"{row.run.label}: no per-example results ({row.run.frames_note})")
        for s in (row.vs_previous, row.vs_best_so_far):
            if s is not None and s.note and s.note not in notes and row.run.frames is not None:
                notes.append(f"{row.run.label} vs {s.against}: {s.note}")
    return notes


def render_markdown(table: HistoryTable) -> str:
    rows = cells(table)
    names = list(rows[0])
    numeric = {"step", "weighted", *(c for c in table.columns if c != WEIGHTED)}
    lines = [
        f"### {_header(table)}",
        "",
        "| " + " | ".join(names) + " |",
        "|" + "|".join("---:" if c in numeric else "---" for c in names) + "|",
    ]
    for i, r in enumerate(rows):
        values = [r[c].replace("|", "\\|") for c in names]
        if table.rows[i].in_tie_group:
            values[0] = f"**{values[0]}**"
        lines.append("| " + " | ".join(values) + " |")
    lines += ["", *[f"- {line}" for line in best_lines(table)], "", legend(table) + "."]
    lines += [f"- {note}" for note in _notes(table)]
    return "\n".join(lines) + "\n"


def history_json(table: HistoryTable) -> dict[str, Any]:
    """``table_dict`` with the sentences the text shows (best, post-selection, test splits)."""
    data = table_dict(table)
    data["lines"] = best_lines(table)
    data["notes"] = _notes(table)
    data["many_checkpoints_on_test"] = table.many_on_test
    return data
