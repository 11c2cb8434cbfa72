"""Capture during evaluation: :class:`ExampleCapture` wraps the metric step of the injected mteb
task object and records the per-example scores mteb computes its aggregate metrics from, as the
frames of ``evaluation.frames``. It touches mteb only through the task object it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from pytest_koembed.errors import KoembedError
from pytest_koembed.evaluation.frames import (
    classification_frame,
    clustering_frame,
    pairs_frame,
    retrieval_frame,
    sts_frame,
)


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
