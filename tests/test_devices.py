"""--koembed-devices: one task's large encode calls spread over several processes (two CPU
processes here), with exactly the values of one process; bad combinations are usage errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from koembed_test_encoders import HASHING_ENCODER

from pytest_koembed.errors import KoembedError
from pytest_koembed.models.devices import parse_devices, resolve_devices

pytestmark = pytest.mark.usefixtures("offline")

SAMPLE = ["--koembed-model=m", "--koembed-suite=sample"]


# ---------------------------------------------------------------------------------------------
# the same values as one process


@pytest.fixture(scope="module")
def retrieval_runs(
    run_pytest: Any, minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The sample retrieval task in one process, then with two CPU processes for the calls of 30
    texts or more: its 81 documents go to them (in batches of 8, so both get several), its 26
    queries stay in the pytest process."""
    workdir = tmp_path_factory.mktemp("devices")
    common = [
        f"--koembed-model={minilm_dir}",
        "--koembed-suite=sample",
        "-k",
        "sample-retrieval",
        "--koembed-batch-size=8",
        "--koembed-baseline=none",
    ]
    single = run_pytest(workdir, *common, f"--koembed-json={workdir / 'single.json'}")
    pooled = run_pytest(
        workdir,
        *common,
        f"--koembed-json={workdir / 'pooled.json'}",
        "--koembed-devices=cpu,cpu",
        "--koembed-devices-min-texts=30",
        "--log-cli-level=INFO",
    )
    records = {
        name: json.loads((workdir / f"{name}.json").read_text(encoding="utf-8"))
        for name in ("single", "pooled")
        if (workdir / f"{name}.json").is_file()
    }
    return {"single": single, "pooled": pooled, "records": records}


def test_two_cpu_processes_give_the_single_process_values(retrieval_runs: dict[str, Any]) -> None:
    single, pooled = retrieval_runs["single"], retrieval_runs["pooled"]
    assert single.ret == 0, single.stdout
    assert pooled.ret == 0, pooled.stdout
    # the pool encoded the documents, not the queries, and was stopped at the end of the run
    pooled.fnmatch_lines(
        [
            "*started 2 encode processes on cpu,cpu (pids * *) in * s*",
            "*stopped 2 encode processes on cpu,cpu*",
        ]
    )
    assert re.findall(r"encoded (\d+) texts on cpu,cpu in", pooled.stdout) == ["81"]
    pids = re.search(r"\(pids (\d+) (\d+)\)", pooled.stdout)
    assert pids is not None
    for pid in pids.groups():  # none outlived the run
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)
    one = retrieval_runs["records"]["single"]["tasks"][0]
    two = retrieval_runs["records"]["pooled"]["tasks"][0]
    assert one["column"] == two["column"] == "sample-retrieval"
    assert two["value"] == one["value"]  # exactly: every text in the same batch as before
    assert two["scores"] == one["scores"]
    assert two["texts"] == one["texts"]


def test_the_run_record_and_summary_name_the_devices(retrieval_runs: dict[str, Any]) -> None:
    model = retrieval_runs["records"]["pooled"]["model"]
    assert (model["device"], model["devices"], model["devices_min_texts"]) == ("cpu", "cpu,cpu", 30)
    assert retrieval_runs["records"]["single"]["model"]["devices"] is None
    retrieval_runs["pooled"].fnmatch_lines(
        ["model: all-MiniLM-L6-v2 (*device cpu, devices cpu,cpu*"]
    )


# ---------------------------------------------------------------------------------------------
# the pool's processes: started for large calls only, stopped with the encoder or the run


def test_pool_starts_for_large_calls_only_and_stops_on_close(minilm_dir: Path) -> None:
    from pytest_koembed.models.encoders import EncoderOptions
    from pytest_koembed.models.loading import load_encoder

    encoder = load_encoder(
        EncoderOptions(model=str(minilm_dir), devices="cpu:2", devices_min_texts=16, batch_size=4)
    )
    texts = [f"{i}번 문서: " + "서울의 오래된 골목길 " * (1 + i % 7) for i in range(16)]
    try:
        encoder.encode(texts[:15], prompt="query: ")
        assert encoder._pool is None  # 15 texts: not worth the processes
        pooled = encoder.encode(texts, prompt="query: ")
        pool = encoder._pool
        assert pool is not None and encoder.pool_texts == 16
        pids = [process.pid for process in pool["processes"]]
        encoder.devices_min_texts = 17  # the same call in this process, the pool standing by
        single = encoder.encode(texts, prompt="query: ")
        assert encoder.pool_texts == 16
    finally:
        encoder.close()
    assert np.array_equal(pooled, single)
    assert encoder._pool is None
    encoder.close()  # twice is harmless
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# A pool process's setup (what unpickling PoolProcessSetup runs in it), in a child of a parent
# that is then killed: the child ignores Ctrl-C and exits once its parent is gone.
ORPHAN_SCRIPT = """
import multiprocessing as mp
import sys
import time

from pytest_koembed.models.devices import PoolProcessSetup


def child(setup, ready):
    open(ready, "w").close()  # its arguments, the setup with them, are unpickled by now
    time.sleep(120)


if __name__ == "__main__":
    setup = PoolProcessSetup(None)
    process = mp.get_context("spawn").Process(target=child, args=(setup, sys.argv[1]))
    process.start()
    print(process.pid, flush=True)
    time.sleep(120)
"""


def test_a_pool_process_ignores_ctrl_c_and_dies_with_its_parent(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(ORPHAN_SCRIPT), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    ready = tmp_path / "ready"
    parent = subprocess.Popen(
        [sys.executable, str(script), str(ready)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), "the child never started"
        os.kill(pid, signal.SIGINT)
        time.sleep(0.5)
        os.kill(pid, 0)  # still there: Ctrl-C is the pytest process's to handle
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    pytest.fail(f"pool process {pid} outlived its parent")


# ---------------------------------------------------------------------------------------------
# usage errors, before anything runs


def _usage_error(result: pytest.RunResult, pattern: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    errors = [line for line in result.errlines if line.strip()]
    assert len(errors) == 1, errors  # one line, no traceback, nothing per item
    pytest.LineMatcher(errors).fnmatch_lines([pattern])


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("gpu:0,gpu:1", "ERROR: --koembed-devices 'gpu:0,gpu:1': 'gpu:0' is not one of cpu, "
         "cpu:N (N CPU processes), cuda (every visible GPU) or cuda:N"),
        ("cpu,", "ERROR: --koembed-devices 'cpu,': give a comma-separated list of *"),
        ("cpu", "ERROR: --koembed-devices 'cpu' is 1 process; list two devices or more, or use "
         "--koembed-device for one"),
        ("cpu,cuda:0", "ERROR: --koembed-devices 'cpu,cuda:0' mixes CPU and GPU processes*"),
    ],
)  # fmt: skip
def test_bad_devices_are_one_usage_error(
    pytester: pytest.Pytester, value: str, pattern: str
) -> None:
    _usage_error(pytester.runpytest(*SAMPLE, f"--koembed-devices={value}"), pattern)


def test_gpus_on_a_cpu_only_torch_are_a_usage_error(pytester: pytest.Pytester) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")  # the check is for machines without it
    result = pytester.runpytest(*SAMPLE, "--koembed-devices=cuda:0,cuda:1")
    _usage_error(
        result,
        "ERROR: --koembed-devices 'cuda:0,cuda:1': CUDA is not available (torch * is a CPU-only "
        "build); on this machine only cpu:N works",
    )


def test_devices_under_xdist_are_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*SAMPLE, "--koembed-devices=cpu:2", "-n", "2")
    _usage_error(result, "ERROR: --koembed-devices cannot be combined with -n/--dist: *")


def test_a_transformers_only_model_is_a_usage_error(
    pytester: pytest.Pytester, tiny_bert_dir: Path
) -> None:
    result = pytester.runpytest(
        f"--koembed-model={tiny_bert_dir}", "--koembed-suite=sample", "--koembed-devices=cpu:2"
    )
    _usage_error(
        result,
        "ERROR: --koembed-devices: model '*' has no sentence-transformers modules.json and loads "
        "with transformers, which has no multi-process pool here; *",
    )


def test_a_custom_encoder_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HASHING_ENCODER)
    result = pytester.runpytest(*SAMPLE, "--koembed-devices=cpu:2")
    _usage_error(
        result,
        "ERROR: --koembed-devices: the koembed_encoder fixture is overridden (conftest.py:*); *",
    )
    assert "passed" not in result.stdout.str()


def test_cuda_lists_are_checked_against_the_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert resolve_devices("cuda") == ["cuda:0", "cuda:1"]
    assert resolve_devices(" cuda:1 , cuda:0") == ["cuda:1", "cuda:0"]
    with pytest.raises(KoembedError, match=r"cuda:2 does not exist, only 2 GPU\(s\) are visible"):
        resolve_devices("cuda:0,cuda:2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(KoembedError, match="is 1 process; list two devices or more"):
        resolve_devices("cuda")
    assert parse_devices("cpu:3") == ["cpu", "cpu", "cpu"]
    assert parse_devices("CPU,cpu") == ["cpu", "cpu"]
