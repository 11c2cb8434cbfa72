"""``--koembed-shard K/N``: the K-th of N disjoint parts of a run's selected tasks.

Every shard of a CI matrix computes the same assignment on its own, so it must be deterministic
and depend only on the selection, the suite and (``--koembed-shard-costs``) one record file.
Tasks are balanced by what they cost, not by their position in the suite: greedy
longest-processing-time (:func:`assign`), the most expensive task first, each to the shard with
the least cost so far (ties: the lower shard).

**The estimate** of a task (:func:`task_cost`) is in character-equivalents, the unit of encoding
one character:

    characters + TEXT_OVERHEAD x texts        encoding (special tokens, padding, a call's work)
    + TASK_OVERHEAD                           every task: its data, mteb's evaluator, results
    + the type's own evaluation:
      Clustering       KMEANS_RUN x runs      mteb's fast clustering runs k-means ``n_clusters``
                                              (10) times, each on 16,384 texts drawn with
                                              replacement, whatever the task's size; legacy
                                              clustering one run per clustering set
      Classification   CLASSIFIER_RUN x runs  a logistic regression per ``n_experiments`` (10)
      Retrieval,       QUERY_COST x queries   per query: its top 1,000 and their metrics;
      Reranking        + pairs / PAIRS_PER_UNIT  scoring of query x document pairs (reranking:
                                              only each query's candidates)
      STS, PairClassification  nothing more   (similarities of the pairs: part of the overhead)

The sizes come from

1. mteb's task metadata (``descriptive_stats``: ``number_of_characters`` and ``num_samples`` of the
   split, of the subset when the task has subsets; ``num_queries`` and ``num_documents``; the task
   class's ``n_clusters`` / ``n_experiments``), for mteb tasks: the same numbers on every
   machine with the same mteb, whatever the data source;
2. else the task's local JSONL layout (custom tasks, or ``--koembed-data-dir``): the characters of
   its files and their lines (a pairs line holds two texts, qrels hold none; queries, corpus,
   candidates and clustering sets are counted);
3. else the mean estimate of the suite's other selected tasks (1 when none has one).

The constants come from the sample suite's per-task ``seconds`` and ``encode_seconds`` in run
records of all-MiniLM-L6-v2 (fp32, batch 32, no embedding cache) on an otherwise idle 2-core CPU
with mteb 2.26 (a serial run and two runs of each shard; a task that ran first in its process left
out, it also pays the imports of mteb's evaluators, about 1.1 s), and from timing pieces alone:

- CHARS_PER_SECOND: STS, pair classification, clustering and classification encoded 19,000 to
  23,000 character-equivalents per second; the retrieval and reranking passages 11,000;
- TASK_OVERHEAD, 0.06 s: what pair classification, retrieval and reranking spent beyond their
  encoding (0.04-0.08 s);
- KMEANS_RUN, 0.135 s: the clustering task spent 1.41-1.52 s beyond its encoding on its 10 runs
  (one MiniBatchKMeans of 16,384 x 384 alone, on one thread: 0.09 s);
- CLASSIFIER_RUN, 0.025 s: the classification task spent 0.31-0.33 s beyond its encoding on its
  10 logistic regressions;
- QUERY_COST (2 ms) and PAIRS_PER_UNIT are not fitted (the sample's 26 and 8 queries cost too
  little to see): a query's top 1,000 and its metrics are Python loops, and torch's scoring
  with top-k took 0.02-0.04 s per million pairs at 384 dimensions.

They are rough: encoding scales with the model, the device and the texts' length (long passages
encode slower per character), k-means with the CPU's threads: on a CPU shared with other
processes a k-means run took 3.4 s instead of 0.1 s, and the clustering task 19-26 s instead of
1.8 s. The estimate ranks tasks rather than predicting seconds; measured seconds (below) know the
machine.

**Measured costs** (``--koembed-shard-costs=RECORD``, :func:`read_cost_record`): a run record
(``--koembed-json``, a shard's, or a merged one from ``koembed merge``) holds each task's
``seconds``, the wall time of its evaluation (reading its data, encoding, mteb's scoring) as it
ran. A task of the selection that the record has (status ok) costs its measured seconds; one it
lacks costs its estimate times ``scale``, the record's seconds per character-equivalent over the
selected tasks it has (the sum of their seconds over the sum of their estimates), so that both
are in seconds. Without such a task the scale is 1 / CHARS_PER_SECOND. The first task a process
runs also pays the imports of mteb's evaluators (a second or two on a CPU); a shard's first task
pays them too, so the measured seconds are kept as they are. Every shard reads the same file, so
every shard computes the same split.

The plan (:func:`shard_columns`) is recorded in the run record's ``shard`` block: each task's
cost, each shard's load, this shard's share of the total and the split's imbalance (the largest
load over the mean load; 1.00 is a perfect split).

Plain module: no pytest, no torch; mteb's metadata is read only for mteb tasks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.spec import TaskSpec

TEXT_OVERHEAD = 32
"""Characters a text costs beyond its own (special tokens, padding, a call's bookkeeping)."""
TASK_OVERHEAD = 1_200
"""What every task costs beyond encoding: reading its data, mteb's evaluator, the results."""
KMEANS_RUN = 2_700
"""One of mteb's k-means runs (16,384 points; fast clustering runs ``n_clusters`` of them)."""
CLUSTERING_RUNS = 10  # mteb's AbsTaskClustering.n_clusters
CLASSIFIER_RUN = 500
"""One logistic regression of a classification task (it runs ``n_experiments`` of them)."""
CLASSIFIER_RUNS = 10  # mteb's AbsTaskClassification.n_experiments
QUERY_COST = 40
"""One retrieval or reranking query's top 1,000 and metrics."""
PAIRS_PER_UNIT = 1_500
"""Query x document similarities that cost one character-equivalent."""
CHARS_PER_SECOND = 20_000
"""Character-equivalents encoded per second where the constants were fitted (the scale of an
estimate when no measured task gives one)."""

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*\Z")
_COSTS_FLAG = "--koembed-shard-costs"


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
    evaluation: int = 0  # the task type's own evaluation (k-means, classifiers, scoring)
    overhead: int = TASK_OVERHEAD

    @property
    def estimate(self) -> int:
        return self.characters + TEXT_OVERHEAD * self.texts + self.overhead + self.evaluation


def evaluation_cost(kind: str, sizes: Mapping[str, int]) -> int:
    """The evaluation term of a task of type ``kind`` (mteb's type name, or ``ClusteringLegacy``)
    with ``sizes``: ``runs`` (k-means or classifier runs; legacy clustering: its sets),
    ``queries``, ``pairs`` (query x document pairs scored)."""
    if kind in ("Clustering", "ClusteringLegacy"):
        default = CLUSTERING_RUNS if kind == "Clustering" else 1
        return KMEANS_RUN * int(sizes.get("runs") or default)
    if kind == "Classification":
        return CLASSIFIER_RUN * int(sizes.get("runs") or CLASSIFIER_RUNS)
    if kind in ("Retrieval", "Reranking"):
        queries, pairs = int(sizes.get("queries") or 0), int(sizes.get("pairs") or 0)
        return QUERY_COST * queries + pairs // PAIRS_PER_UNIT
    return 0


def _mteb_sizes(task: Any, split: Mapping[str, Any]) -> tuple[str, dict[str, int]]:
    """The type and evaluation sizes of an mteb task from its class and split statistics."""
    kind = str(getattr(task.metadata, "type", "") or "")
    sizes: dict[str, int] = {}
    if kind == "Clustering":
        if hasattr(task, "n_clusters"):
            sizes["runs"] = int(task.n_clusters)
        else:
            kind = "ClusteringLegacy"
    elif kind == "Classification":
        sizes["runs"] = int(getattr(task, "n_experiments", CLASSIFIER_RUNS) or CLASSIFIER_RUNS)
    elif kind in ("Retrieval", "Reranking"):
        queries = int(split.get("num_queries") or 0)
        documents = int(split.get("num_documents") or 0)
        top = split.get("top_ranked_statistics")
        ranked = top.get("num_top_ranked") if isinstance(top, Mapping) else None
        sizes = {"queries": queries, "pairs": int(ranked or queries * documents)}
    return kind, sizes


def _metadata_cost(spec: TaskSpec) -> TaskCost | None:
    try:
        import mteb

        task = mteb.get_task(spec.task)
        stats = task.metadata.descriptive_stats
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
    kind, sizes = _mteb_sizes(task, split)
    return TaskCost(texts, int(characters), "mteb metadata", evaluation_cost(kind, sizes))


def _file_sizes(kind: str, lines: Mapping[str, list[str]]) -> tuple[str, dict[str, int]]:
    """The type and evaluation sizes of a local layout from its files' lines."""
    if kind == "Clustering":
        sets = {json.loads(line).get("set") for line in lines.get("texts.jsonl", [])}
        if sets - {None}:
            return "ClusteringLegacy", {"runs": len(sets)}
        return kind, {"runs": CLUSTERING_RUNS}
    if kind in ("Retrieval", "Reranking"):
        queries = len(lines.get("queries.jsonl", []))
        pairs = queries * len(lines.get("corpus.jsonl", []))
        if "candidates.jsonl" in lines:
            found = (json.loads(line).get("doc_ids") for line in lines["candidates.jsonl"])
            pairs = sum(len(ids) for ids in found if isinstance(ids, list))
        return kind, {"queries": queries, "pairs": pairs}
    return kind, {}


def _files_cost(directory: Path, kind: str) -> TaskCost | None:
    if not directory.is_dir():
        return None
    texts = characters = 0
    lines: dict[str, list[str]] = {}
    for path in sorted(directory.glob("*.jsonl")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        lines[path.name] = [line for line in text.splitlines() if line.strip()]
        if path.name in ("qrels.jsonl", "candidates.jsonl"):
            continue
        count = len(lines[path.name])
        texts += 2 * count if path.name == "pairs.jsonl" else count
        characters += len(text)
    if not texts:
        return None
    try:
        kind, sizes = _file_sizes(kind, lines)
    except (ValueError, AttributeError):  # a malformed line fails later, with its own error
        sizes = {}
    return TaskCost(texts, characters, "local files", evaluation_cost(kind, sizes))


def _kind_of(spec: TaskSpec) -> str:
    """A task's type: a custom task's own, else mteb's (empty when mteb does not know it)."""
    if spec.custom_type:
        return spec.custom_type
    try:
        import mteb

        return str(mteb.get_task(spec.task).metadata.type)
    except Exception:
        return ""


def task_cost(spec: TaskSpec, data_dir: Path | None) -> TaskCost | None:
    """The estimated cost of one task, or None when neither metadata nor files tell."""
    from pytest_koembed.data.layout import layout_dir

    cost = None if spec.is_custom else _metadata_cost(spec)
    root = spec.data_dir if spec.is_custom and spec.data_dir is not None else data_dir
    if cost is None and root is not None:
        directory = layout_dir(root, spec.task, spec.subset, spec.split)
        cost = _files_cost(directory, _kind_of(spec)) if directory.is_dir() else None
    return cost


def estimate_costs(specs: Sequence[TaskSpec], data_dir: Path | None) -> dict[str, TaskCost]:
    """column -> cost of each task; unknown ones get the mean of the known ones (1 if none)."""
    known = {spec.column: task_cost(spec, data_dir) for spec in specs}
    values = [c for c in known.values() if c is not None]
    mean = round(sum(c.estimate for c in values) / len(values)) if values else 1
    fallback = TaskCost(0, 0, "mean of the others", overhead=mean)
    return {column: cost or fallback for column, cost in known.items()}


def assign(costs: Mapping[str, float], count: int) -> list[list[str]]:
    """The columns of each of ``count`` shards (in the order of ``costs``): greedy LPT.

    Deterministic: ties in cost keep the order of ``costs``, ties in load go to the lower shard.
    """
    columns = list(costs)
    order = sorted(columns, key=lambda c: -costs[c])  # stable: equal costs keep their order
    loads = [0.0] * count
    chosen: list[set[str]] = [set() for _ in range(count)]
    for column in order:
        shard = min(range(count), key=lambda s: (loads[s], s))
        loads[shard] += max(float(costs[column]), 0.0)
        chosen[shard].add(column)
    return [[c for c in columns if c in part] for part in chosen]


# ---------------------------------------------------------------------------------------------
# Measured costs: --koembed-shard-costs RECORD
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuredCosts:
    """The per-task seconds of an earlier run record (``--koembed-shard-costs``)."""

    path: str  # as given (the ini's resolved against the ini file)
    seconds: dict[str, float] = field(default_factory=dict)  # column -> seconds, tasks ok


def read_cost_record(path: str, suite: str) -> MeasuredCosts:
    """The measured seconds of run record ``path`` of suite ``suite``; a one-line KoembedError
    for a missing or unreadable file, one that is not a run record, one of another suite or one
    without per-task seconds."""
    where = f"{_COSTS_FLAG} {path}"
    fix = "give the --koembed-json record of an earlier run of this suite"
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KoembedError(f"{where}: no such file; {fix}, or leave the option out") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KoembedError(f"{where}: cannot read it ({exc}); {fix}") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KoembedError(f"{where}: not JSON ({exc.msg}, line {exc.lineno}); {fix}") from None
    tasks = record.get("tasks") if isinstance(record, dict) else None
    block = record.get("suite") if isinstance(record, dict) else None
    if not isinstance(tasks, list) or not isinstance(block, Mapping):
        raise KoembedError(
            f"{where}: not a run record (expected a JSON object with 'suite' and 'tasks'); {fix}"
        )
    if block.get("name") != suite:
        raise KoembedError(
            f"{where}: a record of suite {block.get('name')!r}, not of this run's suite "
            f"{suite!r}; give a record of a --koembed-suite={suite} run"
        )
    seconds = {
        str(t["column"]): round(float(t["seconds"]), 3)
        for t in tasks
        if isinstance(t, Mapping)
        and t.get("status", "ok") == "ok"
        and isinstance(t.get("column"), str)
        and isinstance(t.get("seconds"), (int, float))
        and not isinstance(t.get("seconds"), bool)
        and t["seconds"] > 0
    }
    if not seconds:
        raise KoembedError(
            f"{where}: no task with measured seconds (no task of status ok with 'seconds' > 0); "
            f"{fix} that scored tasks"
        )
    return MeasuredCosts(path=path, seconds=seconds)


def planned_costs(
    estimates: Mapping[str, TaskCost], measured: MeasuredCosts | None
) -> tuple[dict[str, float], dict[str, Any]]:
    """column -> the cost the split uses, and how it was made (the plan's ``costs`` fields)."""
    units = {c: float(cost.estimate) for c, cost in estimates.items()}
    if measured is None:
        return units, {"from": "estimate", "unit": "character-equivalents"}
    have = [c for c in units if c in measured.seconds]
    total = sum(units[c] for c in have)
    scale = sum(measured.seconds[c] for c in have) / total if have and total else 0.0
    scale = scale or 1 / CHARS_PER_SECOND
    costs = {c: measured.seconds.get(c, round(units[c] * scale, 3)) for c in units}
    how = {
        "from": "measured",
        "record": measured.path,
        "unit": "seconds",
        "measured": have,
        "seconds_per_unit": scale,
    }
    return costs, how


def shard_columns(
    specs: Sequence[TaskSpec],
    shard: Shard,
    data_dir: Path | None,
    measured: MeasuredCosts | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """This shard's columns among ``specs`` (the selected tasks, in suite order) and the record's
    ``shard`` block: ``{index, count, tasks, selected, estimated_cost, plan}``; ``plan`` holds
    the costs the split used (``cost``, with ``from``, ``unit`` and for measured costs
    ``record``, ``measured`` and ``seconds_per_unit``), each shard's ``loads``, this shard's
    ``share`` of the total and the split's ``imbalance`` (max load / mean load)."""
    estimates = estimate_costs(specs, data_dir)
    costs, how = planned_costs(estimates, measured)
    parts = assign(costs, shard.count)
    mine = parts[shard.index - 1]
    loads = [round(sum(costs[c] for c in part), 3) for part in parts]
    total = sum(loads)
    plan = {
        **how,
        "cost": costs,
        "loads": loads,
        "share": loads[shard.index - 1] / total if total else 0.0,
        "imbalance": max(loads) * shard.count / total if total else 1.0,
    }
    block = {
        "index": shard.index,
        "count": shard.count,
        "tasks": mine,
        "selected": [spec.column for spec in specs],
        "estimated_cost": {c: estimates[c].estimate for c in mine},
        "plan": plan,
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
