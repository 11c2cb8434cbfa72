"""Seeded resampling index streams and the vectorised value kernels of each task type.

Pure numpy; no pytest, torch or mteb. Every function that draws random numbers takes ``seed``
(default :data:`DEFAULT_SEED`, 0) and a ``stream`` name (use the task's column), and gives the
same numbers for the same input, in any process: a run's intervals are reproducible, and a
task's draws do not depend on which other tasks ran.

**How.** A resample is a row of *count weights*: ``weights[b, i]`` is how often example ``i``
is drawn in resample ``b`` (n draws with replacement; stored example-major internally, which
makes gathering examples in sorted order fast). Every task value is then computed for
all resamples at once without materialising them: means are a matrix product; Pearson is
closed-form in weighted moments; Spearman is Pearson of weighted mid-ranks (the ranks the
resample itself would have, ties averaged, from one sort and cumulative sums); average
precision uses one sort and cumulative weighted true/false-positive sums at each distinct
score, which is exactly scikit-learn's ``average_precision_score`` on the resampled rows.

The swapped deltas of the paired test (:func:`swap_deltas`) are kernels of the same kind: one
matrix product (means, correlations) or one sort of the stacked scores (AP) for all swaps.
Which frame columns make a :class:`Metric` is :mod:`pytest_koembed.stats.rules`' business.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from pytest_koembed.errors import KoembedError

DEFAULT_SEED = 0
"""The seed every random function uses unless told otherwise."""

DEFAULT_RESAMPLES = 1000
"""Bootstrap resamples per interval (task values, averages, ``delta_ci``)."""

DEFAULT_PERMUTATIONS = 999
"""The fewest random swaps a paired test may draw up to (R_max): the resolution otherwise follows
from the run's number of tested tasks and level (:func:`swap_resolution`)."""

EXACT_MAX_UNITS = 16
"""At most this many units, every one of the 2^n swap patterns is enumerated (an exact p)."""

SWAP_BLOCK = 256
"""Swap masks are drawn in blocks of this many columns, each from its own seeded stream, so
that swap ``r`` of a task is the same whatever batches it is computed in."""


# ---------------------------------------------------------------------------------------------
# Random draws
# ---------------------------------------------------------------------------------------------


def _rng(seed: int, stream: str, purpose: str) -> np.random.Generator:
    # crc32, not hash(): the same stream gives the same draws in every process
    words = [int(seed) & 0xFFFFFFFF, zlib.crc32(stream.encode()), zlib.crc32(purpose.encode())]
    return np.random.default_rng(np.random.SeedSequence(words))


def bootstrap_counts(n: int, n_resamples: int, seed: int, stream: str) -> np.ndarray:
    """Bootstrap count weights laid out (n, B): example-major, the layout every kernel uses."""
    if n < 1:
        raise KoembedError("cannot resample a task with no examples")
    rng = _rng(seed, stream, "bootstrap")
    draws = rng.integers(0, n, size=(n_resamples, n))
    # resample-major flat indices keep bincount's writes local; then one transposing copy
    draws += np.arange(n_resamples)[:, None] * n
    counts = np.bincount(draws.ravel(), minlength=n_resamples * n).reshape(n_resamples, n)
    return np.ascontiguousarray(counts.T, dtype=np.float64)


def bootstrap_weights(
    n: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, stream: str = ""
) -> np.ndarray:
    """Count weights of ``n_resamples`` bootstrap resamples of ``n`` examples: shape (B, n).

    Row ``b`` says how many times each example is drawn when ``n`` examples are drawn with
    replacement (each row sums to ``n``). Deterministic for the same arguments. (A transposed
    view of an example-major array, which :func:`resampled_values` uses without copying.)
    """
    return bootstrap_counts(n, n_resamples, seed, stream).T


def swap_masks(
    n: int,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = DEFAULT_SEED,
    stream: str = "",
    start: int = 0,
) -> np.ndarray:
    """Random swaps for the paired test: shape (n, R), True where example ``i`` is swapped.

    Columns ``start .. start + R - 1`` of one endless seeded sequence: drawn in blocks of
    :data:`SWAP_BLOCK` columns, block ``b`` from its own stream, so that swap ``r`` of a task
    is the same whichever batches ask for it (the sequential test and the weighted average's
    test use the same swap ``r`` of every task).
    """
    if n_permutations <= 0:
        return np.zeros((n, 0), dtype=bool)
    first, last = start // SWAP_BLOCK, (start + n_permutations - 1) // SWAP_BLOCK
    blocks = [
        _rng(seed, stream, f"swap/{b}").integers(0, 2, size=(n, SWAP_BLOCK), dtype=np.uint8)
        for b in range(first, last + 1)
    ]
    coins = np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]
    offset = start - first * SWAP_BLOCK
    return coins[:, offset : offset + n_permutations].astype(bool)


def exact_masks(n: int) -> np.ndarray:
    """All 2^n swap patterns of ``n`` units: shape (n, 2^n); column 0 swaps nothing."""
    if n > EXACT_MAX_UNITS:
        raise KoembedError(f"exact enumeration is for at most {EXACT_MAX_UNITS} units, not {n}")
    patterns = np.arange(2**n, dtype=np.int64)
    return ((patterns[None, :] >> np.arange(n, dtype=np.int64)[:, None]) & 1).astype(bool)


# ---------------------------------------------------------------------------------------------
# Weighted statistics. Weights are laid out (n, B): one column per resample, so that gathering
# examples in sorted order copies whole rows (10x faster than gathering columns).
# ---------------------------------------------------------------------------------------------


def _cumsum_rows(a: np.ndarray) -> np.ndarray:
    """Cumulative sum down the rows, in place.

    For wide arrays (many resamples) a loop over rows beats ``np.cumsum(axis=0)`` 4x: each step
    is one contiguous vector add. For narrow ones the loop's per-row cost dominates.
    """
    if a.ndim == 1 or a.shape[1] < 64:
        return np.cumsum(a, axis=0, out=a)
    for k in range(1, len(a)):
        np.add(a[k], a[k - 1], out=a[k])
    return a


class _SortedGroups(NamedTuple):
    order: np.ndarray  # the sort of the values (ascending, or descending for AP)
    ends: np.ndarray | None  # last sorted position of each group of equal values; None: no ties
    group_of: np.ndarray  # group index of each example (original order)


def _groups(x: np.ndarray, descending: bool = False) -> _SortedGroups:
    order = np.argsort(-x if descending else x, kind="stable")
    xs = x[order]
    changes = xs[1:] != xs[:-1]
    ties = not bool(np.all(changes))
    ends = np.flatnonzero(np.append(changes, True)) if ties else None
    group_sorted = np.concatenate(([0], np.cumsum(changes)))
    group_of = np.empty(len(x), dtype=np.intp)
    group_of[order] = group_sorted
    return _SortedGroups(order, ends, group_of)


def _weighted_midranks(groups: _SortedGroups, w: np.ndarray) -> np.ndarray:
    """Twice the mid-rank minus one of each example in each resample: (n, B), exact integers.

    A value drawn ``c`` times after ``s`` smaller draws takes ranks s+1..s+c, mid-rank
    s + (c+1)/2 (ties averaged, as scipy's rankdata); all its copies and all its ties share it.
    ``2*mid - 1 = s + (s + c)``: the cumulative count before and after the value. Correlations
    do not see the affine change, and integers keep every sum exact (the weighted sum of these
    is N^2 for N draws). Examples with weight 0 get the rank they would have, which no weighted
    statistic reads.
    """
    cum = _cumsum_rows(w[groups.order])
    if groups.ends is not None:
        cum = cum[groups.ends]
    doubled = np.empty_like(cum)
    doubled[0] = cum[0]
    np.add(cum[1:], cum[:-1], out=doubled[1:])
    return doubled[groups.group_of]


def _weighted_ap(groups: _SortedGroups, labels: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average precision under each column of count weights; ``groups`` sorted by score descending.

    scikit-learn's definition: thresholds at the distinct scores, AP = sum over thresholds of
    (recall_k - recall_{k-1}) * precision_k. NaN when a resample has no positive.
    """
    ws = w[groups.order]
    positives = labels[groups.order] == 1
    drawn = _cumsum_rows(ws.copy())
    if groups.ends is None:
        # no ties: only positive examples move recall, by their own weight
        gained = ws[positives]
        tps = _cumsum_rows(gained.copy())
        reached = drawn[positives]
    else:
        tps = _cumsum_rows(ws * positives[:, None])[groups.ends]
        reached = drawn[groups.ends]
        gained = np.diff(tps, axis=0, prepend=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(reached > 0, tps / np.where(reached > 0, reached, 1.0), 0.0)
        return np.einsum("ij,ij->j", gained, precision) / tps[-1]


# ---------------------------------------------------------------------------------------------
# A task's per-example frame, ready for resampling
# ---------------------------------------------------------------------------------------------


@dataclass
class Metric:
    """One task's per-example data in the shape its value rule needs."""

    kind: str  # "mean" | "sts" | "ap"
    n: int
    values: np.ndarray | None = None  # mean: per-example values (0-1), the parts' mean
    gold: np.ndarray | None = None  # sts: gold scores; ap: 0/1 labels
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # score columns
    keys: tuple[tuple[str, str], ...] = ()  # sts: (column, "pearson"|"spearman"); ap: (column,)
    reduce: str = "mean"  # how the keys combine: "mean" (sts) or "max" (max_ap)
    # mean: the score keys whose means make the value (ndcg-5-10 has two), each with its
    # per-example values and whether mteb rounds its mean to 5 decimals (pytrec_eval's measures;
    # not MRR, clustering or classification). Empty: one unrounded part, ``values``.
    parts: tuple[tuple[np.ndarray, bool], ...] = ()
    statistic: str | None = None  # a gated statistic that is not the task value (clustering)
    _sorted: dict[str, _SortedGroups] = field(default_factory=dict, repr=False)

    def groups(self, column: str) -> _SortedGroups:
        """The sort of a score column (or ``"gold"``), made once per metric."""
        if column not in self._sorted:
            values = self.gold if column == "gold" else self.columns[column]
            assert values is not None
            self._sorted[column] = _groups(values, descending=self.kind == "ap")
        return self._sorted[column]

    def value_for(self, w: np.ndarray, shared: dict[str, Any] | None = None) -> np.ndarray:
        """The task value (x100) under each column of count weights ``w`` (n, B): shape (B,).

        ``shared`` (STS) carries the gold ranks from one run to the other when two runs of the
        same examples are resampled with the same ``w`` (the gold column is the same).
        """
        if self.kind == "mean":
            assert self.values is not None
            if not self.parts:
                return 100.0 * (self.values @ w) / w.sum(axis=0)
            return self._rounded_means(w)
        if self.kind == "sts":
            combined = np.mean(_correlations(self, w, {} if shared is None else shared), axis=0)
        else:
            assert self.gold is not None
            aps = np.vstack([_weighted_ap(self.groups(c), self.gold, w) for c, _ in self.keys])
            combined = aps.max(axis=0) if self.reduce == "max" else aps.mean(axis=0)
        return 100.0 * combined

    def _rounded_means(self, w: np.ndarray) -> np.ndarray:
        """Retrieval: each key's weighted mean over the queries, rounded as mteb rounds it
        (``round(sum(values) / len(scores), 5)`` in ``retrieval_metrics.py``), then the keys'
        mean, x100, as ``scoring.task_value`` takes it. A column of all ones is the observed
        value, computed exactly as mteb computes it (Python's sum in the frame's order), so the
        frame's value equals the run record's to the last bit; the resampled columns use the
        same rounding on their weighted means."""
        total = w.sum(axis=0)
        exact = np.flatnonzero(np.all(w == 1.0, axis=0))
        keys = []
        for values, rounded in self.parts:
            means = (values @ w) / total
            if exact.size:
                means[exact] = sum(values.tolist()) / len(values)
            keys.append([round(float(m), 5) if rounded else float(m) for m in means])
        return np.array(
            [math.fsum(column) / len(column) * 100.0 for column in zip(*keys, strict=True)]
        )


def _correlations(metric: Metric, w: np.ndarray, shared: dict[str, Any]) -> list[np.ndarray]:
    """Every Pearson and Spearman key of an STS metric under each column of ``w``."""
    assert metric.gold is not None
    total = w.sum(axis=0)
    parts = []
    pearson = [c for c, how in metric.keys if how == "pearson"]
    if pearson:  # every Pearson key from one matrix product of the centred moments
        x = metric.gold - metric.gold.mean()
        ys = [metric.columns[c] - metric.columns[c].mean() for c in pearson]
        sums = np.stack([x, x * x, *ys, *(y * y for y in ys), *(x * y for y in ys)]) @ w
        sx, sxx, k = sums[0], sums[1], len(ys)
        var_x = sxx - sx * sx / total
        for j in range(k):
            sy, syy, sxy = sums[2 + j], sums[2 + k + j], sums[2 + 2 * k + j]
            with np.errstate(invalid="ignore", divide="ignore"):
                parts.append((sxy - sx * sy / total) / np.sqrt(var_x * (syy - sy * sy / total)))
    spearman = [c for c, how in metric.keys if how == "spearman"]
    if spearman:
        # every column of doubled ranks sums to N^2 under weights summing to N
        mean_square = total * total * total
        if "gold" not in shared:
            gold_ranks = _weighted_midranks(metric.groups("gold"), w)
            weighted_gold = gold_ranks * w
            gold_var = np.einsum("ij,ij->j", weighted_gold, gold_ranks) - mean_square
            shared["gold"] = (weighted_gold, gold_var)
        weighted_gold, gold_var = shared["gold"]
        for column in spearman:
            ranks = _weighted_midranks(metric.groups(column), w)
            cov = np.einsum("ij,ij->j", weighted_gold, ranks) - mean_square
            var = np.einsum("ij,ij,ij->j", ranks, ranks, w) - mean_square
            with np.errstate(invalid="ignore", divide="ignore"):
                parts.append(cov / np.sqrt(gold_var * var))
    return parts


# ---------------------------------------------------------------------------------------------
# Swapped deltas of the paired test: one kernel per task type
# ---------------------------------------------------------------------------------------------


def _zscores(scores: np.ndarray) -> np.ndarray:
    sd = scores.std()
    return (scores - scores.mean()) / (sd if sd > 0 else 1.0)


def _ranks(values: np.ndarray) -> np.ndarray:
    return _weighted_midranks(_groups(values), np.ones((len(values), 1)))[:, 0]


def _swap_deltas_correlation(new: Metric, base: Metric, swaps: np.ndarray) -> np.ndarray:
    """STS: delta under each swap column, on per-run z-scores (Pearson) and ranks (Spearman).

    Each key's swapped series is ``a + S*(b - a)`` (a, b: the two runs' standardised scores), so
    its Pearson correlation with the fixed (centred) gold series needs only the sums
    ``d @ S``, ``(x*d) @ S`` and ``(b^2 - a^2) @ S``: one matrix product for all keys and swaps.
    """
    assert new.gold is not None
    gold = new.gold - new.gold.mean()
    gold_ranks = _ranks(new.gold)
    gold_ranks -= gold_ranks.mean()
    rows, consts = [], []
    for column, how in new.keys:
        if how == "pearson":
            x, a, b = gold, _zscores(new.columns[column]), _zscores(base.columns[column])
        else:
            x, a, b = gold_ranks, _ranks(new.columns[column]), _ranks(base.columns[column])
        d = b - a
        rows += [d, x * d, b * b - a * a]
        consts.append((x @ x, a.sum(), x @ a, (a * a).sum(), b.sum(), x @ b, (b * b).sum()))
    sums = np.stack(rows) @ swaps.astype(np.float64)  # (3 keys, R)
    n = new.n
    deltas = np.zeros(swaps.shape[1])
    for k, (sxx, sa, sxa, saa, sb, sxb, sbb) in enumerate(consts):
        sd, sxd, sq = sums[3 * k], sums[3 * k + 1], sums[3 * k + 2]
        # gold is centred, so sum(x*y) is already the co-moment
        r_new = (sxa + sxd) / np.sqrt(sxx * ((saa + sq) - (sa + sd) ** 2 / n))
        r_base = (sxb - sxd) / np.sqrt(sxx * ((sbb - sq) - (sb - sd) ** 2 / n))
        deltas += r_new - r_base
    return 100.0 * deltas / len(consts)


def _swap_ap_column(
    labels: np.ndarray, new_scores: np.ndarray, base_scores: np.ndarray, swaps: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """AP of both sides under each swap column, one sort of the 2n stacked scores; None on ties.

    Each example has two copies in the stacked order (new's score, base's score); a swap
    decides which copy the new side counts, and the base side counts the other. So the base
    side's running counts are the totals minus the new side's: one cumulative sum serves both.
    """
    n = len(labels)
    stacked = np.concatenate([new_scores, base_scores])
    order = np.argsort(-stacked, kind="stable")
    ordered = stacked[order]
    if np.any(ordered[1:] == ordered[:-1]):
        return None
    example = order % n
    positive = np.flatnonzero(labels[example] == 1)
    if len(positive) == 0:
        return None
    # the new side counts its own copy where the example is not swapped, base's where it is
    new_side = swaps[example[: positive[-1] + 1]] != (order[: positive[-1] + 1] < n)[:, None]
    # running counts in int32 (exact; a row loop of vector adds is the fast way here), read at
    # the positives
    drawn_new = _cumsum_rows(new_side.astype(np.int32))[positive].astype(np.float64)
    gained_new = new_side[positive].astype(np.float64)
    tps_new = _cumsum_rows(gained_new.copy())
    drawn_all = (positive + 1.0)[:, None]
    tps_all = np.arange(1.0, len(positive) + 1)[:, None]
    total = len(positive) / 2  # each example's label is there twice, once per side
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 only where nothing is counted
        new_precision = np.nan_to_num(tps_new / drawn_new)
        base_precision = np.nan_to_num((tps_all - tps_new) / (drawn_all - drawn_new))
    ap_new = np.einsum("ij,ij->j", gained_new, new_precision) / total
    ap_base = np.einsum("ij,ij->j", 1.0 - gained_new, base_precision) / total
    return ap_new, ap_base


def _swap_deltas_ap(new: Metric, base: Metric, swaps: np.ndarray) -> np.ndarray:
    """AP: the two runs' z-scored scores stacked (2n); a swap picks which copy each side counts."""
    assert new.gold is not None
    sides = []
    for column, _ in new.keys:
        a, b = _zscores(new.columns[column]), _zscores(base.columns[column])
        fast = _swap_ap_column(new.gold, a, b, swaps)
        if fast is None:  # tied scores: the general weighted AP on the stacked rows
            stacked = Metric(
                "ap",
                2 * new.n,
                gold=np.concatenate([new.gold, new.gold]),
                columns={column: np.concatenate([a, b])},
                keys=((column, "ap"),),
            )
            kept, moved = (~swaps).astype(np.float64), swaps.astype(np.float64)
            fast = (
                stacked.value_for(np.vstack([kept, moved])) / 100.0,
                stacked.value_for(np.vstack([moved, kept])) / 100.0,
            )
        sides.append(fast)
    new_aps = np.vstack([s[0] for s in sides])
    base_aps = np.vstack([s[1] for s in sides])
    if new.reduce == "max":
        return 100.0 * (new_aps.max(axis=0) - base_aps.max(axis=0))
    return 100.0 * (new_aps.mean(axis=0) - base_aps.mean(axis=0))


def swap_deltas(new: Metric, base: Metric, swaps: np.ndarray) -> np.ndarray:
    """delta = value(new') - value(base') for each swap column (n, R)."""
    if new.kind == "mean":
        assert new.values is not None and base.values is not None
        return 100.0 * ((new.values - base.values) @ (1.0 - 2.0 * swaps)) / new.n
    if new.kind == "sts":
        return _swap_deltas_correlation(new, base, swaps)
    return _swap_deltas_ap(new, base, swaps)
