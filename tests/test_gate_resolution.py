"""Issue 17: the paired gate's resolution follows from the run (no p-value floor at 1/1001), its
tests are one-sided, a task that cannot reach the run's level says so, and each paired task has
a minimum detectable effect. Through ``compare.compare_records`` (what ``koembed compare`` runs)
and the statistics it calls."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from pytest_koembed.gate.compare import GateSettings, compare_records
from pytest_koembed.reports.compare_text import render_text
from pytest_koembed.stats import bootstrap, kernels, permutation, power

# a 15-task run with ko-leaderboard-v1's categories
CATEGORIES = ["STS"] * 3 + ["NLI"] * 3 + ["Clustering"] * 3 + ["Retrieval"] * 6


def queries(n: int, seed: int, shift: float = 0.0, sd: float = 0.1) -> tuple[pd.DataFrame, ...]:
    """A base and a new per-query frame whose mean differs by exactly ``shift`` (0-1 scale)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.3, 0.7, n)
    noise = rng.normal(0.0, sd, n)
    new = base + noise - noise.mean() + shift
    keys = [f"q{i}" for i in range(n)]

    def frame(values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(
            {"key": keys, "query_id": keys, "ndcg_at_5": values, "ndcg_at_10": values}
        )

    return frame(base), frame(new)


def run(frames: dict[str, pd.DataFrame], categories: list[str]) -> dict:
    tasks = [
        {
            "column": c,
            "category": cat,
            "value": bootstrap.frame_value(f, "ndcg-5-10"),
            "value_rule": "ndcg-5-10",
            "status": "ok",
        }
        for (c, f), cat in zip(frames.items(), categories, strict=True)
    ]
    return {"tasks": tasks, "scheme": "ko-leaderboard-v1", "weighted_average": None}


def compare(pairs: dict[str, tuple[pd.DataFrame, pd.DataFrame]], confidence: float, cats=None):
    cats = cats or CATEGORIES[: len(pairs)]
    base = {c: p[0] for c, p in pairs.items()}
    new = {c: p[1] for c, p in pairs.items()}
    return compare_records(run(base, cats), base, run(new, cats), new, GateSettings(confidence))


def test_a_degraded_run_fails_at_099_over_15_tasks() -> None:
    """Every task 3 points worse on 600 queries (z about 7): today's p >= 1/1001 gives Holm's
    smallest adjusted p 15/1001 = 0.015 >= 0.01, so this could never fail at 0.99."""
    pairs = {f"t{k}": queries(600, k, shift=-0.03) for k in range(15)}
    out = compare(pairs, 0.99)
    assert [t.verdict for t in out.tasks] == ["regressed"] * 15
    assert all(t.p_adjusted is not None and t.p_adjusted < 0.01 for t in out.tasks)
    assert out.regressed and out.verdict.startswith("REGRESSED")


def test_equivalent_runs_do_not_fail_at_099_over_15_tasks() -> None:
    pairs = {f"t{k}": queries(600, 100 + k, shift=0.0) for k in range(15)}
    out = compare(pairs, 0.99)
    assert not out.regressed
    assert all(t.verdict == "within noise" for t in out.tasks)


def test_drops_are_one_sided_at_the_full_level() -> None:
    """A 0.9-point drop on 400 queries with a standard error of 0.5 points: one-sided p about
    0.036 (regressed at 95%), two-sided about 0.07 (today: within noise). The mirror gain is
    improved, in its own family, and never fails the run."""
    drop = compare({"t": queries(400, 7, shift=-0.009)}, 0.95)
    (task,) = drop.tasks
    assert 0.02 < task.p_value < 0.05 and task.verdict == "regressed"
    base, new = queries(400, 7, shift=-0.009)
    gain = compare({"t": (new, base)}, 0.95)
    assert gain.tasks[0].verdict == "improved" and not gain.regressed
    assert gain.tasks[0].p_value > 0.9  # the drop family's p of a gain is large


def test_a_task_that_cannot_reach_the_level_says_so() -> None:
    """A 10-row task in a 15-task run at 0.99: exact enumeration gives p >= 1/1024, x 15 tasks
    = 0.0146 >= 0.01: it cannot fail, and the comparison says so before any verdict."""
    pairs = {f"t{k}": queries(600, 200 + k) for k in range(14)}
    pairs["tiny"] = queries(10, 3, shift=-0.2)
    out = compare(pairs, 0.99)
    tiny = next(t for t in out.tasks if t.column == "tiny")
    assert tiny.cannot_fail and "cannot fail at this level" in tiny.cannot_fail
    assert tiny.p_value == pytest.approx(1 / 1024)  # exact: every one of the 2^10 patterns
    assert tiny.mde is None and tiny.verdict == "within noise"
    text = render_text(out)
    assert "within noise (cannot fail)" in text
    assert "tiny: cannot fail at this level: 10 units give p >= 1/2^10" in text
    data = out.to_dict()
    entry = next(t for t in data["tasks"] if t["column"] == "tiny")
    assert entry["cannot_fail"] and entry["mde"] is None
    # at 0.95 the same task can fail: 15/1024 < 0.05
    assert power.cannot_fail_note(10, 15, 0.05) is None


def test_the_resolution_follows_from_the_run() -> None:
    assert power.swap_resolution(15, 0.01) == 14999  # floor 1/15000 = alpha / (10 m)
    assert power.swap_resolution(51, 0.05) == 10199
    assert power.swap_resolution(1, 0.05) == kernels.DEFAULT_PERMUTATIONS
    base, new = queries(600, 1, shift=-0.03)
    test = permutation.paired_test(base, new, "ndcg-5-10", level=0.99, family_size=15, stream="t")
    assert test.p_value == pytest.approx(1 / 15000) and test.n_permutations == 14999
    # an unchanged model's task stops after a few dozen swaps (Besag-Clifford)
    same = permutation.paired_test(base, base.copy(), "ndcg-5-10", level=0.99, family_size=15)
    assert same.p_value == 1.0 and same.n_permutations == permutation.SEQUENTIAL_EXCEEDANCES
    # reproducible, and swap r is the same whatever the batches
    again = permutation.paired_test(base, new, "ndcg-5-10", level=0.99, family_size=15, stream="t")
    assert again == test
    whole = kernels.swap_masks(50, 700, seed=3, stream="s")
    assert np.array_equal(whole[:, 300:650], kernels.swap_masks(50, 350, 3, "s", start=300))


def test_the_minimum_detectable_effect_is_the_normal_power_formula() -> None:
    base, new = queries(600, 11, shift=0.0, sd=0.2)
    out = compare({f"t{k}": queries(600, 11 + k, sd=0.2) for k in range(15)}, 0.95)
    se = 100 * 0.2 / np.sqrt(600)
    z = NormalDist().inv_cdf
    expected = (z(1 - 0.05 / 15) + z(0.8)) * se
    for t in out.tasks:
        assert t.mde == pytest.approx(expected, rel=0.15)
        assert t.mde >= 0.5
    assert "MDE" in render_text(out)
    assert out.to_dict()["tasks"][0]["mde"] == pytest.approx(out.tasks[0].mde)
    assert out.to_dict()["paired_method"]["version"] == permutation.PAIRED_METHOD_VERSION
    del base, new


def test_an_old_record_is_re_judged_with_a_line() -> None:
    pairs = {"t": queries(100, 1)}
    base = {c: p[0] for c, p in pairs.items()}
    new = {c: p[1] for c, p in pairs.items()}
    old = run(base, ["Retrieval"])
    old["tasks"][0]["p_value"] = 0.5  # a two-sided p, no paired method version
    out = compare_records(old, base, run(new, ["Retrieval"]), new, GateSettings())
    assert any("older paired test (two-sided p" in note for note in out.notes)
