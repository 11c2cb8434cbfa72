"""Task counts and averages of one run, as every output states them.

One count of the suite's tasks, each in exactly one state: scored, failed (evaluated with an
error), not run (selected, but the session ended first) or deselected (``-k`` / ``-m`` /
``--deselect``). The summary, the run record and the chart all use it.

An average over a category with any task that was not scored is **incomplete**: it is not the
leaderboard's average for that category, so ``category_averages`` holds ``None`` for it and the
category is listed in ``incomplete_categories``. Its mean over the tasks that were scored is kept
only in ``partial_category_averages``, with the number of tasks it covers (``None`` when none
was scored). The weighted average is given only for a complete suite.

Plain functions: no pytest, no mteb, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pytest_koembed.protocol.scoring import get_scheme, mteb_averages, summarize
from pytest_koembed.protocol.spec import Suite


@dataclass(frozen=True)
class TaskCounts:
    """How many of the suite's tasks are in each state; they add up to ``total``."""

    total: int
    scored: int
    failed: int
    not_run: int
    deselected: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskCounts:
        return cls(**{k: int(data.get(k) or 0) for k in cls.__dataclass_fields__})

    def describe(self) -> str:
        """``4 of 4 tasks scored`` / ``1 of 15 tasks scored, 1 failed, 13 deselected``."""
        text = f"{self.scored} of {self.total} tasks scored"
        for count, what in (
            (self.failed, "failed"),
            (self.not_run, "not run"),
            (self.deselected, "deselected"),
        ):
            if count:
                text += f", {count} {what}"
        return text


def count_tasks(suite: Suite, statuses: Mapping[str, str], selected: Iterable[str]) -> TaskCounts:
    """``statuses``: column -> ``"ok"`` or ``"error"`` for every task that reported."""
    chosen = set(selected) | set(statuses)
    scored = sum(1 for t in suite.tasks if statuses.get(t.column) == "ok")
    failed = sum(1 for t in suite.tasks if t.column in statuses and statuses[t.column] != "ok")
    deselected = sum(1 for t in suite.tasks if t.column not in chosen)
    return TaskCounts(
        total=len(suite.tasks),
        scored=scored,
        failed=failed,
        not_run=len(suite.tasks) - scored - failed - deselected,
        deselected=deselected,
    )


def average_fields(
    suite: Suite, scheme: str, values: Mapping[str, float | None], counts: TaskCounts
) -> dict[str, Any]:
    """The run record's count and average fields.

    ``values``: column -> task value for the scored tasks (a missing or None value is a task that
    was not scored, whatever the reason). Under the ``mteb`` scheme the record also has
    ``mteb_averages``: mteb's own aggregation, keyed as mteb's leaderboard names it
    (:func:`mteb_fields`).
    """
    rows = [(t.column, t.category, values.get(t.column)) for t in suite.tasks]
    summary = summarize(rows, scheme)
    partial: dict[str, dict[str, Any]] = {}
    for category in summary.incomplete:
        scored = [v for _, cat, v in rows if cat == category and v is not None]
        partial[category] = {
            # None when no task of it was scored
            "value": get_scheme(scheme).average(scored) if scored else None,
            "tasks": len(scored),
            "of": sum(1 for _, cat, _ in rows if cat == category),
        }
    notes = []
    if summary.weighted is None and summary.incomplete:
        notes.append(f"not computed: the suite is incomplete ({counts.describe()})")
    unweighted = unweighted_categories(suite, scheme)
    if unweighted:
        notes.append(f"{', '.join(unweighted)} not weighted by this scheme")
    note = "; ".join(notes) or None
    return {
        "task_counts": counts.to_dict(),
        "category_averages": dict(summary.category_averages),
        "partial_category_averages": partial,
        "incomplete_categories": sorted(summary.incomplete),
        "weighted_average": summary.weighted,
        "weighted_average_note": note,
        **mteb_fields(suite, scheme, values),
    }


def mteb_fields(
    suite: Suite, scheme: str, values: Mapping[str, float | None]
) -> dict[str, dict[str, Any]]:
    """``{"mteb_averages": {...}}`` under the ``mteb`` scheme, else nothing.

    ``Mean (Task)``, ``Mean (TaskType)`` and the mean per task type under mteb's type names
    (``PairClassification``, not the NLI category: ``mteb_suites.mteb_task_type``), all None while
    any task of the suite has no value (mteb's leaderboard leaves them empty then).
    """
    if scheme != "mteb":
        return {}
    from pytest_koembed.protocol.mteb_suites import mteb_task_type

    rows = [(mteb_task_type(t), values.get(t.column)) for t in suite.tasks]
    return {"mteb_averages": mteb_averages(rows)}


def unweighted_categories(suite: Suite, scheme: str) -> list[str]:
    """The suite's categories that a category-weights scheme gives no weight (Classification and
    Reranking under the ko-leaderboard-v1 schemes, which weigh the leaderboard's four)."""
    needs = get_scheme(scheme).needs
    if not needs:  # task-mean and the like: every task counts
        return []
    present = dict.fromkeys(t.category for t in suite.tasks)
    return [c for c in present if c not in needs]
