"""Baselines and the CI gate: per-task verdicts, tolerances, aggregate gates, baseline files.

What a run is compared with (``--koembed-baseline``):

- ``auto`` (default): the suite's shipped leaderboard row whose name equals the model's row name,
  dtype suffix included (``Qwen/Qwen3-Embedding-8B-bf16``). No such row: every task passes with
  the note "no baseline", said once in the summary.
- ``leaderboard:ROW`` (or ``leaderboard:LEADERBOARD:ROW``): that row of the suite's leaderboard.
- ``PATH``: a baseline file, which is a run record (``--koembed-json`` / ``--koembed-save-baseline``
  write the same JSON). A task entry needs only ``column`` and ``shown`` (or ``value``); a task
  entry may carry ``"stale": "why"`` to mark its cell stale by hand.
- ``none``: no comparison at all.

Per task (:func:`judge`, on the worker right after the evaluation): the item fails when
``shown < baseline - tolerance`` (exact decimal arithmetic on the 2-decimal numbers), with the
message ``Ko-StrategyQA regressed: 77.10 < baseline 79.20 - tolerance 1.00``. A value above
``baseline + tolerance`` is "improved", anything in between "pass". A task whose baseline has no
cell passes with the verdict "no baseline". A regression against a stale cell only warns
(:class:`StaleBaselineWarning`, verdict "warned") unless strict.

Aggregate gates (:func:`evaluate_gates`, on the controller after all items): ``weighted=60`` and
``<category>=75``. A gate passes only on the complete average it names: an errored or not-run task
makes it "incomplete" and it fails; a partly deselected category (or, for ``weighted``, any
deselected task) fails too, since the average would be over part of what the threshold means. A
gate whose tasks were all deselected on purpose (``-k`` / ``-m``) is "not checked" and does not
fail the run.

This module imports neither pytest nor torch nor mteb.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.gate.compare import LABELS, GateSettings, delta_text, holm_verdicts, legend
from pytest_koembed.protocol.averages import average_fields, count_tasks
from pytest_koembed.protocol.leaderboards import (
    find_row,
    leaderboards_for_encoder,
    leaderboards_for_suite,
    load_leaderboard,
)
from pytest_koembed.protocol.scoring import round_half_up
from pytest_koembed.protocol.spec import CATEGORIES, Suite
from pytest_koembed.records import TaskScore, read_run_record, run_suite_name
from pytest_koembed.stats import bootstrap, permutation, power, rules

DEFAULT_TOLERANCE = 1.0
"""Points a task may fall below its baseline before it fails. One point covers what a faithful
re-run of a published row moves by (float noise, PawsX's 0.1-0.2, sib200's ~0.8 mteb offset) and
is still far below a real regression."""

WEIGHTED_GATE = "weighted"

# verdicts (TaskScore.verdict)
PASS = "pass"
IMPROVED = "improved"
REGRESSED = "regressed"
WARNED = "warned"  # below a stale baseline cell, not enforced (no --koembed-strict)
NO_BASELINE = "no baseline"
NOT_PAIRED = "not paired"  # --koembed-rule=paired and the task could not be paired: it fails

# --koembed-rule: how a task is compared with a baseline file
AUTO_RULE = "auto"  # paired where the baseline's per-example results hold the task, else tolerance
PAIRED_RULE = "paired"  # every task paired: a task that cannot be paired fails
TOLERANCE_RULE = "tolerance"  # the tolerance rule only: the per-example results are not read
RULES = (AUTO_RULE, PAIRED_RULE, TOLERANCE_RULE)


class StaleBaselineWarning(UserWarning):
    """A task fell below a baseline cell that is known to be stale (not enforced)."""


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def points(x: float) -> str:
    """A number of points as the messages print it: 2 decimals (more if it has more)."""
    text = f"{x:.2f}"
    return text if float(text) == x else repr(float(x))


def signed(x: float) -> str:
    return ("+" if x >= 0 else "-") + points(abs(x))


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
        special = [f"{k} {points(v)}" for k, v in {**self.categories, **self.columns}.items()]
        return f"{points(self.default)} points" + (f" ({', '.join(special)})" if special else "")


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


@dataclass(frozen=True)
class Resolution:
    """What a model is compared with: a baseline, or None and why (said once in the summary)."""

    baseline: Baseline | None
    note: str | None = None


@dataclass
class BaselinePolicy:
    """Everything the baseline options decided, for workers (verdicts) and the controller (gates).

    Build it with :func:`make_policy`; ``resolve(row_name)`` gives the baseline of a model.
    """

    choice: BaselineChoice
    suite: Suite
    tolerances: Tolerances = field(default_factory=Tolerances)
    gates: tuple[Gate, ...] = ()
    strict: bool = False
    save_path: Path | None = None
    update: bool = False
    fixed: Baseline | None = None  # leaderboard:ROW / PATH, loaded once
    gate: GateSettings = field(default_factory=GateSettings)  # the paired gate's settings
    rule: str = AUTO_RULE  # --koembed-rule: auto | paired | tolerance (see RULES)
    # options the user set, name -> text (tolerance, min_effect): said when without effect
    given: dict[str, str] = field(default_factory=dict)
    selected: tuple[str, ...] | None = None  # columns selected in this run (set at collection)
    holm_only: list[str] = field(default_factory=list)  # controller: regressions no item failed
    weighted_paired: dict[str, Any] | None = None  # controller: the weighted average's paired delta
    _cache: dict[str, Resolution] = field(default_factory=dict, repr=False)
    _frames: dict[str, Any] | None = field(default=None, repr=False)  # the baseline's frames
    _frames_error: str | None = field(default=None, repr=False)
    _identity: dict[str, Any] | None = field(default=None, repr=False)

    def identity(self) -> dict[str, Any] | None:
        """The baseline file judged against (:func:`baseline_identity`), computed once."""
        if self.fixed is None or self.fixed.path is None:
            return None
        if self._identity is None:
            self._identity = baseline_identity(self.fixed.path)
        return self._identity

    def resolve(self, row_name: str, encoder_type: str = "dense") -> Resolution:
        """The baseline of the model ``row_name``; ``auto`` looks in the suite's leaderboards
        that rank models of ``encoder_type`` (a sparse model: the sparse table)."""
        if self.choice.mode == "none":
            return Resolution(None)
        if self.fixed is not None:
            return Resolution(self.fixed)
        if self.choice.mode == "file":  # --koembed-update-baseline of a file not written yet
            return Resolution(
                None, f"baseline file {self.choice.path} does not exist yet (it is written now)"
            )
        key = f"{encoder_type}:{row_name}"
        if key not in self._cache:
            baseline = baseline_from_leaderboard(self.suite, row_name, encoder_type=encoder_type)
            names = leaderboards_for_encoder(self.suite.name, encoder_type)
            note = None
            if baseline is None:
                rows = [r for n in names for r in load_leaderboard(n).rows]
                near = difflib.get_close_matches(row_name, rows, n=1, cutoff=0.8)
                hint = ""
                if near:
                    suffix = near[0][len(row_name) :] if near[0].startswith(row_name) else ""
                    hint = f" (closest: {near[0]!r}" + (
                        f", a {suffix[1:]} run)" if suffix in ("-fp16", "-bf16") else ")"
                    )
                kinds = (
                    f" of {encoder_type} models" if leaderboards_for_suite(self.suite.name) else ""
                )
                where = (
                    f"no row {row_name!r} in {', '.join(names)}{hint}"
                    if names
                    else f"suite {self.suite.name!r} has no shipped leaderboard{kinds}"
                )
                note = (
                    f"--koembed-baseline auto: {where}; tasks pass unchecked (compare with "
                    "--koembed-baseline PATH or leaderboard:ROW)"
                )
            self._cache[key] = Resolution(baseline, note)
        return self._cache[key]

    def describe(self) -> str:
        if self.rule == PAIRED_RULE:
            return "paired rule" + (", strict" if self.strict else "")
        rule = ", tolerance rule only" if self.rule == TOLERANCE_RULE else ""
        return f"tolerance {self.tolerances.describe()}{rule}" + (", strict" if self.strict else "")

    def no_effect(self, scores: Iterable[TaskScore]) -> list[str]:
        """One line per option the user set (``given``) that had no effect on this run's
        verdicts: a tolerance where every judged task was paired, a minimum effect where none
        was, any of them with ``--koembed-baseline=none``."""
        lines: list[str] = []
        judged = [s for s in scores if s.status == "ok" and s.baseline is not None]
        paired = [s for s in judged if s.p_value is not None]
        for name, text in self.given.items():
            option = f"--koembed-{name.replace('_', '-')}={text}"
            if self.choice.mode == "none":
                why = "--koembed-baseline=none compares with nothing"
            elif name == "tolerance" and self.rule == PAIRED_RULE:
                why = "--koembed-rule=paired judges every task by the paired test"
            elif name == "tolerance" and judged and len(paired) == len(judged):
                why = (
                    "every judged task was paired with the baseline's per-example results (the "
                    "tolerance rule judges only tasks without them; --koembed-rule=tolerance, all)"
                )
            elif name == "min_effect" and self.rule == TOLERANCE_RULE:
                why = "--koembed-rule=tolerance runs no paired test"
            elif name == "min_effect" and judged and not paired:
                why = "no task was paired (the baseline has no per-example results for them)"
            else:
                continue
            lines.append(f"note: {option} has no effect on this run: {why}")
        return lines

    @property
    def paired_count(self) -> int:
        """m: the selected tasks that have a paired baseline (the worker's Bonferroni factor)."""
        if self.fixed is None:
            return 0
        columns = self.fixed.paired_columns
        if self.selected is not None:
            columns = tuple(c for c in columns if c in self.selected)
        return len(columns)

    def baseline_frames(self) -> dict[str, Any]:
        """The baseline file's per-example frames, loaded once per process (checksum checked)."""
        if self._frames is None:
            from pytest_koembed.evaluation.per_example import load_examples

            assert self.fixed is not None and self.fixed.path is not None
            try:
                self._frames = load_examples(self.fixed.path)
            except KoembedError as exc:
                self._frames, self._frames_error = {}, str(exc)
        return self._frames

    def judge_score(
        self, score: TaskScore, row_name: str, encoder_type: str = "dense"
    ) -> Judgement:
        """Compare one finished task of the model ``row_name`` and record it in ``score``.

        Paired (``compare``) when the baseline file holds this task's per-example results and
        the two runs were made on the same rows; else the tolerance rule, with whether the
        baseline value lies within the run's own interval.
        """
        resolution = self.resolve(row_name, encoder_type)
        paired = self._judge_paired(score, resolution)
        if paired is not None:
            annotate(score, paired)
            return paired
        refused = self._paired_refusal(score, resolution)
        if refused is not None:
            annotate(score, refused)
            return refused
        judgement = judge(
            score.column,
            score.category,
            score.shown if score.status == "ok" else None,
            resolution,
            self.tolerances,
            strict=self.strict,
            enforce=not self.update,
        )
        annotate(score, judgement, note=resolution.note)
        self._within_interval(score, judgement)
        return judgement

    def _paired_baseline(self, score: TaskScore, resolution: Resolution) -> bool:
        baseline = resolution.baseline
        return (
            self.rule != TOLERANCE_RULE
            and baseline is not None
            and baseline.path is not None
            and score.column in baseline.paired_columns
            and score.status == "ok"
        )

    def _paired_refusal(self, score: TaskScore, resolution: Resolution) -> Judgement | None:
        """``--koembed-rule=paired``: a scored task with a baseline cell that could not be paired
        fails its item (no silent fall-back to the tolerance rule)."""
        baseline = resolution.baseline
        if self.rule != PAIRED_RULE or baseline is None or score.status != "ok":
            return None
        cell = baseline.cells.get(score.column)
        if cell is None:
            return None
        why = score.not_paired or (
            f"{score.column}: not paired: the baseline's per-example results have no frame for it"
        )
        why = why.removesuffix("; tolerance rule used")
        return Judgement(
            verdict=NOT_PAIRED,
            baseline=cell.value,
            stale=cell.stale,
            source=baseline.source,
            message=f"{why} (--koembed-rule=paired: no tolerance fall-back)",
            fails=not self.update,
        )

    def _judge_paired(self, score: TaskScore, resolution: Resolution) -> Judgement | None:
        if not self._paired_baseline(score, resolution):
            return None
        from pytest_koembed.gate.compare import bonferroni_verdict, pair_task

        frames = self.baseline_frames()
        base_frame = frames.get(score.column)
        if base_frame is None or score.examples is None:
            why = self._frames_error or (
                "this run has no per-example results for it"
                if score.examples is None
                else "the baseline's sidecar has no frame for it"
            )
            score.not_paired = f"{score.column}: not paired: {why}; tolerance rule used"
            return None
        m = max(self.paired_count, 1)
        try:
            test = pair_task(
                base_frame,
                score.examples,
                score.value_rule,
                score.column,
                self.gate.confidence,
                family_size=m,
                main_score=score.main_score,
            )
        except KoembedError as exc:
            score.not_paired = f"{score.column}: not paired: {exc}; tolerance rule used"
            return None
        assert resolution.baseline is not None
        cell = resolution.baseline.cells[score.column]
        verdict = bonferroni_verdict(test.delta, test.p_value, m, self.gate, test.p_improvement)
        # undefined resamples: bootstrap.percentile_interval's rule; past it, no delta_ci
        score.delta_ci = test.delta_ci.to_dict() if test.delta_ci.defined else None
        if test.delta_ci.undefined:
            why = f"delta_ci: {test.delta_ci.why_undefined('the delta')}"
            score.ci_note = f"{score.ci_note}; {why}" if score.ci_note else why
        score.p_value = test.p_value
        score.p_improvement = test.p_improvement
        score.swaps = test.to_dict()["swaps"]
        score.cannot_fail = power.cannot_fail_note(test.n, m, self.gate.alpha, test.max_swaps)
        score.mde = (
            None
            if score.cannot_fail
            else power.minimum_detectable_effect(
                test.swap_sd,
                test.delta_sd,
                self.gate.alpha / m,
                test.smallest_p,
                self.gate.min_effect,
            )
        )
        score.gated_on = test.statistic
        judgement = Judgement(
            verdict=verdict,
            baseline=cell.value,
            delta=test.delta,
            stale=cell.stale,
            source=resolution.baseline.source,
        )
        if verdict != REGRESSED:
            return judgement
        message = paired_message(
            score.column,
            score.shown,
            cell.value,
            test.delta,
            score.delta_ci,
            test.p_value,
            m,
            self.gate,
            gated_on=test.statistic,
        )
        if cell.stale is not None:
            message += f" (stale baseline cell: {cell.stale})"
            if not self.strict:
                message += "; not enforced without --koembed-strict"
                return replace(judgement, verdict=WARNED, message=message, warns=True)
        return replace(judgement, message=message, fails=not self.update)

    def _within_interval(self, score: TaskScore, judgement: Judgement) -> None:
        """Tolerance rule: does the baseline value lie within the run's own interval?"""
        if judgement.baseline is None or score.status != "ok":
            return
        ci = getattr(score, "ci", None)  # the run's own interval, when the worker computed it
        if isinstance(ci, Mapping) and ci.get("low") is not None:
            low, high = float(ci["low"]), float(ci["high"])
        elif score.examples is not None:
            try:
                low, high = bootstrap.task_interval(
                    score.examples,
                    rules.task_rule(score.value_rule, score.main_score),
                    level=self.gate.confidence,
                    stream=score.column,
                )
            except KoembedError:
                return
        else:
            return
        inside = bootstrap.within_interval(judgement.baseline, low, high)
        score.baseline_within_ci = inside
        if judgement.message and judgement.verdict in (REGRESSED, WARNED):
            level = f"{self.gate.confidence * 100:g}%"
            said = (
                f"within this run's {level} interval [{low:.2f}, {high:.2f}]: the gap cannot be "
                "told from the test set's sampling noise"
                if inside
                else f"outside this run's {level} interval [{low:.2f}, {high:.2f}]"
            )
            score.verdict_note = f"{judgement.message}; baseline {judgement.baseline:.2f} {said}"


def make_policy(
    suite: Suite,
    *,
    baseline: str | None,
    tolerance: Sequence[str] = (),
    fail_under: Sequence[str] = (),
    strict: bool = False,
    save_path: Path | None = None,
    update: bool = False,
    base_dir: Path | None = None,
    gate: GateSettings | None = None,
    rule: str | None = None,
) -> BaselinePolicy:
    """Parse and check the options; a one-line :class:`KoembedError` for any bad input.

    ``rule`` (``--koembed-rule``, :data:`RULES`; None = auto): with auto, a baseline file that
    names per-example results which are missing or fail their checksum is refused, since the
    same run would otherwise be judged by another rule without saying so."""
    rule = check_rule(rule)
    choice = parse_baseline_option(baseline, base_dir=base_dir)
    if update and choice.mode != "file":
        raise KoembedError(
            "--koembed-update-baseline rewrites the file given to --koembed-baseline=PATH; "
            f"--koembed-baseline is {choice.text!r}"
        )
    fixed: Baseline | None = None
    if choice.mode == "leaderboard":
        fixed = _leaderboard_choice(choice, suite)
    elif choice.path is not None and (choice.path.is_file() or not update):
        record = read_baseline_record(choice.path)
        fixed = baseline_from_record(record, suite, choice.path)
        if rule != TOLERANCE_RULE and not update:
            check_sidecar(record, choice.path, rule)
    if rule == PAIRED_RULE and not update and (fixed is None or fixed.path is None):
        raise KoembedError(
            f"--koembed-rule=paired needs a baseline file with per-example results "
            f"(--koembed-baseline=PATH, saved with --koembed-save-baseline); --koembed-baseline "
            f"is {choice.text!r}"
        )
    return BaselinePolicy(
        choice=choice,
        suite=suite,
        tolerances=parse_tolerances(tolerance, suite),
        gates=parse_gates(fail_under, suite),
        strict=strict,
        save_path=save_path,
        update=update,
        fixed=fixed,
        gate=gate or GateSettings(),
        rule=rule,
    )


def check_rule(rule: str | None) -> str:
    """``--koembed-rule`` (or ini ``koembed_rule``): one of :data:`RULES`; None is auto."""
    text = (rule or AUTO_RULE).strip().lower()
    if text not in RULES:
        raise KoembedError(f"--koembed-rule={rule}: choose one of {', '.join(RULES)}")
    return text


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
# Per-task verdict
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """One task compared with its baseline cell.

    ``fails``: the item must fail with ``message``. ``warns``: emit ``message`` as a
    :class:`StaleBaselineWarning`. Otherwise ``message`` is a note (or None).
    """

    verdict: str | None
    baseline: float | None = None
    delta: float | None = None
    tolerance: float | None = None
    stale: str | None = None
    source: str | None = None
    message: str | None = None
    fails: bool = False
    warns: bool = False


def judge(
    column: str,
    category: str,
    shown: float | None,
    resolution: Resolution,
    tolerances: Tolerances,
    *,
    strict: bool = False,
    enforce: bool = True,
) -> Judgement:
    """Compare one task's shown value with its baseline cell.

    ``shown`` None means the task errored: only the baseline is recorded. ``enforce=False``
    (``--koembed-update-baseline``) reports a regression without failing the item.
    """
    baseline = resolution.baseline
    if baseline is None:
        if resolution.note is None:  # --koembed-baseline none
            return Judgement(verdict=None)
        return Judgement(verdict=NO_BASELINE if shown is not None else None)
    cell = baseline.cells.get(column)
    if cell is None:
        return Judgement(
            verdict=NO_BASELINE if shown is not None else None,
            source=baseline.source,
            message=f"{column}: no baseline cell in {baseline.source}",
        )
    tolerance = tolerances.for_task(column, category)
    base_j = Judgement(
        verdict=None,
        baseline=cell.value,
        tolerance=tolerance,
        stale=cell.stale,
        source=baseline.source,
    )
    if shown is None:
        return base_j
    value, base, tol = _dec(shown), _dec(cell.value), _dec(tolerance)
    delta = float(value - base)
    if value >= base - tol:
        return replace(base_j, verdict=IMPROVED if value > base + tol else PASS, delta=delta)
    message = (
        f"{column} regressed: {shown:.2f} < baseline {cell.value:.2f} "
        f"- tolerance {points(tolerance)}"
    )
    if cell.stale is not None:
        message += f" (stale baseline cell: {cell.stale})"
        if not strict:
            message += "; not enforced without --koembed-strict"
            return replace(base_j, verdict=WARNED, delta=delta, message=message, warns=True)
    return replace(base_j, verdict=REGRESSED, delta=delta, message=message, fails=enforce)


def paired_message(
    column: str,
    shown: float | None,
    baseline: float,
    delta: float,
    delta_ci: Mapping[str, float] | None,
    p_value: float,
    m: int,
    gate: GateSettings,
    *,
    holm: bool = False,
    gated_on: str | None = None,
) -> str:
    """``Kor-STS regressed: 80.10 vs baseline 81.00, delta -0.90 [-1.40, -0.41] (unadjusted 95%
    interval), one-sided p 0.001 x 3 tasks < 0.05 (min effect 0.50)``."""
    from pytest_koembed.gate.compare import delta_text

    interval = (delta_ci["low"], delta_ci["high"]) if delta_ci else None
    scaled = (
        f"Holm-adjusted one-sided p {p_value:.3g}"
        if holm
        else f"one-sided p {p_value:.3g} x {m} tasks"
    )
    now = f"{shown:.2f}" if shown is not None else "n/a"
    if gated_on:  # clustering: the delta is the gated statistic's, the values mteb's v-measure
        return (
            f"{column} regressed: v_measure {now} vs baseline {baseline:.2f} (reported); gated "
            f"on {gated_on}, delta {delta_text(delta, interval)}, {scaled} < {gate.alpha:g} "
            f"(min effect {gate.min_effect:.2f})"
        )
    return (
        f"{column} regressed: {now} vs baseline {baseline:.2f}, delta "
        f"{delta_text(delta, interval)} (unadjusted {gate.confidence * 100:g}% interval), "
        f"{scaled} < {gate.alpha:g} (min effect {gate.min_effect:.2f})"
    )


def finish_paired(
    policy: BaselinePolicy,
    scores: Mapping[str, TaskScore],
    examples: Mapping[str, Any] | None = None,
) -> list[str]:
    """At the end of a complete run (controller): Holm over every paired task's p-value.

    Writes ``p_adjusted`` and the final verdict into each paired score. Returns the columns that
    Holm finds regressed although their item passed (the worker's Bonferroni test missed them):
    they fail the run. With ``--koembed-update-baseline`` nothing fails.
    """
    from pytest_koembed.gate.compare import task_mde

    paired = {c: s for c, s in scores.items() if s.p_value is not None and s.delta is not None}
    verdicts = holm_verdicts(
        {c: (s.delta, s.p_value, s.p_improvement) for c, s in paired.items()},  # type: ignore[misc]
        policy.gate,
    )
    holm_only = []
    for column, holm in verdicts.items():
        adjusted, verdict = holm.adjusted, holm.verdict
        score = paired[column]
        item_failed = score.verdict == REGRESSED
        score.p_adjusted = adjusted
        score.p_improvement_adjusted = holm.improvement_adjusted
        if not score.cannot_fail:
            score.mde = task_mde(score.swaps, holm.step_alpha, policy.gate)
        if verdict == REGRESSED and score.baseline_stale and not policy.strict:
            verdict = WARNED
        if verdict == REGRESSED and not item_failed:
            assert score.p_value is not None and score.baseline is not None
            score.verdict_note = (
                paired_message(
                    column,
                    score.shown,
                    score.baseline,
                    score.delta or 0.0,
                    score.delta_ci,
                    adjusted,
                    len(paired),
                    policy.gate,
                    holm=True,
                    gated_on=score.gated_on,
                )
                + "; found by Holm over the run, its item passed"
            )
            if not policy.update:
                holm_only.append(column)
        score.verdict = verdict
    policy.holm_only = holm_only
    policy.weighted_paired = weighted_paired_delta(policy, paired, examples or {})
    return holm_only


def weighted_paired_delta(
    policy: BaselinePolicy, paired: Mapping[str, TaskScore], examples: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The weighted average's paired delta with its (unadjusted) paired bootstrap interval, when
    every task of the suite was paired (``compare.average_deltas``, as ``koembed compare``);
    None otherwise."""
    from pytest_koembed.evaluation.per_example import pair_examples
    from pytest_koembed.gate.compare import average_deltas

    columns = [t.column for t in policy.suite.tasks]
    if not columns or any(c not in paired for c in columns):
        return None
    base_frames = policy.baseline_frames() if policy.fixed is not None else {}
    tasks = []
    for column in columns:
        score = paired[column]
        new = examples.get(column, score.examples)
        base = base_frames.get(column)
        if new is None or base is None:
            return None
        try:
            b, n = pair_examples(base, new, name=column)
        except KoembedError:
            return None
        from pytest_koembed.stats.rules import task_rule

        tasks.append((column, score.category, b, n, task_rule(score.value_rule, score.main_score)))
    try:
        averages = average_deltas(tasks, policy.suite.scheme, policy.gate.confidence)
    except (KoembedError, ValueError, ArithmeticError):
        return None
    weighted = averages.get("weighted_average")
    return (
        dict(weighted)
        if isinstance(weighted, Mapping) and weighted.get("delta") is not None
        else None
    )


def annotate(score: TaskScore, judgement: Judgement, note: str | None = None) -> None:
    """Record a judgement in the task's score (what travels to the controller)."""
    score.baseline = judgement.baseline
    score.baseline_source = judgement.source
    score.baseline_stale = judgement.stale
    score.delta = judgement.delta
    score.tolerance = judgement.tolerance
    score.verdict = judgement.verdict
    score.verdict_note = judgement.message or note


# ---------------------------------------------------------------------------------------------
# Aggregate gates
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    name: str  # "weighted" or a category
    threshold: float

    @property
    def label(self) -> str:
        return "weighted average" if self.name == WEIGHTED_GATE else f"{self.name} average"


def parse_gates(specs: Iterable[str], suite: Suite) -> tuple[Gate, ...]:
    """``["weighted=60,retrieval=75"]`` -> gates (a later item for the same name wins)."""
    categories = {t.category for t in suite.tasks}
    gates: dict[str, Gate] = {}
    for item in _items(specs):
        where = f"--koembed-fail-under {item!r}"
        key, sep, value = item.rpartition("=")
        if not sep or not key:
            raise KoembedError(f"{where}: expected NAME=POINTS, e.g. weighted=60 or retrieval=75")
        threshold = _number(value, where)
        if threshold > 100:
            raise KoembedError(f"{where}: {value!r} is above 100 points")
        if key.casefold() in (WEIGHTED_GATE, "weighted_average"):
            name = WEIGHTED_GATE
        else:
            category = _category(key, suite)
            if category is None or category not in categories:
                own = dict.fromkeys(t.category for t in suite.tasks)
                have = ", ".join(
                    [c for c in CATEGORIES if c in own] + [c for c in own if c not in CATEGORIES]
                )
                raise KoembedError(
                    f"{where}: {key!r} is not 'weighted' nor a category of suite "
                    f"{suite.name!r} ({have})"
                )
            name = category
        gates[name] = Gate(name, threshold)
    return tuple(gates.values())


@dataclass(frozen=True)
class GateResult:
    name: str
    threshold: float
    status: str  # "passed" | "failed" | "not checked"
    value: float | None = None
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        label = WEIGHTED_GATE if self.name == WEIGHTED_GATE else self.name
        head = f"gate {label} >= {points(self.threshold)}: {self.status.upper()}"
        return f"{head}, {self.reason}" if self.reason else head


def _missing(record: Mapping[str, Any], columns: Sequence[str]) -> list[str]:
    """Of ``columns`` (selected ones), those that errored or did not run."""
    tasks = {t["column"]: t for t in record.get("tasks", [])}
    out = []
    for column in columns:
        task = tasks.get(column)
        if task is None:
            out.append(f"{column} not run")
        elif task.get("status") != "ok" or task.get("shown") is None:
            out.append(f"{column} errored")
    return out


def unchecked_gates(gates: Sequence[Gate], reason: str) -> list[GateResult]:
    """Every gate as "not checked" (a run that did not finish), with ``reason``."""
    return [GateResult(gate.name, gate.threshold, "not checked", None, reason) for gate in gates]


def evaluate_gates(
    gates: Sequence[Gate], record: Mapping[str, Any], suite: Suite
) -> list[GateResult]:
    """Check each gate on a finished run record (see the module docstring for the rules)."""
    deselected = set(record.get("deselected", []))
    averages = record.get("category_averages", {})
    results = []
    for gate in gates:
        columns = [
            t.column for t in suite.tasks if gate.name == WEIGHTED_GATE or t.category == gate.name
        ]
        selected = [c for c in columns if c not in deselected]
        value = (
            record.get("weighted_average")
            if gate.name == WEIGHTED_GATE
            else averages.get(gate.name)
        )
        what = "task" if gate.name == WEIGHTED_GATE else f"{gate.name} task"
        if not selected:
            results.append(
                GateResult(
                    gate.name, gate.threshold, "not checked", None, f"no {what} selected (-k/-m)"
                )
            )
            continue
        missing = _missing(record, selected)
        if missing:
            reason = f"incomplete ({', '.join(missing)}): never passes on partial data"
            results.append(GateResult(gate.name, gate.threshold, "failed", None, reason))
            continue
        if len(selected) < len(columns):
            reason = (
                f"only {len(selected)} of {len(columns)} {what}s selected (-k/-m); the "
                f"{gate.label} needs them all"
            )
            results.append(GateResult(gate.name, gate.threshold, "failed", None, reason))
            continue
        if value is None:
            reason = f"no {gate.label} could be computed"
            results.append(GateResult(gate.name, gate.threshold, "failed", None, reason))
            continue
        short = _dec(gate.threshold) - _dec(value)
        if short > 0:
            reason = (
                f"{gate.label} {value:.2f} is {points(float(short))} short of {gate.threshold:.2f}"
            )
            results.append(GateResult(gate.name, gate.threshold, "failed", value, reason))
        else:
            reason = f"{gate.label} {value:.2f}"
            results.append(GateResult(gate.name, gate.threshold, "passed", value, reason))
    return results


# ---------------------------------------------------------------------------------------------
# The summary's baseline and gate lines (reports.summary_lines calls these)
# ---------------------------------------------------------------------------------------------


def baseline_block(
    option: str,
    policy_description: str,
    tasks: Iterable[TaskScore],
    policy: BaselinePolicy | None = None,
) -> dict[str, Any]:
    """The run record's ``baseline`` entry: what was compared with, said once."""
    tasks = list(tasks)
    sources: list[str] = []
    notes: list[str] = []
    no_cell: list[str] = []
    for score in tasks:
        if score.baseline_source and score.baseline_source not in sources:
            sources.append(score.baseline_source)
        if score.verdict == NO_BASELINE:
            if score.baseline_source:
                no_cell.append(score.column)
            elif score.verdict_note and score.verdict_note not in notes:
                notes.append(score.verdict_note)
    paired = [s for s in tasks if s.p_value is not None]
    not_paired = [s.not_paired for s in tasks if s.not_paired]
    block: dict[str, Any] = {
        "option": option,
        "sources": sources,
        "notes": notes,
        "no_cell": no_cell,
        "settings": policy_description,
        "paired": None,
    }
    if policy is not None:
        block["rule"] = policy.rule
        block["judged_against"] = policy.identity()
        block["no_effect"] = policy.no_effect(tasks)
    if policy is not None and (paired or not_paired):
        block["paired"] = {
            "tasks": len(paired),
            "confidence": policy.gate.confidence,
            "min_effect": policy.gate.min_effect,
            "file": str(policy.fixed.path) if policy.fixed and policy.fixed.path else None,
            "same_rows": not not_paired,
            "not_paired": not_paired,
            "gated": [gated_line(s) for s in paired if s.gated_on],
            "holm_only": list(policy.holm_only),
            "method": {
                "version": permutation.PAIRED_METHOD_VERSION,
                "test": permutation.PAIRED_METHOD,
            },
            "labels": dict(LABELS),
            "cannot_fail": {s.column: s.cannot_fail for s in paired if s.cannot_fail},
            "weighted_average": policy.weighted_paired,
        }
    return block


def gated_line(score: TaskScore) -> str:
    """One summary line for a task gated on another statistic than its value (clustering)."""
    from pytest_koembed.gate.compare import delta_text

    ci = score.delta_ci
    interval = (ci["low"], ci["high"]) if ci else None
    return (
        f"{score.column}: gated on {score.gated_on} per document (delta "
        f"{delta_text(score.delta, interval)} points); v_measure reported, its own change is not "
        "tested (k-means noise; docs/statistics.md)"
    )


def baseline_lines(record: Mapping[str, Any]) -> list[str]:
    block = record.get("baseline")
    if not isinstance(block, Mapping):
        return []
    if block.get("option") == "none":
        return [str(note) for note in block.get("no_effect") or []]
    lines = [f"baseline: {s} ({block.get('settings', '')})" for s in block.get("sources", [])]
    against = judged_against_line(block.get("judged_against"))
    if against is not None:
        lines.append(against)
    lines += [f"no baseline: {n}" for n in block.get("notes", [])]
    paired = block.get("paired")
    if isinstance(paired, Mapping):
        gate = GateSettings(paired["confidence"], paired["min_effect"])
        same = "yes" if paired.get("same_rows") else f"no, {len(paired['not_paired'])} not paired"
        how = gate.describe(paired["tasks"])
        shard = paired.get("shard")
        if isinstance(shard, Mapping):  # --koembed-shard: Holm needs every shard's p-values
            how = (
                f"shard {shard['label']}: each item at Bonferroni over the run's "
                f"{shard['bonferroni_m']} paired tasks, {gate.confidence * 100:g}% confidence, "
                f"min effect {gate.min_effect:.2f} points; Holm over the run is koembed gate's, "
                "on the merged record"
            )
        lines.append(f"paired gate: {how}; baseline {paired.get('file')} (same rows: {same})")
        lines += [f"  {note}" for note in paired.get("not_paired", [])]
        lines.append(
            "  one-sided: drops are tested at the full level and fail the run, improvements are "
            "a family of their own that never fails; "
            + legend(gate.confidence).split("; ", 1)[0]
            + "; p: Holm-adjusted"
        )
        for column, why in (paired.get("cannot_fail") or {}).items():
            lines.append(f"  {column}: {why}")
        weighted = paired.get("weighted_average")
        if isinstance(weighted, Mapping) and weighted.get("delta") is not None:
            ci = weighted.get("delta_ci")
            interval = (ci["low"], ci["high"]) if isinstance(ci, Mapping) else None
            lines.append(
                f"weighted average, paired: {weighted['base']:.2f} -> {weighted['new']:.2f}, "
                f"delta {delta_text(weighted['delta'], interval)} (unadjusted "
                f"{gate.confidence * 100:g}% paired bootstrap interval; not tested)"
            )
        lines += [f"  {note}" for note in paired.get("gated", [])]
    if block.get("no_cell"):
        lines.append("no baseline cell (passed unchecked): " + ", ".join(block["no_cell"]))
    lines += [str(note) for note in block.get("no_effect") or []]
    counts: dict[str, int] = {}
    for task in record.get("tasks", []):
        verdict = task.get("verdict")
        if verdict:
            counts[verdict] = counts.get(verdict, 0) + 1
    if counts:
        lines.append("verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    for task in record.get("tasks", []):
        if task.get("verdict") in (REGRESSED, WARNED) and task.get("verdict_note"):
            lines.append(f"  {task['verdict_note']}")
    holm_only = paired.get("holm_only") if isinstance(paired, Mapping) else None
    if holm_only:
        lines.append(
            f"{len(holm_only)} regression(s) found by Holm over the run although the item "
            f"passed: {', '.join(holm_only)} (exit status 1)"
        )
    return lines


def judged_against_line(info: Any) -> str | None:
    """``judged against /ws/base.json (sha256 1a2b3c4d5e6f..., sidecar base.examples.parquet
    sha256 ..., git commit 0123abcd...)``: which file, exactly, the verdicts come from."""
    if not isinstance(info, Mapping) or not info.get("path"):
        return None
    parts = [f"sha256 {str(info.get('sha256'))[:12]}..."]
    sidecar = info.get("sidecar")
    if isinstance(sidecar, Mapping):
        parts.append(f"sidecar {sidecar.get('file')} sha256 {str(sidecar.get('sha256'))[:12]}...")
    commit = info.get("git_commit")
    parts.append(f"git commit {commit[:12]}" if commit else "not a committed file")
    return f"judged against {info['path']} ({', '.join(parts)})"


def gate_lines(record: Mapping[str, Any]) -> list[str]:
    gates = [GateResult(**g) for g in record.get("gates") or []]
    lines = [g.line() for g in gates]
    failed = [g for g in gates if g.failed]
    if failed:
        lines.append(
            f"{len(failed)} of {len(gates)} gate(s) failed: "
            + ", ".join(g.name for g in failed)
            + " (exit status 1)"
        )
    return lines


def verdict_cell(task: Mapping[str, Any]) -> str:
    verdict = task.get("verdict")
    if not verdict:
        return ""
    text = verdict.upper() if verdict == REGRESSED else verdict
    if task.get("cannot_fail") and task.get("p_value") is not None:
        text += " (cannot fail)"
    return text + (" (stale)" if task.get("baseline_stale") else "")


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
                changes.append(f"  {col}: new {fresh_value:.2f}")
            elif old_value != fresh_value or (before and before.get("stale")):
                counts["changed"] += 1
                delta = float(_dec(fresh_value) - _dec(old_value))
                changes.append(
                    f"  {col}: {old_value:.2f} -> {fresh_value:.2f} ({signed(delta)})"
                    + (", stale mark dropped" if before and before.get("stale") else "")
                )
            else:
                counts["unchanged"] += 1
        elif before is not None:
            merged[col] = before
            counts["kept"] += 1
            if fresh is not None:  # it ran and errored
                kept = f" {old_value:.2f}" if old_value is not None else ""
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


def write_baseline_files(
    policy: BaselinePolicy,
    record: Mapping[str, Any],
    write: Callable[[Mapping[str, Any], Path], None],
) -> list[str]:
    """``--koembed-save-baseline`` / ``--koembed-update-baseline`` at the end of a finished run.

    ``write(record, path)`` writes JSON (``reports.write_json``). Returns the summary's lines.
    Nothing is written when no task was scored.
    """
    if policy.save_path is None and not policy.update:
        return []
    if not record.get("tasks"):
        return ["baseline not written: no task was scored"]
    lines = []
    if policy.save_path is not None:
        write(record, policy.save_path)
        scored = sum(1 for t in record["tasks"] if _task_shown(t, t["column"]) is not None)
        lines.append(
            f"baseline written to {policy.save_path} ({scored} task values)"
            + _sidecar_note(policy.save_path)
        )
    path = policy.choice.path
    if policy.update and path is not None:
        old = read_baseline_record(path) if path.is_file() else None
        merged, changes = merge_baseline(old, record, policy.suite)
        write(merged, path)
        lines.append(
            f"baseline {path} {'updated' if old else 'created'}: {changes[0]}" + _sidecar_note(path)
        )
        lines.extend(changes[1:])
    return lines


def _sidecar_note(path: Path) -> str:
    """What a written baseline consists of: ``, with its per-example results X beside it:
    commit both files``. The paired rule needs the second file (see :func:`check_sidecar`)."""
    try:
        block = read_baseline_record(path).get("examples")
    except KoembedError:
        return ""
    if isinstance(block, Mapping) and block.get("file"):
        return (
            f", with its per-example results {path.parent / str(block['file'])}: commit both "
            "files (the paired rule needs the second)"
        )
    return "; no per-example results: the tolerance rule judges against it"
