"""One task count, and incomplete category averages marked as such in summary, record and chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from koembed_test_encoders import HASHING_ENCODER

from pytest_koembed.protocol.scoring import category_average
from pytest_koembed.protocol.suite import load_suite
from pytest_koembed.reports.plot import chart_data
from pytest_koembed.resources import suites_dir

pytestmark = pytest.mark.usefixtures("offline")


def _suite_toml(data: Path, broken: Path) -> str:
    """Three STS tasks (the third reads a directory with no data: it fails) and one NLI task."""

    def task(column: str, name: str, kind: str, category: str, root: Path) -> str:
        return (
            f'[[tasks]]\ncolumn = "{column}"\ntask = "{name}"\ntype = "{kind}"\n'
            f'data = "{root.as_posix()}"\nsplit = "test"\ncategory = "{category}"\n\n'
        )

    return (
        'name = "three-sts"\nscheme = "ko-leaderboard-v1"\n\n'
        + task("sts-a", "KoembedSampleSTS", "STS", "STS", data)
        + task("sts-b", "KoembedSampleSTS", "STS", "STS", data)
        + task("sts-c", "KoembedSampleSTS", "STS", "STS", broken)
        + task("pairs", "KoembedSamplePairClassification", "PairClassification", "NLI", data)
    )


@pytest.fixture
def repo(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(HASHING_ENCODER)
    (pytester.path / "empty").mkdir()
    suite = _suite_toml(suites_dir() / "sample-data", pytester.path / "empty")
    (pytester.path / "three-sts.toml").write_text(suite, encoding="utf-8")
    return pytester


def _run(repo: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict]:
    record_path = repo.path / "run.json"
    result = repo.runpytest(
        "--koembed-model=hashing",
        f"--koembed-suite={repo.path / 'three-sts.toml'}",
        f"--koembed-json={record_path}",
        "--koembed-baseline=none",
        *args,
    )
    return result, json.loads(record_path.read_text(encoding="utf-8"))


def test_deselected_task_makes_its_category_partial(repo: pytest.Pytester) -> None:
    result, record = _run(repo, "-k", "sts-a or sts-b or pairs")
    assert result.ret == 0, result.stdout.str()
    values = {t["column"]: t["value"] for t in record["tasks"]}
    sts = category_average([values["sts-a"], values["sts-b"]])
    assert record["task_counts"] == {
        "total": 4, "scored": 3, "failed": 0, "not_run": 0, "deselected": 1
    }  # fmt: skip
    assert record["category_averages"]["STS"] is None  # not the STS average of the suite
    assert record["category_averages"]["NLI"] is not None
    assert record["partial_category_averages"] == {"STS": {"value": sts, "tasks": 2, "of": 3}}
    assert record["incomplete_categories"] == ["STS"]
    assert record["weighted_average"] is None
    result.stdout.fnmatch_lines(
        [
            "suite three-sts: 3 of 4 tasks scored, 1 deselected",
            f"category averages: STS {sts:.2f} (2 of 3 tasks) | NLI *",
            "weighted average n/a *not computed: the suite is incomplete (3 of 4 tasks scored, "
            "1 deselected)",
        ]
    )
    chart = chart_data(record, load_suite(str(repo.path / "three-sts.toml")))
    sts_row = next(r for r in chart.averages if r.label == "STS average")
    assert sts_row.value is None and sts_row.incomplete_note == f"{sts:.2f} over 2 of 3 tasks"
    assert chart.subtitle.startswith("3 of 4 tasks scored, 1 deselected")


def test_failed_task_is_counted_as_failed_not_scored(repo: pytest.Pytester) -> None:
    result, record = _run(repo)
    assert result.ret == 1, result.stdout.str()
    assert record["task_counts"] == {
        "total": 4, "scored": 3, "failed": 1, "not_run": 0, "deselected": 0
    }  # fmt: skip
    assert record["incomplete_categories"] == ["STS"]
    assert record["partial_category_averages"]["STS"]["tasks"] == 2
    result.stdout.fnmatch_lines(
        [
            "suite three-sts: 3 of 4 tasks scored, 1 failed",
            "category averages: STS * (2 of 3 tasks) | NLI *",
        ]
    )


def test_only_failed_task_is_not_scored(repo: pytest.Pytester) -> None:
    result, record = _run(repo, "-k", "sts-c")
    assert result.ret == 1
    assert record["task_counts"]["scored"] == 0 and record["task_counts"]["failed"] == 1
    result.stdout.fnmatch_lines(
        [
            "suite three-sts: 0 of 4 tasks scored, 1 failed, 3 deselected",
            "category averages: STS n/a (0 of 3 tasks) | NLI n/a (0 of 1 tasks)",
        ]
    )


def test_stopping_at_the_first_failure_leaves_the_run_incomplete(repo: pytest.Pytester) -> None:
    result, record = _run(repo, "-x")
    assert result.ret == 1
    assert record["complete"] is False
    assert record["interrupted"] == "stopping after 1 failures"  # pytest's own words
    assert record["not_run"] == ["pairs"]
    assert record["task_counts"] == {
        "total": 4, "scored": 2, "failed": 1, "not_run": 1, "deselected": 0
    }  # fmt: skip
    result.stdout.fnmatch_lines(
        [
            "suite three-sts: 2 of 4 tasks scored, 1 failed, 1 not run",
            "the run did not finish: stopping after 1 failures",
            "category averages: STS * (2 of 3 tasks) | NLI n/a (0 of 1 tasks)",
        ]
    )
