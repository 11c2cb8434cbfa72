"""The paired test: approximate randomisation between two runs of a task, and of the weighted
average.

Pure numpy. **Paired test.** Approximate randomisation (a paired permutation test): under "no
difference" the two systems' outputs on an example are exchangeable, so each example's outputs
are swapped between the systems with probability 1/2 and the delta recomputed. For a mean
metric that is a sign flip of the per-example differences; for correlation and AP metrics the
per-example *scores* are swapped, after standardising each system's score columns (z-scores for
Pearson and AP, within-run ranks for Spearman: the observed values are unchanged by it, and it
keeps a swap from mixing two score scales). The p-values are one-sided: ``p_value`` for a drop,
``P(delta* <= delta)``, and ``p_improvement`` for a gain, from as many swaps as the run needs
(:func:`pytest_koembed.stats.power.swap_resolution`: Besag-Clifford sequential Monte Carlo up to
a floor of alpha / (10 m), exact enumeration of all 2^n patterns for at most 16 units; never 0,
valid at any R). It is preferred to the paired bootstrap of Koehn (2004) for the p-value because
its false-alarm rate holds at any size under exchangeability, while the bootstrap's is only
asymptotic (77-query tasks exist); the paired bootstrap still gives ``delta_ci`` (unadjusted for
the number of tasks). See docs/statistics.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.scoring import get_scheme, summarize
from pytest_koembed.stats.bootstrap import (
    DEFAULT_LEVEL,
    Interval,
    check_level,
    percentile_interval,
)
from pytest_koembed.stats.kernels import (
    DEFAULT_PERMUTATIONS,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    EXACT_MAX_UNITS,
    SWAP_BLOCK,
    bootstrap_counts,
    exact_masks,
    swap_deltas,
    swap_masks,
)
from pytest_koembed.stats.power import significance_level, smallest_p, swap_resolution
from pytest_koembed.stats.rules import frame_columns, gated_metric

PAIRED_METHOD_VERSION = 2
"""Version of the paired test written into run records (``baseline.paired.method``): 2 is the
one-sided sign-flip test with a resolution that follows from the run (issue 17). Records without
it were judged by the two-sided test with a fixed 1,000 swaps (version 1)."""

PAIRED_METHOD = (
    "one-sided approximate randomisation (sign flips of per-example outputs), sequential "
    "Monte Carlo (Besag-Clifford) or exact enumeration; Holm over the run's drops"
)

SEQUENTIAL_EXCEEDANCES = 20
"""Besag-Clifford's h: a side stops drawing swaps once h swapped deltas are at least as extreme
as the observed one (its p is then h / swaps drawn, at least about 20 / swaps: clearly large)."""


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of one task between two runs on the same examples.

    ``delta = new - base`` (x100, unrounded), ``delta_ci`` its paired bootstrap interval (the
    same resampled examples for both runs; unadjusted for the number of tasks), ``p_value`` the
    one-sided approximate-randomisation p-value for "no drop" (small when new is worse),
    ``p_improvement`` the one-sided p for "no gain", both before any adjustment for the number
    of tasks. ``base_ci`` and ``new_ci`` are each run's own interval from the same resamples:
    ``new_ci`` equals ``task_interval(new_frame, rule, level, n_resamples, seed, stream)``.
    ``n_permutations``: the swaps drawn (the most either side needed), or 2^n when ``exact``;
    ``smallest_p``: the smallest p this test could have given (2^-n or 1 / (R_max + 1));
    ``swap_sd`` / ``delta_sd``: the spread of the swapped deltas and of the paired bootstrap's
    deltas (what :func:`minimum_detectable_effect` uses).
    """

    base: float
    new: float
    delta: float
    delta_ci: Interval
    p_value: float
    base_ci: Interval
    new_ci: Interval
    n: int
    n_resamples: int
    n_permutations: int
    p_improvement: float = 1.0
    exact: bool = False
    smallest_p: float = 1.0 / (DEFAULT_PERMUTATIONS + 1)
    swap_sd: float = math.nan
    delta_sd: float = math.nan
    max_swaps: int = DEFAULT_PERMUTATIONS
    # The statistic tested when it is not the task value (clustering: CLUSTERING_STATISTIC;
    # ``base``, ``new``, ``delta`` and the intervals are then that statistic's, x100).
    statistic: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The run record's fields: ``delta``, ``delta_ci`` (level, low, high), the one-sided
        ``p_value`` (drop) and ``p_improvement``, how they were drawn (``swaps``), and
        ``gated_on`` when the test is on another statistic than the task value."""
        out: dict[str, Any] = {
            "delta": self.delta,
            "delta_ci": self.delta_ci.to_dict(),
            "p_value": self.p_value,
            "p_improvement": self.p_improvement,
            "swaps": {
                "drawn": self.n_permutations,
                "max": self.max_swaps,
                "exact": self.exact,
                "smallest_p": self.smallest_p,
                "swap_sd": _finite_or_none(self.swap_sd),
                "delta_sd": _finite_or_none(self.delta_sd),
            },
        }
        if self.statistic is not None:
            out["gated_on"] = self.statistic
        return out


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _aligned(base_frame: Any, new_frame: Any) -> None:
    if len(base_frame) != len(new_frame):
        raise KoembedError(
            f"paired test needs the same examples in both runs: base has {len(base_frame)}, "
            f"new has {len(new_frame)}; align them by key first"
        )
    if "key" in frame_columns(base_frame) and "key" in frame_columns(new_frame):
        same = np.asarray(base_frame["key"]) == np.asarray(new_frame["key"])
        if not bool(np.all(same)):
            raise KoembedError(
                f"paired test: {int(np.sum(~same))} of {len(same)} rows have different keys in "
                "base and new; align the frames by key first"
            )


class SwapResult(NamedTuple):
    """The two one-sided randomisation p-values of an observed delta, and how they were got."""

    observed: float
    p_drop: float
    p_gain: float
    drawn: int  # swaps drawn (2^n when exact)
    exact: bool
    swap_sd: float  # spread of the swapped deltas (the null distribution)


def _slack(observed: float) -> float:
    # a swap that changes nothing (identical outputs) must count as "at least as extreme"
    return 1e-9 * max(1.0, abs(observed))


def _stop_index(extreme: np.ndarray, h: int) -> int | None:
    """1-based index of the h-th True, or None."""
    hits = np.flatnonzero(extreme)
    return int(hits[h - 1]) + 1 if len(hits) >= h else None


def _max_swaps(
    level: float, family_size: int, n_permutations: int | None, alpha: float | None
) -> int:
    """R_max of a test: ``n_permutations`` when given, else :func:`swap_resolution` of the
    family at ``alpha`` (default ``1 - level``)."""
    if n_permutations is not None:
        return n_permutations
    level_alpha = significance_level(level) if alpha is None else alpha
    return swap_resolution(family_size, level_alpha)


def sequential_swaps(
    deltas_at: Callable[[int, int], np.ndarray],
    observed: float,
    max_swaps: int,
    exact: Callable[[], np.ndarray] | None = None,
    exceedances: int = SEQUENTIAL_EXCEEDANCES,
    first_batch: int = SWAP_BLOCK,
    max_batch: int = 8 * SWAP_BLOCK,
) -> SwapResult:
    """Both one-sided p-values of ``observed`` from swapped deltas: ``deltas_at(start, size)``
    gives swaps ``start .. start + size - 1`` of the seeded sequence.

    With ``exact`` (all 2^n patterns' deltas, the identity included):
    ``p = #{d* <= d} / 2^n``. Otherwise Besag & Clifford's (1991) sequential Monte Carlo, in
    batches of the seeded swap sequence: each side draws swaps until ``h`` swapped deltas are at
    least as extreme as the observed one (p = h / swaps drawn, stopped at the h-th) or ``max_swaps``
    are drawn (p = (1 + #extreme) / (1 + max_swaps)); both are valid p-values. An unchanged
    model's tasks stop after tens of swaps; only a small p needs them all.
    """
    slack = _slack(observed)
    if exact is not None:
        d = np.asarray(exact(), dtype=np.float64)
        total = len(d)
        return SwapResult(
            observed,
            float(np.sum(d <= observed + slack)) / total,
            float(np.sum(d >= observed - slack)) / total,
            total,
            True,
            float(d.std()),
        )
    parts: list[np.ndarray] = []
    drawn, batch = 0, first_batch
    stops: dict[str, int | None] = {"drop": None, "gain": None}
    while drawn < max_swaps:
        size = min(batch, max_swaps - drawn)
        parts.append(np.asarray(deltas_at(drawn, size), dtype=np.float64))
        drawn += size
        d = np.concatenate(parts) if len(parts) > 1 else parts[0]
        stops["drop"] = _stop_index(d <= observed + slack, exceedances)
        stops["gain"] = _stop_index(d >= observed - slack, exceedances)
        if stops["drop"] is not None and stops["gain"] is not None:
            break
        batch = min(2 * batch, max_batch)
    d = np.concatenate(parts) if len(parts) > 1 else parts[0]

    def p(extreme: np.ndarray, stop: int | None) -> float:
        if stop is not None:
            return exceedances / stop
        return (1 + int(np.sum(extreme))) / (1 + max_swaps)

    p_drop = p(d <= observed + slack, stops["drop"])
    p_gain = p(d >= observed - slack, stops["gain"])
    used = max(stops["drop"] or drawn, stops["gain"] or drawn)
    return SwapResult(observed, p_drop, p_gain, used, False, float(d[:used].std()))


def paired_test(
    base_frame: Any,
    new_frame: Any,
    rule: str,
    level: float = DEFAULT_LEVEL,
    n_resamples: int = DEFAULT_RESAMPLES,
    n_permutations: int | None = None,
    seed: int = DEFAULT_SEED,
    stream: str = "",
    family_size: int = 1,
    alpha: float | None = None,
) -> PairedTest:
    """Compare two runs of one task on the same (aligned) examples.

    ``delta_ci`` is the percentile interval of ``new* - base*`` over bootstrap resamples that
    draw the same examples for both runs (unadjusted for the number of tasks). ``p_value`` is
    one-sided for a drop and ``p_improvement`` for a gain, from random swaps of each example's
    outputs between the runs (:func:`sequential_swaps`): a sign flip of per-example differences
    for mean metrics (retrieval, clustering); for STS, swapped per-run z-scores (Pearson keys)
    and per-run ranks (Spearman keys); for AP, swapped per-run z-scores, the AP recomputed on
    the mixture. Each standardisation leaves the observed values unchanged and keeps a swap
    from mixing two runs' score scales. Identical runs give ``delta == 0`` and both p-values 1.

    The resolution follows from the run: at most ``n_permutations`` swaps, by default
    :func:`swap_resolution` of ``family_size`` (the tasks tested in the run's family, m) and
    ``alpha`` (default ``1 - level``), so that the floor 1 / (R + 1) is at most alpha / (10 m);
    at most :data:`EXACT_MAX_UNITS` units are enumerated exactly.
    Clustering frames are tested on their gated statistic (``statistic``: each document's
    leave-one-out nearest-centroid correctness, a mean metric), not on mteb's v-measure rows:
    ``base``, ``new`` and ``delta`` are then that accuracy's, x100.
    """
    check_level(level)
    _aligned(base_frame, new_frame)
    base, new = gated_metric(base_frame, rule), gated_metric(new_frame, rule)
    if base.kind != "mean" and not np.array_equal(base.gold, new.gold):
        raise KoembedError(
            "paired test: the gold scores/labels differ between base and new; the frames are "
            "not the same examples"
        )
    max_swaps = _max_swaps(level, family_size, n_permutations, alpha)
    ones = np.ones((new.n, 1))
    base_value = float(base.value_for(ones)[0])
    new_value = float(new.value_for(ones)[0])
    weights = bootstrap_counts(new.n, n_resamples, seed, stream)
    shared: dict[str, Any] = {}  # the gold ranks: the same examples, the same resamples
    new_replicates = new.value_for(weights, shared)
    base_replicates = base.value_for(weights, shared)
    observed = float(swap_deltas(new, base, np.zeros((new.n, 1), dtype=bool))[0])
    swapped = sequential_swaps(
        lambda start, size: swap_deltas(new, base, swap_masks(new.n, size, seed, stream, start)),
        observed,
        max_swaps,
        exact=(lambda: swap_deltas(new, base, exact_masks(new.n)))
        if new.n <= EXACT_MAX_UNITS
        else None,
    )
    paired = new_replicates - base_replicates
    finite = paired[np.isfinite(paired)]
    return PairedTest(
        base=base_value,
        new=new_value,
        delta=new_value - base_value,
        delta_ci=percentile_interval(paired, level),
        p_value=swapped.p_drop,
        base_ci=percentile_interval(base_replicates, level),
        new_ci=percentile_interval(new_replicates, level),
        n=new.n,
        n_resamples=n_resamples,
        n_permutations=swapped.drawn,
        p_improvement=swapped.p_gain,
        exact=swapped.exact,
        smallest_p=smallest_p(new.n, max_swaps),
        swap_sd=swapped.swap_sd,
        delta_sd=float(finite.std(ddof=1)) if finite.size > 2 else math.nan,
        max_swaps=max_swaps,
        statistic=new.statistic,
    )


def task_weights(tasks: Sequence[tuple[str, str]], scheme: str) -> dict[str, float]:
    """Each task's weight in the scheme's weighted average, unrounded: (column, category) ->
    d(weighted) / d(task value). Found by the scheme's own formula with one task at a large
    value and the others at 0 (relative error of the 2-decimal rounding below 1e-7)."""
    big = 1e6
    out = {}
    for column, _ in tasks:
        rows = [(c, cat, big if c == column else 0.0) for c, cat in tasks]
        weighted = summarize(rows, get_scheme(scheme)).weighted
        if weighted is None:
            raise KoembedError(f"scheme {scheme!r} gives no weighted average for these tasks")
        out[column] = weighted / big
    return out


@dataclass(frozen=True)
class WeightedTest:
    """The paired test of the weighted average: ``delta`` is the unrounded weighted sum of the
    task deltas; p-values one-sided (drop, gain), from the same swap ``r`` applied to every
    task at once (valid: tasks have independent units)."""

    delta: float
    p_value: float
    p_improvement: float
    n_permutations: int
    max_swaps: int
    smallest_p: float
    swap_sd: float
    weights: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "delta": self.delta,
            "p_value": self.p_value,
            "p_improvement": self.p_improvement,
            "swaps": {"drawn": self.n_permutations, "max": self.max_swaps},
            "smallest_p": self.smallest_p,
            "swap_sd": _finite_or_none(self.swap_sd),
        }


def weighted_paired_test(
    pairs: Sequence[tuple[str, str, str, Any, Any]],
    scheme: str,
    level: float = DEFAULT_LEVEL,
    family_size: int = 1,
    seed: int = DEFAULT_SEED,
    n_permutations: int | None = None,
    alpha: float | None = None,
) -> WeightedTest:
    """The weighted average's paired test over ``pairs`` (column, category, rule, base frame,
    new frame; aligned): each swap ``r`` swaps every task with its own swap ``r`` (its column's
    stream, as :func:`paired_test` draws it), and the swapped weighted delta is the scheme's
    weights applied to the tasks' swapped deltas. Sequential as :func:`sequential_swaps`."""
    check_level(level)
    max_swaps = _max_swaps(level, family_size, n_permutations, alpha)
    weights = task_weights([(p[0], p[1]) for p in pairs], scheme)
    metrics = []
    for column, _, rule, base_frame, new_frame in pairs:
        _aligned(base_frame, new_frame)
        metrics.append((column, gated_metric(base_frame, rule), gated_metric(new_frame, rule)))
    observed = 0.0
    for column, base, new in metrics:
        zero = np.zeros((new.n, 1), dtype=bool)
        observed += weights[column] * float(swap_deltas(new, base, zero)[0])

    def deltas_at(start: int, size: int) -> np.ndarray:
        total = np.zeros(size)
        for column, base, new in metrics:
            masks = swap_masks(new.n, size, seed, column, start)
            total += weights[column] * swap_deltas(new, base, masks)
        return total

    swapped = sequential_swaps(deltas_at, observed, max_swaps)
    return WeightedTest(
        delta=observed,
        p_value=swapped.p_drop,
        p_improvement=swapped.p_gain,
        n_permutations=swapped.drawn,
        max_swaps=max_swaps,
        smallest_p=1.0 / (max_swaps + 1),
        swap_sd=swapped.swap_sd,
        weights=weights,
    )
