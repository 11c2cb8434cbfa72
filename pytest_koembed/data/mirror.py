"""``koembed mirror``: copy a suite's task data into the local layout, for air-gapped runs.

On a machine that reaches the Hugging Face Hub, ``koembed mirror DIR`` loads every mteb task of a
suite through mteb (the split and subset the suite scores) and writes it to
``DIR/<task>/<subset>/<split>/*.jsonl``; ``pytest --koembed-data-dir DIR`` then runs offline on
exactly those rows. ``--from SRC`` reads another local copy instead of the Hub, which validates
and normalises it (the same reader the plugin uses). Pairs are written de-duplicated, as scored;
the number of repeated pairs dropped goes into ``koembed-mirror.json`` next to the rows
(``data.layout.MIRROR_META``), so that a run from the mirror still reports them. The tasks
of an mteb benchmark suite (``mteb-kor-v2``, ``mteb:<name>``) are written as mteb has them, every
(subset, split) the benchmark keeps, nothing de-duplicated, each folder with its
``koembed-mirror.json`` too (its ``source``: the Hub dataset and revision the rows came from).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_koembed.errors import HubDownloadError, KoembedError
from pytest_koembed.protocol.suite import load_suite


def mirror_suite(
    suite_name: str, out_dir: Path, *, source: Path | None, columns: list[str]
) -> list[tuple[str, Path, int, int]]:
    """Write the suite's mteb tasks (or the chosen columns) under ``out_dir``.

    Returns (column, split folder, examples written, repeated pairs dropped) per task.
    """
    from pytest_koembed.data.export import export_task
    from pytest_koembed.data.prepare import prepare_task

    suite = load_suite(suite_name)
    specs = [suite.task(c) for c in columns] if columns else list(suite.tasks)
    written = []
    for spec in specs:
        if spec.is_custom:
            continue  # custom tasks already live in the layout, next to their suite file
        try:
            prepared = prepare_task(spec, source)
        except HubDownloadError as exc:  # its advice (--koembed-data-dir) is the plugin's
            raise KoembedError(
                f"{exc.problem}; run koembed mirror where the Hub is reachable, or copy an "
                "existing local copy in the layout with --from SRC"
            ) from None
        if spec.benchmark is not None:  # an mteb benchmark's task: each of its cells, as is
            written.extend(_export_cells(spec, prepared, out_dir))
            continue
        path = export_task(spec, prepared, out_dir)
        written.append((spec.column, path, prepared.n_examples, prepared.duplicates_dropped))
    return written


# The file of a split folder whose lines are its examples, and what they count.
_COUNTED = {
    "pairs.jsonl": "pairs",
    "texts.jsonl": "texts",
    "queries.jsonl": "queries",
    "test.jsonl": "texts",
}


def _export_cells(spec: Any, prepared: Any, out_dir: Path) -> list[tuple[str, Path, int, int]]:
    """Every (subset, split) of an mteb benchmark's task to its own folder, rows as mteb has them
    (nothing de-duplicated), each with its ``koembed-mirror.json``: where the rows came from."""
    from dataclasses import replace

    from pytest_koembed.data.export import export_task, write_mirror_meta

    written = []
    for subset, split in spec.cells:
        cell = replace(spec, split=split, subset=subset)
        path = export_task(cell, prepared.task, out_dir)
        counted = next((n for n in _COUNTED if (path / n).is_file()), None)
        rows = sum(1 for _ in (path / counted).open(encoding="utf-8")) if counted else 0
        sizes = {_COUNTED[counted]: rows} if counted else {}
        write_mirror_meta(path, cell, prepared.source, sizes, 0)
        written.append((f"{spec.column} [{subset}/{split}]", path, rows, 0))
    return written
