"""``koembed merge``: the run records of a run's shards (``--koembed-shard K/N``) as one record.

The shards must be parts of one run: the same model (fingerprint), suite, scoring scheme, data
source (the Hub or a local data directory), package versions and interval level, each record
complete, no task in two records. Anything else is refused in one line.

The merged record is built by the functions that build a pytest run's record, from the shards'
task entries and per-example frames: ``reports.run_record`` (counts and averages,
``averages.average_fields``) and ``intervals.RunIntervals`` (the averages' and the rank's
intervals, seeded per task column). Task values and their intervals are copied as the shards
computed them. So the merged values, averages, weighted average and intervals are those of the
same tasks run in one session. The per-example frames go to one new sidecar, whose sha256 the
merged record holds.

Tasks of the shards' selection that no record holds (a shard's record is missing) are refused,
named, unless ``--allow-missing``: the merged record then lists them as not run and is not
complete, as a pytest run that lost them would be (``koembed gate`` judges only complete runs).

The per-task verdicts stay as each shard judged them, against its own baseline; the merged
record's gates are empty. ``koembed gate MERGED.json`` judges the whole run (Holm over all its
paired tasks, the ``--koembed-fail-under`` gates, the reports).

Plain module: no pytest, no torch, no mteb.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.spec import Suite
from pytest_koembed.records import TaskScore, read_run_record


def _fingerprint(record: Mapping[str, Any]) -> str:
    """What tells a model: its fingerprint, else its name, row name and revision."""
    model = record.get("model") or {}
    fingerprint = model.get("fingerprint")
    if fingerprint:
        return str(fingerprint)
    return f"{model.get('name')!r} ({model.get('row_name')!r}, revision {model.get('revision')!r})"


def data_source(record: Mapping[str, Any]) -> str | None:
    """Where a run read its mteb tasks' data: ``the Hub`` or ``a local data directory``
    (``--koembed-data-dir``); None when it ran no mteb task (custom local tasks only)."""
    kinds = set()
    for task in record.get("tasks") or []:
        if str(task.get("dataset_path") or "").startswith("local/"):
            continue  # a custom task of the suite: its data is the suite's
        source = str(task.get("source") or "")
        if source.startswith("hub:"):
            kinds.add("the Hub")
        elif source.startswith("local:"):
            kinds.add("a local data directory (--koembed-data-dir)")
    return " and ".join(sorted(kinds)) or None


def _versions(record: Mapping[str, Any]) -> dict[str, Any]:
    versions = dict(record.get("versions") or {})
    versions["pytest-koembed"] = record.get("koembed_version")
    return versions


def _level(record: Mapping[str, Any]) -> Any:
    info = record.get("intervals")
    return info.get("level") if isinstance(info, Mapping) else None


# The model block's fields that change the vectors (the embedding cache keys on them too,
# ``embedding_cache``): shards that differ in one are not parts of one run.
ENCODING_FIELDS = (
    ("max_length", "max lengths", "--koembed-max-length"),
    ("dtype", "dtypes", "--koembed-dtype"),
    ("pooling", "poolings", "--koembed-pooling"),
    ("normalize", "normalisations", "model and pooling"),
    ("append_eos", "EOS handling", "model and tokenizer"),
    ("padding_side", "padding sides", "model and tokenizer"),
)


def _model_field(record: Mapping[str, Any], name: str) -> Any:
    return (record.get("model") or {}).get(name)


def _prompts_text(record: Mapping[str, Any]) -> str:
    settings = record.get("prompt_settings")
    if not isinstance(settings, Mapping):
        return "not recorded"
    if settings.get("disabled"):
        return "--koembed-no-instructions"
    return str(settings.get("instructions") or "the shipped profiles")


def _device_types(record: Mapping[str, Any]) -> list[str]:
    device = _model_field(record, "device")
    devices = device if isinstance(device, list) else [device]
    return sorted({str(d).split(":")[0] for d in devices if d})


def device_warnings(records: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """A warning line when the shards ran on different device types (cpu, cuda, mps round
    differently: the values may move by float noise; the merge goes on)."""
    kinds = {name: _device_types(r) for name, r in records}
    seen = {tuple(k) for k in kinds.values() if k}
    if len(seen) <= 1:
        return []
    said = ", ".join(f"{name} {'/'.join(k) or '?'}" for name, k in kinds.items())
    return [
        f"warning: the shards ran on different device types ({said}); they round differently, "
        "so values may differ from a one-device run by float noise"
    ]


def _shard_label(record: Mapping[str, Any]) -> str | None:
    block = record.get("shard")
    if not isinstance(block, Mapping):
        return None
    return f"{block.get('index')}/{block.get('count')}"


def _differ(what: str, a: str, va: Any, b: str, vb: Any, fix: str) -> KoembedError:
    return KoembedError(f"{a} and {b} are of different {what} ({va} vs {vb}); {fix}")


_Check = tuple[str, Callable[[Mapping[str, Any]], Any], str, Callable[[Mapping[str, Any]], Any]]


def _run_checks() -> list[_Check]:
    """What every shard must share, in the order it is checked: (what differs, the value
    compared, what to do, the value as the message shows it)."""
    checks: list[_Check] = [
        ("models (fingerprint)", _fingerprint, "merge the shards of one model", _fingerprint),
        ("suites", _suite_name, "merge runs of one suite", _suite_name),
        ("scoring schemes", _scheme, "run every shard with one --koembed-scheme", _scheme),
        (
            "package versions",
            _versions,
            "run every shard in the same environment (pin the versions)",
            _versions,
        ),
        ("interval levels", _level, "run every shard with one --koembed-confidence", _level),
    ]
    for field_name, what, option in ENCODING_FIELDS:

        def value(record: Mapping[str, Any], name: str = field_name) -> Any:
            return _model_field(record, name)

        fix = (
            "the embeddings differ, so the merged averages would be of no run: run every shard "
            f"with the same {option}"
        )
        checks.append((what, value, fix, value))
    checks.append(
        (
            "prompts",
            _prompt_settings,
            "run every shard with the same --koembed-instructions / --koembed-no-instructions",
            _prompts_text,
        )
    )
    return checks


def _gate_checks() -> list[_Check]:
    """The gate options, checked after the data sources."""
    fix = (
        "run every shard with the same --koembed-fail-under, --koembed-tolerance, "
        "--koembed-strict, --koembed-min-effect and --koembed-rule (command line and ini)"
    )
    return [("gate options", _gate_settings, fix, _gates_text)]


def _gate_settings(record: Mapping[str, Any]) -> Any:
    return record.get("gate_settings") or {}


def _suite_name(record: Mapping[str, Any]) -> Any:
    return (record.get("suite") or {}).get("name")


def _scheme(record: Mapping[str, Any]) -> Any:
    return record.get("scheme")


def _prompt_settings(record: Mapping[str, Any]) -> Any:
    return record.get("prompt_settings")


def _check_all_same(
    records: Sequence[tuple[str, Mapping[str, Any]]], checks: Sequence[_Check]
) -> None:
    first_name, first = records[0]
    for what, key, fix, shown in checks:
        for name, record in records[1:]:
            if key(record) != key(first):
                raise _differ(what, first_name, shown(first), name, shown(record), fix)


def _check_complete(records: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    for name, record in records:
        if not record.get("complete"):
            why = record.get("interrupted") or "complete: false"
            raise KoembedError(
                f"{name} is not complete ({why}); re-run that shard and merge its finished record"
            )


def _check_data_sources(records: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    sources = [(name, data_source(r)) for name, r in records]
    known = [(name, s) for name, s in sources if s is not None]
    for name, source in known[1:]:
        if source != known[0][1]:
            raise _differ(
                "data sources",
                known[0][0],
                known[0][1],
                name,
                source,
                "read every shard's data from one place",
            )


def _check_one_split(records: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """One N, every task and every shard once."""
    counts = {b.get("count") for _, r in records if isinstance(b := r.get("shard"), Mapping)}
    if len(counts) > 1:
        raise KoembedError(
            f"the records are shards of different splits (N = {', '.join(map(str, sorted(counts)))}"
            "); merge the shards of one --koembed-shard K/N run"
        )
    owner: dict[str, str] = {}
    for name, record in records:
        for task in record.get("tasks") or []:
            column = str(task.get("column"))
            if column in owner:
                raise KoembedError(
                    f"task {column!r} is recorded twice, in {owner[column]} and {name}; merge "
                    "each shard's record once"
                )
            owner[column] = name
    labels: dict[str, str] = {}
    for name, record in records:
        label = _shard_label(record)
        if label is not None and label in labels:
            raise KoembedError(f"shard {label} is given twice, as {labels[label]} and {name}")
        if label is not None:
            labels[label] = name


def check_same_run(records: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """One-line KoembedError unless every record is a complete part of the same run."""
    _check_complete(records)
    _check_all_same(records, _run_checks())
    _check_data_sources(records)
    _check_all_same(records, _gate_checks())
    _check_one_split(records)


def _gates_text(record: Mapping[str, Any]) -> str:
    from pytest_koembed.run.shards import option_text

    settings = record.get("gate_settings") or {}
    return " ".join(option_text(k, v) for k, v in settings.items()) or "none"


def _selection(record: Mapping[str, Any]) -> list[str]:
    """The tasks a record's run was asked for: a shard's whole selection, else its own."""
    block = record.get("shard")
    if isinstance(block, Mapping) and isinstance(block.get("selected"), list):
        return [str(c) for c in block["selected"]]
    own = [str(t.get("column")) for t in record.get("tasks") or []]
    return own + [str(c) for c in record.get("not_run") or []]


def _model_block(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One model block; a field that differs between shards (or their workers) is a list."""
    block: dict[str, Any] = {}
    for record in records:
        for key, value in (record.get("model") or {}).items():
            seen = block.setdefault(key, [])
            for item in value if isinstance(value, list) else [value]:
                if item not in seen:
                    seen.append(item)
    merged = {k: v[0] if len(v) == 1 else v for k, v in block.items()}
    loads = [(r.get("model") or {}).get("model_loads") for r in records]
    if any(isinstance(n, int) for n in loads):  # processes that loaded the weights, all shards
        merged["model_loads"] = sum(n for n in loads if isinstance(n, int))
    return merged


def _baseline_block(records: Sequence[Mapping[str, Any]], scores: Sequence[TaskScore]) -> Any:
    """The shards' verdicts, said once (each shard judged its own tasks)."""
    from pytest_koembed.gate.verdicts import baseline_block

    blocks = [r.get("baseline") for r in records if isinstance(r.get("baseline"), Mapping)]
    if not blocks:
        return None
    options = {str(b.get("option")) for b in blocks}
    settings = {str(b.get("settings")) for b in blocks}
    return baseline_block(" | ".join(sorted(options)), " | ".join(sorted(settings)), scores)


def _timestamp(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


def merge_records(
    paths: Sequence[str | Path], *, allow_missing: bool = False, suite_option: str | None = None
) -> tuple[dict[str, Any], dict[str, Any], Suite, list[str]]:
    """The merged run record, its per-example frames, its suite, and the tasks still missing.

    One-line KoembedError for anything that is not parts of one run (see the module docstring).
    """
    from pytest_koembed.reports.summary import run_record
    from pytest_koembed.run.finish import record_suite

    if not paths:
        raise KoembedError("give the run records to merge: koembed merge RUN.json... -o OUT.json")
    records = [(str(p), read_run_record(p)) for p in paths]
    check_same_run(records)
    first_name, first = records[0]
    suite = record_suite(first, f"run record {first_name}", suite_option)
    for name, record in records[1:]:
        record_suite(record, f"run record {name}", suite_option or str(suite.path))
    scores, frames = _scores_and_frames(records)
    selected = {c for _, r in records for c in _selection(r)} | set(scores)
    missing = [t.column for t in suite.tasks if t.column in selected and t.column not in scores]
    shards = sorted({label for _, r in records if (label := _shard_label(r))})
    if missing and not allow_missing:
        raise _missing_error(records, missing, shards)
    started = [s for _, r in records if (s := _timestamp(r.get("started"))) is not None]
    finished = [f for _, r in records if (f := _timestamp(r.get("finished"))) is not None]
    ordered = {t.column: scores[t.column] for t in suite.tasks if t.column in scores}
    model = _model_block([r for _, r in records])
    record = run_record(
        model=str(model.get("name") or ""),
        suite=suite,
        scheme=str(first.get("scheme") or suite.scheme),
        scores=ordered,
        encoder_infos=[model],
        selected=[t.column for t in suite.tasks if t.column in selected],
        started=min(started) if started else 0.0,
        finished=max(finished) if finished else None,
        complete=not missing,
        interrupted=f"{len(missing)} selected task(s) in no merged record" if missing else None,
        baseline=_baseline_block([r for _, r in records], list(ordered.values())),
        gates=[],
    )
    record = _as_the_shards_ran(record, first, suite, frames)
    record["merged"] = {
        "records": [name for name, _ in records],
        "shards": shards,
        "missing": missing,
        "warnings": device_warnings(records),
    }
    return record, frames, suite, missing


def _as_the_shards_ran(
    record: dict[str, Any], first: Mapping[str, Any], suite: Suite, frames: Mapping[str, Any]
) -> dict[str, Any]:
    """The merged record's versions, suite block, intervals, prompt and gate settings: as the
    shards ran, not as this machine has it."""
    from pytest_koembed.stats.intervals import DEFAULT_CONFIDENCE, RunIntervals

    record["koembed_version"] = first.get("koembed_version")
    record["versions"] = dict(first.get("versions") or {})
    record["suite"] = dict(first.get("suite") or record["suite"])
    level = _level(first)
    record = RunIntervals(float(level) if level is not None else DEFAULT_CONFIDENCE).add_to(
        record, suite, frames
    )
    if first.get("prompt_settings") is not None:
        record["prompt_settings"] = first["prompt_settings"]
    if first.get("gate_settings"):
        record["gate_settings"] = dict(first["gate_settings"])  # the same in every shard
    return record


def _scores_and_frames(
    records: Sequence[tuple[str, Mapping[str, Any]]],
) -> tuple[dict[str, TaskScore], dict[str, Any]]:
    """Every record's task entries, and the per-example frames of its sidecar."""
    from pytest_koembed.evaluation.per_example import load_examples

    scores: dict[str, TaskScore] = {}
    frames: dict[str, Any] = {}
    for name, record in records:
        held = load_examples(name) if isinstance(record.get("examples"), Mapping) else {}
        for task in record["tasks"]:
            score = TaskScore.from_dict(task)
            scores[score.column] = score
            if score.column in held:
                frames[score.column] = held[score.column]
    return scores, frames


def _missing_error(
    records: Sequence[tuple[str, Mapping[str, Any]]], missing: Sequence[str], shards: Sequence[str]
) -> KoembedError:
    """The selected tasks no record holds, and which shards' records are not given."""
    counts = {b.get("count") for _, r in records if isinstance(b := r.get("shard"), Mapping)}
    absent = ""
    if len(counts) == 1:
        count = counts.pop()
        gone = [f"{k}/{count}" for k in range(1, int(count) + 1) if f"{k}/{count}" not in shards]
        absent = f" (no record of shard {', '.join(gone)})" if gone else ""
    return KoembedError(
        f"{len(missing)} selected task(s) in no record: {', '.join(missing)}{absent}; give "
        "every shard's record, or --allow-missing to merge without them"
    )
