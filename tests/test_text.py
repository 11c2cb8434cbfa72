"""One number, one text: every output rounds with the leaderboard's rule (half up, on the number
as Python prints it), so ``76.125`` is ``76.13`` and a delta of ``-4.575`` is ``-4.58`` in the
summary (which ``koembed gate`` prints too), ``koembed compare``, the rows, the chart's labels
and the baseline listing."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_koembed.gate.compare import Comparison, GateSettings, TaskComparison
from pytest_koembed.protocol.suite import load_suite
from pytest_koembed.protocol.tables import entry_from_run
from pytest_koembed.records import TaskScore
from pytest_koembed.reports import text
from pytest_koembed.reports.compare_text import render_markdown, render_text
from pytest_koembed.reports.publish import rows_markdown, run_tables
from pytest_koembed.reports.summary import run_record, summary_lines
from pytest_koembed.reports.verdicts_text import baseline_lines

SAMPLE = load_suite("sample")
VALUE, SHOWN, BASELINE, DELTA = 76.125, 76.13, 80.7, -4.575  # 76.125 - 80.70, unrounded


def _record() -> dict[str, Any]:
    """A paired run of the sample suite whose first task scores 76.125 against 80.70."""
    scores = {}
    for i, spec in enumerate(SAMPLE.tasks):
        value = VALUE if i == 0 else 50.0 + i
        score = TaskScore(
            spec.column,
            spec.task,
            spec.split,
            spec.subset,
            spec.category,
            spec.value_rule,
            value=value,
            shown=SHOWN if i == 0 else value,
            n_examples=20,
            seconds=1.0,
        )
        if i == 0:
            # asymmetric about the value: printed as [low, high]
            score.ci = {"level": 0.95, "low": 70.125, "high": 77.0}
            score.baseline = BASELINE
            score.delta = DELTA
            score.delta_ci = {"level": 0.95, "low": -6.125, "high": -3.0}
            score.p_value = 0.001
            score.p_adjusted = 0.006
            score.mde = 1.125
            score.verdict = "regressed"
        if i == 1:  # runs below the chart's axis at 0: the chart says where it was clipped
            score.ci = {"level": 0.95, "low": -0.125, "high": 53.0}
        scores[spec.column] = score
    block = {
        "option": "base.json",
        "sources": ["baseline file base.json"],
        "notes": [],
        "no_cell": [],
        "settings": "tolerance 1.00 points",
        "rule": "paired",
        "paired": {
            "tasks": 1,
            "confidence": 0.95,
            "min_effect": 0.5,
            "file": "base.json",
            "same_rows": True,
            "not_paired": [],
            "gated": [],
            "holm_only": [],
            "cannot_fail": {},
            "weighted_average": {
                "base": BASELINE,
                "new": VALUE,
                "delta": DELTA,
                "delta_ci": {"level": 0.95, "low": -6.125, "high": -3.0},
            },
        },
    }
    return run_record(
        model="m",
        suite=SAMPLE,
        scheme=SAMPLE.scheme,
        scores=scores,
        encoder_infos=[],
        selected=list(scores),
        started=0.0,
        finished=0.0,
        complete=True,
        baseline=block,
    )


def _check(out: str, *expected: str, delta: bool = True) -> None:
    for needle in expected:
        assert needle in out, f"{needle!r} not in:\n{out}"
    wrongs = ["76.12", "70.12", "-6.12", "1.12 ", "-0.12"] + (["-4.57"] if delta else [])
    for wrong in wrongs:
        assert wrong not in out, f"{wrong!r} (rounded another way) in:\n{out}"


def test_the_rule() -> None:
    assert text.value(76.125) == "76.13"
    assert text.signed(-4.575) == "-4.58"
    assert text.signed(0.125) == "+0.13"
    assert text.value_interval(76.125, {"low": 70.125, "high": 77.0}) == "[70.13, 77.00]"
    assert text.value_interval(50.0, {"low": 48.875, "high": 51.125}) == "±1.13"
    assert text.p(0.0125) == "0.013"
    assert text.mde(1.125, None) == "1.13"
    assert text.cell(76.125) == "76.13"
    assert text.value(None) == "n/a" and text.p(None) == "" and text.mde(None) == "none"


def test_the_summary_and_koembed_gate() -> None:
    out = "\n".join(summary_lines(_record()))
    _check(
        out,
        "76.13 [70.13, 77.00]",
        "-4.58 [-6.13, -3.00]",
        "1.13",
        "80.70 -> 76.13",
        "[-0.13, 53.00]",
    )


def test_the_baseline_listing() -> None:
    out = "\n".join(baseline_lines(_record()))
    _check(out, "weighted average, paired: 80.70 -> 76.13, delta -4.58 [-6.13, -3.00]")


def test_koembed_compare() -> None:
    task = TaskComparison(
        SAMPLE.tasks[0].column,
        SAMPLE.tasks[0].category,
        BASELINE,
        VALUE,
        delta=DELTA,
        delta_ci=(-6.125, -3.0),
        p_value=0.001,
        p_adjusted=0.006,
        verdict="regressed",
        mde=1.125,
    )
    comparison = Comparison("base.json", "new.json", GateSettings(), tasks=[task])
    for out in (render_text(comparison), render_markdown(comparison)):
        _check(out, "80.70", "76.13", "-4.58 [-6.13, -3.00]", "1.13")


def test_the_rows() -> None:
    record = _record()
    out = rows_markdown(run_tables(SAMPLE, [entry_from_run(record, SAMPLE)], table="all"))
    _check(out, "76.13")


def test_the_chart_labels() -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.text import Text

    from pytest_koembed.reports.plot import build_figure

    figure = build_figure(_record(), SAMPLE)
    labels = "\n".join(t.get_text() for t in figure.findobj(Text))
    # the chart's delta is the shown value's minus the shown baseline's (76.13 - 80.70), not
    # the paired delta the summary prints: a chart of values against baseline cells
    _check(labels, "76.13  (\u22124.57)", "interval clipped at 0 (low -0.13)", delta=False)


def test_the_baseline_line_says_the_tolerance_only_when_a_task_used_it() -> None:
    record = _record()
    record["baseline"]["rule"] = "auto"
    assert baseline_lines(record)[0] == "baseline: baseline file base.json"
    record["baseline"]["settings"] = "tolerance 1.00 points, strict"
    assert baseline_lines(record)[0] == "baseline: baseline file base.json (strict)"
    tolerance_task = record["tasks"][1]  # judged by the tolerance rule: no p-value
    tolerance_task.update(baseline=50.0, delta=1.0, tolerance=1.0, verdict="improved")
    assert baseline_lines(record)[0] == (
        "baseline: baseline file base.json (tolerance 1.00 points, strict)"
    )
