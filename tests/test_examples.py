"""The shipped examples work as their READMEs say."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_custom_encoder_example_runs_the_sample_suite(run_pytest, tmp_path: Path) -> None:
    repo = tmp_path / "custom_encoder"
    shutil.copytree(EXAMPLES / "custom_encoder", repo)
    result = run_pytest(
        repo,
        "--koembed-model=toy-char-ngram",
        "--koembed-suite=sample",
        "--koembed-with-tests",
        f"--koembed-json={tmp_path / 'run.json'}",
        "-v",
    )
    assert result.ret == 0, result.stdout
    record = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    # the repo's own 3 tests ran too (asked for), and the toy model scored every benchmark task
    result.fnmatch_lines(["tests/test_model.py::test_encode_shapes_and_norms PASSED*"])
    assert "7 passed" in result.stdout
    assert "koembed summary" in result.stdout
    assert [t["status"] for t in record["tasks"]] == ["ok"] * 4
    assert record["model"]["name"] == "toy-char-ngram"
    assert record["weighted_average"] is not None
