"""Confidence intervals and the paired significance gate, from per-example results.

Pure numpy; no pytest, torch or mteb. Every function that draws random numbers takes ``seed``
(default :data:`DEFAULT_SEED`, 0) and a ``stream`` name (use the task's column), and gives the
same numbers for the same input, in any process: a run's intervals are reproducible, and a
task's draws do not depend on which other tasks ran.

**What is resampled.** The units a task's value averages over: STS and pair-classification
pairs, retrieval queries (the corpus is fixed), clustering rows (mteb's runs for the fast
clustering tasks, its clustering sets for the legacy ones; see :func:`task_interval`).

**How.** A resample is a row of *count weights*: ``weights[b, i]`` is how often example ``i``
is drawn in resample ``b`` (n draws with replacement; stored example-major internally, which
makes gathering examples in sorted order fast). Every task value is then computed for
all resamples at once without materialising them: means are a matrix product; Pearson is
closed-form in weighted moments; Spearman is Pearson of weighted mid-ranks (the ranks the
resample itself would have, ties averaged, from one sort and cumulative sums); average
precision uses one sort and cumulative weighted true/false-positive sums at each distinct
score, which is exactly scikit-learn's ``average_precision_score`` on the resampled rows.

**Paired test.** Approximate randomisation (a paired permutation test): under "no difference"
the two systems' outputs on an example are exchangeable, so each example's outputs are swapped
between the systems with probability 1/2 and the delta recomputed. For a mean metric that is a
sign flip of the per-example differences; for correlation and AP metrics the per-example
*scores* are swapped, after standardising each system's score columns (z-scores for Pearson and
AP, within-run ranks for Spearman: the observed values are unchanged by it, and it keeps a swap
from mixing two score scales). The p-values are one-sided: ``p_value`` for a drop,
``P(delta* <= delta)``, and ``p_improvement`` for a gain, from as many swaps as the run needs
(:func:`swap_resolution`: Besag-Clifford sequential Monte Carlo up to a floor of alpha / (10 m),
exact enumeration of all 2^n patterns for at most 16 units; never 0, valid at any R). It is
preferred to the paired bootstrap of Koehn (2004) for the p-value because its false-alarm rate
holds at any size under exchangeability, while the bootstrap's is only asymptotic (77-query
tasks exist); the paired bootstrap still gives ``delta_ci`` (unadjusted for the number of
tasks). See docs/statistics.md.

**Run-level gate.** Holm's step-down adjustment over the drops of a run's tasks (valid under
any dependence between tasks, uniformly more powerful than Bonferroni), improvements in a family
of their own that never fails, then :func:`paired_verdict`; :func:`minimum_detectable_effect`
says what each task could have caught.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

import numpy as np

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.scoring import get_scheme, round_half_up, summarize

DEFAULT_SEED = 0
"""The seed every random function uses unless told otherwise."""

DEFAULT_LEVEL = 0.95
"""Confidence level of every interval; ``1 - level`` is the run-level false-alarm budget."""

DEFAULT_RESAMPLES = 1000
"""Bootstrap resamples per interval (task values, averages, ``delta_ci``)."""

DEFAULT_PERMUTATIONS = 999
"""The fewest random swaps a paired test may draw up to (R_max): the resolution otherwise follows
from the run's number of tested tasks and level (:func:`swap_resolution`)."""

DEFAULT_MIN_EFFECT = 0.5
"""Points: the smallest change the paired gate calls a regression or an improvement."""

STS_SCORE_COLUMNS: tuple[str, ...] = ("similarity", "cosine", "manhattan", "euclidean")
"""STS score columns, in the order of :data:`protocol.scoring.STS_KEYS` (``similarity``
is what mteb's plain ``pearson``/``spearman`` keys use)."""

PAIR_SCORE_COLUMNS: tuple[str, ...] = ("similarity", "cosine", "manhattan", "euclidean", "dot")
"""Pair-classification score columns (higher = more similar); ``max_ap`` is the best of them."""

VERDICTS: tuple[str, ...] = ("regressed", "improved", "within noise")


# ---------------------------------------------------------------------------------------------
# Random draws
# ---------------------------------------------------------------------------------------------


def _rng(seed: int, stream: str, purpose: str) -> np.random.Generator:
    # crc32, not hash(): the same stream gives the same draws in every process
    words = [int(seed) & 0xFFFFFFFF, zlib.crc32(stream.encode()), zlib.crc32(purpose.encode())]
    return np.random.default_rng(np.random.SeedSequence(words))


def _counts(n: int, n_resamples: int, seed: int, stream: str) -> np.ndarray:
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
    return _counts(n, n_resamples, seed, stream).T


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
class _Metric:
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
            combined = np.mean(self._correlations(w, {} if shared is None else shared), axis=0)
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

    def _correlations(self, w: np.ndarray, shared: dict[str, Any]) -> list[np.ndarray]:
        assert self.gold is not None
        total = w.sum(axis=0)
        parts = []
        pearson = [c for c, how in self.keys if how == "pearson"]
        if pearson:  # every Pearson key from one matrix product of the centred moments
            x = self.gold - self.gold.mean()
            ys = [self.columns[c] - self.columns[c].mean() for c in pearson]
            sums = np.stack([x, x * x, *ys, *(y * y for y in ys), *(x * y for y in ys)]) @ w
            sx, sxx, k = sums[0], sums[1], len(ys)
            var_x = sxx - sx * sx / total
            for j in range(k):
                sy, syy, sxy = sums[2 + j], sums[2 + k + j], sums[2 + 2 * k + j]
                with np.errstate(invalid="ignore", divide="ignore"):
                    parts.append((sxy - sx * sy / total) / np.sqrt(var_x * (syy - sy * sy / total)))
        spearman = [c for c, how in self.keys if how == "spearman"]
        if spearman:
            # every column of doubled ranks sums to N^2 under weights summing to N
            mean_square = total * total * total
            if "gold" not in shared:
                gold_ranks = _weighted_midranks(self.groups("gold"), w)
                weighted_gold = gold_ranks * w
                gold_var = np.einsum("ij,ij->j", weighted_gold, gold_ranks) - mean_square
                shared["gold"] = (weighted_gold, gold_var)
            weighted_gold, gold_var = shared["gold"]
            for column in spearman:
                ranks = _weighted_midranks(self.groups(column), w)
                cov = np.einsum("ij,ij->j", weighted_gold, ranks) - mean_square
                var = np.einsum("ij,ij,ij->j", ranks, ranks, w) - mean_square
                with np.errstate(invalid="ignore", divide="ignore"):
                    parts.append(cov / np.sqrt(gold_var * var))
        return parts


def _frame_columns(frame: Any) -> list[str]:
    try:
        return [str(c) for c in frame.columns]
    except AttributeError:
        raise KoembedError(
            f"per-example results must be a pandas DataFrame, got {type(frame).__name__}"
        ) from None


def _column(frame: Any, name: str, rule: str) -> np.ndarray:
    values = np.asarray(frame[name], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        bad = int(np.sum(~np.isfinite(values)))
        raise KoembedError(
            f"per-example column {name!r} (value rule {rule!r}) has {bad} missing or non-finite "
            "value(s); re-run the task to regenerate its per-example results"
        )
    return values


def _require(frame: Any, names: Sequence[str], rule: str, what: str) -> None:
    have = _frame_columns(frame)
    missing = [c for c in names if c not in have]
    if missing:
        raise KoembedError(
            f"value rule {rule!r} needs per-example column(s) {', '.join(missing)} ({what}); the "
            f"frame has {', '.join(have) or 'no columns'}"
        )


CLUSTERING_STATISTIC = "leave-one-out centroid accuracy"
"""What a clustering task's paired test and interval are computed on (its gated statistic)."""

CENTROID_COLUMN = "centroid_correct"


def _is_clustering(have: Sequence[str], rule: str) -> bool:
    return "v_measure" in have and rule in ("v_measure", "main_score")


def _clustering_metric(frame: Any, rule: str) -> _Metric:
    """A clustering frame's gated statistic: the mean over documents of ``centroid_correct``.

    mteb's v-measure comes from one k-means fit of one set (KLUE) or from 10 fits on draws
    from the same texts (SIB200): no resampling of those rows is a valid test (see
    docs/statistics.md). Each document's leave-one-out nearest-centroid correctness is a
    k-means-free per-document value, so the generic "mean of per-example values" path (a sign
    flip of per-document differences, a bootstrap over documents) applies to it exactly.
    """
    if CENTROID_COLUMN not in _frame_columns(frame):
        raise KoembedError(
            "clustering results predate the per-document rows the clustering gate needs "
            f"({CENTROID_COLUMN}); re-save the baseline with this version"
        )
    values = np.asarray(frame[CENTROID_COLUMN], dtype=np.float64)
    values = values[np.isfinite(values)]  # the v-measure rows carry none
    if values.size == 0:
        raise KoembedError(
            f"clustering results hold no per-document rows ({CENTROID_COLUMN}): the embeddings "
            "were not recorded; no paired test"
        )
    return _Metric("mean", int(values.size), values=values, statistic=CLUSTERING_STATISTIC)


def _value_metric(frame: Any, rule: str) -> _Metric:
    """The task's reported value: for clustering mteb's v-measure rows, otherwise ``_metric``."""
    have = _frame_columns(frame)
    if _is_clustering(have, rule):
        runs = np.asarray(frame["v_measure"], dtype=np.float64)
        runs = runs[np.isfinite(runs)]
        if runs.size == 0:
            raise KoembedError("clustering results hold no v-measure row")
        return _Metric("mean", int(runs.size), values=runs)
    return _metric(frame, rule)


def _metric(frame: Any, rule: str) -> _Metric:
    """Read ``frame`` for ``rule``: which columns, and how they make the task value (for a
    clustering frame: its gated statistic, :func:`_clustering_metric`)."""
    have = _frame_columns(frame)
    n = len(frame)
    if n == 0:
        raise KoembedError(f"per-example results for value rule {rule!r} have no rows")
    if _is_clustering(have, rule):
        return _clustering_metric(frame, rule)
    if (
        rule == "sts-mean8"
        or rule.endswith(("_pearson", "_spearman"))
        or rule
        in (
            "pearson",
            "spearman",
        )
    ):
        if rule == "sts-mean8":
            keys = tuple((c, how) for c in STS_SCORE_COLUMNS for how in ("pearson", "spearman"))
        else:
            column, _, how = rule.rpartition("_")
            keys = ((column or "similarity", how),)
        needed = ["gold", *dict.fromkeys(c for c, _ in keys)]
        _require(frame, needed, rule, "an STS task's gold score and similarities")
        return _Metric(
            "sts",
            n,
            gold=_column(frame, "gold", rule),
            columns={c: _column(frame, c, rule) for c in needed[1:]},
            keys=keys,
        )
    if rule.endswith("_ap"):
        column = rule[: -len("_ap")]
        columns = list(PAIR_SCORE_COLUMNS) if column == "max" else [column]
        _require(frame, ["label", *columns], rule, "a pair-classification task's label and scores")
        labels = _column(frame, "label", rule)
        if not np.all((labels == 0) | (labels == 1)):
            raise KoembedError(f"per-example column 'label' (value rule {rule!r}) must be 0 or 1")
        return _Metric(
            "ap",
            n,
            gold=labels,
            columns={c: _column(frame, c, rule) for c in columns},
            keys=tuple((c, "ap") for c in columns),
            reduce="max" if column == "max" else "mean",
        )
    if rule == "ndcg-5-10":
        return _retrieval_metric(frame, ("ndcg_at_5", "ndcg_at_10"), rule)
    if rule == "accuracy" and "query_id" in have:
        # mteb's retrieval "accuracy" is its rounded recall@1 (make_score_dict)
        return _retrieval_metric(frame, ("recall_at_1",), rule)
    if _RETRIEVAL_SCORE.match(rule):
        return _retrieval_metric(frame, (rule,), rule)
    if rule == "main_score":
        # the task's main score key is not known here: only a frame with one candidate column
        # can be read (clustering, classification); a retrieval, STS or pair frame holds many
        # scores, and resampling another one than the task's would be silently wrong
        for column in ("v_measure", "accuracy"):
            if column in have:
                return _Metric("mean", n, values=_column(frame, column, rule))
        raise KoembedError(
            "value rule 'main_score': the task's main score key is not known (the run record "
            "names none), so which per-example column holds it cannot be told; not resampling "
            "another score in its place"
        )
    if rule in have:  # a per-example score averaged over the examples: v_measure, accuracy
        return _Metric("mean", n, values=_column(frame, rule, rule))
    raise KoembedError(
        f"value rule {rule!r} cannot be recomputed from per-example columns "
        f"{', '.join(have) or '(none)'}"
    )


_RETRIEVAL_SCORE = re.compile(r"(ndcg|map|recall|precision|hit_rate|mrr)_at_\d+\Z")


def _retrieval_metric(frame: Any, keys: Sequence[str], rule: str) -> _Metric:
    """Per-query columns whose means make the value; every one but MRR rounded as mteb does."""
    have = _frame_columns(frame)
    missing = [k for k in keys if k not in have]
    if missing:
        raise KoembedError(
            f"value rule {rule!r} needs the per-query column(s) {', '.join(missing)}, which "
            "these per-example results do not hold (written by an older version, or a cut-off "
            "the task does not compute); re-run the task rather than resample another score"
        )
    parts = tuple((_column(frame, k, rule), not k.startswith("mrr_")) for k in keys)
    values = parts[0][0] if len(parts) == 1 else np.mean([v for v, _ in parts], axis=0)
    return _Metric("mean", len(frame), values=values, parts=parts)


def task_rule(rule: str, main_score: str | None) -> str:
    """The rule a task's per-example statistics use: its value rule, with ``main_score``
    replaced by the task's own main score key (``TaskScore.main_score``: ``ndcg_at_1``,
    ``map_at_1000``, ``cosine_spearman``, ``max_ap``, ...), so that its interval, ``delta``,
    ``delta_ci``, ``p_value`` and averages are of the score its value is. Without a main score
    key the rule stays ``main_score``, which :func:`_metric` resolves only where the frame has
    one candidate (clustering, classification) and refuses otherwise."""
    if rule == "main_score" and main_score:
        return str(main_score)
    return rule


# ---------------------------------------------------------------------------------------------
# One task: value, resampled values, interval
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A confidence interval on the x100 scale of task values.

    ``undefined``: how many of the resamples had no value (see :func:`_percentile_interval`);
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


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise KoembedError(f"confidence level must be between 0 and 1, got {level!r}")


def max_undefined(n_resamples: int, level: float) -> int:
    """How many undefined resamples an interval may leave out: one tail's share,
    ``floor(n_resamples * (1 - level) / 2)`` (25 of 1000 at 95%)."""
    return math.floor(n_resamples * (1.0 - level) / 2.0 + 1e-9)


def _percentile_interval(replicates: np.ndarray, level: float) -> Interval:
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
    metric = _value_metric(frame, rule)
    return float(metric.value_for(np.ones((metric.n, 1)))[0])


def resampled_values(frame: Any, rule: str, weights: np.ndarray) -> np.ndarray:
    """The task value (x100) under each row of count ``weights`` (B, n): shape (B,).

    With a row of ones it is the exact value; with a bootstrap row it equals the value computed
    on the rows drawn (each repeated as often as drawn).
    """
    metric = _value_metric(frame, rule)
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
    metric = _value_metric(frame, rule)
    return metric.value_for(_counts(metric.n, n_resamples, seed, stream))


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
    rule of :func:`_percentile_interval` (left out and counted; ``(nan, nan)`` past one tail's
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
    (NaN ends when more than one tail's share are undefined: :func:`_percentile_interval`)."""
    _check_level(level)
    if _is_clustering(_frame_columns(frame), rule) and _value_metric(frame, rule).n == 1:
        raise KoembedError(
            "one clustering set: mteb's v-measure is one k-means fit, with no interval over "
            f"examples (the paired gate uses the per-document {CLUSTERING_STATISTIC})"
        )
    replicates = task_replicates(frame, rule, n_resamples, seed, stream)
    return _percentile_interval(replicates, level)


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
    (:func:`average_replicates`), undefined resamples under :func:`_percentile_interval`'s rule."""
    _check_level(level)
    draws = _average_draws(tasks, scheme, n_resamples, seed)

    def interval(replicates: np.ndarray | None) -> Interval | None:
        return None if replicates is None else _percentile_interval(replicates, level)

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
    value undefined in them) are left out, as :func:`_percentile_interval` leaves them out.
    """
    _check_level(level)
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


# ---------------------------------------------------------------------------------------------
# Paired test
# ---------------------------------------------------------------------------------------------


PAIRED_METHOD_VERSION = 2
"""Version of the paired test written into run records (``baseline.paired.method``): 2 is the
one-sided sign-flip test with a resolution that follows from the run (issue 17). Records without
it were judged by the two-sided test with a fixed 1,000 swaps (version 1)."""

PAIRED_METHOD = (
    "one-sided approximate randomisation (sign flips of per-example outputs), sequential "
    "Monte Carlo (Besag-Clifford) or exact enumeration; Holm over the run's drops"
)

EXACT_MAX_UNITS = 16
"""At most this many units, every one of the 2^n swap patterns is enumerated (an exact p)."""

SEQUENTIAL_EXCEEDANCES = 20
"""Besag-Clifford's h: a side stops drawing swaps once h swapped deltas are at least as extreme
as the observed one (its p is then h / swaps drawn, at least about 20 / swaps: clearly large)."""

FLOOR_FACTOR = 10
"""The swaps a test may draw give a floor 1 / (R + 1) of at most alpha / (FLOOR_FACTOR x m)."""

SWAP_BLOCK = 256
"""Swap masks are drawn in blocks of this many columns, each from its own seeded stream, so
that swap ``r`` of a task is the same whatever batches it is computed in."""

MDE_POWER = 0.8
"""The power at which :func:`minimum_detectable_effect` is stated."""


def swap_resolution(family_size: int, alpha: float) -> int:
    """R_max: the most random swaps a paired test draws in a run of ``family_size`` tested
    tasks at level ``alpha``: the smallest R with ``1 / (R + 1) <= alpha / (10 m)``, at least
    :data:`DEFAULT_PERMUTATIONS`."""
    if not 0.0 < alpha < 1.0:
        raise KoembedError(f"significance level must be between 0 and 1, got {alpha!r}")
    need = Decimal(FLOOR_FACTOR * max(int(family_size), 1)) / Decimal(repr(float(alpha)))
    return max(DEFAULT_PERMUTATIONS, int(need.to_integral_value(rounding="ROUND_CEILING")) - 1)


def smallest_p(n: int, max_swaps: int) -> float:
    """The smallest one-sided p-value the paired test can give on ``n`` units: 2^-n by exact
    enumeration (n <= :data:`EXACT_MAX_UNITS`), else 1 / (R_max + 1)."""
    if n <= EXACT_MAX_UNITS:
        return 2.0 ** -max(int(n), 0)
    return 1.0 / (max_swaps + 1)


def cannot_fail_note(
    n: int, family_size: int, alpha: float, max_swaps: int | None = None
) -> str | None:
    """Why a task's test can never reach the run's level, or None when it can: its smallest
    attainable p times its first Holm factor (m) is at least alpha. Known before any verdict,
    from the number of units alone."""
    m = max(int(family_size), 1)
    swaps = swap_resolution(m, alpha) if max_swaps is None else max_swaps
    floor = smallest_p(n, swaps)
    if floor * m < alpha:
        return None
    unit = "unit" if n == 1 else "units"
    how = f"1/2^{n}" if n <= EXACT_MAX_UNITS else f"1/{swaps + 1}"
    return (
        f"cannot fail at this level: {n} {unit} give p >= {how} = {floor:.3g}, x {m} "
        f"task{'s' if m != 1 else ''} = {floor * m:.3g} >= {alpha:g}"
    )


def minimum_detectable_effect(
    swap_sd: float,
    delta_sd: float,
    step_alpha: float,
    floor: float,
    min_effect: float = DEFAULT_MIN_EFFECT,
    power: float = MDE_POWER,
) -> float | None:
    """Points: the drop caught with probability ``power`` by a one-sided test at
    ``step_alpha`` (the task's Holm step), None when the test cannot reach that level.

    Normal approximation: the test rejects when the delta falls below ``-z(1-a) * swap_sd``
    (``swap_sd``: the spread of the swapped deltas, the null distribution); under a true drop
    ``D`` the delta spreads as the paired bootstrap says (``delta_sd``), so the power is
    ``P(N(-D, delta_sd) < -z(1-a) swap_sd)``, ``D = z(1-a) swap_sd + z(power) delta_sd``.
    Never below ``min_effect`` (a smaller drop is never called a regression).
    """
    from statistics import NormalDist

    if floor >= step_alpha or not math.isfinite(swap_sd):
        return None
    spread = delta_sd if math.isfinite(delta_sd) and delta_sd > 0 else swap_sd
    z = NormalDist()
    drop = z.inv_cdf(1.0 - step_alpha) * swap_sd + z.inv_cdf(power) * spread
    return max(float(min_effect), float(drop))


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


def _zscores(scores: np.ndarray) -> np.ndarray:
    sd = scores.std()
    return (scores - scores.mean()) / (sd if sd > 0 else 1.0)


def _ranks(values: np.ndarray) -> np.ndarray:
    return _weighted_midranks(_groups(values), np.ones((len(values), 1)))[:, 0]


def _swap_deltas_correlation(new: _Metric, base: _Metric, swaps: np.ndarray) -> np.ndarray:
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


def _swap_deltas_ap(new: _Metric, base: _Metric, swaps: np.ndarray) -> np.ndarray:
    """AP: the two runs' z-scored scores stacked (2n); a swap picks which copy each side counts."""
    assert new.gold is not None
    sides = []
    for column, _ in new.keys:
        a, b = _zscores(new.columns[column]), _zscores(base.columns[column])
        fast = _swap_ap_column(new.gold, a, b, swaps)
        if fast is None:  # tied scores: the general weighted AP on the stacked rows
            stacked = _Metric(
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


def _swap_deltas(new: _Metric, base: _Metric, swaps: np.ndarray) -> np.ndarray:
    """delta = value(new') - value(base') for each swap column (n, R)."""
    if new.kind == "mean":
        assert new.values is not None and base.values is not None
        return 100.0 * ((new.values - base.values) @ (1.0 - 2.0 * swaps)) / new.n
    if new.kind == "sts":
        return _swap_deltas_correlation(new, base, swaps)
    return _swap_deltas_ap(new, base, swaps)


def _aligned(base_frame: Any, new_frame: Any) -> None:
    if len(base_frame) != len(new_frame):
        raise KoembedError(
            f"paired test needs the same examples in both runs: base has {len(base_frame)}, "
            f"new has {len(new_frame)}; align them by key first"
        )
    if "key" in _frame_columns(base_frame) and "key" in _frame_columns(new_frame):
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
    _check_level(level)
    _aligned(base_frame, new_frame)
    base, new = _metric(base_frame, rule), _metric(new_frame, rule)
    if base.kind != "mean" and not np.array_equal(base.gold, new.gold):
        raise KoembedError(
            "paired test: the gold scores/labels differ between base and new; the frames are "
            "not the same examples"
        )
    level_alpha = significance_level(level) if alpha is None else alpha
    max_swaps = (
        swap_resolution(family_size, level_alpha) if n_permutations is None else n_permutations
    )
    ones = np.ones((new.n, 1))
    base_value = float(base.value_for(ones)[0])
    new_value = float(new.value_for(ones)[0])
    weights = _counts(new.n, n_resamples, seed, stream)
    shared: dict[str, Any] = {}  # the gold ranks: the same examples, the same resamples
    new_replicates = new.value_for(weights, shared)
    base_replicates = base.value_for(weights, shared)
    observed = float(_swap_deltas(new, base, np.zeros((new.n, 1), dtype=bool))[0])
    swapped = sequential_swaps(
        lambda start, size: _swap_deltas(new, base, swap_masks(new.n, size, seed, stream, start)),
        observed,
        max_swaps,
        exact=(lambda: _swap_deltas(new, base, exact_masks(new.n)))
        if new.n <= EXACT_MAX_UNITS
        else None,
    )
    paired = new_replicates - base_replicates
    finite = paired[np.isfinite(paired)]
    return PairedTest(
        base=base_value,
        new=new_value,
        delta=new_value - base_value,
        delta_ci=_percentile_interval(paired, level),
        p_value=swapped.p_drop,
        base_ci=_percentile_interval(base_replicates, level),
        new_ci=_percentile_interval(new_replicates, level),
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
    _check_level(level)
    level_alpha = significance_level(level) if alpha is None else alpha
    max_swaps = (
        swap_resolution(family_size, level_alpha) if n_permutations is None else n_permutations
    )
    weights = task_weights([(p[0], p[1]) for p in pairs], scheme)
    metrics = []
    for column, _, rule, base_frame, new_frame in pairs:
        _aligned(base_frame, new_frame)
        metrics.append((column, _metric(base_frame, rule), _metric(new_frame, rule)))
    observed = 0.0
    for column, base, new in metrics:
        zero = np.zeros((new.n, 1), dtype=bool)
        observed += weights[column] * float(_swap_deltas(new, base, zero)[0])

    def deltas_at(start: int, size: int) -> np.ndarray:
        total = np.zeros(size)
        for column, base, new in metrics:
            masks = swap_masks(new.n, size, seed, column, start)
            total += weights[column] * _swap_deltas(new, base, masks)
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


# ---------------------------------------------------------------------------------------------
# Run-level error control and verdicts
# ---------------------------------------------------------------------------------------------


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    Sorted ascending, the k-th smallest (k = 1..m) is multiplied by m - k + 1, made
    non-decreasing, capped at 1. Rejecting every adjusted p < alpha keeps the chance of any
    false rejection among the m tasks at most alpha, whatever the dependence between tasks.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return []
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise KoembedError(f"p-values must lie between 0 and 1, got {list(p_values)!r}")
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (m - np.arange(m))
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return [float(x) for x in adjusted]


def significance_level(confidence: float = DEFAULT_LEVEL) -> float:
    """alpha = 1 - confidence, computed in decimal: 1 - 0.95 is 0.05, not 0.050000000000000044
    (which would let p = 0.05 pass as significant)."""
    _check_level(confidence)
    return float(Decimal(1) - Decimal(repr(float(confidence))))


def paired_verdict(
    delta: float,
    adjusted_p: float,
    confidence: float = DEFAULT_LEVEL,
    min_effect: float = DEFAULT_MIN_EFFECT,
    improvement_p: float | None = None,
) -> str:
    """``regressed``, ``improved`` or ``within noise`` for one task of a paired comparison.

    ``regressed`` when the Holm-adjusted one-sided p-value for a drop (``adjusted_p``) is below
    ``1 - confidence`` and the drop, as the table shows it (``delta`` rounded half-up to 2
    decimals), is at least ``min_effect`` points: ``delta <= -min_effect``. ``improved`` when
    the Holm-adjusted one-sided p for a gain (``improvement_p``, its own family, which never
    fails a run) is below ``1 - confidence`` and the gain is at least ``min_effect``; otherwise
    ``within noise``.
    """
    if min_effect < 0:
        raise KoembedError(f"minimum effect must be 0 points or more, got {min_effect!r}")
    shown = round_half_up(delta, 2)
    alpha = significance_level(confidence)
    if adjusted_p < alpha and shown <= -min_effect and shown < 0:
        return "regressed"
    if improvement_p is not None and improvement_p < alpha and shown >= min_effect and shown > 0:
        return "improved"
    return "within noise"


def holm_steps(p_values: Sequence[float], alpha: float) -> list[float]:
    """The level each p-value faces at its Holm step, in the input order.

    Sorted ascending, the k-th (k = 0..m-1) is tested at alpha / (m - k) when every smaller
    one was rejected; the first that is not rejected stops the procedure, so it and every later
    one face alpha / (m - R) with R the number rejected. (What a task's minimum detectable
    effect is computed at.)
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return []
    adjusted = np.asarray(holm(p_values))
    rejected = int(np.sum(adjusted < alpha))
    order = np.argsort(p, kind="stable")
    steps = np.empty(m)
    for k, i in enumerate(order):
        steps[i] = alpha / (m - min(k, rejected))
    return [float(x) for x in steps]


@dataclass(frozen=True)
class TaskVerdict:
    """One task's outcome in :func:`gate_run`: the drop family's p (``p_value``, Holm-adjusted
    ``adjusted_p``), the improvement family's (``p_improvement``, ``improvement_adjusted``),
    the verdict, the minimum detectable effect (points, None: cannot fail at this level) and,
    where the task cannot reach the run's level at all, why (``cannot_fail``)."""

    delta: float
    p_value: float
    adjusted_p: float
    verdict: str
    p_improvement: float = 1.0
    improvement_adjusted: float = 1.0
    mde: float | None = None
    cannot_fail: str | None = None


def gate_run(
    tests: Mapping[str, PairedTest],
    confidence: float = DEFAULT_LEVEL,
    min_effect: float = DEFAULT_MIN_EFFECT,
) -> dict[str, TaskVerdict]:
    """Holm-adjust the paired tasks of a run, drops and gains as two families, and give each
    task its verdict.

    The run fails when any verdict is ``regressed``: under "no difference" on every task, that
    happens with probability at most ``1 - confidence`` (each drop tested one-sided at the full
    level, Holm over the run's drops). Improvements are a family of their own and never fail.
    """
    columns = list(tests)
    alpha = significance_level(confidence)
    m = len(columns)
    drops = [tests[c].p_value for c in columns]
    adjusted = holm(drops)
    gains = holm([tests[c].p_improvement for c in columns])
    steps = holm_steps(drops, alpha)
    out = {}
    for c, adj, gain, step in zip(columns, adjusted, gains, steps, strict=True):
        t = tests[c]
        out[c] = TaskVerdict(
            delta=t.delta,
            p_value=t.p_value,
            adjusted_p=adj,
            verdict=paired_verdict(t.delta, adj, confidence, min_effect, gain),
            p_improvement=t.p_improvement,
            improvement_adjusted=gain,
            mde=minimum_detectable_effect(t.swap_sd, t.delta_sd, step, t.smallest_p, min_effect),
            cannot_fail=cannot_fail_note(t.n, m, alpha, t.max_swaps),
        )
    return out


def within_interval(baseline: float, low: float, high: float) -> bool:
    """Against a published row (no per-example data): does the published ``baseline`` lie
    within the run's own interval ``[low, high]``? True means the gap is smaller than the
    sampling noise of the task's test set, so it cannot be told from noise."""
    return low <= baseline <= high
