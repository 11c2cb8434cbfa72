"""The main job: the sample suite with a real model, serial and under xdist."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pytest_koembed.protocol.scoring import round_half_up

pytestmark = pytest.mark.usefixtures("offline")

SAMPLE_COLUMNS = [
    "sample-sts",
    "sample-pairs",
    "sample-clustering",
    "sample-retrieval",
    "sample-classification",
    "sample-reranking",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sample-run")


@pytest.fixture(scope="module")
def sample_args(minilm_dir: Path) -> list[str]:
    return [f"--koembed-model={minilm_dir}", "--koembed-suite=sample"]


@pytest.fixture(scope="module")
def serial_run(run_pytest, workdir: Path, sample_args: list[str]) -> tuple[Any, dict]:
    record = workdir / "serial.json"
    junit = workdir / "junit.xml"
    result = run_pytest(workdir, *sample_args, f"--koembed-json={record}", f"--junitxml={junit}")
    return result, json.loads(record.read_text(encoding="utf-8"))


def test_every_task_passes_and_the_summary_is_printed(serial_run) -> None:
    result, _ = serial_run
    assert result.ret == 0, result.stdout
    assert "6 passed" in result.stdout
    result.fnmatch_lines(
        [
            "*= koembed summary =*",
            "suite sample: 6 of 6 tasks scored",
            "task*category*value*n*dup*seconds*",
            "sample-sts*STS*.?? ±*",
            "sample-pairs*NLI*.?? ±*",
            "sample-clustering*Clustering*.?? ±*",
            "sample-retrieval*Retrieval*.?? ±*",
            "sample-classification*Classification*.?? ±*",
            "sample-reranking*Reranking*.?? ±*",
            "category averages: STS * ±* | NLI * ±* | Clustering * ±* | Retrieval * ±* | "
            "Classification * ±* | Reranking * ±*",
            # the v1 formula weighs the leaderboard's four categories; the sample's other two
            # have their own averages
            "weighted average * ±* (scheme ko-leaderboard-v1: R/3 + C/3 + (S+N)/9); "
            "Classification, Reranking not weighted by this scheme",
            "intervals: 95% bootstrap over examples (1000 resamples, seed 0)",
            "model: all-MiniLM-L6-v2 (loader sentence-transformers, pooling mean, dtype fp32, "
            "device cpu, *; name from its model card)",
            "versions: mteb 2.*, sentence-transformers *, transformers *, torch *",
        ]
    )


def test_run_record_is_consistent(serial_run) -> None:
    _, record = serial_run
    assert record["complete"] is True
    assert record["suite"]["name"] == "sample"
    assert [t["column"] for t in record["tasks"]] == SAMPLE_COLUMNS
    for task in record["tasks"]:
        assert task["status"] == "ok"
        assert task["shown"] == round_half_up(task["value"], 2)
        assert 0 < task["value"] <= 100
        assert task["n_examples"] > 0
        assert task["scores"], "all raw mteb scores are kept"
    sts = record["tasks"][0]
    keys = [
        "pearson", "spearman", "cosine_pearson", "cosine_spearman", "manhattan_pearson",
        "manhattan_spearman", "euclidean_pearson", "euclidean_spearman",
    ]  # fmt: skip
    assert sts["value"] == pytest.approx(100 * sum(sts["scores"][k] for k in keys) / 8)
    retrieval = record["tasks"][3]
    assert retrieval["value"] == pytest.approx(
        50 * (retrieval["scores"]["ndcg_at_5"] + retrieval["scores"]["ndcg_at_10"])
    )
    averages = record["category_averages"]
    assert averages["STS"] == sts["shown"]
    expected = round_half_up(
        averages["Retrieval"] / 3
        + averages["Clustering"] / 3
        + (averages["STS"] + averages["NLI"]) / 9,
        2,
    )
    assert record["weighted_average"] == expected
    assert set(record["versions"]) >= {"mteb", "sentence-transformers", "transformers", "torch"}


def test_run_record_has_intervals(serial_run) -> None:
    """Every task and every average has a 95% interval around its value (issue 9)."""
    _, record = serial_run
    assert record["intervals"] == {
        "method": "percentile bootstrap over examples",
        "level": 0.95,
        "resamples": 1000,
        "seed": 0,
    }
    for task in record["tasks"]:
        ci = task["ci"]
        assert ci["level"] == 0.95
        assert ci["low"] <= task["value"] <= ci["high"], task["column"]
        assert ci["high"] - ci["low"] > 0.1, task["column"]  # tiny tasks: wide intervals
    for category, average in record["category_averages"].items():
        ci = record["category_average_ci"][category]
        assert ci["low"] <= average <= ci["high"], category
    weighted, ci = record["weighted_average"], record["weighted_average_ci"]
    assert ci["level"] == 0.95 and ci["low"] <= weighted <= ci["high"]
    # resampling the tasks together averages part of their noise away
    widest = max(t["ci"]["high"] - t["ci"]["low"] for t in record["tasks"])
    assert ci["high"] - ci["low"] < widest
    assert record["rank"] is None  # the sample suite has no published leaderboard


def test_junit_xml_carries_the_values(serial_run, workdir: Path) -> None:
    _, record = serial_run
    tree = ET.parse(workdir / "junit.xml")
    values = {}
    for case in tree.iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        values[case.get("name")] = float(props["koembed_value"])
    assert values == {t["column"]: t["shown"] for t in record["tasks"]}


def test_xdist_gives_the_same_summary_and_values(
    serial_run, run_pytest, workdir: Path, sample_args: list[str]
) -> None:
    serial_result, serial_record = serial_run
    record_path = workdir / "parallel.json"
    result = run_pytest(workdir, *sample_args, f"--koembed-json={record_path}", "-n", "2")
    assert result.ret == 0, result.stdout
    parallel = json.loads(record_path.read_text(encoding="utf-8"))

    def values(record: dict) -> list:
        return [(t["column"], t["value"], t["scores"], t["n_examples"]) for t in record["tasks"]]

    assert values(parallel) == values(serial_record)
    assert parallel["category_averages"] == serial_record["category_averages"]
    assert parallel["weighted_average"] == serial_record["weighted_average"]
    # seeded per task column: a second run, in other processes, gives the very same intervals
    assert [t["ci"] for t in parallel["tasks"]] == [t["ci"] for t in serial_record["tasks"]]
    for key in ("category_average_ci", "weighted_average_ci"):
        assert parallel[key] == serial_record[key]

    def summary(result: Any, worker: bool) -> list[str]:
        lines = result.lines
        start = next(i for i, line in enumerate(lines) if "koembed summary" in line) + 1
        end = next(i for i, line in enumerate(lines) if line.startswith("versions: "))
        # seconds (and under xdist the worker: the last columns of task rows) differ between
        # runs; compare everything else
        return [
            line.rsplit(None, 2 if worker else 1)[0]
            if line.startswith("sample-")
            else line.removesuffix("  worker")
            for line in lines[start : end + 1]
        ]

    assert summary(result, True) == summary(serial_result, False)
    assert any(line.startswith("task ") and line.endswith("  worker") for line in result.lines)
