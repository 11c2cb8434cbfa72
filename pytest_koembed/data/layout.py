"""Task data: the local JSONL layout, mteb task objects ready to evaluate, pair de-duplication.

This module knows nothing of pytest. It hands ``evaluation.py`` a :class:`PreparedTask`: a real
mteb task object whose data is already loaded (from a local copy, a custom local task, or the
Hugging Face Hub through mteb), restricted to one split and one subset, in the exact shape the
task's evaluator reads, with pair datasets de-duplicated as the leaderboard states.

The local layout (the same for ``--koembed-data-dir``, custom tasks and the shipped sample data)
lives in ``ROOT/<task>/<subset>/<split>/``::

    STS                  pairs.jsonl   {"sentence1": str, "sentence2": str, "score": number}
    PairClassification   pairs.jsonl   {"sentence1": str, "sentence2": str, "label": 0 or 1}
    Clustering           texts.jsonl   {"text": str, "label": str, "set": str (optional)}
    Retrieval            corpus.jsonl  {"id": str, "text": str, "title": str (optional)}
                         queries.jsonl {"id": str, "text": str}
                         qrels.jsonl   {"query_id": str, "doc_id": str, "score": int}
    Classification       train.jsonl   {"text": str, "label": str or int}  (the classifier learns)
                         test.jsonl    {"text": str, "label": str or int}  (the texts scored)
    Reranking            corpus.jsonl, queries.jsonl, qrels.jsonl  (as Retrieval)
                         candidates.jsonl {"query_id": str, "doc_ids": [str, ...]}

``koembed mirror`` (:func:`export_task`) also writes ``koembed-mirror.json`` next to the rows:
where they came from and how many repeated pairs were dropped before they were written
(:data:`MIRROR_META`). A run from the mirror adds that count to the task's ``duplicates_dropped``,
so the leaderboard's de-duplication is reported whoever applied it.

``mteb`` and ``datasets`` are imported lazily: importing this module is cheap.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_koembed.errors import HubDownloadError, KoembedError

if TYPE_CHECKING:
    from mteb.abstasks.abstask import AbsTask

    from pytest_koembed.protocol.spec import TaskSpec

__all__ = [
    "LAYOUT",
    "MIRROR_META",
    "ClassificationRows",
    "PairRows",
    "PreparedTask",
    "RetrievalRows",
    "TextRows",
    "dedupe_pairs",
    "export_task",
    "layout_dir",
    "mirrored_duplicates",
    "prepare_task",
    "read_classification",
    "read_pairs",
    "read_reranking",
    "read_retrieval",
    "read_texts",
    "unique_pair_indices",
]

# What each task kind reads, for error messages and the README.
LAYOUT: dict[str, str] = {
    "STS": 'pairs.jsonl with lines {"sentence1": str, "sentence2": str, "score": number}',
    "PairClassification": (
        'pairs.jsonl with lines {"sentence1": str, "sentence2": str, "label": 0 or 1}'
    ),
    "Clustering": 'texts.jsonl with lines {"text": str, "label": str, "set": str (optional)}',
    "Retrieval": (
        'corpus.jsonl {"id", "text", "title"?}, queries.jsonl {"id", "text"} and '
        'qrels.jsonl {"query_id", "doc_id", "score"}'
    ),
    "Classification": ('train.jsonl and test.jsonl with lines {"text": str, "label": str or int}'),
    "Reranking": (
        'corpus.jsonl {"id", "text", "title"?}, queries.jsonl {"id", "text"}, '
        'qrels.jsonl {"query_id", "doc_id", "score"} and '
        'candidates.jsonl {"query_id", "doc_ids": [...]}'
    ),
}

_PAIRS_FILE = "pairs.jsonl"
_TEXTS_FILE = "texts.jsonl"
_CORPUS_FILE = "corpus.jsonl"
_QUERIES_FILE = "queries.jsonl"
_QRELS_FILE = "qrels.jsonl"
_TRAIN_FILE = "train.jsonl"
_TEST_FILE = "test.jsonl"
_CANDIDATES_FILE = "candidates.jsonl"

MIRROR_META = "koembed-mirror.json"
"""Written by ``koembed mirror`` next to a split's rows: ``{"format": 1, "task", "subset",
"split", "source", "sizes", "duplicates_dropped", "written_by"}``. ``source`` is where the rows
were read (``hub:<dataset>@<revision>`` or ``local:<dir>``), ``sizes`` what was written
(``{"pairs": n}`` for pair tasks), ``duplicates_dropped`` the repeated pairs removed first."""

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


# ---------------------------------------------------------------------------------------------
# De-duplication
# ---------------------------------------------------------------------------------------------


def unique_pair_indices(sentence1: Sequence[Any], sentence2: Sequence[Any]) -> list[int]:
    """Indices of the pairs to keep: the first occurrence of each pair, (A, B) equal to (B, A)."""
    if len(sentence1) != len(sentence2):
        raise ValueError(f"pair columns differ in length: {len(sentence1)} != {len(sentence2)}")
    seen: set[tuple[Any, Any]] = set()
    kept: list[int] = []
    for i, (a, b) in enumerate(zip(sentence1, sentence2, strict=True)):
        key = (a, b) if (str(a), str(b)) <= (str(b), str(a)) else (b, a)
        if key in seen:
            continue
        seen.add(key)
        kept.append(i)
    return kept


def dedupe_pairs(
    sentence1: Sequence[Any], sentence2: Sequence[Any], *others: Sequence[Any]
) -> tuple[tuple[list[Any], ...], int]:
    """Drop repeated pairs, (A, B) and (B, A) alike, keeping the first occurrence.

    Returns the kept columns, in the order given (``sentence1, sentence2, *others``), and the
    number of pairs dropped.
    """
    for other in others:
        if len(other) != len(sentence1):
            raise ValueError(f"column lengths differ: {len(other)} != {len(sentence1)}")
    kept = unique_pair_indices(sentence1, sentence2)
    columns = tuple([column[i] for i in kept] for column in (sentence1, sentence2, *others))
    return columns, len(sentence1) - len(kept)


# ---------------------------------------------------------------------------------------------
# Reading the layout
# ---------------------------------------------------------------------------------------------


@dataclass
class PairRows:
    """STS or pair-classification rows as read (before de-duplication)."""

    sentence1: list[str]
    sentence2: list[str]
    values: list[Any]  # float scores (STS) or 0/1 labels (pair classification)
    path: Path


@dataclass
class TextRows:
    """Clustering rows as read."""

    texts: list[str]
    labels: list[str]
    sets: list[str] | None  # one set name per row, or None when no row has a "set"
    path: Path

    def grouped(self) -> list[tuple[str, list[str], list[str]]]:
        """(set name, texts, labels) per clustering set, sets in order of first appearance."""
        if self.sets is None:
            return [("", list(self.texts), list(self.labels))]
        groups: dict[str, tuple[list[str], list[str]]] = {}
        for text, label, name in zip(self.texts, self.labels, self.sets, strict=True):
            texts, labels = groups.setdefault(name, ([], []))
            texts.append(text)
            labels.append(label)
        return [(name, texts, labels) for name, (texts, labels) in groups.items()]


@dataclass
class RetrievalRows:
    """Retrieval files as read; queries without any qrel are already dropped."""

    corpus_ids: list[str]
    corpus_titles: list[str]
    corpus_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    relevant_docs: dict[str, dict[str, int]]
    queries_without_qrels: int
    path: Path

    @property
    def n_qrels(self) -> int:
        return sum(len(docs) for docs in self.relevant_docs.values())


@dataclass
class ClassificationRows:
    """Classification files as read: the training texts and the texts scored, labelled."""

    train_texts: list[str]
    train_labels: list[str | int]
    test_texts: list[str]
    test_labels: list[str | int]
    path: Path  # the split folder


def layout_dir(root: Path, task: str, subset: str, split: str) -> Path:
    """Where the layout of one task split lives under a data root."""
    return Path(root) / task / subset / split


def _iter_jsonl(path: Path, kind: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; one-line KoembedError on anything wrong."""
    if not path.is_file():
        raise KoembedError(f"missing file {path} (the {kind} layout needs {LAYOUT[kind]})")
    found = False
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise KoembedError(
                    f"{path}:{lineno}: not UTF-8 text ({exc.reason} at byte {exc.start})"
                ) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise KoembedError(
                    f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})"
                ) from None
            if not isinstance(obj, dict):
                raise KoembedError(
                    f"{path}:{lineno}: expected a JSON object, got {_json_type(obj)}"
                )
            found = True
            yield lineno, obj
    if not found:
        raise KoembedError(f"{path} is empty (the {kind} layout needs {LAYOUT[kind]})")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _require(obj: dict[str, Any], key: str, where: str, kind: str) -> Any:
    if key not in obj:
        raise KoembedError(f"{where}: missing key {key!r} (the {kind} layout needs {LAYOUT[kind]})")
    return obj[key]


def _text(obj: dict[str, Any], key: str, where: str, kind: str) -> str:
    value = _require(obj, key, where, kind)
    if not isinstance(value, str):
        raise KoembedError(f"{where}: {key!r} must be a string, got {_json_type(value)}")
    if not value.strip():
        raise KoembedError(f"{where}: {key!r} is empty")
    return value


def _ident(obj: dict[str, Any], key: str, where: str, kind: str) -> str:
    value = _require(obj, key, where, kind)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise KoembedError(f"{where}: {key!r} must be a string, got {_json_type(value)}")
    text = str(value)
    if not text.strip():
        raise KoembedError(f"{where}: {key!r} is empty")
    return text


def _number(obj: dict[str, Any], key: str, where: str, kind: str) -> float:
    value = _require(obj, key, where, kind)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise KoembedError(f"{where}: {key!r} must be a number, got {_json_type(value)}")
    if not math.isfinite(value):
        raise KoembedError(f"{where}: {key!r} is not a finite number ({value})")
    return float(value)


def _label01(obj: dict[str, Any], key: str, where: str, kind: str) -> int:
    value = _require(obj, key, where, kind)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (0, 1):
        shown = json.dumps(value, ensure_ascii=False)
        raise KoembedError(f"{where}: {key!r} must be 0 or 1, got {shown}")
    return int(value)


def read_pairs(
    directory: Path,
    kind: str,
    *,
    score_range: tuple[float, float] | None = None,
    task_name: str = "",
) -> PairRows:
    """Read ``pairs.jsonl`` of an STS (``kind="STS"``) or pair-classification split.

    ``score_range`` (STS only) rejects scores outside the task's own scale.
    """
    if kind not in ("STS", "PairClassification"):
        raise ValueError(f"read_pairs: kind must be STS or PairClassification, not {kind!r}")
    path = Path(directory) / _PAIRS_FILE
    s1: list[str] = []
    s2: list[str] = []
    values: list[Any] = []
    for lineno, obj in _iter_jsonl(path, kind):
        where = f"{path}:{lineno}"
        s1.append(_text(obj, "sentence1", where, kind))
        s2.append(_text(obj, "sentence2", where, kind))
        if kind == "STS":
            score = _number(obj, "score", where, kind)
            if score_range is not None and not score_range[0] <= score <= score_range[1]:
                lo, hi = score_range
                raise KoembedError(
                    f"{where}: score {score:g} is outside the {task_name or 'task'} scale "
                    f"{lo:g}..{hi:g}"
                )
            values.append(score)
        else:
            values.append(_label01(obj, "label", where, kind))
    return PairRows(sentence1=s1, sentence2=s2, values=values, path=path)


def read_texts(directory: Path) -> TextRows:
    """Read ``texts.jsonl`` of a clustering split."""
    kind = "Clustering"
    path = Path(directory) / _TEXTS_FILE
    texts: list[str] = []
    labels: list[str] = []
    sets: list[str] = []
    with_set: int | None = None  # line of the first row with a "set"
    without_set: int | None = None
    for lineno, obj in _iter_jsonl(path, kind):
        where = f"{path}:{lineno}"
        texts.append(_text(obj, "text", where, kind))
        label = _require(obj, "label", where, kind)
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise KoembedError(f"{where}: 'label' must be a string, got {_json_type(label)}")
        if not str(label).strip():
            raise KoembedError(f"{where}: 'label' is empty")
        labels.append(str(label))
        if "set" in obj and obj["set"] is not None:
            sets.append(_ident(obj, "set", where, kind))
            with_set = lineno if with_set is None else with_set
        else:
            sets.append("")
            without_set = lineno if without_set is None else without_set
        if with_set is not None and without_set is not None:
            raise KoembedError(
                f"{where}: 'set' must be given on every row or on none (line {with_set} has "
                f"one, line {without_set} has none)"
            )
    return TextRows(
        texts=texts, labels=labels, sets=sets if with_set is not None else None, path=path
    )


def read_retrieval(directory: Path) -> RetrievalRows:
    """Read ``corpus.jsonl``, ``queries.jsonl`` and ``qrels.jsonl`` of a retrieval split."""
    kind = "Retrieval"
    directory = Path(directory)
    corpus_path = directory / _CORPUS_FILE
    queries_path = directory / _QUERIES_FILE
    qrels_path = directory / _QRELS_FILE
    for path in (corpus_path, queries_path, qrels_path):
        if not path.is_file():
            raise KoembedError(f"missing file {path} (the {kind} layout needs {LAYOUT[kind]})")

    doc_line: dict[str, int] = {}
    corpus_ids: list[str] = []
    titles: list[str] = []
    doc_texts: list[str] = []
    for lineno, obj in _iter_jsonl(corpus_path, kind):
        where = f"{corpus_path}:{lineno}"
        doc_id = _ident(obj, "id", where, kind)
        if doc_id in doc_line:
            raise KoembedError(
                f"{where}: duplicate id {doc_id!r} (first on line {doc_line[doc_id]})"
            )
        doc_line[doc_id] = lineno
        title = obj.get("title")
        if title is None:
            title = ""
        elif not isinstance(title, str):
            raise KoembedError(f"{where}: 'title' must be a string, got {_json_type(title)}")
        corpus_ids.append(doc_id)
        titles.append(title)
        doc_texts.append(_text(obj, "text", where, kind))

    query_line: dict[str, int] = {}
    query_ids: list[str] = []
    query_texts: list[str] = []
    for lineno, obj in _iter_jsonl(queries_path, kind):
        where = f"{queries_path}:{lineno}"
        query_id = _ident(obj, "id", where, kind)
        if query_id in query_line:
            raise KoembedError(
                f"{where}: duplicate id {query_id!r} (first on line {query_line[query_id]})"
            )
        query_line[query_id] = lineno
        query_ids.append(query_id)
        query_texts.append(_text(obj, "text", where, kind))

    relevant: dict[str, dict[str, int]] = {}
    qrel_line: dict[tuple[str, str], int] = {}
    for lineno, obj in _iter_jsonl(qrels_path, kind):
        where = f"{qrels_path}:{lineno}"
        query_id = _ident(obj, "query_id", where, kind)
        doc_id = _ident(obj, "doc_id", where, kind)
        score = _number(obj, "score", where, kind)
        if score != int(score):
            raise KoembedError(
                f"{where}: 'score' must be an integer relevance grade, got {score:g}"
            )
        if query_id not in query_line:
            raise KoembedError(f"{where}: query_id {query_id!r} is not in {queries_path.name}")
        if doc_id not in doc_line:
            raise KoembedError(f"{where}: doc_id {doc_id!r} is not in {corpus_path.name}")
        if (query_id, doc_id) in qrel_line:
            raise KoembedError(
                f"{where}: duplicate qrel for query {query_id!r} and doc {doc_id!r} "
                f"(first on line {qrel_line[query_id, doc_id]})"
            )
        qrel_line[query_id, doc_id] = lineno
        relevant.setdefault(query_id, {})[doc_id] = int(score)

    # mteb's own loader keeps only the queries that have qrels; do the same.
    keep = [i for i, query_id in enumerate(query_ids) if query_id in relevant]
    return RetrievalRows(
        corpus_ids=corpus_ids,
        corpus_titles=titles,
        corpus_texts=doc_texts,
        query_ids=[query_ids[i] for i in keep],
        query_texts=[query_texts[i] for i in keep],
        relevant_docs={query_ids[i]: relevant[query_ids[i]] for i in keep},
        queries_without_qrels=len(query_ids) - len(keep),
        path=directory,
    )


def _labelled_texts(path: Path, kind: str) -> tuple[list[str], list[str | int]]:
    """``{"text", "label"}`` rows; labels are all strings or all integers (as mteb keeps them)."""
    texts: list[str] = []
    labels: list[str | int] = []
    first: tuple[int, str] | None = None  # (line, "string" | "integer") of the first label
    for lineno, obj in _iter_jsonl(path, kind):
        where = f"{path}:{lineno}"
        texts.append(_text(obj, "text", where, kind))
        label = _require(obj, "label", where, kind)
        if isinstance(label, str):
            if not label.strip():
                raise KoembedError(f"{where}: 'label' is empty")
            how = "string"
        elif isinstance(label, int) and not isinstance(label, bool):
            how = "integer"
        else:
            raise KoembedError(
                f"{where}: 'label' must be a string or an integer, got {_json_type(label)}"
            )
        if first is None:
            first = (lineno, how)
        elif first[1] != how:
            raise KoembedError(
                f"{where}: 'label' is a{'n' if how == 'integer' else ''} {how} but line "
                f"{first[0]} has a{'n' if first[1] == 'integer' else ''} {first[1]} label; use "
                "one kind of label in a task"
            )
        labels.append(label)
    return texts, labels


def read_classification(directory: Path, *, with_train: bool = True) -> ClassificationRows:
    """Read ``train.jsonl`` and ``test.jsonl`` of a classification split.

    ``with_train=False`` (mteb's cross-validation tasks, which train and test on folds of the one
    split) reads ``test.jsonl`` alone.
    """
    kind = "Classification"
    directory = Path(directory)
    test_texts, test_labels = _labelled_texts(directory / _TEST_FILE, kind)
    train_texts: list[str] = []
    train_labels: list[str | int] = []
    if with_train:
        train_path = directory / _TRAIN_FILE
        train_texts, train_labels = _labelled_texts(train_path, kind)
        if len(set(train_labels)) < 2:
            raise KoembedError(
                f"{train_path}: every row has the label {train_labels[0]!r}; a classifier needs "
                "at least 2 labels to learn from"
            )
        if type(train_labels[0]) is not type(test_labels[0]):
            raise KoembedError(
                f"{directory / _TEST_FILE}: labels are {_json_type(test_labels[0])}s but "
                f"{_TRAIN_FILE} has {_json_type(train_labels[0])}s; use one kind of label"
            )
        known = set(train_labels)
        for i, label in enumerate(test_labels):
            if label not in known:
                raise KoembedError(
                    f"{directory / _TEST_FILE}: label {label!r} (row {i + 1}) has no example in "
                    f"{_TRAIN_FILE}; the classifier can only predict the labels it was trained on"
                )
    return ClassificationRows(
        train_texts=train_texts,
        train_labels=train_labels,
        test_texts=test_texts,
        test_labels=test_labels,
        path=directory,
    )


def read_reranking(directory: Path) -> tuple[RetrievalRows, dict[str, list[str]]]:
    """Read a reranking split: the retrieval files and ``candidates.jsonl``.

    Returns the retrieval rows (queries without any qrel dropped, as mteb drops them) and each
    kept query's candidate document ids, in the file's order.
    """
    kind = "Reranking"
    directory = Path(directory)
    path = directory / _CANDIDATES_FILE
    if not path.is_file():  # before the retrieval files: name this layout, not Retrieval's
        raise KoembedError(f"missing file {path} (the {kind} layout needs {LAYOUT[kind]})")
    rows = read_retrieval(directory)
    docs = set(rows.corpus_ids)
    queries_path = directory / _QUERIES_FILE
    all_queries = {_ident(obj, "id", "", kind) for _, obj in _iter_jsonl(queries_path, kind)}
    candidates: dict[str, list[str]] = {}
    lines: dict[str, int] = {}
    for lineno, obj in _iter_jsonl(path, kind):
        where = f"{path}:{lineno}"
        query_id = _ident(obj, "query_id", where, kind)
        if query_id in lines:
            raise KoembedError(
                f"{where}: duplicate query_id {query_id!r} (first on line {lines[query_id]})"
            )
        lines[query_id] = lineno
        if query_id not in all_queries:
            raise KoembedError(f"{where}: query_id {query_id!r} is not in {_QUERIES_FILE}")
        doc_ids = _require(obj, "doc_ids", where, kind)
        if not isinstance(doc_ids, list) or not doc_ids:
            got = _json_type(doc_ids) if not isinstance(doc_ids, list) else "an empty array"
            raise KoembedError(
                f"{where}: 'doc_ids' must be a non-empty array of document ids, got {got}"
            )
        ids: list[str] = []
        for doc_id in doc_ids:
            if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
                raise KoembedError(
                    f"{where}: 'doc_ids' must hold document ids (strings), got {_json_type(doc_id)}"
                )
            text = str(doc_id)
            if text not in docs:
                raise KoembedError(f"{where}: doc_id {text!r} is not in {_CORPUS_FILE}")
            if text in ids:
                raise KoembedError(f"{where}: doc_id {text!r} is listed twice")
            ids.append(text)
        candidates[query_id] = ids
    missing = [q for q in rows.query_ids if q not in candidates]
    if missing:
        raise KoembedError(
            f"{path}: query {missing[0]!r} has qrels but no candidates"
            + (f" ({len(missing)} queries in all)" if len(missing) > 1 else "")
            + "; every scored query needs a line here"
        )
    return rows, {q: candidates[q] for q in rows.query_ids}


def mirrored_duplicates(directory: Path, n_rows: int) -> int:
    """Repeated pairs a mirror dropped before writing ``directory``'s rows (0 without one).

    Read from :data:`MIRROR_META`; a file that is malformed, or written for another number of
    rows than ``pairs.jsonl`` holds now (the rows were edited since), is a one-line error.
    """
    path = Path(directory) / MIRROR_META
    if not path.is_file():
        return 0
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KoembedError(
            f"{path}: not a readable JSON file ({exc}); re-run koembed mirror"
        ) from None
    meta = meta if isinstance(meta, dict) else {}
    dropped = meta.get("duplicates_dropped")
    sizes = meta.get("sizes")
    rows = sizes.get("pairs") if isinstance(sizes, dict) else None
    for key, value in (("duplicates_dropped", dropped), ("sizes.pairs", rows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise KoembedError(
                f"{path}: {key!r} must be a non-negative integer, got "
                f"{json.dumps(value, ensure_ascii=False)}; re-run koembed mirror"
            )
    if rows != n_rows:
        raise KoembedError(
            f"{path} was written for {rows} pairs but {_PAIRS_FILE} now holds {n_rows}; re-run "
            f"koembed mirror, or delete {MIRROR_META} if you changed the rows on purpose"
        )
    return int(dropped)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Checks after de-duplication
# ---------------------------------------------------------------------------------------------


def _check_sts(path: Path, scores: Sequence[float]) -> None:
    if len(scores) < 2:
        raise KoembedError(
            f"{path}: STS needs at least 2 distinct pairs to correlate, has {len(scores)} "
            "after de-duplication"
        )
    if len(set(scores)) < 2:
        raise KoembedError(
            f"{path}: every score is {scores[0]:g}; STS needs differing scores to correlate"
        )


def _check_labels01(path: Path, labels: Sequence[int]) -> None:
    present = set(labels)
    if present != {0, 1}:
        only = next(iter(present)) if present else "none"
        raise KoembedError(
            f"{path}: every pair has label {only}; pair classification needs both 0 and 1"
        )


def _check_clustering(rows: TextRows) -> None:
    for name, _texts, labels in rows.grouped():
        if len(set(labels)) < 2:
            which = f"clustering set {name!r}" if rows.sets is not None else "every row"
            raise KoembedError(
                f"{rows.path}: {which} has the single label {labels[0]!r}; clustering needs "
                "at least 2 labels per set"
            )


# ---------------------------------------------------------------------------------------------
# mteb tasks: kinds, lookup, shapes
# ---------------------------------------------------------------------------------------------


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


def _load_hub_classification(task: AbsTask, spec: TaskSpec, source: str) -> PreparedTask:
    test = _hub_split(task, spec, "Classification")
    train = None
    if not _cross_validation(task):
        train_split = task.train_split  # type: ignore[attr-defined]
        where: Any = task.dataset[spec.subset] if task.metadata.is_multilingual else task.dataset
        if train_split not in where:
            raise KoembedError(
                f"mteb loaded no training split {train_split!r} for {spec.task} "
                f"(it has {', '.join(map(str, where))})"
            )
        train = where[train_split]
    return _classification_prepared(task, spec, train, test, source)


def _classification_dataset(task: AbsTask, texts: list[str], labels: list[Any]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict(
        {task.input_column_name: texts, task.label_column_name: labels}  # type: ignore[attr-defined]
    )


# ---------------------------------------------------------------------------------------------
# Local data into a task object
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Custom local tasks
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The Hub, through mteb
# ---------------------------------------------------------------------------------------------


def _hub_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]  # ConnectionError, HfHubHTTPError, ...
    try:
        from datasets.exceptions import DatasetsError

        errors.append(DatasetsError)
    except ImportError:  # pragma: no cover
        pass
    try:
        import httpx

        errors.append(httpx.HTTPError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def _short_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _hub_split(task: AbsTask, spec: TaskSpec, kind: str) -> Any:
    dataset: Any = task.dataset
    where = dataset
    if kind in ("Retrieval", "Reranking") or task.metadata.is_multilingual:
        key = spec.subset
        if key not in dataset:
            raise KoembedError(
                f"mteb loaded no subset {spec.subset!r} for {spec.task} "
                f"(it has {', '.join(map(str, dataset))})"
            )
        where = dataset[key]
    if spec.split not in where:
        raise KoembedError(
            f"mteb loaded no split {spec.split!r} for {spec.task} "
            f"(it has {', '.join(map(str, where))})"
        )
    return where[spec.split]


def _pair_table(data_split: Any, columns: Sequence[str]) -> tuple[dict[str, list[Any]], bool]:
    """A pair dataset's columns, from flat rows or from one row of lists (``True`` then)."""
    if isinstance(data_split, list):
        if len(data_split) == 1 and isinstance(data_split[0], Mapping):
            row = data_split[0]
            return {c: list(row[c]) for c in columns}, True
        return {c: [r[c] for r in data_split] for c in columns}, False
    if isinstance(data_split, Mapping):
        return {c: list(data_split[c]) for c in columns}, True
    if len(data_split) == 1 and isinstance(data_split[0][columns[0]], list):
        row = data_split[0]
        return {c: list(row[c]) for c in columns}, True
    return {c: list(data_split[c]) for c in columns}, False


def _load_hub(task: AbsTask, kind: str, spec: TaskSpec) -> PreparedTask:
    dataset_meta = task.metadata.dataset
    path = dataset_meta.get("path", spec.task)
    source = f"hub:{path}@{dataset_meta.get('revision', '')}"
    try:
        task.load_data()
    except _hub_errors() as exc:
        raise HubDownloadError(
            f"cannot download {path} for {spec.task} from the Hugging Face Hub "
            f"({_short_reason(exc)})",
            "run with --koembed-data-dir DIR pointing at a local copy in the documented layout "
            f"(DIR/{spec.task}/{spec.subset}/{spec.split}/: {LAYOUT[_layout_kind(kind)]})",
        ) from exc
    except Exception as exc:  # a dataset mteb cannot read: still one line for the user
        raise KoembedError(
            f"cannot load {path} for {spec.task} through mteb ({_short_reason(exc)}); "
            "a local copy can be given with --koembed-data-dir DIR"
        ) from exc
    if kind in ("Retrieval", "Reranking"):
        task.convert_v1_dataset_format_to_v2(num_proc=None)  # type: ignore[attr-defined]
    data_split = _hub_split(task, spec, kind)

    if kind == "STS":
        c1, c2 = _sts_columns(task)
        table, one_row = _pair_table(data_split, [c1, c2, "score"])
        kept = unique_pair_indices(table[c1], table[c2])
        dropped = len(table[c1]) - len(kept)
        if one_row or not hasattr(data_split, "select"):
            data = _sts_dataset(task, *([table[c][i] for i in kept] for c in (c1, c2, "score")))
        else:
            data = data_split.select(kept) if dropped else data_split
        _inject(task, _wrap(task, spec, data, retrieval=False))
        return PreparedTask(task, len(kept), {"pairs": len(kept)}, dropped, source)

    if kind == "PairClassification":
        cols = _pc_columns(task)
        table, _ = _pair_table(data_split, cols)
        (s1, s2, labels), dropped = dedupe_pairs(*(table[c] for c in cols))
        data = _pc_dataset(task, s1, s2, labels)
        _inject(task, _wrap(task, spec, data, retrieval=False))
        return PreparedTask(task, len(s1), {"pairs": len(s1)}, dropped, source)

    if kind == "Clustering":
        n = _embedded_count(task, len(data_split))
        _inject(task, _wrap(task, spec, data_split, retrieval=False))
        return PreparedTask(task, n, {"texts": n, "sets": 1}, 0, source)

    if kind == _LEGACY:
        texts = data_split[task.input_column_name]  # type: ignore[attr-defined]
        n = sum(len(t) for t in texts)
        _inject(task, _wrap(task, spec, data_split, retrieval=False))
        return PreparedTask(task, n, {"texts": n, "sets": len(texts)}, 0, source)

    if kind == "Classification":
        return _load_hub_classification(task, spec, source)

    relevant = data_split["relevant_docs"]
    with_qrels = {q for q, docs in relevant.items() if len(docs) > 0}
    n_queries = sum(1 for q in data_split["queries"]["id"] if q in with_qrels)
    sizes = {
        "queries": n_queries,
        "documents": len(data_split["corpus"]),
        "qrels": sum(len(relevant[q]) for q in with_qrels),
    }
    top_ranked = data_split.get("top_ranked") if kind == "Reranking" else None
    if top_ranked:
        sizes["candidates"] = sum(len(top_ranked.get(q, [])) for q in with_qrels)
    _inject(task, {spec.subset: {spec.split: data_split}})
    return PreparedTask(task, n_queries, sizes, 0, source)


# ---------------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------------


def prepare_task(spec: TaskSpec, data_dir: Path | None) -> PreparedTask:
    """An mteb task for ``spec``, loaded and ready for ``mteb.evaluate``.

    Custom tasks (``spec.custom_type``) read ``spec.data_dir`` (else ``data_dir``). mteb tasks read
    ``data_dir/<task>/<subset>/<split>/`` when ``data_dir`` is given, else the Hub through mteb.
    Raises KoembedError (one line) on unknown tasks, splits or subsets, bad data, or no Hub.
    """
    if spec.custom_type is not None:
        root = spec.data_dir if spec.data_dir is not None else data_dir
        return _prepare_custom(spec, root)
    if spec.benchmark is not None:
        return _prepare_benchmark(spec, data_dir)
    task, kind = _get_mteb_task(spec)
    if data_dir is None:
        return _load_hub(task, kind, spec)
    root = Path(data_dir)
    if not root.is_dir():
        raise KoembedError(f"data directory {root} does not exist (--koembed-data-dir)")
    directory = layout_dir(root, spec.task, spec.subset, spec.split)
    return _load_local(task, kind, spec, directory)


# ---------------------------------------------------------------------------------------------
# Tasks of an mteb benchmark (pytest_koembed.protocol.mteb_suites): every cell the benchmark keeps
# ---------------------------------------------------------------------------------------------


def _merged(into: Any, other: Any) -> Any:
    """Two tasks' injected datasets as one: nested by subset and split, no cell in both."""
    if not (isinstance(into, Mapping) and isinstance(other, Mapping)):
        return other
    merged = dict(into)
    for key, value in other.items():
        merged[key] = _merged(merged[key], value) if key in merged else value
    return type(into)(merged) if type(into) is not dict else merged


def _cell_sizes(data: Any) -> dict[str, int]:
    """What one loaded (subset, split) cell holds, as far as it can be told generically."""
    if isinstance(data, Mapping) and "queries" in data and "corpus" in data:
        relevant = data.get("relevant_docs") or {}
        with_qrels = {q for q, docs in relevant.items() if len(docs) > 0}
        return {
            "queries": sum(1 for q in data["queries"]["id"] if q in with_qrels),
            "documents": len(data["corpus"]),
            "qrels": sum(len(relevant[q]) for q in with_qrels),
        }
    try:
        return {"rows": len(data)}
    except TypeError:
        return {}


def _benchmark_sizes(task: AbsTask, spec: TaskSpec) -> dict[str, int]:
    """The loaded data's sizes summed over the benchmark's cells (best effort)."""
    dataset: Any = task.dataset
    sizes: dict[str, int] = {}
    for subset, split in spec.cells:
        where = dataset
        if isinstance(where, Mapping) and subset in where and split not in where:
            where = where[subset]
        if not isinstance(where, Mapping) or split not in where:
            continue
        for key, n in _cell_sizes(where[split]).items():
            sizes[key] = sizes.get(key, 0) + n
    return sizes


def _prepare_benchmark(spec: TaskSpec, data_dir: Path | None) -> PreparedTask:
    """The benchmark's own task object, with the data of every (subset, split) it keeps.

    From the Hub, mteb loads the data exactly as it does for the benchmark. From
    ``--koembed-data-dir``, each cell is read from ``DIR/<task>/<subset>/<split>/`` like any
    local copy, pairs kept as they are (mteb does not de-duplicate them).
    """
    from pytest_koembed.protocol.mteb_suites import benchmark_task

    task = benchmark_task(spec)
    if data_dir is None:
        path = task.metadata.dataset.get("path", spec.task)
        try:
            task.load_data()
        except _hub_errors() as exc:
            raise HubDownloadError(
                f"cannot download {path} for {spec.task} from the Hugging Face Hub "
                f"({_short_reason(exc)})",
                "run with --koembed-data-dir DIR pointing at a local copy in the documented "
                f"layout (DIR/{spec.task}/<subset>/<split>/ for subsets {', '.join(spec.subsets)}"
                f" and splits {', '.join(spec.splits)})",
            ) from exc
        except Exception as exc:
            raise KoembedError(
                f"cannot load {path} for {spec.task} through mteb ({_short_reason(exc)}); "
                "a local copy can be given with --koembed-data-dir DIR"
            ) from exc
        sizes = _benchmark_sizes(task, spec)
        n = sizes.get("queries", sizes.get("rows", 0))
        source = f"hub:{path}@{task.metadata.dataset.get('revision', '')}"
        return PreparedTask(task, n, sizes, 0, source)
    root = Path(data_dir)
    if not root.is_dir():
        raise KoembedError(f"data directory {root} does not exist (--koembed-data-dir)")
    from dataclasses import replace

    dataset: Any = None
    sizes = {}
    n_examples = dropped = 0
    sources = []
    for subset, split in spec.cells:
        cell = replace(spec, split=split, subset=subset, splits=(split,), subsets=(subset,))
        probe, kind = _get_mteb_task(cell)
        if task.metadata.type == "Reranking" and kind == "Retrieval":
            # mteb reranks through retrieval with candidates per query; the retrieval files
            # have none, and ranking the whole corpus instead would be another score
            raise KoembedError(
                f"{spec.column}: a local copy of a reranking task needs each query's candidate "
                "documents, which the retrieval layout does not hold; run it from the Hub"
            )
        part = _load_local(probe, kind, cell, layout_dir(root, spec.task, subset, split))
        dataset = part.task.dataset if dataset is None else _merged(dataset, part.task.dataset)
        for key, n in part.sizes.items():
            sizes[key] = sizes.get(key, 0) + n
        n_examples += part.n_examples
        dropped += part.duplicates_dropped
        sources.append(part.source)
    _inject(task, dataset)
    source = sources[0] if len(sources) == 1 else f"local:{root.resolve()}/{spec.task}"
    return PreparedTask(task, n_examples, sizes, dropped, source)


# ---------------------------------------------------------------------------------------------
# Writing the layout (mirror Hub data for air-gapped runs)
# ---------------------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _plain(value: Any) -> Any:
    """A JSON-able scalar (numpy scalars become Python numbers)."""
    return value.item() if hasattr(value, "item") else value


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
    elif kind == "PairClassification":
        c1, c2, cl = _pc_columns(task)
        table, _ = _pair_table(data_split, [c1, c2, cl])
        _write_jsonl(
            directory / _PAIRS_FILE,
            [
                {"sentence1": a, "sentence2": b, "label": int(_plain(y))}
                for a, b, y in zip(table[c1], table[c2], table[cl], strict=True)
            ],
        )
    elif kind == "Clustering":
        text_col, label_col = task.input_column_name, task.label_column_name  # type: ignore[attr-defined]
        name = _label_decoder(data_split, label_col)
        _write_jsonl(
            directory / _TEXTS_FILE,
            [
                {"text": t, "label": name(y)}
                for t, y in zip(data_split[text_col], data_split[label_col], strict=True)
            ],
        )
    elif kind == _LEGACY:
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
    elif kind == "Classification":
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
            where: Any = (
                task.dataset[spec.subset] if task.metadata.is_multilingual else task.dataset
            )
            _write_jsonl(directory / _TRAIN_FILE, labelled(where[task.train_split]))  # type: ignore[attr-defined]
        _write_jsonl(directory / _TEST_FILE, labelled(data_split))
    else:
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
    if isinstance(prepared, PreparedTask):
        _write_mirror_meta(directory, spec, prepared)
    return directory


def _write_mirror_meta(directory: Path, spec: TaskSpec, prepared: PreparedTask) -> None:
    """:data:`MIRROR_META` for rows :func:`export_task` just wrote from ``prepared``."""
    from pytest_koembed._version import __version__

    meta = {
        "format": 1,
        "task": spec.task,
        "subset": spec.subset,
        "split": spec.split,
        "source": prepared.source,
        "sizes": dict(prepared.sizes),
        "duplicates_dropped": prepared.duplicates_dropped,
        "written_by": f"pytest-koembed {__version__}",
    }
    path = directory / MIRROR_META
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
