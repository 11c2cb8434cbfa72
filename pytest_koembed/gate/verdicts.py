"""The CI gate's verdicts: each task against its baseline, paired or by tolerance, and Holm.

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

Baseline files, leaderboard rows and tolerances live in ``gate.baselines``, the aggregate gates
(``--koembed-fail-under``) in ``gate.gates``, and how the verdicts read in
``reports.verdicts_text`` (every number through ``reports.text``). The verdicts here are data;
the messages made on the worker (a failing item's reason) use ``protocol.scoring``'s
``fixed_text`` / ``signed_text`` / ``delta_interval_text``, the same rule ``reports.text`` is
built on (the layers put ``reports`` above ``gate``).

This module imports neither pytest nor torch nor mteb.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.gate.baselines import (
    AUTO_RULE,
    PAIRED_RULE,
    RULES,
    TOLERANCE_RULE,
    Baseline,
    BaselineChoice,
    Tolerances,
    _dec,
    _leaderboard_choice,
    _task_shown,
    baseline_from_leaderboard,
    baseline_from_record,
    baseline_identity,
    check_sidecar,
    merge_baseline,
    parse_baseline_option,
    parse_tolerances,
    read_baseline_record,
)
from pytest_koembed.gate.compare import LABELS, GateSettings, holm_verdicts
from pytest_koembed.gate.gates import (
    Gate,
    parse_gates,
)
from pytest_koembed.protocol.leaderboards import (
    leaderboards_for_encoder,
    leaderboards_for_suite,
    load_leaderboard,
)
from pytest_koembed.protocol.scoring import (
    delta_interval_text,
    fixed_text,
    points_text,
)
from pytest_koembed.protocol.spec import Suite
from pytest_koembed.records import TaskScore
from pytest_koembed.stats import bootstrap, permutation, rules

# verdicts (TaskScore.verdict)
PASS = "pass"
IMPROVED = "improved"
REGRESSED = "regressed"
WARNED = "warned"  # below a stale baseline cell, not enforced (no --koembed-strict)
NO_BASELINE = "no baseline"
NOT_PAIRED = "not paired"  # --koembed-rule=paired and the task could not be paired: it fails


class StaleBaselineWarning(UserWarning):
    """A task fell below a baseline cell that is known to be stale (not enforced)."""


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
        from pytest_koembed.gate.compare import bonferroni_verdict, pair_task, paired_fields

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
        fields = paired_fields(test, m, self.gate)
        score.delta_ci = fields.delta_ci
        if fields.delta_ci_note is not None:
            why = fields.delta_ci_note
            score.ci_note = f"{score.ci_note}; {why}" if score.ci_note else why
        score.p_value, score.p_improvement = fields.p_value, fields.p_improvement
        score.swaps, score.cannot_fail = fields.swaps, fields.cannot_fail
        score.mde, score.gated_on = fields.mde, fields.gated_on
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
                f"within this run's {level} interval [{fixed_text(low)}, {fixed_text(high)}]: "
                "the gap cannot be "
                "told from the test set's sampling noise"
                if inside
                else f"outside this run's {level} interval [{fixed_text(low)}, {fixed_text(high)}]"
            )
            base = fixed_text(judgement.baseline)
            score.verdict_note = f"{judgement.message}; baseline {base} {said}"


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
        f"{column} regressed: {fixed_text(shown)} < baseline {fixed_text(cell.value)} "
        f"- tolerance {points_text(tolerance)}"
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
    interval = (delta_ci["low"], delta_ci["high"]) if delta_ci else None
    scaled = (
        f"Holm-adjusted one-sided p {p_value:.3g}"
        if holm
        else f"one-sided p {p_value:.3g} x {m} tasks"
    )
    now = f"{fixed_text(shown)}" if shown is not None else "n/a"
    if gated_on:  # clustering: the delta is the gated statistic's, the values mteb's v-measure
        return (
            f"{column} regressed: v_measure {now} vs baseline {fixed_text(baseline)} (reported); "
            f"gated on {gated_on}, delta {delta_interval_text(delta, interval)}, {scaled} < "
            f"{gate.alpha:g} "
            f"(min effect {fixed_text(gate.min_effect)})"
        )
    return (
        f"{column} regressed: {now} vs baseline {fixed_text(baseline)}, delta "
        f"{delta_interval_text(delta, interval)} (unadjusted {gate.confidence * 100:g}% interval), "
        f"{scaled} < {gate.alpha:g} (min effect {fixed_text(gate.min_effect)})"
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
    ci = score.delta_ci
    interval = (ci["low"], ci["high"]) if ci else None
    return (
        f"{score.column}: gated on {score.gated_on} per document (delta "
        f"{delta_interval_text(score.delta, interval)} points); v_measure reported, its own change "
        "is not tested (k-means noise; docs/statistics.md)"
    )


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
