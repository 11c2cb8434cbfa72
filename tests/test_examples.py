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
        f"--koembed-json={tmp_path / 'run.json'}",
    )
    assert result.ret == 0, result.stdout
    record = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    # the repo's own tests ran too, and every benchmark task was scored by the toy model
    assert "koembed summary" in result.stdout
    assert [t["status"] for t in record["tasks"]] == ["ok"] * 4
    assert record["model"]["name"] == "toy-char-ngram"
    assert record["weighted_average"] is not None
