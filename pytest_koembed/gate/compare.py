"""The paired comparison of two runs: per task, the run-level Holm gate, and ``koembed compare``.

One rule, used by the plugin (a ``--koembed-baseline`` run record with per-example results) and
by ``koembed compare BASE.json NEW.json`` alike:

- per task, the two runs' frames are paired by example key (:func:`per_example.pair_examples`)
  and compared by :func:`stats.paired_test` (``delta``, ``delta_ci``, one-sided ``p_value``
  for a drop and ``p_improvement`` for a gain);
- over the run, the drops' p-values of all paired tasks are adjusted by Holm's step-down method
  and each task gets :func:`stats.paired_verdict`: ``regressed`` when the adjusted p is below
  ``1 - confidence`` and the shown drop is at least the minimum effect; ``improved`` likewise
  from the gains' own Holm family (which never fails a run); ``within noise`` otherwise. An
  unchanged model fails the gate at most ``1 - confidence`` of the
  time, whatever the dependence between tasks.

On an xdist worker a task cannot wait for the others' p-values, so the item fails on the
Bonferroni rule ``p * m < alpha`` (m: the selected tasks with a paired baseline). Holm's first step
is exactly that test, and Holm rejects a superset of what Bonferroni rejects, so every failed item
is a Holm regression too; the controller then applies Holm to all p-values, and a regression that
only Holm finds fails the run (exit status 1) with one summary line.

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
from pytest_koembed.protocol.scoring import round_half_up
from pytest_koembed.records import read_run_record, run_suite_name
from pytest_koembed.stats import resampling as stats

REGRESSED = "regressed"
IMPROVED = "improved"
WITHIN_NOISE = "within noise"
NOT_PAIRED = "not paired"

DELTA_HEADER = "delta [unadjusted CI]"
P_HEADER = "p (Holm, drop)"
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
    if isinstance(method, Mapping) and method.get("version") == stats.PAIRED_METHOD_VERSION:
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
        f"no paired method version {stats.PAIRED_METHOD_VERSION}): they are not reused, "
        "the tasks are re-judged with the one-sided test"
    )


def check_confidence(value: Any, where: str = "--koembed-confidence") -> float:
    """A confidence level strictly between 0 and 1 (default 0.95 for None)."""
    if value is None or value == "":
        return stats.DEFAULT_LEVEL
    try:
        level = float(value)
    except (TypeError, ValueError):
        raise KoembedError(f"{where} {value!r} is not a number; give e.g. 0.95") from None
    if not (0.0 < level < 1.0) or not math.isfinite(level):
        raise KoembedError(f"{where} {value!r} must lie strictly between 0 and 1, e.g. 0.95")
    return level


def check_min_effect(value: Any, where: str = "--koembed-min-effect") -> float:
    """A minimum effect in points, >= 0 (default :data:`stats.DEFAULT_MIN_EFFECT` for None)."""
    if value is None or value == "":
        return stats.DEFAULT_MIN_EFFECT
    try:
        points = float(value)
    except (TypeError, ValueError):
        raise KoembedError(f"{where} {value!r} is not a number of points; give e.g. 0.5") from None
    if not math.isfinite(points) or points < 0 or points > 100:
        raise KoembedError(f"{where} {value!r} must be a number of points from 0 to 100")
    return points


@dataclass(frozen=True)
class GateSettings:
    confidence: float = stats.DEFAULT_LEVEL
    min_effect: float = stats.DEFAULT_MIN_EFFECT

    @property
    def alpha(self) -> float:
        return stats.significance_level(self.confidence)

    def describe(self, n_tasks: int) -> str:
        return (
            f"Holm over {n_tasks} task{'s' if n_tasks != 1 else ''} at "
            f"{self.confidence * 100:g}% confidence, min effect {self.min_effect:.2f} points"
        )


def pair_task(
    base_frame: pd.DataFrame,
    new_frame: pd.DataFrame,
    rule: str,
    column: str,
    confidence: float,
    family_size: int = 1,
    *,
    main_score: str | None = None,
) -> stats.PairedTest:
    """One task's paired test, its resolution set by the run's ``family_size`` (m) and level;
    a one-line KoembedError when the frames are on different rows.

    ``main_score``: the task's main score key, which a ``main_score`` rule tests
    (``stats.task_rule``). A ``delta_ci`` with more undefined resamples than an interval may
    leave out has NaN ends (``stats._percentile_interval``); callers show no interval then.
    """
    base, new = pair_examples(base_frame, new_frame, name=column)
    return stats.paired_test(
        base,
        new,
        stats.task_rule(rule, main_score),
        level=confidence,
        stream=column,
        family_size=family_size,
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
    return stats.paired_verdict(delta, min(1.0, p_value * m), *_args(settings), gain)


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
    adjusted = stats.holm([tests[c][1] for c in columns])
    with_gain = [c for c in columns if len(tests[c]) > 2 and tests[c][2] is not None]
    gains = dict(zip(with_gain, stats.holm([tests[c][2] for c in with_gain]), strict=True))
    steps = stats.holm_steps([tests[c][1] for c in columns], settings.alpha)
    return {
        c: HolmResult(
            adj,
            stats.paired_verdict(tests[c][0], adj, *_args(settings), gains.get(c)),
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
    return stats.minimum_detectable_effect(
        float(swaps["swap_sd"]),
        float(delta_sd) if delta_sd is not None else math.nan,
        step_alpha,
        float(swaps.get("smallest_p", 1.0)),
        settings.min_effect,
    )


def mde_text(mde: float | None, cannot_fail: str | None = None) -> str:
    """``1.23`` points, or ``none`` (the task cannot fail at this level)."""
    if cannot_fail or mde is None:
        return "none"
    return f"{round_half_up(mde, 2):.2f}"


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
            "paired_method": {"version": stats.PAIRED_METHOD_VERSION, "test": stats.PAIRED_METHOD},
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
                stats.task_rule(str(n["value_rule"]), main),
            )
        except KoembedError as exc:
            row.note = f"{column}: not paired: {exc}"
            out.notes.append(row.note)
    rows = {t.column: t for t in out.tasks}
    for column, (base_frame, new_frame, rule) in list(aligned.items()):
        row = rows[column]
        try:
            test = stats.paired_test(
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
        row.delta = test.delta
        row.p_value = test.p_value
        if test.delta_ci.defined:
            row.delta_ci = (test.delta_ci.low, test.delta_ci.high)
        if test.delta_ci.undefined:
            out.notes.append(f"{column}: delta_ci: {test.delta_ci.why_undefined('the delta')}")
        row.p_improvement = test.p_improvement
        row.swaps = test.to_dict()["swaps"]
        if test.statistic is not None:
            out.notes.append(f"{column}: gated on {test.statistic}; v_measure reported (base, new)")
        row.cannot_fail = stats.cannot_fail_note(
            test.n, len(aligned), settings.alpha, test.max_swaps
        )
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
    n_resamples: int = stats.DEFAULT_RESAMPLES,
) -> dict[str, Any]:
    """Category and weighted averages of the paired tasks in both runs, and the paired interval
    of their difference: each task is resampled with the draws ``stats.paired_test`` uses (its
    column's stream), the same draws for both runs, and each resample goes through the
    leaderboard's own formulas (``scoring.summarize``). A weighted average needs the whole suite.
    Resamples in which an average is undefined (a task's value undefined in it, in either run)
    follow ``stats._percentile_interval``'s rule: left out and counted, and no ``delta_ci`` past
    one tail's share; ``"notes"`` says so.
    """
    from pytest_koembed.protocol.scoring import get_scheme, summarize

    empty = {"base": None, "new": None, "delta": None, "delta_ci": None}
    if not tasks or not scheme:
        return {"weighted_average": dict(empty), "categories": {}}
    sch = get_scheme(scheme)
    observed, drawn = {}, {}
    for side, index in (("base", 2), ("new", 3)):
        samples = [stats.TaskSample(task[0], task[1], task[4], task[index]) for task in tasks]
        observed[side] = summarize(
            [(t.column, t.category, stats.frame_value(t.frame, t.rule)) for t in samples], sch
        )
        # the same streams for both runs: replicate b of one pairs with replicate b of the other
        drawn[side] = stats.average_replicates(samples, scheme, n_resamples)

    notes: list[str] = []

    def entry(
        name: str, base: float | None, new: float | None, reps: tuple[Any, Any]
    ) -> dict[str, Any]:
        if base is None or new is None or reps[0] is None or reps[1] is None:
            return {"base": base, "new": new, "delta": None, "delta_ci": None}
        interval = stats._percentile_interval(reps[1] - reps[0], confidence)
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


def _num(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{round_half_up(x, 2):.2f}"


def _signed(x: float) -> str:
    if not math.isfinite(x):  # never a traceback: an undefined number is shown as such
        return "n/a"
    x = round_half_up(x, 2)
    return ("+" if x >= 0 else "-") + f"{abs(x):.2f}"


def delta_text(delta: float | None, ci: tuple[float, float] | None) -> str:
    """``-0.42 [-1.10, +0.31]``."""
    if delta is None:
        return ""
    text = _signed(delta)
    return text + (f" [{_signed(ci[0])}, {_signed(ci[1])}]" if ci is not None else "")


def p_text(p: float | None) -> str:
    if p is None:
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _verdict_cell(t: TaskComparison) -> str:
    text = t.verdict.upper() if t.verdict == REGRESSED else t.verdict
    return text + (" (cannot fail)" if t.cannot_fail and t.p_value is not None else "")


def comparison_table(comparison: Comparison) -> pd.DataFrame:
    columns = ["task", "base", "new", DELTA_HEADER, P_HEADER, "MDE", "verdict"]
    rows = [
        {
            "task": t.column,
            "base": _num(t.base),
            "new": _num(t.new),
            DELTA_HEADER: delta_text(t.delta, t.delta_ci),
            P_HEADER: p_text(t.p_adjusted),
            "MDE": mde_text(t.mde, t.cannot_fail) if t.p_value is not None else "",
            "verdict": _verdict_cell(t),
        }
        for t in comparison.tasks
    ]
    return pd.DataFrame(rows, columns=columns)


def legend(confidence: float) -> str:
    """The line that says which number is which."""
    return (
        f"delta [CI]: {confidence * 100:g}% paired bootstrap interval, unadjusted for the number "
        "of tasks; p: one-sided for a drop, Holm-adjusted over the run (an unadjusted interval "
        "and an adjusted p can disagree); MDE: the drop caught with 80% power at the task's "
        "Holm step (none: cannot fail at this level)"
    )


def cannot_fail_lines(tasks: Sequence[TaskComparison]) -> list[str]:
    return [f"  {t.column}: {t.cannot_fail}" for t in tasks if t.cannot_fail]


def _average_text(name: str, avg: Mapping[str, Any]) -> str:
    b, n, ci = avg.get("base"), avg.get("new"), avg.get("delta_ci")
    if b is None or n is None:
        return f"{name} n/a"
    interval = (ci["low"], ci["high"]) if ci else None
    return f"{name} {_num(b)} -> {_num(n)} ({delta_text(n - b, interval)})"


def _average_lines(comparison: Comparison) -> list[str]:
    avg = comparison.averages
    cats = [_average_text(c, a) for c, a in avg.get("categories", {}).items()]
    weighted = avg.get("weighted_average", {})
    lines = ["category averages (paired tasks): " + " | ".join(cats)] if cats else []
    text = _average_text("weighted average", weighted)
    if weighted.get("base") is None:
        text += " (needs every task of the suite paired)"
    return [*lines, text]


def render_text(comparison: Comparison) -> str:
    table = comparison_table(comparison)
    cells = table.astype(str)
    widths = {c: max([len(c), *cells[c].str.len()]) for c in cells.columns}
    left = ("task", "verdict", DELTA_HEADER)

    def line(values: Mapping[str, str]) -> str:
        return "  ".join(
            values[c].ljust(widths[c]) if c in left else values[c].rjust(widths[c])
            for c in cells.columns
        ).rstrip()

    lines = [line({c: c for c in cells.columns})]
    lines += [line(r) for r in cells.to_dict(orient="records")]
    lines += [f"  {note}" for note in comparison.notes]
    lines += _average_lines(comparison)
    lines.append(
        f"paired gate: {comparison.settings.describe(len(comparison.paired))}; "
        f"p is Holm-adjusted, intervals are {comparison.settings.confidence * 100:g}% paired "
        "bootstrap"
    )
    lines.append(legend(comparison.settings.confidence))
    lines += cannot_fail_lines(comparison.tasks)
    lines.append(f"verdict: {comparison.verdict}")
    return "\n".join(lines) + "\n"


def render_markdown(comparison: Comparison) -> str:
    table = comparison_table(comparison)
    head = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join(["---", "---:", "---:", "---", "---:", "---:", "---"]) + "|"
    rows = []
    for r in table.to_dict(orient="records"):
        cells = [str(v).replace("|", "\\|") for v in r.values()]
        if r["verdict"] == "REGRESSED":
            cells[-1] = f"**{cells[-1]}**"
        rows.append("| " + " | ".join(cells) + " |")
    status = "❌" if comparison.regressed else "✅"
    lines = [
        f"### koembed compare: {status} {comparison.verdict}",
        "",
        head,
        rule,
        *rows,
        "",
        *[f"{line}  " for line in _average_lines(comparison)],
        "",
        f"Paired gate: {comparison.settings.describe(len(comparison.paired))}. "
        f"`p` is Holm-adjusted; intervals are {comparison.settings.confidence * 100:g}% paired "
        "bootstrap intervals of new - base.",
        "",
        legend(comparison.settings.confidence) + ".",
    ]
    lines += [f"- {line.strip()}" for line in cannot_fail_lines(comparison.tasks)]
    lines += [f"- {note}" for note in comparison.notes]
    return "\n".join(lines) + "\n"


def plot_comparison(comparison: Comparison, path: str | Path) -> Path:
    """Per-task deltas with their paired intervals (error bars), a zero line, regressions red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = comparison.paired
    if not tasks:
        raise KoembedError("--plot: no task was paired, nothing to draw")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(tasks) + 1.5))
    ys = list(range(len(tasks)))[::-1]
    for y, t in zip(ys, tasks, strict=True):
        assert t.delta is not None and t.delta_ci is not None
        color = {"regressed": "tab:red", "improved": "tab:green"}.get(t.verdict, "tab:gray")
        ax.errorbar(
            t.delta,
            y,
            xerr=[[t.delta - t.delta_ci[0]], [t.delta_ci[1] - t.delta]],
            fmt="o",
            color=color,
            capsize=3,
        )
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(ys, [t.column for t in tasks])
    ax.set_xlabel(f"new - base (points), {comparison.settings.confidence * 100:g}% paired interval")
    ax.set_title(
        f"koembed compare: {Path(comparison.new_path).name} vs {Path(comparison.base_path).name}"
    )
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return target
