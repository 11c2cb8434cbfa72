"""Confidence intervals of a run: per task, per average, and of its rank among published models.

The glue between a run's per-example frames (``pytest_koembed.evaluation.per_example``) and the pure
statistics (``stats.bootstrap``, ``stats.rules``), in the shapes the run record and the summary use:

- :func:`task_ci`: a task's percentile bootstrap interval, computed on the worker right after
  evaluation, as ``TaskScore.ci = {"level", "low", "high"}`` (x100, unrounded, like ``value``).
- :func:`average_fields`: the record's ``intervals``, ``category_average_ci``,
  ``weighted_average_ci`` and ``rank`` fields, resampling every task at once on the controller.

How an interval is shown (``76.94 ±0.85``) is ``reports.text``'s.

Every draw is seeded (:data:`kernels.DEFAULT_SEED`) with the task's column as its stream, so the
same run gives the same intervals in any process and under any ``-n``.

Plain functions: no pytest, no mteb, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.leaderboards import run_encoder_type
from pytest_koembed.protocol.scoring import TaskRow, get_scheme, summarize
from pytest_koembed.protocol.spec import Suite
from pytest_koembed.stats import bootstrap, kernels, rules

DEFAULT_CONFIDENCE = bootstrap.DEFAULT_LEVEL
RESAMPLES = kernels.DEFAULT_RESAMPLES
SEED = kernels.DEFAULT_SEED
METHOD = "percentile bootstrap over examples"


def _interval_dict(
    level: float, low: float, high: float, undefined: int = 0
) -> dict[str, Any] | None:
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    out: dict[str, Any] = {"level": level, "low": float(low), "high": float(high)}
    if undefined:
        out["undefined"] = int(undefined)  # resamples left out: the value is undefined in them
    return out


def _ci_dict(level: float, interval: bootstrap.Interval | None) -> dict[str, Any] | None:
    if interval is None:
        return None
    return _interval_dict(level, interval.low, interval.high, interval.undefined)


def task_ci(
    frame: Any,
    rule: str,
    column: str,
    level: float = DEFAULT_CONFIDENCE,
    main_score: str | None = None,
) -> dict[str, Any] | None:
    """A task's interval from its per-example frame, or None when it has none (no frame, a value
    rule that cannot be resampled, or more undefined resamples than an interval may leave out:
    ``bootstrap.percentile_interval``). ``main_score``: the task's main score key, which a
    ``main_score`` rule resamples (``rules.task_rule``). ``"undefined": k`` when k resamples
    were left out."""
    return task_ci_and_note(frame, rule, column, level, main_score)[0]


def task_ci_and_note(
    frame: Any,
    rule: str,
    column: str,
    level: float = DEFAULT_CONFIDENCE,
    main_score: str | None = None,
) -> tuple[dict[str, Any] | None, str | None]:
    """:func:`task_ci`, and a one-line note (``TaskScore.ci_note``) when resamples were left out
    or no interval could be given although the task has per-example results."""
    if frame is None:
        return None, None
    try:
        interval = bootstrap.task_confidence_interval(
            frame, rules.task_rule(rule, main_score), level, RESAMPLES, SEED, stream=column
        )
    except (KoembedError, ValueError, ArithmeticError) as exc:  # never fails a task
        return None, f"no interval: {exc}"
    note = interval.why_undefined("the task value") if interval.undefined else None
    return _ci_dict(level, interval), note


def _published_weighted(
    suite: Suite, scheme: str, run_name: str, encoder_type: str = "dense"
) -> tuple[str, dict[str, float]] | None:
    """The weighted averages of the published rows of the leaderboard the run is ranked in.

    The same leaderboard and numbers as the run's ``--koembed-row`` tables
    (``publish.run_tables``): the suite's first shipped leaderboard that takes runs of the
    model's ``encoder_type`` (dense / sparse: ``tables.runs_join``), every row
    under the run's scheme; the row of the run's own name is left out (a re-run of a published
    model replaces its row), and rows with no weighted average are not ranked.
    """
    from pytest_koembed.protocol.leaderboards import leaderboards_for_suite, load_leaderboard
    from pytest_koembed.protocol.tables import entries_from_leaderboard, runs_join

    boards = [n for n in leaderboards_for_suite(suite.name) if runs_join(n, encoder_type)]
    if not boards:
        return None
    board = load_leaderboard(boards[0])
    published: dict[str, float] = {}
    for entry in entries_from_leaderboard(board, suite):
        if entry.name.casefold() == run_name.casefold():
            continue
        summary = summarize(
            [TaskRow(t.column, t.category, entry.values.get(t.column)) for t in suite.tasks],
            scheme,
        )
        if summary.weighted is not None:
            published[entry.name] = summary.weighted
    return board.name, published


def rank_fields(
    suite: Suite,
    scheme: str,
    run_name: str,
    weighted: float | None,
    weighted_replicates: Any,
    level: float = DEFAULT_CONFIDENCE,
    encoder_type: str = "dense",
) -> dict[str, Any] | None:
    """``{"leaderboard", "rank", "interval": [best, worst], "of", "level"}``, or None (no
    leaderboard, no weighted average).

    ``rank`` is the run's rank among the published weighted averages (as the leaderboard
    table ranks it); ``interval`` the ranks its resampled weighted averages take among the same
    fixed numbers (``bootstrap.rank_interval``); ``of`` the rows of the table with the run in it.
    ``interval`` is None when there are no replicates (a task without per-example results).
    """
    if weighted is None:
        return None
    found = _published_weighted(suite, scheme, run_name, encoder_type)
    if found is None:
        return None
    name, published = found
    interval = None
    if (
        weighted_replicates is not None
        and bootstrap.percentile_interval(
            np.asarray(weighted_replicates, dtype=np.float64), level
        ).defined
    ):  # the rule for undefined resamples holds for the rank as for the average
        best, worst = bootstrap.rank_interval(weighted_replicates, published, level)
        interval = [best, worst]
    return {
        "leaderboard": name,
        "rank": bootstrap.rank_among(weighted, published),
        "interval": interval,
        "of": len(published) + 1,
        "level": level,
    }


def average_fields(
    suite: Suite,
    scheme: str,
    tasks: Mapping[str, tuple[str, Any]],
    weighted: float | None,
    run_name: str,
    level: float = DEFAULT_CONFIDENCE,
    encoder_type: str = "dense",
) -> dict[str, Any]:
    """The run record's interval fields for the averages and the rank.

    ``tasks``: column -> (value rule, per-example frame[, main score key]) for each scored task
    that has per-example results (a ``main_score`` rule resamples the task's main score:
    ``rules.task_rule``). A category with a task missing from it (not scored, deselected, without
    per-example results, or with a rule that cannot be resampled) has no interval (``null``), nor
    has the weighted average then: the same rule as ``averages.py`` applies to the averages
    themselves, and a partial average gets no interval. Resamples in which a task's value is
    undefined follow ``bootstrap.percentile_interval``'s rule; the ``intervals`` block's
    ``undefined`` (column -> count) and ``note`` say how many and what became of them.
    ``weighted``: the run's weighted average (for the rank).
    """

    def sample(column: str, category: str) -> bootstrap.TaskSample:
        if column not in tasks:
            return bootstrap.TaskSample(column, category, "", None)
        rule, frame, *main = tasks[column]
        return bootstrap.TaskSample(
            column, category, rules.task_rule(rule, main[0] if main else None), frame
        )

    samples = [sample(t.column, t.category) for t in suite.tasks]
    sch = get_scheme(scheme)
    notes: list[str] = []
    result = None
    undefined: dict[str, int] = {}
    if any(s.frame is not None for s in samples):
        try:
            result = bootstrap.average_intervals(samples, sch.name, level, RESAMPLES, SEED)
        except (KoembedError, ValueError, ArithmeticError) as exc:  # never fails the run
            notes.append(f"no interval for the averages: {exc}")
    if result is not None:
        undefined = result.undefined
        notes += [
            f"no interval for the averages of {column}: {why}"
            for column, why in result.refused.items()
        ]
        if undefined:
            counts = ", ".join(f"{c} {k} of {RESAMPLES}" for c, k in undefined.items())
            shown = [ci for ci in [*result.categories.values(), result.weighted] if ci]
            if all(ci.defined for ci in shown):
                notes.append(
                    f"resamples in which a task's value is undefined are left out ({counts})"
                )
            else:
                notes.append(
                    f"no interval for an average with more than "
                    f"{bootstrap.max_undefined(RESAMPLES, level)} undefined resamples ({counts})"
                )
        categories = {cat: _ci_dict(level, ci) for cat, ci in result.categories.items()}
        weighted_ci = _ci_dict(level, result.weighted)
        replicates = result.weighted_replicates
    else:
        summary = summarize([TaskRow(t.column, t.category, None) for t in suite.tasks], sch)
        categories = {cat: None for cat in summary.category_averages}
        weighted_ci, replicates = None, None
    info: dict[str, Any] = {"method": METHOD, "level": level, "resamples": RESAMPLES, "seed": SEED}
    if undefined:
        info["undefined"] = dict(undefined)
    if notes:
        info["note"] = "; ".join(notes)
    return {
        "intervals": info,
        "category_average_ci": categories,
        "weighted_average_ci": weighted_ci,
        "rank": rank_fields(suite, sch.name, run_name, weighted, replicates, level, encoder_type),
    }


class RunIntervals:
    """Adds the averages' and the rank's intervals to a run record (:meth:`add_to`).

    The controller rebuilds the record after every finished task and several times at the end;
    the intervals are recomputed only when a task's frame, the weighted average or the run's
    name changed since the last call.
    """

    def __init__(self, level: float = DEFAULT_CONFIDENCE) -> None:
        self.level = level
        self._key: tuple[Any, ...] | None = None
        self._fields: dict[str, Any] = {}

    def fields(
        self, record: Mapping[str, Any], suite: Suite, examples: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The interval fields of ``record`` (see :func:`average_fields`), from ``examples``
        (column -> per-example frame) of its scored tasks."""
        scored = [
            t
            for t in record.get("tasks") or []
            if t.get("status") == "ok" and examples.get(t["column"]) is not None
        ]
        averages = record.get("category_averages") or {}
        if not any(v is not None for v in averages.values()):
            scored = []  # no average to give an interval to (yet): skip the resampling
        tasks = {
            t["column"]: (
                str(t.get("value_rule") or ""),
                examples[t["column"]],
                t.get("main_score"),
            )
            for t in scored
        }
        model = record.get("model") or {}
        run_name = str(model.get("row_name") or model.get("name") or "")
        encoder_type = run_encoder_type(model)
        scheme = str(record.get("scheme") or suite.scheme)
        weighted = record.get("weighted_average")
        key = (
            scheme,
            tuple((t["column"], t.get("value"), id(tasks[t["column"]][1])) for t in scored),
            weighted,
            run_name,
            encoder_type,
        )
        if key != self._key:
            self._fields = average_fields(
                suite, scheme, tasks, weighted, run_name, self.level, encoder_type
            )
            self._key = key
        return self._fields

    def add_to(
        self, record: Mapping[str, Any], suite: Suite, examples: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``record`` with the interval fields placed right after its averages."""
        fields = self.fields(record, suite, examples)
        out: dict[str, Any] = {}
        for name, value in record.items():
            out[name] = value
            if name == "weighted_average_note":
                out.update(fields)
        out.update({k: v for k, v in fields.items() if k not in out})
        return out
