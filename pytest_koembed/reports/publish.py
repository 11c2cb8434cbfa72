"""What a run publishes: leaderboard rows, model-card metadata, and mteb result files.

Plain functions over a run record (the JSON ``--koembed-json`` writes, see ``reports.run_record``):
no pytest, no mteb, no torch. The plugin calls :func:`write_reports` on the controller once the run
record is complete.

- **Rows** (``--koembed-row``): :func:`run_tables` / :func:`rows_markdown`. The run's row in each
  table of the leaderboard (the overall table, then one per category), ranked among the published
  baseline rows, in the leaderboard's own Markdown layout. Header and row lines are cut from the
  full table (baselines plus the run), so column widths are those of the leaderboard with the row
  added: the lines paste straight into it.
- **Model card** (``--koembed-model-index``, ``--koembed-model-card``): :func:`model_index` builds
  the ``model-index`` front matter of a Hugging Face model card, one result per task, shaped like
  the ones mteb used to write (task type; dataset name, type, config, split, revision; metrics).
  :func:`merge_model_card` puts it into an existing card and keeps the rest of the file
  byte-for-byte. Metrics per task, all x100 like the published cards (see :func:`task_metrics`).
- **mteb results** (``--koembed-results-dir``): :func:`write_results_dir` writes mteb's own
  ``TaskResult`` of every task (kept in the run record) in mteb's results layout,
  ``DIR/results/<org__model>/<revision>/<Task>.json`` plus ``model_meta.json``, so that
  ``mteb.ResultCache(DIR).load_results()`` reads them back.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.leaderboards import leaderboards_for_suite, load_leaderboard
from pytest_koembed.protocol.scoring import rule_keys
from pytest_koembed.protocol.spec import Suite
from pytest_koembed.protocol.tables import (
    Entry,
    Table,
    build_tables,
    entries_from_leaderboard,
    entry_from_run,
    layout_for,
    runs_join,
)

# ---------------------------------------------------------------------------------------------
# Model names
# ---------------------------------------------------------------------------------------------

NO_REVISION = "no_revision_available"  # what mteb files a model without a revision under


def _first(value: Any) -> Any:
    """A model-block field; under xdist a field that differed between workers is a list."""
    return value[0] if isinstance(value, list) and value else value


def mteb_model_name(model: Mapping[str, Any]) -> str:
    """The model's name as mteb files it: the Hub id, or a local directory's own name.

    ``model`` is the run record's ``model`` block. A Hub model's fingerprint is ``hub:<id>@...``;
    anything else given as a path (``/ckpt/step-1000``) is named after its last component.
    """
    name = str(_first(model.get("name")) or "").strip()
    fingerprint = str(_first(model.get("fingerprint")) or "")
    if fingerprint.startswith("hub:"):
        return fingerprint[len("hub:") :].split("@", 1)[0] or name
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path or (fingerprint and not fingerprint.startswith("hub:")):
        stripped = name.rstrip("/\\")
        return re.split(r"[/\\]", stripped)[-1] if stripped else "model"
    return name or str(_first(model.get("row_name")) or "model")


def mteb_revision(model: Mapping[str, Any]) -> str:
    revision = _first(model.get("revision"))
    return str(revision) if revision else NO_REVISION


def _model_block(record: Mapping[str, Any]) -> Mapping[str, Any]:
    model = record.get("model")
    if not isinstance(model, Mapping):
        raise KoembedError("run record: missing 'model' (the model block)")
    return model


def ok_tasks(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tasks = record.get("tasks")
    if not isinstance(tasks, list):
        raise KoembedError("run record: missing 'tasks' (a list of task results)")
    return [t for t in tasks if isinstance(t, Mapping) and t.get("status", "ok") == "ok"]


# ---------------------------------------------------------------------------------------------
# Leaderboard rows
# ---------------------------------------------------------------------------------------------


def run_tables(
    suite: Suite,
    runs: Sequence[Entry],
    *,
    scheme: str | None = None,
    table: str = "all",
    columns: Sequence[str] | None = None,
) -> list[Table]:
    """The leaderboard tables with ``runs`` ranked in; only the tables that hold a run row.

    Baselines are the suite's shipped leaderboards that take runs and rank the run's kind of
    model (for ``ko-leaderboard-v2`` the dense table, or the sparse one for a sparse run). A run
    *replaces* the published row of the same name (case-insensitive): a re-run of a published
    model is that model's new row, not a second one, and its rank is among the other models.
    ``columns`` restricts the tables to those task columns, and the published rows are then
    averaged over the same columns (``koembed rescore --allow-partial``).
    """
    keep = set(columns) if columns is not None else {t.column for t in suite.tasks}
    scoped = replace(suite, tasks=tuple(t for t in suite.tasks if t.column in keep))
    boards = [n for n in leaderboards_for_suite(suite.name) if layout_for(n).takes_runs]
    if not boards:
        return [t for t in build_tables(scoped, runs, table=table, scheme=scheme) if t.runs]
    tables: list[Table] = []
    everyone = runs
    for name in boards:
        # a sparse run joins the sparse table, a dense run the dense one
        runs = [run for run in everyone if runs_join(name, run.encoder_type)]
        if not runs:
            continue
        names = {run.name.casefold() for run in runs}
        board = load_leaderboard(name)
        entries = entries_from_leaderboard(board, suite)
        entries = [
            Entry(e.name, {c: v for c, v in e.values.items() if c in keep})
            for e in entries
            if e.name.casefold() not in names
        ]
        tables += build_tables(
            scoped, [*entries, *runs], table=table, scheme=scheme, layout=layout_for(name)
        )
    return [t for t in tables if t.runs]


def rows_markdown(tables: Sequence[Table]) -> str:
    """Each table's ``# heading``, header lines and run row(s), cut from the full table.

    The lines keep the full table's column widths, so they are the exact lines the leaderboard
    would show with the run added. Tables are separated by a blank line; final newline.
    """
    blocks = []
    for t in tables:
        lines = t.to_markdown().split("\n")
        picked = lines[:2] + [lines[2 + i] for i in t.runs]
        blocks.append("\n".join([f"# {t.heading}", *picked]))
    return "\n\n".join(blocks) + "\n"


def record_rows(record: Mapping[str, Any], suite: Suite) -> str:
    """The run's leaderboard rows (see :func:`rows_markdown`) under the record's scheme."""
    entry = entry_from_run(record, suite)
    scheme = record.get("scheme")
    tables = run_tables(suite, [entry], scheme=scheme if isinstance(scheme, str) else None)
    return rows_markdown(tables)


# ---------------------------------------------------------------------------------------------
# Model card: model-index
# ---------------------------------------------------------------------------------------------

CATEGORY_TASK_TYPES = {
    "STS": "STS",
    "NLI": "PairClassification",
    "Clustering": "Clustering",
    "Retrieval": "Retrieval",
    "Classification": "Classification",
    "Reranking": "Reranking",
}
"""mteb task type of each leaderboard category, for records that do not carry ``task_type``."""

RULE_NAMES = {
    "sts-mean8": "mean of the 8 STS correlations",
    "ndcg-5-10": "mean of ndcg_at_5 and ndcg_at_10",
}
"""How the model-index names a value rule (any other rule is a raw score key: its own name)."""

VALUE_METRIC = "koembed_value"
"""Metric type of the leaderboard value in the model-index (the same name as in JUnit XML)."""


def _x100(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value * 100.0 if math.isfinite(value) else None


def task_metrics(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The metrics listed for one task in the model-index, all x100, unrounded.

    In order: the leaderboard value (type ``koembed_value``, named after its rule), mteb's
    ``main_score``, the raw keys the value rule reads (the 8 STS keys, ``cosine_ap``,
    ``v_measure``, ``ndcg_at_5`` and ``ndcg_at_10``), then mteb's main-score key itself
    (``cosine_spearman``, ``max_ap``, ``ndcg_at_10``, ...) when the rule does not read it. Not the
    other ~100 retrieval metrics mteb computes: the run record and ``--koembed-results-dir`` keep
    those. Missing or non-finite scores are left out.
    """
    scores = task.get("scores") if isinstance(task.get("scores"), Mapping) else {}
    assert isinstance(scores, Mapping)
    rule = str(task.get("value_rule") or "")
    metrics: list[dict[str, Any]] = []
    value = task.get("value")
    if isinstance(value, (int, float)) and math.isfinite(value):
        described = RULE_NAMES.get(rule, rule)
        metrics.append(
            {
                "type": VALUE_METRIC,
                "value": float(value),
                "name": f"Korean leaderboard value: {described}",
            }
        )
    keys = ["main_score"]
    with contextlib.suppress(KoembedError):
        keys += list(rule_keys(rule))
    main_key = task.get("main_score")
    if isinstance(main_key, str):
        keys.append(main_key)
    for key in dict.fromkeys(keys):
        shown = _x100(scores.get(key))
        if shown is not None:
            metrics.append({"type": key, "value": shown})
    return metrics


def dataset_name(task: Mapping[str, Any]) -> str:
    """``MTEB <Task>``, with ``(<subset>)`` for a subset other than ``default`` (as mteb did)."""
    subset = str(task.get("subset") or "default")
    name = f"MTEB {task.get('task')}"
    return name if subset == "default" else f"{name} ({subset})"


def model_index_result(task: Mapping[str, Any]) -> dict[str, Any]:
    """One ``model-index`` result: task type, dataset, metrics (the seeds' key order)."""
    task_type = task.get("task_type") or CATEGORY_TASK_TYPES.get(str(task.get("category")))
    dataset: dict[str, Any] = {
        "type": task.get("dataset_path") or str(task.get("task")),
        "name": dataset_name(task),
        "config": str(task.get("subset") or "default"),
        "split": str(task.get("split")),
    }
    if task.get("dataset_revision"):
        dataset["revision"] = str(task["dataset_revision"])
    return {
        "task": {"type": str(task_type or task.get("category"))},
        "dataset": dataset,
        "metrics": task_metrics(task),
    }


def model_index(record: Mapping[str, Any]) -> dict[str, Any]:
    """``{"model-index": [{"name": ..., "results": [...]}]}`` for the run's scored tasks.

    The entry's name is the repository part of the name the summary, the rows and the chart
    show (the model's row name: ``KURE-v1`` for ``nlpai-lab/KURE-v1``, as on published cards;
    ``all-MiniLM-L6-v2`` for a local directory ``.../model`` whose card names it). Errored tasks
    are left out (they have no value).
    """
    model = _model_block(record)
    results = [model_index_result(t) for t in ok_tasks(record)]
    shown = str(_first(model.get("row_name")) or "").strip().rstrip("/")
    name = (shown or mteb_model_name(model)).rsplit("/", 1)[-1]
    return {"model-index": [{"name": name, "results": results}]}


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - a dependency of huggingface_hub and transformers
        raise KoembedError("writing model-card metadata needs PyYAML: pip install pyyaml") from None
    return yaml


def dump_yaml(data: Mapping[str, Any]) -> str:
    """Block-style YAML in the layout of published cards (keys in insertion order)."""
    text: str = _yaml().safe_dump(
        dict(data), sort_keys=False, allow_unicode=True, default_flow_style=False, width=4096
    )
    return text


def model_index_yaml(record: Mapping[str, Any]) -> str:
    """The ``model-index`` as YAML text (what ``--koembed-model-index`` writes)."""
    return dump_yaml(model_index(record))


def _result_key(result: Any) -> tuple[Any, ...]:
    if not isinstance(result, Mapping):
        return (id(result),)
    task = result.get("task") if isinstance(result.get("task"), Mapping) else {}
    data = result.get("dataset") if isinstance(result.get("dataset"), Mapping) else {}
    assert isinstance(task, Mapping) and isinstance(data, Mapping)
    return (task.get("type"), data.get("type"), data.get("config"), data.get("split"))


def merge_model_index(existing: Any, new: Mapping[str, Any]) -> list[Any]:
    """The card's ``model-index`` with the new results merged in.

    The new entry goes into the existing entry of the same name, or the only entry there is
    (keeping its name), else it is appended. Within that entry a result for the same task type,
    dataset type, config and split is replaced in place; other results are kept; new ones are
    appended. Raises :class:`KoembedError` when ``existing`` is not a list of entries.
    """
    new_entry = new["model-index"][0]
    if existing is None:
        return [copy.deepcopy(new_entry)]
    if not isinstance(existing, list) or not all(isinstance(e, Mapping) for e in existing):
        raise KoembedError("the card's model-index is not a list of entries; fix it by hand")
    merged = [dict(e) for e in existing]
    same = [e for e in merged if e.get("name") == new_entry["name"]]
    target = same[0] if same else (merged[0] if len(merged) == 1 else None)
    if target is None:
        merged.append(copy.deepcopy(new_entry))
        return merged
    results = list(target.get("results") or [])
    positions = {_result_key(r): i for i, r in enumerate(results)}
    for result in new_entry["results"]:
        key = _result_key(result)
        if key in positions:
            results[positions[key]] = copy.deepcopy(result)
        else:
            positions[key] = len(results)
            results.append(copy.deepcopy(result))
    target["results"] = results
    return merged


_TOP_KEY = re.compile(r"""^(?:model-index|"model-index"|'model-index')\s*:""")


def _split_front_matter(text: str) -> tuple[str, str, str, str] | None:
    """(opening line, front matter, closing line, rest) of a card, or None without front matter."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n").lstrip("\ufeff").rstrip() != "---":
        return None
    for i in range(1, len(lines)):
        if lines[i].rstrip("\r\n").rstrip() == "---":
            return lines[0], "".join(lines[1:i]), lines[i], "".join(lines[i + 1 :])
    raise KoembedError("the card's front matter has no closing '---' line")


def _replace_block(front: str, block: str) -> str:
    """Front matter text with its top-level ``model-index:`` block replaced by ``block``.

    The block runs from the key's line to the line before the next top-level key (a line that
    starts with neither a space, ``-`` nor ``#``); comments and blank lines at its end stay.
    Without such a key, ``block`` is appended.
    """
    lines = front.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _TOP_KEY.match(line)), None)
    if start is None:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += "\n"
        return "".join(lines) + block
    end = start + 1
    while end < len(lines):
        line = lines[end]
        if line.strip() and not line[0].isspace() and not line.startswith(("-", "#")):
            break
        end += 1
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1
    return "".join(lines[:start]) + block + "".join(lines[end:])


def merge_model_card(text: str, record: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The card ``text`` with the run's model-index merged into its front matter, and notes.

    Everything outside the ``model-index`` key stays as it was, byte-for-byte: the body, the other
    front-matter keys, their comments and line endings. A card without front matter gets one.
    If the card's front matter cannot be edited in place (flow style, odd layout) it is written
    back re-serialised, and a note says so. Raises :class:`KoembedError` if the front matter is
    not valid YAML or not a mapping.
    """
    yaml = _yaml()
    new = model_index(record)
    parts = _split_front_matter(text)
    if parts is None:
        block = dump_yaml(new)
        newline = "\r\n" if "\r\n" in text else "\n"
        if newline != "\n":
            block = block.replace("\n", newline)
        return f"---{newline}{block}---{newline}{text}", []
    opening, front, closing, rest = parts
    try:
        meta = yaml.safe_load(front) if front.strip() else {}
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise KoembedError(f"the card's front matter is not valid YAML: {reason}") from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise KoembedError("the card's front matter is not a YAML mapping")
    expected = dict(meta)
    expected["model-index"] = merge_model_index(meta.get("model-index"), new)
    block = dump_yaml({"model-index": expected["model-index"]})
    newline = "\r\n" if opening.endswith("\r\n") else "\n"
    if newline != "\n":
        block = block.replace("\n", newline)
    notes: list[str] = []
    edited = _replace_block(front, block)
    try:
        ok = yaml.safe_load(edited) == expected
    except yaml.YAMLError:
        ok = False
    if not ok:
        edited = dump_yaml(expected)
        if newline != "\n":
            edited = edited.replace("\n", newline)
        notes.append(
            "the card's front matter could not be edited in place and was re-serialised "
            "(its comments and formatting were not kept; the body is unchanged)"
        )
    return opening + edited + closing + rest, notes


# ---------------------------------------------------------------------------------------------
# mteb results folder
# ---------------------------------------------------------------------------------------------

PROVENANCE_FILE = "koembed.jsonl"
"""Next to the result files: one line per task saying where its rows came from. Not ``*.json``,
so mteb's cache (which reads every ``*/*/*.json``) ignores it."""

_SIMILARITIES = {"cosine", "dot", "euclidean", "manhattan"}
_FRAMEWORKS = {"sentence-transformers": "Sentence Transformers", "transformers": "Transformers"}


def model_meta(record: Mapping[str, Any]) -> dict[str, Any]:
    """``model_meta.json``: the keys of mteb's ``ModelMeta.to_dict()``, filled from the record.

    Less ``is_cross_encoder``, which mteb 2.26 writes but deprecates when it reads it back.
    """
    model = _model_block(record)
    name = mteb_model_name(model)
    similarity = _first(model.get("similarity")) or "cosine"
    loader = str(_first(model.get("loader")) or "")
    framework = _FRAMEWORKS.get(loader)
    hub = str(_first(model.get("fingerprint")) or "").startswith("hub:")
    uses_prompts = any(any(p for p in (t.get("prompts") or {}).values()) for t in ok_tasks(record))
    dimension = _first(model.get("dimension"))
    max_length = _first(model.get("max_length"))
    return {
        "loader_kwargs": {},
        "name": name,
        "revision": mteb_revision(model),
        "release_date": None,
        "languages": ["kor-Hang"],
        "n_parameters": None,
        "n_active_parameters_override": None,
        "n_embedding_parameters": None,
        "memory_usage_mb": None,
        "max_tokens": max_length if isinstance(max_length, int) else None,
        "embed_dim": dimension if isinstance(dimension, int) else None,
        "license": None,
        "open_weights": None,
        "public_training_code": None,
        "public_training_data": None,
        "framework": [framework] if framework else [],
        "reference": f"https://huggingface.co/{name}" if hub else None,
        "similarity_fn_name": similarity if similarity in _SIMILARITIES else None,
        "use_instructions": uses_prompts,
        "training_datasets": None,
        "adapted_from": None,
        "superseded_by": None,
        "modalities": ["text"],
        "model_type": ["dense"],
        "citation": None,
        "contacts": None,
        "experiment_kwargs": None,
        "output_dtypes": None,
        "extra_requirements_groups": None,
        "loader": None,
    }


def _round_floats(value: Any, ndigits: int) -> Any:
    if isinstance(value, float):
        return round(value, ndigits)
    if isinstance(value, dict):
        return {k: _round_floats(v, ndigits) for k, v in value.items()}
    if isinstance(value, list):
        return [_round_floats(v, ndigits) for v in value]
    return value


def mteb_file_json(mteb_result: Mapping[str, Any]) -> dict[str, Any]:
    """A ``TaskResult`` as mteb's ``TaskResult.to_disk`` writes it: the date as a POSIX
    timestamp and the scores rounded to 6 decimals."""
    data = copy.deepcopy(dict(mteb_result))
    date = data.get("date")
    if isinstance(date, str):
        try:
            data["date"] = datetime.fromisoformat(date.replace("Z", "+00:00")).timestamp()
        except ValueError:
            data["date"] = None
    if isinstance(data.get("scores"), dict):
        data["scores"] = _round_floats(data["scores"], 6)
    return data


def _file_mode(path: Path) -> int:
    """The mode a rewritten file keeps (its own), or what a new file gets under the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temp file and a rename; the file keeps its permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _provenance(task: Mapping[str, Any]) -> dict[str, Any]:
    source = str(task.get("source") or "")
    dropped = int(task.get("duplicates_dropped") or 0)
    notes = []
    if source.startswith("local:"):
        notes.append(
            "rows read from a local copy (--koembed-data-dir or a custom task), not downloaded "
            "from the dataset revision named in the result file"
        )
    if dropped:
        notes.append(
            f"{dropped} repeated pairs ((A, B) = (B, A)) dropped before scoring, as the "
            "leaderboard does"
        )
    return {
        "task_name": task.get("task"),
        "column": task.get("column"),
        "split": task.get("split"),
        "hf_subset": task.get("subset"),
        "source": source,
        "n_examples": task.get("n_examples"),
        "sizes": task.get("sizes"),
        "duplicates_dropped": dropped,
        "koembed_value": task.get("value"),
        "prompts": task.get("prompts"),
        "note": "; ".join(notes) or None,
    }


def results_model_dir(directory: Path, record: Mapping[str, Any]) -> Path:
    """``DIR/results/<org__model>/<revision>``: where mteb's cache keeps a model's results."""
    model = _model_block(record)
    name = mteb_model_name(model).replace("/", "__").replace(" ", "_")
    return Path(directory) / "results" / name / mteb_revision(model)


def write_results_dir(record: Mapping[str, Any], directory: Path) -> list[Path]:
    """Write the run's mteb results under ``DIR/results/<org__model>/<revision>/``.

    One ``<Task>.json`` per scored task (mteb's ``TaskResult`` exactly as the run produced it,
    written as mteb writes it), ``model_meta.json``, and :data:`PROVENANCE_FILE` (where each
    task's rows came from, how many repeated pairs were dropped). Existing files of other tasks
    stay. Returns the task files written. Raises :class:`KoembedError` when no task carries an
    mteb result (a record from before results were kept).
    """
    target = results_model_dir(directory, record)
    tasks = [t for t in ok_tasks(record) if isinstance(t.get("mteb_result"), Mapping)]
    if not tasks:
        raise KoembedError("the run record holds no mteb results (no task was scored)")
    written = []
    for task in tasks:
        data = mteb_file_json(task["mteb_result"])
        path = target / f"{data.get('task_name') or task['task']}.json"
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
        written.append(path)
    atomic_write_text(target / "model_meta.json", json.dumps(model_meta(record), indent=4) + "\n")
    provenance_path = target / PROVENANCE_FILE
    lines: dict[str, str] = {}
    if provenance_path.is_file():
        for line in provenance_path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(item, dict) and isinstance(item.get("task_name"), str):
                lines[item["task_name"]] = line
    for task in tasks:
        lines[str(task["task"])] = json.dumps(_provenance(task), ensure_ascii=False)
    atomic_write_text(provenance_path, "".join(line + "\n" for line in lines.values()))
    return written
