"""A crashed worker or a killed run loses no finished result."""

from __future__ import annotations

import json
from pathlib import Path

from koembed_test_encoders import HASHING_ENCODER

CRASHING_ENCODER = """
import os
import zlib

import numpy as np
import pytest


class CrashesOnQueries:
    def encode(self, texts):
        out = np.zeros((len(texts), 64), dtype="float32")
        for i, text in enumerate(texts):
            for gram in (text[j : j + 2] for j in range(max(1, len(text) - 1))):
                out[i, zlib.crc32(gram.encode()) % 64] += 1.0
        return out + 1e-3

    def encode_query(self, texts):
        os._exit(17)  # the process dies mid-task, as an OOM kill would


@pytest.fixture(scope="session")
def koembed_encoder():
    return CrashesOnQueries()
"""


def test_worker_crash_keeps_the_other_results(run_pytest, tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CRASHING_ENCODER, encoding="utf-8")
    record_path = tmp_path / "run.json"
    result = run_pytest(
        tmp_path,
        "--koembed-model=crashy",
        "--koembed-suite=sample",
        f"--koembed-json={record_path}",
        "-n",
        "2",
        "-m",
        "not classification and not reranking",  # reranking encodes queries too: one crash
    )
    assert result.ret == 1, result.stdout
    record = json.loads(record_path.read_text(encoding="utf-8"))
    status = {t["column"]: t["status"] for t in record["tasks"]}
    assert status == {
        "sample-sts": "ok",
        "sample-pairs": "ok",
        "sample-clustering": "ok",
        "sample-retrieval": "error",
    }
    crashed = record["tasks"][-1]
    assert "crashed" in crashed["error"]
    assert record["category_averages"]["Retrieval"] is None
    assert record["weighted_average"] is None
    result.fnmatch_lines(["sample-retrieval*ERROR*", "*sample-retrieval: *crashed*"])


HANGING_ENCODER = """
import json
import time
import zlib
from pathlib import Path

import numpy as np
import pytest


class HangsAfterTwoTasks:
    def encode(self, texts):
        record = Path("run.json")
        if record.exists() and len(json.loads(record.read_text())["tasks"]) >= 2:
            time.sleep(300)  # stuck in the third task until the test kills the run
        out = np.zeros((len(texts), 64), dtype="float32")
        for i, text in enumerate(texts):
            for gram in (text[j : j + 2] for j in range(max(1, len(text) - 1))):
                out[i, zlib.crc32(gram.encode()) % 64] += 1.0
        return out + 1e-3


@pytest.fixture(scope="session")
def koembed_encoder():
    return HangsAfterTwoTasks()
"""


def test_killed_run_keeps_finished_tasks_in_the_record(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "conftest.py").write_text(HANGING_ENCODER, encoding="utf-8")
    record_path = tmp_path / "run.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--koembed-model=hangs",
            "--koembed-suite=sample",
            f"--koembed-json={record_path}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        tasks: list = []
        while time.monotonic() < deadline and len(tasks) < 2:
            time.sleep(0.5)
            if record_path.exists():
                tasks = json.loads(record_path.read_text(encoding="utf-8"))["tasks"]
        assert len(tasks) == 2, "the two tasks before clustering never reached the record"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    record = json.loads(record_path.read_text(encoding="utf-8"))
    assert record["complete"] is False
    assert [(t["column"], t["status"]) for t in record["tasks"]] == [
        ("sample-sts", "ok"),
        ("sample-pairs", "ok"),
    ]
    assert all(t["value"] is not None for t in record["tasks"])


def test_ctrl_c_records_an_incomplete_run_and_leaves_gates_unchecked(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "conftest.py").write_text(HANGING_ENCODER, encoding="utf-8")
    record_path = tmp_path / "run.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--koembed-model=hangs",
            "--koembed-suite=sample",
            f"--koembed-json={record_path}",
            "--koembed-fail-under=sts=0",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        tasks: list = []
        while time.monotonic() < deadline and len(tasks) < 2:
            time.sleep(0.5)
            if record_path.exists():
                tasks = json.loads(record_path.read_text(encoding="utf-8"))["tasks"]
        assert len(tasks) == 2, "the two tasks before clustering never reached the record"
        time.sleep(1.0)  # into the third task's sleep
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, out  # pytest's "interrupted"
    record = json.loads(record_path.read_text(encoding="utf-8"))
    assert record["complete"] is False
    assert record["interrupted"].startswith("interrupted (KeyboardInterrupt"), record["interrupted"]
    assert [t["column"] for t in record["tasks"]] == ["sample-sts", "sample-pairs"]
    assert record["not_run"] == [
        "sample-clustering",
        "sample-retrieval",
        "sample-classification",
        "sample-reranking",
    ]
    assert record["task_counts"]["not_run"] == 4
    assert [(g["name"], g["status"]) for g in record["gates"]] == [("STS", "not checked")]
    assert "the run did not finish: interrupted (KeyboardInterrupt" in out
    assert "gate STS >= 0.00: NOT CHECKED" in out


INTERNAL_ERROR_CONFTEST = (
    HASHING_ENCODER
    + """


def pytest_runtest_logfinish(nodeid, location):
    if nodeid.endswith("sample-sts"):
        raise RuntimeError("a plugin broke")
"""
)


def test_internal_error_records_an_incomplete_run(pytester, tmp_path: Path) -> None:
    pytester.makeconftest(INTERNAL_ERROR_CONFTEST)
    record_path = tmp_path / "run.json"
    result = pytester.runpytest(
        "--koembed-model=m", "--koembed-suite=sample", f"--koembed-json={record_path}"
    )
    assert result.ret == 3, result.stdout.str()  # pytest's "internal error"
    record = json.loads(record_path.read_text(encoding="utf-8"))
    assert record["complete"] is False
    assert record["interrupted"] == "internal error (RuntimeError: a plugin broke)"
    assert record["not_run"] == [
        "sample-pairs",
        "sample-clustering",
        "sample-retrieval",
        "sample-classification",
        "sample-reranking",
    ]
