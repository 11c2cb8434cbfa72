"""The Hub, through mteb: a task's own ``load_data``, its split and subset picked, pairs
de-duplicated as for local rows. A Hub that cannot be reached is one ``HubDownloadError`` line
with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pytest_koembed.data.dedup import dedupe_pairs, unique_pair_indices
from pytest_koembed.data.layout import LAYOUT
from pytest_koembed.data.tasks import (
    _LEGACY,
    PreparedTask,
    _classification_prepared,
    _cross_validation,
    _embedded_count,
    _inject,
    _layout_kind,
    _pc_columns,
    _pc_dataset,
    _sts_columns,
    _sts_dataset,
    _wrap,
)
from pytest_koembed.errors import HubDownloadError, KoembedError

if TYPE_CHECKING:
    from mteb.abstasks.abstask import AbsTask

    from pytest_koembed.protocol.spec import TaskSpec


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


def _hub_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]  # ConnectionError, HfHubHTTPError, ...
    try:
        from datasets.exceptions import DatasetsError

        errors.append(DatasetsError)
    except ImportError:  # pragma: no cover
        pass
    errors.extend(_http_client_errors())
    return tuple(errors)


def _http_client_errors() -> list[type[BaseException]]:
    """The network errors of the HTTP client huggingface_hub downloads with: ``httpx``, or
    ``httpx2`` (huggingface_hub 2.x), whose errors are no ``OSError`` (a connection dropped
    halfway is its ``RemoteProtocolError``)."""
    import importlib

    names = ["httpx", "httpx2"]
    try:
        from huggingface_hub.errors import Response

        names.insert(0, Response.__module__.split(".")[0])
    except ImportError:  # pragma: no cover - an older huggingface_hub
        pass
    found: list[type[BaseException]] = []
    for name in dict.fromkeys(names):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        error = getattr(module, "HTTPError", None)
        if isinstance(error, type) and issubclass(error, BaseException):
            found.append(error)
    return found


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
