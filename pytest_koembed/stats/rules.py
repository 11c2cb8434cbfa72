"""Value rules: which per-example columns make a task's value, and what is resampled.

Pure numpy. **What is resampled.** The units a task's value averages over: STS and
pair-classification pairs, retrieval queries (the corpus is fixed), clustering rows (mteb's runs
for the fast clustering tasks, its clustering sets for the legacy ones; see
:func:`pytest_koembed.stats.bootstrap.task_interval`). A clustering task's paired test is on its
gated statistic (:data:`CLUSTERING_STATISTIC`), not on mteb's v-measure rows.
:func:`gated_metric` reads a frame for the paired test, :func:`value_metric` for the task value,
both into a :class:`pytest_koembed.stats.kernels.Metric`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from pytest_koembed.errors import KoembedError
from pytest_koembed.stats.kernels import Metric

STS_SCORE_COLUMNS: tuple[str, ...] = ("similarity", "cosine", "manhattan", "euclidean")
"""STS score columns, in the order of :data:`protocol.scoring.STS_KEYS` (``similarity``
is what mteb's plain ``pearson``/``spearman`` keys use)."""

PAIR_SCORE_COLUMNS: tuple[str, ...] = ("similarity", "cosine", "manhattan", "euclidean", "dot")
"""Pair-classification score columns (higher = more similar); ``max_ap`` is the best of them."""


def frame_columns(frame: Any) -> list[str]:
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
    have = frame_columns(frame)
    missing = [c for c in names if c not in have]
    if missing:
        raise KoembedError(
            f"value rule {rule!r} needs per-example column(s) {', '.join(missing)} ({what}); the "
            f"frame has {', '.join(have) or 'no columns'}"
        )


CLUSTERING_STATISTIC = "leave-one-out centroid accuracy"
"""What a clustering task's paired test and interval are computed on (its gated statistic)."""

CENTROID_COLUMN = "centroid_correct"


def is_clustering(have: Sequence[str], rule: str) -> bool:
    return "v_measure" in have and rule in ("v_measure", "main_score")


def _clustering_metric(frame: Any, rule: str) -> Metric:
    """A clustering frame's gated statistic: the mean over documents of ``centroid_correct``.

    mteb's v-measure comes from one k-means fit of one set (KLUE) or from 10 fits on draws
    from the same texts (SIB200): no resampling of those rows is a valid test (see
    docs/statistics.md). Each document's leave-one-out nearest-centroid correctness is a
    k-means-free per-document value, so the generic "mean of per-example values" path (a sign
    flip of per-document differences, a bootstrap over documents) applies to it exactly.
    """
    if CENTROID_COLUMN not in frame_columns(frame):
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
    return Metric("mean", int(values.size), values=values, statistic=CLUSTERING_STATISTIC)


def value_metric(frame: Any, rule: str) -> Metric:
    """The task's reported value: for clustering mteb's v-measure rows, otherwise
    :func:`gated_metric`."""
    have = frame_columns(frame)
    if is_clustering(have, rule):
        runs = np.asarray(frame["v_measure"], dtype=np.float64)
        runs = runs[np.isfinite(runs)]
        if runs.size == 0:
            raise KoembedError("clustering results hold no v-measure row")
        return Metric("mean", int(runs.size), values=runs)
    return gated_metric(frame, rule)


def gated_metric(frame: Any, rule: str) -> Metric:
    """Read ``frame`` for ``rule``: which columns, and how they make the task value (for a
    clustering frame: its gated statistic, :func:`_clustering_metric`)."""
    have = frame_columns(frame)
    n = len(frame)
    if n == 0:
        raise KoembedError(f"per-example results for value rule {rule!r} have no rows")
    if is_clustering(have, rule):
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
        return Metric(
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
        return Metric(
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
                return Metric("mean", n, values=_column(frame, column, rule))
        raise KoembedError(
            "value rule 'main_score': the task's main score key is not known (the run record "
            "names none), so which per-example column holds it cannot be told; not resampling "
            "another score in its place"
        )
    if rule in have:  # a per-example score averaged over the examples: v_measure, accuracy
        return Metric("mean", n, values=_column(frame, rule, rule))
    raise KoembedError(
        f"value rule {rule!r} cannot be recomputed from per-example columns "
        f"{', '.join(have) or '(none)'}"
    )


_RETRIEVAL_SCORE = re.compile(r"(ndcg|map|recall|precision|hit_rate|mrr)_at_\d+\Z")


def _retrieval_metric(frame: Any, keys: Sequence[str], rule: str) -> Metric:
    """Per-query columns whose means make the value; every one but MRR rounded as mteb does."""
    have = frame_columns(frame)
    missing = [k for k in keys if k not in have]
    if missing:
        raise KoembedError(
            f"value rule {rule!r} needs the per-query column(s) {', '.join(missing)}, which "
            "these per-example results do not hold (written by an older version, or a cut-off "
            "the task does not compute); re-run the task rather than resample another score"
        )
    parts = tuple((_column(frame, k, rule), not k.startswith("mrr_")) for k in keys)
    values = parts[0][0] if len(parts) == 1 else np.mean([v for v, _ in parts], axis=0)
    return Metric("mean", len(frame), values=values, parts=parts)


def task_rule(rule: str, main_score: str | None) -> str:
    """The rule a task's per-example statistics use: its value rule, with ``main_score``
    replaced by the task's own main score key (``TaskScore.main_score``: ``ndcg_at_1``,
    ``map_at_1000``, ``cosine_spearman``, ``max_ap``, ...), so that its interval, ``delta``,
    ``delta_ci``, ``p_value`` and averages are of the score its value is. Without a main score
    key the rule stays ``main_score``, which :func:`gated_metric` resolves only where the frame has
    one candidate (clustering, classification) and refuses otherwise."""
    if rule == "main_score" and main_score:
        return str(main_score)
    return rule
