"""Recomputing a task's leaderboard value from its per-example frame, without the model.

:func:`recompute_value` follows mteb's own aggregation per kind (correlations for STS, average
precision or mteb's threshold search for pairs, rounded per-query means for retrieval, v-measure
means for clustering, experiment accuracies for classification), x100 as ``TaskScore.value``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pytest_koembed.errors import KoembedError
from pytest_koembed.evaluation.frames import (
    _PAIR_RULE,
    DEFAULT_MAIN_SCORE,
    PAIR_SCORE_COLUMNS,
    frame_kind,
    task_kind,
)
from pytest_koembed.protocol.scoring import STS_KEYS, task_value


def _sts_scores(frame: pd.DataFrame) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    gold = frame["gold"].to_numpy(dtype=np.float64)
    scores: dict[str, float] = {}
    for prefix, column in (
        ("", "similarity"),
        ("cosine_", "cosine"),
        ("manhattan_", "manhattan"),
        ("euclidean_", "euclidean"),
    ):
        values = frame[column].to_numpy(dtype=np.float64)
        scores[f"{prefix}pearson"] = float(pearsonr(gold, values)[0])
        scores[f"{prefix}spearman"] = float(spearmanr(gold, values)[0])
    return scores


def _pair_metric(frame: pd.DataFrame, column: str, metric: str) -> float:
    labels = frame["label"].to_numpy(dtype=np.int64)
    scores = frame[column].to_numpy(dtype=np.float64)
    if metric == "ap":
        from sklearn.metrics import average_precision_score

        return float(average_precision_score(labels, scores))
    # accuracy / f1 / precision / recall: mteb's own threshold search (it does not use self)
    from mteb.abstasks.pair_classification import AbsTaskPairClassification as PC

    if metric == "accuracy":
        return float(PC._find_best_acc_and_threshold(None, scores.tolist(), labels, True)[0])  # type: ignore[arg-type]
    f1, precision, recall, _ = PC._find_best_f1_and_threshold(None, scores.tolist(), labels, True)  # type: ignore[arg-type]
    return float({"f1": f1, "precision": precision, "recall": recall}[metric])


def _retrieval_score(frame: pd.DataFrame, key: str) -> float:
    if key not in frame.columns:
        raise KoembedError(
            f"the per-query results hold no {key!r} (columns: {list(frame.columns)})"
        )
    values = frame[key].tolist()
    mean = sum(values) / len(values)  # mteb sums in pytrec_eval's query order
    # mteb rounds the query means of pytrec_eval's measures to 5 decimals; MRR it does not
    return mean if key.startswith("mrr_") else round(mean, 5)


def _classification_accuracy(frame: pd.DataFrame) -> float:
    """mteb's accuracy: sklearn's ``accuracy_score`` of each experiment, averaged over them."""
    from sklearn.metrics import accuracy_score

    gold = frame["true_label"].tolist()
    runs = list(zip(*frame["predicted"].tolist(), strict=True))  # experiment-major
    return float(np.mean([accuracy_score(gold, list(run)) for run in runs]))


def recompute_value(frame: pd.DataFrame, rule: str, main_score: str | None = None) -> float:
    """A task's leaderboard value (x100, unrounded) from its per-example frame, as mteb computes it.

    ``rule`` is the task's value rule; for ``main_score`` give the task's mteb main score key
    (``TaskScore.main_score``), else mteb's default for the frame's kind is used. Equals the run's
    ``TaskScore.value`` to float precision (retrieval: mteb's 5-decimal rounding of query means
    is applied as mteb applies it). Raises a one-line KoembedError for a rule the frame's kind has
    no per-example form of, or an empty frame.
    """
    kind = frame_kind(frame)
    if frame.empty:
        raise KoembedError(f"no per-example results to recompute {rule!r} from (empty frame)")
    keys: tuple[str, ...]
    if rule == "main_score":
        keys = (main_score or DEFAULT_MAIN_SCORE[kind],)
        if kind == "retrieval" and keys == ("accuracy",):
            # mteb's retrieval "accuracy" is its recall@1 (retrieval_metrics.make_score_dict)
            return 100.0 * _retrieval_score(frame, "recall_at_1")
    elif rule == "sts-mean8":
        keys = STS_KEYS
    elif rule == "ndcg-5-10":
        keys = ("ndcg_at_5", "ndcg_at_10")
    else:
        keys = (rule,)
    if any(task_kind(k) != kind for k in keys):
        raise KoembedError(f"value rule {rule!r} does not apply to {kind} per-example results")
    scores: dict[str, float] = {}
    if kind == "sts":
        scores = _sts_scores(frame)
    elif kind == "pairs":
        for key in keys:
            match = _PAIR_RULE.match(key)
            assert match is not None
            prefix, metric = match.groups()
            columns = PAIR_SCORE_COLUMNS if prefix == "max" else (prefix,)
            scores[key] = max(_pair_metric(frame, c, metric) for c in columns)
    elif kind == "retrieval":
        scores = {key: _retrieval_score(frame, key) for key in keys}
    elif kind == "classification":
        if keys != ("accuracy",):
            raise KoembedError(
                f"classification score {keys[0]!r} is not a mean over the texts scored; only "
                "accuracy has per-example results (no interval; the paired gate falls back)"
            )
        scores = {"accuracy": _classification_accuracy(frame)}
    else:
        runs = frame["v_measure"].to_numpy(dtype=np.float64)
        runs = runs[~np.isnan(runs)]  # mteb's units; document rows carry the gated statistic
        if runs.size == 0:
            raise KoembedError("clustering per-example results hold no v-measure row")
        mean = float(np.mean(runs))  # as mteb does
        scores = {key: mean for key in keys}
    return task_value(keys[0] if len(keys) == 1 else rule, scores)
