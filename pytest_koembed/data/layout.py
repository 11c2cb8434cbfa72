"""The local JSONL layout: reading and checking the rows of one task split.

The layout (the same for ``--koembed-data-dir``, custom tasks and the shipped sample data)
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

Every reader raises a one-line ``KoembedError`` naming the file and line of a bad row. The
checks after de-duplication (scores, 0/1 labels, clustering sets) live here too. Plain JSON:
no mteb, no datasets.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError

__all__ = [
    "LAYOUT",
    "MIRROR_META",
    "ClassificationRows",
    "PairRows",
    "RetrievalRows",
    "TextRows",
    "layout_dir",
    "mirrored_duplicates",
    "read_classification",
    "read_pairs",
    "read_reranking",
    "read_retrieval",
    "read_texts",
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

    relevant = _read_qrels(qrels_path, queries_path, corpus_path, query_line, doc_line)

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


def _read_qrels(
    qrels_path: Path,
    queries_path: Path,
    corpus_path: Path,
    query_line: Mapping[str, int],
    doc_line: Mapping[str, int],
) -> dict[str, dict[str, int]]:
    """``qrels.jsonl`` as ``{query id: {doc id: grade}}``, every id checked against the queries
    and the corpus (``query_line`` / ``doc_line``: the line each id was read on)."""
    kind = "Retrieval"
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
    return relevant


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
