"""Published leaderboard numbers shipped with the plugin (``baselines/``), and how to read them.

A baseline leaderboard ``NAME`` is the CSV file ``baselines/NAME.csv``: a header ``model,<task
column>,...`` (the suite's ``column`` names) and one row per model with its published per-task
values (x100, as printed; an empty cell means "not published"). Averages and ranks are not stored:
they are computed (``protocol.scoring``). The optional file ``baselines/NAME.stale.csv``
(header ``row,column,reason``) marks single cells the leaderboard never re-ran. ``NAME`` is either
a suite's name or a suite's name plus ``-VARIANT`` (``ko-leaderboard-v2-dense``), which is how a
leaderboard knows its suite. ``baselines/README.md`` documents the shipped files.

This module imports neither pytest nor torch nor mteb.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.suite import shipped_suites
from pytest_koembed.resources import baselines_dir

NAME_HEADER = "model"
STALE_HEADER = ("row", "column", "reason")


@dataclass(frozen=True)
class BaselineRow:
    """One published model row: its name, its per-task values, and its stale cells."""

    name: str
    values: dict[str, float]  # column -> published value (x100); unpublished columns are absent
    stale: dict[str, str] = field(default_factory=dict)  # column -> why the cell is stale

    def is_stale(self, column: str) -> bool:
        return column in self.stale


@dataclass(frozen=True)
class Leaderboard:
    """A published leaderboard table, as loaded from ``baselines/``.

    ``rows`` maps each row name (exactly as published, e.g. ``Qwen/Qwen3-Embedding-8B-bf16``) to
    its column -> value dict, in file order (the order that breaks ties in the rendered tables).
    ``stale`` maps ``(row, column)`` to the reason a cell is stale. ``suite`` is the name of the
    suite the leaderboard belongs to (None when its name matches no shipped suite).
    """

    name: str
    suite: str | None
    columns: tuple[str, ...]
    rows: dict[str, dict[str, float]]
    stale: dict[tuple[str, str], str]
    path: Path

    def row(self, name: str) -> BaselineRow:
        """The row called exactly ``name`` (KeyError if there is none); see :func:`find_row`."""
        values = self.rows[name]
        stale = {col: why for (row, col), why in self.stale.items() if row == name}
        return BaselineRow(name=name, values=dict(values), stale=stale)

    def __iter__(self) -> Iterator[BaselineRow]:
        return (self.row(name) for name in self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def shipped_leaderboards() -> dict[str, Path]:
    """The baseline leaderboards shipped with the plugin: name -> CSV file, sorted by name."""
    directory = baselines_dir()
    if not directory.is_dir():
        return {}
    return {
        p.name[: -len(".csv")]: p
        for p in sorted(directory.glob("*.csv"))
        if not p.name.endswith(".stale.csv")
    }


def suite_of(name: str) -> str | None:
    """The shipped suite of the leaderboard ``name``: it is ``SUITE`` or ``SUITE-VARIANT``."""
    matches = [s for s in shipped_suites() if name == s or name.startswith(s + "-")]
    return max(matches, key=len) if matches else None


def leaderboards_for_suite(suite: str) -> list[str]:
    """Names of the shipped leaderboards of ``suite``, sorted (``[]`` when there are none)."""
    return [name for name in shipped_leaderboards() if suite_of(name) == suite]


ENCODER_TYPES = ("dense", "sparse")


def leaderboard_encoder_type(name: str) -> str | None:
    """The kind of model a leaderboard ranks: ``dense`` / ``sparse`` when its name ends in that
    variant (``ko-leaderboard-v2-sparse``), else None (every kind)."""
    for kind in ENCODER_TYPES:
        if name.endswith(f"-{kind}"):
            return kind
    return None


def leaderboards_for_encoder(suite: str, encoder_type: str) -> list[str]:
    """The shipped leaderboards of ``suite`` that rank a model of ``encoder_type`` (dense or
    sparse): a sparse run is compared with the sparse table, a dense run with the dense one."""
    return [
        name
        for name in leaderboards_for_suite(suite)
        if leaderboard_encoder_type(name) in (None, encoder_type)
    ]


SPARSE_LOADER = "sentence-transformers-sparse"


def run_encoder_type(model: object) -> str:
    """``sparse`` or ``dense``: the kind of a run's model, from its encoder info or its run
    record's ``model`` block (``encoder_type``, else the loader; a field that differs between
    xdist workers is a list). Anything that does not say sparse is dense."""
    if not isinstance(model, dict):
        return "dense"
    said: list[object] = []
    for key in ("encoder_type", "loader"):
        value = model.get(key)
        said += value if isinstance(value, list) else [value]
    return "sparse" if "sparse" in said or SPARSE_LOADER in said else "dense"


def _resolve(name_or_path: str) -> tuple[str, Path]:
    shipped = shipped_leaderboards()
    if name_or_path in shipped:
        return name_or_path, shipped[name_or_path]
    path = Path(name_or_path).expanduser()
    if path.suffix == ".csv" or "/" in name_or_path:
        if not path.is_file():
            raise KoembedError(f"baseline file {str(path)!r} does not exist")
        return path.stem, path
    raise KoembedError(
        f"unknown baseline leaderboard {name_or_path!r}: no file {name_or_path}.csv in "
        f"{baselines_dir()}; shipped: {', '.join(shipped) or 'none'}"
    )


def _read_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each non-blank CSV row; a one-line error if unreadable."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f, strict=True)
            for cells in reader:
                if cells and any(c.strip() for c in cells):
                    yield reader.line_num, [c.strip() for c in cells]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise KoembedError(f"cannot read baseline file {path}: {exc}") from None


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise KoembedError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise KoembedError(f"{where}: {text!r} is not a finite number")
    return value


def load_leaderboard(name: str) -> Leaderboard:
    """Load a shipped baseline leaderboard by name (``ko-leaderboard-v1``) or a CSV file by path.

    Raises a one-line :class:`KoembedError` for a missing file, a bad header, a row with the wrong
    number of cells or a non-numeric value (naming file and line), a repeated row name, or a stale
    cell that names an unknown row or column.
    """
    lb_name, path = _resolve(name)
    lines = _read_rows(path)
    first = next(lines, None)
    if first is None:
        raise KoembedError(f"baseline file {path} is empty; expected a header 'model,<columns>'")
    _, header = first
    if header[0] != NAME_HEADER or len(header) < 2:
        raise KoembedError(
            f"{path} line 1: the header must be 'model,<task column>,...', got {','.join(header)!r}"
        )
    columns = tuple(header[1:])
    dupes = sorted({c for c in columns if columns.count(c) > 1 or not c})
    if dupes:
        raise KoembedError(f"{path} line 1: empty or repeated column name(s): {dupes}")
    rows: dict[str, dict[str, float]] = {}
    for line, cells in lines:
        where = f"{path} line {line}"
        if len(cells) != len(header):
            raise KoembedError(f"{where}: expected {len(header)} cells, got {len(cells)}")
        row_name = cells[0]
        if not row_name:
            raise KoembedError(f"{where}: empty model name")
        if row_name in rows:
            raise KoembedError(f"{where}: row {row_name!r} appears twice")
        rows[row_name] = {
            col: _number(text, f"{where}, column {col!r}")
            for col, text in zip(columns, cells[1:], strict=True)
            if text
        }
    stale = _load_stale(path.with_name(f"{lb_name}.stale.csv"), rows, columns)
    return Leaderboard(
        name=lb_name,
        suite=suite_of(lb_name),
        columns=columns,
        rows=rows,
        stale=stale,
        path=path,
    )


def _load_stale(
    path: Path, rows: dict[str, dict[str, float]], columns: tuple[str, ...]
) -> dict[tuple[str, str], str]:
    if not path.is_file():
        return {}
    lines = _read_rows(path)
    first = next(lines, None)
    if first is None or tuple(first[1]) != STALE_HEADER:
        raise KoembedError(f"{path} line 1: the header must be '{','.join(STALE_HEADER)}'")
    stale: dict[tuple[str, str], str] = {}
    for line, cells in lines:
        where = f"{path} line {line}"
        if len(cells) != len(STALE_HEADER):
            raise KoembedError(f"{where}: expected 3 cells (row,column,reason), got {len(cells)}")
        row, column, reason = cells
        if row not in rows:
            raise KoembedError(f"{where}: no row {row!r} in the leaderboard")
        if column not in columns:
            raise KoembedError(f"{where}: no column {column!r} in the leaderboard")
        stale[(row, column)] = reason
    return stale


def find_row(leaderboard: Leaderboard, model_row_name: str) -> BaselineRow | None:
    """The published row for a model, or None.

    ``model_row_name`` is the name as the leaderboard prints it, dtype suffix included
    (``Qwen/Qwen3-Embedding-8B-bf16``). An exact match wins; otherwise a case-insensitive match
    is used when exactly one row matches.
    """
    if model_row_name in leaderboard.rows:
        return leaderboard.row(model_row_name)
    folded = model_row_name.casefold()
    matches = [name for name in leaderboard.rows if name.casefold() == folded]
    return leaderboard.row(matches[0]) if len(matches) == 1 else None
