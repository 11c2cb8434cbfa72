"""The shipped examples work as their READMEs say."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# examples/custom_encoder/tests/test_model.py: the example repository's own unit tests.
OWN_TESTS = [
    "tests/test_model.py::test_encode_shapes_and_norms",
    "tests/test_model.py::test_similar_texts_are_closer",
    "tests/test_model.py::test_checkpoint_round_trip",
]


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
    assert "9 passed" in result.stdout
    assert "koembed summary" in result.stdout
    assert [t["status"] for t in record["tasks"]] == ["ok"] * 6
    assert record["model"]["name"] == "toy-char-ngram"
    assert record["model"]["loader"].startswith("custom (toy_encoder.")
    assert record["weighted_average"] is not None


def test_custom_encoder_example_keeps_its_own_tests(run_pytest, tmp_path: Path) -> None:
    """`pytest` in the example repository, plugin installed: its own tests run, and only them."""
    repo = tmp_path / "custom_encoder"
    shutil.copytree(EXAMPLES / "custom_encoder", repo)
    result = run_pytest(repo, "-v", "-rA")
    assert result.ret == 0, result.stdout
    for test in OWN_TESTS:
        assert f"PASSED {test}" in result.stdout, test
    assert f"{len(OWN_TESTS)} passed" in result.stdout
    assert "koembed summary" not in result.stdout
