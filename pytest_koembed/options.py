"""The plugin's options, declared once as data, and their checks before anything runs.

:data:`OPTIONS` is the table of every setting (name, type, ini key, default, help, check, how an
ini path resolves). ``plugin.pytest_addoption`` registers ``--koembed-NAME`` from it, and the
``koembed`` subcommands take the same setting as ``--NAME`` (``pytest_koembed.cli``), with the
same help, type and default. :data:`EXIT_STATUSES` is the one exit-status table of both.

The checks: one line each, naming the fix.

The plugin turns a :class:`KoembedError` raised here into a pytest usage error (exit status 4) at
configure time, before a model is loaded or a task evaluated. Without these checks a bad output
path surfaced only after the whole run, and a bad device or pooling once per task.

Plain module: no pytest; torch is imported only to check a ``cuda`` / ``mps`` device.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def positive_int(text: str) -> int:
    """An ``argparse`` type for counts and sizes: zero and negative values are usage errors."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive whole number, got {text!r}"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {value}")
    return value


def _writable_dir(option: str, target: Path) -> None:
    """The directory ``target`` would be written in (or its nearest existing ancestor, since
    writers create missing parents) must be a directory we can create files in."""
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise KoembedError(f"{option} {target}: {ancestor} is not a directory")
    try:  # what the writers do (a temp file, renamed); os.access is wrong for root and /proc
        fd, probe = tempfile.mkstemp(prefix=".koembed-probe.", dir=ancestor)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise KoembedError(
            f"{option} {target}: cannot write in {ancestor} ({reason}); choose another path"
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(option: str, path: Path) -> None:
    """``path`` can be written as a file: not a directory, in a directory we can write."""
    if path.is_dir():
        raise KoembedError(f"{option} {path}: is a directory; give a file path")
    _writable_dir(option, path)


def check_output_dir(option: str, path: Path) -> None:
    """``path`` is (or can be created as) a directory we can write in."""
    if path.exists() and not path.is_dir():
        raise KoembedError(f"{option} {path}: exists and is not a directory")
    _writable_dir(option, path / "x")


def check_device(device: str) -> None:
    """A device name the encoder loader accepts; a CUDA or MPS device must exist here."""
    value = (device or "auto").strip().lower()
    if not _DEVICE.fullmatch(value):
        raise KoembedError(
            f"--koembed-device {device!r} is not one of auto, cpu, cuda, cuda:N, mps"
        )
    if value.startswith(("cuda", "mps")):  # only then is torch worth importing now
        from pytest_koembed.models.dtypes import resolve_device

        resolve_device(value)


def check_pooling(pooling: str | None) -> None:
    if pooling is None:
        return
    from pytest_koembed.models.pooling import _normalise_pooling

    _normalise_pooling(pooling)


def check_model_type(model: str, model_type: str | None) -> None:
    """``--koembed-model-type dense|sparse`` agrees with a local model directory's own files
    (a Hub id is checked once its snapshot is had, before any task runs: the plugin)."""
    from pytest_koembed.models.loading import check_model_type as check

    check(model, model_type or "auto")


def check_instructions(path: str | None) -> None:
    """A user's instruction profiles file exists and is well-formed (read again per session)."""
    if path is None:
        return
    from pytest_koembed.protocol.instructions import load_profile

    load_profile(Path(path))


def check_cache_dir(option: str, path: Path) -> None:
    """``--koembed-cache``: a directory, or a path where one can be made. One that cannot be
    written is no usage error: the run then goes on without storing (one warning)."""
    if path.exists() and not path.is_dir():
        raise KoembedError(f"{option} {path}: exists and is not a directory; give a directory")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise KoembedError(f"{option} {path}: {ancestor} is not a directory")


def check_devices(spec: str | None, model: str, *, xdist: bool) -> None:
    """``--koembed-devices``: devices this machine has, no xdist, a model the pool can encode.

    Under pytest-xdist every worker would start its own pool on the same devices (and the workers
    are pinned to one GPU each), so the two are refused together.
    """
    if spec is None:
        return
    from pytest_koembed.models.devices import resolve_devices

    resolve_devices(spec)
    if xdist:
        raise KoembedError(
            "--koembed-devices cannot be combined with -n/--dist: every xdist worker would start "
            "its own pool on the same devices; run the large task alone with --koembed-devices "
            "(-k TASK) and the rest with -n"
        )
    path = Path(model).expanduser()
    if path.is_dir() and not (path / "modules.json").is_file():
        from pytest_koembed.models.loading import devices_need_sentence_transformers

        raise KoembedError(devices_need_sentence_transformers(model))


# ---------------------------------------------------------------------------------------------
# The option table: every setting of the plugin, declared once
# ---------------------------------------------------------------------------------------------

PYTEST_PREFIX = "--koembed-"
INI_PREFIX = "koembed_"

INI_DIR = "ini-dir"
"""An ini value that is a path resolves against the ini file's directory (pytest's rule for
``paths`` ini values); the same setting on the command line resolves against the current one."""
INI_SUITE = "suite"
"""As :data:`INI_DIR`, but a suite name (``sample``, ``mteb:...``) is not a path."""


@dataclass(frozen=True)
class Option:
    """One setting: ``--koembed-NAME`` for pytest, ``--NAME`` on a ``koembed`` subcommand.

    ``kind`` is ``value`` (one value), ``append`` (repeatable) or ``flag`` (no value).
    ``ini`` is the ini type (``string``, ``args``, ``bool``) when the ini file can set it (key
    ``koembed_NAME``); ``ini_path`` how such an ini value resolves (:data:`INI_DIR`,
    :data:`INI_SUITE`, or None for a value that is no path). ``output`` is ``file`` / ``dir``
    for an output path checked up front (:func:`check_outputs`); ``check`` checks a value up
    front (``check(flag, value)``). ``cli_raw``: a subcommand hands the text as written to the
    same check (whose message quotes it), instead of converting it with ``type`` first.
    """

    name: str
    help: str
    metavar: str | None = None
    kind: str = "value"
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    default: Any = None
    ini: str | None = None
    ini_path: str | None = None
    output: str | None = None
    check: Callable[[str, Any], None] | None = None
    cli_raw: bool = False

    @property
    def flag(self) -> str:
        """The pytest spelling, ``--koembed-NAME``."""
        return PYTEST_PREFIX + self.name

    @property
    def cli_flag(self) -> str:
        """The ``koembed`` subcommand spelling, ``--NAME``."""
        return "--" + self.name

    @property
    def dest(self) -> str:
        """``config.getoption`` / namespace attribute: ``koembed_NAME``."""
        return INI_PREFIX + self.name.replace("-", "_")

    @property
    def ini_key(self) -> str | None:
        return self.dest if self.ini else None

    @property
    def takes_value(self) -> bool:
        return self.kind != "flag"

    @property
    def type_name(self) -> str:
        """The value's type in words, for the reference."""
        if self.kind == "flag":
            return "flag"
        if self.choices:
            return "one of " + ", ".join(self.choices)
        base = {int: "int", float: "float", positive_int: "positive int"}.get(
            self.type,  # type: ignore[arg-type]
            "path" if self.output or self.ini_path or self.metavar in ("PATH", "DIR") else "text",
        )
        return f"{base}, repeatable" if self.kind == "append" else base

    def argparse_kwargs(self, *, cli: bool = False) -> dict[str, Any]:
        """The keyword arguments of ``add_argument`` / pytest's ``addoption``."""
        kwargs: dict[str, Any] = {"dest": self.dest, "help": self.help}
        if self.kind == "flag":  # one the ini can set is None when not given: the ini decides
            kwargs["action"] = "store_true"
            kwargs["default"] = None if self.ini else False
            return kwargs
        kwargs["action"] = "append" if self.kind == "append" else "store"
        kwargs["default"] = [] if self.kind == "append" else self.default
        if self.type is not None and not (cli and self.cli_raw):
            kwargs["type"] = self.type
        if self.choices:
            kwargs["choices"] = list(self.choices)
        else:
            kwargs["metavar"] = self.metavar
        return kwargs


def _device(flag: str, value: Any) -> None:
    check_device(value)


def _pooling(flag: str, value: Any) -> None:
    check_pooling(value)


def _instructions(flag: str, value: Any) -> None:
    check_instructions(value)


OPTIONS: tuple[Option, ...] = (
    Option(
        "model",
        "model to benchmark: a local model directory or a Hugging Face Hub id. Nothing of the "
        "plugin runs without it. Runs the benchmark only, unless test paths are named or "
        "--koembed-with-tests is given.",
        metavar="MODEL",
    ),
    Option(
        "with-tests",
        "with --koembed-model, also collect and run the repository's own tests (naming test "
        "paths on the command line does the same)",
        kind="flag",
    ),
    Option(
        "suite",
        "suite to run: a shipped name (ko-leaderboard-v1 [default], ko-leaderboard-v2, "
        "mteb-kor-v2, sample), the path of a suite TOML file, or mteb:<benchmark name> for any "
        "mteb benchmark",
        metavar="NAME|PATH",
        ini="string",
        ini_path=INI_SUITE,
    ),
    Option(
        "data-dir",
        "read task data from DIR/<mteb task>/<subset>/<split>/*.jsonl instead of the Hub",
        metavar="DIR",
        ini="string",
        ini_path=INI_DIR,
    ),
    Option("json", "write the run record (all scores) to PATH", metavar="PATH", output="file"),
    Option(
        "row",
        "write the run's leaderboard rows (overall and category tables, ranked among the "
        "published models) as Markdown to PATH; - prints them in the terminal summary",
        metavar="PATH|-",
        output="file",
    ),
    Option(
        "model-index",
        "write Hugging Face model-card YAML (model-index, one result per task) to PATH",
        metavar="PATH",
        output="file",
    ),
    Option(
        "model-card",
        "merge the model-index into this existing model card's front matter (the rest of the "
        "file is kept as it is)",
        metavar="README.md",
        output="file",
    ),
    Option(
        "results-dir",
        "write mteb result files to DIR/results/<org__model>/<revision>/ (readable by "
        "mteb.ResultCache(DIR))",
        metavar="DIR",
        output="dir",
    ),
    Option(
        "plot",
        "draw the run against its baseline and the leaderboard (needs matplotlib)",
        metavar="PATH.png",
        output="file",
    ),
    Option(
        "shard",
        "run the K-th of N disjoint parts of the selected tasks, balanced by estimated cost; "
        "merge the shards' --koembed-json records with koembed merge",
        metavar="K/N",
    ),
    Option(
        "shard-costs",
        "with --koembed-shard, split by the measured seconds of each task in RECORD, the "
        "--koembed-json record of an earlier run of the suite (a merged one too); tasks it lacks "
        "use their estimated cost, scaled to its seconds",
        metavar="RECORD",
        ini="string",
        ini_path=INI_DIR,
    ),
    Option(
        "scheme",
        "weighting scheme for the weighted average (default: the suite's own)",
        metavar="NAME",
    ),
    Option("revision", "model revision (Hub models)", metavar="REV"),
    Option(
        "dtype",
        "weights dtype; auto = half precision for LLM-based models on GPU, fp32 otherwise",
        choices=("auto", "fp32", "fp16", "bf16"),
        default="auto",
    ),
    Option(
        "device",
        "device; under -n each worker takes its own GPU",
        metavar="auto|cpu|cuda|cuda:N|mps",
        default="auto",
        check=_device,
    ),
    Option(
        "devices",
        "encode large calls (a retrieval corpus) on several devices at once, one process per "
        "device (sentence-transformers models; not with -n); cpu:N = N CPU processes",
        metavar="cuda:0,cuda:1|cpu:N",
    ),
    Option(
        "devices-min-texts",
        "with --koembed-devices: encode calls of at least N texts on the devices, smaller ones "
        "in the pytest process (default 10000)",
        metavar="N",
        type=positive_int,
    ),
    Option(
        "pooling",
        "override the model's pooling: a sentence-transformers model's Pooling module gets "
        "this mode, a plain transformers model pools its hidden states so (last = last-token); "
        "not for sparse (SPLADE) models",
        metavar="mean|cls|max|last-token",
        check=_pooling,
    ),
    Option(
        "model-type",
        "auto [default] = what the model's files say: a sentence-transformers SparseEncoder "
        "(SPLADE) is sparse, anything else dense; sparse also loads a bare masked-LM checkpoint "
        "as SPLADE",
        choices=("auto", "dense", "sparse"),
        default="auto",
    ),
    Option(
        "batch-size",
        "encode batch size (default 32; halves on CUDA out-of-memory)",
        metavar="N",
        type=positive_int,
    ),
    Option("max-length", "max tokens per text", metavar="N", type=positive_int),
    Option(
        "trust-remote-code",
        "allow models that ship their own code (off by default)",
        kind="flag",
    ),
    Option(
        "instructions",
        "instruction profiles file (same format as the shipped one) to use instead",
        metavar="PATH",
        check=_instructions,
    ),
    Option(
        "no-instructions",
        "encode every text without any instruction or prompt",
        kind="flag",
    ),
    Option(
        "no-reuse",
        "encode every text each time a task asks for it: no in-run reuse of embeddings across "
        "or within tasks (for debugging; values agree to float precision)",
        kind="flag",
    ),
    Option(
        "cache",
        "keep embeddings across runs in DIR (created if missing; shared safely by concurrent "
        "runs and xdist workers); off by default",
        metavar="DIR",
        ini="string",
        ini_path=INI_DIR,
    ),
    Option(
        "no-cache",
        "use no embedding cache, even where --koembed-cache or ini koembed_cache names one",
        kind="flag",
    ),
    Option(
        "baseline",
        "what each task is compared with: auto [default] = the suite's leaderboard row named "
        "like the model (dtype suffix included), leaderboard:ROW, a baseline file (a run "
        "record), or none",
        metavar="auto|leaderboard:ROW|PATH|none",
        ini="string",
        ini_path=INI_DIR,
    ),
    Option(
        "tolerance",
        "points a task may fall below its baseline (default 1.0): POINTS, CATEGORY=POINTS or "
        "COLUMN=POINTS, comma-separated or repeated; the most specific wins",
        metavar="[NAME=]POINTS",
        kind="append",
        ini="args",
    ),
    Option(
        "rule",
        "how a task is compared with a baseline file: auto [default] = the paired test where "
        "the file's per-example results (its .examples.parquet sidecar) hold the task, else the "
        "tolerance rule, and a sidecar that is missing or changed is a usage error; paired = "
        "every task paired (one that cannot be fails); tolerance = the tolerance rule only (the "
        "sidecar is not read)",
        metavar="auto|paired|tolerance",
        ini="string",
    ),
    Option(
        "fail-under",
        "fail the run when an average is below POINTS: weighted=60,retrieval=75; an incomplete "
        "average fails",
        metavar="NAME=POINTS",
        kind="append",
        ini="args",
    ),
    Option(
        "strict",
        "a regression against a stale baseline cell fails (default: it only warns)",
        kind="flag",
        ini="bool",
    ),
    Option(
        "save-baseline",
        "write this run as a baseline file (a run record) to PATH",
        metavar="PATH",
        output="file",
    ),
    Option(
        "update-baseline",
        "rewrite the --koembed-baseline PATH file from this run and list what changed "
        "(regressions are reported, not failed)",
        kind="flag",
    ),
    Option(
        "confidence",
        "confidence level of the intervals and the paired gate (default 0.95); 1 - LEVEL is the "
        "chance that an unchanged model fails the paired gate, at most: drops are tested "
        "one-sided at 1 - LEVEL, Holm over the run, so 0.90 lets an unchanged model fail at "
        "most 10%% of runs (more power), 0.99 at most 1%%",
        metavar="LEVEL",
        type=float,
        ini="string",
        cli_raw=True,
    ),
    Option(
        "min-effect",
        "paired gate: the smallest significant drop that counts as a regression (default 0.5 "
        "points)",
        metavar="POINTS",
        type=float,
        ini="string",
        cli_raw=True,
    ),
    Option(
        "history",
        "add this run (if complete: every task of the suite scored, not a shard, not "
        "interrupted) to the checkpoint history in DIR, one record and sidecar per run, safe "
        "for concurrent jobs; koembed history DIR shows the checkpoints",
        metavar="DIR",
        ini="string",
        ini_path=INI_DIR,
        output="dir",
    ),
    Option(
        "history-keep-examples",
        "with --koembed-history: keep the per-example sidecars of the last N runs of each kind "
        "(and of the best by the weighted average); older runs keep their record (default 10)",
        metavar="N",
        type=positive_int,
        ini="string",
    ),
    Option(
        "split",
        "test [default] = the suite's own splits (the leaderboard's test splits); dev = each "
        "task's development split where the suite names one (dev_split; the others are left "
        "out): select checkpoints on dev, report the chosen one on test",
        choices=("test", "dev"),
        default="test",
    ),
    Option(
        "checkpoint",
        "the checkpoint's name in the run record and the history (default: read from the model "
        "path, checkpoint-5000 / step_5000 / epoch-3, and its trainer_state.json); its step "
        "orders the history",
        metavar="NAME",
    ),
)
"""Every ``--koembed-*`` option, in ``pytest --help`` order."""

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}

INI_HELP = {
    "cache": "default for --koembed-cache (relative to the ini file)",
    "tolerance": "tolerances, as for --koembed-tolerance",
    "fail_under": "gates, as for --koembed-fail-under",
}


def ini_help(option: Option) -> str:
    """The ``pytest --help`` line of an ini key."""
    text = INI_HELP.get(option.name.replace("-", "_"))
    if text is not None:
        return text
    relative = " (relative to the ini file)" if option.ini_path else ""
    if option.name == "suite":
        relative = " (a path is relative to the ini file)"
    return f"default for {option.flag}{relative}"


def value_options() -> set[str]:
    """The ``--koembed-*`` spellings that take a value (written ``--koembed-X=VALUE``)."""
    return {option.flag for option in OPTIONS if option.takes_value}


def resolve_ini_path(option: Option, value: str | None, ini_dir: Path | None) -> str | None:
    """An ini value of ``option`` as the plugin uses it: a path against the ini file's
    directory (:data:`INI_DIR`), a suite path so too but a suite name as it is; other values
    and a missing ini file unchanged."""
    if not value or option.ini_path is None or ini_dir is None:
        return value
    if option.ini_path == INI_SUITE:
        from pytest_koembed.protocol.suite import MTEB_PREFIX, shipped_suites

        looks_like_path = (
            value.endswith(".toml") or "/" in value or (ini_dir / value).expanduser().exists()
        )
        if value.startswith(MTEB_PREFIX) or value in shipped_suites() or not looks_like_path:
            return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else ini_dir / path)


def check_outputs(paths: Mapping[str, Path | None], extra: Sequence[tuple[str, Path]] = ()) -> None:
    """Check every output path of the table up front: ``paths`` maps each :class:`Option` with
    an ``output`` to its resolved path (None when not given; ``--koembed-row -`` is None). A
    caller that leaves one out fails here (``KeyError``), so none can be forgotten.
    ``extra`` are further (flag, file) pairs, e.g. the baseline file that
    ``--koembed-update-baseline`` rewrites."""
    for option in OPTIONS:
        if option.output is None:
            continue
        path = paths[option.name]
        if path is None:
            continue
        if option.output == "dir":
            check_output_dir(option.flag, path)
        else:
            check_output_file(option.flag, path)
    for flag, path in extra:
        check_output_file(flag, path)


def check_values(values: Mapping[str, Any]) -> None:
    """The table's value checks (device, pooling, instructions) of the given values."""
    for option in OPTIONS:
        if option.check is not None and option.name in values:
            option.check(option.flag, values[option.name])


# ---------------------------------------------------------------------------------------------
# Exit statuses: one table for pytest and the koembed command
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExitStatus:
    code: int
    name: str  # pytest.ExitCode's name
    pytest: str  # what it means for a pytest run with the plugin
    koembed: str  # which koembed subcommands give it, and when


EXIT_STATUSES: tuple[ExitStatus, ...] = (
    ExitStatus(0, "OK", "every task passed its verdict and every gate passed", "success"),
    ExitStatus(
        1,
        "TESTS_FAILED",
        "a task failed or regressed, a gate failed, or a requested output was not written",
        "koembed gate: the same; koembed compare: a significant regression",
    ),
    ExitStatus(
        2,
        "INTERRUPTED",
        "interrupted (Ctrl-C, -x / --maxfail); the run record says complete: false",
        "not used",
    ),
    ExitStatus(3, "INTERNAL_ERROR", "an internal error of pytest or a plugin", "not used"),
    ExitStatus(
        4,
        "USAGE_ERROR",
        "bad input: an option, an ini value or an output path, one line before anything runs",
        "bad input in every subcommand: a usage error or a one-line error",
    ),
    ExitStatus(
        5,
        "NO_TESTS_COLLECTED",
        "no task selected (every task deselected)",
        "koembed gate: the record holds no task",
    ),
)
"""pytest's exit statuses, as the plugin and ``koembed`` give them."""

EXIT = {status.name: status.code for status in EXIT_STATUSES}
EXIT_OK = EXIT["OK"]
EXIT_FAILED = EXIT["TESTS_FAILED"]
EXIT_USAGE = EXIT["USAGE_ERROR"]
EXIT_NO_TASKS = EXIT["NO_TESTS_COLLECTED"]
