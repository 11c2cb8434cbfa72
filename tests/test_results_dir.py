"""``--koembed-results-dir DIR``: mteb's own result files, which mteb's own cache reads back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from koembed_sample_reports import MODEL, SampleReports, sample_reports

from pytest_koembed.cli import main
from pytest_koembed.errors import KoembedError
from pytest_koembed.reports.publish import (
    PROVENANCE_FILE,
    mteb_model_name,
    mteb_revision,
    results_model_dir,
    write_results_dir,
)

pytestmark = pytest.mark.usefixtures("offline")

TASKS = [
    "KoembedSampleSTS",
    "KoembedSamplePairClassification",
    "KoembedSampleClustering",
    "KoembedSampleRetrieval",
    "KoembedSampleClassification",
    "KoembedSampleReranking",
]


@pytest.fixture(scope="module")
def sample(run_pytest: Any) -> SampleReports:
    reports = sample_reports(run_pytest)
    assert reports.ret == 0, reports.stdout
    return reports


def test_layout(sample: SampleReports) -> None:
    folder = sample.results_dir / "results" / "koembed-tests__hash-ngrams" / "no_revision_available"
    assert folder == results_model_dir(sample.results_dir, sample.record)
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([*(f"{t}.json" for t in TASKS), "model_meta.json", PROVENANCE_FILE])


def test_mteb_result_cache_reads_it_back(sample: SampleReports) -> None:
    from mteb import ResultCache
    from mteb.models.model_meta import ModelMeta

    cache = ResultCache(sample.results_dir)
    results = cache.load_results(include_remote=False)
    (model,) = results.model_results
    assert model.model_name == MODEL
    assert model.model_revision == "no_revision_available"
    assert sorted(r.task_name for r in model.task_results) == sorted(TASKS)
    by_task = {r.task_name: r for r in model.task_results}
    for task in sample.record["tasks"]:
        (entry,) = by_task[task["task"]].scores[task["split"]]
        assert entry["hf_subset"] == task["subset"]
        for key, value in task["scores"].items():
            if value is not None:
                assert entry[key] == pytest.approx(value, abs=5e-7), key
    # the same lookup by model name and task that mteb users make
    one = cache.load_results(models=[MODEL], tasks=["KoembedSampleSTS"], include_remote=False)
    assert [r.task_name for r in one.model_results[0].task_results] == ["KoembedSampleSTS"]
    folder = results_model_dir(sample.results_dir, sample.record)
    meta = ModelMeta.model_validate_json_resolved((folder / "model_meta.json").read_text())
    assert meta.name == MODEL
    assert meta.languages == ["kor-Hang"]


def test_files_are_what_mteb_writes(sample: SampleReports, tmp_path: Path) -> None:
    """mteb reading a file and writing it again (``TaskResult.to_disk``) changes nothing."""
    from mteb.results import TaskResult

    folder = results_model_dir(sample.results_dir, sample.record)
    for task in TASKS:
        ours = folder / f"{task}.json"
        again = tmp_path / f"{task}.json"
        TaskResult.from_disk(ours).to_disk(again)
        assert json.loads(again.read_text()) == json.loads(ours.read_text()), task


def test_provenance_notes_local_data(sample: SampleReports) -> None:
    folder = results_model_dir(sample.results_dir, sample.record)
    lines = [json.loads(line) for line in (folder / PROVENANCE_FILE).read_text().splitlines()]
    assert [item["task_name"] for item in lines] == TASKS
    for item in lines:
        assert item["source"].startswith("local:")
        assert "local copy" in item["note"]


def test_rescore_of_the_folder_gives_the_plugin_rows(
    sample: SampleReports, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rescore", str(sample.results_dir), "--suite", "sample"]) == 0
    out, err = capsys.readouterr()
    assert out == sample.rows.read_text(encoding="utf-8")
    assert "missing" not in err


def test_rewriting_keeps_other_tasks(sample: SampleReports, tmp_path: Path) -> None:
    record = dict(sample.record)
    write_results_dir(record, tmp_path)
    record["tasks"] = [t for t in record["tasks"] if t["task"] == "KoembedSampleSTS"]
    write_results_dir(record, tmp_path)
    folder = results_model_dir(tmp_path, record)
    assert sorted(p.stem for p in folder.glob("Koembed*.json")) == sorted(TASKS)
    assert len((folder / PROVENANCE_FILE).read_text().splitlines()) == 6


def test_a_record_without_mteb_results_is_an_error(tmp_path: Path) -> None:
    record = {"model": {"name": "m"}, "tasks": [{"task": "X", "status": "ok", "value": 1.0}]}
    with pytest.raises(KoembedError, match="no mteb results"):
        write_results_dir(record, tmp_path)


@pytest.mark.parametrize(
    ("model", "name", "revision"),
    [
        (
            {
                "name": "BAAI/bge-m3",
                "fingerprint": "hub:BAAI/bge-m3@5617a9f",
                "revision": "5617a9f",
            },
            "BAAI/bge-m3",
            "5617a9f",
        ),
        ({"name": "/ckpt/run-7/step-1000", "fingerprint": "sha256:ab"}, "step-1000", None),
        ({"name": "./my-model/", "row_name": "my-model"}, "my-model", None),
        ({"name": "org/custom", "row_name": "org/custom"}, "org/custom", None),
        ({"name": ["a/b", "a/b"], "revision": ["r1", "r2"]}, "a/b", "r1"),  # xdist workers
    ],
)
def test_mteb_model_name(model: dict[str, Any], name: str, revision: str | None) -> None:
    assert mteb_model_name(model) == name
    assert mteb_revision(model) == (revision or "no_revision_available")
