"""``koembed merge`` of a run's shards gives the serial run's record; ``koembed gate`` judges a
saved record as pytest judged the run: the same verdicts, gates, summary lines and exit statuses.

The sample suite is run once serially and once in 2 and in 3 shards (the hashing encoder, so that
values are exact and the runs take seconds), all in this process.
"""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from koembed_test_encoders import HASHING_ENCODER

from pytest_koembed.cli import main
from pytest_koembed.evaluation.per_example import load_examples
from pytest_koembed.protocol.suite import load_suite

pytestmark = pytest.mark.usefixtures("offline")

SAME_FIELDS = (
    "task_counts",
    "category_averages",
    "partial_category_averages",
    "incomplete_categories",
    "weighted_average",
    "weighted_average_note",
    "intervals",
    "category_average_ci",
    "weighted_average_ci",
    "rank",
    "not_run",
    "deselected",
)
TASK_FIELDS = ("column", "status", "value", "shown", "ci", "scores", "n_examples", "sizes")


def _pytest(cwd: Path, *args: str) -> tuple[int, str]:
    """pytest with the plugin on the sample suite, in this process (as pytester runs it)."""
    from threadpoolctl import threadpool_limits

    out = io.StringIO()
    argv = ["-p", "no:cacheprovider", "-s", "--import-mode=importlib"]
    argv += ["--koembed-model=hashing", "--koembed-suite=sample", *args]
    with pytest.MonkeyPatch.context() as mp, redirect_stdout(out), threadpool_limits(1):
        mp.chdir(cwd)  # k-means on the tiny clustering task: one thread is many times faster
        mp.delenv("PYTEST_ADDOPTS", raising=False)  # the outer run's options are not the run's
        ret = pytest.main(argv)
    return int(ret), out.getvalue()


def _koembed(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        ret = main(list(argv))
    return ret, out.getvalue()


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("shards")
    (root / "conftest.py").write_text(HASHING_ENCODER, encoding="utf-8")
    ret, out = _pytest(
        root, f"--koembed-json={root / 'serial.json'}", "--koembed-fail-under=weighted=100"
    )
    shards: dict[int, list[Path]] = {}
    for count in (2, 3):
        shards[count] = []
        for index in range(1, count + 1):
            path = root / f"shard-{index}-of-{count}.json"
            shard_ret, shard_out = _pytest(
                root, f"--koembed-shard={index}/{count}", f"--koembed-json={path}"
            )
            assert shard_ret == 0, shard_out
            shards[count].append(path)
    return {"root": root, "serial_ret": ret, "serial_out": out, "shards": shards}


@pytest.mark.parametrize("count", [2, 3])
def test_merged_shards_give_the_serial_run(runs: dict[str, Any], count: int) -> None:
    root: Path = runs["root"]
    merged = root / f"merged-{count}.json"
    ret, out = _koembed("merge", *map(str, runs["shards"][count]), "-o", str(merged))
    assert ret == 0, out
    serial, record = _read(root / "serial.json"), _read(merged)
    assert record["complete"] is True and record["merged"]["missing"] == []
    assert record["merged"]["shards"] == [f"{k}/{count}" for k in range(1, count + 1)]
    for field in SAME_FIELDS:  # exactly: the same functions on the same numbers, seeded draws
        assert record[field] == serial[field], field
    assert record["weighted_average"] is not None and record["weighted_average_ci"] is not None
    for mine, theirs in zip(record["tasks"], serial["tasks"], strict=True):
        assert {k: mine[k] for k in TASK_FIELDS} == {k: theirs[k] for k in TASK_FIELDS}
    frames, serial_frames = load_examples(merged), load_examples(root / "serial.json")
    assert list(frames) == list(serial_frames)
    for column, frame in frames.items():
        pd.testing.assert_frame_equal(frame, serial_frames[column])
    n = len(load_suite("sample").tasks)
    assert f"merged {count} run records ({n} of {n} tasks of suite sample)" in out


@pytest.fixture(scope="module")
def merged(runs: dict[str, Any]) -> Path:
    path = runs["root"] / "merged.json"
    ret, out = _koembed("merge", *map(str, runs["shards"][3]), "-o", str(path))
    assert ret == 0, out
    return path


def _summary_lines(text: str) -> list[str]:
    """The summary's lines that do not depend on timing (not the task table)."""
    keep = ("category averages", "weighted average", "intervals:", "model:", "gate ", "1 of 1 ")
    return [line for line in text.splitlines() if line.startswith(keep)]


def test_the_gate_fails_above_the_score_and_passes_below(
    runs: dict[str, Any], merged: Path
) -> None:
    weighted = _read(merged)["weighted_average"]
    ret, out = _koembed("gate", str(merged), "--koembed-fail-under=weighted=100")
    assert ret == runs["serial_ret"] == pytest.ExitCode.TESTS_FAILED
    assert _summary_lines(out) == _summary_lines(runs["serial_out"])
    above, below = f"{weighted + 0.01:.2f}", f"{weighted - 0.01:.2f}"
    ret, out = _koembed("gate", str(merged), f"--koembed-fail-under=weighted={above}")
    assert ret == 1, out
    assert f"gate weighted >= {above}: FAILED, weighted average {weighted:.2f} is 0.01 short" in out
    ret, out = _koembed("gate", str(merged), f"--koembed-fail-under=weighted={below}")
    assert ret == 0, out
    assert f"gate weighted >= {below}: PASSED, weighted average {weighted:.2f}" in out


def test_a_regression_fails_the_gate_as_it_fails_the_item(
    runs: dict[str, Any], merged: Path
) -> None:
    """A baseline file 5 points above sample-retrieval: pytest fails that item (exit 1), and
    koembed gate says the same line and gives the same status; a paired baseline passes."""
    root: Path = runs["root"]
    baseline = _read(root / "serial.json")
    baseline.pop("examples")  # no per-example results: the tolerance rule
    for task in baseline["tasks"]:
        task["shown"] = round(task["shown"] + 5, 2)
    path = root / "higher.json"
    path.write_text(json.dumps(baseline), encoding="utf-8")
    ret, out = _pytest(root, "-k", "sample-retrieval", f"--koembed-baseline={path}")
    assert ret == pytest.ExitCode.TESTS_FAILED, out
    (regressed,) = [line for line in out.splitlines() if "regressed:" in line and "; " in line]
    gate_ret, gate_out = _koembed("gate", str(merged), f"--koembed-baseline={path}")
    assert gate_ret == ret
    n = len(load_suite("sample").tasks)  # every task regressed: the baseline is 5 points above
    assert regressed in gate_out.splitlines() and f"verdicts: {n} regressed" in gate_out
    # the serial run itself as a paired baseline: the same examples, nothing changed
    ret, out = _koembed("gate", str(merged), f"--koembed-baseline={root / 'serial.json'}")
    assert ret == 0, out
    assert f"paired gate: Holm over {n} tasks at 95% confidence" in out


def test_the_gate_writes_the_reports(runs: dict[str, Any], merged: Path) -> None:
    root: Path = runs["root"]
    ret, out = _koembed(
        "gate",
        str(merged),
        "--koembed-baseline=none",
        f"--koembed-model-index={root / 'index.yaml'}",
        f"--koembed-json={root / 'gated.json'}",
        "--koembed-row=-",
    )
    assert ret == 0, out
    assert f"model-index written to {root / 'index.yaml'}" in out
    assert "koembed leaderboard rows" in out and "| hashing" in out
    gated = _read(root / "gated.json")
    assert gated["weighted_average"] == _read(merged)["weighted_average"]
    assert load_examples(root / "gated.json").keys() == load_examples(merged).keys()


def _one_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_merge_refuses_mixed_models_and_duplicate_tasks(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = runs["shards"][2]
    other = _read(second)
    other["model"]["name"] = other["model"]["row_name"] = "another-model"
    (tmp_path / "other.json").write_text(json.dumps(other), encoding="utf-8")
    line = _one_error(capsys, "merge", str(first), str(tmp_path / "other.json"), "-o", "m.json")
    assert "are of different models" in line and "another-model" in line
    shutil.copy(first, tmp_path / "again.json")
    line = _one_error(capsys, "merge", str(first), str(tmp_path / "again.json"), "-o", "m.json")
    assert "is recorded twice" in line
    unfinished = _read(second) | {"complete": False, "interrupted": "interrupted"}
    (tmp_path / "unfinished.json").write_text(json.dumps(unfinished), encoding="utf-8")
    line = _one_error(capsys, "merge", str(first), str(tmp_path / "unfinished.json"), "-o", "m")
    assert "is not complete (interrupted)" in line


def test_merge_names_the_missing_tasks(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = runs["shards"][2]
    missing = _read(second)["shard"]["tasks"]
    line = _one_error(capsys, "merge", str(first), "-o", str(tmp_path / "m.json"))
    assert f"selected task(s) in no record: {', '.join(missing)} (no record of shard 2/2)" in line
    ret, out = _koembed("merge", str(first), "-o", str(tmp_path / "m.json"), "--allow-missing")
    assert ret == 0, out
    record = _read(tmp_path / "m.json")
    assert record["complete"] is False and record["not_run"] == missing
    assert record["weighted_average"] is None
    line = _one_error(capsys, "gate", str(tmp_path / "m.json"))
    assert "is not complete" in line


def test_a_shard_judges_its_items_as_the_whole_run_and_leaves_holm_to_the_gate(
    runs: dict[str, Any], merged: Path
) -> None:
    """Against a paired baseline (the serial run), a shard's items use the Bonferroni factor of
    the whole run's paired tasks (all of the suite's), not of its own; Holm waits for the
    merged record."""
    root: Path = runs["root"]
    record_path = root / "paired-shard.json"
    ret, out = _pytest(
        root,
        "--koembed-shard=1/3",
        f"--koembed-baseline={root / 'serial.json'}",
        f"--koembed-json={record_path}",
    )
    assert ret == 0, out
    record = _read(record_path)
    n = len(load_suite("sample").tasks)
    assert record["baseline"]["paired"]["shard"] == {"label": "1/3", "bonferroni_m": n}
    assert all(t["p_value"] is not None and t["p_adjusted"] is None for t in record["tasks"])
    assert f"paired gate: shard 1/3: each item at Bonferroni over the run's {n} paired tasks" in out
    assert "Holm over the run is koembed gate's, on the merged record" in out
    ret, out = _koembed("gate", str(merged), f"--koembed-baseline={root / 'serial.json'}")
    assert ret == 0 and f"paired gate: Holm over {n} tasks" in out


def test_merge_counts_the_model_loads_of_every_shard() -> None:
    """Two shards that loaded the model and a warm one that did not: 2 loads, not [1, 0]."""
    from pytest_koembed.run.merge import _model_block

    shards = [{"model": {"name": "m", "model_loads": n}} for n in (1, 1, 0)]
    assert _model_block(shards) == {"name": "m", "model_loads": 2}
    assert "model_loads" not in _model_block([{"model": {"name": "m"}}])  # a custom encoder
