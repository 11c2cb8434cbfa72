"""Baselines and the CI gate, end to end: pytest runs of the sample suite against baselines.

Two real runs (all-MiniLM-L6-v2 over the sample suite, serial and ``-n 2``) against hand-made
baseline files far above / below / just around the real scores; the other checks use a cheap
deterministic encoder (character hashing) where the exact score is not the point. Clustering is
deselected in the real runs (it is the slow task, and it exercises the ``-m`` deselection rules).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pytest_koembed.resources import suites_dir

pytestmark = pytest.mark.usefixtures("offline")

# the sample suite's clustering (slow), classification and reranking tasks are deselected
NOT_CLUSTERING = ["-m", "not clustering and not classification and not reranking"]


def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def _shown(record: dict[str, Any]) -> dict[str, float]:
    return {t["column"]: t["shown"] for t in record["tasks"] if t.get("status", "ok") == "ok"}


# --- real model, serial and -n 2 (one real run per test: never repeated across xdist workers) ---


def test_serial_run_against_a_hand_made_baseline(
    run_pytest, tmp_path: Path, minilm_dir: Path
) -> None:
    """Far below (improved), far above (regressed), a stale cell (warned), gates, save."""
    baseline = _write_json(
        tmp_path / "hand-made.json",
        {
            "suite": {"name": "sample"},
            "tasks": [
                {"column": "sample-sts", "shown": 0.0},
                {"column": "sample-pairs", "shown": 100.0},
                {"column": "sample-retrieval", "shown": 100.0, "stale": "hand-marked stale"},
            ],
        },
    )
    result = run_pytest(
        tmp_path,
        f"--koembed-model={minilm_dir}",
        "--koembed-suite=sample",
        *NOT_CLUSTERING,
        f"--koembed-baseline={baseline}",
        "--koembed-fail-under=weighted=1,nli=1,retrieval=100",
        "--koembed-fail-under=clustering=50",
        f"--koembed-save-baseline={tmp_path / 'saved.json'}",
        f"--koembed-json={tmp_path / 'run.json'}",
    )
    record = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    shown = _shown(record)
    assert result.ret == 1, result.stdout
    assert "1 failed, 2 passed, 3 deselected, 1 warning" in result.stdout
    assert "Traceback" not in result.stdout

    # the regression fails its item with the exact message
    result.fnmatch_lines(
        [
            "*_ koembed::NLI::sample-pairs _*",
            f"sample-pairs regressed: {shown['sample-pairs']:.2f} < baseline 100.00 - "
            "tolerance 1.00",
        ]
    )
    # the stale cell only warns
    result.fnmatch_lines(
        [
            "*StaleBaselineWarning: sample-retrieval regressed: "
            f"{shown['sample-retrieval']:.2f} < baseline 100.00 - tolerance 1.00 (stale baseline "
            "cell: hand-marked stale); not enforced without --koembed-strict",
        ]
    )
    # the improvement passes and is shown, with baseline, delta and verdict
    sts = shown["sample-sts"]
    result.fnmatch_lines(
        [
            "task*category*value*baseline*delta*verdict*n*dup*seconds",
            f"sample-sts*STS*{sts:.2f}*0.00*+{sts:.2f}*improved*",
            "sample-pairs*NLI*100.00*REGRESSED *",
            "sample-retrieval*Retrieval*100.00*warned (stale)*",
        ]
    )
    verdicts = {t["column"]: (t["verdict"], t["baseline"]) for t in record["tasks"]}
    assert verdicts == {
        "sample-sts": ("improved", 0.0),
        "sample-pairs": ("regressed", 100.0),
        "sample-retrieval": ("warned", 100.0),
    }

    # gates: -m deselection leaves the categories that ran; a partial suite fails "weighted"
    nli, retrieval = record["category_averages"]["NLI"], record["category_averages"]["Retrieval"]
    result.fnmatch_lines(
        [
            "gate weighted >= 1.00: FAILED, only 3 of 6 tasks selected (-k/-m); the weighted "
            "average needs them all",
            f"gate NLI >= 1.00: PASSED, NLI average {nli:.2f}",
            f"gate Retrieval >= 100.00: FAILED, Retrieval average {retrieval:.2f} is "
            f"{100 - retrieval:.2f} short of 100.00",
            "gate Clustering >= 50.00: NOT CHECKED, no Clustering task selected (-k/-m)",
            "2 of 4 gate(s) failed: weighted, Retrieval (exit status 1)",
        ]
    )
    assert [(g["name"], g["status"]) for g in record["gates"]] == [
        ("weighted", "failed"),
        ("NLI", "passed"),
        ("Retrieval", "failed"),
        ("Clustering", "not checked"),
    ]

    # --koembed-save-baseline writes the run record
    saved = json.loads((tmp_path / "saved.json").read_text(encoding="utf-8"))
    assert _shown(saved) == shown
    assert saved["suite"]["name"] == "sample"
    assert f"baseline written to {tmp_path / 'saved.json'} (3 task values)" in result.stdout


def test_xdist_run_compares_on_workers_and_gates_on_the_controller(
    run_pytest, tmp_path: Path, minilm_dir: Path
) -> None:
    """Under -n 2: below (improved), a missing cell, and a failed gate alone fails the run."""
    baseline = _write_json(
        tmp_path / "below.json",
        {
            "suite": {"name": "sample"},
            "tasks": [
                {"column": "sample-sts", "shown": 0.0},
                # sample-pairs: no cell
                {"column": "sample-retrieval", "shown": 0.0},
            ],
        },
    )
    result = run_pytest(
        tmp_path,
        f"--koembed-model={minilm_dir}",
        "--koembed-suite=sample",
        *NOT_CLUSTERING,
        "-n",
        "2",
        f"--koembed-baseline={baseline}",
        "--koembed-tolerance=retrieval=0.5",
        "--koembed-fail-under=nli=1,retrieval=100",
        f"--koembed-json={tmp_path / 'run.json'}",
    )
    record = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    verdicts = {t["column"]: (t["verdict"], t["tolerance"]) for t in record["tasks"]}
    assert verdicts == {
        "sample-sts": ("improved", 1.0),
        "sample-pairs": ("no baseline", None),
        "sample-retrieval": ("improved", 0.5),
    }
    # every item passed: the failed gate alone makes the exit status 1
    assert "3 passed in" in result.stdout  # (xdist deselects on the workers)
    assert result.ret == 1, result.stdout
    result.fnmatch_lines(
        [
            "sample-pairs*NLI*-*no baseline*",
            f"baseline: baseline file {baseline} (tolerance 1.00 points (Retrieval 0.50))",
            "no baseline cell (passed unchecked): sample-pairs",
            "gate NLI >= 1.00: PASSED*",
            "gate Retrieval >= 100.00: FAILED, Retrieval average * is * short of 100.00",
            "1 of 2 gate(s) failed: Retrieval (exit status 1)",
        ]
    )


# --- a cheap deterministic encoder ----------------------------------------------------------------


def _encoder_conftest(info: dict[str, str] | None = None, nan_queries: bool = False) -> str:
    return textwrap.dedent(
        f"""
        import hashlib

        import numpy as np
        import pytest


        class Hashy:
            info = {info!r}

            def encode(self, texts):
                out = np.zeros((len(texts), 64), dtype="float32")
                for i, text in enumerate(texts):
                    for ch in text:
                        out[i, int(hashlib.md5(ch.encode()).hexdigest(), 16) % 64] += 1.0
                return out

            if {nan_queries!r}:
                def encode_query(self, texts):
                    return np.full((len(texts), 64), np.nan, dtype="float32")


        @pytest.fixture(scope="session")
        def koembed_encoder():
            return Hashy()
        """
    )


def _v1_named_suite(pytester: pytest.Pytester) -> Path:
    """Two leaderboard columns of ko-leaderboard-v1, read from the sample data (no Hub)."""
    data = suites_dir() / "sample-data"
    return pytester.makefile(
        ".toml",
        v1=f"""
        name = "ko-leaderboard-v1"
        [[tasks]]
        column = "KLUE-STS"
        task = "KoembedSampleSTS"
        type = "STS"
        data = "{data.as_posix()}"
        category = "STS"
        [[tasks]]
        column = "Ko-StrategyQA"
        task = "KoembedSampleRetrieval"
        type = "Retrieval"
        data = "{data.as_posix()}"
        category = "Retrieval"
        """,
    )


def _record(pytester: pytest.Pytester, name: str = "run.json") -> dict[str, Any]:
    return json.loads((pytester.path / name).read_text(encoding="utf-8"))


def test_auto_uses_the_leaderboard_row_with_the_dtype_suffix(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        _encoder_conftest(
            {"name": "Qwen/Qwen3-Embedding-8B", "row_name": "Qwen/Qwen3-Embedding-8B-bf16"}
        )
    )
    suite = _v1_named_suite(pytester)
    result = pytester.runpytest(
        "--koembed-model=Qwen/Qwen3-Embedding-8B",
        f"--koembed-suite={suite}",
        "--koembed-no-instructions",
        "--koembed-json=run.json",
    )
    result.assert_outcomes(failed=2)
    shown = _shown(_record(pytester))
    result.stdout.fnmatch_lines(
        [
            f"KLUE-STS regressed: {shown['KLUE-STS']:.2f} < baseline 88.74 - tolerance 1.00",
            f"Ko-StrategyQA regressed: {shown['Ko-StrategyQA']:.2f} < baseline 83.08 - "
            "tolerance 1.00",
        ],
        consecutive=False,
    )
    result.stdout.fnmatch_lines(
        ["baseline: ko-leaderboard-v1 row 'Qwen/Qwen3-Embedding-8B-bf16' (tolerance 1.00 points)"]
    )


def test_stale_leaderboard_cell_warns_and_strict_fails(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(_encoder_conftest())
    suite = _v1_named_suite(pytester)
    args = ["--koembed-model=hashy", f"--koembed-suite={suite}", "-k", "KLUE-STS"]
    args.append("--koembed-baseline=leaderboard:BAAI/bge-m3")
    lenient = pytester.runpytest(*args)
    lenient.assert_outcomes(passed=1, warnings=1, deselected=1)
    lenient.stdout.fnmatch_lines(
        [
            "*StaleBaselineWarning: KLUE-STS regressed: * < baseline 86.80 - tolerance 1.00 "
            "(stale baseline cell: first-version value*); not enforced without --koembed-strict",
            "KLUE-STS*STS*86.80*warned (stale)*",
        ]
    )
    assert lenient.ret == 0
    strict = pytester.runpytest(*args, "--koembed-strict")
    strict.assert_outcomes(failed=1, deselected=1)
    strict.stdout.fnmatch_lines(
        [
            "KLUE-STS regressed: * < baseline 86.80 - tolerance 1.00 (stale baseline cell: "
            "first-version value (2024-11-28, Transformers-first loading), never re-run)",
            "KLUE-STS*STS*86.80*REGRESSED (stale)*",
        ]
    )


def test_no_baseline_is_said_once_and_items_pass(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(_encoder_conftest())
    result = pytester.runpytest(
        "--koembed-model=hashy", "--koembed-suite=sample", "-k", "sts or pairs"
    )
    result.assert_outcomes(passed=2, deselected=4)
    assert result.ret == 0
    out = result.stdout.str()
    assert out.count("no baseline: --koembed-baseline auto: suite 'sample' has no shipped") == 1
    result.stdout.fnmatch_lines(["sample-sts*STS*-*no baseline*", "verdicts: 2 no baseline"])


def test_a_failed_gate_alone_fails_the_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(_encoder_conftest())
    args = ["--koembed-model=hashy", "--koembed-suite=sample", "-k", "sample-sts"]
    failed = pytester.runpytest(*args, "--koembed-baseline=none", "--koembed-fail-under=sts=99")
    failed.assert_outcomes(passed=1, deselected=5)
    assert failed.ret == pytest.ExitCode.TESTS_FAILED
    failed.stdout.fnmatch_lines(
        [
            "task*category*value*n*dup*seconds",  # no baseline columns with --koembed-baseline none
            "gate STS >= 99.00: FAILED, STS average * is * short of 99.00",
            "1 of 1 gate(s) failed: STS (exit status 1)",
        ]
    )
    assert "verdict" not in failed.stdout.str()
    # the ini options, with a baseline path relative to the ini file
    _write_json(pytester.path / "b.json", {"tasks": [{"column": "sample-sts", "shown": 0}]})
    pytester.makeini(
        """
        [pytest]
        koembed_baseline = b.json
        koembed_tolerance = 0.5 sts=0.25
        koembed_fail_under = sts=1
        """
    )
    passed = pytester.runpytest(*args)
    passed.assert_outcomes(passed=1, deselected=5)
    assert passed.ret == 0
    passed.stdout.fnmatch_lines(
        [
            f"baseline: baseline file {pytester.path / 'b.json'} "
            "(tolerance 0.50 points (STS 0.25))",
            "gate STS >= 1.00: PASSED, STS average *",
        ]
    )
    # --collect-only checks no gate
    assert pytester.runpytest(*args, "--collect-only").ret == 0


def test_incomplete_category_fails_its_gate(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(_encoder_conftest(nan_queries=True))
    result = pytester.runpytest(
        "--koembed-model=hashy",
        "--koembed-suite=sample",
        "-k",
        "sts or retrieval",
        "--koembed-fail-under=sts=0,retrieval=0",
    )
    result.assert_outcomes(passed=1, failed=1, deselected=4)
    result.stdout.fnmatch_lines(
        [
            "gate STS >= 0.00: PASSED, STS average *",
            "gate Retrieval >= 0.00: FAILED, incomplete (sample-retrieval errored): never "
            "passes on partial data",
        ]
    )


def test_update_baseline_rewrites_the_file_and_lists_changes(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(_encoder_conftest())
    path = _write_json(
        pytester.path / "base.json",
        {
            "suite": {"name": "sample"},
            "tasks": [
                {"column": "sample-sts", "shown": 99.0},
                {"column": "sample-pairs", "shown": 1.0, "stale": "hand-marked"},
                {"column": "sample-clustering", "shown": 33.0},
            ],
        },
    )
    args = ["--koembed-model=hashy", "--koembed-suite=sample", "-k", "sts or pairs"]
    args += [f"--koembed-baseline={path}", "--koembed-json=run.json"]
    update = pytester.runpytest(*args, "--koembed-update-baseline")
    update.assert_outcomes(passed=2, deselected=4)  # regressions reported, not failed
    assert update.ret == 0
    shown = _shown(_record(pytester))
    update.stdout.fnmatch_lines(
        [
            "sample-sts*99.00*REGRESSED*",
            f"baseline {path} updated: 2 changed, 0 new, 0 unchanged, 1 kept"  # and both files
            f", with its per-example results {path.with_name('base.examples.parquet')}: "
            "commit both files (the paired rule needs the second)",
            f"  sample-sts: 99.00 -> {shown['sample-sts']:.2f} (-{99 - shown['sample-sts']:.2f})",
            f"  sample-pairs: 1.00 -> {shown['sample-pairs']:.2f} "
            f"(+{shown['sample-pairs'] - 1:.2f}), stale mark dropped",
        ]
    )
    rewritten = json.loads(path.read_text(encoding="utf-8"))
    assert _shown(rewritten) == {**shown, "sample-clustering": 33.0}
    # the next run compares with the updated file, which now holds this run's per-example
    # results: paired, identical, within noise; nothing changes
    again = pytester.runpytest(*args, "--koembed-update-baseline")
    assert again.ret == 0
    again.stdout.fnmatch_lines(
        [
            "sample-sts*+0.00 [[]+0.00, +0.00[]]*1.000*within noise*",
            f"baseline {path} updated: 0 changed, 0 new, 2 unchanged, 1 kept"
            f", with its per-example results {path.with_name('base.examples.parquet')}: "
            "commit both files (the paired rule needs the second)",
        ]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--koembed-baseline=missing.json"], "ERROR: baseline file */missing.json does not exist"),
        (["--koembed-baseline=bad.json"], "ERROR: baseline file */bad.json is not valid JSON*"),
        (["--koembed-baseline=other.json"], "ERROR: * is for suite 'v1', this run's suite is *"),
        (
            ["--koembed-suite=ko-leaderboard-v1", "--koembed-baseline=leaderboard:BAAI/bge-m4"],
            "ERROR: --koembed-baseline leaderboard:BAAI/bge-m4: no row 'BAAI/bge-m4' in "
            "ko-leaderboard-v1; did you mean 'BAAI/bge-m3'*",
        ),
        (["--koembed-tolerance=fast=1"], "ERROR: --koembed-tolerance 'fast=1': 'fast' is *"),
        (["--koembed-fail-under=60"], "ERROR: --koembed-fail-under '60': expected NAME=POINTS*"),
        (["--koembed-update-baseline"], "ERROR: --koembed-update-baseline rewrites the file*"),
    ],
)
def test_bad_baseline_options_are_one_line_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    (pytester.path / "bad.json").write_text("{", encoding="utf-8")
    _write_json(pytester.path / "other.json", {"suite": {"name": "v1"}, "tasks": []})
    result = pytester.runpytest("--koembed-model=m", "--koembed-suite=sample", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert len([line for line in result.stderr.lines if line.strip()]) == 1
