"""The sidecar file and pairing: writing, transporting and reading back the per-example frames.

``<record stem>.examples.parquet`` holds every task's frame next to the run record, whose
``"examples"`` block names it with its SHA-256 (:func:`load_examples` checks it);
:func:`write_run_files` writes both, sidecar first. Frames travel between processes as text
(:func:`frame_to_text`). :func:`pair_examples` pairs two runs' frames on their example keys.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pytest_koembed.errors import KoembedError
from pytest_koembed.evaluation.frames import (
    CENTROID_COLUMN,
    EXAMPLES_SUFFIX,
    PAIR_SCORE_COLUMNS,
    STS_SCORE_COLUMNS,
    frame_kind,
)
from pytest_koembed.records import atomic_write


def _with_occurrence(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with ``_n``: 0 for a key's first row, 1 for its second, ... (duplicates pair up
    in the order they appear)."""
    out = frame.reset_index(drop=True)
    return out.assign(_n=out.groupby("key", sort=False).cumcount())


def pair_examples(
    base: pd.DataFrame, new: pd.DataFrame, *, name: str = "the task"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two frames on the same examples, aligned row by row in the new run's row order.

    The order is the one mteb scored the examples in (the frames keep it), and mteb's sums follow
    it: a retrieval value is ``round(sum(per-query values) / n, 5)``, and at a 5-decimal boundary
    another order can round the other way. Keeping it, the paired values equal the records'
    (the baseline's too, when it scored the rows in the same order, as the same data does).

    Refuses with a one-line KoembedError, saying how many examples match, when the two runs were
    made on different rows or different kinds of task. A key that appears more than once (the
    same content twice, rare after de-duplication) pairs its n-th row in one run with its n-th
    row in the other.
    """
    if frame_kind(base) != frame_kind(new):
        raise KoembedError(
            f"baseline for {name} holds {frame_kind(base)} results, this run {frame_kind(new)}"
        )
    b, n = _with_occurrence(base), _with_occurrence(new)
    b_ids = set(zip(b["key"], b["_n"], strict=True))
    n_ids = set(zip(n["key"], n["_n"], strict=True))
    if b_ids != n_ids:
        matched = len(b_ids & n_ids)
        extra = f" (the baseline has {len(b):,})" if len(b) != len(n) else ""
        raise KoembedError(
            f"baseline for {name} was made on different rows: {matched:,} of {len(n):,} examples "
            f"match{extra}"
        )
    position = {kn: i for i, kn in enumerate(zip(b["key"], b["_n"], strict=True))}
    order = [position[kn] for kn in zip(n["key"], n["_n"], strict=True)]
    b = b.iloc[order].drop(columns="_n").reset_index(drop=True)
    n = n.drop(columns="_n").reset_index(drop=True)
    return b, n


def frame_to_text(frame: pd.DataFrame) -> str:
    """A frame as JSON-able text (base64 of parquet bytes): how it travels from an xdist worker."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def frame_from_text(text: str) -> pd.DataFrame:
    """The inverse of :func:`frame_to_text`."""
    return pd.read_parquet(io.BytesIO(base64.b64decode(text)))


def examples_path(record_path: str | Path) -> Path:
    """Where the sidecar of a run record goes: ``run.json`` -> ``run.examples.parquet``."""
    path = Path(record_path)
    return path.with_name(path.stem + EXAMPLES_SUFFIX)


def file_sha256(path: Path) -> str:
    """A file's sha256 (hex), read in 1 MiB chunks: the checksum records keep of their sidecar."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_examples(frames: Mapping[str, pd.DataFrame], path: str | Path) -> dict[str, Any]:
    """Write the frames (suite column -> frame) as one parquet file, atomically.

    Returns the run record's ``"examples"`` block: ``{"file": NAME, "sha256": HEX, "tasks":
    {column: rows}}`` (``file`` relative to the record's folder).
    """
    target = Path(path)
    parts = [
        frame.assign(column=column, kind=frame_kind(frame))[["column", "kind", *frame.columns]]
        for column, frame in frames.items()
    ]
    table = (
        pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["column", "kind"])
    )
    atomic_write(target, lambda tmp: table.to_parquet(tmp, index=False, compression="zstd"))
    return {
        "file": target.name,
        "sha256": file_sha256(target),
        "tasks": {column: len(frame) for column, frame in frames.items()},
    }


_INT_COLUMNS = ("label", "level", "run", "n_texts")


# The union table interleaves the kinds' columns: put each frame's back in their written order.
_LEADING_COLUMNS = {
    "sts": ("key", "gold", *STS_SCORE_COLUMNS),
    "pairs": ("key", "label", *PAIR_SCORE_COLUMNS),
    "retrieval": ("key", "query_id"),
    "clustering": ("key", "v_measure", "level", "run", "n_texts", CENTROID_COLUMN),
    "classification": ("key", "true_label", "predicted", "accuracy"),
}


def read_examples_file(path: str | Path) -> dict[str, pd.DataFrame]:
    """Split a sidecar file into its per-task frames (no checksum check: see load_examples)."""
    table = pd.read_parquet(path)
    frames: dict[str, pd.DataFrame] = {}
    for column, part in table.groupby("column", sort=False):
        frame = part.drop(columns=["column", "kind"]).dropna(axis=1, how="all")
        frame = frame.reset_index(drop=True)
        for name in _INT_COLUMNS:
            if name in frame.columns:
                frame[name] = frame[name].astype(np.int64)
        for name in ("top_ids", "top_scores", "relevant_ids", "relevant_grades", "predicted"):
            if name in frame.columns:
                frame[name] = frame[name].map(list)
        first = _LEADING_COLUMNS.get(frame_kind(frame), ())
        order = [c for c in first if c in frame.columns]
        frames[str(column)] = frame[order + [c for c in frame.columns if c not in order]]
    return frames


def load_examples(
    source: str | Path | Mapping[str, Any], *, base_dir: str | Path | None = None
) -> dict[str, pd.DataFrame]:
    """The per-example frames of a run record (suite column -> frame), checksum verified.

    ``source`` is the record's path, or the record itself (its sidecar is then looked up in
    ``base_dir``, default the current folder). Raises a one-line KoembedError when the record
    names no sidecar, the file is missing, or its checksum does not match.
    """
    from pytest_koembed.records import read_run_record

    if isinstance(source, Mapping):
        record, where, folder = source, "run record", Path(base_dir or ".")
    else:
        record = read_run_record(source)
        where, folder = f"run record {source}", Path(source).parent
    block = record.get("examples")
    if not isinstance(block, Mapping) or not block.get("file"):
        raise KoembedError(
            f"{where} holds no per-example results (written by an older version, or no task "
            "was scored); save the run again with --koembed-json or --koembed-save-baseline"
        )
    path = folder / str(block["file"])
    if not path.is_file():
        raise KoembedError(
            f"{where} names per-example results {path}, which does not exist (keep the "
            f"{EXAMPLES_SUFFIX} file next to its record)"
        )
    actual = file_sha256(path)
    if actual != block.get("sha256"):
        raise KoembedError(
            f"per-example results {path} do not match {where} (sha256 {actual[:12]}..., the "
            f"record says {str(block.get('sha256'))[:12]}...); the file was changed or belongs "
            "to another run"
        )
    try:
        return read_examples_file(path)
    except (OSError, ValueError) as exc:  # pyarrow errors are ValueErrors / OSErrors
        raise KoembedError(f"cannot read per-example results {path}: {exc}") from None


def _kept_frames(path: Path, record: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """Frames of the file about to be replaced, for the tasks ``record`` keeps unchanged from it
    (``--koembed-update-baseline`` keeps the old cells of tasks this run did not score)."""
    if not path.is_file():
        return {}
    try:
        from pytest_koembed.records import read_run_record

        old = read_run_record(path)
        frames = load_examples(path)
    except KoembedError:
        return {}
    old_tasks = {t.get("column"): t for t in old.get("tasks", []) if isinstance(t, Mapping)}
    return {
        t["column"]: frames[t["column"]]
        for t in record.get("tasks", [])
        if t.get("column") in frames and old_tasks.get(t["column"]) == t
    }


def write_run_files(
    record: Mapping[str, Any],
    path: str | Path,
    frames: Mapping[str, pd.DataFrame],
    write_json: Callable[[Mapping[str, Any], Path], None],
) -> None:
    """Write a run record to ``path`` with its per-example sidecar beside it.

    The sidecar holds the frames of the record's scored tasks; it is written first, then the
    record naming it with its checksum (``"examples"``; None when no task has per-example
    results). Both are atomic replacements.
    """
    target = Path(path)
    scored = [t["column"] for t in record.get("tasks", []) if t.get("status") == "ok"]
    missing = [c for c in scored if c not in frames]
    kept = _kept_frames(target, record) if missing else {}
    chosen = {c: frames[c] if c in frames else kept[c] for c in scored if c in frames or c in kept}
    out = dict(record)
    out["examples"] = write_examples(chosen, examples_path(target)) if chosen else None
    write_json(out, target)
