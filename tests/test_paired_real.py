"""Against the real thing: the shipped all-MiniLM-L6-v2 over the sample suite, a baseline saved
from one run and the same run repeated, paired example by example: within noise everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("offline")


def test_the_real_model_run_twice_is_within_noise_on_every_task(
    run_pytest, tmp_path: Path, minilm_dir: Path
) -> None:
    args = [f"--koembed-model={minilm_dir}", "--koembed-suite=sample"]
    saved = run_pytest(tmp_path, *args, "--koembed-save-baseline=base.json")
    assert saved.ret == 0, saved.stdout
    again = run_pytest(tmp_path, *args, "--koembed-baseline=base.json", "--koembed-json=run.json")
    assert again.ret == 0, again.stdout
    record = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    tasks = record["tasks"]
    # STS, pair classification, clustering, retrieval, classification, reranking
    assert len(tasks) == 6
    for task in tasks:
        assert task["verdict"] == "within noise", task
        assert task["p_value"] is not None and task["p_adjusted"] is not None
        assert abs(task["delta"]) < 0.5
        assert task["delta_ci"]["low"] <= task["delta"] <= task["delta_ci"]["high"]
    assert record["baseline"]["paired"]["tasks"] == 6
    assert record["baseline"]["paired"]["same_rows"] is True
    again.fnmatch_lines(["paired gate: Holm over 6 tasks at 95% confidence, *(same rows: yes)"])
