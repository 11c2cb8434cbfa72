"""Writing the layout: ``koembed mirror`` copies Hub data into local JSONL for air-gapped runs.

:func:`export_task` writes a task's rows in the local layout (``data.layout``) and
``koembed-mirror.json`` next to them: where they came from and how many repeated pairs were
dropped before they were written (:data:`~pytest_koembed.data.layout.MIRROR_META`). A run from
the mirror adds that count to the task's ``duplicates_dropped``, so the leaderboard's
de-duplication is reported whoever applied it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_koembed.data.hub import _hub_split, _pair_table
from pytest_koembed.data.layout import (
    _CANDIDATES_FILE,
    _CORPUS_FILE,
    _PAIRS_FILE,
    _QRELS_FILE,
    _QUERIES_FILE,
    _TEST_FILE,
    _TEXTS_FILE,
    _TRAIN_FILE,
    MIRROR_META,
    layout_dir,
)
from pytest_koembed.data.tasks import (
    _LEGACY,
    PreparedTask,
    _cross_validation,
    _kind_of,
    _label_names,
    _pc_columns,
    _plain,
    _sts_columns,
)
from pytest_koembed.errors import KoembedError

if TYPE_CHECKING:
    from mteb.abstasks.abstask import AbsTask

    from pytest_koembed.protocol.spec import TaskSpec

__all__ = [
    "export_task",
    "write_mirror_meta",
]


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _label_decoder(dataset: Any, column: str) -> Any:
    """ClassLabel ids back to their names; any other label to str."""
    features = getattr(dataset, "features", None) or {}
    int2str = getattr(features.get(column), "int2str", None)
    if int2str is not None:
        return lambda v: str(int2str(int(v)))
    return lambda v: str(_plain(v))


def export_task(spec: TaskSpec, prepared: PreparedTask | AbsTask, out_dir: Path) -> Path:
    """Write the loaded rows of a task in the layout under ``out_dir``; return the split folder.

    Pass the :class:`PreparedTask` from :func:`prepare_task` (or a loaded task restricted to the
    same split and subset). ``--koembed-data-dir out_dir`` then scores the same rows offline.
    """
    task = prepared.task if isinstance(prepared, PreparedTask) else prepared
    if not task.data_loaded or task.dataset is None:
        raise KoembedError(f"export_task: {spec.task} has no loaded data")
    kind = spec.custom_type or _kind_of(task)
    if kind == "Clustering" and _kind_of(task) == _LEGACY:
        kind = _LEGACY
    if kind is None:
        raise KoembedError(f"export_task: {spec.task} is not a task type koembed scores")
    data_split = _hub_split(task, spec, kind)
    directory = layout_dir(Path(out_dir), spec.task, spec.subset, spec.split)
    directory.mkdir(parents=True, exist_ok=True)
    # A stale record of an earlier mirror must not outlive the rows it describes.
    (directory / MIRROR_META).unlink(missing_ok=True)

    if kind in ("STS", "PairClassification"):
        _export_pairs(kind, task, data_split, directory)
    elif kind in ("Clustering", _LEGACY):
        _export_texts(kind, task, data_split, directory)
    elif kind == "Classification":
        _export_classification(task, spec, data_split, directory)
    else:
        _export_retrieval(kind, data_split, directory)
    if isinstance(prepared, PreparedTask):
        _write_mirror_meta(directory, spec, prepared)
    return directory


def _export_pairs(kind: str, task: AbsTask, data_split: Any, directory: Path) -> None:
    """STS and pair-classification rows: ``pairs.jsonl``."""
    if kind == "STS":
        c1, c2 = _sts_columns(task)
        table, _ = _pair_table(data_split, [c1, c2, "score"])
        _write_jsonl(
            directory / _PAIRS_FILE,
            [
                {"sentence1": a, "sentence2": b, "score": float(_plain(s))}
                for a, b, s in zip(table[c1], table[c2], table["score"], strict=True)
            ],
        )
    else:
        c1, c2, cl = _pc_columns(task)
        table, _ = _pair_table(data_split, [c1, c2, cl])
        _write_jsonl(
            directory / _PAIRS_FILE,
            [
                {"sentence1": a, "sentence2": b, "label": int(_plain(y))}
                for a, b, y in zip(table[c1], table[c2], table[cl], strict=True)
            ],
        )


def _export_texts(kind: str, task: AbsTask, data_split: Any, directory: Path) -> None:
    """Clustering rows (fast or legacy, one set per row of the legacy task): ``texts.jsonl``."""
    if kind == "Clustering":
        text_col, label_col = task.input_column_name, task.label_column_name  # type: ignore[attr-defined]
        name = _label_decoder(data_split, label_col)
        _write_jsonl(
            directory / _TEXTS_FILE,
            [
                {"text": t, "label": name(y)}
                for t, y in zip(data_split[text_col], data_split[label_col], strict=True)
            ],
        )
    else:
        text_col, label_col = task.input_column_name, task.label_column_name  # type: ignore[attr-defined]
        sets = list(zip(data_split[text_col], data_split[label_col], strict=True))
        rows: list[dict[str, Any]] = []
        for i, (texts, labels) in enumerate(sets):
            for t, y in zip(texts, labels, strict=True):
                row: dict[str, Any] = {"text": t, "label": str(_plain(y))}
                if len(sets) > 1:
                    row["set"] = str(i)
                rows.append(row)
        _write_jsonl(directory / _TEXTS_FILE, rows)


def _export_classification(task: AbsTask, spec: TaskSpec, data_split: Any, directory: Path) -> None:
    """Classification rows: ``train.jsonl`` (unless the task cross-validates) and ``test.jsonl``."""
    text_col, label_col = task.input_column_name, task.label_column_name  # type: ignore[attr-defined]

    name = _label_names(task)

    def labelled(split: Any) -> list[dict[str, Any]]:
        # labels as the task's data has them (names or integer ids): the same rows read back
        return [
            {"text": t, "label": name(y)}
            for t, y in zip(split[text_col], split[label_col], strict=True)
        ]

    (directory / _TRAIN_FILE).unlink(missing_ok=True)
    if not _cross_validation(task):
        where: Any = task.dataset[spec.subset] if task.metadata.is_multilingual else task.dataset
        _write_jsonl(directory / _TRAIN_FILE, labelled(where[task.train_split]))  # type: ignore[attr-defined]
    _write_jsonl(directory / _TEST_FILE, labelled(data_split))


def _export_retrieval(kind: str, data_split: Any, directory: Path) -> None:
    """Retrieval and reranking rows: corpus, queries, qrels (and candidates for reranking)."""
    corpus = data_split["corpus"]
    titles = corpus["title"] if "title" in corpus.column_names else [""] * len(corpus)
    _write_jsonl(
        directory / _CORPUS_FILE,
        [
            {"id": str(i), "title": title or "", "text": text}
            for i, title, text in zip(corpus["id"], titles, corpus["text"], strict=True)
        ],
    )
    queries = data_split["queries"]
    _write_jsonl(
        directory / _QUERIES_FILE,
        [
            {"id": str(i), "text": text}
            for i, text in zip(queries["id"], queries["text"], strict=True)
        ],
    )
    _write_jsonl(
        directory / _QRELS_FILE,
        [
            {"query_id": str(q), "doc_id": str(d), "score": int(_plain(s))}
            for q, docs in data_split["relevant_docs"].items()
            for d, s in docs.items()
        ],
    )
    top_ranked = data_split.get("top_ranked")
    (directory / _CANDIDATES_FILE).unlink(missing_ok=True)
    if kind == "Reranking" and top_ranked:
        _write_jsonl(
            directory / _CANDIDATES_FILE,
            [
                {"query_id": str(q), "doc_ids": [str(d) for d in ids]}
                for q, ids in top_ranked.items()
            ],
        )


def _write_mirror_meta(directory: Path, spec: TaskSpec, prepared: PreparedTask) -> None:
    """:data:`MIRROR_META` for rows :func:`export_task` just wrote from ``prepared``."""
    write_mirror_meta(
        directory, spec, prepared.source, dict(prepared.sizes), prepared.duplicates_dropped
    )


def write_mirror_meta(
    directory: Path, spec: TaskSpec, source: str, sizes: dict[str, int], duplicates_dropped: int
) -> None:
    """Write :data:`MIRROR_META` in ``directory``: where its rows were read (``source``:
    ``hub:<dataset>@<revision>`` or ``local:<dir>``), what was written, the pairs dropped."""
    from pytest_koembed._version import __version__

    meta = {
        "format": 1,
        "task": spec.task,
        "subset": spec.subset,
        "split": spec.split,
        "source": source,
        "sizes": sizes,
        "duplicates_dropped": duplicates_dropped,
        "written_by": f"pytest-koembed {__version__}",
    }
    path = directory / MIRROR_META
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
