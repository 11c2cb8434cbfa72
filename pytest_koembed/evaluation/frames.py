"""Per-example frames: one row per pair, query, text or clustering run, built from mteb's outputs.

The kinds (:func:`task_kind`), the example keys two runs pair up on (:func:`example_key`), and
one builder per kind (:func:`sts_frame`, :func:`pairs_frame`, :func:`retrieval_frame`,
:func:`clustering_frame` with :func:`centroid_correct`, :func:`classification_frame`). The
columns of each kind are described in ``evaluation.per_example``, the package's one page on the
format.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.scoring import STS_KEYS

KINDS: tuple[str, ...] = ("sts", "pairs", "retrieval", "clustering", "classification")


STS_SCORE_COLUMNS: tuple[str, ...] = ("similarity", "cosine", "manhattan", "euclidean")


PAIR_SCORE_COLUMNS: tuple[str, ...] = ("similarity", "cosine", "manhattan", "euclidean", "dot")


RETRIEVAL_DEPTH = 100
"""Documents kept per query in ``top_ids`` / ``top_scores`` (nDCG@10 needs 10)."""


EXAMPLES_SUFFIX = ".examples.parquet"


# mteb's main score per kind (the task's own metadata may name another: pass ``main_score``).
DEFAULT_MAIN_SCORE = {
    "sts": "cosine_spearman",
    "pairs": "max_ap",
    "retrieval": "ndcg_at_10",
    "clustering": "v_measure",
    "classification": "accuracy",
}


_TYPE_KINDS = {
    "STS": "sts",
    "PairClassification": "pairs",
    "Retrieval": "retrieval",
    "Clustering": "clustering",
    "ClusteringLegacy": "clustering",
    "Classification": "classification",
    "Reranking": "retrieval",
}


# mteb's classification scores (AbsTaskClassification._calculate_scores)
_CLASSIFICATION_SCORES = (
    "accuracy",
    "f1",
    "f1_weighted",
    "precision",
    "precision_weighted",
    "recall",
    "recall_weighted",
    "ap",
    "ap_weighted",
)


_PAIR_RULE = re.compile(
    r"(similarity|cosine|manhattan|euclidean|dot|max)_(ap|accuracy|f1|precision|recall)\Z"
)


_RETRIEVAL_RULE = re.compile(r"(ndcg|map|recall|precision|hit_rate|mrr)_at_(\d+)\Z")


# pytrec_eval measure prefixes -> mteb's score names
_PYTREC = {
    "ndcg_cut_": "ndcg",
    "map_cut_": "map",
    "recall_": "recall",
    "P_": "precision",
    "success_": "hit_rate",
}


def task_kind(rule_or_type: str, task_type: str | None = None) -> str:
    """``"sts"``, ``"pairs"``, ``"retrieval"`` or ``"clustering"`` for a value rule or mteb type.

    ``rule_or_type`` is a value rule (``sts-mean8``, ``cosine_ap``, ``ndcg-5-10``, ``v_measure``,
    ``ndcg_at_10``, ...) or an mteb task type (``STS``, ``PairClassification``, ...). The rule
    ``main_score`` names no kind: give the task's type as ``task_type`` then. Raises a one-line
    KoembedError when neither says.
    """
    name = rule_or_type
    if name in _TYPE_KINDS:
        return _TYPE_KINDS[name]
    if name == "sts-mean8" or name in STS_KEYS:
        return "sts"
    if name == "ndcg-5-10" or _RETRIEVAL_RULE.match(name):
        return "retrieval"
    if name == "v_measure":
        return "clustering"
    if name in _CLASSIFICATION_SCORES:
        return "classification"
    if _PAIR_RULE.match(name):
        return "pairs"
    if task_type is not None and task_type in _TYPE_KINDS:
        return _TYPE_KINDS[task_type]
    raise KoembedError(
        f"cannot tell the task kind of {rule_or_type!r}"
        + (f" (task type {task_type!r})" if task_type else "")
        + "; per-example results cover STS, PairClassification, Retrieval, Clustering, "
        "Classification and Reranking"
    )


def frame_kind(frame: pd.DataFrame) -> str:
    """The kind of a per-example frame, from its columns."""
    columns = set(frame.columns)
    if "gold" in columns:
        return "sts"
    if "label" in columns:
        return "pairs"
    if "query_id" in columns:
        return "retrieval"
    if "v_measure" in columns:
        return "clustering"
    if "predicted" in columns:
        return "classification"
    raise KoembedError(
        "not a per-example frame: expected the columns of an STS (gold), pair classification "
        "(label), retrieval (query_id), clustering (v_measure) or classification (predicted) "
        f"task; got {sorted(columns)}"
    )


def example_key(kind: str, *parts: Any) -> str:
    """A 32-hex-digit BLAKE2b hash of an example's content (JSON of ``[kind, *parts]``)."""
    text = json.dumps([kind, *parts], ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _pair_key(kind: str, a: Any, b: Any, gold: Any) -> str:
    first, second = sorted((str(a), str(b)))  # (A, B) is (B, A), as de-duplication says
    return example_key(kind, first, second, gold)


def _items_digest(texts: Sequence[Any], labels: Sequence[Any]) -> str:
    """An order-free digest of a clustering set: its (text, label) items, sorted."""
    items = sorted(
        json.dumps([str(t), str(_plain(y))], ensure_ascii=False)
        for t, y in zip(texts, labels, strict=True)
    )
    return hashlib.blake2b("\n".join(items).encode("utf-8"), digest_size=16).hexdigest()


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def sts_frame(
    sentence1: Sequence[Any],
    sentence2: Sequence[Any],
    gold: Sequence[float],
    scores: Mapping[str, Sequence[float] | None],
) -> pd.DataFrame:
    """The STS frame from mteb's ``STSEvaluatorScores`` (what ``_calculate_scores`` gets)."""
    similarity = scores.get("similarity_scores")
    cosine = scores["cosine_scores"]
    golds = [float(_plain(g)) for g in gold]
    return pd.DataFrame(
        {
            "key": [
                _pair_key("sts", a, b, g)
                for a, b, g in zip(sentence1, sentence2, golds, strict=True)
            ],
            "gold": np.asarray(golds, dtype=np.float64),
            # mteb correlates cosine in place of a missing similarity function
            "similarity": np.asarray(similarity if similarity is not None else cosine, np.float64),
            "cosine": np.asarray(cosine, dtype=np.float64),
            "manhattan": np.asarray(scores["manhattan_distances"], dtype=np.float64),
            "euclidean": np.asarray(scores["euclidean_distances"], dtype=np.float64),
        }
    )


def pairs_frame(
    sentence1: Sequence[Any],
    sentence2: Sequence[Any],
    labels: Sequence[int],
    distances: Mapping[str, Sequence[float]],
) -> pd.DataFrame:
    """The pair-classification frame from mteb's ``PairClassificationDistances``.

    Distances are multiplied by -1 exactly as mteb does before ``average_precision_score``.
    """
    ints = [int(_plain(y)) for y in labels]
    return pd.DataFrame(
        {
            "key": [
                _pair_key("pairs", a, b, y)
                for a, b, y in zip(sentence1, sentence2, ints, strict=True)
            ],
            "label": np.asarray(ints, dtype=np.int64),
            "similarity": np.array(distances["similarity_scores"]) * 1,
            "cosine": np.array(distances["cosine_scores"]) * 1,
            "manhattan": np.array(distances["manhattan_distances"]) * -1,
            "euclidean": np.array(distances["euclidean_distances"]) * -1,
            "dot": np.array(distances["dot_scores"]) * 1,
        }
    ).astype({c: np.float64 for c in PAIR_SCORE_COLUMNS})


def _by_score_then_id(item: tuple[Any, float]) -> tuple[float, str]:
    return item[1], str(item[0])


def retrieval_frame(
    per_query: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    results: Mapping[str, Mapping[str, float]],
    query_texts: Mapping[str, Any],
    k_values: Sequence[int],
    mrr: Callable[..., Mapping[str, Sequence[float]]] | None = None,
    *,
    depth: int = RETRIEVAL_DEPTH,
    skip_first_result: bool = False,
) -> pd.DataFrame:
    """The retrieval frame: one row per query pytrec_eval scored, in pytrec_eval's order.

    ``per_query`` is pytrec_eval's per-query output (mteb's ``all_scores``); ``mrr`` is mteb's
    ``retrieval_metrics.mrr``. It is given each query's ``depth`` best documents only: mteb ranks
    by the same key, so MRR@K is the same for every K <= depth, at a fraction of the cost (deeper
    K get no ``mrr_at_K`` column). The row order matters for :func:`recompute_value`: mteb sums
    the per-query values in this order.
    """
    ranked: dict[str, list[tuple[Any, float]]] = {}
    for qid in per_query:
        # pytrec_eval's order: score descending, ties by document id descending
        top = heapq.nlargest(
            depth + int(skip_first_result), results[qid].items(), key=_by_score_then_id
        )
        ranked[qid] = top[1:] if skip_first_result else top
    mrr_ks = [k for k in k_values if k <= depth] if mrr is not None else []
    mrr_lists: Mapping[str, Sequence[float]] = {}
    if mrr is not None and mrr_ks:
        top_results = {qid: dict(top) for qid, top in ranked.items()}
        mrr_lists = mrr({qid: qrels[qid] for qid in ranked}, top_results, mrr_ks)
    columns: dict[str, list[Any]] = {"key": [], "query_id": []}
    metric_names = [
        (f"{prefix}{k}", f"{name}_at_{k}") for prefix, name in _PYTREC.items() for k in k_values
    ]
    mrr_names = [(f"MRR@{k}", f"mrr_at_{k}") for k in mrr_ks]
    for _, name in metric_names + mrr_names:
        columns[name] = []
    for extra in ("top_ids", "top_scores", "relevant_ids", "relevant_grades"):
        columns[extra] = []
    for i, (qid, values) in enumerate(per_query.items()):
        rels = sorted((str(d), int(g)) for d, g in qrels[qid].items())
        columns["key"].append(example_key("retrieval", str(query_texts[qid]), rels))
        columns["query_id"].append(str(qid))
        for measure, name in metric_names:
            columns[name].append(float(values[measure]))
        for label, name in mrr_names:
            columns[name].append(float(mrr_lists[label][i]))  # mrr keeps the queries' order
        columns["top_ids"].append([str(d) for d, _ in ranked[qid]])
        columns["top_scores"].append([float(s) for _, s in ranked[qid]])
        columns["relevant_ids"].append([d for d, _ in rels])
        columns["relevant_grades"].append([g for _, g in rels])
    return pd.DataFrame(columns)


ClusteringUnit = tuple[Sequence[Any], Sequence[Any], int, int, float]


CENTROID_COLUMN = "centroid_correct"
"""The clustering frame's per-document column: the gated statistic of a clustering task."""


CENTROID_STATISTIC = "leave-one-out centroid accuracy"
"""What a clustering task's paired test is gated on (mteb's v-measure stays the reported value)."""


def centroid_correct(embeddings: Any, labels: Sequence[Any]) -> np.ndarray:
    """Each document's leave-one-out nearest-gold-centroid correctness (1.0 or 0.0).

    Document ``i`` is correct when its own class's centroid *without it* is nearer (squared
    Euclidean distance on the embeddings as given, the geometry mteb's k-means sees) than every
    other class's centroid. A document alone in its class has no centroid to join: 0.0. Labels
    ``-1`` (mteb's "no label at this level") are not documents of the level: NaN. Pure numpy,
    vectorised, no k-means and no randomness: the same embeddings always give the same values,
    so two runs differ only by their models.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray([str(_plain(v)) for v in labels])
    out = np.full(len(y), np.nan)
    valid = y != "-1"
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"{len(x)} embeddings for {len(y)} labels")
    xv, yv = x[valid], y[valid]
    if len(yv) == 0:
        return out
    classes, index = np.unique(yv, return_inverse=True)
    counts = np.bincount(index, minlength=len(classes)).astype(np.float64)
    sums = np.zeros((len(classes), x.shape[1]))
    np.add.at(sums, index, xv)
    norms = np.einsum("ij,ij->i", xv, xv)
    dots = xv @ sums.T  # (n, k): x_i . S_c
    square = np.einsum("ij,ij->i", sums, sums)  # |S_c|^2
    with np.errstate(invalid="ignore", divide="ignore"):
        # other classes: |x - S/n|^2 = |x|^2 - 2 x.S/n + |S|^2/n^2
        dist = norms[:, None] - 2.0 * dots / counts + square / counts**2
        rows = np.arange(len(yv))
        own_n = counts[index] - 1.0
        own_dot = dots[rows, index] - norms  # x . (S - x)
        own_sq = square[index] - 2.0 * dots[rows, index] + norms  # |S - x|^2
        own = norms - 2.0 * own_dot / own_n + own_sq / own_n**2
    dist[rows, index] = np.inf
    correct = (own < dist.min(axis=1)) & (own_n > 0)
    out[valid] = correct.astype(np.float64)
    return out


def clustering_frame(
    units: Sequence[ClusteringUnit],
    documents: Sequence[tuple[Sequence[Any], Sequence[Any], int, Any]] = (),
) -> pd.DataFrame:
    """The clustering frame: one row per mteb evaluation unit ``(texts, labels, level, run,
    v_measure)``, then one row per document of ``documents`` ``(texts, labels, level,
    embeddings)`` (the texts mteb embedded, their labels at that level, their embeddings).

    Unit rows carry ``v_measure`` (``centroid_correct`` NaN); document rows carry
    ``centroid_correct`` (:func:`centroid_correct`; ``v_measure`` NaN, ``run`` -1), keyed by the
    document's text, label and level, so that two runs pair document by document.
    """
    digests: dict[tuple[int, int], str] = {}  # fast clustering: 10 runs share one set
    rows = []
    for texts, labels, level, run, v in units:
        ids = (id(texts), id(labels))
        if ids not in digests:
            digests[ids] = _items_digest(texts, labels)
        rows.append(
            {
                "key": example_key("clustering", digests[ids], level, run),
                "v_measure": float(v),
                "level": int(level),
                "run": int(run),
                "n_texts": len(texts),
                CENTROID_COLUMN: np.nan,
            }
        )
    for texts, labels, level, embeddings in documents:
        values = centroid_correct(embeddings, labels)
        for text, label, value in zip(texts, labels, values, strict=True):
            if np.isnan(value):
                continue  # no label at this level
            rows.append(
                {
                    "key": example_key("clustering-document", str(text), str(_plain(label)), level),
                    "v_measure": np.nan,
                    "level": int(level),
                    "run": -1,
                    "n_texts": len(texts),
                    CENTROID_COLUMN: float(value),
                }
            )
    columns = ["key", "v_measure", "level", "run", "n_texts", CENTROID_COLUMN]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype(
        {
            "v_measure": np.float64,
            "level": np.int64,
            "run": np.int64,
            "n_texts": np.int64,
            CENTROID_COLUMN: np.float64,
        }
    )


def classification_frame(
    texts: Sequence[Any], labels: Sequence[Any], predictions: Sequence[Sequence[Any]]
) -> pd.DataFrame:
    """The classification frame from the texts scored, their labels and mteb's predictions of
    each experiment (``predictions[e][i]``: experiment ``e``, text ``i``)."""
    for run in predictions:
        if len(run) != len(texts):
            raise ValueError(f"{len(run)} predictions for {len(texts)} texts")
    gold = [str(_plain(y)) for y in labels]
    predicted = [[str(_plain(run[i])) for run in predictions] for i in range(len(texts))]
    accuracy = [
        sum(p == g for p in preds) / len(preds) if preds else float("nan")
        for g, preds in zip(gold, predicted, strict=True)
    ]
    return pd.DataFrame(
        {
            "key": [
                example_key("classification", str(t), g) for t, g in zip(texts, gold, strict=True)
            ],
            "true_label": gold,
            "predicted": predicted,
            "accuracy": np.asarray(accuracy, dtype=np.float64),
        }
    )
