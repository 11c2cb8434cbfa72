"""The checkpoint history: ``--koembed-history DIR`` and ``koembed history``'s store.

Each complete run adds one pair of files to DIR, named by time, model and checkpoint
(``20261203T083340.123456Z--all-minilm-l6-v2--checkpoint-5000--1f3a9c2e.json`` and its
``.examples.parquet`` sidecar). Each file is written under a temp name in DIR and renamed into
place (``records.atomic_write``), the sidecar first, so a reader never sees half a file nor a
record whose sidecar is still missing; the random suffix keeps two jobs finishing in the same
microsecond apart. No index file and no lock: the index is built on read
(:func:`read_history`), so any number of jobs can add runs at once.

What counts as **complete** (:func:`why_not_added`): the session ended normally with every
selected task reported (``complete: true``), the record is not one shard of a sharded run
(merge the shards with ``koembed merge`` and add the merged record with ``koembed history
--add``), no task failed, the whole suite was selected (no ``-k`` / ``--deselect``), and it has
a weighted average.

**Retention** (:func:`prune_examples`): the records stay forever (a few kB each); per-example
sidecars (several MB for a v1 run) are kept for the last ``keep`` runs of each kind (suite,
scheme, data source, interval level, split) by start time, and for the best run of the kind by
the weighted average; the others are deleted. A run without its sidecar keeps its row, values
and intervals in ``koembed history``, without paired deltas.

Plain module: no pytest.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from pytest_koembed.errors import KoembedError
from pytest_koembed.evaluation.per_example import examples_path, load_examples, write_run_files
from pytest_koembed.gate.compare import GateSettings
from pytest_koembed.gate.history import HistoryTable, Run, build_history
from pytest_koembed.records import read_run_record, run_suite_name, write_json
from pytest_koembed.run import checkpoints
from pytest_koembed.run.merge import data_source

DEFAULT_KEEP_EXAMPLES = 10
"""Sidecars kept per kind of run, besides the best run's (``--koembed-history-keep-examples``)."""

_SLUG = re.compile(r"[^0-9A-Za-z._]+")


def why_not_added(record: Mapping[str, Any]) -> str | None:
    """Why a run record is not a complete run for the history; None when it is."""
    if not record.get("complete"):
        return f"the run is not complete ({record.get('interrupted') or 'complete: false'})"
    shard = record.get("shard")
    if isinstance(shard, Mapping):
        return (
            f"it is shard {shard.get('index')}/{shard.get('count')} of a sharded run; merge the "
            "shards with koembed merge and add the merged record with koembed history DIR --add"
        )
    counts = record.get("task_counts") or {}
    if counts.get("failed"):
        return f"{counts['failed']} task(s) failed"
    left = int(counts.get("not_run") or 0) + int(counts.get("deselected") or 0)
    if left:
        return (
            f"only {counts.get('scored')} of {counts.get('total')} tasks of the suite ran "
            "(-k / --deselect / a selection): a checkpoint is compared on its whole suite"
        )
    if record.get("weighted_average") is None:
        return "it has no weighted average"
    return None


def _slug(text: str, limit: int = 40) -> str:
    return (_SLUG.sub("-", text).strip("-.").lower() or "x")[:limit]


def _started(record: Mapping[str, Any]) -> datetime:
    try:
        when = datetime.fromisoformat(str(record.get("started")))
    except ValueError:
        return datetime.now(timezone.utc)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def run_name(record: Mapping[str, Any]) -> str:
    """The file stem of a run in the history: time, model, checkpoint, a random part."""
    model = record.get("model") or {}
    model_name = str(model.get("row_name") or Path(str(model.get("name") or "model")).name)
    block = checkpoints.of_record(record)
    when = _started(record).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{when}--{_slug(model_name)}--{_slug(str(block['name']))}--{uuid.uuid4().hex[:8]}"


def kind_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """What runs must share to be rows of one table: suite, scheme, data source, interval
    level and split (``test``, ``dev``)."""
    info = record.get("intervals")
    return {
        "suite": run_suite_name(record),
        "scheme": record.get("scheme"),
        "data source": data_source(record),
        "interval level": info.get("level") if isinstance(info, Mapping) else None,
        "split": str(record.get("split") or "test"),  # --koembed-split; older records: test
    }


@dataclass
class Entry:
    """One run of a history: its record file and what the rows need of it."""

    path: Path
    record: dict[str, Any]
    checkpoint: dict[str, Any] = field(default_factory=dict)
    _frames: dict[str, pd.DataFrame] | None = None
    frames_note: str | None = None

    @property
    def started(self) -> datetime:
        return _started(self.record)

    @property
    def kind(self) -> dict[str, Any]:
        return kind_of(self.record)

    def frames(self) -> dict[str, pd.DataFrame] | None:
        """Its per-example frames, or None (``frames_note`` says why: pruned, changed)."""
        if self._frames is None and self.frames_note is None:
            try:
                self._frames = load_examples(self.path)
            except KoembedError as exc:
                self.frames_note = str(exc)
        return self._frames


def entry(path: Path, record: dict[str, Any]) -> Entry:
    return Entry(path, record, checkpoints.of_record(record))


@dataclass(frozen=True)
class Added:
    path: Path
    pruned: list[Path]


def add_run(
    directory: Path,
    record: Mapping[str, Any],
    frames: Mapping[str, pd.DataFrame],
    keep_examples: int = DEFAULT_KEEP_EXAMPLES,
) -> Added:
    """Add a complete run (its record and per-example frames) to the history in
    ``directory``, then apply the retention rule; a KoembedError (``why_not_added``) for a run
    that is not complete."""
    why = why_not_added(record)
    if why is not None:
        raise KoembedError(f"not added to the history {directory}: {why}")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{run_name(record)}.json"
    out = dict(record)
    out.setdefault("checkpoint", checkpoints.of_record(record))
    write_run_files(out, target, frames, write_json)
    return Added(target, prune_examples(directory, keep_examples))


def add_record_file(directory: Path, path: Path, keep_examples: int) -> Added:
    """``koembed history DIR --add RECORD``: a saved record (a merged one too) and its sidecar."""
    record = read_run_record(path)
    why = why_not_added(record)
    if why is not None:
        raise KoembedError(f"{path} is not added to the history {directory}: {why}")
    return add_run(directory, record, load_examples(path), keep_examples)


def read_history(directory: Path) -> list[Entry]:
    """Every run in ``directory`` (``*.json``; temp files start with a dot and are skipped)."""
    if not directory.is_dir():
        raise KoembedError(
            f"history {directory} is not a directory; give the --koembed-history DIR runs were "
            "added to, or run records"
        )
    return [entry(p, read_run_record(p)) for p in sorted(directory.glob("[!.]*.json"))]


def load_sources(sources: Sequence[str]) -> list[Entry]:
    """The runs of ``koembed history DIR|RECORD...``: every run of each DIR, each RECORD."""
    entries: list[Entry] = []
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            entries += read_history(path)
        else:
            entries.append(entry(path, read_run_record(path)))
    if not entries:
        raise KoembedError(
            f"no run in {', '.join(sources)}; add runs with pytest --koembed-history=DIR"
        )
    return entries


def _kind_key(record: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(v) for v in kind_of(record).values())


def prune_examples(directory: Path, keep: int) -> list[Path]:
    """Delete the sidecars the retention rule does not keep (module docstring); the deleted
    paths. Safe beside concurrent writers: a file already gone is no error, and the newest runs
    (the one just written among them) are always kept."""
    if keep < 1:
        raise KoembedError(f"--koembed-history-keep-examples {keep}: keep at least 1")
    groups: dict[tuple[str, ...], list[Entry]] = {}
    for run in read_history(directory):
        groups.setdefault(_kind_key(run.record), []).append(run)
    deleted: list[Path] = []
    for runs in groups.values():
        runs.sort(key=lambda r: (r.started, r.path.name))
        kept = {id(r) for r in runs[-keep:]}
        scored = [r for r in runs if r.record.get("weighted_average") is not None]
        if scored:
            kept.add(id(max(scored, key=lambda r: float(r.record["weighted_average"]))))
        for run in runs:
            sidecar = examples_path(run.path)
            if id(run) not in kept and sidecar.exists():
                sidecar.unlink(missing_ok=True)
                deleted.append(sidecar)
    return deleted


def refuse_mixed(entries: Sequence[Entry], suite: str | None = None) -> tuple[list[Entry], str]:
    """The runs of one table, or a one-line KoembedError naming what differs and the fix.

    Several suites: refused unless ``suite`` picks one (the others are left out, one line).
    Within a suite, a different scheme, data source or interval level is refused, naming two
    records; the split (test / dev) is not refused here: the caller keeps splits apart.
    """
    suites = sorted({str(run_suite_name(e.record)) for e in entries})
    note = ""
    if suite is not None:
        chosen = [e for e in entries if run_suite_name(e.record) == suite]
        if not chosen:
            raise KoembedError(
                f"--suite {suite}: no run of that suite; the runs are of {', '.join(suites)}"
            )
        if len(chosen) < len(entries):
            note = f"{len(entries) - len(chosen)} run(s) of other suites left out (--suite {suite})"
        entries = chosen
    elif len(suites) > 1:
        raise KoembedError(
            f"the runs are of {len(suites)} suites ({', '.join(suites)}); a table compares one "
            "suite's checkpoints: choose one with --suite NAME"
        )
    first = entries[0]
    for what in ("scheme", "data source", "interval level"):
        for other in entries[1:]:
            a, b = first.kind[what], other.kind[what]
            if a != b:
                raise KoembedError(
                    f"{first.path} and {other.path} differ in {what} ({a} vs {b}); their "
                    f"numbers do not compare: give runs made with the same {what}"
                )
    return list(entries), note


def _labels(entries: Sequence[Entry]) -> list[str]:
    """Each run's checkpoint name; a name seen before gets ``(run 2)``, ``(run 3)``..."""
    seen: dict[str, int] = {}
    out = []
    for e in entries:
        name = str(e.checkpoint.get("name"))
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} (run {seen[name]})")
    return out


def ordered(entries: Sequence[Entry]) -> list[Entry]:
    """Rows by checkpoint step (then epoch), then start time."""
    return sorted(
        entries, key=lambda e: (*checkpoints.order_key(e.checkpoint), e.started, e.path.name)
    )


def history_tables(
    sources: Sequence[str],
    settings: GateSettings,
    *,
    tasks: bool = False,
    suite: str | None = None,
) -> list[HistoryTable]:
    """``koembed history``'s tables: one per split (test, dev), each of one kind of run.
    One-line KoembedErrors for runs that do not compare (:func:`refuse_mixed`)."""
    entries, note = refuse_mixed(load_sources(sources), suite)
    skipped = [(e, why_not_added(e.record)) for e in entries]
    notes = [note] if note else []
    notes += [f"{e.path}: left out: {why}" for e, why in skipped if why is not None]
    entries = [e for e, why in skipped if why is None]
    if not entries:
        raise KoembedError(f"no complete run to show; {notes[-1] if notes else ''}".rstrip("; "))
    by_split: dict[str, list[Entry]] = {}
    for e in ordered(entries):
        by_split.setdefault(str(e.kind["split"]), []).append(e)
    tables = []
    for split, runs in sorted(by_split.items(), key=lambda kv: kv[0] != "dev"):
        rows = [
            Run(label, str(e.path), e.record, e.checkpoint, e.frames(), e.frames_note)
            for e, label in zip(runs, _labels(runs), strict=True)
        ]
        table = build_history(rows, settings, tasks=tasks, split=split)
        table.notes = list(notes)
        tables.append(table)
    _selected_on_dev(tables)
    return tables


def _selected_on_dev(tables: Sequence[HistoryTable]) -> None:
    """With dev and test runs: the checkpoint the dev table selects, and its test row."""
    dev = next((t for t in tables if t.split == "dev"), None)
    if dev is None or dev.best is None:
        return
    chosen = dev.rows[dev.best].run.checkpoint.get("name")
    for table in tables:
        if table is dev:
            continue
        rows = [r for r in table.rows if r.run.checkpoint.get("name") == chosen]
        if rows:
            table.selected_on_dev = rows[-1].run.label


def plot_history_dir(directory: Path, path: Path, *, suite: str | None = None) -> Path:
    """The history chart of ``directory`` to the PNG ``path`` (the first table's: the dev
    split's when there is one); what the pytest-html section embeds."""
    from pytest_koembed.reports.history_plot import plot_history

    tables = history_tables([str(directory)], GateSettings(), suite=suite)
    return plot_history(tables[0], path)
