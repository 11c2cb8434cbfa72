"""pytest glue: options, one item per suite task, fixtures, and results to the controller.

The options are the table ``pytest_koembed.options.OPTIONS``; the session state and the settings
read from the config are ``plugin.session``'s, the controller (scores, record, end of run)
``plugin.controller``'s.

Everything else lives in plain modules that know nothing of pytest: suite -> data/evaluation ->
scoring -> reports. Under pytest-xdist each item's ``TaskScore`` travels to the controller as an
attribute of its test report (pytest serialises report attributes), and only the controller
writes the summary and files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_koembed import options as table
from pytest_koembed.errors import KoembedError
from pytest_koembed.gate.verdicts import Judgement
from pytest_koembed.plugin.session import (
    SESSION_KEY,
    KoembedSession,
    check_invocation,
    check_options,
    is_worker,
    make_session,
    share_cpu_threads,
    worker_id,
)
from pytest_koembed.protocol.spec import CATEGORIES, TaskSpec
from pytest_koembed.records import TaskScore

CATEGORY_MARKERS = {category.lower(): category for category in CATEGORIES}


def pytest_addoption(parser: pytest.Parser) -> None:
    """Every option of the table (``options.OPTIONS``): ``--koembed-NAME``, and its ini key."""
    group = parser.getgroup("koembed", "Korean embedding benchmark (pytest-koembed)")
    for option in table.OPTIONS:
        group.addoption(option.flag, **option.argparse_kwargs())
    for option in table.OPTIONS:
        if option.ini is not None:
            default = [] if option.ini == "args" else False if option.ini == "bool" else None
            ini_type = None if option.ini == "string" else option.ini
            parser.addini(option.ini_key, table.ini_help(option), type=ini_type, default=default)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "koembed: a Korean embedding benchmark task")
    for marker, category in CATEGORY_MARKERS.items():
        config.addinivalue_line("markers", f"{marker}: a koembed task of category {category}")
    if not is_worker(config):
        check_invocation(config)
    model = config.getoption("koembed_model")
    if not model:
        return
    session = make_session(config, model)
    for spec in {spec.category: spec for spec in session.suite.tasks}.values():
        if spec.category not in CATEGORIES:  # an mteb benchmark's other task types (mteb_suites)
            config.addinivalue_line(
                "markers", f"{spec.marker}: a koembed task of category {spec.category}"
            )
    if not is_worker(config):  # the workers get the same options: check them once
        check_options(config, session)
    config.stash[SESSION_KEY] = session
    if not is_worker(config):
        from pytest_koembed.plugin.controller import KoembedController
        from pytest_koembed.stats.intervals import RunIntervals

        session.intervals = RunIntervals(session.confidence)
        controller = KoembedController(config, session)
        config.pluginmanager.register(controller, "koembed-controller")
        from pytest_koembed.plugin import html_report

        if html_report.wanted(config):  # pytest-html installed and --html given
            report = html_report.KoembedHtmlReport(controller)
            config.pluginmanager.register(report, html_report.PLUGIN_NAME)
    worker = worker_id(config)
    if worker:
        share_cpu_threads()
    if worker and config.getoption("koembed_device") in ("auto", "cuda"):
        # Must happen before anything initialises CUDA in this worker process.
        from pytest_koembed.models.pinning import pin_worker_gpu

        pin_worker_gpu(worker, os.environ)


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
        score.worker = worker_id(request.config)
        from pytest_koembed.stats.intervals import task_ci_and_note

        score.ci, score.ci_note = task_ci_and_note(
            score.examples, score.value_rule, spec.column, session.confidence, score.main_score
        )
    finally:
        if status is not None:
            status.clear()  # before pytest writes the item's outcome
        # False on a warm run whose every text was cached (models.resolved); None: a custom one
        item.koembed_model_loaded = getattr(koembed_encoder, "model_loaded", None)
    if error is not None:  # failed outside the except block: no chained traceback in the report
        item.koembed_score = failed_score(spec, error, time.perf_counter() - started)
        item.koembed_score.worker = worker_id(request.config)
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
    if reporter is None or capture is None or is_worker(config):
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
    _locate_hub_model(session, state)
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
    specs = [i.koembed_spec for i in tasks]
    mine, block = shard_columns(specs, state.shard, state.data_dir, state.shard_costs)
    dropped = [i for i in tasks if i.koembed_spec.column not in mine]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        gone = set(map(id, dropped))
        items[:] = [i for i in items if id(i) not in gone]
    state.shard_block = block
    workeroutput = getattr(config, "workeroutput", None)
    if isinstance(workeroutput, dict):  # to the xdist controller, which collects nothing
        workeroutput["koembed_shard"] = block


def pytest_report_collectionfinish(config: pytest.Config) -> list[str] | None:
    state = config.stash.get(SESSION_KEY, None)
    if state is None or state.shard_block is None:
        return None
    from pytest_koembed.reports.summary import shard_line, shard_plan_line

    plan = shard_plan_line(state.shard_block)
    return [f"koembed: {line}" for line in (shard_line(state.shard_block), plan) if line]


def _encoder_override(session: pytest.Session) -> str | None:
    """Where a conftest overrides ``koembed_encoder`` (`` (conftest.py:12)``, or ``""`` when
    the place is unknown); None when the items use the plugin's own encoder."""
    for item in session.items:
        if not isinstance(item, KoembedItem):
            continue
        info = getattr(item, "_fixtureinfo", None)  # pytest's own resolution of the fixture
        defs = getattr(info, "name2fixturedefs", {}).get("koembed_encoder") if info else None
        func = getattr(defs[-1], "func", None) if defs else None
        if func is not None and getattr(func, "__module__", __name__) != __name__:
            code = getattr(func, "__code__", None)
            return f" ({Path(code.co_filename).name}:{code.co_firstlineno})" if code else ""
        return None  # every item resolves the same session fixture
    return None


def _check_devices_encoder(session: pytest.Session) -> None:
    """``--koembed-devices`` needs the plugin's own encoder: a usage error when a conftest
    overrides ``koembed_encoder`` (its object knows nothing of the pool)."""
    where = _encoder_override(session)
    if where is not None:
        raise pytest.UsageError(
            f"--koembed-devices: the koembed_encoder fixture is overridden{where}; the "
            "multi-device pool works with the plugin's own sentence-transformers encoder "
            "only: drop --koembed-devices, or spread the work over devices in your encoder"
        )


def _locate_hub_model(session: pytest.Session, state: KoembedSession) -> None:
    """A Hub id is downloaded (or found in the cache) once the tasks are known, before any
    runs: an unknown, gated or private repository, a wrong revision, a failed download or
    an empty offline cache is one usage-error line, not an error per task. Not for
    ``--collect-only``, a custom encoder, no selected task, or an xdist worker (whose
    errors the controller would not show as one line: the encoder fixture reports them)."""
    from pytest_koembed.models.loading import check_model_type, is_hub_id, locate_model

    config = session.config
    if (
        not state.selected
        or config.option.collectonly
        or is_worker(config)
        or not is_hub_id(state.model)
        or _encoder_override(session) is not None
    ):
        return
    try:
        location = locate_model(state.model, config.getoption("koembed_revision"))
        model_type = config.getoption("koembed_model_type") or "auto"
        check_model_type(state.model, model_type, location.path)
    except KoembedError as exc:
        raise pytest.UsageError(str(exc)) from None
    state.model_location = location


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
        encoder = load_encoder(options, cache_dir=state.cache_dir, location=state.model_location)
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
    loaded = getattr(item, "koembed_model_loaded", None)
    if report.when == "call" and loaded is not None:
        report.koembed_model_loaded = [worker_id(item.config), loaded]
    return report
