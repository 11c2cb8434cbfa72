"""Bootstrap intervals: a task's value, its resampled values and interval, the averages'
intervals and the rank among published numbers.

Pure numpy. A task's resamples come from its own seeded stream
(:func:`pytest_koembed.stats.kernels.bootstrap_counts`, ``stream=column``), so two runs'
replicates pair up by index and a task's draws do not depend on which other tasks ran.
Resamples in which a value is undefined follow the one rule of :func:`percentile_interval`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.scoring import get_scheme, round_half_up, summarize
from pytest_koembed.stats.kernels import DEFAULT_RESAMPLES, DEFAULT_SEED, bootstrap_counts
from pytest_koembed.stats.rules import (
    CLUSTERING_STATISTIC,
    frame_columns,
    is_clustering,
    value_metric,
)

DEFAULT_LEVEL = 0.95
"""Confidence level of every interval; ``1 - level`` is the run-level false-alarm budget."""


# ---------------------------------------------------------------------------------------------
# One task: value, resampled values, interval
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A confidence interval on the x100 scale of task values.

    ``undefined``: how many of the resamples had no value (see :func:`percentile_interval`);
    ``resamples``: how many were drawn (0 where not known). ``low`` and ``high`` are NaN when
    too many were undefined to give an interval (:attr:`defined` is False).
    """

    level: float
    low: float
    high: float
    undefined: int = 0
    resamples: int = field(default=0, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The run record's form: ``{"level": 0.95, "low": L, "high": H}``, with
        ``"undefined": k`` when k > 0 of the resamples were left out."""
        out: dict[str, Any] = {"level": self.level, "low": self.low, "high": self.high}
        if self.undefined:
            out["undefined"] = self.undefined
        return out

    @property
    def defined(self) -> bool:
        """Whether there is an interval (both ends finite)."""
        return math.isfinite(self.low) and math.isfinite(self.high)

    def why_undefined(self, what: str = "the value") -> str:
        """One line: how many resamples had no value, and the rule that left them out."""
        total = f" of {self.resamples}" if self.resamples else ""
        if self.defined:
            return (
                f"{self.undefined}{total} resamples left out of the interval: {what} is "
                "undefined in them"
            )
        return (
            f"no interval: {what} is undefined in {self.undefined}{total} resamples, more than "
            f"the {max_undefined(self.resamples or DEFAULT_RESAMPLES, self.level)} (one tail's "
            "share) an interval may leave out"
        )

    @property
    def half_width(self) -> float:
        """Half the width: what the summary prints as ``±``."""
        return (self.high - self.low) / 2.0

    def __contains__(self, value: object) -> bool:
        return isinstance(value, (int, float)) and self.low <= value <= self.high


def check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise KoembedError(f"confidence level must be between 0 and 1, got {level!r}")


def max_undefined(n_resamples: int, level: float) -> int:
    """How many undefined resamples an interval may leave out: one tail's share,
    ``floor(n_resamples * (1 - level) / 2)`` (25 of 1000 at 95%)."""
    return math.floor(n_resamples * (1.0 - level) / 2.0 + 1e-9)


def percentile_interval(replicates: np.ndarray, level: float) -> Interval:
    """The percentile interval of the replicates, under the one rule for undefined resamples.

    A resample can have no value: a resampled pair task with no positive pair has no average
    precision, a resampled STS task whose drawn gold scores (or similarities) are all equal has
    no correlation; an average, or a paired difference, is undefined where any value in it is.
    Such resamples are left out and counted (``Interval.undefined``), and the interval is the
    percentile interval of the others (a bootstrap conditional on the value existing), as long
    as at most one tail's share of them is left out (:func:`max_undefined`: 25 of 1000 at 95%).
    Past that, leaving them out could move a whole tail, and there is no interval: ``low`` and
    ``high`` are NaN and the count says why. The same rule holds for task intervals, the
    averages' intervals, ``delta_ci`` and ``koembed compare``.
    """
    tail = (1.0 - level) / 2.0
    replicates = np.asarray(replicates, dtype=np.float64)
    finite = np.isfinite(replicates)
    undefined = int(replicates.size - np.count_nonzero(finite))
    if undefined > max_undefined(replicates.size, level) or undefined == replicates.size:
        return Interval(level, math.nan, math.nan, undefined, int(replicates.size))
    low, high = np.quantile(replicates[finite], [tail, 1.0 - tail])
    return Interval(level, float(low), float(high), undefined, int(replicates.size))


def frame_value(frame: Any, rule: str) -> float:
    """The task value (x100, unrounded) recomputed from its per-example frame under ``rule``
    (for ``main_score`` give :func:`task_rule`): mteb's value, its rounding included."""
    metric = value_metric(frame, rule)
    return float(metric.value_for(np.ones((metric.n, 1)))[0])


def resampled_values(frame: Any, rule: str, weights: np.ndarray) -> np.ndarray:
    """The task value (x100) under each row of count ``weights`` (B, n): shape (B,).

    With a row of ones it is the exact value; with a bootstrap row it equals the value computed
    on the rows drawn (each repeated as often as drawn).
    """
    metric = value_metric(frame, rule)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != metric.n:
        raise KoembedError(
            f"weights of shape {weights.shape} do not fit a task with {metric.n} examples"
        )
    # no copy when ``weights`` came from bootstrap_weights (a transposed example-major array)
    return metric.value_for(np.ascontiguousarray(weights.T))


def task_replicates(
    frame: Any,
    rule: str,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    stream: str = "",
) -> np.ndarray:
    """The task value in each of ``n_resamples`` bootstrap resamples of its examples: (B,).

    For clustering the value's units are mteb's rows (its 10 runs for fast clustering, one row
    for a one-set task, whose replicates are all the value: the averages take such a task as
    fixed)."""
    metric = value_metric(frame, rule)
    return metric.value_for(bootstrap_counts(metric.n, n_resamples, seed, stream))


def task_interval(
    frame: Any,
    rule: str,
    level: float = DEFAULT_LEVEL,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    stream: str = "",
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(low, high)`` of the task value, x100 scale.

    Resamples the task's units with replacement: pairs (STS, pair classification), queries
    (retrieval; the corpus stays fixed), rows of a clustering frame. For mteb's fast clustering
    (sib200) the rows are its 10 seeded runs, each a k-means fit on a subsample: the interval
    then covers the run-to-run spread of mteb's own protocol (subsample and k-means seed), not
    the spread over other test sets, and 10 rows make it somewhat narrow. For the legacy KLUE
    clustering tasks the rows are clustering sets; a task with a single set has *no* interval:
    a one-line KoembedError says so (one k-means fit of one set; nothing to resample), rather
    than a zero-width interval. Its paired test is gated on the per-document statistic
    (:data:`CLUSTERING_STATISTIC`), see :func:`paired_test`.
    Percentile, not BCa: BCa's acceleration needs a jackknife (n recomputations of a rank
    correlation or AP per task), and at these sizes the two agree to well within the
    interval's own Monte-Carlo error. Resamples in which the value is undefined follow the one
    rule of :func:`percentile_interval` (left out and counted; ``(nan, nan)`` past one tail's
    share).
    """
    interval = task_confidence_interval(frame, rule, level, n_resamples, seed, stream)
    return interval.low, interval.high


def task_confidence_interval(
    frame: Any,
    rule: str,
    level: float = DEFAULT_LEVEL,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    stream: str = "",
) -> Interval:
    """:func:`task_interval` as an :class:`Interval`, with the count of undefined resamples
    (NaN ends when more than one tail's share are undefined: :func:`percentile_interval`)."""
    check_level(level)
    if is_clustering(frame_columns(frame), rule) and value_metric(frame, rule).n == 1:
        raise KoembedError(
            "one clustering set: mteb's v-measure is one k-means fit, with no interval over "
            f"examples (the paired gate uses the per-document {CLUSTERING_STATISTIC})"
        )
    replicates = task_replicates(frame, rule, n_resamples, seed, stream)
    return percentile_interval(replicates, level)


# ---------------------------------------------------------------------------------------------
# Averages and rank
# ---------------------------------------------------------------------------------------------


class TaskSample(NamedTuple):
    """One task of a run for the averages: its column, category, value rule and frame.

    ``frame`` is None for a task with no per-example results (errored, not run): averages
    containing it have no interval, as they have no value. ``rule`` is the rule the statistics
    use (:func:`task_rule`: a ``main_score`` task's own main score key).
    """

    column: str
    category: str
    rule: str
    frame: Any


@dataclass(frozen=True)
class AverageIntervals:
    """Intervals of a run's averages (what :func:`average_intervals` returns).

    ``categories`` maps each category to its interval (None when a task of it has no frame);
    ``weighted`` is the scheme's weighted average's interval (None when incomplete);
    ``weighted_replicates`` are the weighted average in each resample (for :func:`rank_interval`;
    NaN where a task's value is undefined). ``undefined``: column -> how many of the task's
    resamples have no value (tasks with none left out); ``refused``: column -> why a task with
    per-example results could not be resampled (its averages have no interval).
    """

    scheme: str
    categories: dict[str, Interval | None]
    weighted: Interval | None
    weighted_replicates: np.ndarray | None
    undefined: dict[str, int] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


class _AverageDraws(NamedTuple):
    categories: dict[str, np.ndarray | None]
    weighted: np.ndarray | None
    undefined: dict[str, int]
    refused: dict[str, str]


def _average_draws(
    tasks: Sequence[TaskSample | tuple[str, str, str, Any]],
    scheme: str,
    n_resamples: int,
    seed: int,
) -> _AverageDraws:
    sch = get_scheme(scheme)
    rows = [TaskSample(*t) for t in tasks]
    replicates: dict[str, np.ndarray | None] = {}
    refused: dict[str, str] = {}
    for r in rows:
        if r.frame is None:
            replicates[r.column] = None
            continue
        try:
            replicates[r.column] = task_replicates(
                r.frame, r.rule, n_resamples, seed, stream=r.column
            )
        except KoembedError as exc:  # a rule with no per-example form: like a missing frame
            replicates[r.column] = None
            refused[r.column] = str(exc)
    undefined = {
        c: int(np.count_nonzero(~np.isfinite(v)))
        for c, v in replicates.items()
        if v is not None and not np.all(np.isfinite(v))
    }
    # which averages exist at all: those with every task resampled (the partial-average rule)
    present = summarize(
        [(r.column, r.category, None if replicates[r.column] is None else 0.0) for r in rows], sch
    )
    categories: dict[str, list[float]] = {cat: [] for cat in present.category_averages}
    weighted: list[float] = []
    for b in range(n_resamples):
        values = {
            r.column: None if (v := replicates[r.column]) is None else float(v[b]) for r in rows
        }
        # an undefined value leaves its averages undefined in this resample (NaN), never a
        # partial average
        summary = summarize(
            [
                (r.column, r.category, v if v is not None and math.isfinite(v) else None)
                for r in rows
                for v in [values[r.column]]
            ],
            sch,
        )
        for cat in categories:
            avg = summary.category_averages.get(cat)
            categories[cat].append(math.nan if avg is None else avg)
        weighted.append(math.nan if summary.weighted is None else summary.weighted)

    def array(cat: str | None, values: list[float]) -> np.ndarray | None:
        exists = present.weighted if cat is None else present.category_averages.get(cat)
        if exists is None or not values:
            return None
        return np.array(values, dtype=np.float64)

    return _AverageDraws(
        {cat: array(cat, vals) for cat, vals in categories.items()},
        array(None, weighted),
        undefined,
        refused,
    )


def average_replicates(
    tasks: Sequence[TaskSample | tuple[str, str, str, Any]],
    scheme: str,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> tuple[dict[str, np.ndarray | None], np.ndarray | None]:
    """The category and weighted averages of every resample (None where the run has no such
    average; NaN in a resample where a task's value is undefined).

    Each task is resampled on its own (its draws come from ``stream=column``, the same draws
    :func:`task_interval` and :func:`paired_test` make with that stream, so two runs' replicates
    pair up by index), and every replicate goes through
    :func:`pytest_koembed.protocol.scoring.summarize`: shown values rounded half-up, category means
    rounded half-even, the scheme's weights, exactly as the run's own averages are computed.
    A task whose rule cannot be resampled counts as one without a frame.
    """
    draws = _average_draws(tasks, scheme, n_resamples, seed)
    return draws.categories, draws.weighted


def average_intervals(
    tasks: Sequence[TaskSample | tuple[str, str, str, Any]],
    scheme: str,
    level: float = DEFAULT_LEVEL,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> AverageIntervals:
    """Category and weighted averages' intervals, resampling every task at once
    (:func:`average_replicates`), undefined resamples under :func:`percentile_interval`'s rule."""
    check_level(level)
    draws = _average_draws(tasks, scheme, n_resamples, seed)

    def interval(replicates: np.ndarray | None) -> Interval | None:
        return None if replicates is None else percentile_interval(replicates, level)

    return AverageIntervals(
        scheme=get_scheme(scheme).name,
        categories={cat: interval(reps) for cat, reps in draws.categories.items()},
        weighted=interval(draws.weighted),
        weighted_replicates=draws.weighted,
        undefined=draws.undefined,
        refused=draws.refused,
    )


def rank_among(value: float, published: Mapping[str, float] | Sequence[float]) -> int:
    """The rank ``value`` would take among the published numbers, as :func:`scoring.rank` ranks:
    descending, equal numbers share a rank (1 + how many published numbers are higher)."""
    numbers = np.fromiter(
        (published.values() if isinstance(published, Mapping) else published), dtype=np.float64
    )
    return 1 + int(np.sum(numbers > round_half_up(value, 2)))


def rank_interval(
    weighted_replicates: np.ndarray,
    published: Mapping[str, float] | Sequence[float],
    level: float = DEFAULT_LEVEL,
) -> tuple[int, int]:
    """The ``(best, worst)`` rank of the run among fixed published numbers, over the resamples.

    The published numbers stay fixed; each resample's weighted average (rounded to 2 decimals,
    as the table shows it) takes its competition rank among them. The interval is the
    ``(1-level)/2`` and ``(1+level)/2`` quantiles of those ranks, taken outward (lower/higher).
    Leave the run's own row out of ``published``. Resamples with no weighted average (a task's
    value undefined in them) are left out, as :func:`percentile_interval` leaves them out.
    """
    check_level(level)
    numbers = np.sort(
        np.fromiter(
            (published.values() if isinstance(published, Mapping) else published),
            dtype=np.float64,
        )
    )
    replicates = np.asarray(weighted_replicates, dtype=np.float64)
    replicates = replicates[np.isfinite(replicates)]  # undefined resamples: left out
    if replicates.size == 0:
        raise KoembedError("no resample has a weighted average: no rank interval")
    shown = np.floor(replicates * 100.0 + 0.5) / 100.0
    ranks = 1 + len(numbers) - np.searchsorted(numbers, shown, side="right")
    tail = (1.0 - level) / 2.0
    best = int(np.quantile(ranks, tail, method="lower"))
    worst = int(np.quantile(ranks, 1.0 - tail, method="higher"))
    return best, worst


def within_interval(baseline: float, low: float, high: float) -> bool:
    """Against a published row (no per-example data): does the published ``baseline`` lie
    within the run's own interval ``[low, high]``? True means the gap is smaller than the
    sampling noise of the task's test set, so it cannot be told from noise."""
    return low <= baseline <= high
