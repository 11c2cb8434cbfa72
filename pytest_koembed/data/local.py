"""Local data into a task: an mteb task read from ``--koembed-data-dir``, and the custom local
tasks (``custom_type`` in a suite) built from their own directory. Rows are read through
``data.layout``, de-duplicated, checked, and injected through ``data.tasks``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_koembed.data.dedup import dedupe_pairs
from pytest_koembed.data.layout import (
    _QRELS_FILE,
    LAYOUT,
    _check_clustering,
    _check_labels01,
    _check_sts,
    layout_dir,
    mirrored_duplicates,
    read_classification,
    read_pairs,
    read_reranking,
    read_retrieval,
    read_texts,
)
from pytest_koembed.data.tasks import (
    _LEGACY,
    _MAIN_SCORE,
    PreparedTask,
    _classification_dataset,
    _classification_prepared,
    _cross_validation,
    _embedded_count,
    _fast_clustering_dataset,
    _inject,
    _layout_kind,
    _legacy_clustering_dataset,
    _pc_dataset,
    _retrieval_split,
    _sts_dataset,
    _wrap,
)
from pytest_koembed.errors import KoembedError

if TYPE_CHECKING:
    from mteb.abstasks.abstask import AbsTask

    from pytest_koembed.protocol.spec import TaskSpec


def _load_local(
    task: AbsTask, kind: str, spec: TaskSpec, directory: Path, rows: Any = None
) -> PreparedTask:
    """Read the layout in ``directory`` (unless already read) and inject it into ``task``."""
    source = f"local:{directory.resolve()}"
    if kind in ("STS", "PairClassification"):
        if rows is None:
            score_range = None
            if kind == "STS":
                score_range = (float(task.min_score), float(task.max_score))  # type: ignore[attr-defined]
            rows = read_pairs(directory, kind, score_range=score_range, task_name=spec.task)
        if spec.benchmark is None:
            (s1, s2, values), dropped = dedupe_pairs(rows.sentence1, rows.sentence2, rows.values)
        else:  # an mteb benchmark's task is scored as mteb scores it: every pair
            s1, s2, values, dropped = rows.sentence1, rows.sentence2, rows.values, 0
        dropped += mirrored_duplicates(directory, len(rows.sentence1))
        if kind == "STS":
            _check_sts(rows.path, values)
            data = _sts_dataset(task, s1, s2, values)
        else:
            _check_labels01(rows.path, values)
            data = _pc_dataset(task, s1, s2, values)
        _inject(task, _wrap(task, spec, data, retrieval=False))
        return PreparedTask(task, len(s1), {"pairs": len(s1)}, dropped, source)

    if kind in ("Clustering", _LEGACY):
        if rows is None:
            rows = read_texts(directory)
        if kind == "Clustering" and rows.sets is not None:
            raise KoembedError(
                f"{rows.path}: {spec.task} clusters all its texts at once; remove the 'set' key "
                "(clustering sets are for tasks like KlueMrcDomainClustering)"
            )
        _check_clustering(rows)
        if kind == "Clustering":
            data = _fast_clustering_dataset(task, rows.texts, rows.labels)
            n_texts = _embedded_count(task, len(rows.texts))
            n_sets = 1
        else:
            data = _legacy_clustering_dataset(task, rows)
            n_texts = len(rows.texts)
            n_sets = len(rows.grouped())
        _inject(task, _wrap(task, spec, data, retrieval=False))
        return PreparedTask(task, n_texts, {"texts": n_texts, "sets": n_sets}, 0, source)

    if kind == "Classification":
        if rows is None:
            rows = read_classification(directory, with_train=not _cross_validation(task))
        test = _classification_dataset(task, rows.test_texts, rows.test_labels)
        train = None
        if not _cross_validation(task):
            train = _classification_dataset(task, rows.train_texts, rows.train_labels)
        return _classification_prepared(task, spec, train, test, source)

    candidates: dict[str, list[str]] | None = None
    if rows is None:
        if kind == "Reranking":
            rows, candidates = read_reranking(directory)
        else:
            rows = read_retrieval(directory)
    elif kind == "Reranking":
        rows, candidates = rows
    if not rows.query_ids:
        raise KoembedError(f"{directory / _QRELS_FILE}: no query has a qrel")
    split_data = _retrieval_split(rows)
    split_data["top_ranked"] = candidates
    _inject(task, _wrap(task, spec, split_data, retrieval=True))
    sizes = {
        "queries": len(rows.query_ids),
        "documents": len(rows.corpus_ids),
        "qrels": rows.n_qrels,
    }
    if candidates is not None:
        sizes["candidates"] = sum(len(ids) for ids in candidates.values())
    return PreparedTask(task, len(rows.query_ids), sizes, 0, source)


def _custom_task(spec: TaskSpec, kind: str, attrs: dict[str, Any]) -> AbsTask:
    """A real mteb task class, built on the fly, for a custom local task."""
    from mteb.abstasks.classification import AbsTaskClassification
    from mteb.abstasks.clustering import AbsTaskClustering
    from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy
    from mteb.abstasks.pair_classification import AbsTaskPairClassification
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata

    base: type[AbsTask] = {
        "STS": AbsTaskSTS,
        "PairClassification": AbsTaskPairClassification,
        "Clustering": AbsTaskClustering,
        _LEGACY: AbsTaskClusteringLegacy,
        "Retrieval": AbsTaskRetrieval,
        "Classification": AbsTaskClassification,
        "Reranking": AbsTaskRetrieval,
    }[kind]
    eval_langs: Any = ["kor-Hang"]
    if spec.subset != "default":
        eval_langs = {spec.subset: ["kor-Hang"]}
    metadata = TaskMetadata(
        name=spec.task,
        description=(
            f"Local custom {_layout_kind(kind)} task read by pytest-koembed from "
            f"{spec.data_dir}; not an mteb task."
        ),
        dataset={"path": f"local/{spec.task}", "revision": "local"},
        type=_layout_kind(kind),
        category="t2c" if kind == "Classification" else "t2t",
        modalities=["text"],
        eval_splits=[spec.split],
        eval_langs=eval_langs,
        main_score=_MAIN_SCORE[kind],
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=[],
        sample_creation=None,
        bibtex_citation="",
    )
    safe = "".join(ch if ch.isalnum() else "_" for ch in spec.task)
    cls = type(
        f"KoembedCustom_{safe}",
        (base,),
        {"metadata": metadata, "__module__": __name__, **attrs},
    )
    return cls()


def _prepare_custom(spec: TaskSpec, root: Path | None) -> PreparedTask:
    kind = spec.custom_type or ""
    if kind not in LAYOUT:
        raise KoembedError(
            f"custom task {spec.task!r}: type {kind!r} is not one of {', '.join(LAYOUT)}"
        )
    if root is None:
        raise KoembedError(f"custom task {spec.task!r} has no data directory")
    directory = layout_dir(root, spec.task, spec.subset, spec.split)
    attrs: dict[str, Any] = {}
    rows: Any
    if kind == "STS":
        rows = read_pairs(directory, kind)
        # Correlations ignore the scale; declare mteb's 0..5 when the data fits, else its range.
        lo, hi = min(rows.values), max(rows.values)
        attrs["min_score"], attrs["max_score"] = (0, 5) if lo >= 0 and hi <= 5 else (lo, hi)
    elif kind == "PairClassification":
        rows = read_pairs(directory, kind)
    elif kind == "Clustering":
        rows = read_texts(directory)
        if rows.sets is not None:
            kind = _LEGACY
        else:
            # cluster every text (mteb's default embeds only 4% of them)
            attrs["max_fraction_of_documents_to_embed"] = None
            attrs["max_document_to_embed"] = None
    elif kind == "Classification":
        if spec.split == "train":
            raise KoembedError(
                f"custom task {spec.task!r}: a Classification task's split cannot be named "
                "'train' (its train.jsonl is the training split); use split = \"test\""
            )
        rows = read_classification(directory)
    elif kind == "Reranking":
        rows = read_reranking(directory)
    else:
        rows = read_retrieval(directory)
    task = _custom_task(spec, kind, attrs)
    return _load_local(task, kind, spec, directory, rows)
