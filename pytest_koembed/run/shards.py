"""``--koembed-shard K/N``: the K-th of N disjoint parts of a run's selected tasks.

Every shard of a CI matrix computes the same assignment on its own, so it must be deterministic
and depend only on the selection and the suite. Tasks are balanced by an estimate of what they
cost to encode (:func:`task_cost`), not by their position in the suite: greedy
longest-processing-time (:func:`assign`), the most expensive task first, each to the shard with
the least estimated cost so far (ties: the lower shard).

The estimate of a task is ``characters + TEXT_OVERHEAD * texts`` of its split, taken from

1. mteb's task metadata (``descriptive_stats``: ``number_of_characters`` and ``num_samples`` of the
   split, of the subset when the task has subsets), for mteb tasks: the same numbers on every
   machine with the same mteb, whatever the data source;
2. else the task's local JSONL layout (custom tasks, or ``--koembed-data-dir``): the characters of
   its files and their lines (a pairs line holds two texts, qrels hold none);
3. else the mean estimate of the suite's other selected tasks (1 when none has one).

Plain module: no pytest, no torch; mteb's metadata is read only for mteb tasks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.spec import TaskSpec

TEXT_OVERHEAD = 32
"""Characters a text costs beyond its own (special tokens, padding, a call's bookkeeping)."""

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*\Z")


@dataclass(frozen=True)
class Shard:
    index: int  # K, from 1
    count: int  # N

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"2/3"`` -> Shard(2, 3); a one-line KoembedError for anything else."""
    match = _SHARD.match(text or "")
    if match is None:
        raise KoembedError(
            f"--koembed-shard {text!r}: expected K/N with 1 <= K <= N, e.g. --koembed-shard 2/3"
        )
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= index <= count:
        raise KoembedError(
            f"--koembed-shard {text!r}: expected K/N with 1 <= K <= N, e.g. --koembed-shard "
            f"1/{max(count, 2)}"
        )
    return Shard(index, count)


@dataclass(frozen=True)
class TaskCost:
    texts: int
    characters: int
    source: str  # "mteb metadata", "local files" or "mean of the others"

    @property
    def estimate(self) -> int:
        return self.characters + TEXT_OVERHEAD * self.texts


def _metadata_cost(spec: TaskSpec) -> TaskCost | None:
    try:
        import mteb

        stats = mteb.get_task(spec.task).metadata.descriptive_stats
    except Exception:  # an unknown task fails later, with its own one-line error
        return None
    split = stats.get(spec.split) if isinstance(stats, Mapping) else None
    if not isinstance(split, Mapping):
        return None
    subsets = split.get("hf_subset_descriptive_stats")
    if isinstance(subsets, Mapping) and isinstance(subsets.get(spec.subset), Mapping):
        split = subsets[spec.subset]
    texts = split.get("num_samples")
    characters = split.get("number_of_characters")
    if characters is None:  # e.g. classification-style stats: per-side text statistics
        sides = [v for k, v in split.items() if k.endswith("text_statistics") and v]
        characters = sum(int(s.get("total_text_length") or 0) for s in sides) or None
    if not isinstance(texts, int) or characters is None:
        return None
    return TaskCost(texts, int(characters), "mteb metadata")


def _files_cost(directory: Path) -> TaskCost | None:
    if not directory.is_dir():
        return None
    texts = characters = 0
    for path in sorted(directory.glob("*.jsonl")):
        if path.name == "qrels.jsonl":
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        lines = sum(1 for line in text.splitlines() if line.strip())
        texts += 2 * lines if path.name == "pairs.jsonl" else lines
        characters += len(text)
    return TaskCost(texts, characters, "local files") if texts else None


def task_cost(spec: TaskSpec, data_dir: Path | None) -> TaskCost | None:
    """The estimated cost of one task, or None when neither metadata nor files tell."""
    from pytest_koembed.data.layout import layout_dir

    cost = None if spec.is_custom else _metadata_cost(spec)
    root = spec.data_dir if spec.is_custom and spec.data_dir is not None else data_dir
    if cost is None and root is not None:
        cost = _files_cost(layout_dir(root, spec.task, spec.subset, spec.split))
    return cost


def estimate_costs(specs: Sequence[TaskSpec], data_dir: Path | None) -> dict[str, TaskCost]:
    """column -> cost of each task; unknown ones get the mean of the known ones (1 if none)."""
    known = {spec.column: task_cost(spec, data_dir) for spec in specs}
    values = [c for c in known.values() if c is not None]
    mean = round(sum(c.estimate for c in values) / len(values)) if values else 1
    fallback = TaskCost(0, mean, "mean of the others")
    return {column: cost or fallback for column, cost in known.items()}


def assign(costs: Mapping[str, int], count: int) -> list[list[str]]:
    """The columns of each of ``count`` shards (in the order of ``costs``): greedy LPT.

    Deterministic: ties in cost keep the order of ``costs``, ties in load go to the lower shard.
    """
    columns = list(costs)
    order = sorted(columns, key=lambda c: -costs[c])  # stable: equal costs keep their order
    loads = [0] * count
    chosen: list[set[str]] = [set() for _ in range(count)]
    for column in order:
        shard = min(range(count), key=lambda s: (loads[s], s))
        loads[shard] += max(int(costs[column]), 0)
        chosen[shard].add(column)
    return [[c for c in columns if c in part] for part in chosen]


def shard_columns(
    specs: Sequence[TaskSpec], shard: Shard, data_dir: Path | None
) -> tuple[list[str], dict[str, Any]]:
    """This shard's columns among ``specs`` (the selected tasks, in suite order) and the record's
    ``shard`` block: ``{index, count, tasks, selected, estimated_cost}``."""
    costs = estimate_costs(specs, data_dir)
    parts = assign({c: cost.estimate for c, cost in costs.items()}, shard.count)
    mine = parts[shard.index - 1]
    block = {
        "index": shard.index,
        "count": shard.count,
        "tasks": mine,
        "selected": [spec.column for spec in specs],
        "estimated_cost": {c: costs[c].estimate for c in mine},
    }
    return mine, block


# ---------------------------------------------------------------------------------------------
# The gates a shard carries to ``koembed gate`` (issue 18)
# ---------------------------------------------------------------------------------------------

GATE_SETTINGS = ("fail_under", "tolerance", "strict", "min_effect", "rule")
"""The gate options a shard's run record carries (``"gate_settings"``): a shard checks no gate,
so they are applied by ``koembed gate`` to the merged record, the command line over the record
(``koembed merge`` refuses shards whose settings differ)."""


def gate_settings(
    *,
    fail_under: Sequence[str] = (),
    tolerance: Sequence[str] = (),
    strict: bool = False,
    min_effect: Any = None,
    rule: str | None = None,
) -> dict[str, Any]:
    """The record's ``"gate_settings"``: only what was set (command line or ini)."""
    out: dict[str, Any] = {}
    if fail_under:
        out["fail_under"] = [str(x) for x in fail_under]
    if tolerance:
        out["tolerance"] = [str(x) for x in tolerance]
    if strict:
        out["strict"] = True
    if min_effect not in (None, ""):
        out["min_effect"] = str(min_effect)
    if rule:
        out["rule"] = str(rule)
    return out


def option_text(name: str, value: Any) -> str:
    """A gate setting as the option a user writes: ``--koembed-fail-under=weighted=60``."""
    option = f"--koembed-{name.replace('_', '-')}"
    if value is True:
        return option
    if isinstance(value, list):
        return " ".join(f"{option}={v}" for v in value)
    return f"{option}={value}"
