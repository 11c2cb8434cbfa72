"""Suites: which tasks a run scores, how each is read, and how they are weighted.

A suite is a TOML file (see ``suites/*.toml`` and the README). Each ``[[tasks]]`` entry is either a
real mteb task (``task = "KorSTS"``) or a custom local task (``type = "STS"`` plus ``data = DIR``)
that reads the documented JSONL layout. A suite may instead name an mteb benchmark
(``benchmark = "MTEB(kor, v2)"``, or ``--koembed-suite mteb:<benchmark name>``): its tasks, splits
and subsets are then read from mteb's benchmark object when the suite is loaded
(``pytest_koembed.protocol.mteb_suites``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.resources import suites_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from pytest_koembed.protocol.spec import (
    CATEGORIES,
    CUSTOM_TYPES,
    DEFAULT_VALUE_RULE,
    Suite,
    TaskSpec,
)


def shipped_suites() -> dict[str, Path]:
    """Names of the suites shipped with the plugin, mapped to their files."""
    return {p.stem: p for p in sorted(suites_dir().glob("*.toml"))}


def resolve_suite_path(name_or_path: str) -> Path:
    shipped = shipped_suites()
    if name_or_path in shipped:
        return shipped[name_or_path]
    path = Path(name_or_path).expanduser()
    if path.suffix == ".toml" or path.exists() or "/" in name_or_path:
        if not path.is_file():
            raise KoembedError(
                f"suite file {str(path)!r} does not exist; pass a shipped suite name "
                f"({', '.join(shipped)}) or the path of a suite TOML file"
            )
        return path
    raise KoembedError(
        f"unknown suite {name_or_path!r}; shipped suites are {', '.join(shipped)} "
        "(or pass the path of a suite TOML file, or mteb:<benchmark name> for an mteb benchmark)"
    )


MTEB_PREFIX = "mteb:"
"""``--koembed-suite mteb:<benchmark name>`` runs any mteb benchmark (``mteb_suites``)."""


def load_suite(name_or_path: str) -> Suite:
    """Read a shipped suite by name, a suite TOML file by path, or ``mteb:<benchmark name>``."""
    if name_or_path.startswith(MTEB_PREFIX):
        from pytest_koembed.protocol.mteb_suites import benchmark_suite

        return benchmark_suite(name_or_path[len(MTEB_PREFIX) :].strip())
    path = resolve_suite_path(name_or_path)
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise KoembedError(f"suite file {path} is not valid TOML: {exc}") from None
    return parse_suite(raw, path)


def _field(entry: dict[str, Any], key: str, where: str, default: Any = None) -> Any:
    value = entry.get(key, default)
    if value is None:
        raise KoembedError(f"{where}: missing required key {key!r}")
    if not isinstance(value, str) or not value.strip():
        raise KoembedError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def parse_suite(raw: dict[str, Any], path: Path) -> Suite:
    from pytest_koembed.protocol.scoring import SCHEMES

    name = raw.get("name", path.stem)
    scheme = raw.get("scheme", "ko-leaderboard-v1")
    if scheme not in SCHEMES:
        raise KoembedError(
            f"suite {path}: unknown weighting scheme {scheme!r}; choose one of {', '.join(SCHEMES)}"
        )
    benchmark = raw.get("benchmark")
    if benchmark is not None:
        return _benchmark_suite(raw, path, name, benchmark)
    entries = raw.get("tasks")
    if not isinstance(entries, list) or not entries:
        raise KoembedError(f"suite {path}: no [[tasks]] entries")
    tasks: list[TaskSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries, start=1):
        tasks.append(_task_spec(entry, i, path, seen))
    return Suite(
        name=name,
        scheme=scheme,
        tasks=tuple(tasks),
        path=path,
        description=str(raw.get("description", "")),
    )


def _benchmark_suite(raw: dict[str, Any], path: Path, name: Any, benchmark: Any) -> Suite:
    """A suite of an mteb benchmark's tasks (``benchmark = NAME``)."""
    if "tasks" in raw:
        raise KoembedError(
            f"suite {path}: give either benchmark = NAME (tasks from mteb) or [[tasks]], not both"
        )
    if not isinstance(benchmark, str) or not benchmark.strip():
        raise KoembedError(f"suite {path}: 'benchmark' must be an mteb benchmark name")
    from pytest_koembed.protocol.mteb_suites import benchmark_suite

    return benchmark_suite(
        benchmark,
        name=str(name),
        scheme=str(raw.get("scheme", "mteb")),
        path=path,
        description=str(raw.get("description", "")),
    )


def _task_spec(entry: Any, i: int, path: Path, seen: set[str]) -> TaskSpec:
    """The ``i``-th ``[[tasks]]`` entry of the suite at ``path``; ``seen``: the columns so far."""
    from pytest_koembed.protocol.scoring import check_value_rule

    where = f"suite {path}, task #{i}"
    if not isinstance(entry, dict):
        raise KoembedError(f"{where}: each [[tasks]] entry must be a table")
    unknown = set(entry) - {
        "column",
        "task",
        "split",
        "subset",
        "category",
        "value",
        "type",
        "data",
        "dev_split",
    }
    if unknown:
        raise KoembedError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    task = _field(entry, "task", where)
    column = _field(entry, "column", where, default=task)
    where = f"suite {path}, task {column!r}"
    category = _field(entry, "category", where)
    if category not in CATEGORIES:
        raise KoembedError(f"{where}: category {category!r} is not one of {', '.join(CATEGORIES)}")
    value_rule = _field(entry, "value", where, default=DEFAULT_VALUE_RULE[category])
    check_value_rule(value_rule, where)
    custom_type = entry.get("type")
    data_dir: Path | None = None
    if custom_type is not None:
        if custom_type not in CUSTOM_TYPES:
            raise KoembedError(
                f"{where}: type {custom_type!r} is not one of {', '.join(CUSTOM_TYPES)}"
            )
        data = _field(entry, "data", where)
        data_dir = (path.parent / data).resolve()
    elif "data" in entry:
        raise KoembedError(
            f"{where}: 'data' needs 'type' (a custom local task); for a local copy of an "
            "mteb task use --koembed-data-dir"
        )
    if column in seen:
        raise KoembedError(f"{where}: column {column!r} appears twice")
    seen.add(column)
    return TaskSpec(
        column=column,
        task=task,
        split=_field(entry, "split", where, default="test"),
        subset=_field(entry, "subset", where, default="default"),
        category=category,
        value_rule=value_rule,
        custom_type=custom_type,
        data_dir=data_dir,
        dev_split=_field(entry, "dev_split", where) if "dev_split" in entry else None,
    )
