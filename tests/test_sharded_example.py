"""The sharded GitHub Actions example (examples/github-actions/koembed-sharded.yml): a matrix of
shard jobs and a gate job whose commands are real options and the documented ones (docs/ci.md)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from pytest_koembed.cli import build_parser
from pytest_koembed.run.shards import parse_shard

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "examples/github-actions/koembed-sharded.yml"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    import yaml  # a dependency of pytest-koembed: missing, this fails rather than skips

    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def _step(job: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in job["steps"] if s.get("name") == name)


def _expand(text: str, shard: int) -> str:
    text = text.replace("${{ matrix.shard }}", str(shard))
    return re.sub(r"\$\{\{[^}]*\}\}", "/ws", text)


def test_every_shard_job_runs_its_part_and_uploads_its_record(
    workflow: dict[str, Any], pytester: pytest.Pytester
) -> None:
    job = workflow["jobs"]["shard"]
    shards = job["strategy"]["matrix"]["shard"]
    assert job["strategy"]["fail-fast"] is False
    for shard in shards:
        argv = shlex.split(_expand(_step(job, "Benchmark one shard")["run"], shard))
        assert argv[:3] == ["python", "-m", "pytest"]
        config = pytester.parseconfig(*argv[3:])  # an unknown option would be a usage error
        part = parse_shard(config.getoption("koembed_shard"))
        assert (part.index, part.count) == (shard, len(shards))  # the matrix covers 1..N
        record = config.getoption("koembed_json")
        assert record == f"/ws/koembed-shard-{shard}.json"
        upload = _step(job, "Upload the shard's run record")
        assert upload["uses"].startswith("actions/upload-artifact@")
        paths = _expand(upload["with"]["path"], shard).split()
        assert paths == [f"koembed-shard-{shard}.json", f"koembed-shard-{shard}.examples.parquet"]
        assert _expand(upload["with"]["name"], shard) == f"koembed-shard-{shard}"


def test_the_gate_job_merges_gates_and_publishes_the_row(workflow: dict[str, Any]) -> None:
    job = workflow["jobs"]["gate"]
    assert job["needs"] == "shard" and job["if"] == "always()"
    download = _step(job, "Download the shards' run records")
    assert download["uses"].startswith("actions/download-artifact@")
    assert download["with"]["pattern"] == "koembed-shard-*" and download["with"]["merge-multiple"]
    parser = build_parser()
    merge = parser.parse_args(shlex.split(_step(job, "Merge the shards")["run"])[1:])
    assert merge.command == "merge" and merge.output == "koembed-run.json"
    assert merge.records == [f"{download['with']['path']}/koembed-shard-*.json"]
    gate = parser.parse_args(shlex.split(_expand(_step(job, "Gate")["run"], 0))[1:])
    assert gate.command == "gate" and gate.record == merge.output
    assert gate.koembed_fail_under == ["weighted=60"]
    assert gate.koembed_baseline == "/ws/baseline/koembed-baseline.json"  # the target branch's
    publish = _step(job, "Publish the leaderboard row")["run"]
    assert publish.split(">>")[0].split() == ["cat", gate.koembed_row]
    assert "$GITHUB_STEP_SUMMARY" in publish


def test_its_commands_are_the_documented_ones(workflow: dict[str, Any]) -> None:
    readme = ROOT.joinpath("docs", "ci.md").read_text(encoding="utf-8")
    section = readme.split("## Sharded runs", 1)[1].split("\n## ", 1)[0]
    job = workflow["jobs"]["gate"]
    for name in ("Merge the shards", "Gate"):
        command = " ".join(_step(job, name)["run"].split())
        assert command in section, command
    shard = " ".join(_step(workflow["jobs"]["shard"], "Benchmark one shard")["run"].split())
    assert "--koembed-shard=${{ matrix.shard }}/4" in shard
    assert "examples/github-actions/koembed-sharded.yml" in section


def test_the_shards_split_by_the_last_main_runs_seconds(
    workflow: dict[str, Any], pytester: pytest.Pytester
) -> None:
    """A push's gate job keeps its merged record in the cache; every shard job restores the same
    one and hands it to --koembed-shard-costs, only when it is there (a missing file is bad
    input)."""
    gate, shard = workflow["jobs"]["gate"], workflow["jobs"]["shard"]
    assert _step(gate, "Keep the task seconds for the next split")["run"].split() == [
        "cp",
        "koembed-run.json",
        "koembed-costs.json",
    ]
    save = _step(gate, "Save the task seconds")
    assert save["uses"].startswith("actions/cache/save@")
    restore = _step(shard, "Restore the last main run's task seconds")
    assert restore["uses"].startswith("actions/cache/restore@")
    assert restore["with"]["path"] == save["with"]["path"] == "koembed-costs.json"
    prefix = restore["with"]["restore-keys"]
    assert save["with"]["key"].startswith(prefix) and restore["with"]["key"].startswith(prefix)
    steps = [s.get("name") for s in shard["steps"]]
    use = _step(shard, "Split by the measured seconds")
    assert steps.index(use["name"]) < steps.index("Benchmark one shard")
    assert use["if"] == "hashFiles('koembed-costs.json') != ''"
    command = _expand(use["run"], 1)
    assert command.endswith('>> "$GITHUB_ENV"')
    addopts = shlex.split(command.split(">>")[0])[1].split("=", 1)
    assert addopts[0] == "PYTEST_ADDOPTS"
    argv = shlex.split(_expand(_step(shard, "Benchmark one shard")["run"], 1))
    config = pytester.parseconfig(*argv[3:], addopts[1])
    assert config.getoption("koembed_shard_costs") == "/ws/koembed-costs.json"
