"""The run record (``--koembed-json``) and the terminal summary, built from TaskScores.

Plain functions: no pytest, no mteb, no torch.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import pandas as pd

from pytest_koembed._version import __version__
from pytest_koembed.protocol.averages import TaskCounts, average_fields, count_tasks
from pytest_koembed.protocol.scoring import SCHEMES
from pytest_koembed.protocol.spec import CATEGORIES, Suite
from pytest_koembed.records import TaskScore
from pytest_koembed.reports import text
from pytest_koembed.reports.verdicts_text import baseline_lines, gate_lines

VERSIONED_PACKAGES = ("mteb", "sentence-transformers", "transformers", "torch")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def _model_block(
    model: str, encoder_infos: list[dict[str, Any]], model_loads: int | None = None
) -> dict[str, Any]:
    """One description of the model; fields that differ between xdist workers become lists."""
    if not encoder_infos:
        return {"name": model, "row_name": model}
    block: dict[str, Any] = dict(encoder_infos[0])
    if model_loads is not None:
        block["model_loads"] = model_loads
    for key in block:
        values = []
        for info in encoder_infos:
            value = info.get(key)
            if value not in values:
                values.append(value)
        if len(values) > 1:
            block[key] = values  # e.g. device: ["cuda:0", "cuda:1"]
    block.setdefault("row_name", block.get("name", model))
    return block


def run_record(
    *,
    model: str,
    suite: Suite,
    scheme: str,
    scores: Mapping[str, TaskScore],
    encoder_infos: list[dict[str, Any]],
    selected: Iterable[str],
    started: float,
    complete: bool,
    interrupted: str | None = None,
    finished: float | None = None,
    baseline: Mapping[str, Any] | None = None,
    gates: Iterable[Mapping[str, Any]] = (),
    model_loads: int | None = None,
) -> dict[str, Any]:
    """Everything a run produced, as JSON-able data, tasks in suite order.

    ``model_loads``: how many processes loaded the model's weights (0 on a warm run whose every
    text came from the embedding cache; None for an encoder that does not say).

    ``complete``: every selected task reported and the session ended normally; ``interrupted``:
    why a session ended early (Ctrl-C, an internal error, ``-x``). ``baseline`` (what the run was
    compared with) and ``gates`` (the ``--koembed-fail-under`` results) come from
    ``gate.verdicts``; the counts and averages from ``protocol.averages``.
    """
    selected_set = set(selected) | set(scores)
    tasks = [scores[s.column].to_dict() for s in suite.tasks if s.column in scores]
    not_run = [s.column for s in suite.tasks if s.column in selected_set and s.column not in scores]
    deselected = [s.column for s in suite.tasks if s.column not in selected_set]
    counts = count_tasks(suite, {c: score.status for c, score in scores.items()}, selected_set)
    values = {c: score.value for c, score in scores.items() if score.status == "ok"}
    finished_ts = finished if finished is not None else datetime.now(timezone.utc).timestamp()
    return {
        "koembed_version": __version__,
        "complete": complete,
        "interrupted": interrupted,
        "started": _iso(started),
        "finished": _iso(finished_ts),
        "model": _model_block(model, encoder_infos, model_loads),
        "suite": {"name": suite.name, "path": str(suite.path), "tasks": len(suite.tasks)},
        "scheme": scheme,
        "scheme_description": SCHEMES[scheme].description,
        "versions": package_versions(),
        "tasks": tasks,
        "not_run": not_run,
        "deselected": deselected,
        **average_fields(suite, scheme, values, counts),
        "baseline": dict(baseline) if baseline is not None else None,
        "gates": [dict(g) for g in gates],
    }


def _value_cell(task: Mapping[str, Any]) -> tuple[str, str]:
    """A scored task's value and its interval (``"76.94"``, ``"±0.85"``), joined by
    :func:`_align_value_cells`."""
    value = task.get("value")
    ci = task.get("ci") if isinstance(value, (int, float)) else None
    return text.value(task["shown"]), text.value_interval(float(value), ci) if ci else ""


def _align_value_cells(rows: list[dict[str, Any]]) -> None:
    """Join each value with its interval, both parts padded, so that the numbers stay aligned
    on their decimal point when some tasks have no interval (or a ``[low, high]`` one)."""
    pairs = [r["value"] for r in rows if isinstance(r.get("value"), tuple)]
    width = max((len(v) for v, _ in pairs), default=0)
    ci_width = max((len(c) for _, c in pairs), default=0)
    for row in rows:
        if isinstance(row.get("value"), tuple):
            value, ci = row["value"]
            row["value"] = value.rjust(width) + (" " + ci.ljust(ci_width) if ci_width else "")
        elif ci_width and row.get("value") in ("ERROR", "NOT RUN"):
            row["value"] = row["value"].ljust(width + 1 + ci_width)


def _with_ci(shown: str, value: Any, ci: Any) -> str:
    """``shown`` followed by the interval of ``value``, when there is one."""
    if not isinstance(value, (int, float)) or not isinstance(ci, Mapping):
        return shown
    return f"{shown} {text.value_interval(float(value), ci)}"


def task_table(record: Mapping[str, Any]) -> pd.DataFrame:
    """One row per task; the columns baseline, delta and verdict when a baseline was in use."""
    rows = []
    for task in record["tasks"]:
        ok = task["status"] == "ok"
        baseline = task.get("baseline")
        rows.append(
            {
                "task": task["column"],
                "category": task["category"],
                "value": _value_cell(task) if ok else "ERROR",
                "baseline": "-" if baseline is None else text.value(baseline),
                "delta": _delta_cell(task),
                "p": text.p(task.get("p_adjusted", task.get("p_value"))),
                "MDE": text.mde(task.get("mde"), task.get("cannot_fail"))
                if task.get("p_value") is not None
                else "",
                "verdict": text.verdict_cell(task),
                "n": task["n_examples"] if ok else "",
                "dup": task["duplicates_dropped"] if ok else "",
                "seconds": text.seconds(task["seconds"]),
                "worker": task.get("worker") or "",
            }
        )
    for column in record["not_run"]:
        rows.append(
            {"task": column, "category": "", "value": "NOT RUN", "n": "", "dup": "", "seconds": ""}
        )
    _align_value_cells(rows)
    compared = any(t.get("verdict") or t.get("baseline") is not None for t in record["tasks"])
    verdict_columns = ["baseline", "delta", "verdict"] if compared else []
    paired = any(t.get("p_value") is not None for t in record["tasks"])
    if paired:  # paired comparison: say which number is adjusted and which is not
        verdict_columns.insert(2, "p")
        verdict_columns.insert(3, "MDE")
    # Under pytest-xdist: which worker ran each task (live progress is shown in serial runs only).
    worker_columns = ["worker"] if any(t.get("worker") for t in record["tasks"]) else []
    columns = ["task", "category", "value", *verdict_columns, "n", "dup", "seconds"]
    columns += worker_columns
    table = pd.DataFrame(rows, columns=columns).fillna("")
    if paired:
        table = table.rename(columns={"delta": text.DELTA_HEADER, "p": text.P_HEADER})
    return table


def _delta_cell(task: Mapping[str, Any]) -> str:
    """``+0.40``; paired: ``-0.42 [-1.10, +0.31]`` (the paired interval)."""
    delta, ci = task.get("delta"), task.get("delta_ci")
    if delta is None:
        return ""
    if task.get("p_value") is not None:
        return text.delta_interval(delta, (ci["low"], ci["high"]) if ci else None)
    return text.signed(delta)


def _aligned(table: pd.DataFrame, left: tuple[str, ...]) -> list[str]:
    """Text columns left-aligned, numbers right-aligned, two spaces apart."""
    cells = table.astype(str)
    widths = {c: max([len(c), *cells[c].str.len()]) for c in cells.columns}

    def line(values: dict[str, str]) -> str:
        parts = [
            values[c].ljust(widths[c]) if c in left else values[c].rjust(widths[c])
            for c in cells.columns
        ]
        return "  ".join(parts).rstrip()

    return [line({c: c for c in cells.columns})] + [
        line(row) for row in cells.to_dict(orient="records")
    ]


def _batch_note(model: Mapping[str, Any]) -> str:
    """The encode batch size used, and how often out-of-memory halved it."""
    size = model.get("batch_size")  # a list when xdist workers ended at different sizes
    if size is None:
        return ""
    retries = model.get("oom_retries") or 0
    if isinstance(retries, list):
        retries = sum(r or 0 for r in retries)
    if isinstance(size, list):
        size = "/".join(str(s) for s in size)
    halved = f", halved {retries}x after CUDA out-of-memory" if retries else ""
    return f", batch size {size}{halved}"


# Fields of the model line, in order: (run-record key, label).
_MODEL_FIELDS = (
    ("loader", "loader"),
    ("pooling", "pooling"),
    ("dtype", "dtype"),
    ("device", "device"),
    ("devices", "devices"),  # --koembed-devices: the pool's devices, "cuda:0,cuda:1"
    ("max_length", "max length"),
)
# What the name says of where it came from, when it is not the Hub id or the directory's name.
_NAME_SOURCES = {
    "model card": "name from its model card",
    "config.json _name_or_path": "name from config.json _name_or_path",
}
# Keys of a custom encoder's info that the model line never repeats.
_NOT_SHOWN = {"name", "row_name", "revision", "fingerprint", "path", "batch_size", "oom_retries"}
_BUILTIN_LOADERS = ("sentence-transformers", "sentence-transformers-sparse", "transformers")


def _shown(value: Any) -> str | None:
    """A field's text, or None when it is unknown (missing, None, empty or "?")."""
    if isinstance(value, list):  # differs between xdist workers
        parts = [_shown(v) for v in value]
        return "/".join(p or "?" for p in parts) if any(parts) else None
    if value is None or isinstance(value, (dict, tuple)) or str(value).strip() in ("", "?"):
        return None
    return str(value)


def model_line(model: Mapping[str, Any]) -> str:
    """``model: NAME (loader ..., pooling ..., ...)``: only the fields that are known.

    A custom encoder's own ``info`` keys are shown as it declares them.
    """
    name = model.get("row_name") or model.get("name")
    fields = []
    for key, label in _MODEL_FIELDS:
        field_text = _shown(model.get(key))
        if field_text is not None:
            fields.append(f"{label} {field_text}")
    if str(_first(model.get("loader"))) not in _BUILTIN_LOADERS:
        for key, value in model.items():
            field_text = _shown(value)
            if key in _NOT_SHOWN or key in dict(_MODEL_FIELDS) or field_text is None:
                continue
            fields.append(f"{key.replace('_', ' ')} {field_text}")
    batch = _batch_note(model).removeprefix(", ")
    if batch:
        fields.append(batch)
    described = ", ".join(fields)
    source = _NAME_SOURCES.get(str(model.get("name_source")))
    if source:
        described = f"{described}; {source}" if described else source
    return f"model: {name}" + (f" ({described})" if described else "")


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def texts_line(record: Mapping[str, Any]) -> str | None:
    """``texts: 1,234 encoded of 2,000 (38% reused)``: the run's encode-once counts (the tasks'
    ``texts`` fields summed), or None when no task has them."""
    counts = [t["texts"] for t in record["tasks"] if isinstance(t.get("texts"), Mapping)]
    if not counts:
        return None
    total = sum(int(c.get("total", 0)) for c in counts)
    encoded = sum(int(c.get("encoded", 0)) for c in counts)
    reused = total - encoded
    percent = text.percent(reused, total)
    line = f"texts: {encoded:,} encoded of {total:,} ({percent} reused)"
    if any("from_disk" in c for c in counts):  # --koembed-cache
        from_disk = sum(int(c.get("from_disk", 0)) for c in counts)
        line += f"; {from_disk:,} read from the embedding cache"
        if (record.get("model") or {}).get("model_loads") == 0:
            line += "; model not loaded"
    return line


def mteb_averages_line(record: Mapping[str, Any]) -> str | None:
    """``mteb: Mean (Task) 61.02 | Mean (TaskType) 60.11 | Classification 55.1 | ...``: mteb's
    aggregation as its leaderboard names it (the ``mteb`` scheme), or None."""
    block = record.get("mteb_averages")
    if not isinstance(block, Mapping):
        return None
    parts = [f"{key} {text.value(block.get(key))}" for key in ("Mean (Task)", "Mean (TaskType)")]
    parts += [f"{t} {text.value(v)}" for t, v in (block.get("task_types") or {}).items()]
    return "mteb: " + " | ".join(parts)


def shard_line(block: Mapping[str, Any]) -> str:
    """``shard 2/3: tasks A, B (2 of 5 selected tasks)`` (``--koembed-shard``)."""
    tasks = list(block.get("tasks") or [])
    selected = block.get("selected")
    of = f" ({len(tasks)} of {len(selected)} selected tasks)" if selected is not None else ""
    names = ", ".join(tasks) if tasks else "none"
    return f"shard {block.get('index')}/{block.get('count')}: tasks {names}{of}"


def shard_plan_line(block: Mapping[str, Any]) -> str | None:
    """``shard 1/2 plan: 41% of the estimated cost (estimated from the tasks' sizes; split
    imbalance max/mean 1.07)``, or with ``--koembed-shard-costs`` ``48% of the cost, 12.3 s of
    25.6 s (measured seconds of run.json for 6 of 6 tasks; ...)``; None without a plan."""
    plan = block.get("plan")
    if not isinstance(plan, Mapping) or not isinstance(plan.get("loads"), list):
        return None
    loads = [float(x) for x in plan["loads"]]
    total = sum(loads)
    mine = loads[int(block.get("index") or 1) - 1] if loads else 0.0
    share = text.percent(mine, total)
    if plan.get("from") == "measured":
        measured, selected = len(plan.get("measured") or []), len(plan.get("cost") or {})
        how = f"measured seconds of {plan.get('record')} for {measured} of {selected} tasks"
        if measured < selected:
            how += ", the others estimated and scaled to them"
        what = f"{share} of the cost, {text.seconds(mine)} s of {text.seconds(total)} s"
    else:
        how, what = "estimated from the tasks' sizes", f"{share} of the estimated cost"
    imbalance = text.ratio(float(plan.get("imbalance") or 1.0))
    label = f"{block.get('index')}/{block.get('count')}"
    return f"shard {label} plan: {what} ({how}; split imbalance max/mean {imbalance})"


def sparsity_line(record: Mapping[str, Any]) -> str | None:
    """``sparsity: mean active dims per text, of 30,522: Ko-StrategyQA 95.3 (query 21.4, document
    104.2)``: a sparse model's tasks (their ``sparsity`` fields), or None when no task has them."""
    parts = []
    vocab: set[int] = set()
    for task in record["tasks"]:
        sparsity = task.get("sparsity")
        if not isinstance(sparsity, Mapping) or sparsity.get("mean_active_dims") is None:
            continue
        if isinstance(sparsity.get("vocab_size"), int):
            vocab.add(sparsity["vocab_size"])
        roles = sparsity.get("by_role") or {}
        split = [
            f"{role} {text.dims(roles[role]['mean_active_dims'])}"
            for role in ("query", "document")
            if isinstance(roles.get(role), Mapping)
        ]
        line = f"{task['column']} {text.dims(sparsity['mean_active_dims'])}"
        parts.append(line + (f" ({', '.join(split)})" if split else ""))
    if not parts:
        return None
    of = f", of {next(iter(vocab)):,}" if len(vocab) == 1 else ""
    return f"sparsity: mean active dims per text{of}: " + "; ".join(parts)


def summary_lines(record: Mapping[str, Any]) -> list[str]:
    """The ``koembed summary`` section of the terminal report."""
    suite = record["suite"]
    counts = TaskCounts.from_dict(record["task_counts"])
    lines = [f"suite {suite['name']}: {counts.describe()}"]
    if isinstance(record.get("shard"), Mapping):
        lines.append(shard_line(record["shard"]))
        plan = shard_plan_line(record["shard"])
        if plan:
            lines.append(plan)
    merged = record.get("merged")
    if isinstance(merged, Mapping):
        lines.append(f"merged from {len(merged.get('records') or [])} run records")
    if record.get("interrupted"):
        lines.append(f"the run did not finish: {record['interrupted']}")
    table = task_table(record)
    if not table.empty:
        # with intervals every value cell has the same width: left-aligned, the header sits
        # over the numbers rather than over the intervals
        value_left = ("value",) if any(t.get("ci") for t in record["tasks"]) else ()
        lines.extend(_aligned(table, left=("task", "category", *value_left, "verdict", "worker")))
    for task in record["tasks"]:
        if task["status"] != "ok":
            lines.append(f"  {task['column']}: {task['error']}")
    category_cis = record.get("category_average_ci") or {}
    averages = record.get("category_averages") or {}
    ordered = [*CATEGORIES, *(c for c in averages if c not in CATEGORIES)]  # mteb's other types
    texts = [
        _with_ci(shown, averages.get(category), category_cis.get(category))
        for category in ordered
        if (shown := text.category(record, category)) is not None
    ]
    parts = [shown for shown in texts if shown is not None]
    if parts:
        lines.append("category averages: " + " | ".join(parts))
    scheme = record["scheme"]
    weighted = record["weighted_average"]
    note = record.get("weighted_average_note")
    formula = record["scheme_description"].split(":")[0]
    lines.append(
        "weighted average "
        + (
            _with_ci(text.cell(weighted), weighted, record.get("weighted_average_ci"))
            if weighted is not None
            else "n/a"
        )
        + f" (scheme {scheme}: {formula})"
        + (f"; {note}" if note else "")
    )
    mteb_line = mteb_averages_line(record)
    if mteb_line is not None:
        lines.append(mteb_line)
    ranked = text.rank(record)
    if ranked is not None:
        lines.append(ranked)
    reuse = texts_line(record)
    if reuse is not None:
        lines.append(reuse)
    sparsity = sparsity_line(record)
    if sparsity is not None:
        lines.append(sparsity)
    described = text.intervals_line(record)
    if described is not None:
        lines.append(described)
    lines.append(model_line(record["model"]))
    versions = record["versions"]
    lines.append(
        "versions: "
        + ", ".join(
            f"{name} {versions.get(name) or 'not installed'}" for name in VERSIONED_PACKAGES
        )
    )
    lines.extend(baseline_lines(record))
    lines.extend(gate_lines(record))
    return lines
