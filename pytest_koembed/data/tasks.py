"""mteb task objects: which kind a task is, finding it by name, and putting rows into it.

A :class:`PreparedTask` is a real mteb task object whose data is already loaded, restricted to
one split and one subset, in the exact shape the task's evaluator reads. This module looks a
task up in mteb (one-line errors naming close matches), builds the ``datasets`` objects each
kind reads (pairs, clustering texts, a retrieval split, classification train/test) and injects
them. ``mteb`` and ``datasets`` are imported lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_koembed.data.layout import RetrievalRows, TextRows
from pytest_koembed.errors import KoembedError

if TYPE_CHECKING:
    from mteb.abstasks.abstask import AbsTask

    from pytest_koembed.protocol.spec import TaskSpec

__all__ = [
    "PreparedTask",
    "dataset_id",
]


# Internal task kinds: the four custom types plus mteb's legacy clustering.
_LEGACY = "ClusteringLegacy"


_MAIN_SCORE = {
    "STS": "cosine_spearman",
    "PairClassification": "max_ap",
    "Clustering": "v_measure",
    _LEGACY: "v_measure",
    "Retrieval": "ndcg_at_10",
    "Classification": "accuracy",
    "Reranking": "ndcg_at_10",
}


@dataclass
class PreparedTask:
    """An mteb task ready for ``mteb.evaluate``, and what it holds."""

    task: AbsTask  # data loaded, restricted to spec.split and spec.subset (data_loaded=True)
    n_examples: int  # pairs / texts / queries scored, after de-duplication
    sizes: dict[
        str, int
    ]  # {"pairs": n} / {"texts": n, "sets": k} / {"queries", "documents", "qrels"}
    # pairs removed by de-duplication (0 for clustering and retrieval), including those a mirror
    # removed before writing the rows (its koembed-mirror.json)
    duplicates_dropped: int
    source: str  # "local:<abs dir>" or "hub:<dataset path>@<revision>"


def _kind_of(task: AbsTask) -> str | None:
    from mteb.abstasks.classification import AbsTaskClassification
    from mteb.abstasks.clustering import AbsTaskClustering
    from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy
    from mteb.abstasks.multilabel_classification import AbsTaskMultilabelClassification
    from mteb.abstasks.pair_classification import AbsTaskPairClassification
    from mteb.abstasks.regression import AbsTaskRegression
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.sts import AbsTaskSTS

    if isinstance(task, (AbsTaskMultilabelClassification, AbsTaskRegression)):
        return None  # subclasses of classification with other data and metrics
    if isinstance(task, AbsTaskRetrieval) and task.metadata.type == "Reranking":
        return "Reranking"  # mteb 2.x reranks through retrieval, with candidates per query
    for base, kind in (
        (AbsTaskClassification, "Classification"),
        (AbsTaskSTS, "STS"),
        (AbsTaskPairClassification, "PairClassification"),
        (AbsTaskClusteringLegacy, _LEGACY),
        (AbsTaskClustering, "Clustering"),
        (AbsTaskRetrieval, "Retrieval"),
    ):
        if isinstance(task, base):
            return kind
    return None


def _layout_kind(kind: str) -> str:
    return "Clustering" if kind == _LEGACY else kind


def _known_task_names() -> list[str]:
    try:
        from mteb.get_tasks import _TASKS_REGISTRY

        return list(_TASKS_REGISTRY)
    except Exception:  # pragma: no cover - private name moved
        return []


def _get_mteb_task(spec: TaskSpec) -> tuple[AbsTask, str]:
    """The real mteb task restricted to spec.split / spec.subset, and its kind."""
    import difflib

    import mteb

    try:
        probe = mteb.get_task(spec.task)
    except KeyError:
        close = difflib.get_close_matches(spec.task, _known_task_names(), n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise KoembedError(
            f"unknown mteb task {spec.task!r}{hint}; use an mteb task name "
            "(mteb.get_tasks()) or declare a custom local task with type and data"
        ) from None
    kind = _kind_of(probe)
    if kind is None:
        raise KoembedError(
            f"mteb task {spec.task!r} is of type {probe.metadata.type}, which koembed does not "
            "score (STS, PairClassification, Clustering, Retrieval, Classification, Reranking)"
        )
    metadata = probe.metadata
    if spec.split not in metadata.eval_splits:
        raise KoembedError(
            f"mteb task {spec.task!r} has no evaluation split {spec.split!r}; "
            f"valid: {', '.join(metadata.eval_splits)}"
        )
    if metadata.is_multilingual:
        subsets = list(metadata.hf_subsets)
        if spec.subset not in subsets:
            raise KoembedError(
                f"mteb task {spec.task!r} has no subset {spec.subset!r}; "
                f"valid: {_name_some(spec.subset, subsets)}"
            )
        # what mteb.get_task(name, eval_splits=..., hf_subsets=...) does, on the probe itself
        probe.filter_eval_splits([spec.split])
        probe.filter_languages(None, hf_subsets=[spec.subset])
    else:
        if spec.subset != "default":
            raise KoembedError(
                f'mteb task {spec.task!r} has no subsets; use subset = "default", '
                f"not {spec.subset!r}"
            )
        probe.filter_eval_splits([spec.split])
    return probe, kind


def dataset_id(spec: TaskSpec) -> str | None:
    """The Hub dataset id of an mteb task, from its metadata (no data is read); None for custom
    tasks and unknown names."""
    if spec.is_custom:
        return None
    import mteb

    try:
        path = mteb.get_task(spec.task).metadata.dataset.get("path")
    except Exception:  # an unknown task fails later, with its own one-line error
        return None
    return str(path) if path else None


def _name_some(wanted: str, names: Sequence[str], limit: int = 12) -> str:
    """All names when few; else the closest and the Korean ones, and how many there are."""
    if len(names) <= limit:
        return ", ".join(names)
    import difflib

    close = difflib.get_close_matches(wanted, list(names), n=3, cutoff=0.5)
    korean = [n for n in names if n.lower().startswith("ko") or "kor" in n.lower()]
    picked = list(dict.fromkeys([*close, *korean]))[:limit]
    return f"{', '.join(picked)} ... ({len(names)} in all)"


def _wrap(task: AbsTask, spec: TaskSpec, data_split: Any, *, retrieval: bool) -> Any:
    """Put one split's data where ``AbsTask.evaluate`` looks for it."""
    from datasets import DatasetDict

    if retrieval:
        return {spec.subset: {spec.split: data_split}}
    if task.metadata.is_multilingual:
        return {spec.subset: DatasetDict({spec.split: data_split})}
    return DatasetDict({spec.split: data_split})


def _inject(task: AbsTask, dataset: Any) -> None:
    task.dataset = dataset
    task.data_loaded = True


def _sts_columns(task: AbsTask) -> tuple[str, str]:
    names = task.column_names  # type: ignore[attr-defined]
    if not (isinstance(names[0], str) and isinstance(names[1], str)):
        raise KoembedError(f"{task.metadata.name}: multimodal STS tasks are not supported")
    return names[0], names[1]


def _pc_columns(task: AbsTask) -> tuple[str, str, str]:
    c1 = task.input1_column_name  # type: ignore[attr-defined]
    c2 = task.input2_column_name  # type: ignore[attr-defined]
    if not (isinstance(c1, str) and isinstance(c2, str)):
        raise KoembedError(
            f"{task.metadata.name}: multimodal pair classification tasks are not supported"
        )
    return c1, c2, task.label_column_name  # type: ignore[attr-defined]


def _sts_dataset(task: AbsTask, s1: list[str], s2: list[str], scores: list[float]) -> Any:
    from datasets import Dataset

    c1, c2 = _sts_columns(task)
    return Dataset.from_dict({c1: s1, c2: s2, "score": scores})


def _pc_dataset(task: AbsTask, s1: list[str], s2: list[str], labels: list[int]) -> Any:
    """Pair classification as ONE row of lists: a flat split of exactly one row is misread."""
    from datasets import Dataset

    c1, c2, cl = _pc_columns(task)
    return Dataset.from_dict({c1: [s1], c2: [s2], cl: [labels]})


def _fast_clustering_dataset(task: AbsTask, texts: list[str], labels: list[str]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict(
        {task.input_column_name: texts, task.label_column_name: labels}  # type: ignore[attr-defined]
    )


def _legacy_clustering_dataset(task: AbsTask, rows: TextRows) -> Any:
    from datasets import Dataset

    groups = rows.grouped()
    return Dataset.from_dict(
        {
            task.input_column_name: [texts for _, texts, _ in groups],  # type: ignore[attr-defined]
            task.label_column_name: [labels for _, _, labels in groups],  # type: ignore[attr-defined]
        }
    )


def _retrieval_split(rows: RetrievalRows) -> dict[str, Any]:
    from datasets import Dataset

    return {
        "corpus": Dataset.from_dict(
            {"id": rows.corpus_ids, "title": rows.corpus_titles, "text": rows.corpus_texts}
        ),
        "queries": Dataset.from_dict({"id": rows.query_ids, "text": rows.query_texts}),
        "relevant_docs": rows.relevant_docs,
        "top_ranked": None,
    }


def _embedded_count(task: AbsTask, n: int) -> int:
    """How many texts mteb's fast clustering embeds out of n."""
    max_docs = getattr(task, "max_document_to_embed", None)
    fraction = getattr(task, "max_fraction_of_documents_to_embed", None)
    if max_docs is not None:
        return min(n, int(max_docs))
    if fraction is not None:
        return min(n, int(fraction * n))
    return n


def _cross_validation(task: AbsTask) -> bool:
    """mteb classification that trains and tests on folds of the scored split itself."""
    return bool(getattr(task, "is_cross_validation", False))


def _train_encoded(task: AbsTask, train: Any) -> int:
    """How many training texts mteb's classification embeds: the union, over its experiments,
    of the ``samples_per_label`` texts per label it draws (its own sampler, its own seed)."""
    sim: list[int] | None = None
    union: set[int] = set()
    for i in range(int(task.n_experiments)):  # type: ignore[attr-defined]
        _, sim, selected = task._undersample_data(train, i, sim)  # type: ignore[attr-defined]
        union.update(selected)
    return len(union)


def _classification_prepared(
    task: AbsTask, spec: TaskSpec, train: Any, test: Any, source: str
) -> PreparedTask:
    """Inject a classification split (and its training split) and count what mteb embeds.

    Label names become integer ids in sorted-name order (:data:`LABEL_NAMES_ATTR` keeps the
    names): mteb's binary scores (``average_precision_score``) accept only numeric labels, and
    sklearn orders the classes the same way for both, so every score is unchanged.
    """
    from datasets import DatasetDict

    label_col = task.label_column_name  # type: ignore[attr-defined]
    train, test = _label_ids(task, label_col, train, test)
    if _cross_validation(task) or train is None:
        splits = {spec.split: test}
        sizes = {"texts": len(test), "train": 0, "train_encoded": 0}
    else:
        splits = {task.train_split: train, spec.split: test}  # type: ignore[attr-defined]
        encoded = _train_encoded(task, train)
        sizes = {"texts": len(test), "train": len(train), "train_encoded": encoded}
    labels = set(test[label_col]) | (set(train[label_col]) if train is not None else set())
    sizes["labels"] = len(labels)
    data: Any = DatasetDict(splits)
    if task.metadata.is_multilingual:
        data = {spec.subset: data}
    _inject(task, data)
    return PreparedTask(task, len(test), sizes, 0, source)


LABEL_NAMES_ATTR = "koembed_label_names"
"""The attribute of a prepared classification task holding its label names (id -> name), when
its labels were names (see ``_classification_prepared``)."""


def _label_ids(task: AbsTask, label_col: str, train: Any, test: Any) -> tuple[Any, Any]:
    labels = list(test[label_col]) + (list(train[label_col]) if train is not None else [])
    if not labels or not all(isinstance(y, str) for y in labels):
        return train, test
    names = sorted(set(labels))
    ids = {name: i for i, name in enumerate(names)}
    setattr(task, LABEL_NAMES_ATTR, names)

    def encode(split: Any) -> Any:
        if split is None:
            return None
        column = [ids[y] for y in split[label_col]]
        return split.remove_columns(label_col).add_column(label_col, column)

    return encode(train), encode(test)


def _label_names(task: AbsTask) -> Any:
    """Label id -> name for a task prepared with names (the identity otherwise)."""
    names = getattr(task, LABEL_NAMES_ATTR, None)
    if names is None:
        return _plain
    return lambda y: names[int(_plain(y))]


def _classification_dataset(task: AbsTask, texts: list[str], labels: list[Any]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict(
        {task.input_column_name: texts, task.label_column_name: labels}  # type: ignore[attr-defined]
    )


def _plain(value: Any) -> Any:
    """A JSON-able scalar (numpy scalars become Python numbers)."""
    return value.item() if hasattr(value, "item") else value
