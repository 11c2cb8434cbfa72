"""Confidence intervals of a run (issue 9): ``--koembed-confidence``, the summary's ``±``, and the
rank among the published models with its interval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pytest_koembed.evaluation.per_example import load_examples
from pytest_koembed.protocol.leaderboards import load_leaderboard
from pytest_koembed.protocol.scoring import round_half_up
from pytest_koembed.protocol.suite import load_suite
from pytest_koembed.protocol.tables import Entry
from pytest_koembed.reports.publish import run_tables
from pytest_koembed.reports.summary import summary_lines
from pytest_koembed.reports.text import value_interval as interval_text
from pytest_koembed.stats import bootstrap
from pytest_koembed.stats.intervals import RunIntervals, rank_fields

pytestmark = pytest.mark.usefixtures("offline")

KURE = "nlpai-lab/KURE-v1"


# --- --koembed-confidence -------------------------------------------------------------------------


def test_a_lower_confidence_gives_narrower_intervals(
    run_pytest, minilm_dir: Path, tmp_path: Path
) -> None:
    """At 0.8 every interval lies inside the 0.95 one, and both are recomputed exactly from the
    per-example sidecar: the same seeded draws, whatever process made them."""
    result = run_pytest(
        tmp_path,
        f"--koembed-model={minilm_dir}",
        "--koembed-suite=sample",
        "--koembed-confidence=0.8",
        "--koembed-json=run.json",
        "-k",
        "sample-pairs or sample-retrieval",
    )
    assert result.ret == 0, result.stdout
    result.fnmatch_lines(["intervals: 80% bootstrap over examples (1000 resamples, seed 0)"])
    record = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    frames = load_examples(tmp_path / "run.json")
    assert record["intervals"]["level"] == 0.8
    assert [t["column"] for t in record["tasks"]] == ["sample-pairs", "sample-retrieval"]
    for task in record["tasks"]:
        frame, column = frames[task["column"]], task["column"]
        ci = task["ci"]
        assert ci["level"] == 0.8
        assert (ci["low"], ci["high"]) == bootstrap.task_interval(
            frame, task["value_rule"], 0.8, stream=column
        )
        low, high = bootstrap.task_interval(frame, task["value_rule"], 0.95, stream=column)
        assert low < ci["low"] <= task["value"] <= ci["high"] < high, column
    # the deselected categories have no average, hence no interval; nor has the weighted one
    assert record["category_average_ci"]["STS"] is None
    assert record["category_average_ci"]["NLI"]["level"] == 0.8
    assert record["weighted_average_ci"] is None


@pytest.mark.parametrize(
    ("args", "ini", "pattern"),
    [
        (["--koembed-confidence=1.5"], None, "ERROR: --koembed-confidence 1.5 must lie strictly "
         "between 0 and 1, e.g. 0.95"),
        (["--koembed-confidence=0"], None, "ERROR: --koembed-confidence 0.0 must lie *"),
        (["--koembed-confidence=-0.95"], None, "ERROR: --koembed-confidence -0.95 must lie *"),
        (["--koembed-confidence=95"], None, "ERROR: --koembed-confidence 95.0 must lie *"),
        (["--koembed-confidence=nan"], None, "ERROR: --koembed-confidence nan must lie *"),
        (["--koembed-confidence=high"], None, "*--koembed-confidence: invalid float value: "
         "'high'"),
        ([], "95%", "ERROR: ini koembed_confidence '95%' is not a number; give e.g. 0.95"),
    ],
)  # fmt: skip
def test_bad_confidence_is_one_usage_error(
    pytester: pytest.Pytester, args: list[str], ini: str | None, pattern: str
) -> None:
    if ini is not None:
        pytester.makeini(f"[pytest]\nkoembed_confidence = {ini}\n")
    result = pytester.runpytest("--koembed-model=m", "--koembed-suite=sample", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    errors = [line for line in result.errlines if line.strip()]
    pytest.LineMatcher(errors).fnmatch_lines([pattern])
    assert not any("Traceback" in line for line in errors)
    if ini is not None or "float" not in pattern:
        assert len(errors) == 1, errors  # argparse's own error adds its usage line


# --- the summary ---------------------------------------------------------------------------------


def test_interval_text_is_half_width_unless_asymmetric() -> None:
    assert interval_text(76.94, {"level": 0.95, "low": 76.09, "high": 77.79}) == "±0.85"
    # one side three times the other: the bounds themselves
    assert interval_text(7.08, {"level": 0.95, "low": 5.0, "high": 13.3}) == "[5.00, 13.30]"
    assert interval_text(50.0, {"level": 0.95, "low": 50.5, "high": 52.0}) == "[50.50, 52.00]"
    assert interval_text(50.0, None) == ""


def _sample_record(cis: list[dict[str, float] | None]) -> dict[str, Any]:
    suite = load_suite("sample")
    tasks = []
    # a hand-made record of the sample suite's first four tasks (one per v1 category)
    specs = suite.tasks[:4]
    for spec, ci, value in zip(specs, cis, [76.94, 44.8, 11.62, 7.0845], strict=True):
        tasks.append(
            {
                "column": spec.column,
                "category": spec.category,
                "status": "ok",
                "value": value,
                "shown": round_half_up(value, 2),
                "ci": ci,
                "n_examples": 10,
                "duplicates_dropped": 0,
                "seconds": 1.0,
            }
        )
    return {
        "suite": {"name": "sample"},
        "task_counts": {"total": 4, "scored": 4},
        "tasks": tasks,
        "not_run": [],
        "category_averages": {"STS": 76.94, "NLI": 44.8, "Clustering": 11.62, "Retrieval": 7.08},
        "incomplete_categories": [],
        "scheme": "ko-leaderboard-v1",
        "scheme_description": "R/3 + C/3 + (S+N)/9: ...",
        "weighted_average": 25.12,
        "weighted_average_ci": {"level": 0.95, "low": 24.0, "high": 26.2},
        "category_average_ci": {"STS": {"level": 0.95, "low": 76.09, "high": 77.79}},
        "intervals": {"level": 0.95, "resamples": 1000, "seed": 0},
        "rank": {"leaderboard": "lb", "rank": 3, "interval": [2, 5], "of": 21, "level": 0.95},
        "model": {"row_name": "m"},
        "versions": {},
    }


def test_summary_shows_intervals_aligned_and_the_rank() -> None:
    ci = {"level": 0.95, "low": 76.09, "high": 77.79}
    record = _sample_record([ci, None, {"level": 0.95, "low": 10.5, "high": 12.7}, None])
    lines = summary_lines(record)
    table = lines[1:6]
    assert table[0].split() == ["task", "category", "value", "n", "dup", "seconds"]
    assert table[1].split()[2:4] == ["76.94", "±0.85"]
    assert table[2].split()[2:4] == ["44.80", "10"]  # no interval: just the value
    assert table[3].split()[2:4] == ["11.62", "±1.10"]
    # the numbers stay aligned on their decimal point, with or without an interval
    assert len({line.index(".", 30) for line in table[1:]}) == 1
    assert "category averages: STS 76.94 ±0.85 | NLI 44.80 | Clustering 11.62 | Retrieval " in (
        "\n".join(lines)
    )
    assert "weighted average 25.12 ±1.10 (scheme ko-leaderboard-v1: R/3 + C/3 + (S+N)/9)" in lines
    assert "rank 3 of 21 on lb (95% interval: 2 to 5)" in lines
    assert "intervals: 95% bootstrap over examples (1000 resamples, seed 0)" in lines


def test_summary_without_intervals_has_no_interval_line() -> None:
    record = _sample_record([None] * 4)
    record.update(weighted_average_ci=None, category_average_ci={}, rank=None)
    lines = summary_lines(record)
    assert not any("±" in line or line.startswith(("intervals:", "rank ")) for line in lines)
    assert lines[2].split()[2] == "76.94"


# --- rank among the published models (ko-leaderboard-v1's real baselines) ---------------------


def _table_rank(values: dict[str, float], name: str) -> tuple[int, int]:
    """The run's rank and the rows of the overall table, as ``--koembed-row`` prints them."""
    suite = load_suite("ko-leaderboard-v1")
    table = run_tables(suite, [Entry(name, values, is_run=True)], table="overall")[0]
    return int(table.rows[table.runs[0]][-1]), len(table.rows)


def test_rank_and_its_interval_among_the_published_rows() -> None:
    suite = load_suite("ko-leaderboard-v1")
    board = load_leaderboard("ko-leaderboard-v1")
    values = dict(board.rows[KURE])
    rank, rows = _table_rank(values, "my-model")
    fields = rank_fields(suite, suite.scheme, "my-model", 62.74, np.full(1000, 62.74))
    assert fields == {
        "leaderboard": "ko-leaderboard-v1",
        "rank": rank,
        "interval": [rank, rank],  # no spread: the rank cannot move
        "of": rows,
        "level": 0.95,
    }
    # a re-run of a published model replaces its row: ranked among the others
    own = rank_fields(suite, suite.scheme, KURE, 62.74, None)
    assert own is not None
    assert (own["rank"], own["of"]) == _table_rank(values, KURE) and own["interval"] is None
    # a spread of +-3 points moves the rank both ways, and the interval holds the point rank
    spread = 62.74 + np.linspace(-3.0, 3.0, 1001).round(2)
    moved = rank_fields(suite, suite.scheme, "my-model", 62.74, spread, level=0.9)
    assert moved is not None
    best, worst = moved["interval"]
    assert best < rank < worst
    published = _published_weighted_values().values()
    # the ranks at the 5th and 95th percentiles of the spread: 62.74 + 2.7 and 62.74 - 2.7
    assert best == 1 + sum(v > round_half_up(62.74 + 2.7, 2) for v in published)
    assert worst == 1 + sum(v > round_half_up(62.74 - 2.7, 2) for v in published)


def _published_weighted_values() -> dict[str, float]:
    from pytest_koembed.stats.intervals import _published_weighted

    suite = load_suite("ko-leaderboard-v1")
    found = _published_weighted(suite, suite.scheme, "my-model")
    assert found is not None
    return found[1]


def test_rank_of_a_fake_run_from_its_frames() -> None:
    """Every task of a ko-leaderboard-v1 run with a per-example frame: the averages' intervals
    and the rank come out of one pass over a record, as the plugin adds them."""
    suite = load_suite("ko-leaderboard-v1")
    published = load_leaderboard("ko-leaderboard-v1").rows[KURE]
    rng = np.random.default_rng(7)
    frames, tasks = {}, []
    for spec in suite.tasks:
        # per-query nDCG values around the published value: a retrieval-like frame per task
        values = np.clip(rng.normal(published[spec.column] / 100, 0.2, 400), 0, 1)
        frames[spec.column] = pd.DataFrame({"ndcg_at_5": values, "ndcg_at_10": values})
        tasks.append(
            {
                "column": spec.column,
                "category": spec.category,
                "status": "ok",
                "value_rule": "ndcg-5-10",
                "value": float(values.mean() * 100),
            }
        )
    from pytest_koembed.protocol.averages import average_fields, count_tasks

    values = {t["column"]: t["value"] for t in tasks}
    counts = count_tasks(suite, dict.fromkeys(values, "ok"), values)
    record = {
        "model": {"row_name": "my-model"},
        "scheme": suite.scheme,
        "tasks": tasks,
        **average_fields(suite, suite.scheme, values, counts),
    }
    out = RunIntervals().add_to(record, suite, frames)
    keys = list(out)
    after = keys.index("weighted_average_note") + 1
    assert keys[after : after + 4] == [
        "intervals", "category_average_ci", "weighted_average_ci", "rank"
    ]  # fmt: skip
    weighted, ci = out["weighted_average"], out["weighted_average_ci"]
    assert ci["low"] < weighted < ci["high"]
    for category, average in out["category_averages"].items():
        assert out["category_average_ci"][category]["low"] <= average
        assert average <= out["category_average_ci"][category]["high"]
    rank = out["rank"]
    assert (rank["rank"], rank["of"]) == _table_rank(values, "my-model")
    best, worst = rank["interval"]
    assert best <= rank["rank"] <= worst
    assert worst - best >= 1  # 400 examples a task: the rank is not certain


def test_undefined_resamples_follow_one_rule_in_tasks_and_averages() -> None:
    """One rule (bootstrap.percentile_interval): resamples with no value are left out and counted,
    up to one tail's share (25 of 1000 at 95%); past it there is no interval. Task intervals
    and averages apply it alike, and the record says how many (issue 17)."""
    from pytest_koembed.reports.text import intervals_line as describe
    from pytest_koembed.stats.intervals import average_fields, task_ci_and_note

    suite = load_suite("sample")
    rng = np.random.default_rng(3)
    mean = pd.DataFrame({"ndcg_at_5": rng.uniform(size=40), "ndcg_at_10": rng.uniform(size=40)})

    # one positive pair in 30: a third of the resamples have no positive, hence no AP
    labels = np.zeros(30)
    labels[0] = 1
    lopsided = pd.DataFrame({"label": labels, "cosine": rng.normal(size=30)})
    ci, note = task_ci_and_note(lopsided, "cosine_ap", "sample-pairs")
    replicates = bootstrap.task_replicates(lopsided, "cosine_ap", stream="sample-pairs")
    undefined = int(np.sum(~np.isfinite(replicates)))
    assert undefined > 25
    assert ci is None  # before issue 17 the task kept an interval of the defined two thirds
    assert note == (
        f"no interval: the task value is undefined in {undefined} of 1000 resamples, more than "
        "the 25 (one tail's share) an interval may leave out"
    )
    tasks = {t.column: ("ndcg-5-10", mean) for t in suite.tasks}
    tasks["sample-pairs"] = ("cosine_ap", lopsided)
    fields = average_fields(suite, suite.scheme, tasks, 50.0, "m")
    assert fields["weighted_average_ci"] is None
    assert fields["category_average_ci"]["NLI"] is None
    assert fields["category_average_ci"]["Retrieval"] is not None  # no task of it undefined
    assert fields["intervals"]["undefined"] == {"sample-pairs": undefined}
    assert fields["intervals"]["note"] == (
        "no interval for an average with more than 25 undefined resamples "
        f"(sample-pairs {undefined} of 1000)"
    )
    rows = [
        {"column": "sample-pairs", "status": "ok", "ci": None, "ci_note": note},
        {"column": "x", "status": "ok", "ci": {"low": 1, "high": 2}},
    ]
    record = {"tasks": rows, **fields}
    assert f"sample-pairs: {note}" in (describe(record) or "")

    # five positives in 60: a few resamples have none; they are left out and counted
    labels = np.zeros(60)
    labels[:5] = 1
    few = pd.DataFrame({"label": labels, "cosine": rng.normal(size=60) + labels})
    replicates = bootstrap.task_replicates(few, "cosine_ap", stream="sample-pairs")
    undefined = int(np.sum(~np.isfinite(replicates)))
    assert 0 < undefined <= 25
    ci, note = task_ci_and_note(few, "cosine_ap", "sample-pairs")
    assert ci is not None and ci["undefined"] == undefined
    low, high = np.quantile(replicates[np.isfinite(replicates)], [0.025, 0.975])
    assert (ci["low"], ci["high"]) == pytest.approx((low, high), abs=1e-9)
    assert (
        note == f"{undefined} of 1000 resamples left out of the interval: the task value is "
        "undefined in them"
    )
    tasks["sample-pairs"] = ("cosine_ap", few)
    fields = average_fields(suite, suite.scheme, tasks, 50.0, "m")
    assert fields["category_average_ci"]["NLI"]["undefined"] == undefined
    assert fields["weighted_average_ci"]["undefined"] == undefined
    assert fields["intervals"]["note"] == (
        f"resamples in which a task's value is undefined are left out (sample-pairs {undefined} "
        "of 1000)"
    )
