"""Baselines and gates as plain functions: tolerances, verdicts, gates, baseline files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_koembed.errors import KoembedError
from pytest_koembed.gate.baselines import (
    DEFAULT_TOLERANCE,
    Baseline,
    BaselineCell,
    Tolerances,
    merge_baseline,
    parse_baseline_option,
    parse_tolerances,
)
from pytest_koembed.gate.gates import Gate, evaluate_gates, parse_gates
from pytest_koembed.gate.verdicts import Resolution, judge, make_policy
from pytest_koembed.protocol.suite import load_suite
from pytest_koembed.records import TaskScore

V1 = load_suite("ko-leaderboard-v1")
SAMPLE = load_suite("sample")


def _resolution(cells: dict[str, float], stale: dict[str, str] | None = None) -> Resolution:
    stale = stale or {}
    return Resolution(
        Baseline("test", {c: BaselineCell(v, stale.get(c)) for c, v in cells.items()})
    )


# --- tolerances -------------------------------------------------------------------------------


def test_tolerance_default_is_one_point() -> None:
    tol = parse_tolerances([], V1)
    assert DEFAULT_TOLERANCE == 1.0
    assert tol.for_task("Ko-StrategyQA", "Retrieval") == 1.0


def test_most_specific_tolerance_wins_and_keys_are_case_insensitive() -> None:
    tol = parse_tolerances(["0.8", "RETRIEVAL=0.5, ko-strategyqa=0.2", "sts_average=2"], V1)
    assert tol.for_task("Ko-StrategyQA", "Retrieval") == 0.2
    assert tol.for_task("AutoRAGRetrieval", "Retrieval") == 0.5
    assert tol.for_task("KLUE-STS", "STS") == 2.0
    assert tol.for_task("KLUE-NLI", "NLI") == 0.8
    assert tol.describe() == "0.80 points (Retrieval 0.50, STS 2.00, Ko-StrategyQA 0.20)"
    # a later item for the same key wins (ini first, then the command line)
    assert parse_tolerances(["retrieval=0.5", "retrieval=0.1"], V1).categories == {"Retrieval": 0.1}
    # a column name with a slash
    assert parse_tolerances(["facebook/belebele=0"], V1).columns == {"facebook/belebele": 0.0}


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("nope=1", "'nope' is neither a category"),
        ("retrieval=lots", "'lots' is not a number"),
        ("-1", "must be a finite number >= 0"),
        ("nan", "must be a finite number >= 0"),
    ],
)
def test_bad_tolerance_is_one_line(spec: str, needle: str) -> None:
    with pytest.raises(KoembedError, match=needle) as info:
        parse_tolerances([spec], V1)
    assert "\n" not in str(info.value)


# --- per-task verdicts ------------------------------------------------------------------------


def test_regression_message_is_exact() -> None:
    j = judge(
        "Ko-StrategyQA", "Retrieval", 77.10, _resolution({"Ko-StrategyQA": 79.2}), Tolerances()
    )
    assert j.fails and j.verdict == "regressed"
    assert j.message == "Ko-StrategyQA regressed: 77.10 < baseline 79.20 - tolerance 1.00"
    assert j.delta == pytest.approx(-2.1)


@pytest.mark.parametrize(
    ("shown", "verdict"),
    [
        (78.19, "regressed"),
        (78.2, "pass"),  # exactly baseline - tolerance: no float noise decides it
        (79.2, "pass"),
        (80.2, "pass"),  # exactly baseline + tolerance
        (80.21, "improved"),
    ],
)
def test_verdict_boundaries(shown: float, verdict: str) -> None:
    j = judge(
        "Ko-StrategyQA", "Retrieval", shown, _resolution({"Ko-StrategyQA": 79.2}), Tolerances()
    )
    assert j.verdict == verdict
    assert j.fails == (verdict == "regressed")


def test_float_noise_does_not_decide_the_boundary() -> None:
    # 0.1 + 0.2 style noise: 77.1 vs 79.2 - 2.1 is an exact tie in decimals
    tol = Tolerances(default=2.1)
    j = judge("X", "STS", 77.1, _resolution({"X": 79.2}), tol)
    assert j.verdict == "pass"


def test_missing_cell_and_no_baseline_pass_with_a_note() -> None:
    j = judge("Kor-STS", "STS", 50.0, _resolution({"KLUE-STS": 80.0}), Tolerances())
    assert (j.verdict, j.fails) == ("no baseline", False)
    assert j.message == "Kor-STS: no baseline cell in test"
    j = judge("Kor-STS", "STS", 50.0, Resolution(None, "no row"), Tolerances())
    assert (j.verdict, j.fails) == ("no baseline", False)
    assert judge("Kor-STS", "STS", 50.0, Resolution(None), Tolerances()).verdict is None


def test_stale_cell_warns_unless_strict() -> None:
    res = _resolution({"KLUE-STS": 86.8}, {"KLUE-STS": "first version"})
    lenient = judge("KLUE-STS", "STS", 80.0, res, Tolerances())
    assert (lenient.verdict, lenient.fails, lenient.warns) == ("warned", False, True)
    assert lenient.message is not None
    assert lenient.message.startswith(
        "KLUE-STS regressed: 80.00 < baseline 86.80 - tolerance 1.00 (stale baseline cell: "
        "first version)"
    )
    strict = judge("KLUE-STS", "STS", 80.0, res, Tolerances(), strict=True)
    assert (strict.verdict, strict.fails, strict.warns) == ("regressed", True, False)
    assert judge("KLUE-STS", "STS", 90.0, res, Tolerances()).verdict == "improved"


def test_update_mode_reports_without_failing() -> None:
    j = judge("X", "STS", 10.0, _resolution({"X": 50.0}), Tolerances(), enforce=False)
    assert (j.verdict, j.fails) == ("regressed", False)


def test_errored_task_keeps_only_the_baseline() -> None:
    j = judge("X", "STS", None, _resolution({"X": 50.0}), Tolerances())
    assert (j.verdict, j.baseline, j.fails) == (None, 50.0, False)


# --- baselines --------------------------------------------------------------------------------


def test_auto_finds_the_row_with_its_dtype_suffix() -> None:
    policy = make_policy(V1, baseline="auto")
    found = policy.resolve("Qwen/Qwen3-Embedding-8B-bf16")
    assert found.baseline is not None
    assert found.baseline.cells["Ko-StrategyQA"] == BaselineCell(83.08)
    missing = policy.resolve("Qwen/Qwen3-Embedding-8B")  # an fp32 run is not that row
    assert missing.baseline is None
    assert missing.note is not None
    assert "closest: 'Qwen/Qwen3-Embedding-8B-bf16'" in missing.note
    stale = policy.resolve("BAAI/bge-m3")
    assert stale.baseline is not None
    assert stale.baseline.cells["KLUE-STS"].stale
    assert stale.baseline.cells["Ko-StrategyQA"].stale is None


def test_auto_without_a_leaderboard_says_why() -> None:
    note = make_policy(SAMPLE, baseline=None).resolve("model").note
    assert note is not None
    assert "suite 'sample' has no shipped leaderboard" in note


def test_leaderboard_row_option() -> None:
    policy = make_policy(V1, baseline="leaderboard:nlpai-lab/KURE-v1")
    assert policy.resolve("anything").baseline is not None
    assert policy.resolve("anything").baseline.cells["Ko-StrategyQA"].value == 79.2  # type: ignore[union-attr]
    v2 = load_suite("ko-leaderboard-v2")
    sparse = make_policy(
        v2, baseline="leaderboard:ko-leaderboard-v2-sparse:telepix/PIXIE-Splade-v1.5"
    )
    assert sparse.fixed is not None
    assert sparse.fixed.source.startswith("ko-leaderboard-v2-sparse row")
    with pytest.raises(KoembedError, match="did you mean 'nlpai-lab/KURE-v1'"):
        make_policy(V1, baseline="leaderboard:nlpai-lab/KURE-v2")
    with pytest.raises(KoembedError, match="suite 'sample' has no shipped leaderboard"):
        make_policy(SAMPLE, baseline="leaderboard:x")


def test_parse_baseline_option(tmp_path: Path) -> None:
    assert parse_baseline_option(None).mode == "auto"
    assert parse_baseline_option("none").mode == "none"
    choice = parse_baseline_option("b.json", base_dir=tmp_path)
    assert (choice.mode, choice.path) == ("file", tmp_path / "b.json")


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_baseline_file_minimal_and_validated(tmp_path: Path) -> None:
    good = _write(
        tmp_path / "b.json",
        {
            "suite": {"name": "sample"},
            "tasks": [
                {"column": "sample-sts", "shown": 12.345},
                {"column": "sample-pairs", "value": 40.0, "stale": "hand-marked"},
                {"column": "sample-retrieval", "status": "error", "value": None},
            ],
        },
    )
    policy = make_policy(SAMPLE, baseline=str(good))
    assert policy.fixed is not None
    assert policy.fixed.cells == {
        "sample-sts": BaselineCell(12.35),  # shown values are 2 decimals, half-up
        "sample-pairs": BaselineCell(40.0, "hand-marked"),
    }
    cases = [
        ("missing.json", None, "does not exist"),
        ("bad.json", "{", "is not valid JSON"),
        ("list.json", [], "is not a run record"),
        ("suite.json", {"suite": {"name": "x"}, "tasks": []}, "is for suite 'x'"),
        ("col.json", {"tasks": [{"column": "nope", "shown": 1}]}, "not a column of suite"),
        ("val.json", {"tasks": [{"column": "sample-sts", "shown": "hi"}]}, "finite number"),
    ]
    for name, data, needle in cases:
        path = tmp_path / name
        if data is not None:
            path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
        with pytest.raises(KoembedError, match=needle):
            make_policy(SAMPLE, baseline=str(path))


def test_update_needs_a_file_and_accepts_a_new_one(tmp_path: Path) -> None:
    with pytest.raises(KoembedError, match="--koembed-update-baseline rewrites the file"):
        make_policy(SAMPLE, baseline="auto", update=True)
    policy = make_policy(SAMPLE, baseline=str(tmp_path / "new.json"), update=True)
    assert policy.fixed is None
    assert "does not exist yet" in (policy.resolve("m").note or "")


def test_old_records_still_load() -> None:
    old = {
        "column": "c",
        "task": "t",
        "split": "test",
        "subset": "default",
        "category": "STS",
        "value_rule": "sts-mean8",
    }
    assert TaskScore.from_dict(old).verdict is None
    assert TaskScore.from_dict({**old, "from_the_future": 1}).column == "c"


# --- gates ------------------------------------------------------------------------------------


def test_parse_gates() -> None:
    gates = parse_gates(["weighted=60,retrieval=75", "Retrieval_Average=70"], V1)
    assert gates == (Gate("weighted", 60.0), Gate("Retrieval", 70.0))
    for spec, needle in [
        ("60", "expected NAME=POINTS"),
        ("sts=101", "above 100"),
        ("speed=1", "'speed' is not 'weighted' nor a category"),
    ]:
        with pytest.raises(KoembedError, match=needle):
            parse_gates([spec], V1)
    with pytest.raises(KoembedError, match="not 'weighted' nor a category of suite"):
        parse_gates(["sts=1"], load_suite("ko-leaderboard-v2"))


def _record(values: dict[str, float | None], deselected: Sequence[str] = ()) -> dict[str, Any]:
    """A record of the sample suite as reports.run_record builds it."""
    from pytest_koembed.reports.summary import run_record

    scores = {}
    for spec in SAMPLE.tasks:
        if spec.column in values:
            value = values[spec.column]
            scores[spec.column] = TaskScore(
                column=spec.column,
                task=spec.task,
                split=spec.split,
                subset=spec.subset,
                category=spec.category,
                value_rule=spec.value_rule,
                status="ok" if value is not None else "error",
                value=value,
                shown=value,
                error=None if value is not None else "boom",
            )
    selected = [c for c in (t.column for t in SAMPLE.tasks) if c not in deselected]
    return run_record(
        model="m",
        suite=SAMPLE,
        scheme="ko-leaderboard-v1",
        scores=scores,
        encoder_infos=[],
        selected=selected,
        started=0.0,
        complete=True,
    )


ALL = {
    "sample-sts": 60.0,
    "sample-pairs": 70.0,
    "sample-clustering": 50.0,
    "sample-retrieval": 80.0,
    "sample-classification": 55.0,
    "sample-reranking": 65.0,
}


def test_gates_pass_and_fail_by_how_much() -> None:
    record = _record(ALL)
    results = evaluate_gates(
        parse_gates(["weighted=60,retrieval=80.5,sts=60"], SAMPLE), record, SAMPLE
    )
    status = {r.name: (r.status, r.value) for r in results}
    # weighted: 80/3 + 50/3 + (60+70)/9 = 57.78
    assert status == {
        "weighted": ("failed", 57.78),
        "Retrieval": ("failed", 80.0),
        "STS": ("passed", 60.0),  # equal to the threshold passes
    }
    assert results[0].line() == (
        "gate weighted >= 60.00: FAILED, weighted average 57.78 is 2.22 short of 60.00"
    )
    assert results[1].line() == (
        "gate Retrieval >= 80.50: FAILED, Retrieval average 80.00 is 0.50 short of 80.50"
    )


def test_incomplete_category_fails_its_gate() -> None:
    record = _record({**ALL, "sample-retrieval": None})
    results = evaluate_gates(parse_gates(["retrieval=0,weighted=0,sts=0"], SAMPLE), record, SAMPLE)
    status = {r.name: r.status for r in results}
    assert status == {"Retrieval": "failed", "weighted": "failed", "STS": "passed"}
    assert "incomplete (sample-retrieval errored)" in results[0].reason
    record = _record({k: v for k, v in ALL.items() if k != "sample-retrieval"})
    assert record["not_run"] == ["sample-retrieval"]
    (result,) = evaluate_gates([Gate("Retrieval", 0.0)], record, SAMPLE)
    assert (result.status, "sample-retrieval not run" in result.reason) == ("failed", True)


def test_deselection_leaves_the_gates_of_categories_that_ran() -> None:
    ran = {k: v for k, v in ALL.items() if k != "sample-clustering"}
    record = _record(ran, deselected=["sample-clustering"])
    results = evaluate_gates(
        parse_gates(["weighted=0,clustering=99,retrieval=10"], SAMPLE), record, SAMPLE
    )
    status = {r.name: r.status for r in results}
    assert status == {"weighted": "failed", "Clustering": "not checked", "Retrieval": "passed"}
    assert "only 5 of 6 tasks selected" in results[0].reason


# --- baseline files ---------------------------------------------------------------------------


def test_merge_keeps_what_did_not_run_and_lists_changes() -> None:
    old = {
        "tasks": [
            {"column": "sample-sts", "shown": 50.0},
            {"column": "sample-pairs", "shown": 70.0, "stale": "old"},
            {"column": "sample-clustering", "shown": 40.0},
        ]
    }
    new = _record(
        {"sample-sts": 50.0, "sample-pairs": 71.5, "sample-retrieval": None},
        deselected=["sample-clustering"],
    )
    merged, lines = merge_baseline(old, new, SAMPLE)
    assert lines[0] == "1 changed, 0 new, 1 unchanged, 1 kept"
    assert "  sample-pairs: 70.00 -> 71.50 (+1.50), stale mark dropped" in lines
    assert "  sample-retrieval: kept, this run errored" not in lines  # nothing to keep
    shown = {t["column"]: t["shown"] for t in merged["tasks"]}
    assert shown == {"sample-sts": 50.0, "sample-pairs": 71.5, "sample-clustering": 40.0}
    assert all("stale" not in t for t in merged["tasks"])
    # the sample's classification and reranking tasks have no cell in either
    no_cell = ["sample-retrieval", "sample-classification", "sample-reranking"]
    assert merged["deselected"] == no_cell
    assert merged["weighted_average"] is None
    assert merged["category_averages"] == {
        "STS": 50.0, "NLI": 71.5, "Clustering": 40.0, "Retrieval": None,
        "Classification": None, "Reranking": None,
    }  # fmt: skip
    # no cell: incomplete, not absent
    assert merged["incomplete_categories"] == ["Classification", "Reranking", "Retrieval"]
    assert merged["task_counts"]["deselected"] == 3
