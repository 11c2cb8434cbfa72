"""``koembed rescore DIR``: leaderboard rows from mteb result files a model already has.

Reads every ``*.json`` under DIR (``model_meta.json`` aside), in either shape mteb has written:

- **mteb >= 1.11 (and 2.x)**: ``{"task_name", "dataset_revision", "mteb_version", "evaluation_time",
  "scores": {split: [{"hf_subset", "languages", "main_score", <metric>: value, ...}]}}``.
- **mteb < 1.11**: ``{"mteb_dataset_name", "dataset_revision", "mteb_version", split: {...}}`` where
  a split holds the scores directly (a dataset without subsets) or one dict per subset
  (``"test": {"ko-ko": {...}}``), with ``evaluation_time`` inside the split, and scores grouped by
  similarity (``"cos_sim": {"pearson": ..}``, ``"max": {"ap": ..}``) instead of flat keys
  (``cosine_pearson``, ``max_ap``). Early 1.1x pair-classification files nest the same way inside
  ``scores`` entries. Both are flattened to mteb 2.x key names (``cos_sim`` -> ``cosine``).

Files are grouped by folder: one folder (``results/<org__model>/<revision>/`` in mteb's layout) is
one model, named by its ``model_meta.json``, else by the folder names. For each suite task the
entry of the suite's split and ``hf_subset`` is taken (``STS17`` ``ko-ko``, ``BelebeleRetrieval``
``kor_Hang-kor_Hang``, PawsX ``test`` only, Ko-StrategyQA ``dev``, ...) and scored by the suite's
value rule, as a run would be. No pytest, no mteb, no torch.

**Pair de-duplication.** The leaderboard counts a repeated pair ((A, B) or (B, A)) once in its STS
and pair-classification (NLI) datasets; mteb does not, so values from mteb's own result files are
not quite what the leaderboard's rule gives. Such values are marked ``†`` in the tables (with a
footnote) and ``"pairs_deduplicated": false`` in ``--json``. A result written by pytest-koembed
(``--koembed-results-dir``) is known to be de-duplicated: its folder's ``koembed.jsonl`` has a line
for the task. How much the difference can be is measured in ``benchmarks/dedup_effect.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.scoring import task_value
from pytest_koembed.protocol.spec import Suite
from pytest_koembed.protocol.tables import WEIGHTED_HEADER, Entry, Table
from pytest_koembed.reports.publish import PROVENANCE_FILE, rows_markdown, run_tables

# Categories scored on sentence pairs, which the leaderboard de-duplicates.
PAIR_CATEGORIES = ("STS", "NLI")
NOT_DEDUPLICATED_MARK = "†"
NOT_DEDUPLICATED_NOTE = (
    f"{NOT_DEDUPLICATED_MARK} from an mteb result file made without the leaderboard's pair "
    "de-duplication (a pair repeated as (A, B) or (B, A) counts once there; mteb counts every "
    "one), so it can differ slightly from the leaderboard's rule; averages that include such a "
    "value carry the mark too. Files written by pytest --koembed-results-dir (with their "
    f"{PROVENANCE_FILE}) are de-duplicated."
)

# Keys of an old (< 1.11) split or entry whose dict values are score groups, not subsets.
SCORE_GROUPS = {
    "cos_sim": "cosine",
    "cosine": "cosine",
    "euclidean": "euclidean",
    "manhattan": "manhattan",
    "dot": "dot",
    "max": "max",
    "similarity": "similarity",
}
_BOOKKEEPING = {"hf_subset", "languages", "mteb_version", "evaluation_time", "main_score_name"}
_LEGACY_TOP = {
    "dataset_revision",
    "mteb_dataset_name",
    "mteb_version",
    "evaluation_time",
    "kg_co2_emissions",
}


@dataclass(frozen=True)
class ResultEntry:
    """The scores of one split and subset of a result file (mteb 2.x key names)."""

    split: str
    subset: str
    scores: dict[str, float | None]


@dataclass(frozen=True)
class ResultFile:
    path: Path
    task_name: str
    shape: str  # "mteb>=1.11" or "mteb<1.11"
    entries: tuple[ResultEntry, ...]

    def entry(self, split: str, subset: str) -> ResultEntry | None:
        for e in self.entries:
            if e.split == split and e.subset == subset:
                return e
        return None


def _flatten(scores: Mapping[str, Any]) -> dict[str, float | None]:
    """Metric values under mteb 2.x names: nested groups flattened, ``cos_sim_*`` -> ``cosine_*``.

    Bookkeeping keys and non-numeric values (lists such as ``v_measures``, strings) are dropped;
    non-finite numbers and nulls become None.
    """
    flat: dict[str, float | None] = {}

    def put(key: str, value: Any) -> None:
        if value is None:
            flat.setdefault(key, None)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[key] = float(value) if math.isfinite(value) else None

    for key, value in scores.items():
        if key in _BOOKKEEPING:
            continue
        if isinstance(value, Mapping):
            prefix = SCORE_GROUPS.get(key, key)
            for sub, sub_value in value.items():
                put(f"{prefix}_{sub}", sub_value)
        elif key.startswith("cos_sim_"):
            put("cosine_" + key[len("cos_sim_") :], value)
        else:
            put(key, value)
    return flat


def _parse_new(data: Mapping[str, Any], where: str) -> tuple[ResultEntry, ...]:
    scores = data.get("scores")
    if not isinstance(scores, Mapping):
        raise KoembedError(f"{where}: 'scores' must be an object of splits")
    entries = []
    for split, items in scores.items():
        if isinstance(items, Mapping):  # tolerate {split: {subset: scores}}
            items = [{**v, "hf_subset": k} for k, v in items.items() if isinstance(v, Mapping)]
        if not isinstance(items, list):
            raise KoembedError(f"{where}: scores[{split!r}] must be a list of score objects")
        for item in items:
            if not isinstance(item, Mapping):
                raise KoembedError(f"{where}: scores[{split!r}] holds a non-object entry")
            subset = str(item.get("hf_subset") or "default")
            entries.append(ResultEntry(str(split), subset, _flatten(item)))
    return tuple(entries)


def _parse_legacy(data: Mapping[str, Any], where: str) -> tuple[ResultEntry, ...]:
    entries = []
    for split, body in data.items():
        if split in _LEGACY_TOP:
            continue
        if not isinstance(body, Mapping):
            raise KoembedError(f"{where}: split {split!r} must be an object of scores")
        subsets = {
            k: v for k, v in body.items() if isinstance(v, Mapping) and k not in SCORE_GROUPS
        }
        if subsets:
            for subset, scores in subsets.items():
                entries.append(ResultEntry(str(split), str(subset), _flatten(scores)))
        else:
            entries.append(ResultEntry(str(split), "default", _flatten(body)))
    return tuple(entries)


def read_result_file(path: Path) -> ResultFile:
    """Read one mteb result file of either shape; a one-line :class:`KoembedError` if unusable."""
    where = f"mteb result file {str(path)!r}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KoembedError(f"cannot read {where}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KoembedError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise KoembedError(f"{where}: expected a JSON object")
    if isinstance(data.get("task_name"), str) and "scores" in data:
        return ResultFile(path, data["task_name"], "mteb>=1.11", _parse_new(data, where))
    if isinstance(data.get("mteb_dataset_name"), str):
        return ResultFile(path, data["mteb_dataset_name"], "mteb<1.11", _parse_legacy(data, where))
    raise KoembedError(
        f"{where} is not an mteb result (no 'task_name' + 'scores', nor 'mteb_dataset_name')"
    )


@dataclass
class ModelResults:
    """The result files of one folder: one model (at one revision)."""

    name: str
    directory: Path
    files: dict[str, ResultFile] = field(default_factory=dict)  # by task name
    # tasks whose pairs pytest-koembed de-duplicated (lines of the folder's koembed.jsonl)
    deduplicated: frozenset[str] = frozenset()


def deduplicated_tasks(directory: Path) -> frozenset[str]:
    """Task names that ``DIR/koembed.jsonl`` (written by ``--koembed-results-dir``) vouches for.

    Every pytest-koembed run de-duplicates pairs; its provenance line for a task carries the
    number it dropped. Unreadable lines are ignored (the task then counts as not de-duplicated).
    """
    path = directory / PROVENANCE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return frozenset()
    names = set()
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (
            isinstance(item, dict)
            and isinstance(item.get("task_name"), str)
            and isinstance(item.get("duplicates_dropped"), int)
            and not isinstance(item.get("duplicates_dropped"), bool)
        ):
            names.add(item["task_name"])
    return frozenset(names)


def _folder_model_name(directory: Path, root: Path) -> str:
    meta = directory / "model_meta.json"
    if meta.is_file():
        try:
            name = json.loads(meta.read_text(encoding="utf-8")).get("name")
        except (OSError, json.JSONDecodeError, AttributeError):
            name = None
        if isinstance(name, str) and name.strip():
            return name.strip()
    # results/<org__model>/<revision>/ (mteb >= 1.11) or results/<org__model>/ (older)
    for candidate in (directory, directory.parent):
        if "__" in candidate.name:
            return candidate.name.replace("__", "/")
    return directory.name or root.resolve().name


def collect_results(directory: Path) -> list[ModelResults]:
    """Every mteb result file under ``directory``, grouped by folder (sorted by path)."""
    root = Path(directory)
    if not root.is_dir():
        raise KoembedError(f"{str(root)!r} is not a directory of mteb result files")
    paths = sorted(
        p
        for p in root.rglob("*.json")
        if p.is_file() and p.name != "model_meta.json" and not p.name.startswith(".")
    )
    if not paths:
        raise KoembedError(f"no mteb result files (*.json) under {str(root)!r}")
    groups: dict[Path, ModelResults] = {}
    for path in paths:
        result = read_result_file(path)
        group = groups.get(path.parent)
        if group is None:
            group = ModelResults(
                _folder_model_name(path.parent, root),
                path.parent,
                deduplicated=deduplicated_tasks(path.parent),
            )
            groups[path.parent] = group
        if result.task_name in group.files:
            other = group.files[result.task_name].path.name
            raise KoembedError(
                f"{path.parent}: two result files for task {result.task_name!r} "
                f"({other} and {path.name}); keep one"
            )
        group.files[result.task_name] = result
    return list(groups.values())


@dataclass
class ModelScores:
    """One model's leaderboard values over a suite, and what is missing."""

    name: str
    directory: Path
    values: dict[str, float | None]  # column -> value x100 (None: missing)
    missing: dict[str, str]  # column -> why
    notes: list[str]
    ignored: list[str]  # task names of files outside the suite
    # pair-task (STS, NLI) columns with a value -> whether its pairs were de-duplicated as the
    # leaderboard does (False: an mteb result file, which counts repeated pairs)
    pairs_deduplicated: dict[str, bool] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # column -> result file used

    @property
    def not_deduplicated(self) -> list[str]:
        """The columns to mark: pair-task values from files made without de-duplication."""
        return [c for c, done in self.pairs_deduplicated.items() if not done]


def score_model(results: ModelResults, suite: Suite) -> ModelScores:
    """The suite's task values from one model's result files."""
    values: dict[str, float | None] = {}
    missing: dict[str, str] = {}
    notes: list[str] = []
    deduplicated: dict[str, bool] = {}
    files: dict[str, str] = {}
    for spec in suite.tasks:
        values[spec.column] = None
        result = results.files.get(spec.task)
        if result is None:
            missing[spec.column] = f"no result file for task {spec.task}"
            continue
        files[spec.column] = str(result.path)
        if spec.benchmark is not None:  # mteb's score of the task: main_score over its cells
            cells = [result.entry(split, subset) for subset, split in spec.cells]
            mains = [None if e is None else e.scores.get("main_score") for e in cells]
            if any(m is None for m in mains):
                lacking = [
                    f"{sub}/{split}"
                    for (sub, split), m in zip(spec.cells, mains, strict=True)
                    if m is None
                ]
                missing[spec.column] = (
                    f"{result.path.name} has no main_score for subset/split {', '.join(lacking)}"
                )
                continue
            values[spec.column] = 100 * math.fsum(mains) / len(mains)  # type: ignore[arg-type]
            continue
        entry = result.entry(spec.split, spec.subset)
        if entry is None:
            have = ", ".join(sorted({f"{e.split}/{e.subset}" for e in result.entries})) or "none"
            missing[spec.column] = (
                f"{result.path.name} has no scores for split {spec.split!r}, hf_subset "
                f"{spec.subset!r} (has {have})"
            )
            continue
        scores = {k: v for k, v in entry.scores.items() if v is not None}
        if spec.value_rule == "sts-mean8":
            for key in ("pearson", "spearman"):
                if key not in scores and f"cosine_{key}" in scores:
                    scores[key] = scores[f"cosine_{key}"]
                    notes.append(
                        f"{spec.column}: {result.path.name} has no {key!r} (written by mteb "
                        f"before it scored the model's own similarity); cosine_{key} used"
                    )
        try:
            values[spec.column] = task_value(spec.value_rule, scores)
        except KoembedError as exc:
            missing[spec.column] = f"{result.path.name}: {exc}"
            continue
        if spec.category in PAIR_CATEGORIES:
            deduplicated[spec.column] = spec.task in results.deduplicated
    known = {spec.task for spec in suite.tasks}
    ignored = sorted(name for name in results.files if name not in known)
    return ModelScores(
        results.name,
        results.directory,
        values,
        missing,
        notes,
        ignored,
        pairs_deduplicated=deduplicated,
        files=files,
    )


def mark_not_deduplicated(
    tables: Sequence[Table], suite: Suite, models: Sequence[ModelScores]
) -> list[Table]:
    """The tables with :data:`NOT_DEDUPLICATED_MARK` on every run cell that rests on a pair-task
    value made without de-duplication: the task's cell, its category average, the weighted
    average."""
    category_of = {t.column: t.category for t in suite.tasks}
    marked_by_name: dict[str, set[str]] = {}
    for m in models:
        columns = set(m.not_deduplicated)
        if not columns:
            continue
        categories = {category_of[c] for c in columns}
        marked_by_name[m.name] = columns | {f"{c}_Average" for c in categories} | {WEIGHTED_HEADER}
    if not marked_by_name:
        return list(tables)
    out = []
    for table in tables:
        rows = [list(r) for r in table.rows]
        for i in table.runs:
            wanted = marked_by_name.get(rows[i][0].strip(), set())
            for j, head in enumerate(table.header):
                if head in wanted and rows[i][j] not in ("", "-"):
                    rows[i][j] += NOT_DEDUPLICATED_MARK
        out.append(replace(table, rows=tuple(tuple(r) for r in rows)))
    return out


@dataclass
class Rescored:
    """What ``koembed rescore`` prints: the rows (stdout) and the notes (stderr)."""

    text: str
    notes: list[str]
    models: list[ModelScores]
    suite: Suite | None = None

    def to_json(self) -> dict[str, Any]:
        """What ``--json`` writes: per model and task, the value and where it came from."""
        tasks = self.suite.tasks if self.suite is not None else ()
        return {
            "suite": self.suite.name if self.suite is not None else None,
            "models": [
                {
                    "name": m.name,
                    "directory": str(m.directory),
                    "tasks": [
                        {
                            "column": spec.column,
                            "task": spec.task,
                            "category": spec.category,
                            "value": m.values.get(spec.column),
                            "file": m.files.get(spec.column),
                            "missing": m.missing.get(spec.column),
                            # null: not a pair task, or no value
                            "pairs_deduplicated": m.pairs_deduplicated.get(spec.column),
                        }
                        for spec in tasks
                    ],
                    "ignored": list(m.ignored),
                }
                for m in self.models
            ],
            "notes": list(self.notes),
        }


def _model_notes(m: ModelScores, suite: Suite) -> list[str]:
    """What the notes say of one model: its own notes, the files made without the leaderboard's
    de-duplication, its missing tasks, its result files outside the suite."""
    label = f"{m.name} ({m.directory})"
    notes = [f"{label}: {n}" for n in m.notes]
    if m.not_deduplicated:
        notes.append(
            f"{label}: {', '.join(m.not_deduplicated)} from mteb result files made without "
            f"the leaderboard's pair de-duplication (marked {NOT_DEDUPLICATED_MARK})"
        )
    if m.missing:
        notes.append(
            f"{label}: {len(m.missing)} of {len(suite.tasks)} tasks missing: "
            + "; ".join(f"{c} ({why})" for c, why in m.missing.items())
        )
    if m.ignored:
        notes.append(
            f"{label}: ignored result files of tasks outside the suite: " + ", ".join(m.ignored)
        )
    return notes


def rescore(
    directory: Path,
    suite: Suite,
    *,
    allow_partial: bool = False,
    scheme: str | None = None,
    table: str = "all",
    name: str | None = None,
) -> Rescored:
    """Leaderboard rows for every model folder under ``directory``.

    A suite task with no usable result is listed in the notes. Without ``allow_partial`` its
    cell, its category average and the weighted average show ``-`` (no average over partial
    data). With ``allow_partial`` the tables cover only the tasks every model has, and the
    published rows are re-averaged over those same tasks so that ranks compare like with like.
    Raises :class:`KoembedError` when nothing under ``directory`` belongs to the suite.
    """
    groups = collect_results(directory)
    if name is not None and len(groups) > 1:
        raise KoembedError(f"--name names one model, but {directory} holds {len(groups)} folders")
    scored = [score_model(g, suite) for g in groups]
    models = [m for m in scored if any(v is not None for v in m.values.values())]
    if not models:
        tasks = ", ".join(sorted({t for g in groups for t in g.files}))
        reasons = "; ".join(f"{c}: {why}" for c, why in list(scored[0].missing.items())[:3])
        raise KoembedError(
            f"no result under {directory} scores a task of suite {suite.name!r} (found tasks: "
            f"{tasks}; e.g. {reasons})"
        )
    if name is not None:
        models[0].name = name
    notes: list[str] = [
        f"{m.directory}: no result for a task of suite {suite.name!r}; skipped"
        for m in scored
        if all(m is not kept for kept in models)
    ]
    notes += [note for m in models for note in _model_notes(m, suite)]
    seen: set[str] = set()
    for m in models:  # one model at two revisions: tell the rows apart
        if m.name.casefold() in seen:
            m.name = f"{m.name} ({m.directory.name})"
        seen.add(m.name.casefold())
    runs = [Entry(m.name, m.values, is_run=True) for m in models]
    incomplete = any(m.missing for m in models)
    if incomplete and allow_partial:
        columns = [
            t.column for t in suite.tasks if all(m.values[t.column] is not None for m in models)
        ]
        tables = run_tables(suite, runs, scheme=scheme, table=table, columns=columns)
        notes.append(
            f"--allow-partial: averages over the {len(columns)} of {len(suite.tasks)} tasks "
            "every model has; the published rows are re-averaged over the same tasks"
        )
    else:
        tables = run_tables(suite, runs, scheme=scheme, table=table)
        if incomplete:
            notes.append(
                "no average over partial data: incomplete categories and the weighted average "
                "show '-' (pass --allow-partial to average over the tasks present)"
            )
    tables = mark_not_deduplicated(tables, suite, models)
    text = rows_markdown(tables)
    if any(NOT_DEDUPLICATED_MARK in cell for t in tables for r in t.rows for cell in r):
        text += f"\n{NOT_DEDUPLICATED_NOTE}\n"
    return Rescored(text, notes, models, suite)
