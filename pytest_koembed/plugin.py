"""pytest glue: options, one item per suite task, fixtures, and results to the controller.

Everything else lives in plain modules that know nothing of pytest: suite -> data/evaluation ->
scoring -> reports. Under pytest-xdist each item's ``TaskScore`` travels to the controller as an
attribute of its test report (pytest serialises report attributes), and only the controller
writes the summary and files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_koembed.errors import KoembedError
from pytest_koembed.gate.gates import GateResult
from pytest_koembed.gate.verdicts import BaselinePolicy, Judgement
from pytest_koembed.options import positive_int
from pytest_koembed.protocol.spec import CATEGORIES, Suite, TaskSpec
from pytest_koembed.protocol.suite import load_suite
from pytest_koembed.records import TaskScore

CATEGORY_MARKERS = {category.lower(): category for category in CATEGORIES}


@dataclass
class KoembedSession:
    """State of one pytest run with the plugin active (kept in ``config.stash``)."""

    model: str
    suite: Suite
    scheme: str
    data_dir: Path | None
    json_path: Path | None
    batch_size: int
    confidence: float = 0.95  # --koembed-confidence: the level of every interval
    started: float = field(default_factory=time.time)
    scores: dict[str, TaskScore] = field(default_factory=dict)  # by column
    examples: dict[str, Any] = field(default_factory=dict)  # column -> per-example DataFrame
    encoder_infos: list[dict[str, Any]] = field(default_factory=list)  # one per worker
    selected: list[str] = field(default_factory=list)  # columns collected and not deselected
    policy: BaselinePolicy | None = None  # --koembed-baseline / -tolerance / -fail-under ...
    gate_results: list[GateResult] = field(default_factory=list)  # controller, at the end
    reports: Any = None  # publish.ReportOptions: --koembed-row / -model-index / -plot ...
    published: Any = None  # gate.Published: reports and baseline files, once written
    benchmark_only: bool = True  # the repository's own tests are not collected
    complete: bool = False  # every selected task reported and the session ended normally
    interrupted: str | None = None  # why the session ended early (Ctrl-C, internal error, -x)
    write_errors: dict[str, str] = field(default_factory=dict)  # output -> why not written
    intervals: Any = None  # intervals.RunIntervals: the averages' intervals, on the controller
    shard: Any = None  # shards.Shard: --koembed-shard K/N
    shard_block: dict[str, Any] | None = None  # the record's "shard": this shard's tasks ...
    # Encode once: this worker's embedding store and the encoder object it belongs to.
    embedding_store: Any = None
    store_encoder: Any = None
    cache_dir: Path | None = None  # --koembed-cache (None: off); see embedding_cache


SESSION_KEY = pytest.StashKey[KoembedSession]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("koembed", "Korean embedding benchmark (pytest-koembed)")
    group.addoption(
        "--koembed-model",
        metavar="MODEL",
        help="model to benchmark: a local model directory or a Hugging Face Hub id. "
        "Nothing of the plugin runs without it. Runs the benchmark only, unless test paths "
        "are named or --koembed-with-tests is given.",
    )
    group.addoption(
        "--koembed-with-tests",
        action="store_true",
        help="with --koembed-model, also collect and run the repository's own tests "
        "(naming test paths on the command line does the same)",
    )
    group.addoption(
        "--koembed-suite",
        metavar="NAME|PATH",
        help="suite to run: a shipped name (ko-leaderboard-v1 [default], ko-leaderboard-v2, "
        "mteb-kor-v2, sample), the path of a suite TOML file, or mteb:<benchmark name> for "
        "any mteb benchmark",
    )
    group.addoption(
        "--koembed-data-dir",
        metavar="DIR",
        help="read task data from DIR/<mteb task>/<subset>/<split>/*.jsonl instead of the Hub",
    )
    group.addoption(
        "--koembed-json", metavar="PATH", help="write the run record (all scores) to PATH"
    )
    group.addoption(
        "--koembed-row",
        metavar="PATH|-",
        help="write the run's leaderboard rows (overall and category tables, ranked among the "
        "published models) as Markdown to PATH; - prints them in the terminal summary",
    )
    group.addoption(
        "--koembed-model-index",
        metavar="PATH",
        help="write Hugging Face model-card YAML (model-index, one result per task) to PATH",
    )
    group.addoption(
        "--koembed-model-card",
        metavar="README.md",
        help="merge the model-index into this existing model card's front matter (the rest of "
        "the file is kept as it is)",
    )
    group.addoption(
        "--koembed-results-dir",
        metavar="DIR",
        help="write mteb result files to DIR/results/<org__model>/<revision>/ (readable by "
        "mteb.ResultCache(DIR))",
    )
    group.addoption(
        "--koembed-plot",
        metavar="PATH.png",
        help="draw the run against its baseline and the leaderboard (needs matplotlib)",
    )
    group.addoption(
        "--koembed-shard",
        metavar="K/N",
        help="run the K-th of N disjoint parts of the selected tasks, balanced by estimated "
        "cost; merge the shards' --koembed-json records with koembed merge",
    )
    group.addoption(
        "--koembed-scheme",
        metavar="NAME",
        help="weighting scheme for the weighted average (default: the suite's own)",
    )
    group.addoption("--koembed-revision", metavar="REV", help="model revision (Hub models)")
    group.addoption(
        "--koembed-dtype",
        choices=["auto", "fp32", "fp16", "bf16"],
        default="auto",
        help="weights dtype; auto = half precision for LLM-based models on GPU, fp32 otherwise",
    )
    group.addoption(
        "--koembed-device",
        default="auto",
        metavar="auto|cpu|cuda|cuda:N|mps",
        help="device; under -n each worker takes its own GPU",
    )
    group.addoption(
        "--koembed-devices",
        metavar="cuda:0,cuda:1|cpu:N",
        help="encode large calls (a retrieval corpus) on several devices at once, one process "
        "per device (sentence-transformers models; not with -n); cpu:N = N CPU processes",
    )
    group.addoption(
        "--koembed-devices-min-texts",
        type=positive_int,
        default=None,
        metavar="N",
        help="with --koembed-devices: encode calls of at least N texts on the devices, smaller "
        "ones in the pytest process (default 10000)",
    )
    group.addoption(
        "--koembed-pooling",
        metavar="mean|cls|max|last-token",
        help="override the model's pooling: a sentence-transformers model's Pooling module "
        "gets this mode, a plain transformers model pools its hidden states so (last = "
        "last-token); not for sparse (SPLADE) models",
    )
    group.addoption(
        "--koembed-model-type",
        choices=["auto", "dense", "sparse"],
        default="auto",
        help="auto [default] = what the model's files say: a sentence-transformers SparseEncoder "
        "(SPLADE) is sparse, anything else dense; sparse also loads a bare masked-LM checkpoint "
        "as SPLADE",
    )
    group.addoption(
        "--koembed-batch-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="encode batch size (default 32; halves on CUDA out-of-memory)",
    )
    group.addoption(
        "--koembed-max-length",
        type=positive_int,
        default=None,
        metavar="N",
        help="max tokens per text",
    )
    group.addoption(
        "--koembed-trust-remote-code",
        action="store_true",
        help="allow models that ship their own code (off by default)",
    )
    group.addoption(
        "--koembed-instructions",
        metavar="PATH",
        help="instruction profiles file (same format as the shipped one) to use instead",
    )
    group.addoption(
        "--koembed-no-instructions",
        action="store_true",
        help="encode every text without any instruction or prompt",
    )
    group.addoption(
        "--koembed-no-reuse",
        action="store_true",
        help="encode every text each time a task asks for it: no in-run reuse of embeddings "
        "across or within tasks (for debugging; values agree to float precision)",
    )
    group.addoption(
        "--koembed-cache",
        metavar="DIR",
        help="keep embeddings across runs in DIR (created if missing; shared safely by "
        "concurrent runs and xdist workers); off by default",
    )
    group.addoption(
        "--koembed-no-cache",
        action="store_true",
        help="use no embedding cache, even where --koembed-cache or ini koembed_cache names one",
    )
    group.addoption(
        "--koembed-baseline",
        metavar="auto|leaderboard:ROW|PATH|none",
        help="what each task is compared with: auto [default] = the suite's leaderboard row named "
        "like the model (dtype suffix included), leaderboard:ROW, a baseline file (a run record), "
        "or none",
    )
    group.addoption(
        "--koembed-tolerance",
        action="append",
        default=[],
        metavar="[NAME=]POINTS",
        help="points a task may fall below its baseline (default 1.0): POINTS, CATEGORY=POINTS "
        "or COLUMN=POINTS, comma-separated or repeated; the most specific wins",
    )
    group.addoption(
        "--koembed-rule",
        metavar="auto|paired|tolerance",
        help="how a task is compared with a baseline file: auto [default] = the paired test "
        "where the file's per-example results (its .examples.parquet sidecar) hold the task, "
        "else the tolerance rule, and a sidecar that is missing or changed is a usage error; "
        "paired = every task paired (one that cannot be fails); tolerance = the tolerance rule "
        "only (the sidecar is not read)",
    )
    group.addoption(
        "--koembed-fail-under",
        action="append",
        default=[],
        metavar="NAME=POINTS",
        help="fail the run when an average is below POINTS: weighted=60,retrieval=75; an "
        "incomplete average fails",
    )
    group.addoption(
        "--koembed-strict",
        action="store_true",
        default=None,
        help="a regression against a stale baseline cell fails (default: it only warns)",
    )
    group.addoption(
        "--koembed-save-baseline",
        metavar="PATH",
        help="write this run as a baseline file (a run record) to PATH",
    )
    group.addoption(
        "--koembed-update-baseline",
        action="store_true",
        help="rewrite the --koembed-baseline PATH file from this run and list what changed "
        "(regressions are reported, not failed)",
    )
    group.addoption(
        "--koembed-confidence",
        dest="koembed_confidence",
        type=float,
        default=None,
        metavar="LEVEL",
        help="confidence level of the intervals and the paired gate (default 0.95); 1 - LEVEL "
        "is the chance that an unchanged model fails the paired gate, at most: drops are "
        "tested one-sided at 1 - LEVEL, Holm over the run, so 0.90 lets an unchanged model "
        "fail at most 10%% of runs (more power), 0.99 at most 1%%",
    )
    group.addoption(
        "--koembed-min-effect",
        dest="koembed_min_effect",
        type=float,
        default=None,
        metavar="POINTS",
        help="paired gate: the smallest significant drop that counts as a regression "
        "(default 0.5 points)",
    )
    _VALUE_OPTIONS.update(_value_option_names(group))
    parser.addini("koembed_suite", "default suite for --koembed-suite", default=None)
    parser.addini("koembed_data_dir", "default for --koembed-data-dir", default=None)
    parser.addini("koembed_baseline", "default for --koembed-baseline", default=None)
    parser.addini(
        "koembed_cache", "default for --koembed-cache (relative to the ini file)", default=None
    )
    parser.addini(
        "koembed_tolerance", "tolerances, as for --koembed-tolerance", type="args", default=[]
    )
    parser.addini(
        "koembed_fail_under", "gates, as for --koembed-fail-under", type="args", default=[]
    )
    parser.addini("koembed_strict", "default for --koembed-strict", type="bool", default=False)
    parser.addini("koembed_rule", "default for --koembed-rule", default=None)
    parser.addini("koembed_confidence", "default for --koembed-confidence", default=None)
    parser.addini("koembed_min_effect", "default for --koembed-min-effect", default=None)


_VALUE_OPTIONS: set[str] = set()  # the --koembed-* options that take a value


def _value_option_names(group: Any) -> set[str]:
    """The long names of the group's options that take a value (not store_true flags)."""
    names = set()
    for option in getattr(group, "options", []):
        if option.attrs().get("nargs") != 0:  # a store_true flag takes no argument
            names.update(n for n in option.names() if n.startswith("--"))
    return names


def _check_invocation(config: pytest.Config) -> None:
    """How the options were written (``invocation``): a usage error for a space-separated
    ``--koembed-*`` value, an empty ``--koembed-model``, or ``--koembed-*`` options on the
    command line / in PYTEST_ADDOPTS without a model. An ini ``addopts`` is left alone."""
    from pytest_koembed import invocation

    if getattr(config.option, "help", False) or getattr(config.option, "version", False):
        return
    args = [str(a) for a in config.invocation_params.args]
    env_args = invocation.addopts_args(os.environ.get("PYTEST_ADDOPTS"))
    problem = invocation.space_separated(args, env_args, _VALUE_OPTIONS)
    if problem is None:
        problem = invocation.model_problem(config.getoption("koembed_model"), args, env_args)
    if problem is not None:
        raise pytest.UsageError(problem)


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(f"koembed_{name}")
    if value is None:
        try:
            value = config.getini(f"koembed_{name}")
        except ValueError:
            value = None
    return value or None


def _report_options(config: pytest.Config) -> Any:
    """The report options (``publish.ReportOptions``), checked before the run starts."""
    from pytest_koembed.reports.outputs import ReportOptions

    def path(name: str) -> Path | None:
        value = config.getoption(f"koembed_{name}")
        return Path(value).expanduser().resolve() if value else None

    row = config.getoption("koembed_row")
    options = ReportOptions(
        row=row if row in (None, "-") else str(Path(row).expanduser().resolve()),
        model_index=path("model_index"),
        model_card=path("model_card"),
        results_dir=path("results_dir"),
        plot=path("plot"),
    )
    try:
        options.check()
    except KoembedError as exc:
        raise pytest.UsageError(str(exc)) from None
    return options


def _baseline_policy(config: pytest.Config, suite: Suite, confidence: float) -> BaselinePolicy:
    """The baseline and gate options (command line over ini); bad input is a usage error.

    ``confidence`` is the checked ``--koembed-confidence``: one level for intervals and gate."""
    from pytest_koembed.gate.compare import GateSettings, check_min_effect
    from pytest_koembed.gate.verdicts import make_policy

    baseline = config.getoption("koembed_baseline")
    base_dir = None
    if baseline is None:
        baseline = config.getini("koembed_baseline") or None
        if baseline and config.inipath is not None:
            base_dir = config.inipath.parent  # a path in the ini file is relative to it
    strict = config.getoption("koembed_strict")
    save = config.getoption("koembed_save_baseline")
    try:
        gate = GateSettings(
            confidence,
            check_min_effect(
                config.getoption("koembed_min_effect")
                if config.getoption("koembed_min_effect") is not None
                else config.getini("koembed_min_effect") or None
            ),
        )
        policy = make_policy(
            suite,
            baseline=baseline,
            tolerance=[*config.getini("koembed_tolerance"), *config.getoption("koembed_tolerance")],
            fail_under=[
                *config.getini("koembed_fail_under"),
                *config.getoption("koembed_fail_under"),
            ],
            strict=bool(config.getini("koembed_strict") if strict is None else strict),
            save_path=Path(save).expanduser().resolve() if save else None,
            update=bool(config.getoption("koembed_update_baseline")),
            base_dir=base_dir,
            gate=gate,
            rule=config.getoption("koembed_rule") or config.getini("koembed_rule") or None,
        )
    except KoembedError as exc:
        raise pytest.UsageError(str(exc)) from None
    policy.given = _given_gate_options(config)
    return policy


def _gate_settings(config: pytest.Config) -> dict[str, Any]:
    """A shard's gate options (command line over ini), carried in its run record: a shard
    checks no gate, and ``koembed gate`` (which reads no ini) applies them to the merged record
    (``shards.GATE_SETTINGS``)."""
    from pytest_koembed.run.shards import gate_settings

    strict = config.getoption("koembed_strict")
    min_effect = config.getoption("koembed_min_effect")
    return gate_settings(
        fail_under=[*config.getini("koembed_fail_under"), *config.getoption("koembed_fail_under")],
        tolerance=[*config.getini("koembed_tolerance"), *config.getoption("koembed_tolerance")],
        strict=bool(config.getini("koembed_strict") if strict is None else strict),
        min_effect=min_effect if min_effect is not None else config.getini("koembed_min_effect"),
        rule=config.getoption("koembed_rule") or config.getini("koembed_rule"),
    )


def _prompt_settings(config: pytest.Config) -> dict[str, Any]:
    """Which prompts a shard used: the instruction profiles (shipped, or a file and its
    sha256) or none; ``koembed merge`` refuses shards that differ."""
    import hashlib

    if config.getoption("koembed_no_instructions"):
        return {"disabled": True, "instructions": None}
    profile = config.getoption("koembed_instructions")
    if not profile:
        return {"disabled": False, "instructions": None}
    try:
        digest = hashlib.sha256(Path(profile).read_bytes()).hexdigest()[:12]
    except OSError:
        digest = "unreadable"
    return {"disabled": False, "instructions": f"{Path(profile).name} (sha256 {digest}...)"}


def _given_gate_options(config: pytest.Config) -> dict[str, str]:
    """The options that only change verdicts, as the user set them (command line or ini), so
    that one without effect on this run can say so (``BaselinePolicy.no_effect``)."""
    given: dict[str, str] = {}
    tolerance = [*config.getini("koembed_tolerance"), *config.getoption("koembed_tolerance")]
    if tolerance:
        given["tolerance"] = ",".join(tolerance)
    min_effect = config.getoption("koembed_min_effect")
    if min_effect is None:
        min_effect = config.getini("koembed_min_effect") or None
    if min_effect is not None:
        given["min_effect"] = str(min_effect)
    return given


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "koembed: a Korean embedding benchmark task")
    for marker, category in CATEGORY_MARKERS.items():
        config.addinivalue_line("markers", f"{marker}: a koembed task of category {category}")
    if not _is_worker(config):
        _check_invocation(config)
    model = config.getoption("koembed_model")
    if not model:
        return
    from pytest_koembed.protocol.scoring import SCHEMES

    try:
        suite = load_suite(_option(config, "suite") or "ko-leaderboard-v1")
    except KoembedError as exc:
        raise pytest.UsageError(str(exc)) from None
    for spec in {spec.category: spec for spec in suite.tasks}.values():
        if spec.category not in CATEGORIES:  # an mteb benchmark's other task types (mteb_suites)
            config.addinivalue_line(
                "markers", f"{spec.marker}: a koembed task of category {spec.category}"
            )
    scheme = config.getoption("koembed_scheme") or suite.scheme
    if scheme not in SCHEMES:
        raise pytest.UsageError(
            f"unknown --koembed-scheme {scheme!r}; choose one of {', '.join(SCHEMES)}"
        )
    data_dir_option = _option(config, "data_dir")
    data_dir = Path(data_dir_option).expanduser().resolve() if data_dir_option else None
    if data_dir is not None and not data_dir.is_dir():
        raise pytest.UsageError(
            f"--koembed-data-dir {data_dir_option}: no such directory (expected the layout "
            "DIR/<mteb task>/<subset>/<split>/*.jsonl)"
        )
    json_option = config.getoption("koembed_json")
    from pytest_koembed.gate.compare import check_confidence

    try:
        level = config.getoption("koembed_confidence")  # 0 is a value here, not "unset"
        if level is None:
            confidence = check_confidence(
                config.getini("koembed_confidence"), "ini koembed_confidence"
            )
        else:
            confidence = check_confidence(level)
    except KoembedError as exc:
        raise pytest.UsageError(str(exc)) from None
    cache_dir = _cache_dir(config)
    session = KoembedSession(
        model=model,
        cache_dir=cache_dir,
        suite=suite,
        scheme=scheme,
        data_dir=data_dir,
        json_path=Path(json_option).resolve() if json_option else None,
        batch_size=config.getoption("koembed_batch_size") or 32,
        confidence=confidence,
        policy=_baseline_policy(config, suite, confidence),
        reports=_report_options(config),
        shard=_shard_option(config),
        # Without named paths pytest would collect the invocation dir or testpaths: the
        # repository's own tests, whose modules may import heavy things. Named paths are asked for.
        benchmark_only=not (
            config.getoption("koembed_with_tests")
            or config.args_source == pytest.Config.ArgsSource.ARGS
        ),
    )
    if not _is_worker(config):  # the workers get the same options: check them once
        _check_options(config, session)
    config.stash[SESSION_KEY] = session
    if not _is_worker(config):
        from pytest_koembed.stats.intervals import RunIntervals

        session.intervals = RunIntervals(confidence)
        config.pluginmanager.register(KoembedController(config, session), "koembed-controller")
    worker = _worker_id(config)
    if worker:
        _share_cpu_threads()
    if worker and config.getoption("koembed_device") in ("auto", "cuda"):
        # Must happen before anything initialises CUDA in this worker process.
        from pytest_koembed.models.pinning import pin_worker_gpu

        pin_worker_gpu(worker, os.environ)


def _shard_option(config: pytest.Config) -> Any:
    """``--koembed-shard K/N`` as a ``shards.Shard`` (None without it); a usage error if bad."""
    text = config.getoption("koembed_shard")
    if text is None:
        return None
    from pytest_koembed.run.shards import parse_shard

    try:
        return parse_shard(text)
    except KoembedError as exc:
        raise pytest.UsageError(str(exc)) from None


def _check_options(config: pytest.Config, session: KoembedSession) -> None:
    """Output paths, device, pooling and instructions, before anything runs (usage errors)."""
    from pytest_koembed import options as check

    reports, policy = session.reports, session.policy
    files: list[tuple[str, Path | None]] = [
        ("--koembed-json", session.json_path),
        ("--koembed-save-baseline", policy.save_path if policy else None),
        ("--koembed-row", Path(reports.row) if reports.row not in (None, "-") else None),
        ("--koembed-model-index", reports.model_index),
        ("--koembed-model-card", reports.model_card),
        ("--koembed-plot", reports.plot),
    ]
    if policy is not None and policy.update:
        files.append(("--koembed-baseline", policy.choice.path))
    try:
        for option, path in files:
            if path is not None:
                check.check_output_file(option, path)
        if reports.results_dir is not None:
            check.check_output_dir("--koembed-results-dir", reports.results_dir)
        check.check_device(config.getoption("koembed_device"))
        check.check_devices(
            config.getoption("koembed_devices"), session.model, xdist=_uses_xdist(config)
        )
        check.check_pooling(config.getoption("koembed_pooling"))
        check.check_model_type(session.model, config.getoption("koembed_model_type"))
        check.check_instructions(config.getoption("koembed_instructions"))
        if session.cache_dir is not None:
            check.check_cache_dir("--koembed-cache", session.cache_dir)
    except KoembedError as exc:
        raise pytest.UsageError(str(exc)) from None


def _cache_dir(config: pytest.Config) -> Path | None:
    """--koembed-cache DIR (relative to the invocation dir), else ini koembed_cache (relative
    to the ini file); None with --koembed-no-cache or when neither names one (the default)."""
    if config.getoption("koembed_no_cache"):
        return None
    value = config.getoption("koembed_cache")
    base = Path.cwd()
    if not value:
        value = config.getini("koembed_cache") or None
        if value and config.inipath is not None:
            base = config.inipath.parent
    if not value:
        return None
    return (base / Path(value).expanduser()).resolve()


def _uses_xdist(config: pytest.Config) -> bool:
    """This run hands its items to pytest-xdist workers (``-n N`` / ``--dist``)."""
    return getattr(config.option, "dist", "no") != "no" and bool(getattr(config.option, "tx", None))


def _share_cpu_threads() -> None:
    """Give each xdist worker its share of the CPU cores.

    Every worker's torch and scikit-learn would otherwise start one OpenMP thread per core, and
    n workers x n spinning threads on n cores run several times slower than one process.
    """
    if "OMP_NUM_THREADS" in os.environ:  # the user decided
        return
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import sys

    if "torch" in sys.modules:  # already imported (e.g. by a conftest): tell it directly
        sys.modules["torch"].set_num_threads(threads)


def pytest_report_header(config: pytest.Config) -> str | None:
    state = config.stash.get(SESSION_KEY, None)
    if state is None or not state.benchmark_only:
        return None
    return (
        "koembed: benchmark only (the repository's own tests run with --koembed-with-tests "
        "or named test paths)"
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Benchmark only: nothing on disk is collected, so no test module is even imported."""
    state = config.stash.get(SESSION_KEY, None)
    return True if state is not None and state.benchmark_only else None


def _column_of(nodeid: str) -> str | None:
    """The suite column of a koembed item id (``koembed::Retrieval::Ko-StrategyQA``)."""
    parts = nodeid.split("::", 2)
    return parts[2] if len(parts) == 3 and parts[0] == "koembed" else None


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _worker_id(config: pytest.Config) -> str | None:
    """This process's xdist worker id (``gw0``), None on the controller or in a serial run.

    From the config, not ``PYTEST_XDIST_WORKER``: a pytest run started inside a worker (pytester)
    inherits that variable without being a worker.
    """
    workerinput = getattr(config, "workerinput", None)
    return workerinput.get("workerid") if isinstance(workerinput, dict) else None


class KoembedGroup(pytest.Collector):
    """A container node (``koembed`` and its categories) so ids read koembed::Retrieval::X."""

    def collect(self) -> list[pytest.Item | pytest.Collector]:  # pragma: no cover - unused
        return []


class KoembedItem(pytest.Function):
    """One benchmark task. A ``pytest.Function`` so that fixtures (and overrides) apply."""

    koembed_spec: TaskSpec

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.koembed_spec.data_dir or self.session.path, None, self.nodeid


def _run_task(request: pytest.FixtureRequest, koembed_encoder: Any, koembed_prompts: Any) -> None:
    """Evaluate the item's task with the session's encoder and record the score."""
    from pytest_koembed.evaluation.run import evaluate_task, failed_score

    item = request.node
    spec: TaskSpec = item.koembed_spec
    session = request.config.stash[SESSION_KEY]
    info = _encoder_info(koembed_encoder, session.model)
    item.koembed_encoder_info = info
    started = time.perf_counter()
    status, progress = _live_progress(request.config, spec.column)
    try:
        score = evaluate_task(
            spec,
            koembed_encoder,
            data_dir=session.data_dir,
            prompts=koembed_prompts,
            model_name=info["name"],
            revision=info.get("revision"),
            similarity=info.get("similarity") or "cosine",
            batch_size=session.batch_size,
            progress=progress,
            store=_embedding_store(session, koembed_encoder),
            reuse=not request.config.getoption("koembed_no_reuse"),
        )
    except KoembedError as exc:
        error = str(exc)
    else:
        error = None
        score.worker = _worker_id(request.config)
        from pytest_koembed.stats.intervals import task_ci_and_note

        score.ci, score.ci_note = task_ci_and_note(
            score.examples, score.value_rule, spec.column, session.confidence, score.main_score
        )
    finally:
        if status is not None:
            status.clear()  # before pytest writes the item's outcome
    if error is not None:  # failed outside the except block: no chained traceback in the report
        item.koembed_score = failed_score(spec, error, time.perf_counter() - started)
        item.koembed_score.worker = _worker_id(request.config)
        _judge(session, info, item.koembed_score)  # records the baseline cell only
        pytest.fail(error, pytrace=False)
    item.koembed_score = score
    judgement = _judge(session, info, score)
    item.user_properties.append(("koembed_value", score.shown))
    if score.main_score and score.main_score in score.scores:
        item.user_properties.append((score.main_score, score.scores[score.main_score]))
    from pytest_koembed.protocol.scoring import rule_keys

    for key in rule_keys(spec.value_rule):
        if key in score.scores and key != score.main_score:
            item.user_properties.append((key, score.scores[key]))
    if score.verdict is not None:
        item.user_properties.append(("koembed_verdict", score.verdict))
        if score.baseline is not None:
            item.user_properties.append(("koembed_baseline", score.baseline))
    if judgement.warns:  # shown in the warnings summary (relayed by xdist), never a failure
        import warnings

        from pytest_koembed.gate.verdicts import StaleBaselineWarning

        warnings.warn_explicit(
            StaleBaselineWarning(judgement.message), None, "<koembed baseline>", 0
        )
    if judgement.fails:
        pytest.fail(judgement.message or f"{spec.column} regressed", pytrace=False)


def _embedding_store(session: KoembedSession, encoder: Any) -> Any:
    """The worker's in-run embedding store for this encoder object. A store belongs to one
    encoder: a ``koembed_encoder`` override that builds a new encoder per task gets a new one.
    With --koembed-cache, the persistent cache sits behind it (``embedding_cache``)."""
    from pytest_koembed.models.store import MemoryStore

    if session.embedding_store is None or session.store_encoder is not encoder:
        session.embedding_store = MemoryStore()
        session.store_encoder = encoder
        if session.cache_dir is not None:
            session.embedding_store = _cached_store(session, encoder, session.embedding_store)
    return session.embedding_store


def _cached_store(session: KoembedSession, encoder: Any, memory: Any) -> Any:
    """``memory`` with the disk cache behind it, or ``memory`` alone (with one warning) for an
    encoder that declares no fingerprint."""
    from pytest_koembed.models.cache import CUSTOM_FINGERPRINT, open_store

    assert session.cache_dir is not None
    info = _encoder_info(encoder, session.model)
    store = open_store(session.cache_dir, encoder, info=info, warn=_cache_warning, memory=memory)
    if store is None:
        _cache_warning(
            f"embedding cache not used: the koembed_encoder {type(encoder).__qualname__} "
            f"declares no {CUSTOM_FINGERPRINT} (a string that changes whenever its vectors would)"
        )
        return memory
    return store


def _cache_warning(message: str) -> None:
    """One line in pytest's warnings summary (relayed from xdist workers), never a failure."""
    import warnings

    from pytest_koembed.models.cache import EmbeddingCacheWarning

    warnings.warn_explicit(EmbeddingCacheWarning(message), None, "<koembed cache>", 0)


def _live_progress(config: pytest.Config, column: str) -> tuple[Any, Any]:
    """(StatusLine, TaskProgress) for a task's encoding on an interactive terminal, else
    (None, None): not with -q, not when stdout is not a terminal (CI logs, pipes) or has no
    ANSI markup, and not on an xdist worker, which has no terminal of its own."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or _is_worker(config):
        return None, None
    writer = config.get_terminal_writer()
    isatty = reporter.isatty  # a method since pytest 8.4, a bool before
    if config.get_verbosity() < 0 or not (isatty() if callable(isatty) else isatty):
        return None, None
    if not writer.hasmarkup:  # --color=no, TERM=dumb: no cursor control codes either
        return None, None
    import sys

    from pytest_koembed.evaluation.progress import StatusLine, TaskProgress

    def write(text: str) -> None:
        with capture.global_and_fixture_disabled():  # the task runs under output capture
            sys.stdout.write(text)
            sys.stdout.flush()

    status = StatusLine(write, lambda: writer.fullwidth - writer.width_of_current_line)
    return status, TaskProgress(column, status.show)


def _judge(session: KoembedSession, info: dict[str, Any], score: TaskScore) -> Judgement:
    """The task against its baseline (``verdicts``), recorded in the score for the controller."""
    from pytest_koembed.protocol.leaderboards import run_encoder_type

    assert session.policy is not None
    return session.policy.judge_score(
        score, info.get("row_name") or info["name"], encoder_type=run_encoder_type(info)
    )


def _encoder_info(encoder: Any, model: str) -> dict[str, Any]:
    """What the summary says about the encoder: its own info, or what we can see of it."""
    info = getattr(encoder, "info", None)
    if info is not None and hasattr(info, "to_dict"):
        info = info.to_dict()
    if isinstance(info, dict):
        data = dict(info)
        data.setdefault("name", model)
        return data
    from pytest_koembed.evaluation.sparse import declared_info

    data: dict[str, Any] = {
        "name": model,
        "row_name": model,
        "loader": f"custom ({type(encoder).__module__}.{type(encoder).__qualname__})",
        **declared_info(encoder),
    }
    # No info: what the object itself says (a SentenceTransformer has device, max_seq_length ...).
    for key, attributes in _DECLARED_ATTRIBUTES:
        for attribute in attributes:
            value = _plain_attribute(encoder, attribute)
            if value is not None:
                data[key] = value
                break
    return data


_DECLARED_ATTRIBUTES = (
    ("pooling", ("pooling", "pooling_mode")),
    ("dtype", ("dtype",)),
    ("device", ("device",)),
    ("max_length", ("max_length", "max_seq_length")),
)
_TORCH_DTYPES = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}


def _plain_attribute(obj: Any, name: str) -> str | int | None:
    """A short str/int attribute (torch devices and dtypes as text), or None."""
    try:
        value = getattr(obj, name, None)
    except Exception:  # a property that fails
        return None
    if isinstance(value, bool) or value is None or callable(value):
        return None
    if isinstance(value, int):
        return value
    text = str(value)
    if type(value).__module__ == "torch":  # torch.device, torch.dtype
        return _TORCH_DTYPES.get(text, text)
    return text if isinstance(value, str) and 0 < len(text) <= 40 else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Append one item per suite task; tryfirst so that -k / -m deselection sees them."""
    state = config.stash.get(SESSION_KEY, None)
    if state is None:
        return
    if state.benchmark_only and items:  # e.g. a file named directly in testpaths
        config.hook.pytest_deselected(items=list(items))
        items.clear()
    root = KoembedGroup.from_parent(session, name="koembed", nodeid="koembed")
    groups: dict[str, KoembedGroup] = {}
    added: list[pytest.Item] = []
    for spec in state.suite.tasks:
        group = groups.get(spec.category)
        if group is None:
            group = KoembedGroup.from_parent(root, name=spec.category)
            groups[spec.category] = group
        item = KoembedItem.from_parent(group, name=spec.column, callobj=_run_task)
        item.koembed_spec = spec
        item.add_marker("koembed")
        item.add_marker(spec.marker)
        item.extra_keyword_matches.update(_task_keywords(spec, config))
        added.append(item)
    items.extend(added)
    # Report them like any collected node, so "collected N items" counts them.
    session.ihook.pytest_collectreport(
        report=pytest.CollectReport(root.nodeid, "passed", None, added)
    )


def _task_keywords(spec: TaskSpec, config: pytest.Config) -> set[str]:
    """``-k`` matches the mteb task name (``-k KorSTS``) as well as the column (``-k Kor-STS``),
    and the Hub dataset id, which needs mteb's task metadata: looked up only when ``-k`` is used,
    so that a run without it does not import mteb at collection."""
    keywords = {spec.task}
    if config.getoption("keyword", None):
        from pytest_koembed.data.tasks import dataset_id

        dataset = dataset_id(spec)
        if dataset:
            keywords.add(dataset)
    return keywords


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    state = session.config.stash.get(SESSION_KEY, None)
    if state is None:
        return
    state.selected = [i.koembed_spec.column for i in session.items if isinstance(i, KoembedItem)]
    if session.config.getoption("koembed_devices"):
        _check_devices_encoder(session)
    if state.policy is not None:  # the paired gate's Bonferroni factor on this worker
        whole = state.shard_block["selected"] if state.shard_block else state.selected
        state.policy.selected = tuple(whole)  # a shard's items are judged as in the whole run


@pytest.hookimpl(trylast=True, specname="pytest_collection_modifyitems")
def pytest_collection_modifyitems_shard(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """``--koembed-shard K/N``: keep this shard's part of the selection; trylast, so that it
    splits what -k / -m / --deselect left. The others are deselected, as -k deselects."""
    state = config.stash.get(SESSION_KEY, None)
    if state is None or state.shard is None:
        return
    from pytest_koembed.run.shards import shard_columns

    tasks = [i for i in items if isinstance(i, KoembedItem)]
    mine, block = shard_columns([i.koembed_spec for i in tasks], state.shard, state.data_dir)
    dropped = [i for i in tasks if i.koembed_spec.column not in mine]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        gone = set(map(id, dropped))
        items[:] = [i for i in items if id(i) not in gone]
    state.shard_block = block
    workeroutput = getattr(config, "workeroutput", None)
    if isinstance(workeroutput, dict):  # to the xdist controller, which collects nothing
        workeroutput["koembed_shard"] = block


def pytest_report_collectionfinish(config: pytest.Config) -> str | None:
    state = config.stash.get(SESSION_KEY, None)
    if state is None or state.shard_block is None:
        return None
    from pytest_koembed.reports.summary import shard_line

    return f"koembed: {shard_line(state.shard_block)}"


def _check_devices_encoder(session: pytest.Session) -> None:
    """``--koembed-devices`` needs the plugin's own encoder: a usage error when a conftest
    overrides ``koembed_encoder`` (its object knows nothing of the pool)."""
    for item in session.items:
        if not isinstance(item, KoembedItem):
            continue
        info = getattr(item, "_fixtureinfo", None)  # pytest's own resolution of the fixture
        defs = getattr(info, "name2fixturedefs", {}).get("koembed_encoder") if info else None
        func = getattr(defs[-1], "func", None) if defs else None
        if func is not None and getattr(func, "__module__", __name__) != __name__:
            code = getattr(func, "__code__", None)
            where = f" ({Path(code.co_filename).name}:{code.co_firstlineno})" if code else ""
            raise pytest.UsageError(
                f"--koembed-devices: the koembed_encoder fixture is overridden{where}; the "
                "multi-device pool works with the plugin's own sentence-transformers encoder "
                "only: drop --koembed-devices, or spread the work over devices in your encoder"
            )
        return  # every item resolves the same session fixture


@pytest.fixture(scope="session")
def koembed_encoder(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The encoder under test, built once per session (per xdist worker).

    Override this fixture in your rootdir ``conftest.py`` to benchmark any object with
    ``encode(list[str]) -> array`` (optionally ``encode_query`` / ``encode_document``).
    Its teardown stops the ``--koembed-devices`` processes, also after a failure or Ctrl-C.
    """
    from pytest_koembed.models.encoders import EncoderOptions
    from pytest_koembed.models.loading import load_encoder

    config = request.config
    state = config.stash[SESSION_KEY]
    options = EncoderOptions(
        model=state.model,
        revision=config.getoption("koembed_revision"),
        dtype=config.getoption("koembed_dtype"),
        device=config.getoption("koembed_device"),
        pooling=config.getoption("koembed_pooling"),
        batch_size=state.batch_size,
        max_length=config.getoption("koembed_max_length"),
        trust_remote_code=config.getoption("koembed_trust_remote_code"),
        model_type=config.getoption("koembed_model_type") or "auto",
        devices=config.getoption("koembed_devices"),
        devices_min_texts=config.getoption("koembed_devices_min_texts"),
    )
    try:
        encoder = load_encoder(options)
    except KoembedError as exc:
        error = str(exc)
    else:
        try:
            yield encoder
        finally:
            encoder.close()
        return
    pytest.fail(error, pytrace=False)


@pytest.fixture(scope="session")
def koembed_prompts(request: pytest.FixtureRequest, koembed_encoder: Any) -> Any:
    """The prompt for each task and role (query / document / symmetric)."""
    from pytest_koembed.protocol.instructions import build_prompt_plan

    config = request.config
    state = config.stash[SESSION_KEY]
    info = _encoder_info(koembed_encoder, state.model)
    profile = config.getoption("koembed_instructions")
    try:
        plan = build_prompt_plan(
            info.get("row_name") or info["name"],
            info.get("model_prompts"),
            Path(profile) if profile else None,
            bool(config.getoption("koembed_no_instructions")),
        )
    except KoembedError as exc:
        error = str(exc)
    else:
        return plan.prompt_for
    pytest.fail(error, pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None] | Any:
    """Attach the task's score to its report, so it reaches the controller under xdist."""
    report = yield
    if not isinstance(item, KoembedItem):
        return report
    score = getattr(item, "koembed_score", None)
    if report.when == "call" and score is not None:
        report.koembed_score = score.to_dict()
        if score.examples is not None:  # report attributes must be JSON-able: parquet, base64
            from pytest_koembed.evaluation.per_example import frame_to_text

            report.koembed_examples = frame_to_text(score.examples)
    elif report.failed and score is None and report.when in ("setup", "call"):
        from pytest_koembed.evaluation.run import failed_score

        reason = str(report.longreprtext).strip().splitlines()
        report.koembed_score = failed_score(
            item.koembed_spec, reason[-1] if reason else "failed", report.duration
        ).to_dict()
    info = getattr(item, "koembed_encoder_info", None)
    if info is not None:
        report.koembed_encoder_info = info
    return report


class KoembedController:
    """Collects task scores on the controller (the only process that writes anything)."""

    def __init__(self, config: pytest.Config, state: KoembedSession) -> None:
        self.config = config
        self.state = state

    @property
    def journal(self) -> Path | None:
        """A copy of the record in pytest's cache dir, kept even without --koembed-json."""
        cache = getattr(self.config, "cache", None)  # set by cacheprovider, after our configure
        return cache.mkdir("koembed") / "last-run.json" if cache is not None else None

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under xdist the controller collects nothing: take the selection from the workers."""
        columns = {_column_of(nodeid) for nodeid in ids} - {None}
        self.state.selected = [s.column for s in self.state.suite.tasks if s.column in columns]
        shard = self.state.shard
        if shard is not None and self.state.shard_block is None:  # the workers' block follows
            self.state.shard_block = {
                "index": shard.index,
                "count": shard.count,
                "tasks": list(self.state.selected),
                "selected": None,
            }

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """A worker's shard block (with the selection it split) comes with its output."""
        block = getattr(node, "workeroutput", {}).get("koembed_shard")
        if block is not None:
            self.state.shard_block = block
            if self.state.policy is not None:  # what the workers' items were judged with
                self.state.policy.selected = tuple(block["selected"])

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, "koembed_score", None)
        if data is None:
            column = _column_of(report.nodeid)
            if column is None or not report.failed:
                return
            # No score came with the report: the xdist worker running the task crashed.
            from pytest_koembed.evaluation.run import failed_score

            lines = [line.strip() for line in str(report.longreprtext).splitlines()]
            said = [line for line in lines if "crashed" in line] or [x for x in lines if x]
            reason = said[-1] if said else "the worker running the task crashed"
            data = failed_score(self.state.suite.task(column), reason, report.duration).to_dict()
        score = TaskScore.from_dict(data)
        self.state.scores[score.column] = score
        examples = getattr(report, "koembed_examples", None)
        if examples is not None:
            from pytest_koembed.evaluation.per_example import frame_from_text

            self.state.examples[score.column] = frame_from_text(examples)
        else:
            self.state.examples.pop(score.column, None)
        info = getattr(report, "koembed_encoder_info", None)
        if info is not None and info not in self.state.encoder_infos:
            self.state.encoder_infos.append(info)
        self.write(complete=False)

    def record(self, *, complete: bool = False) -> dict[str, Any]:
        from pytest_koembed.gate.verdicts import baseline_block
        from pytest_koembed.reports.summary import run_record

        state = self.state
        policy = state.policy
        record = run_record(
            model=state.model,
            suite=state.suite,
            scheme=state.scheme,
            scores=state.scores,
            encoder_infos=state.encoder_infos,
            selected=state.selected,
            started=state.started,
            complete=complete,
            interrupted=state.interrupted,
            baseline=baseline_block(
                policy.choice.text, policy.describe(), state.scores.values(), policy
            )
            if policy is not None
            else None,
            gates=[g.to_dict() for g in state.gate_results],
        )
        if state.shard_block is not None:
            record["shard"] = state.shard_block
            record["gate_settings"] = _gate_settings(self.config)  # for koembed gate
            record["prompt_settings"] = _prompt_settings(self.config)  # for koembed merge
            paired = (record.get("baseline") or {}).get("paired")
            if paired is not None and policy is not None:  # Holm is left to koembed gate
                label = f"{state.shard_block['index']}/{state.shard_block['count']}"
                paired["shard"] = {"label": label, "bonferroni_m": policy.paired_count}
        if state.intervals is None:
            return record
        return state.intervals.add_to(record, state.suite, state.examples)

    def write_files(self, record: Mapping[str, Any], path: Path) -> None:
        """The run record and its per-example sidecar (``per_example.write_run_files``)."""
        from pytest_koembed.evaluation.per_example import write_run_files
        from pytest_koembed.records import write_json

        write_run_files(record, path, self.state.examples, write_json)

    def write(self, *, complete: bool = False) -> None:
        """Rewrite the run record after every finished task: a killed run keeps what it finished.

        The per-example sidecar is rewritten with it, just before it, so the two stay in step.
        A failed write never stops the run: ``--koembed-json`` is retried at every task and at
        the end, where a failure is a summary line and a non-zero exit status.
        """
        record = self.record(complete=complete)
        try:
            journal = self.journal
        except OSError as exc:
            journal = None
            self.state.write_errors["journal"] = f"not written: {_reason(exc)}"
        targets = [("--koembed-json", self.state.json_path), ("journal", journal)]
        for option, path in targets:
            if path is None:
                continue
            try:
                self.write_files(record, path)
            except OSError as exc:
                self.state.write_errors[option] = f"{path}: not written: {_reason(exc)}"
            else:
                self.state.write_errors.pop(option, None)

    @pytest.hookimpl(optionalhook=True)
    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        message = str(excinfo.value).strip()
        self.state.interrupted = (
            f"interrupted ({excinfo.typename}{': ' + message if message else ''})"
        )

    def pytest_internalerror(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        self.state.interrupted = f"internal error ({excinfo.typename}: {_reason(excinfo.value)})"

    def _finish_state(self, session: pytest.Session) -> bool:
        """Whether the run is complete: it ended normally and every selected task reported.
        Otherwise ``state.interrupted`` says why not."""
        state = self.state
        ended = session.exitstatus in (
            pytest.ExitCode.OK,
            pytest.ExitCode.TESTS_FAILED,
            pytest.ExitCode.NO_TESTS_COLLECTED,  # all deselected: gates say "not checked"
        )
        missing = [c for c in state.selected if c not in state.scores]
        if ended and not missing and state.interrupted is None:
            return True
        if state.interrupted is None:
            stop = session.shouldstop or session.shouldfail
            if isinstance(stop, str) and stop:
                state.interrupted = stop  # -x / --maxfail: "stopping after 1 failures"
            elif session.exitstatus == pytest.ExitCode.INTERRUPTED:
                state.interrupted = "interrupted"
            elif session.exitstatus == pytest.ExitCode.INTERNAL_ERROR:
                state.interrupted = "internal error"
            else:
                state.interrupted = f"{len(missing)} selected task(s) did not report"
        return False

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Gates (``--koembed-fail-under``), the run record, reports and baseline files.

        Like pytest-cov's ``--cov-fail-under``: a failed gate (or a requested output that could
        not be written) turns exit status 0 into 1 here, before the terminal summary is printed.
        ``--collect-only`` writes nothing. An incomplete run (interrupted, ``-x``) is recorded
        with ``"complete": false``; its gates are not checked and no report or baseline is
        written. The verdicts and reports themselves are ``pytest_koembed.run.finish``'s, which
        ``koembed gate`` applies to a saved record.
        """
        from pytest_koembed.run.finish import conclude, publish

        if self.config.option.collectonly:
            return
        state = self.state
        complete = self._finish_state(session)
        state.complete = complete
        shard = state.shard.label if state.shard is not None else None
        state.gate_results, failed = conclude(
            state.policy,
            state.scores,
            state.suite,
            lambda: self.record(complete=True),
            complete=complete,
            interrupted=state.interrupted,
            shard=shard,
            examples=state.examples,
        )
        self.write(complete=complete)
        if state.json_path is not None and "--koembed-json" in state.write_errors:
            failed = True
        if complete:
            state.published = publish(
                self.record(complete=True),
                state.suite,
                state.reports,
                state.policy,
                self.write_files,
            )
            failed = failed or state.published.failed
        if failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if (
            shard is not None
            and complete
            and not state.selected
            and session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED
        ):
            session.exitstatus = pytest.ExitCode.OK  # more shards than tasks: an empty shard

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from pytest_koembed.run.finish import Line, summary

        if self.config.option.collectonly:
            return
        state = self.state
        outputs = []
        json_error = state.write_errors.get("--koembed-json")
        if json_error is not None:
            outputs.append(Line(f"--koembed-json {json_error}", red=True))
        elif state.json_path is not None:
            outputs.append(Line(f"run record written to {state.json_path}"))
        journal_error = state.write_errors.get("journal")
        if journal_error is not None:
            outputs.append(Line(f"note: pytest cache copy of the run record {journal_error}"))
        outputs += [Line(note) for note in _loading_notes(self.config, state.model)]
        lines, rows_text = summary(self.record(complete=state.complete), state.published, outputs)
        terminalreporter.ensure_newline()  # else the first line after the header is blank
        terminalreporter.section("koembed summary")
        for line in lines:
            terminalreporter.write_line(line.text, red=line.red)
        if rows_text:
            terminalreporter.section("koembed leaderboard rows")
            terminalreporter.write(rows_text)


def _loading_notes(config: pytest.Config, model: str) -> list[str]:
    """The loading options without effect on this run (``invocation.no_effect_notes``)."""
    from pytest_koembed.invocation import no_effect_notes

    return no_effect_notes(
        model,
        revision=config.getoption("koembed_revision"),
        devices=config.getoption("koembed_devices"),
        devices_min_texts=config.getoption("koembed_devices_min_texts"),
    )


def _reason(exc: BaseException) -> str:
    """An exception as one line: ``[Errno 28] No space left on device``."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
