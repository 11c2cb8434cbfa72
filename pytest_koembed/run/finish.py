"""The end of a run: verdicts, gates, reports and the summary, for the plugin and ``koembed gate``.

One implementation, two callers:

- the plugin's controller, at the end of a pytest session, over the ``TaskScore``s its items
  reported (each already judged against its baseline on its worker);
- ``koembed gate RUN.json``, over a saved run record (typically ``koembed merge``'s, from the
  shards of a CI matrix), with no model: each task is judged here with the same
  ``BaselinePolicy.judge_score``, then the same functions follow.

:func:`conclude` applies Holm over the run's paired tasks and the aggregate gates
(``--koembed-fail-under``); :func:`publish` writes the reports (``--koembed-row``, ...) and the
baseline files; :func:`summary` gives the lines of the ``koembed summary`` section. A failed gate,
a regression that only Holm finds, or a requested output that could not be written turns exit
status 0 into 1; a failed task item (an error, a regression) is 1 by itself, as under pytest.

Plain module: no pytest, no torch, no mteb.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.gate.gates import GateResult, evaluate_gates, unchecked_gates
from pytest_koembed.gate.verdicts import BaselinePolicy, finish_paired, write_baseline_files

# pytest's exit statuses, which koembed gate gives for the same outcomes (options.EXIT_STATUSES)
from pytest_koembed.options import EXIT_FAILED, EXIT_NO_TASKS, EXIT_OK
from pytest_koembed.protocol.leaderboards import run_encoder_type
from pytest_koembed.protocol.spec import Suite
from pytest_koembed.records import TaskScore, read_run_record

# TaskScore fields that hold the comparison with a baseline (``verdicts.annotate`` and the
# paired test): a saved record's are cleared before ``koembed gate`` judges it again.
VERDICT_FIELDS = (
    "baseline",
    "baseline_source",
    "baseline_stale",
    "delta",
    "tolerance",
    "verdict",
    "verdict_note",
    "delta_ci",
    "p_value",
    "p_adjusted",
    "not_paired",
    "gated_on",
    "baseline_within_ci",
    "p_improvement",
    "p_improvement_adjusted",
    "swaps",
    "mde",
    "cannot_fail",
)


def conclude(
    policy: BaselinePolicy | None,
    scores: Mapping[str, TaskScore],
    suite: Suite,
    full_record: Callable[[], Mapping[str, Any]],
    *,
    complete: bool,
    interrupted: str | None = None,
    shard: str | None = None,
    examples: Mapping[str, Any] | None = None,
) -> tuple[list[GateResult], bool]:
    """The gate results and whether they fail the run, at the end of a run.

    ``full_record()`` builds the run record (complete). An unfinished run has every gate "not
    checked". A shard (``shard="2/3"``) holds part of the run: its gates are "not checked" and
    Holm is left to ``koembed gate`` on the merged record (Holm over a shard's tasks alone would
    fail more than over the whole run); its items' paired tests already use the whole run's
    Bonferroni factor.
    """
    if policy is None:
        return [], False
    if not complete:
        return unchecked_gates(policy.gates, f"the run did not finish: {interrupted}"), False
    if shard is not None:
        reason = f"shard {shard} holds part of the run: gate the merged record (koembed gate)"
        return unchecked_gates(policy.gates, reason), False
    holm_failed = bool(finish_paired(policy, scores, examples))
    results = evaluate_gates(policy.gates, full_record(), suite)
    return results, holm_failed or any(g.failed for g in results)


@dataclass
class Published:
    """What :func:`publish` wrote: the report outcome (``publish.ReportOutcome``), the baseline
    file lines, and whether anything asked for could not be written."""

    report_outcome: Any = None
    baseline_changes: list[str] = field(default_factory=list)
    failed: bool = False


def publish(
    record: Mapping[str, Any],
    suite: Suite,
    reports: Any,
    policy: BaselinePolicy | None,
    write_files: Callable[[Mapping[str, Any], Path], None],
) -> Published:
    """``--koembed-row`` / ``-model-index`` / ``-model-card`` / ``-results-dir`` / ``-plot``
    (``reports``: ``publish.ReportOptions``) and ``--koembed-save-baseline`` /
    ``--koembed-update-baseline`` from a complete run record. ``write_files(record, path)``
    writes a run record with its per-example sidecar."""
    out = Published()
    if reports is not None and reports.wanted():
        from pytest_koembed.reports.outputs import write_reports

        out.report_outcome = write_reports(record, suite, reports)
        out.failed = out.report_outcome.failed
    if policy is not None:
        try:
            out.baseline_changes = write_baseline_files(policy, record, write_files)
        except (KoembedError, OSError) as exc:
            out.baseline_changes = [f"baseline not written: {one_line(exc)}"]
            out.failed = True
    return out


@dataclass(frozen=True)
class Line:
    text: str
    red: bool = False


def summary(
    record: Mapping[str, Any],
    published: Published | None,
    outputs: Sequence[Line] = (),
) -> tuple[list[Line], str | None]:
    """The ``koembed summary`` section's lines, and the leaderboard rows text when they go to
    the terminal (``--koembed-row -``). ``outputs``: what the caller says of its own files
    (``run record written to ...``), placed after the baseline file lines."""
    from pytest_koembed.reports.summary import summary_lines

    lines = [Line(text) for text in summary_lines(record)]
    changes = published.baseline_changes if published is not None else []
    lines += [Line(c, red=c.startswith("baseline not written")) for c in changes]
    lines += list(outputs)
    outcome = published.report_outcome if published is not None else None
    if outcome is None:
        return lines, None
    lines += [Line(t, red=outcome.failed and "not written" in t) for t in outcome.lines]
    return lines, outcome.rows_text or None


def one_line(exc: BaseException) -> str:
    """An exception as one line: ``[Errno 28] No space left on device``."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# ---------------------------------------------------------------------------------------------
# A saved run record: koembed gate
# ---------------------------------------------------------------------------------------------


def record_suite(record: Mapping[str, Any], where: str, option: str | None = None) -> Suite:
    """The suite a run record was made with: ``option`` (a name or TOML path), else the file the
    record names when it exists here, else the shipped suite of its name. Its tasks must be the
    record's (column, mteb task, split, subset, category, value rule)."""
    from pytest_koembed.protocol.suite import MTEB_PREFIX, load_suite, shipped_suites

    info = record.get("suite")
    name = info.get("name") if isinstance(info, Mapping) else None
    path = info.get("path") if isinstance(info, Mapping) else None
    if option:
        suite = load_suite(option)
    elif isinstance(path, str) and Path(path).is_file():
        suite = load_suite(path)
    elif isinstance(name, str) and (name in shipped_suites() or name.startswith(MTEB_PREFIX)):
        suite = load_suite(name)  # a shipped suite, or mteb:<benchmark> (read from mteb again)
    else:
        raise KoembedError(
            f"{where}: its suite {name!r} ({path}) is neither here nor shipped; give the suite "
            "file with --koembed-suite PATH"
        )
    if name is not None and suite.name != name:
        raise KoembedError(f"{where} is a run of suite {name!r}, not of {suite.name!r}")
    for task in record.get("tasks") or []:
        column = task.get("column")
        try:
            spec = suite.task(str(column))
        except KoembedError:
            raise KoembedError(
                f"{where}: task {column!r} is not a column of suite {suite.name!r}"
            ) from None
        mine = (spec.task, spec.split, spec.subset, spec.category, spec.value_rule)
        theirs = tuple(task.get(k) for k in ("task", "split", "subset", "category", "value_rule"))
        if mine != theirs:
            raise KoembedError(
                f"{where}: task {column!r} was run as {theirs}, suite {suite.name!r} "
                f"({suite.path}) defines it as {mine}; give the suite the run used with "
                "--koembed-suite PATH"
            )
    return suite


def cleared(score: TaskScore) -> TaskScore:
    """``score`` without any comparison with a baseline (the fields of :data:`VERDICT_FIELDS`)."""
    defaults = {f.name: f.default for f in fields(TaskScore) if f.name in VERDICT_FIELDS}
    for name, value in defaults.items():
        setattr(score, name, value)
    return score


def record_level(record: Mapping[str, Any]) -> float | None:
    """The confidence level of a record's intervals, None when it has none."""
    info = record.get("intervals")
    level = info.get("level") if isinstance(info, Mapping) else None
    return float(level) if isinstance(level, (int, float)) else None


_INTERVAL_KEYS = ("intervals", "category_average_ci", "weighted_average_ci", "rank")


def with_intervals(
    record: Mapping[str, Any], suite: Suite, frames: Mapping[str, Any], level: float
) -> dict[str, Any]:
    """``record`` with its averages' and rank's intervals (re)computed at ``level`` from
    ``frames`` (column -> per-example frame), as the plugin's controller computes them."""
    from pytest_koembed.stats.intervals import RunIntervals

    bare = {k: v for k, v in record.items() if k not in _INTERVAL_KEYS}
    return RunIntervals(level).add_to(bare, suite, frames)


@dataclass
class GateOptions:
    """The gate and report options of ``koembed gate`` (the plugin's option names)."""

    baseline: str | None = None
    tolerance: Sequence[str] = ()
    fail_under: Sequence[str] = ()
    strict: bool = False
    confidence: Any = None
    min_effect: Any = None
    rule: str | None = None
    save_baseline: str | None = None
    update_baseline: bool = False
    row: str | None = None
    model_index: str | None = None
    model_card: str | None = None
    results_dir: str | None = None
    plot: str | None = None
    json: str | None = None
    suite: str | None = None


def with_record_gates(options: GateOptions, record: Mapping[str, Any]) -> tuple[GateOptions, str]:
    """``options`` completed with the gate options a shard's record carries
    (``"gate_settings"``, ``shards.GATE_SETTINGS``): the command line over the record, setting
    by setting. Returns the options and the text of those taken from the record ("" if none)."""
    from dataclasses import replace

    from pytest_koembed.run.shards import GATE_SETTINGS, option_text

    settings = record.get("gate_settings")
    if not isinstance(settings, Mapping):
        return options, ""
    taken: dict[str, Any] = {}
    for name in GATE_SETTINGS:
        value = settings.get(name)
        mine = getattr(options, name)
        if value in (None, [], False) or mine not in (None, [], (), False):
            continue  # not carried, or given on the command line (which wins)
        taken[name] = list(value) if isinstance(value, list) else value
    text = " ".join(option_text(name, value) for name, value in taken.items())
    return replace(options, **taken), text


def _abs(value: str | None) -> Path | None:
    return Path(value).expanduser().resolve() if value else None


@dataclass
class _Judging:
    """What :func:`gate_record` judges: the record, its suite and frames, the policy, the
    reports and the level, each checked (bad input: a one-line KoembedError)."""

    where: str
    record: Mapping[str, Any]
    suite: Suite
    carried: str
    frames: dict[str, Any]
    saved_level: float | None
    level: float
    policy: BaselinePolicy
    reports: Any
    json_path: Path | None


def _judging(path: str | Path, options: GateOptions) -> _Judging:
    """Read and check a saved run record and the options, before anything is judged."""
    from pytest_koembed import options as check
    from pytest_koembed.evaluation.per_example import load_examples
    from pytest_koembed.gate.compare import GateSettings, check_confidence, check_min_effect
    from pytest_koembed.gate.verdicts import make_policy
    from pytest_koembed.reports.outputs import ReportOptions

    where = f"run record {path}"
    record = read_run_record(path)
    if not record.get("complete"):
        why = record.get("interrupted") or "complete: false"
        raise KoembedError(
            f"{where} is not complete ({why}); koembed gate judges only a finished run"
        )
    suite = record_suite(record, where, options.suite)
    options, carried = with_record_gates(options, record)
    frames = load_examples(path) if isinstance(record.get("examples"), Mapping) else {}
    saved_level = record_level(record)
    level = (
        check_confidence(options.confidence)
        if options.confidence is not None
        else (saved_level if saved_level is not None else check_confidence(None))
    )
    policy = make_policy(
        suite,
        baseline=options.baseline,
        tolerance=list(options.tolerance),
        fail_under=list(options.fail_under),
        strict=options.strict,
        save_path=_abs(options.save_baseline),
        update=options.update_baseline,
        gate=GateSettings(level, check_min_effect(options.min_effect)),
        rule=options.rule,
    )
    if options.tolerance:
        policy.given["tolerance"] = ",".join(options.tolerance)
    if options.min_effect is not None:
        policy.given["min_effect"] = str(options.min_effect)
    reports = ReportOptions(
        row=options.row if options.row in (None, "-") else str(_abs(options.row)),
        model_index=_abs(options.model_index),
        model_card=_abs(options.model_card),
        results_dir=_abs(options.results_dir),
        plot=_abs(options.plot),
    )
    reports.check()
    json_path = _abs(options.json)
    check.check_outputs(  # every output of the option table: none can be left out
        {
            "json": json_path,
            "save-baseline": policy.save_path,
            "row": Path(reports.row) if reports.row not in (None, "-") else None,
            "model-index": reports.model_index,
            "model-card": reports.model_card,
            "results-dir": reports.results_dir,
            "plot": reports.plot,
            "history": None,  # koembed gate adds no run to a history
        },
        [("--koembed-baseline", policy.choice.path)]
        if policy.update and policy.choice.path is not None
        else [],
    )
    return _Judging(
        where, record, suite, carried, frames, saved_level, level, policy, reports, json_path
    )


def gate_record(path: str | Path, options: GateOptions) -> tuple[int, list[Line], str | None]:
    """Judge a saved run record as the pytest run would have: the exit status, the summary's
    lines and the rows text (``--koembed-row -``). Bad input: a one-line KoembedError."""
    from pytest_koembed.gate.compare import old_paired_method
    from pytest_koembed.gate.verdicts import baseline_block
    from pytest_koembed.stats.intervals import task_ci_and_note

    j = _judging(path, options)
    record, suite, frames, level, policy = j.record, j.suite, j.frames, j.level, j.policy
    scores = {str(t["column"]): cleared(TaskScore.from_dict(t)) for t in record["tasks"]}
    for column, score in scores.items():
        score.examples = frames.get(column)
        if level != j.saved_level:
            score.ci, score.ci_note = task_ci_and_note(
                score.examples, score.value_rule, column, level, score.main_score
            )
    deselected = set(record.get("deselected") or [])
    policy.selected = tuple(t.column for t in suite.tasks if t.column not in deselected)
    model = record.get("model") or {}
    row_name = str(_first(model.get("row_name")) or _first(model.get("name")) or "")
    failed_items = []
    for column, score in scores.items():  # what each item did on its worker
        judgement = policy.judge_score(score, row_name, encoder_type=run_encoder_type(model))
        if score.status != "ok" or judgement.fails:
            failed_items.append(column)

    def build(gates: Iterable[GateResult]) -> dict[str, Any]:
        out = dict(record)
        out["tasks"] = [score.to_dict() for score in scores.values()]
        out["baseline"] = baseline_block(
            policy.choice.text, policy.describe(), scores.values(), policy
        )
        out["gates"] = [g.to_dict() for g in gates]
        if level != j.saved_level:
            out = with_intervals(out, suite, frames, level)
        return out

    rejudged = [Line(f"{j.where}: {old}")] if (old := old_paired_method(record)) else []
    results, gates_failed = conclude(
        policy, scores, suite, lambda: build([]), complete=True, interrupted=None, examples=frames
    )
    lines, rows_text, not_written = _write_and_summarise(j, build(results))
    if failed_items or gates_failed or not_written:
        status = EXIT_FAILED
    elif not scores:
        status = EXIT_NO_TASKS
    else:
        status = EXIT_OK
    return status, rejudged + lines, rows_text


def _write_and_summarise(j: _Judging, final: dict[str, Any]) -> tuple[list[Line], str | None, bool]:
    """Write the judged record (``--json``), the reports and baseline files; the summary's
    lines, the rows text, and whether a requested output was not written."""
    from pytest_koembed.evaluation.per_example import write_run_files
    from pytest_koembed.records import write_json

    def write_files(data: Mapping[str, Any], target: Path) -> None:
        write_run_files(data, target, j.frames, write_json)

    outputs: list[Line] = []
    if j.carried:
        outputs.append(Line(f"gate options from the run record (its shards'): {j.carried}"))
    json_failed = False
    if j.json_path is not None:
        try:
            write_files(final, j.json_path)
        except OSError as exc:
            json_failed = True
            outputs.append(
                Line(f"--koembed-json {j.json_path}: not written: {one_line(exc)}", True)
            )
        else:
            outputs.append(Line(f"run record written to {j.json_path}"))
    published = publish(final, j.suite, j.reports, j.policy, write_files)
    lines, rows_text = summary(final, published, outputs)
    return lines, rows_text, published.failed or json_failed


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value
