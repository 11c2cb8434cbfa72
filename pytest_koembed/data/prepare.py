"""The entry point: :func:`prepare_task` hands ``evaluation`` a ready :class:`PreparedTask`.

A real mteb task object whose data is already loaded (from a local copy, a custom local task, or
the Hugging Face Hub through mteb), restricted to one split and one subset, with pair datasets
de-duplicated as the leaderboard states. A task of an mteb benchmark (``protocol.mteb_suites``)
gets every cell the benchmark keeps, merged into one task object.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_koembed.data.hub import _hub_errors, _load_hub, _pair_table, _short_reason
from pytest_koembed.data.layout import layout_dir
from pytest_koembed.data.local import _load_local, _prepare_custom
from pytest_koembed.data.tasks import (
    _LEGACY,
    PreparedTask,
    _cross_validation,
    _embedded_count,
    _get_mteb_task,
    _inject,
    _kind_of,
    _pc_columns,
    _sts_columns,
    _train_encoded,
)
from pytest_koembed.errors import HubDownloadError, KoembedError

if TYPE_CHECKING:
    from mteb.abstasks.abstask import AbsTask

    from pytest_koembed.protocol.spec import TaskSpec

__all__ = [
    "prepare_task",
]


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


def _merged(into: Any, other: Any) -> Any:
    """Two tasks' injected datasets as one: nested by subset and split, no cell in both."""
    if not (isinstance(into, Mapping) and isinstance(other, Mapping)):
        return other
    merged = dict(into)
    for key, value in other.items():
        merged[key] = _merged(merged[key], value) if key in merged else value
    return type(into)(merged) if type(into) is not dict else merged


def _cell_sizes(task: AbsTask, kind: str | None, cell: Any, train: Any) -> dict[str, int]:
    """What one loaded (subset, split) cell holds, counted as the single-task paths count it:
    pairs (also when mteb holds them as one row of lists), texts and sets, queries."""
    if kind in ("Retrieval", "Reranking"):
        relevant = cell.get("relevant_docs") or {}
        with_qrels = {q for q, docs in relevant.items() if len(docs) > 0}
        sizes = {
            "queries": sum(1 for q in cell["queries"]["id"] if q in with_qrels),
            "documents": len(cell["corpus"]),
            "qrels": sum(len(relevant[q]) for q in with_qrels),
        }
        top_ranked = cell.get("top_ranked") if kind == "Reranking" else None
        if top_ranked:
            sizes["candidates"] = sum(len(top_ranked.get(q, [])) for q in with_qrels)
        return sizes
    if kind in ("STS", "PairClassification"):
        columns = [*_sts_columns(task), "score"] if kind == "STS" else list(_pc_columns(task))
        table, _ = _pair_table(cell, columns)
        return {"pairs": len(table[columns[0]])}
    if kind == "Clustering":
        return {"texts": _embedded_count(task, len(cell)), "sets": 1}
    if kind == _LEGACY:
        texts = cell[task.input_column_name]  # type: ignore[attr-defined]
        return {"texts": sum(len(t) for t in texts), "sets": len(texts)}
    if kind == "Classification":
        label = task.label_column_name  # type: ignore[attr-defined]
        labels = set(cell[label]) | (set(train[label]) if train is not None else set())
        return {
            "texts": len(cell),
            "train": len(train) if train is not None else 0,
            "train_encoded": _train_encoded(task, train) if train is not None else 0,
            "labels": len(labels),
        }
    try:
        return {"rows": len(cell)}
    except TypeError:
        return {}


def _benchmark_sizes(task: AbsTask, spec: TaskSpec) -> tuple[int, dict[str, int]]:
    """The examples scored and the loaded data's sizes, summed over the benchmark's cells."""
    dataset: Any = task.dataset
    kind = _kind_of(task)
    sizes: dict[str, int] = {}
    for subset, split in spec.cells:
        where = dataset
        if isinstance(where, Mapping) and subset in where and split not in where:
            where = where[subset]
        if not isinstance(where, Mapping) or split not in where:
            continue
        train = None
        if kind == "Classification" and not _cross_validation(task):
            train = where.get(task.train_split)  # type: ignore[attr-defined]
        for key, n in _cell_sizes(task, kind, where[split], train).items():
            sizes[key] = sizes.get(key, 0) + n
    counted = next((k for k in ("pairs", "texts", "queries", "rows") if k in sizes), None)
    return (sizes[counted] if counted else 0), sizes


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
        n, sizes = _benchmark_sizes(task, spec)
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
