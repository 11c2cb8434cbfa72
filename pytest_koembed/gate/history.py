"""The statistics of a checkpoint history (``koembed history``), as data.

Rows are runs ordered by checkpoint step, then time. Each row has its record's own values and
intervals (category averages and the weighted average, or the tasks), and two paired
comparisons made by the gate's own rule (:func:`compare.compare_records`: per task the
one-sided randomisation test, Holm over the tasks; the averages' paired bootstrap intervals,
:func:`compare.average_deltas`): against the previous row and against the best row before it.

**The best checkpoint and its tie group.** The observed best is the row with the highest
weighted average. Each other row is tested against it with the weighted average's one-sided
paired randomisation test (:func:`permutation.weighted_paired_test`: one swap pattern applied
to every task at once, the scheme's weights on the task deltas), and the p-values for "this row
is worse than the best" are Holm-adjusted over the other rows. A row stays in the tie group
unless the gate's verdict rule (:func:`multiplicity.paired_verdict`: adjusted p below
``1 - confidence`` and a shown drop of at least the minimum effect) calls it worse; a row that
cannot be tested (no per-example results) stays in it too. So the tie group is never smaller
than the data allow: with more than one row in it there is no winner, only an observed best.
Choosing the best is a post-selection (its own values are the maximum of noisy values and
read high); the report says so.

Plain module: no pytest, no torch, no mteb.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pytest_koembed.errors import KoembedError
from pytest_koembed.evaluation.per_example import pair_examples
from pytest_koembed.gate.compare import IMPROVED, REGRESSED, GateSettings, compare_records
from pytest_koembed.stats import multiplicity, permutation, rules

WEIGHTED = "weighted"
MANY_CHECKPOINTS = 3
"""Above this many rows on a test split, the report warns that selecting on it overfits."""


@dataclass
class Run:
    """One run as a row needs it: a label (the checkpoint's name), its record and frames."""

    label: str
    path: str
    record: Mapping[str, Any]
    checkpoint: Mapping[str, Any]
    frames: Mapping[str, pd.DataFrame] | None
    frames_note: str | None = None


@dataclass
class Step:
    """A row compared with an earlier row (``against``), paired, by the gate's rule."""

    against: str
    weighted: dict[str, Any] | None = None  # {base, new, delta, delta_ci}
    categories: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # column -> delta, p, verdict
    regressed: list[str] = field(default_factory=list)
    improved: list[str] = field(default_factory=list)
    note: str | None = None  # why it was not compared

    def to_dict(self) -> dict[str, Any]:
        return {
            "against": self.against,
            "weighted_average": self.weighted,
            "categories": self.categories,
            "tasks": self.tasks,
            "regressed": self.regressed,
            "improved": self.improved,
            "note": self.note,
        }


@dataclass
class Row:
    run: Run
    values: dict[str, dict[str, Any]]  # column -> {value, ci}
    vs_previous: Step | None = None
    vs_best_so_far: Step | None = None
    vs_best: dict[str, Any] | None = None  # the tie test: delta, p_value, p_adjusted, verdict
    in_tie_group: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": dict(self.run.checkpoint),
            "label": self.run.label,
            "record": self.run.path,
            "started": self.run.record.get("started"),
            "values": self.values,
            "vs_previous": self.vs_previous.to_dict() if self.vs_previous else None,
            "vs_best_so_far": self.vs_best_so_far.to_dict() if self.vs_best_so_far else None,
            "vs_best": self.vs_best,
            "in_tie_group": self.in_tie_group,
            "per_example_results": self.run.frames is not None,
            "per_example_note": self.run.frames_note,
        }


@dataclass
class HistoryTable:
    settings: GateSettings
    columns: list[str]
    rows: list[Row]
    suite: str | None
    scheme: str
    split: str
    best: int | None = None  # index of the observed best row
    selected_on_dev: str | None = None  # a test table: the row of the checkpoint dev selected
    notes: list[str] = field(default_factory=list)

    @property
    def tie_group(self) -> list[Row]:
        return [r for r in self.rows if r.in_tie_group]

    @property
    def winner(self) -> Row | None:
        """The best row when it alone is in its tie group; None otherwise (no false winner)."""
        group = self.tie_group
        return group[0] if len(group) == 1 else None

    @property
    def many_on_test(self) -> bool:
        return len(self.rows) > MANY_CHECKPOINTS and "test" in self.split.split(",")


def _values(record: Mapping[str, Any], columns: Sequence[str], tasks: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    by_column = {t.get("column"): t for t in record.get("tasks") or []}
    averages = record.get("category_averages") or {}
    cis = record.get("category_average_ci") or {}
    for name in columns:
        if name == WEIGHTED:
            out[name] = {
                "value": record.get("weighted_average"),
                "ci": record.get("weighted_average_ci"),
            }
        elif tasks:
            task = by_column.get(name) or {}
            out[name] = {"value": task.get("value"), "ci": task.get("ci")}
        else:
            out[name] = {"value": averages.get(name), "ci": cis.get(name)}
    return out


def _columns(runs: Sequence[Run], tasks: bool) -> list[str]:
    names: list[str] = []
    for run in runs:
        if tasks:
            found = [str(t.get("column")) for t in run.record.get("tasks") or []]
        else:
            found = list(run.record.get("category_averages") or {})
        names += [n for n in found if n not in names]
    return [*names, WEIGHTED]


def step(base: Run, new: Run, settings: GateSettings) -> Step:
    """``new`` against ``base`` by ``compare.compare_records``: Holm over the tasks."""
    out = Step(against=base.label)
    if base.frames is None or new.frames is None:
        which = base if base.frames is None else new
        out.note = f"{which.label}: no per-example results ({which.frames_note}); not paired"
        return out
    try:
        comparison = compare_records(
            base.record,
            base.frames,
            new.record,
            new.frames,
            settings,
            base_path=base.label,
            new_path=new.label,
        )
    except KoembedError as exc:
        out.note = f"not paired: {exc}"
        return out
    out.weighted = comparison.averages.get("weighted_average")
    out.categories = dict(comparison.averages.get("categories") or {})
    for t in comparison.paired:
        out.tasks[t.column] = {
            "delta": t.delta,
            "delta_ci": None if t.delta_ci is None else list(t.delta_ci),
            "p_adjusted": t.p_adjusted,
            "p_improvement_adjusted": t.p_improvement_adjusted,
            "verdict": t.verdict,
        }
    out.regressed = [t.column for t in comparison.tasks if t.verdict == REGRESSED]
    out.improved = [t.column for t in comparison.tasks if t.verdict == IMPROVED]
    if comparison.notes and not comparison.paired:
        out.note = comparison.notes[0]
    return out


def _weighted_pairs(best: Run, other: Run) -> list[tuple[str, str, str, Any, Any]]:
    """The tasks of both runs, aligned, for ``permutation.weighted_paired_test``."""
    assert best.frames is not None and other.frames is not None
    tasks = {t.get("column"): t for t in other.record.get("tasks") or []}
    pairs = []
    for column, frame in best.frames.items():
        task = tasks.get(column)
        if task is None or column not in other.frames:
            raise KoembedError(f"{column}: not in both runs' per-example results")
        base, new = pair_examples(frame, other.frames[column], name=column)
        rule = rules.task_rule(str(task["value_rule"]), task.get("main_score"))
        pairs.append((str(column), str(task["category"]), rule, base, new))
    return pairs


def tie_group(rows: Sequence[Row], best: int, scheme: str, settings: GateSettings) -> None:
    """Each row's one-sided paired test of the weighted average against the best row, Holm
    over the other rows; marks the tie group (``Row.in_tie_group``; module docstring)."""
    top = rows[best].run
    tested: dict[int, permutation.WeightedTest] = {}
    for i, row in enumerate(rows):
        if i == best:
            continue
        row.in_tie_group = True  # until a test says otherwise
        if top.frames is None or row.run.frames is None:
            which = top if top.frames is None else row.run
            row.vs_best = {"note": f"not tested: {which.label} has no per-example results"}
            continue
        try:
            tested[i] = permutation.weighted_paired_test(
                _weighted_pairs(top, row.run),
                scheme,
                level=settings.confidence,
                family_size=max(len(rows) - 1, 1),
            )
        except KoembedError as exc:
            row.vs_best = {"note": f"not tested: {exc}"}
    rows[best].in_tie_group = True
    order = list(tested)
    adjusted = multiplicity.holm([tested[i].p_value for i in order])
    for i, adj in zip(order, adjusted, strict=True):
        test = tested[i]
        verdict = multiplicity.paired_verdict(test.delta, adj, *_args(settings))
        rows[i].vs_best = {
            "delta": test.delta,
            "p_value": test.p_value,
            "p_adjusted": adj,
            "verdict": "worse" if verdict == REGRESSED else "cannot tell",
        }
        rows[i].in_tie_group = verdict != REGRESSED


def _args(settings: GateSettings) -> tuple[float, float]:
    return settings.confidence, settings.min_effect


def _best_index(rows: Sequence[Row], upto: int | None = None) -> int | None:
    scored = [
        (float(r.values[WEIGHTED]["value"]), -i, i)
        for i, r in enumerate(rows[:upto])
        if r.values[WEIGHTED]["value"] is not None
    ]
    return max(scored)[2] if scored else None


def build_history(
    runs: Sequence[Run], settings: GateSettings, *, tasks: bool = False, split: str = "test"
) -> HistoryTable:
    """The table of ``runs`` (already in row order and of one kind: suite, scheme, source,
    level, split): values, the paired steps, the observed best and its tie group."""
    if not runs:
        raise KoembedError("no run to show")
    columns = _columns(runs, tasks)
    rows = [Row(run, _values(run.record, columns, tasks)) for run in runs]
    table = HistoryTable(
        settings,
        columns,
        rows,
        suite=str((runs[0].record.get("suite") or {}).get("name")),
        scheme=str(runs[0].record.get("scheme") or ""),
        split=split,
    )
    steps: dict[tuple[int, int], Step] = {}
    for i in range(1, len(rows)):
        steps[(i - 1, i)] = step(rows[i - 1].run, rows[i].run, settings)
        rows[i].vs_previous = steps[(i - 1, i)]
        so_far = _best_index(rows, i)
        if so_far is not None:
            key = (so_far, i)
            if key not in steps:
                steps[key] = step(rows[so_far].run, rows[i].run, settings)
            rows[i].vs_best_so_far = steps[key]
    table.best = _best_index(rows)
    if table.best is not None and table.scheme:
        tie_group(rows, table.best, table.scheme, settings)
    return table


def table_dict(table: HistoryTable) -> dict[str, Any]:
    """The table as JSON data (``koembed history --json``), the same numbers as the text."""
    best = table.rows[table.best] if table.best is not None else None
    winner = table.winner
    return {
        "suite": table.suite,
        "scheme": table.scheme,
        "split": table.split,
        "confidence": table.settings.confidence,
        "min_effect": table.settings.min_effect,
        "columns": table.columns,
        "rows": [r.to_dict() for r in table.rows],
        "best": None if best is None else best.run.label,
        "tie_group": [r.run.label for r in table.tie_group],
        "winner": None if winner is None else winner.run.label,
        "selected_on_dev": table.selected_on_dev,
        "tie_test": {
            "test": "one-sided paired randomisation test of the weighted average against the "
            "observed best (permutation.weighted_paired_test), Holm over the other rows",
            "paired_method_version": permutation.PAIRED_METHOD_VERSION,
        },
        "notes": list(table.notes),
    }
