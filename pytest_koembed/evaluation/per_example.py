"""Per-example results: what mteb scored for every pair, query and clustering run of a task.

Each evaluated task keeps a pandas DataFrame with one row per example, enough to recompute the
task's leaderboard value exactly without the model (:func:`recompute_value`). The numbers are
mteb's own: :class:`ExampleCapture` wraps the metric step of the injected mteb task object and
records the per-example scores mteb computes its aggregate metrics from.

The frames, by task kind (:func:`task_kind`); every frame has ``key``, a 32-hex-digit BLAKE2b hash
of the example's content (:func:`example_key`), so that two runs pair up on the same rows in any
order (:func:`pair_examples`):

- ``sts``: ``key``, ``gold`` (the score in the data), ``similarity`` (the model's similarity
  function), ``cosine`` (1 - cosine distance), ``manhattan``, ``euclidean`` (NEGATIVE distances):
  exactly what mteb correlates with the gold scores. Key: the two sentences in sorted order (the
  pair (A, B) is the pair (B, A), as de-duplication treats them) and the gold score.
- ``pairs``: ``key``, ``label`` (0/1), ``similarity``, ``cosine``, ``manhattan``, ``euclidean``,
  ``dot``, each oriented so that higher means more similar (distances times -1, as mteb passes them
  to ``average_precision_score``). Key: the sorted sentences and the label.
- ``retrieval``: one row per query mteb scored: ``key``, ``query_id``, the per-query pytrec_eval
  values ``ndcg_at_K``, ``map_at_K``, ``recall_at_K``, ``precision_at_K``, ``hit_rate_at_K`` for
  every K of the task (1, 3, 5, 10, 20, 100, 1000) and mteb's ``mrr_at_K`` for K <= 100,
  ``top_ids`` and ``top_scores`` (the :data:`RETRIEVAL_DEPTH` best documents, ranked as
  pytrec_eval ranks them: score descending, ties by document id descending), ``relevant_ids`` and
  ``relevant_grades`` (the query's qrels). Key: the query text and its qrels, sorted.
- ``classification``: one row per text scored: ``key``, ``true_label`` (the label, as text),
  ``predicted`` (the label mteb's classifier predicted in each of its experiments, as text; mteb
  trains 10 logistic regressions on different samples of the training split), ``accuracy`` (the
  fraction of those experiments that got it right). Key: the text and its label. Reranking tasks
  (mteb scores them as retrieval over each query's candidates) have ``retrieval`` frames.
- ``clustering``: one row per mteb evaluation unit: ``key``, ``v_measure``, ``level``, ``run``,
  ``n_texts``. Fast clustering (SIB200-like) gives one row per bootstrap run (mteb runs 10) and
  hierarchy level; legacy clustering (one clustering set per dataset row, KLUE-like, and local data
  with a ``set`` column) one row per set (``run`` 0). ``n_texts``: the texts of the set (fast
  clustering samples each run from them). Key: the set's (text, label) items, sorted, with the
  level and run index. These rows have ``centroid_correct`` NaN. Then one row per document mteb
  embedded (``run`` -1, ``v_measure`` NaN): ``centroid_correct``, its leave-one-out
  nearest-gold-centroid correctness on the model's embeddings (:func:`centroid_correct`), the
  statistic the paired gate tests for clustering (``stats``); key: the text, label and level.

Values (:func:`recompute_value`): STS, the mean of pearson and spearman of ``gold`` against each
score column; pair classification, sklearn's average precision (or mteb's threshold search for
accuracy / f1 / precision / recall) of a column, ``max_*`` the best of the five; retrieval, the
mean over queries of the per-query values, rounded to 5 decimals as mteb rounds them (MRR is not
rounded; ``stats`` applies the same rounding to the observed and every resampled value; a
``main_score`` task's statistics resample the column of its own main score, ``map_at_1000``,
``mrr_at_5``, ..., named by the run record's ``main_score``; mteb's retrieval ``accuracy`` is
``recall_at_1``); clustering, the mean of ``v_measure`` over mteb's
rows; classification, mteb's accuracy of each
experiment (sklearn's ``accuracy_score`` of its predictions) averaged over the experiments. Other
classification scores (macro F1, ...) are not means over texts: a task valued by one keeps no
per-example results. All x100, as ``TaskScore.value``.

The sidecar file (:func:`write_run_files`): ``<record stem>.examples.parquet`` next to the run
record, one file for all tasks with the columns ``column`` (the suite column) and ``kind`` followed
by the union of the kinds' columns; the record's ``"examples"`` block names it and holds its
SHA-256 (:func:`load_examples` checks it). The plugin rewrites both after every finished task, the
sidecar first: a run killed between the two writes (milliseconds) leaves a sidecar one task ahead
of its record, which :func:`load_examples` refuses by its checksum.

This module imports neither pytest nor (at import time) mteb; it touches mteb only through the
task object ``evaluation.py`` hands it, and borrows mteb's MRR and pair-classification threshold
search rather than re-implementing them.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.scoring import STS_KEYS, task_value
from pytest_koembed.records import atomic_write

__all__ = [
    "EXAMPLES_SUFFIX",
    "KINDS",
    "RETRIEVAL_DEPTH",
    "ExampleCapture",
    "example_key",
    "examples_path",
    "frame_from_text",
    "frame_kind",
    "frame_to_text",
    "load_examples",
    "pair_examples",
    "read_examples_file",
    "recompute_value",
    "task_kind",
    "write_examples",
    "write_run_files",
]

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


# ---------------------------------------------------------------------------------------------
# Kinds and keys
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Frames from mteb's per-example outputs
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Capturing them from an mteb task object
# ---------------------------------------------------------------------------------------------


def _column(data: Any, name: str) -> list[Any]:
    return list(data[name])


class ExampleCapture:
    """Records the per-example scores of one mteb task's evaluation.

    ``install()`` wraps, on the task instance only, ``_evaluate_subset`` (to see the exact rows
    scored) and the metric step mteb runs on the per-example scores: ``_calculate_scores`` (STS),
    ``_compute_metrics`` (pair classification), ``task_specific_scores`` (retrieval: it receives
    pytrec_eval's per-query values, the qrels and the ranked results). Clustering's per-run
    v-measures come back in ``_evaluate_subset``'s own scores. The wrappers call the originals
    and change nothing; mteb computes every number as it always does.
    """

    def __init__(self, task: Any, *, split: str, subset: str) -> None:
        self.task = task
        self.split = split
        self.subset = subset
        self.kind = self._kind(task)
        self.frame: pd.DataFrame | None = None
        self.error: str | None = None
        self._data: Any = None
        self._predictions: list[list[Any]] = []  # classification: one list per experiment

    @staticmethod
    def _kind(task: Any) -> str:
        from mteb.abstasks.classification import AbsTaskClassification
        from mteb.abstasks.clustering import AbsTaskClustering
        from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy
        from mteb.abstasks.pair_classification import AbsTaskPairClassification
        from mteb.abstasks.retrieval import AbsTaskRetrieval
        from mteb.abstasks.sts import AbsTaskSTS

        for base, kind in (
            (AbsTaskSTS, "sts"),
            (AbsTaskPairClassification, "pairs"),
            (AbsTaskClusteringLegacy, "clustering-legacy"),
            (AbsTaskClustering, "clustering"),
            (AbsTaskRetrieval, "retrieval"),
        ):
            if isinstance(task, base):
                return kind
        # plain classification only (mteb's multilabel and regression tasks subclass it)
        from mteb.abstasks.multilabel_classification import AbsTaskMultilabelClassification
        from mteb.abstasks.regression import AbsTaskRegression

        other = (AbsTaskMultilabelClassification, AbsTaskRegression)
        if (
            isinstance(task, AbsTaskClassification)
            and not isinstance(task, other)
            and not getattr(task, "is_cross_validation", False)
        ):
            return "classification"
        raise KoembedError(f"{task.metadata.name}: no per-example results for its task type")

    def install(self) -> ExampleCapture:
        task = self.task
        evaluate_subset = task._evaluate_subset

        def _evaluate_subset(model: Any, data_split: Any, **kwargs: Any) -> Any:
            mine = kwargs.get("hf_split") == self.split and kwargs.get("hf_subset") == self.subset
            if mine:
                self._data = data_split
            self._predictions = []
            if mine and self.kind.startswith("clustering"):
                scores = self._recording(evaluate_subset, model, data_split, **kwargs)
            else:
                scores = evaluate_subset(model, data_split, **kwargs)
            if mine and self.kind.startswith("clustering"):
                self._guard(self._clustering, data_split, scores)
            if mine and self.kind == "classification":
                self._guard(self._classification, data_split)
            return scores

        task._evaluate_subset = _evaluate_subset
        if self.kind == "classification":
            run_experiment = task._run_experiment

            def _run_experiment(*args: Any, **kwargs: Any) -> Any:
                scores, predictions = run_experiment(*args, **kwargs)
                self._predictions.append(list(predictions))
                return scores, predictions

            task._run_experiment = _run_experiment
        if self.kind == "sts":
            original = task._calculate_scores

            def _calculate_scores(scores: Any, normalized_scores: Any) -> Any:
                result = original(scores, normalized_scores)
                self._guard(self._sts, scores)
                return result

            task._calculate_scores = _calculate_scores
        elif self.kind == "pairs":
            original = task._compute_metrics

            def _compute_metrics(similarity_scores: Any, labels: Any) -> Any:
                result = original(similarity_scores, labels)
                self._guard(self._pairs, similarity_scores, labels)
                return result

            task._compute_metrics = _compute_metrics
        elif self.kind == "retrieval":
            original = task.task_specific_scores

            def task_specific_scores(
                scores: Any, qrels: Any, results: Any, hf_split: str, hf_subset: str
            ) -> Any:
                result = original(scores, qrels, results, hf_split, hf_subset)
                if hf_split == self.split and hf_subset == self.subset:
                    self._guard(self._retrieval, scores, qrels, results)
                return result

            task.task_specific_scores = task_specific_scores
        return self

    def _recording(self, evaluate: Callable[..., Any], model: Any, data: Any, **kw: Any) -> Any:
        """Clustering: run mteb's step with the model's ``encode`` recorded (the embeddings the
        per-document statistic needs) and the task's random state copied first (fast clustering
        draws which documents to embed from it)."""
        import copy

        self._embeddings: list[np.ndarray] = []
        self._rng_before = copy.deepcopy(getattr(self.task, "rng_state", None))
        had = "encode" in vars(model) if hasattr(model, "__dict__") else False
        original = model.encode

        def encode(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            try:
                self._embeddings.append(np.asarray(out, dtype=np.float64))
            except (TypeError, ValueError):  # not a dense array: no per-document rows
                self._embeddings.append(np.empty((0, 0)))
            return out

        try:
            model.encode = encode
        except (AttributeError, TypeError):
            self._embeddings = []
            return evaluate(model, data, **kw)
        try:
            return evaluate(model, data, **kw)
        finally:
            if had:
                model.encode = original
            else:
                del model.encode

    def _guard(self, build: Callable[..., pd.DataFrame], *args: Any) -> None:
        """Build the frame; a failure is recorded (``error``), never raised into mteb's run."""
        try:
            self.frame = build(*args)
        except Exception as exc:  # our bookkeeping must not break the evaluation
            self.error = f"{type(exc).__name__}: {exc}".splitlines()[0]

    def _sts(self, scores: Any) -> pd.DataFrame:
        c1, c2 = self.task.column_names[0], self.task.column_names[1]
        data = self._data
        return sts_frame(_column(data, c1), _column(data, c2), _column(data, "score"), scores)

    def _pairs(self, similarity_scores: Any, labels: Any) -> pd.DataFrame:
        c1, c2 = self.task.input1_column_name, self.task.input2_column_name
        data = self._data
        if len(data) == 1 and isinstance(data[0][c1], list):  # one row of lists (mteb v1 shape)
            s1, s2 = list(data[0][c1]), list(data[0][c2])
        else:
            s1, s2 = _column(data, c1), _column(data, c2)
        return pairs_frame(s1, s2, list(labels), similarity_scores)

    def _retrieval(self, scores: Any, qrels: Any, results: Any) -> pd.DataFrame:
        from mteb._evaluators.retrieval_metrics import mrr

        queries = self._data["queries"]
        texts = queries["text"] if "text" in queries.column_names else [str(q) for q in queries]
        query_texts = dict(zip((str(i) for i in queries["id"]), texts, strict=True))
        k_values = list(self.task.k_values)
        return retrieval_frame(
            scores,
            qrels,
            results,
            query_texts,
            k_values,
            mrr,
            skip_first_result=bool(getattr(self.task, "skip_first_result", False)),
        )

    def _classification(self, data_split: Any) -> pd.DataFrame:
        task = self.task
        if len(self._predictions) != int(task.n_experiments):
            raise ValueError(
                f"{len(self._predictions)} experiments seen, mteb runs {task.n_experiments}"
            )
        scored = data_split[self.split]
        labels = _column(scored, task.input_column_name), _column(scored, task.label_column_name)
        predictions = self._predictions
        names = getattr(task, "koembed_label_names", None)  # data.LABEL_NAMES_ATTR
        if names is not None:  # labels given as names were scored as ids: show the names
            labels = (labels[0], [names[int(y)] for y in labels[1]])
            predictions = [[names[int(y)] for y in run] for run in predictions]
        return classification_frame(*labels, predictions)

    def _clustering(self, data_split: Any, scores: Mapping[str, Any]) -> pd.DataFrame:
        task = self.task
        text_col, label_col = task.input_column_name, task.label_column_name
        v_measures = scores["v_measures"]
        embedded = getattr(self, "_embeddings", [])
        if self.kind == "clustering-legacy":
            texts, labels = _column(data_split, text_col), _column(data_split, label_col)
            if len(v_measures) != len(texts):
                raise ValueError(f"{len(v_measures)} v-measures for {len(texts)} clustering sets")
            units = [(t, y, 0, 0, v) for t, y, v in zip(texts, labels, v_measures, strict=True)]
            # mteb embeds each set of more than one label, in order (one encode call per set)
            encoded = [(t, y) for t, y in zip(texts, labels, strict=True) if len(set(y)) > 1]
            documents = []
            if len(encoded) == len(embedded):
                documents = [
                    (t, y, 0, e)
                    for (t, y), e in zip(encoded, embedded, strict=True)
                    if e.shape[:1] == (len(t),)
                ]
            return clustering_frame(units, documents)
        # fast clustering: the whole split is one set; mteb samples from it per run
        texts, labels = _column(data_split, text_col), _column(data_split, label_col)
        labels = [y[0] if isinstance(y, list) and len(y) == 1 else y for y in labels]
        units = []
        for level_name, runs in v_measures.items():
            level = int(str(level_name).split()[-1])
            units.extend((texts, labels, level, run, v) for run, v in enumerate(runs))
        return clustering_frame(units, self._fast_documents(data_split, embedded))

    def _fast_documents(self, data_split: Any, embedded: list[np.ndarray]) -> list[Any]:
        """The documents fast clustering embedded, per hierarchy level, with their embeddings."""
        task = self.task
        if len(embedded) != 1:
            return []
        vectors = embedded[0]
        n = len(data_split)
        chosen = list(range(n))
        if len(vectors) != n:  # mteb embedded a sample: replay its draw on the copied state
            rng = self._rng_before
            if rng is None:
                return []
            chosen = rng.sample(range(n), k=len(vectors))
        texts = [data_split[i][task.input_column_name] for i in chosen]
        raw = [data_split[i][task.label_column_name] for i in chosen]
        labels = [y if isinstance(y, list) else [y] for y in raw]
        depth = max(map(len, labels)) if labels else 0
        if task.max_depth is not None:
            depth = min(depth, int(task.max_depth))
        return [
            (texts, [y[level] if len(y) > level else -1 for y in labels], level, vectors)
            for level in range(depth)
        ]


# ---------------------------------------------------------------------------------------------
# Recomputing the value
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Pairing two runs
# ---------------------------------------------------------------------------------------------


def _with_occurrence(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with ``_n``: 0 for a key's first row, 1 for its second, ... (duplicates pair up
    in the order they appear)."""
    out = frame.reset_index(drop=True)
    return out.assign(_n=out.groupby("key", sort=False).cumcount())


def pair_examples(
    base: pd.DataFrame, new: pd.DataFrame, *, name: str = "the task"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two frames on the same examples, aligned row by row in the new run's row order.

    The order is the one mteb scored the examples in (the frames keep it), and mteb's sums follow
    it: a retrieval value is ``round(sum(per-query values) / n, 5)``, and at a 5-decimal boundary
    another order can round the other way. Keeping it, the paired values equal the records'
    (the baseline's too, when it scored the rows in the same order, as the same data does).

    Refuses with a one-line KoembedError, saying how many examples match, when the two runs were
    made on different rows or different kinds of task. A key that appears more than once (the
    same content twice, rare after de-duplication) pairs its n-th row in one run with its n-th
    row in the other.
    """
    if frame_kind(base) != frame_kind(new):
        raise KoembedError(
            f"baseline for {name} holds {frame_kind(base)} results, this run {frame_kind(new)}"
        )
    b, n = _with_occurrence(base), _with_occurrence(new)
    b_ids = set(zip(b["key"], b["_n"], strict=True))
    n_ids = set(zip(n["key"], n["_n"], strict=True))
    if b_ids != n_ids:
        matched = len(b_ids & n_ids)
        extra = f" (the baseline has {len(b):,})" if len(b) != len(n) else ""
        raise KoembedError(
            f"baseline for {name} was made on different rows: {matched:,} of {len(n):,} examples "
            f"match{extra}"
        )
    position = {kn: i for i, kn in enumerate(zip(b["key"], b["_n"], strict=True))}
    order = [position[kn] for kn in zip(n["key"], n["_n"], strict=True)]
    b = b.iloc[order].drop(columns="_n").reset_index(drop=True)
    n = n.drop(columns="_n").reset_index(drop=True)
    return b, n


# ---------------------------------------------------------------------------------------------
# Files: the sidecar, its transport between processes, and reading it back
# ---------------------------------------------------------------------------------------------


def frame_to_text(frame: pd.DataFrame) -> str:
    """A frame as JSON-able text (base64 of parquet bytes): how it travels from an xdist worker."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def frame_from_text(text: str) -> pd.DataFrame:
    """The inverse of :func:`frame_to_text`."""
    return pd.read_parquet(io.BytesIO(base64.b64decode(text)))


def examples_path(record_path: str | Path) -> Path:
    """Where the sidecar of a run record goes: ``run.json`` -> ``run.examples.parquet``."""
    path = Path(record_path)
    return path.with_name(path.stem + EXAMPLES_SUFFIX)


def file_sha256(path: Path) -> str:
    """A file's sha256 (hex), read in 1 MiB chunks: the checksum records keep of their sidecar."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_examples(frames: Mapping[str, pd.DataFrame], path: str | Path) -> dict[str, Any]:
    """Write the frames (suite column -> frame) as one parquet file, atomically.

    Returns the run record's ``"examples"`` block: ``{"file": NAME, "sha256": HEX, "tasks":
    {column: rows}}`` (``file`` relative to the record's folder).
    """
    target = Path(path)
    parts = [
        frame.assign(column=column, kind=frame_kind(frame))[["column", "kind", *frame.columns]]
        for column, frame in frames.items()
    ]
    table = (
        pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["column", "kind"])
    )
    atomic_write(target, lambda tmp: table.to_parquet(tmp, index=False, compression="zstd"))
    return {
        "file": target.name,
        "sha256": file_sha256(target),
        "tasks": {column: len(frame) for column, frame in frames.items()},
    }


_INT_COLUMNS = ("label", "level", "run", "n_texts")
# The union table interleaves the kinds' columns: put each frame's back in their written order.
_LEADING_COLUMNS = {
    "sts": ("key", "gold", *STS_SCORE_COLUMNS),
    "pairs": ("key", "label", *PAIR_SCORE_COLUMNS),
    "retrieval": ("key", "query_id"),
    "clustering": ("key", "v_measure", "level", "run", "n_texts", CENTROID_COLUMN),
    "classification": ("key", "true_label", "predicted", "accuracy"),
}


def read_examples_file(path: str | Path) -> dict[str, pd.DataFrame]:
    """Split a sidecar file into its per-task frames (no checksum check: see load_examples)."""
    table = pd.read_parquet(path)
    frames: dict[str, pd.DataFrame] = {}
    for column, part in table.groupby("column", sort=False):
        frame = part.drop(columns=["column", "kind"]).dropna(axis=1, how="all")
        frame = frame.reset_index(drop=True)
        for name in _INT_COLUMNS:
            if name in frame.columns:
                frame[name] = frame[name].astype(np.int64)
        for name in ("top_ids", "top_scores", "relevant_ids", "relevant_grades", "predicted"):
            if name in frame.columns:
                frame[name] = frame[name].map(list)
        first = _LEADING_COLUMNS.get(frame_kind(frame), ())
        order = [c for c in first if c in frame.columns]
        frames[str(column)] = frame[order + [c for c in frame.columns if c not in order]]
    return frames


def load_examples(
    source: str | Path | Mapping[str, Any], *, base_dir: str | Path | None = None
) -> dict[str, pd.DataFrame]:
    """The per-example frames of a run record (suite column -> frame), checksum verified.

    ``source`` is the record's path, or the record itself (its sidecar is then looked up in
    ``base_dir``, default the current folder). Raises a one-line KoembedError when the record
    names no sidecar, the file is missing, or its checksum does not match.
    """
    from pytest_koembed.records import read_run_record

    if isinstance(source, Mapping):
        record, where, folder = source, "run record", Path(base_dir or ".")
    else:
        record = read_run_record(source)
        where, folder = f"run record {source}", Path(source).parent
    block = record.get("examples")
    if not isinstance(block, Mapping) or not block.get("file"):
        raise KoembedError(
            f"{where} holds no per-example results (written by an older version, or no task "
            "was scored); save the run again with --koembed-json or --koembed-save-baseline"
        )
    path = folder / str(block["file"])
    if not path.is_file():
        raise KoembedError(
            f"{where} names per-example results {path}, which does not exist (keep the "
            f"{EXAMPLES_SUFFIX} file next to its record)"
        )
    actual = file_sha256(path)
    if actual != block.get("sha256"):
        raise KoembedError(
            f"per-example results {path} do not match {where} (sha256 {actual[:12]}..., the "
            f"record says {str(block.get('sha256'))[:12]}...); the file was changed or belongs "
            "to another run"
        )
    try:
        return read_examples_file(path)
    except (OSError, ValueError) as exc:  # pyarrow errors are ValueErrors / OSErrors
        raise KoembedError(f"cannot read per-example results {path}: {exc}") from None


def _kept_frames(path: Path, record: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """Frames of the file about to be replaced, for the tasks ``record`` keeps unchanged from it
    (``--koembed-update-baseline`` keeps the old cells of tasks this run did not score)."""
    if not path.is_file():
        return {}
    try:
        from pytest_koembed.records import read_run_record

        old = read_run_record(path)
        frames = load_examples(path)
    except KoembedError:
        return {}
    old_tasks = {t.get("column"): t for t in old.get("tasks", []) if isinstance(t, Mapping)}
    return {
        t["column"]: frames[t["column"]]
        for t in record.get("tasks", [])
        if t.get("column") in frames and old_tasks.get(t["column"]) == t
    }


def write_run_files(
    record: Mapping[str, Any],
    path: str | Path,
    frames: Mapping[str, pd.DataFrame],
    write_json: Callable[[Mapping[str, Any], Path], None],
) -> None:
    """Write a run record to ``path`` with its per-example sidecar beside it.

    The sidecar holds the frames of the record's scored tasks; it is written first, then the
    record naming it with its checksum (``"examples"``; None when no task has per-example
    results). Both are atomic replacements.
    """
    target = Path(path)
    scored = [t["column"] for t in record.get("tasks", []) if t.get("status") == "ok"]
    missing = [c for c in scored if c not in frames]
    kept = _kept_frames(target, record) if missing else {}
    chosen = {c: frames[c] if c in frames else kept[c] for c in scored if c in frames or c in kept}
    out = dict(record)
    out["examples"] = write_examples(chosen, examples_path(target)) if chosen else None
    write_json(out, target)
