"""The paired comparison of two runs: per task, the run-level Holm gate, and ``koembed compare``.

One rule, used by the plugin (a ``--koembed-baseline`` run record with per-example results) and
by ``koembed compare BASE.json NEW.json`` alike:

- per task, the two runs' frames are paired by example key (:func:`per_example.pair_examples`)
  and compared by :func:`permutation.paired_test` (``delta``, ``delta_ci``, one-sided ``p_value``
  for a drop and ``p_improvement`` for a gain);
- over the run, the drops' p-values of all paired tasks are adjusted by Holm's step-down method
  and each task gets :func:`multiplicity.paired_verdict`: ``regressed`` when the adjusted p is below
  ``1 - confidence`` and the shown drop is at least the minimum effect; ``improved`` likewise
  from the gains' own Holm family (which never fails a run); ``within noise`` otherwise. An
  unchanged model fails the gate at most ``1 - confidence`` of the
  time, whatever the dependence between tasks.

On an xdist worker a task cannot wait for the others' p-values, so the item fails on the
Bonferroni rule ``p * m < alpha`` (m: the selected tasks with a paired baseline). Holm's first step
is exactly that test, and Holm rejects a superset of what Bonferroni rejects, so every failed item
is a Holm regression too; the controller then applies Holm to all p-values, and a regression that
only Holm finds fails the run (exit status 1) with one summary line.

``koembed compare``'s text, Markdown, chart and subcommand are ``reports.compare_text``'s.

Plain module: no pytest, no torch, no mteb.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from pytest_koembed.errors import KoembedError
from pytest_koembed.evaluation.per_example import load_examples, pair_examples
from pytest_koembed.records import read_run_record, run_suite_name
from pytest_koembed.stats import bootstrap, kernels, multiplicity, permutation, power, rules

REGRESSED = "regressed"
IMPROVED = "improved"
WITHIN_NOISE = "within noise"
NOT_PAIRED = "not paired"

LABELS = {
    "delta_ci": "paired bootstrap interval of new - base, unadjusted for the number of tasks",
    "p_value": "one-sided randomisation p for a drop, before adjustment",
    "p_adjusted": "p_value Holm-adjusted over the run's paired tasks (the drop family)",
    "p_improvement_adjusted": "one-sided p for a gain, Holm-adjusted in its own family",
    "mde": "the drop caught with 80% power one-sided at the task's Holm step (points)",
}
"""What each number of a paired task is: an unadjusted interval and a Holm-adjusted p can
disagree (``regressed`` beside an interval that contains 0), so each is labelled."""


def old_paired_method(record: Mapping[str, Any]) -> str | None:
    """A line when ``record`` holds paired verdicts of the older paired test (two-sided p of a
    fixed 1,000 swaps: a task with a ``p_value`` but no ``swaps`` block, and no
    ``baseline.paired.method`` version), else None."""
    block = record.get("baseline")
    paired = block.get("paired") if isinstance(block, Mapping) else None
    method = paired.get("method") if isinstance(paired, Mapping) else None
    if isinstance(method, Mapping) and method.get("version") == permutation.PAIRED_METHOD_VERSION:
        return None
    old = [
        t
        for t in record.get("tasks", [])
        if isinstance(t, Mapping) and t.get("p_value") is not None and not t.get("swaps")
    ]
    if not old:
        return None
    return (
        "its paired verdicts come from an older paired test (two-sided p, fixed 1,000 swaps, "
        f"no paired method version {permutation.PAIRED_METHOD_VERSION}): they are not reused, "
        "the tasks are re-judged with the one-sided test"
    )


def check_confidence(value: Any, where: str = "--koembed-confidence") -> float:
    """A confidence level strictly between 0 and 1 (default 0.95 for None)."""
    if value is None or value == "":
        return bootstrap.DEFAULT_LEVEL
    try:
        level = float(value)
    except (TypeError, ValueError):
        raise KoembedError(f"{where} {value!r} is not a number; give e.g. 0.95") from None
    if not (0.0 < level < 1.0) or not math.isfinite(level):
        raise KoembedError(f"{where} {value!r} must lie strictly between 0 and 1, e.g. 0.95")
    return level


def check_min_effect(value: Any, where: str = "--koembed-min-effect") -> float:
    """A minimum effect in points, >= 0 (default :data:`power.DEFAULT_MIN_EFFECT` for None)."""
    if value is None or value == "":
        return power.DEFAULT_MIN_EFFECT
    try:
        points = float(value)
    except (TypeError, ValueError):
        raise KoembedError(f"{where} {value!r} is not a number of points; give e.g. 0.5") from None
    if not math.isfinite(points) or points < 0 or points > 100:
        raise KoembedError(f"{where} {value!r} must be a number of points from 0 to 100")
    return points


@dataclass(frozen=True)
class GateSettings:
    confidence: float = bootstrap.DEFAULT_LEVEL
    min_effect: float = power.DEFAULT_MIN_EFFECT

    @property
    def alpha(self) -> float:
        return power.significance_level(self.confidence)


def pair_task(
    base_frame: pd.DataFrame,
    new_frame: pd.DataFrame,
    rule: str,
    column: str,
    confidence: float,
    family_size: int = 1,
    *,
    main_score: str | None = None,
) -> permutation.PairedTest:
    """One task's paired test, its resolution set by the run's ``family_size`` (m) and level;
    a one-line KoembedError when the frames are on different rows.

    ``main_score``: the task's main score key, which a ``main_score`` rule tests
    (``rules.task_rule``). A ``delta_ci`` with more undefined resamples than an interval may
    leave out has NaN ends (``bootstrap.percentile_interval``); callers show no interval then.
    """
    base, new = pair_examples(base_frame, new_frame, name=column)
    return permutation.paired_test(
        base,
        new,
        rules.task_rule(rule, main_score),
        level=confidence,
        stream=column,
        family_size=family_size,
    )


@dataclass(frozen=True)
class PairedFields:
    """What a paired task's record holds of its test (the run record's paired task, and
    ``koembed compare``'s): one place for both."""

    delta: float
    delta_ci: dict[str, float] | None  # {level, low, high}; None past the undefined resamples
    delta_ci_note: str | None  # why there is no delta_ci (or how many resamples it left out)
    p_value: float
    p_improvement: float | None
    swaps: dict[str, Any]
    cannot_fail: str | None
    mde: float | None  # at the Bonferroni step alpha / m (Holm's step replaces it at the end)
    gated_on: str | None


def paired_fields(test: permutation.PairedTest, m: int, settings: GateSettings) -> PairedFields:
    """A paired task's record fields from its test, ``m`` the run's paired tasks."""
    cannot_fail = power.cannot_fail_note(test.n, m, settings.alpha, test.max_swaps)
    mde = (
        None
        if cannot_fail
        else power.minimum_detectable_effect(
            test.swap_sd, test.delta_sd, settings.alpha / m, test.smallest_p, settings.min_effect
        )
    )
    return PairedFields(
        delta=test.delta,
        delta_ci=test.delta_ci.to_dict() if test.delta_ci.defined else None,
        delta_ci_note=(
            f"delta_ci: {test.delta_ci.why_undefined('the delta')}"
            if test.delta_ci.undefined
            else None
        ),
        p_value=test.p_value,
        p_improvement=test.p_improvement,
        swaps=test.to_dict()["swaps"],
        cannot_fail=cannot_fail,
        mde=mde,
        gated_on=test.statistic,
    )


def bonferroni_verdict(
    delta: float,
    p_value: float,
    m: int,
    settings: GateSettings,
    p_improvement: float | None = None,
) -> str:
    """The verdict an item gets on its own (on a worker): each one-sided p scaled by m,
    Holm's first step."""
    m = max(m, 1)
    gain = None if p_improvement is None else min(1.0, p_improvement * m)
    return multiplicity.paired_verdict(delta, min(1.0, p_value * m), *_args(settings), gain)


def _args(settings: GateSettings) -> tuple[float, float]:
    return settings.confidence, settings.min_effect


class HolmResult(NamedTuple):
    """One task after Holm: the drop family's adjusted p, the verdict, the improvement
    family's adjusted p, and the level the task faced at its Holm step (drops)."""

    adjusted: float
    verdict: str
    improvement_adjusted: float | None
    step_alpha: float


def holm_verdicts(
    tests: Mapping[str, tuple[float, ...]], settings: GateSettings
) -> dict[str, HolmResult]:
    """column -> :class:`HolmResult` from column -> (delta, p for a drop[, p for a gain]).

    Drops are one family (Holm at the full alpha: a regression fails the run); gains are
    another, Holm-adjusted on their own, that never fails a run."""
    columns = list(tests)
    adjusted = multiplicity.holm([tests[c][1] for c in columns])
    with_gain = [c for c in columns if len(tests[c]) > 2 and tests[c][2] is not None]
    gains = dict(zip(with_gain, multiplicity.holm([tests[c][2] for c in with_gain]), strict=True))
    steps = multiplicity.holm_steps([tests[c][1] for c in columns], settings.alpha)
    return {
        c: HolmResult(
            adj,
            multiplicity.paired_verdict(tests[c][0], adj, *_args(settings), gains.get(c)),
            gains.get(c),
            step,
        )
        for c, adj, step in zip(columns, adjusted, steps, strict=True)
    }


def task_mde(
    swaps: Mapping[str, Any] | None, step_alpha: float, settings: GateSettings
) -> float | None:
    """A paired task's minimum detectable effect (points) from its record's ``swaps`` block, at
    the level of its Holm step; None where the test cannot reach that level."""
    if not isinstance(swaps, Mapping) or swaps.get("swap_sd") is None:
        return None
    delta_sd = swaps.get("delta_sd")
    return power.minimum_detectable_effect(
        float(swaps["swap_sd"]),
        float(delta_sd) if delta_sd is not None else math.nan,
        step_alpha,
        float(swaps.get("smallest_p", 1.0)),
        settings.min_effect,
    )


# ---------------------------------------------------------------------------------------------
# Two saved runs: koembed compare
# ---------------------------------------------------------------------------------------------


@dataclass
class TaskComparison:
    column: str
    category: str
    base: float | None
    new: float | None
    delta: float | None = None
    delta_ci: tuple[float, float] | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    verdict: str = NOT_PAIRED
    note: str | None = None
    p_improvement: float | None = None
    p_improvement_adjusted: float | None = None
    swaps: dict[str, Any] | None = None
    mde: float | None = None
    cannot_fail: str | None = None


@dataclass
class Comparison:
    base_path: str
    new_path: str
    settings: GateSettings
    tasks: list[TaskComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    averages: dict[str, Any] = field(default_factory=dict)

    @property
    def paired(self) -> list[TaskComparison]:
        return [t for t in self.tasks if t.p_value is not None]

    @property
    def regressed(self) -> list[TaskComparison]:
        return [t for t in self.tasks if t.verdict == REGRESSED]

    @property
    def verdict(self) -> str:
        if self.regressed:
            names = ", ".join(t.column for t in self.regressed)
            return f"REGRESSED: {names} (significant after Holm, at least the minimum effect)"
        improved = [t.column for t in self.tasks if t.verdict == IMPROVED]
        if not self.paired:
            return "nothing compared: no task was paired"
        return "no significant regression" + (
            f"; improved: {', '.join(improved)}" if improved else ""
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base_path,
            "new": self.new_path,
            "confidence": self.settings.confidence,
            "min_effect": self.settings.min_effect,
            "paired_method": {
                "version": permutation.PAIRED_METHOD_VERSION,
                "test": permutation.PAIRED_METHOD,
            },
            "labels": LABELS,
            "tasks": [
                {
                    "column": t.column,
                    "category": t.category,
                    "base": t.base,
                    "new": t.new,
                    "delta": t.delta,
                    "delta_ci": None
                    if t.delta_ci is None
                    else {
                        "level": self.settings.confidence,
                        "low": t.delta_ci[0],
                        "high": t.delta_ci[1],
                    },
                    "p_value": t.p_value,
                    "p_adjusted": t.p_adjusted,
                    "p_improvement": t.p_improvement,
                    "p_improvement_adjusted": t.p_improvement_adjusted,
                    "swaps": t.swaps,
                    "mde": t.mde,
                    "cannot_fail": t.cannot_fail,
                    "verdict": t.verdict,
                    "note": t.note,
                }
                for t in self.tasks
            ],
            "notes": self.notes,
            "averages": self.averages,
            "regressed": [t.column for t in self.regressed],
            "verdict": self.verdict,
        }


def _ok_tasks(record: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {
        t["column"]: t
        for t in record.get("tasks", [])
        if isinstance(t, Mapping) and t.get("status", "ok") == "ok" and t.get("value") is not None
    }


def _align_tasks(
    out: Comparison,
    base_tasks: Mapping[str, Mapping[str, Any]],
    new_tasks: Mapping[str, Mapping[str, Any]],
    base_frames: Mapping[str, pd.DataFrame],
    new_frames: Mapping[str, pd.DataFrame],
    *,
    base_path: str,
    new_path: str,
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame, str]]:
    """One row per task of either run (in ``out.tasks``); the aligned frames and value rule of
    those that can be paired (a note in ``out.notes`` for each that cannot)."""
    aligned: dict[str, tuple[pd.DataFrame, pd.DataFrame, str]] = {}
    order = list(new_tasks) + [c for c in base_tasks if c not in new_tasks]
    for column in order:
        b, n = base_tasks.get(column), new_tasks.get(column)
        row = TaskComparison(
            column=column,
            category=str((n or b or {}).get("category", "")),
            base=b.get("value") if b else None,
            new=n.get("value") if n else None,
        )
        out.tasks.append(row)
        if b is None or n is None:
            row.note = f"{column}: only in {new_path if b is None else base_path}; not compared"
            out.notes.append(row.note)
            continue
        if column not in base_frames or column not in new_frames:
            which = base_path if column not in base_frames else new_path
            row.note = f"{column}: {which} holds no per-example results for it; not compared"
            out.notes.append(row.note)
            continue
        main = n.get("main_score")
        if b.get("main_score") != main and str(n.get("value_rule")) == "main_score":
            row.note = (
                f"{column}: not paired: its main score is {b.get('main_score')!r} in "
                f"{base_path}, {main!r} in {new_path}"
            )
            out.notes.append(row.note)
            continue
        try:  # aligned first: the number of paired tasks sets every test's resolution
            aligned[column] = (
                *pair_examples(base_frames[column], new_frames[column], name=column),
                rules.task_rule(str(n["value_rule"]), main),
            )
        except KoembedError as exc:
            row.note = f"{column}: not paired: {exc}"
            out.notes.append(row.note)
    return aligned


def _test_tasks(
    out: Comparison,
    aligned: dict[str, tuple[pd.DataFrame, pd.DataFrame, str]],
    settings: GateSettings,
) -> None:
    """Each aligned task's paired test, into its row; a task whose test fails is dropped from
    ``aligned`` with a note."""
    rows = {t.column: t for t in out.tasks}
    for column, (base_frame, new_frame, rule) in list(aligned.items()):
        row = rows[column]
        try:
            test = permutation.paired_test(
                base_frame,
                new_frame,
                rule,
                level=settings.confidence,
                stream=column,
                family_size=len(aligned),
            )
        except KoembedError as exc:
            row.note = f"{column}: not paired: {exc}"
            out.notes.append(row.note)
            del aligned[column]
            continue
        fields = paired_fields(test, len(aligned), settings)
        row.delta, row.p_value = fields.delta, fields.p_value
        if fields.delta_ci is not None:
            row.delta_ci = (fields.delta_ci["low"], fields.delta_ci["high"])
        if fields.delta_ci_note is not None:
            out.notes.append(f"{column}: {fields.delta_ci_note}")
        row.p_improvement, row.swaps = fields.p_improvement, fields.swaps
        if fields.gated_on is not None:
            out.notes.append(
                f"{column}: gated on {fields.gated_on}; v_measure reported (base, new)"
            )
        row.cannot_fail = fields.cannot_fail


def compare_records(
    base_record: Mapping[str, Any],
    base_frames: Mapping[str, pd.DataFrame],
    new_record: Mapping[str, Any],
    new_frames: Mapping[str, pd.DataFrame],
    settings: GateSettings,
    *,
    base_path: str = "BASE",
    new_path: str = "NEW",
) -> Comparison:
    """Pair every task the two runs share, test it, Holm over them all, give the verdicts."""
    base_suite, new_suite = run_suite_name(base_record), run_suite_name(new_record)
    if base_suite and new_suite and base_suite != new_suite:
        raise KoembedError(
            f"{base_path} is a run of suite {base_suite!r}, {new_path} of {new_suite!r}; "
            "compare runs of the same suite"
        )
    base_tasks, new_tasks = _ok_tasks(base_record), _ok_tasks(new_record)
    out = Comparison(base_path, new_path, settings)
    for path, record in ((base_path, base_record), (new_path, new_record)):
        old = old_paired_method(record)
        if old:
            out.notes.append(f"{path}: {old}; only its per-example results are used here")
    aligned = _align_tasks(
        out, base_tasks, new_tasks, base_frames, new_frames, base_path=base_path, new_path=new_path
    )
    _test_tasks(out, aligned, settings)
    verdicts = holm_verdicts(
        {t.column: (t.delta, t.p_value, t.p_improvement) for t in out.paired},  # type: ignore[misc]
        settings,
    )
    for t in out.paired:
        holm = verdicts[t.column]
        t.p_adjusted, t.verdict, t.p_improvement_adjusted = (
            holm.adjusted,
            holm.verdict,
            holm.improvement_adjusted,
        )
        t.mde = None if t.cannot_fail else task_mde(t.swaps, holm.step_alpha, settings)
    scheme = str(new_record.get("scheme") or base_record.get("scheme") or "")
    out.averages = average_deltas(
        [(t.column, t.category, *aligned[t.column]) for t in out.paired],
        scheme,
        settings.confidence,
    )
    out.notes += out.averages.pop("notes", [])
    complete = (
        base_record.get("weighted_average") is not None
        and new_record.get("weighted_average") is not None
    )
    if not complete or len(out.paired) != len(out.tasks):  # an average of part of the suite
        out.averages["weighted_average"] = {
            "base": None,
            "new": None,
            "delta": None,
            "delta_ci": None,
        }
    return out


def average_deltas(
    tasks: Sequence[tuple[str, str, pd.DataFrame, pd.DataFrame, str]],
    scheme: str,
    confidence: float,
    n_resamples: int = kernels.DEFAULT_RESAMPLES,
) -> dict[str, Any]:
    """Category and weighted averages of the paired tasks in both runs, and the paired interval
    of their difference: each task is resampled with the draws ``permutation.paired_test`` uses (its
    column's stream), the same draws for both runs, and each resample goes through the
    leaderboard's own formulas (``scoring.summarize``). A weighted average needs the whole suite.
    Resamples in which an average is undefined (a task's value undefined in it, in either run)
    follow ``bootstrap.percentile_interval``'s rule: left out and counted, and no ``delta_ci`` past
    one tail's share; ``"notes"`` says so.
    """
    from pytest_koembed.protocol.scoring import get_scheme, summarize

    empty = {"base": None, "new": None, "delta": None, "delta_ci": None}
    if not tasks or not scheme:
        return {"weighted_average": dict(empty), "categories": {}}
    sch = get_scheme(scheme)
    observed, drawn = {}, {}
    for side, index in (("base", 2), ("new", 3)):
        samples = [bootstrap.TaskSample(task[0], task[1], task[4], task[index]) for task in tasks]
        observed[side] = summarize(
            [(t.column, t.category, bootstrap.frame_value(t.frame, t.rule)) for t in samples], sch
        )
        # the same streams for both runs: replicate b of one pairs with replicate b of the other
        drawn[side] = bootstrap.average_replicates(samples, scheme, n_resamples)

    notes: list[str] = []

    def entry(
        name: str, base: float | None, new: float | None, reps: tuple[Any, Any]
    ) -> dict[str, Any]:
        if base is None or new is None or reps[0] is None or reps[1] is None:
            return {"base": base, "new": new, "delta": None, "delta_ci": None}
        interval = bootstrap.percentile_interval(reps[1] - reps[0], confidence)
        if interval.undefined:
            notes.append(f"{name}: delta_ci: {interval.why_undefined('the average')}")
        return {
            "base": base,
            "new": new,
            "delta": new - base,
            "delta_ci": interval.to_dict() if interval.defined else None,
        }

    categories = {
        cat: entry(
            cat,
            observed["base"].category_averages.get(cat),
            observed["new"].category_averages.get(cat),
            (drawn["base"][0].get(cat), drawn["new"][0].get(cat)),
        )
        for cat in observed["new"].category_averages
    }
    weighted = entry(
        "weighted average",
        observed["base"].weighted,
        observed["new"].weighted,
        (drawn["base"][1], drawn["new"][1]),
    )
    return {"weighted_average": weighted, "categories": categories, "notes": notes}


def load_run(path: str | Path) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """A run record and its per-example frames (checksum verified); one-line errors."""
    record = read_run_record(path)
    return record, load_examples(path)
