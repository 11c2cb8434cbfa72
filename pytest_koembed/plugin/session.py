"""The plugin's session state and the settings it reads from pytest's config (command line
over ini), checked before anything runs: every bad value is one ``pytest.UsageError``.

The options themselves are :data:`pytest_koembed.options.OPTIONS`; this module reads them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_koembed import options as table
from pytest_koembed.errors import KoembedError
from pytest_koembed.gate.gates import GateResult
from pytest_koembed.gate.verdicts import BaselinePolicy
from pytest_koembed.protocol.spec import Suite
from pytest_koembed.protocol.suite import load_suite
from pytest_koembed.records import TaskScore


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
    # worker -> whether its encoder loaded the weights (a warm run's may not: models.resolved)
    model_loaded: dict[str, bool] = field(default_factory=dict)
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
    shard_costs: Any = None  # shards.MeasuredCosts: --koembed-shard-costs RECORD
    # Encode once: this worker's embedding store and the encoder object it belongs to.
    embedding_store: Any = None
    store_encoder: Any = None
    cache_dir: Path | None = None  # --koembed-cache (None: off); see embedding_cache
    # --koembed-history DIR, its retention and the checkpoint block (``run.checkpoints``)
    split: str = "test"  # --koembed-split: test, or dev (the suite's dev_split of each task)
    history_dir: Path | None = None
    history_keep: int = 10
    checkpoint: dict[str, Any] = field(default_factory=dict)
    history_line: Any = None  # finish.Line: what became of the run in the history
    model_location: Any = None  # models.loading.Location: a Hub id, resolved before any task


SESSION_KEY = pytest.StashKey[KoembedSession]()


def check_invocation(config: pytest.Config) -> None:
    """How the options were written (``invocation``): a usage error for a space-separated
    ``--koembed-*`` value, an empty ``--koembed-X=`` value (the model's own message for
    ``--koembed-model``), or ``--koembed-*`` options on the
    command line / in PYTEST_ADDOPTS without a model. An ini ``addopts`` is left alone."""
    from pytest_koembed import invocation

    if getattr(config.option, "help", False) or getattr(config.option, "version", False):
        return
    args = [str(a) for a in config.invocation_params.args]
    env_args = invocation.addopts_args(os.environ.get("PYTEST_ADDOPTS"))
    problem = invocation.space_separated(args, env_args, table.value_options())
    if problem is None:
        problem = invocation.empty_value(args, env_args, table.value_options())
    if problem is None:
        problem = invocation.model_problem(config.getoption("koembed_model"), args, env_args)
    if problem is not None:
        raise pytest.UsageError(problem)


def setting(config: pytest.Config, name: str) -> Any:
    """A value option, command line over ini; None when neither sets it. An ini path resolves
    against the ini file's directory, as pytest's own ``paths`` ini values do
    (``options.resolve_ini_path``); a command-line one stays relative to the current one."""
    value = config.getoption(f"koembed_{name}")
    if value is None:
        try:
            value = config.getini(f"koembed_{name}")
        except ValueError:
            value = None
        ini_dir = config.inipath.parent if config.inipath is not None else None
        value = table.resolve_ini_path(table.BY_NAME[name.replace("_", "-")], value, ini_dir)
    return value or None


def report_options(config: pytest.Config) -> Any:
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


def baseline_policy(config: pytest.Config, suite: Suite, confidence: float) -> BaselinePolicy:
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
    policy.given = given_gate_options(config)
    return policy


def gate_settings(config: pytest.Config) -> dict[str, Any]:
    """A shard's gate options (command line over ini), carried in its run record: a shard
    checks no gate, and ``koembed gate`` (which reads no ini) applies them to the merged record
    (``shards.GATE_SETTINGS``)."""
    from pytest_koembed.run.shards import gate_settings as settings_of

    strict = config.getoption("koembed_strict")
    min_effect = config.getoption("koembed_min_effect")
    return settings_of(
        fail_under=[*config.getini("koembed_fail_under"), *config.getoption("koembed_fail_under")],
        tolerance=[*config.getini("koembed_tolerance"), *config.getoption("koembed_tolerance")],
        strict=bool(config.getini("koembed_strict") if strict is None else strict),
        min_effect=min_effect if min_effect is not None else config.getini("koembed_min_effect"),
        rule=config.getoption("koembed_rule") or config.getini("koembed_rule"),
    )


def prompt_settings(config: pytest.Config) -> dict[str, Any]:
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


def given_gate_options(config: pytest.Config) -> dict[str, str]:
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


def make_session(config: pytest.Config, model: str) -> KoembedSession:
    """The session state from the options (command line over ini); bad input is a usage
    error. The checks that need the whole session (output paths, devices) are
    :func:`check_options`'s."""
    from pytest_koembed.protocol.scoring import SCHEMES

    split = config.getoption("koembed_split") or "test"
    try:
        suite = load_suite(setting(config, "suite") or "ko-leaderboard-v1")
        if split == "dev":
            from pytest_koembed.protocol.spec import dev_suite

            suite = dev_suite(suite)
    except KoembedError as exc:
        raise pytest.UsageError(str(exc)) from None
    scheme = config.getoption("koembed_scheme") or suite.scheme
    if scheme not in SCHEMES:
        raise pytest.UsageError(
            f"unknown --koembed-scheme {scheme!r}; choose one of {', '.join(SCHEMES)}"
        )
    data_dir_option = setting(config, "data_dir")
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
    cache_dir = cache_dir_of(config)
    shard = shard_option(config)
    history_dir, history_keep = history_options(config)
    from pytest_koembed.run.checkpoints import identify

    return KoembedSession(
        split=split,
        history_dir=history_dir,
        history_keep=history_keep,
        checkpoint=identify(model, config.getoption("koembed_checkpoint")),
        model=model,
        cache_dir=cache_dir,
        suite=suite,
        scheme=scheme,
        data_dir=data_dir,
        json_path=Path(json_option).resolve() if json_option else None,
        batch_size=config.getoption("koembed_batch_size") or 32,
        confidence=confidence,
        policy=baseline_policy(config, suite, confidence),
        reports=report_options(config),
        shard=shard,
        shard_costs=shard_costs_option(config, suite, shard),
        # Without named paths pytest would collect the invocation dir or testpaths: the
        # repository's own tests, whose modules may import heavy things. Named paths are asked for.
        benchmark_only=not (
            config.getoption("koembed_with_tests")
            or config.args_source == pytest.Config.ArgsSource.ARGS
        ),
    )


def history_options(config: pytest.Config) -> tuple[Path | None, int]:
    """``--koembed-history DIR`` (ini ``koembed_history``, relative to the ini file) and
    ``--koembed-history-keep-examples N``; a usage error for a bad N."""
    from pytest_koembed.run.history import DEFAULT_KEEP_EXAMPLES

    directory = setting(config, "history")
    keep = setting(config, "history_keep_examples")
    try:
        count = int(keep) if keep is not None else DEFAULT_KEEP_EXAMPLES
    except ValueError:
        count = 0
    if count < 1:
        raise pytest.UsageError(
            f"--koembed-history-keep-examples {keep!r}: give a positive whole number, e.g. 10"
        )
    return (Path(directory).expanduser().resolve() if directory else None), count


def shard_option(config: pytest.Config) -> Any:
    """``--koembed-shard K/N`` as a ``shards.Shard`` (None without it); a usage error if bad."""
    text = config.getoption("koembed_shard")
    if text is None:
        return None
    from pytest_koembed.run.shards import parse_shard

    try:
        return parse_shard(text)
    except KoembedError as exc:
        raise pytest.UsageError(str(exc)) from None


def shard_costs_option(config: pytest.Config, suite: Suite, shard: Any) -> Any:
    """``--koembed-shard-costs RECORD`` (ini ``koembed_shard_costs``, relative to the ini file)
    as ``shards.MeasuredCosts``; None without it. A usage error for a record that cannot serve,
    and for the command-line option without ``--koembed-shard``. The ini value is a default for
    sharded runs: without ``--koembed-shard`` it is not read."""
    given = config.getoption("koembed_shard_costs")
    if shard is None:
        if given:
            raise pytest.UsageError(
                "--koembed-shard-costs needs --koembed-shard K/N: it only chooses how a sharded "
                "run splits its tasks; add --koembed-shard=K/N or leave --koembed-shard-costs out"
            )
        return None
    path = setting(config, "shard_costs")
    if not path:
        return None
    from pytest_koembed.run.shards import read_cost_record

    try:
        return read_cost_record(str(path), suite.name)
    except KoembedError as exc:
        raise pytest.UsageError(str(exc)) from None


def check_options(config: pytest.Config, session: KoembedSession) -> None:
    """Output paths, device, pooling and instructions, before anything runs (usage errors):
    the table's checks (``options.check_outputs`` / ``check_values``), then those that need
    the model or the run."""
    from pytest_koembed import options as check

    reports, policy = session.reports, session.policy
    outputs = {
        "json": session.json_path,
        "save-baseline": policy.save_path if policy else None,
        "row": Path(reports.row) if reports.row not in (None, "-") else None,
        "model-index": reports.model_index,
        "model-card": reports.model_card,
        "results-dir": reports.results_dir,
        "plot": reports.plot,
        "history": session.history_dir,
    }
    extra = []
    if policy is not None and policy.update and policy.choice.path is not None:
        extra.append(("--koembed-baseline", policy.choice.path))
    try:
        check.check_outputs(outputs, extra)
        check.check_values({o.name: config.getoption(o.dest) for o in check.OPTIONS if o.check})
        check.check_devices(
            config.getoption("koembed_devices"), session.model, xdist=uses_xdist(config)
        )
        check.check_model_type(session.model, config.getoption("koembed_model_type"))
        if session.cache_dir is not None:
            check.check_cache_dir("--koembed-cache", session.cache_dir)
    except KoembedError as exc:
        raise pytest.UsageError(str(exc)) from None


def cache_dir_of(config: pytest.Config) -> Path | None:
    """--koembed-cache DIR (relative to the invocation dir), else ini koembed_cache (relative
    to the ini file); None with --koembed-no-cache or when neither names one (the default)."""
    if config.getoption("koembed_no_cache"):
        return None
    value = setting(config, "cache")
    return Path(value).expanduser().resolve() if value else None


def uses_xdist(config: pytest.Config) -> bool:
    """This run hands its items to pytest-xdist workers (``-n N`` / ``--dist``)."""
    return getattr(config.option, "dist", "no") != "no" and bool(getattr(config.option, "tx", None))


def share_cpu_threads() -> None:
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


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def worker_id(config: pytest.Config) -> str | None:
    """This process's xdist worker id (``gw0``), None on the controller or in a serial run.

    From the config, not ``PYTEST_XDIST_WORKER``: a pytest run started inside a worker (pytester)
    inherits that variable without being a worker.
    """
    workerinput = getattr(config, "workerinput", None)
    return workerinput.get("workerid") if isinstance(workerinput, dict) else None


def column_of(nodeid: str) -> str | None:
    """The suite column of a koembed item id (``koembed::Retrieval::Ko-StrategyQA``)."""
    parts = nodeid.split("::", 2)
    return parts[2] if len(parts) == 3 and parts[0] == "koembed" else None
