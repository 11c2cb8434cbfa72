"""Every number a user reads, as text: one module, one rounding rule.

The rule is the leaderboard's (:func:`protocol.scoring.round_half_up`): round half away from
zero at 2 decimals, on the number as Python prints it, so that ``76.125`` is ``76.13`` and a delta
of ``-4.575`` is ``-4.58`` wherever they appear: the summary, ``koembed compare``, ``koembed
gate``, rows, the chart's labels and the baseline listings. Each kind of number has one named
format (as pytest-benchmark's ``table.py`` has), and the column headers and legends that say
what the numbers are live here too.

Plain functions of numbers and record fields: no pytest, no pandas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pytest_koembed.protocol.scoring import (
    delta_interval_text,
    fixed_text,
    format_value,
    points_text,
    signed_text,
)
from pytest_koembed.stats.bootstrap import DEFAULT_LEVEL as DEFAULT_CONFIDENCE

__all__ = [
    "ASYMMETRY",
    "DELTA_HEADER",
    "P_HEADER",
    "category",
    "cell",
    "count",
    "delta",
    "delta_interval",
    "dims",
    "fixed",
    "interval",
    "intervals_line",
    "legend",
    "level",
    "mde",
    "p",
    "paired_gate",
    "percent",
    "points",
    "rank",
    "seconds",
    "signed",
    "value",
    "value_interval",
    "verdict_cell",
]

DELTA_HEADER = "delta [unadjusted CI]"
P_HEADER = "p (Holm, drop)"

ASYMMETRY = 0.5
"""An interval is shown as ``[low, high]`` instead of ``±half`` when its two sides differ by more
than this fraction of its half-width (or the value lies outside it)."""

_REGRESSED = "regressed"

fixed = fixed_text
"""The rule itself: rounded half up at 2 (or ``ndigits``) decimals, all printed: ``76.13``."""
signed = signed_text
"""A delta: ``+1.20``, ``-4.58``."""
delta_interval = delta_interval_text
"""A delta with its interval: ``-0.42 [-1.10, +0.31]``."""
points = points_text
"""A setting in points as given: ``1.00``, ``0.125``."""


def value(x: float | None) -> str:
    """A score, an average or a baseline value: ``76.13``; ``n/a`` when there is none (or it is
    not a finite number)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return fixed(x)


def cell(x: float | None) -> str:
    """A leaderboard table cell: 2 decimals, trailing zeros dropped (``89.2``, ``78``), ``-``
    for none (the leaderboard's own layout, ``protocol.scoring.format_value``)."""
    return format_value(x)


def delta(x: float | None) -> str:
    """A delta cell: ``+0.40``, or ``""`` without one."""
    return "" if x is None else signed(x)


def interval(low: float, high: float) -> str:
    """An interval of values: ``[74.10, 78.02]``."""
    return f"[{fixed(low)}, {fixed(high)}]"


def value_interval(x: float, ci: Mapping[str, Any] | None) -> str:
    """What follows a value in the summary: ``±0.85`` (half the interval's width), or
    ``[74.10, 78.02]`` when the interval is asymmetric about the value (its two sides differ by
    more than half the half-width, or the value lies outside it); ``""`` without an interval."""
    if not ci:
        return ""
    low, high = float(ci["low"]), float(ci["high"])
    half = (high - low) / 2.0
    below, above = x - low, high - x
    if below < 0 or above < 0 or abs(above - below) > ASYMMETRY * half:
        return interval(low, high)
    return f"±{fixed(half)}"


def p(x: float | None) -> str:
    """A p-value cell: ``0.363``, ``<0.001``, ``""`` without one."""
    if x is None:
        return ""
    return "<0.001" if x < 0.001 else fixed(x, 3)


def mde(x: float | None, cannot_fail: str | None = None) -> str:
    """The minimum detectable effect: ``1.23`` points, or ``none`` (the task cannot fail at this
    level)."""
    if cannot_fail or x is None:
        return "none"
    return fixed(x)


def level(confidence: float) -> str:
    """A confidence level: ``95%``, ``99.9%``."""
    return f"{confidence * 100:.10g}%"


def count(n: int) -> str:
    """A count of texts or tasks: ``1,234``."""
    return f"{n:,}"


def percent(part: float, total: float) -> str:
    """A share: ``5%`` (``0%`` of nothing)."""
    return f"{100 * part / total:.0f}%" if total else "0%"


def ratio(x: float) -> str:
    """A ratio such as a split's imbalance (max / mean): ``1.07``."""
    return f"{x:.2f}"


def seconds(x: float) -> str:
    """A wall time: ``2.7``."""
    return f"{x:.1f}"


def dims(x: float) -> str:
    """A mean number of active dimensions: ``95.3``."""
    return f"{x:.1f}"


def verdict_cell(task: Mapping[str, Any]) -> str:
    """A task's verdict as the tables show it: ``REGRESSED`` stands out, ``(cannot fail)`` for a
    paired task too small to fail at this level, ``(stale)`` for a stale baseline cell."""
    verdict = task.get("verdict")
    if not verdict:
        return ""
    text = verdict.upper() if verdict == _REGRESSED else verdict
    if task.get("cannot_fail") and task.get("p_value") is not None:
        text += " (cannot fail)"
    return text + (" (stale)" if task.get("baseline_stale") else "")


def paired_gate(confidence: float, min_effect: float, n_tasks: int) -> str:
    """``Holm over 6 tasks at 95% confidence, min effect 0.50 points``."""
    return (
        f"Holm over {n_tasks} task{'s' if n_tasks != 1 else ''} at "
        f"{level(confidence)} confidence, min effect {fixed(min_effect)} points"
    )


def legend(confidence: float) -> str:
    """The line that says which number is which."""
    return (
        f"delta [CI]: {level(confidence)} paired bootstrap interval, unadjusted for the number "
        "of tasks; p: one-sided for a drop, Holm-adjusted over the run (an unadjusted interval "
        "and an adjusted p can disagree); MDE: the drop caught with 80% power at the task's "
        "Holm step (none: cannot fail at this level)"
    )


def category(record: Mapping[str, Any], category: str) -> str | None:
    """How the summary shows a category: ``STS 77.32``, ``STS 77.32 (2 of 3 tasks)`` for a
    partial average, ``STS n/a (0 of 3 tasks)``; None for a category the record does not have."""
    averages = record.get("category_averages") or {}
    if category not in averages:
        return None
    if category not in (record.get("incomplete_categories") or []):
        return f"{category} {value(averages[category])}"
    partial = (record.get("partial_category_averages") or {}).get(category)
    if not partial:  # a record from before partial averages were kept
        return f"{category} {value(None)} (incomplete)"
    return f"{category} {value(partial['value'])} ({partial['tasks']} of {partial['of']} tasks)"


def intervals_line(record: Mapping[str, Any]) -> str | None:
    """``intervals: 95% bootstrap over examples (1000 resamples, seed 0)``, or None when the
    record has no interval at all."""
    info = record.get("intervals")
    has_any = any(t.get("ci") or t.get("ci_note") for t in record.get("tasks") or []) or record.get(
        "weighted_average_ci"
    )
    if not isinstance(info, Mapping) or not has_any:
        return None
    confidence = float(info.get("level", DEFAULT_CONFIDENCE))
    percent = level(confidence)
    notes = [info.get("note")] + [
        f"{t.get('column')}: {t['ci_note']}"
        for t in record.get("tasks") or []
        if t.get("ci_note") and t.get("status") == "ok"
    ]
    note = "; ".join(n for n in notes if n)
    return (
        f"intervals: {percent} bootstrap over examples ({info.get('resamples')} resamples, "
        f"seed {info.get('seed')})" + (f"; {note}" if note else "")
    )


def rank(record: Mapping[str, Any]) -> str | None:
    """``rank 12 of 40 on ko-leaderboard-v1 (95% interval: 9 to 15)``, or None."""
    entry = record.get("rank")
    if not isinstance(entry, Mapping) or entry.get("rank") is None:
        return None
    line = f"rank {entry['rank']} of {entry['of']} on {entry['leaderboard']}"
    ends = entry.get("interval")
    if ends:
        percent = level(float(entry.get("level", DEFAULT_CONFIDENCE)))
        best, worst = ends
        span = f"{best}" if best == worst else f"{best} to {worst}"
        line += f" ({percent} interval: {span})"
    return line
