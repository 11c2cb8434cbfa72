"""Baseline files, leaderboard rows and tolerances: what a run is compared with.

``--koembed-baseline`` (``auto``, ``leaderboard:ROW``, a baseline file, ``none``) resolved to
:class:`Baseline` cells, the tolerances (``--koembed-tolerance``), the sidecar and identity
checks of a baseline file, and ``--koembed-update-baseline``'s merge. The verdicts themselves are
``gate.verdicts``'.

This module imports neither pytest nor torch nor mteb.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.averages import average_fields, count_tasks
from pytest_koembed.protocol.leaderboards import (
    find_row,
    leaderboards_for_encoder,
    leaderboards_for_suite,
    load_leaderboard,
)
from pytest_koembed.protocol.scoring import (
    fixed_text,
    points_text,
    round_half_up,
    signed_text,
)
from pytest_koembed.protocol.spec import CATEGORIES, Suite
from pytest_koembed.records import read_run_record, run_suite_name

DEFAULT_TOLERANCE = 1.0
"""Points a task may fall below its baseline before it fails. One point covers what a faithful
re-run of a published row moves by (float noise, PawsX's 0.1-0.2, sib200's ~0.8 mteb offset) and
is still far below a real regression."""

WEIGHTED_GATE = "weighted"

# --koembed-rule: how a task is compared with a baseline file
AUTO_RULE = "auto"  # paired where the baseline's per-example results hold the task, else tolerance
PAIRED_RULE = "paired"  # every task paired: a task that cannot be paired fails
TOLERANCE_RULE = "tolerance"  # the tolerance rule only: the per-example results are not read
RULES = (AUTO_RULE, PAIRED_RULE, TOLERANCE_RULE)


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise KoembedError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise KoembedError(f"{where}: {text!r} must be a finite number >= 0")
    return value


def _items(specs: Iterable[str]) -> list[str]:
    """The comma- (and whitespace-) separated items of repeated option values."""
    return [part for spec in specs for part in spec.replace(",", " ").split()]


def _category(key: str, suite: Suite | None = None) -> str | None:
    """The category ``key`` names (any case, ``_average`` suffix allowed): one of CATEGORIES or,
    for an mteb benchmark suite, one of its other task types (``summarization``)."""
    folded = key.casefold().removesuffix("_average")
    extra = [t.category for t in suite.tasks] if suite is not None else []
    return next((c for c in [*CATEGORIES, *extra] if c.casefold() == folded), None)


def _column(key: str, suite: Suite) -> str | None:
    columns = [t.column for t in suite.tasks]
    if key in columns:
        return key
    folded = [c for c in columns if c.casefold() == key.casefold()]
    return folded[0] if len(folded) == 1 else None


# ---------------------------------------------------------------------------------------------
# Tolerances
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerances:
    """Points a task may fall below its baseline: per column, else per category, else global."""

    default: float = DEFAULT_TOLERANCE
    categories: Mapping[str, float] = field(default_factory=dict)
    columns: Mapping[str, float] = field(default_factory=dict)

    def for_task(self, column: str, category: str) -> float:
        if column in self.columns:
            return self.columns[column]
        return self.categories.get(category, self.default)

    def describe(self) -> str:
        """``1.00 points (Retrieval 0.50, Ko-StrategyQA 0.20)``."""
        special = [f"{k} {points_text(v)}" for k, v in {**self.categories, **self.columns}.items()]
        head = f"{points_text(self.default)} points"
        return head + (f" ({', '.join(special)})" if special else "")


def parse_tolerances(specs: Iterable[str], suite: Suite) -> Tolerances:
    """``["1.0", "retrieval=0.5,Ko-StrategyQA=0.2"]`` -> :class:`Tolerances`; later items win.

    An item is ``POINTS`` (global), ``CATEGORY=POINTS`` (case-insensitive) or ``COLUMN=POINTS``
    (a task column of ``suite``). Raises a one-line :class:`KoembedError` for anything else.
    """
    default = DEFAULT_TOLERANCE
    categories: dict[str, float] = {}
    columns: dict[str, float] = {}
    for item in _items(specs):
        where = f"--koembed-tolerance {item!r}"
        key, sep, value = item.rpartition("=")
        if not sep:
            default = _number(item, where)
            continue
        points_ = _number(value, where)
        column = _column(key, suite)
        category = _category(key, suite)
        if column is not None:
            columns[column] = points_
        elif category is not None:
            categories[category] = points_
        else:
            raise KoembedError(
                f"{where}: {key!r} is neither a category ({', '.join(CATEGORIES)}) nor a task "
                f"column of suite {suite.name!r}; use POINTS, CATEGORY=POINTS or COLUMN=POINTS"
            )
    return Tolerances(default=default, categories=categories, columns=columns)


# ---------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaselineCell:
    value: float  # x100, 2 decimals as published / shown
    stale: str | None = None  # why the cell is stale, None when it is not


@dataclass(frozen=True)
class Baseline:
    """The values one run is compared with: column -> cell, and where they come from."""

    source: str  # "ko-leaderboard-v1 row 'BAAI/bge-m3'" or "baseline file base.json"
    cells: Mapping[str, BaselineCell]
    path: Path | None = None  # the file, for a baseline file
    # Columns whose per-example results the baseline file's sidecar holds (paired comparison).
    paired_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class BaselineChoice:
    """The parsed ``--koembed-baseline`` option."""

    mode: str  # "auto" | "leaderboard" | "file" | "none"
    text: str
    row: str | None = None  # leaderboard: the row name
    leaderboard: str | None = None  # leaderboard: one leaderboard name, None = all of the suite's
    path: Path | None = None  # file


def parse_baseline_option(text: str | None, *, base_dir: Path | None = None) -> BaselineChoice:
    """``auto`` | ``leaderboard:ROW`` | ``leaderboard:NAME:ROW`` | ``none`` | a file path."""
    text = (text or "auto").strip()
    if text in ("auto", "none"):
        return BaselineChoice(mode=text, text=text)
    if text.startswith("leaderboard:"):
        rest = text[len("leaderboard:") :].strip()
        if not rest:
            raise KoembedError("--koembed-baseline leaderboard:ROW needs a row name")
        return BaselineChoice(mode="leaderboard", text=text, row=rest)
    path = Path(text).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    return BaselineChoice(mode="file", text=text, path=path.resolve())


def baseline_from_leaderboard(
    suite: Suite, row: str, *, leaderboard: str | None = None, encoder_type: str | None = None
) -> Baseline | None:
    """The row called ``row`` in the suite's shipped leaderboards (the first that has it);
    with ``encoder_type`` (dense / sparse) only in those that rank that kind of model."""
    if leaderboard:
        names = [leaderboard]
    elif encoder_type:
        names = leaderboards_for_encoder(suite.name, encoder_type)
    else:
        names = leaderboards_for_suite(suite.name)
    for name in names:
        lb = load_leaderboard(name)
        found = find_row(lb, row)
        if found is not None:
            cells = {
                col: BaselineCell(value, found.stale.get(col))
                for col, value in found.values.items()
            }
            return Baseline(source=f"{lb.name} row {found.name!r}", cells=cells)
    return None


def _leaderboard_choice(choice: BaselineChoice, suite: Suite) -> Baseline:
    """``leaderboard:ROW`` / ``leaderboard:NAME:ROW``, or a one-line error naming near rows."""
    names = leaderboards_for_suite(suite.name)
    if not names:
        raise KoembedError(
            f"--koembed-baseline {choice.text}: suite {suite.name!r} has no shipped leaderboard"
        )
    row = choice.row or ""
    head, sep, tail = row.partition(":")
    if sep and head in names:
        baseline = baseline_from_leaderboard(suite, tail, leaderboard=head)
        names = [head]
    else:
        baseline = baseline_from_leaderboard(suite, row)
    if baseline is not None:
        return baseline
    rows = [r for n in names for r in load_leaderboard(n).rows]
    near = difflib.get_close_matches(row, rows, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(r) for r in near)}?" if near else ""
    raise KoembedError(
        f"--koembed-baseline {choice.text}: no row {row!r} in {', '.join(names)}{hint}"
    )


def read_baseline_record(path: Path) -> dict[str, Any]:
    """The JSON of a baseline file (a run record); a one-line error if it is not one."""
    return read_run_record(path, kind="baseline file")


def _task_shown(task: Mapping[str, Any], where: str) -> float | None:
    """A record task's shown value (2 decimals), None when it errored or has none."""
    if task.get("status", "ok") != "ok":
        return None
    value = task.get("shown", task.get("value"))
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise KoembedError(f"{where}: 'shown' must be a finite number, got {value!r}")
    return round_half_up(float(value), 2)


def baseline_from_record(record: Mapping[str, Any], suite: Suite, path: Path) -> Baseline:
    """The cells of a run record used as a baseline file."""
    where = f"baseline file {path}"
    name = run_suite_name(record)
    if name is not None and name != suite.name:
        raise KoembedError(f"{where} is for suite {name!r}, this run's suite is {suite.name!r}")
    columns = {t.column for t in suite.tasks}
    cells: dict[str, BaselineCell] = {}
    for i, task in enumerate(record.get("tasks", []), start=1):
        column = task.get("column") if isinstance(task, Mapping) else None
        if not isinstance(column, str):
            raise KoembedError(f"{where}: task #{i} has no 'column'")
        if column not in columns:
            raise KoembedError(f"{where}: task {column!r} is not a column of suite {suite.name!r}")
        value = _task_shown(task, f"{where}, task {column!r}")
        stale = task.get("stale")
        if value is not None:
            cells[column] = BaselineCell(value, str(stale) if stale else None)
    model = record.get("model")
    row = model.get("row_name") if isinstance(model, Mapping) else None
    source = f"baseline file {path}" + (f" (model {row})" if row else "")
    block = record.get("examples")
    held = block.get("tasks") if isinstance(block, Mapping) else None
    paired = tuple(c for c in (held or {}) if c in cells)
    return Baseline(source=source, cells=cells, path=path, paired_columns=paired)


def load_baseline_file(path: Path, suite: Suite) -> Baseline:
    return baseline_from_record(read_baseline_record(path), suite, path)


def _file_sha256(path: Path) -> str:
    from pytest_koembed.evaluation.per_example import file_sha256

    return file_sha256(path)


def check_sidecar(record: Mapping[str, Any], path: Path, rule: str) -> None:
    """A baseline file's per-example results (its sidecar) are there and match its checksum.

    Without them the paired rule cannot run and the tolerance rule would judge instead: the
    exit status would depend on a file that is easy to lose (not committed, not uploaded). So
    a sidecar that the record names but that is missing or changed is a usage error, unless
    the rule was chosen (``--koembed-rule=tolerance``). A record that names none (an old or a
    hand-made baseline) is judged by the tolerance rule under auto, as documented."""
    block = record.get("examples")
    name = block.get("file") if isinstance(block, Mapping) else None
    if not name:
        if rule == PAIRED_RULE:
            raise KoembedError(
                f"--koembed-rule=paired: baseline file {path} holds no per-example results "
                "(written by hand or by an older version); save the baseline again with "
                "--koembed-save-baseline, or use --koembed-rule=tolerance"
            )
        return
    sidecar = path.parent / str(name)
    choose = "restore it (commit the baseline and its sidecar together)" + (
        "" if rule == PAIRED_RULE else ", or choose the rule: --koembed-rule=tolerance"
    )
    if not sidecar.is_file():
        raise KoembedError(
            f"baseline file {path} names its per-example results {sidecar}, which is missing: "
            f"without it the paired rule cannot run; {choose}"
        )
    actual = _file_sha256(sidecar)
    if actual != block.get("sha256"):
        raise KoembedError(
            f"per-example results {sidecar} do not match baseline file {path} (sha256 "
            f"{actual[:12]}..., the baseline says {str(block.get('sha256'))[:12]}...): without "
            f"them the paired rule cannot run; {choose}"
        )


def baseline_identity(path: Path) -> dict[str, Any]:
    """What a run was judged against, for its record: the baseline file's path and sha256, its
    sidecar's sha256, and the git commit it is committed at when it is tracked and unchanged
    in a git work tree (None elsewhere, e.g. a file taken with ``git show`` into a temp dir)."""
    info: dict[str, Any] = {"path": str(path), "sha256": None, "sidecar": None, "git_commit": None}
    try:
        info["sha256"] = _file_sha256(path)
        record = read_baseline_record(path)
    except (OSError, KoembedError):
        return info
    block = record.get("examples")
    if isinstance(block, Mapping) and block.get("file"):
        info["sidecar"] = {"file": str(block["file"]), "sha256": block.get("sha256")}
    info["git_commit"] = _git_commit(path)
    return info


def _git_commit(path: Path) -> str | None:
    """HEAD of the git work tree holding ``path``, when the file is tracked and unchanged."""
    import subprocess

    def git(*args: str) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(
                ["git", "-C", str(path.parent), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None

    tracked = git("ls-files", "--error-unmatch", "--", path.name)
    if tracked is None or tracked.returncode != 0:
        return None
    changed = git("diff", "--quiet", "HEAD", "--", path.name)
    if changed is None or changed.returncode != 0:
        return None
    head = git("rev-parse", "HEAD")
    return head.stdout.strip() or None if head is not None and head.returncode == 0 else None


# ---------------------------------------------------------------------------------------------
# Baseline files: update from a run
# ---------------------------------------------------------------------------------------------


def merge_baseline(
    old: Mapping[str, Any] | None, new: Mapping[str, Any], suite: Suite
) -> tuple[dict[str, Any], list[str]]:
    """The updated baseline file and the lines saying what changed.

    Tasks this run scored replace the old cells (a stale mark on them is dropped); the old cells of
    tasks that errored, did not run or were deselected are kept. Averages are recomputed.
    """
    old_tasks = {t["column"]: t for t in (old or {}).get("tasks", []) if isinstance(t, Mapping)}
    new_tasks = {t["column"]: t for t in new.get("tasks", [])}
    merged: dict[str, Mapping[str, Any]] = {}
    changes: list[str] = []
    counts = {"changed": 0, "new": 0, "unchanged": 0, "kept": 0}
    for spec in suite.tasks:
        col = spec.column
        fresh, before = new_tasks.get(col), old_tasks.get(col)
        fresh_value = _task_shown(fresh, col) if fresh is not None else None
        old_value = _task_shown(before, col) if before is not None else None
        if fresh is not None and fresh_value is not None:
            merged[col] = {k: v for k, v in fresh.items() if k != "stale"}
            if old_value is None:
                counts["new"] += 1
                changes.append(f"  {col}: new {fixed_text(fresh_value)}")
            elif old_value != fresh_value or (before and before.get("stale")):
                counts["changed"] += 1
                delta = float(_dec(fresh_value) - _dec(old_value))
                changes.append(
                    f"  {col}: {fixed_text(old_value)} -> {fixed_text(fresh_value)} "
                    f"({signed_text(delta)})"
                    + (", stale mark dropped" if before and before.get("stale") else "")
                )
            else:
                counts["unchanged"] += 1
        elif before is not None:
            merged[col] = before
            counts["kept"] += 1
            if fresh is not None:  # it ran and errored
                kept = f" {fixed_text(old_value)}" if old_value is not None else ""
                changes.append(f"  {col}: kept{kept}, this run errored")
    values = {col: _task_shown(task, col) for col, task in merged.items()}
    scored = {col: "ok" for col, v in values.items() if v is not None}
    task_counts = count_tasks(suite, scored, values)
    record = dict(new)
    record["tasks"] = list(merged.values())
    record["not_run"] = []
    record["deselected"] = [t.column for t in suite.tasks if t.column not in merged]
    record.update(average_fields(suite, new.get("scheme") or suite.scheme, values, task_counts))
    if record["weighted_average"] is None:
        record["weighted_average_note"] = (
            "not computed: the baseline does not cover the whole suite"
        )
    record["gates"] = []  # this run's gates say nothing about the merged file
    head = ", ".join(f"{n} {what}" for what, n in counts.items())
    return record, [head, *changes]
