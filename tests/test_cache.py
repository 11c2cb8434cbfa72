"""The embedding cache across runs (``--koembed-cache``): keys, warm runs, concurrency, faults."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from koembed_test_encoders import HASHING_CLASS

from pytest_koembed.cli import main as koembed
from pytest_koembed.models.cache import (
    FORMAT_DIR,
    MAGIC,
    DiskStore,
    LayeredStore,
    model_fields,
    scan_cache,
)
from pytest_koembed.models.store import MemoryStore, StoreKey

pytestmark = pytest.mark.usefixtures("offline")

# The hashing encoder, declaring a fingerprint so that it may be cached, and logging every text
# it is handed (one JSON line per text, with the process id) to encoded.log beside it.
FINGERPRINTED = (
    HASHING_CLASS
    + """
import json
import os
from pathlib import Path

LOG = Path(__file__).with_name("encoded.log")


class Logged(Hashing):
    koembed_fingerprint = "hashing-bigrams-64-v1"

    def encode(self, texts):
        with LOG.open("a", encoding="utf-8") as log:
            log.write("".join(json.dumps([os.getpid(), t], ensure_ascii=False) + "\\n"
                              for t in texts))
        return super().encode(texts)


@pytest.fixture(scope="session")
def koembed_encoder():
    return Logged()
"""
)


# The sample suite without its clustering task (k-means is most of a run's time here).
SAMPLE = ["--koembed-model=hashing", "--koembed-suite=sample", "-k", "not clustering"]


def _project(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "conftest.py").write_text(FINGERPRINTED, encoding="utf-8")
    return path


def _run(run_pytest: Any, cwd: Path, name: str, cache: Path | None, *extra: str) -> dict[str, Any]:
    """A sample-suite run with the hashing encoder; its record, log lines and output."""
    (cwd / "encoded.log").unlink(missing_ok=True)
    result = run_pytest(
        cwd, *SAMPLE, f"--koembed-json={name}.json",
        *([f"--koembed-cache={cache}"] if cache is not None else []), *extra,
    )  # fmt: skip
    assert result.ret == 0, result.stdout
    log = cwd / "encoded.log"
    return {
        "record": json.loads((cwd / f"{name}.json").read_text(encoding="utf-8")),
        "encoded": log.read_text(encoding="utf-8").splitlines() if log.exists() else [],
        "out": result.stdout,
    }


def _values(record: dict[str, Any]) -> dict[str, Any]:
    return {t["column"]: (t["value"], t["scores"]) for t in record["tasks"]}


def _texts(record: dict[str, Any], field: str) -> int:
    return sum(t["texts"][field] for t in record["tasks"])


def _shards(cache: Path) -> list[Path]:
    return sorted(cache.glob(f"{FORMAT_DIR}/*/*.shard"))


@pytest.fixture(scope="module")
def cold(run_pytest: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One cold run into an empty cache: copy ``cache`` before changing it."""
    cwd = _project(tmp_path_factory.mktemp("cold"))
    run = _run(run_pytest, cwd, "cold", cwd / "cache")
    run["cache"] = cwd / "cache"
    return run


def test_a_cold_run_stores_each_distinct_text_and_counts_nothing_from_disk(cold) -> None:
    record = cold["record"]
    assert _texts(record, "encoded") == len(cold["encoded"]) > 0
    assert _texts(record, "from_disk") == 0
    assert all(t["texts"]["total"] == t["texts"]["encoded"] + t["texts"]["from_cache"]
               for t in record["tasks"])  # fmt: skip
    assert _shards(cold["cache"]) and (cold["cache"] / "CACHEDIR.TAG").is_file()
    assert "; 0 read from the embedding cache" in cold["out"]


def test_two_processes_write_one_cache_then_a_warm_run_reads_it(
    run_pytest: Any, tmp_path: Path
) -> None:
    """Two pytest processes started together on one empty cache, then a warm run."""
    cache = tmp_path / "shared-cache"
    procs = []
    for name in ("a", "b"):
        cwd = _project(tmp_path / name)
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        env.pop("PYTEST_XDIST_WORKER", None)
        env.pop("PYTEST_XDIST_WORKER_COUNT", None)
        env.pop("PYTEST_ADDOPTS", None)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-p",
                    "no:cacheprovider",
                    *SAMPLE,
                    f"--koembed-cache={cache}",
                    f"--koembed-json={name}.json",
                ],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert not any("EmbeddingCacheWarning" in out for out in outs), outs
    records = [json.loads((tmp_path / n / f"{n}.json").read_text(encoding="utf-8")) for n in "ab"]
    assert _values(records[0]) == _values(records[1])
    (model,) = scan_cache(cache)
    assert model.bad_shards == 0 and model.temp_files == 0
    assert model.entries == _texts(records[0], "distinct")  # each text at least once
    # a warm run under xdist: every row read back, checked, and the values unchanged
    warm = _run(run_pytest, _project(tmp_path / "c"), "c", cache, "-n", "2")
    record = warm["record"]
    assert warm["encoded"] == [] and _texts(record, "encoded") == 0
    # each worker reads a distinct text from disk once; the rest comes from its memory store
    assert 0 < _texts(record, "from_disk") <= _texts(record, "distinct")
    assert _texts(record, "from_cache") == _texts(record, "total")
    assert {t["worker"] for t in record["tasks"]} == {"gw0", "gw1"}
    assert _values(record) == _values(records[0])
    assert "EmbeddingCacheWarning" not in warm["out"]
    assert "texts: 0 encoded of " in warm["out"]


def test_a_corrupt_entry_is_one_warning_and_is_encoded_again(
    run_pytest: Any, cold: dict[str, Any], tmp_path: Path
) -> None:
    cwd = _project(tmp_path / "corrupt")
    cache = cwd / "cache"
    shutil.copytree(cold["cache"], cache)
    shard = _shards(cache)[0]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x40  # a bit of the last row's float
    shard.write_bytes(bytes(data))
    run = _run(run_pytest, cwd, "again", cache)
    assert run["out"].count("EmbeddingCacheWarning") == 1, run["out"]
    assert "fail their checksum; ignored, its texts are encoded again" in run["out"]
    assert shard.name in run["out"]
    assert 0 < len(run["encoded"]) < len(cold["encoded"])  # that shard's texts only
    assert _values(run["record"]) == _values(cold["record"])
    assert not shard.exists()  # removed; what was encoded again was stored anew
    (model,) = scan_cache(cache)
    assert model.bad_shards == 0 and model.entries == len(cold["encoded"])


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """``path`` read-only, also for root (who ignores modes): the immutable attribute."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)
        return
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a directory read-only as root here: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_cache_is_one_warning_and_the_run_passes(
    run_pytest: Any, cold: dict[str, Any], tmp_path: Path
) -> None:
    cwd = _project(tmp_path / "ro")
    cache = cwd / "cache"
    cache.mkdir()
    # named by the ini file this time: relative to it
    (cwd / "pytest.ini").write_text("[pytest]\nkoembed_cache = cache\n", encoding="utf-8")
    with _read_only(cache):
        run = _run(run_pytest, cwd, "ro", None)
    assert run["out"].count("EmbeddingCacheWarning") == 1, run["out"]
    assert f"embedding cache {cache}: cannot write (" in run["out"]
    assert "the run goes on without storing new embeddings" in run["out"]
    assert len(run["encoded"]) == len(cold["encoded"])
    assert _values(run["record"]) == _values(cold["record"])
    assert list(cache.iterdir()) == []


def test_cache_info_and_clear(
    cold: dict[str, Any], tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(cold["cache"], cache)
    entries = _texts(cold["record"], "distinct")
    assert koembed(["cache", "info", "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"1 model key(s), {entries} entries" in out
    assert "hashing" in out and "hashing-bigrams-64-v1" in out
    assert koembed(["cache", "info", "--cache", str(cache), "--model", "other"]) == 4
    assert "no embeddings of model 'other' (cached models: hashing)" in capsys.readouterr().err
    (cache.parent / "pytest.ini").write_text("[pytest]\nkoembed_cache = cache\n")
    monkeypatch.chdir(cache.parent)  # the ini file's koembed_cache is the default
    assert koembed(["cache", "clear", "--model", "hashing"]) == 0
    assert f"removed 1 model key(s), {entries} entries" in capsys.readouterr().out
    assert _shards(cache) == []
    assert koembed(["cache", "info", "--cache", str(cache)]) == 0
    assert "0 model key(s), 0 entries" in capsys.readouterr().out


def test_a_cache_path_that_is_a_file_is_a_usage_error_unless_no_cache(
    run_pytest: Any, tmp_path: Path
) -> None:
    cwd = _project(tmp_path)
    (cwd / "afile").write_text("x")
    args = ["--koembed-model=hashing", "--koembed-suite=sample", "--koembed-cache=afile"]
    result = run_pytest(cwd, *args, "--collect-only")
    assert result.ret == 4
    assert f"--koembed-cache {cwd / 'afile'}: exists and is not a directory" in result.stdout
    assert run_pytest(cwd, *args, "--koembed-no-cache", "--collect-only").ret == 0


def test_a_warm_run_with_the_real_model_encodes_nothing_and_gives_identical_values(
    run_pytest: Any, minilm_dir: Path, tmp_path: Path
) -> None:
    """all-MiniLM-L6-v2's rows depend on their batch in the last bits: a warm run still gives
    exactly the cold run's values, since it reads the very rows the cold run used."""
    args = [f"--koembed-model={minilm_dir}", "--koembed-suite=sample", "-k", "sts",
            f"--koembed-cache={tmp_path / 'cache'}"]  # fmt: skip
    cold = run_pytest(tmp_path, *args, "--koembed-json=cold.json")
    warm = run_pytest(tmp_path, *args, "--koembed-json=warm.json")
    assert cold.ret == 0 and warm.ret == 0, cold.stdout + warm.stdout
    first, again = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("cold", "warm"))
    assert [t["column"] for t in again["tasks"]] == ["sample-sts"]
    assert _texts(first, "encoded") == _texts(first, "distinct") > 0
    assert _texts(again, "encoded") == 0
    assert _texts(again, "from_disk") == _texts(first, "encoded")
    assert _values(again) == _values(first)
    assert [t["texts_encoded"] for t in again["tasks"]] == [0]
    assert f"texts: 0 encoded of {_texts(first, 'total')} (100% reused); " in warm.stdout


# ---------------------------------------------------------------------------------------------
# keys: the store itself, with a real (tiny) model


def _rows(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


KEYS = [StoreKey("encode", None, f"문장 {i}") for i in range(5)]


def test_a_changed_prompt_max_length_or_dtype_misses(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from pytest_koembed.models.encoders import EncoderOptions
    from pytest_koembed.models.loading import load_encoder
    from pytest_koembed.plugin import _encoder_info

    def store(**options: Any) -> DiskStore:
        encoder = load_encoder(EncoderOptions(model=str(tiny_bert_dir), device="cpu", **options))
        fields = model_fields(encoder, _encoder_info(encoder, str(tiny_bert_dir)))
        assert fields is not None
        return DiskStore(tmp_path, fields)

    texts = [key.text for key in KEYS]
    base = store(max_length=32)
    encoder = load_encoder(EncoderOptions(model=str(tiny_bert_dir), max_length=32))
    rows = encoder.encode(texts)
    base.put_many(KEYS, rows)
    again = store(max_length=32)  # a new process, the same model and settings
    got = again.get_many(KEYS)
    assert all(np.array_equal(g, r) for g, r in zip(got, rows, strict=True))
    assert again.reads == len(KEYS)
    assert store(max_length=16).get_many(KEYS) == [None] * 5
    assert store(max_length=32, dtype="bf16").get_many(KEYS) == [None] * 5
    prompted = [StoreKey("encode", "질의: ", t) for t in texts]
    assert again.get_many(prompted) == [None] * 5
    assert again.get_many([StoreKey("encode_query", None, texts[0])]) == [None]


def test_a_custom_encoder_is_cached_only_with_a_declared_fingerprint() -> None:
    class Plain:
        def encode(self, texts: list[str]) -> np.ndarray:
            return _rows(len(texts))

    class Declared(Plain):
        koembed_fingerprint = "my-encoder-v3"

    info = {"name": "x", "dtype": "fp32", "device": "cuda:1"}
    assert model_fields(Plain(), info) is None
    fields = model_fields(Declared(), info)
    assert fields is not None and fields["fingerprint"] == "my-encoder-v3"
    assert fields["device"] == "cuda"


def test_layered_store_reads_disk_once_then_memory(tmp_path: Path) -> None:
    rows = _rows(5)
    DiskStore(tmp_path, {"k": 1}).put_many(KEYS, rows)
    layered = LayeredStore(MemoryStore(), DiskStore(tmp_path, {"k": 1}))
    first = layered.get_many([KEYS[0], KEYS[1], KEYS[0]])
    assert np.array_equal(first[0], rows[0]) and np.array_equal(first[2], rows[0])
    assert layered.disk_reads == 2
    layered.get_many(KEYS[:2])
    assert layered.disk_reads == 2  # served from memory now


# ---------------------------------------------------------------------------------------------
# faults: a killed writer, a truncated shard


WRITER = """
import sys
import numpy as np
from pathlib import Path
from pytest_koembed.models.cache import DiskStore
from pytest_koembed.models.store import StoreKey

store = DiskStore(Path(sys.argv[1]), {"k": 1})
batch = 0
while True:  # shards of 2,000 rows, until killed
    keys = [StoreKey("encode", None, f"{batch}-{i}") for i in range(2000)]
    rows = np.stack([np.full(256, batch * 2000 + i, dtype=np.float32) for i in range(2000)])
    store.put_many(keys, rows)
    if batch == 0:
        print("written", flush=True)
    batch += 1
"""


def test_a_writer_killed_mid_write_leaves_no_wrong_entry(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(cache)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "written\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # simulate the kill landing in the middle of a write as well: a temp file cut short
    model_dir = next((cache / FORMAT_DIR).iterdir())
    (model_dir / ".tmp-00000000000000000000-1-deadbeef.shard").write_bytes(MAGIC + b"\0" * 100)
    said: list[str] = []
    store = DiskStore(cache, {"k": 1}, warn=said.append)
    for batch in range(100):
        keys = [StoreKey("encode", None, f"{batch}-{i}") for i in range(2000)]
        got = store.get_many(keys)
        if got[0] is None:
            break
        for i, row in enumerate(got):  # every row found is the row written for its key
            assert row is not None and np.all(row == batch * 2000 + i)
    assert batch >= 1 and said == []


def test_a_truncated_shard_is_one_warning_and_ignored(tmp_path: Path) -> None:
    DiskStore(tmp_path, {"k": 1}).put_many(KEYS, _rows(5))
    (shard,) = _shards(tmp_path)
    shard.write_bytes(shard.read_bytes()[:-10])
    said: list[str] = []
    store = DiskStore(tmp_path, {"k": 1}, warn=said.append)
    assert store.get_many(KEYS) == [None] * 5
    assert store.get_many(KEYS) == [None] * 5
    assert len(said) == 1 and "truncated" in said[0] and str(shard) in said[0]
    assert not shard.exists()
