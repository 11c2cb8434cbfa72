"""``koembed compare`` and the run-level Holm rule it shares with the plugin's controller."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_koembed.cli import main
from pytest_koembed.gate.compare import GateSettings, bonferroni_verdict, holm_verdicts
from pytest_koembed.gate.verdicts import finish_paired, make_policy
from pytest_koembed.protocol.suite import load_suite
from pytest_koembed.records import TaskScore

pytestmark = pytest.mark.usefixtures("offline")

# Three tasks, all drops of 2 points: p = 0.001, 0.02, 0.6. Bonferroni (p x 3 < 0.05) flags
# only the first; Holm's second step compares 0.02 x 2 = 0.04 < 0.05 and flags the second too.
PAIRED = {"a": (-2.0, 0.001), "b": (-2.0, 0.02), "c": (-2.0, 0.6)}


def test_holm_catches_what_bonferroni_misses() -> None:
    gate = GateSettings()
    items = {c: bonferroni_verdict(d, p, len(PAIRED), gate) for c, (d, p) in PAIRED.items()}
    assert items == {"a": "regressed", "b": "within noise", "c": "within noise"}
    holm = holm_verdicts(PAIRED, gate)
    assert {c: r.verdict for c, r in holm.items()} == {
        "a": "regressed",
        "b": "regressed",
        "c": "within noise",
    }
    assert holm["b"][0] == pytest.approx(0.04)


def test_the_controller_fails_the_run_on_a_holm_only_regression() -> None:
    suite = load_suite("sample")
    policy = make_policy(suite, baseline="none")
    scores = {}
    for column, (delta, p) in PAIRED.items():
        score = TaskScore(column, column, "test", "default", "STS", "cosine_spearman", value=1.0)
        score.shown, score.delta, score.p_value, score.baseline = 1.0, delta, p, 3.0
        score.verdict = bonferroni_verdict(delta, p, 3, policy.gate)  # what the worker said
        scores[column] = score
    assert finish_paired(policy, scores) == ["b"]
    assert [s.verdict for s in scores.values()] == ["regressed", "regressed", "within noise"]
    assert scores["b"].p_adjusted == pytest.approx(0.04)
    assert "found by Holm over the run, its item passed" in (scores["b"].verdict_note or "")
    assert policy.holm_only == ["b"]


def test_min_effect_keeps_a_small_significant_drop_within_noise() -> None:
    gate = GateSettings(min_effect=0.5)
    assert holm_verdicts({"a": (-0.3, 0.001)}, gate)["a"][1] == "within noise"
    assert holm_verdicts({"a": (-0.5, 0.001)}, gate)["a"][1] == "regressed"
    # one-sided: a gain needs its own family's p; a small p for a drop never makes one
    assert holm_verdicts({"a": (0.6, 1.0, 0.001)}, gate)["a"][1] == "improved"
    assert holm_verdicts({"a": (0.6, 0.001)}, gate)["a"][1] == "within noise"


ENCODER = (Path(__file__).parent / "test_paired_gate.py").read_text(encoding="utf-8")
ENCODER = ENCODER.split('ENCODER = textwrap.dedent(\n    """')[1].split('"""')[0]


def test_compare_two_saved_runs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import textwrap

    pytester.makeconftest(textwrap.dedent(ENCODER))
    args = ["--koembed-model=hashy", "--koembed-suite=sample", "-m", "not clustering"]
    assert pytester.runpytest(*args, "--koembed-json=base.json").ret == 0
    assert pytester.runpytest(*args, "--koembed-json=same.json").ret == 0
    monkeypatch.setenv("KOEMBED_TEST_NOISE", "3")
    assert pytester.runpytest(*args, "--koembed-json=worse.json").ret == 0
    monkeypatch.chdir(pytester.path)

    assert main(["compare", "base.json", "same.json"]) == 0
    out = capsys.readouterr().out
    assert "sample-sts" in out and "+0.00 [+0.00, +0.00]" in out
    assert "verdict: no significant regression" in out
    # STS, NLI, Retrieval, Classification and Reranking: all five paired example by example
    assert "paired gate: Holm over 5 tasks at 95% confidence, min effect 0.50 points" in out

    status = main(["compare", "base.json", "worse.json", "--plot", "cmp.png", "--json", "cmp.json"])
    out = capsys.readouterr().out
    assert status == 1, out
    assert "REGRESSED" in out and "verdict: REGRESSED: " in out
    assert (pytester.path / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((pytester.path / "cmp.json").read_text(encoding="utf-8"))
    assert data["regressed"] and all(
        t["p_adjusted"] < 0.05 and t["delta"] <= -0.5
        for t in data["tasks"]
        if t["column"] in data["regressed"]
    )

    assert main(["compare", "base.json", "worse.json", "--markdown"]) == 1
    md = capsys.readouterr().out
    assert md.startswith("### koembed compare: ❌ REGRESSED")
    assert "| task | base | new | delta [unadjusted CI] | p (Holm, drop) | MDE | verdict |" in md
    assert "**REGRESSED**" in md

    (pytester.path / "same.examples.parquet").write_bytes(b"changed")
    assert main(["compare", "base.json", "same.json"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not match run record same.json" in err[0]
    assert main(["compare", "base.json", "missing.json"]) == 4
    assert "run record missing.json does not exist" in capsys.readouterr().err
    assert main(["compare", "base.json", "base.json", "--confidence", "2"]) == 4
    assert "--confidence '2' must lie strictly between 0 and 1" in capsys.readouterr().err
