"""The paired gate through the plugin: a saved baseline with per-example results, run again.

A cheap deterministic encoder (character hashing) over the sample suite; ``KOEMBED_TEST_NOISE``
makes it a degraded model (heavy seeded noise on every embedding). The real model's run is in
``test_paired_real.py``.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pytest_koembed.evaluation.per_example import examples_path

pytestmark = pytest.mark.usefixtures("offline")

ENCODER = textwrap.dedent(
    """
    import hashlib
    import os

    import numpy as np
    import pytest


    class Hashy:
        def encode(self, texts):
            out = np.zeros((len(texts), 64), dtype="float32")
            for i, text in enumerate(texts):
                for ch in text:
                    out[i, int(hashlib.md5(ch.encode()).hexdigest(), 16) % 64] += 1.0
            noise = float(os.environ.get("KOEMBED_TEST_NOISE") or 0)
            if noise:  # a degraded model: the same embeddings drowned in seeded noise
                rng = np.random.default_rng(len(texts))
                out += rng.normal(0.0, noise, out.shape).astype("float32")
            return out


    @pytest.fixture(scope="session")
    def koembed_encoder():
        return Hashy()
    """
)

# the sample suite's STS, NLI and Retrieval tasks (clustering, classification, reranking
# deselected)
ARGS = [
    "--koembed-model=hashy",
    "--koembed-suite=sample",
    "-m",
    "not clustering and not classification and not reranking",
]


def _record(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _tasks(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["column"]: t for t in record["tasks"]}


@pytest.fixture
def saved(pytester: pytest.Pytester) -> Path:
    pytester.makeconftest(ENCODER)
    result = pytester.runpytest(*ARGS, "--koembed-save-baseline=base.json")
    assert result.ret == 0, result.stdout.str()
    return pytester.path / "base.json"


def test_the_same_run_again_is_within_noise(pytester: pytest.Pytester, saved: Path) -> None:
    result = pytester.runpytest(*ARGS, f"--koembed-baseline={saved}", "--koembed-json=run.json")
    assert result.ret == 0, result.stdout.str()
    tasks = _tasks(_record(pytester.path / "run.json"))
    assert len(tasks) == 3
    for task in tasks.values():
        assert task["verdict"] == "within noise"
        assert task["delta"] == 0.0
        assert task["p_value"] == 1.0 and task["p_adjusted"] == 1.0
        assert task["delta_ci"] == {"level": 0.95, "low": 0.0, "high": 0.0}
    result.stdout.fnmatch_lines(
        [
            "*task*category*value*baseline*delta*p*verdict*",
            "*sample-sts*+0.00 [[]+0.00, +0.00[]]*1.000*within noise*",
            f"paired gate: Holm over 3 tasks at 95% confidence, min effect 0.50 points; "
            f"baseline {saved} (same rows: yes)",
        ],
        consecutive=False,
    )


def test_a_degraded_model_regresses_and_fails(
    pytester: pytest.Pytester, saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOEMBED_TEST_NOISE", "3")
    result = pytester.runpytest(
        *ARGS, f"--koembed-baseline={saved}", "--koembed-json=run.json", "--koembed-min-effect=1"
    )
    assert result.ret == 1, result.stdout.str()
    tasks = _tasks(_record(pytester.path / "run.json"))
    regressed = [c for c, t in tasks.items() if t["verdict"] == "regressed"]
    assert regressed, tasks
    for column in regressed:
        task = tasks[column]
        assert task["delta"] <= -1.0
        assert task["delta_ci"]["high"] < 0
        assert task["p_value"] * 3 < 0.05 and task["p_adjusted"] < 0.05
    result.stdout.fnmatch_lines(
        [
            f"*{regressed[0]} regressed: * vs baseline *, delta -* [[]-*, -*[]] "
            "(unadjusted 95% interval), one-sided p * x 3 tasks < 0.05 (min effect 1.00)"
        ]
    )
    result.assert_outcomes(failed=len(regressed), passed=3 - len(regressed), deselected=3)


def test_a_baseline_on_other_rows_is_not_paired(pytester: pytest.Pytester, saved: Path) -> None:
    sidecar = examples_path(saved)
    table = pd.read_parquet(sidecar)
    sts = table.index[table["column"] == "sample-sts"]
    table.loc[sts[:2], "key"] = ["changed-1", "changed-2"]  # two rows that this run does not have
    table.to_parquet(sidecar, index=False)
    record = _record(saved)
    import hashlib

    record["examples"]["sha256"] = hashlib.sha256(sidecar.read_bytes()).hexdigest()
    saved.write_text(json.dumps(record), encoding="utf-8")
    n = len(sts)
    result = pytester.runpytest(*ARGS, f"--koembed-baseline={saved}", "--koembed-json=run.json")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "paired gate: Holm over 2 tasks * (same rows: no, 1 not paired)",
            f"  sample-sts: not paired: baseline for sample-sts was made on different rows: "
            f"{n - 2} of {n} examples match; tolerance rule used",
        ],
        consecutive=False,
    )
    tasks = _tasks(_record(pytester.path / "run.json"))
    assert tasks["sample-sts"]["verdict"] == "pass" and tasks["sample-sts"]["p_value"] is None
    assert tasks["sample-sts"]["baseline_within_ci"] is True


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--koembed-confidence=1.5", "--koembed-confidence 1.5 must lie strictly between 0 and 1"),
        ("--koembed-min-effect=-1", "--koembed-min-effect -1.0 must be a number of points"),
    ],
)
def test_bad_gate_options_are_usage_errors(
    pytester: pytest.Pytester, option: str, message: str
) -> None:
    pytester.makeconftest(ENCODER)
    result = pytester.runpytest(*ARGS, option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_under_xdist_each_worker_knows_the_number_of_paired_tasks(
    pytester: pytest.Pytester, saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOEMBED_TEST_NOISE", "3")
    result = pytester.runpytest_subprocess(
        *ARGS,
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        f"--koembed-baseline={saved}",
        "--koembed-json=run.json",
        "--koembed-min-effect=1",
    )
    assert result.ret == 1, result.stdout.str()
    tasks = _tasks(_record(pytester.path / "run.json"))
    assert {t["worker"] for t in tasks.values()} <= {"gw0", "gw1"}
    regressed = [c for c, t in tasks.items() if t["verdict"] == "regressed"]
    assert regressed and all(tasks[c]["p_adjusted"] is not None for c in tasks)
    result.stdout.fnmatch_lines([f"*{regressed[0]} regressed: *, one-sided p * x 3 tasks < 0.05 *"])


def test_the_summary_labels_the_numbers_and_says_what_the_run_can_detect(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole sample suite against itself: the weighted average's paired delta, the method
    version, each task's MDE (or that it cannot fail at this level) and the labels."""
    pytester.makeconftest(ENCODER)
    args = ["--koembed-model=hashy", "--koembed-suite=sample"]
    assert pytester.runpytest(*args, "--koembed-save-baseline=base.json").ret == 0
    result = pytester.runpytest(
        *args,
        "--koembed-baseline=base.json",
        "--koembed-json=run.json",
        "--koembed-confidence=0.99",
    )
    assert result.ret == 0, result.stdout.str()
    out = result.stdout.str()
    record = _record(pytester.path / "run.json")
    paired = record["baseline"]["paired"]
    assert paired["method"]["version"] == 2
    assert "unadjusted" in paired["labels"]["delta_ci"]
    assert paired["weighted_average"]["delta"] == 0.0
    assert "weighted average, paired: " in out and "delta +0.00 [+0.00, +0.00] (unadjusted" in out
    assert "delta [unadjusted CI]" in out and "p (Holm, drop)" in out and "MDE" in out
    tasks = _tasks(record)
    for column, task in tasks.items():
        if task["p_value"] is None:
            continue
        if task["cannot_fail"]:  # said before any verdict, in the summary too
            assert task["mde"] is None and f"{column}: cannot fail at this level" in out
            assert column in paired["cannot_fail"]
        else:
            assert task["mde"] >= 0.5
    # a record judged by the old two-sided test (no swaps, no method version): koembed gate
    # re-judges it with a line saying so
    from pytest_koembed.cli import main

    old = _record(pytester.path / "run.json")
    for task in old["tasks"]:
        task.pop("swaps", None)
    old["baseline"]["paired"].pop("method")
    (pytester.path / "run.json").write_text(json.dumps(old), encoding="utf-8")
    monkeypatch_chdir = pytest.MonkeyPatch()
    monkeypatch_chdir.chdir(pytester.path)
    capsys.readouterr()
    status = main(["gate", "run.json", "--koembed-baseline=base.json"])
    gated = capsys.readouterr().out
    assert status == 0, gated
    assert "run.json: its paired verdicts come from an older paired test (two-sided p" in gated
    assert "weighted average, paired: " in gated  # re-judged: the new method's lines
    monkeypatch_chdir.undo()
