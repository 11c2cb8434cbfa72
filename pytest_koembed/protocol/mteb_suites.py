"""Suites read from an mteb benchmark: ``mteb-kor-v2`` and ``--koembed-suite mteb:<benchmark>``.

The benchmark object (``mteb.get_benchmark(name)``) is read when the suite is loaded, so the suite
follows mteb when mteb changes the benchmark. Each of its tasks becomes one :class:`TaskSpec`
(one pytest item, one column named like the mteb task) that keeps the splits and subsets the
benchmark keeps of it (a multilingual task such as MIRACLRetrieval keeps only ``ko`` in
``MTEB(kor, v2)``). Such a task is scored as mteb scores it in the benchmark: every (subset,
split) cell of it is evaluated, its value is the mean of the cells' ``main_score`` (mteb's
``TaskResult.get_score``), and pair datasets are not de-duplicated. The suite's scheme is
``mteb``: mteb's own aggregation, ``Mean (Task)`` and ``Mean (TaskType)``.

Categories: mteb's task type, except that ``PairClassification`` is the plugin's ``NLI`` category
(the Korean leaderboard's name for the same task type); any type outside the plugin's six
categories (BitextMining, MultilabelClassification, InstructionRetrieval, ...) is a category of
its own name, with its own marker (``-m bitextmining``). The run record's ``mteb_averages`` keys
the per-type means by mteb's type names, as mteb's leaderboard does.

Reading a benchmark needs no network: mteb's task metadata ships with mteb.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.spec import Suite, TaskSpec

# mteb task type -> the plugin's category, where they differ.
MTEB_TYPE_CATEGORY = {"PairClassification": "NLI"}
_CATEGORY_MTEB_TYPE = {category: mteb_type for mteb_type, category in MTEB_TYPE_CATEGORY.items()}


def category_for_type(mteb_type: str) -> str:
    """The plugin's category of an mteb task type (``PairClassification`` -> ``NLI``)."""
    return MTEB_TYPE_CATEGORY.get(mteb_type, mteb_type)


def mteb_task_type(spec: TaskSpec) -> str:
    """The mteb task type of a task, from its category (``NLI`` -> ``PairClassification``)."""
    return _CATEGORY_MTEB_TYPE.get(spec.category, spec.category)


def _benchmark_names(mteb: Any) -> list[str]:
    names: list[str] = []
    for benchmark in mteb.get_benchmarks():
        names.append(benchmark.name)
        names.extend(getattr(benchmark, "aliases", ()) or ())
    return names


def get_benchmark(name: str) -> Any:
    """mteb's benchmark object, or a one-line :class:`KoembedError` naming close names."""
    import mteb

    if not name:
        raise KoembedError(
            "--koembed-suite mteb: needs an mteb benchmark name, e.g. mteb:MTEB(kor, v2)"
        )
    try:
        return mteb.get_benchmark(name)
    except (KeyError, ValueError):
        names = _benchmark_names(mteb)
        wanted = name.lower()
        # names sharing a word with the one given ("kor" in "MTEB(korean)"), then close spellings
        sharing = [
            n
            for n in names
            if any(
                len(word) >= 3 and word != "mteb" and word in wanted
                for word in re.findall(r"[a-z0-9]+", n.lower())
            )
        ]
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
        hint = ", ".join(repr(n) for n in list(dict.fromkeys([*sharing, *close]))[:6])
        listing = "python -c 'import mteb; print([b.name for b in mteb.get_benchmarks()])'"
        raise KoembedError(
            f"unknown mteb benchmark {name!r}; "
            + (f"close names: {hint}" if hint else f"mteb has {len(names)} benchmarks")
            + f" (list them: {listing})"
        ) from None


def benchmark_suite(
    benchmark_name: str,
    *,
    name: str | None = None,
    scheme: str = "mteb",
    path: Path | None = None,
    description: str = "",
) -> Suite:
    """A suite of every task of an mteb benchmark, with the splits and subsets it keeps.

    ``name``, ``scheme``, ``path``, ``description``: as a suite file gives them (a shipped suite
    such as ``mteb-kor-v2``); the ``mteb:`` form leaves them to their defaults
    (name ``mteb:<benchmark name>``).
    """
    benchmark = get_benchmark(benchmark_name)
    specs: list[TaskSpec] = []
    seen: set[str] = set()
    for task in benchmark.tasks:
        metadata = task.metadata
        column = metadata.name
        if column in seen:  # mteb keys a benchmark's results by task name: one item per name
            raise KoembedError(
                f"mteb benchmark {benchmark.name!r} lists task {column!r} twice; "
                "koembed scores each task once"
            )
        seen.add(column)
        splits = tuple(str(s) for s in task.eval_splits)
        subsets = tuple(str(s) for s in task.hf_subsets)
        specs.append(
            TaskSpec(
                column=column,
                task=column,
                split=",".join(splits),
                subset=",".join(subsets),
                category=category_for_type(str(metadata.type)),
                value_rule="main_score",
                benchmark=benchmark.name,
                splits=splits,
                subsets=subsets,
            )
        )
    if not specs:
        raise KoembedError(f"mteb benchmark {benchmark.name!r} has no tasks")
    return Suite(
        name=name or f"mteb:{benchmark.name}",
        scheme=scheme,
        tasks=tuple(specs),
        path=path if path is not None else Path(f"mteb:{benchmark.name}"),
        description=description or f"mteb benchmark {benchmark.name} ({len(specs)} tasks)",
    )


def benchmark_task(spec: TaskSpec) -> Any:
    """A fresh copy of the benchmark's own task object for ``spec`` (its splits and subsets
    restricted as the benchmark restricts them), with no data loaded."""
    import copy

    assert spec.benchmark is not None
    for task in get_benchmark(spec.benchmark).tasks:
        if task.metadata.name == spec.task:
            fresh = copy.deepcopy(task)
            if set(fresh.eval_splits) != set(spec.splits) or set(fresh.hf_subsets) != set(
                spec.subsets
            ):
                raise KoembedError(
                    f"{spec.column}: mteb's benchmark {spec.benchmark!r} now keeps splits "
                    f"{', '.join(fresh.eval_splits)} and subsets {', '.join(fresh.hf_subsets)}, "
                    f"not those the suite was read with; reload the suite"
                )
            return fresh
    raise KoembedError(f"mteb benchmark {spec.benchmark!r} has no task {spec.task!r}")


def task_score(task_result: Any, task: Any) -> dict[str, float]:
    """A benchmark task's scores from mteb's ``TaskResult``, as the benchmark scores it.

    ``main_score`` is mteb's own score of the task in the benchmark:
    ``TaskResult.validate_and_filter_scores(task).get_score()``, the mean of ``main_score`` over
    the benchmark's (subset, split) cells, which is what mteb's leaderboard averages. With one
    cell, every metric of it is kept; with several, each metric every cell has is the mean over
    the cells (the same mean mteb takes of main_score). Raises a one-line KoembedError when a
    cell is missing.
    """
    import math

    filtered = task_result.validate_and_filter_scores(task)
    entries = [entry for split in filtered.scores.values() for entry in split]
    missing = [
        f"{entry.get('hf_subset')}" for entry in entries if not _finite(entry.get("main_score"))
    ]
    if missing or not entries:
        raise KoembedError(
            f"{task.metadata.name}: mteb returned no main_score for subset(s) "
            f"{', '.join(missing) or 'any'} of splits {', '.join(task.eval_splits)}"
        )
    main = float(filtered.get_score())
    if len(entries) == 1:
        scores = {k: v for k, v in entries[0].items() if k not in _BOOKKEEPING}
    else:
        shared = set.intersection(*(set(e) for e in entries)) - _BOOKKEEPING
        scores = {}
        for key in sorted(shared):
            values = [e[key] for e in entries]
            if all(_finite(v) for v in values):
                scores[key] = math.fsum(float(v) for v in values) / len(values)
    scores["main_score"] = main
    return scores


_BOOKKEEPING = {"hf_subset", "languages", "mteb_version"}


def _finite(value: Any) -> bool:
    import math

    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )
