"""What one task's evaluation produced, and the run record that collects them.

These are plain data: they travel from xdist workers to the controller as JSON-able dicts
(``TaskScore.to_dict`` / ``from_dict``) and are written to ``--koembed-json``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError


@dataclass
class TaskScore:
    """The outcome of one task of a suite (one pytest item)."""

    column: str
    task: str
    split: str
    subset: str
    category: str
    value_rule: str
    status: str = "ok"  # "ok" or "error"
    value: float | None = None  # leaderboard value x100, unrounded
    shown: float | None = None  # value rounded half-up to 2 decimals (what tables show)
    # The value's bootstrap interval over its examples, same scale: {"level", "low", "high"};
    # None without per-example results (``stats.intervals.task_ci``).
    ci: dict[str, Any] | None = None
    # Why ``ci`` is None although the task has per-example results, or how many resamples it
    # left out (their value is undefined: ``stats.bootstrap.percentile_interval``); None
    # otherwise.
    ci_note: str | None = None
    # all raw mteb scores, 0-1 scale; None where mteb gave NaN
    scores: dict[str, float | None] = field(default_factory=dict)
    main_score: str | None = None  # mteb's main score key for the task
    n_examples: int = 0  # pairs / texts / queries scored, after de-duplication
    sizes: dict[str, int] = field(default_factory=dict)  # e.g. {"queries": 20, "documents": 60}
    duplicates_dropped: int = 0
    seconds: float = 0.0
    prompts: dict[str, str | None] = field(default_factory=dict)  # role -> exact prompt used
    texts_encoded: int = 0  # texts handed to the encoder (both sides of pairs, queries + docs)
    # Encode once (``embedding_store``): {"total": texts mteb asked embeddings for, "distinct":
    # distinct (method, prompt, text) among them, "encoded": handed to the encoder, "from_cache":
    # served from the run's store (met earlier in the task or in an earlier task of the worker,
    # or read from the --koembed-cache); total = encoded + from_cache}. With --koembed-cache also
    # "from_disk": of the distinct rows served, those read from the persistent cache.
    texts: dict[str, int] | None = None
    encode_seconds: float = 0.0  # time spent in the encoder's calls
    # A sparse (SPLADE) model's active dimensions per text (``sparse.SparsityCounts``):
    # {"mean_active_dims", "vocab_size", "texts", "empty_texts", "by_role"}; None for dense.
    sparsity: dict[str, Any] | None = None
    worker: str | None = None  # the pytest-xdist worker that ran the task (gw0, ...); None serial
    source: str = ""  # where the rows came from (local path or Hub dataset@revision)
    error: str | None = None  # one-line reason when status == "error"
    # From the mteb task's metadata (what model cards and mteb result files name):
    task_type: str | None = None  # mteb task type, e.g. "STS", "PairClassification"
    dataset_path: str | None = None  # Hub dataset id (``local/<task>`` for custom local tasks)
    dataset_revision: str | None = None  # dataset revision in the task's metadata
    # mteb's own TaskResult of this task, as JSON (``TaskResult.model_dump(mode="json")``,
    # non-finite numbers as None): what ``--koembed-results-dir`` writes back out.
    mteb_result: dict[str, Any] | None = None
    # The comparison with the baseline (``gate.verdicts``); None when there was none.
    baseline: float | None = None  # the baseline cell (x100, 2 decimals)
    baseline_source: str | None = None  # e.g. "ko-leaderboard-v1 row 'BAAI/bge-m3'"
    baseline_stale: str | None = None  # why the baseline cell is stale
    delta: float | None = None  # shown - baseline
    tolerance: float | None = None  # points the task may fall below the baseline
    verdict: str | None = None  # pass | improved | regressed | warned | no baseline
    verdict_note: str | None = None  # the regression message, or why there is no baseline
    # The paired comparison with a saved baseline's per-example results (``compare``): the
    # paired bootstrap interval of ``delta`` ({level, low, high}; unadjusted), the one-sided
    # p-value for a drop, and (at the end of the run) its Holm adjustment over the run's paired
    # tasks.
    delta_ci: dict[str, float] | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    not_paired: str | None = None  # why a baseline with per-example results could not pair
    # One-sided (issue 17): ``p_value`` is the p for a drop; ``p_improvement`` the p for a gain
    # and its Holm adjustment in the improvement family (which never fails a run); ``swaps``
    # how the p-values were drawn (``stats.permutation.PairedTest.to_dict``); ``mde`` the drop
    # caught with 80% power at the task's Holm step (points; None: cannot fail at this level);
    # ``cannot_fail`` why the task's test cannot reach the run's level at all.
    p_improvement: float | None = None
    p_improvement_adjusted: float | None = None
    swaps: dict[str, Any] | None = None
    mde: float | None = None
    cannot_fail: str | None = None
    # The statistic the paired test ran on when it is not the task value (clustering: "leave-one-out
    # centroid accuracy"); ``delta``, ``delta_ci`` and ``p_value`` are then that statistic's
    # (x100) while ``value`` stays mteb's v-measure.
    gated_on: str | None = None
    # Against a baseline without per-example results: whether the baseline value lies within
    # this run's own interval (the gap cannot be told from the test set's sampling noise).
    baseline_within_ci: bool | None = None
    # Why the task has no per-example results although it was scored (``per_example``).
    examples_error: str | None = None
    # The per-example results (a pandas DataFrame, ``evaluation.per_example``). Not part of
    # ``to_dict``: they travel and are stored apart, in the run record's parquet sidecar.
    examples: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(replace(self, examples=None))
        del data["examples"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskScore:
        """From ``to_dict`` output; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)} - {"examples"}
        return cls(**{k: v for k, v in data.items() if k in known})


def read_run_record(path: str | Path, *, kind: str = "run record") -> dict[str, Any]:
    """Read a run record JSON file (``--koembed-json``, also a baseline file).

    ``kind`` names the file in the one-line KoembedError for a missing, unreadable, non-JSON
    file or one that is not a run record (a JSON object with a ``tasks`` list).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KoembedError(f"{kind} {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KoembedError(f"cannot read {kind} {p}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KoembedError(f"{kind} {p} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise KoembedError(
            f"{kind} {p} is not a run record: expected a JSON object with a 'tasks' list "
            "(write one with --koembed-json or --koembed-save-baseline)"
        )
    return data


def run_suite_name(record: Mapping[str, Any]) -> str | None:
    """The suite name a run record names (``suite.name``), or None."""
    info = record.get("suite")
    name = info.get("name") if isinstance(info, Mapping) else info
    return name if isinstance(name, str) else None


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a temp file beside ``path``, then rename it over ``path``.

    A reader never sees half a file, and a killed writer leaves only a stray temp file. The
    file gets the usual mode (umask), not mkstemp's 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(record: Mapping[str, Any], path: Path) -> None:
    """Write atomically (temp file + rename): a reader never sees half a record."""

    def dump(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False, indent=2, allow_nan=False)
            f.write("\n")

    atomic_write(path, dump)
