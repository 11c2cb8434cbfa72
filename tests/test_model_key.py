"""The model key from what is on disk: a warm run never loads the model (``models.resolved``).

A cold run with ``--koembed-cache`` remembers what loading resolved (pooling, max length, EOS,
dimension ...) under a key of the files' hashes and the settings; a warm run takes it from there
and loads the weights only when a text misses the cache. The key must be the one a loaded model
gives, for every loader, and anything that changes vectors (a weight file, a tokenizer file, a
setting) must miss.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_koembed.cli import main as koembed
from pytest_koembed.errors import KoembedError
from pytest_koembed.models import fingerprint
from pytest_koembed.models.cache import model_fields
from pytest_koembed.models.encoders import EncoderOptions
from pytest_koembed.models.fingerprint import MEMO_DIR
from pytest_koembed.models.loading import load_encoder
from pytest_koembed.plugin import _encoder_info

pytestmark = pytest.mark.usefixtures("offline")

TEXTS = ["한국어 문장 임베딩", "검색 질의입니다.", "오늘 서울은 맑습니다."]


def _key(encoder: Any, model: str) -> dict[str, Any] | None:
    return model_fields(encoder, _encoder_info(encoder, model))


def _as_array(vectors: Any) -> np.ndarray:
    return vectors.to_dense().numpy() if hasattr(vectors, "to_dense") else np.asarray(vectors)


@pytest.fixture(
    params=["sentence-transformers", "transformers", "last-token decoder", "sparse"],
)
def model_dir(request: pytest.FixtureRequest) -> Path:
    fixture = {
        "sentence-transformers": "minilm_dir",
        "transformers": "tiny_bert_dir",
        "last-token decoder": "tiny_qwen3_dir",
        "sparse": "splade_dir",
    }[request.param]
    return Path(request.getfixturevalue(fixture))


def test_a_remembered_load_gives_the_loaded_key_and_loads_at_the_first_miss(
    model_dir: Path, tmp_path: Path
) -> None:
    options = EncoderOptions(model=str(model_dir), device="cpu", max_length=64)
    loaded = load_encoder(options)  # no cache: what a loaded model gives
    cold = load_encoder(options, cache_dir=tmp_path)
    warm = load_encoder(options, cache_dir=tmp_path)
    assert loaded.model_loaded and cold.model_loaded
    assert not warm.model_loaded
    assert _key(warm, str(model_dir)) == _key(cold, str(model_dir)) == _key(loaded, str(model_dir))
    assert _encoder_info(warm, "m") == _encoder_info(loaded, "m")
    assert type(warm) is type(loaded)
    expected = _as_array(loaded.encode(TEXTS))
    assert np.array_equal(_as_array(warm.encode(TEXTS)), expected)
    assert warm.model_loaded  # the first text the cache lacked loaded it
    assert (tmp_path / MEMO_DIR / "resolved").is_dir()


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _rewrite_in_place(path: Path, change: Any) -> None:
    """Change a file's bytes keeping its size, inode and mtime (as a careless tool may)."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    change(data)
    with path.open("r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_ino, after.st_mtime_ns) == (
        before.st_size,
        before.st_ino,
        before.st_mtime_ns,
    )


def _flip_last_weight_byte(data: bytearray) -> None:
    data[-1] ^= 0x01  # the last byte of the last tensor: a valid file, other weights


def test_a_changed_weight_file_tokenizer_file_or_setting_misses(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    model = _copy(tiny_bert_dir, tmp_path / "model")
    cache = tmp_path / "cache"
    options = EncoderOptions(model=str(model), device="cpu", max_length=64)
    first = load_encoder(options, cache_dir=cache)
    assert not load_encoder(options, cache_dir=cache).model_loaded  # warm: nothing loads

    _rewrite_in_place(model / "model.safetensors", _flip_last_weight_byte)
    fingerprint._HASH_CACHE.clear()  # a new process
    weights = load_encoder(options, cache_dir=cache)
    assert weights.model_loaded and weights.info.fingerprint != first.info.fingerprint
    assert _key(weights, str(model)) != _key(first, str(model))

    config = model / "tokenizer_config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    data["do_lower_case"] = not data.get("do_lower_case", True)
    config.write_text(json.dumps(data), encoding="utf-8")
    tokenizer = load_encoder(options, cache_dir=cache)
    assert tokenizer.model_loaded
    assert tokenizer.info.fingerprint not in (first.info.fingerprint, weights.info.fingerprint)

    shorter = load_encoder(
        EncoderOptions(model=str(model), device="cpu", max_length=32), cache_dir=cache
    )
    assert shorter.model_loaded and shorter.info.max_length == 32
    assert not load_encoder(options, cache_dir=cache).model_loaded  # and back: warm again


def test_file_hashes_are_remembered_across_processes(
    tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _copy(tiny_bert_dir, tmp_path / "model")
    memo = fingerprint.file_hashes_dir(tmp_path / "cache")
    hashed: list[str] = []
    real = fingerprint._file_sha256

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(fingerprint, "_file_sha256", counting)
    plain = fingerprint._content_hash(model)  # without a memo: every file, every process
    files = len(hashed)
    assert files >= 3 and "model.safetensors" in hashed
    fingerprint._HASH_CACHE.clear()
    hashed.clear()
    assert fingerprint._content_hash(model, memo) == plain
    assert len(hashed) == files  # the first run with a cache hashes and remembers
    fingerprint._HASH_CACHE.clear()
    hashed.clear()
    assert fingerprint._content_hash(model, memo) == plain
    assert hashed == []  # a later process reads no weights
    fingerprint._HASH_CACHE.clear()
    _rewrite_in_place(model / "model.safetensors", _flip_last_weight_byte)
    changed = fingerprint._content_hash(model, memo)
    assert hashed == ["model.safetensors"] and changed != plain


def test_a_load_that_resolves_otherwise_than_remembered_stops_the_run(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    options = EncoderOptions(model=str(tiny_bert_dir), device="cpu")
    load_encoder(options, cache_dir=tmp_path)
    (resolved,) = (tmp_path / MEMO_DIR / "resolved").glob("*.json")
    data = json.loads(resolved.read_text(encoding="utf-8"))
    data["resolved"]["pooling"] = "cls"  # as if an older release had resolved it so
    resolved.write_text(json.dumps(data), encoding="utf-8")
    warm = load_encoder(options, cache_dir=tmp_path)
    assert not warm.model_loaded and warm.info.pooling == "cls"
    for _ in range(2):  # and every later call: no vectors under the wrong key
        with pytest.raises(KoembedError, match=r"pooling: 'cls' -> 'mean'.*koembed cache clear"):
            warm.encode(TEXTS)
    # what the line says to do works: the memo goes with the cache, the next run loads afresh
    assert koembed(["cache", "clear", f"--cache={tmp_path}"]) == 0
    assert not (tmp_path / MEMO_DIR).exists()
    fresh = load_encoder(options, cache_dir=tmp_path)
    assert fresh.model_loaded and fresh.info.pooling == "mean"


def test_a_hub_snapshot_is_remembered_by_its_commit(
    tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    sha = "fedcba9876543210fedcba9876543210fedcba98"
    repo = tmp_path / "hub" / "models--acme--tiny-bert"
    shutil.copytree(tiny_bert_dir, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(fingerprint, "_hub_cache_dir", lambda: tmp_path / "hub")
    options = EncoderOptions(model="acme/tiny-bert", device="cpu")
    cold = load_encoder(options, cache_dir=tmp_path / "cache")
    warm = load_encoder(options, cache_dir=tmp_path / "cache")
    assert cold.model_loaded and not warm.model_loaded
    assert warm.info.fingerprint == f"hub:acme/tiny-bert@{sha}"
    assert _key(warm, "acme/tiny-bert") == _key(cold, "acme/tiny-bert")
    assert not (tmp_path / "cache" / MEMO_DIR / "file-hashes").exists()  # nothing was hashed


# ---------------------------------------------------------------------------------------------
# The plugin, as a user runs it


# Whether the process built a BERT (what loading all-MiniLM-L6-v2 imports). mteb.evaluate itself
# imports sentence_transformers (and so transformers) on every call, loaded model or not.
MODULES = """
import json
import sys


def pytest_sessionfinish(session):
    with open("modules.json", "w") as fh:
        json.dump("transformers.models.bert.modeling_bert" in sys.modules, fh)
"""


def test_a_warm_run_loads_no_model_and_scores_the_same(
    run_pytest: Any, minilm_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "conftest.py").write_text(MODULES, encoding="utf-8")
    args = [f"--koembed-model={minilm_dir}", "--koembed-suite=sample",
            f"--koembed-cache={tmp_path / 'cache'}"]  # fmt: skip
    runs = {}
    for name, select in (("cold", "sts"), ("warm", "sts"), ("more", "sts or pairs")):
        result = run_pytest(tmp_path, *args, "-k", select, f"--koembed-json={name}.json")
        assert result.ret == 0, result.stdout
        record = json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8"))
        modules = json.loads((tmp_path / "modules.json").read_text(encoding="utf-8"))
        runs[name] = (record, modules, result.stdout)
    cold, warm, more = (runs[n][0] for n in ("cold", "warm", "more"))
    assert cold["model"]["model_loads"] == 1 and runs["cold"][1] is True
    assert warm["model"]["model_loads"] == 0
    assert runs["warm"][1] is False  # no model class was even imported
    assert "; model not loaded" in runs["warm"][2] and "model not loaded" not in runs["cold"][2]
    value = {t["column"]: t["value"] for t in cold["tasks"]}
    assert {t["column"]: t["value"] for t in warm["tasks"]} == value
    assert {k: v for k, v in warm["model"].items() if k != "model_loads"} == {
        k: v for k, v in cold["model"].items() if k != "model_loads"
    }
    # a task the cache lacks: the model loads at its first text, the cached task is unchanged
    assert more["model"]["model_loads"] == 1 and runs["more"][1] is True
    assert {t["column"]: t["value"] for t in more["tasks"]}["sample-sts"] == value["sample-sts"]
