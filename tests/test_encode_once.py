"""Encode once: within a run, each distinct (prompt, text) reaches the encoder once per worker."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_koembed.errors import KoembedError
from pytest_koembed.evaluation.adapter import make_adapter
from pytest_koembed.evaluation.progress import TaskProgress
from pytest_koembed.models.store import MemoryStore
from pytest_koembed.protocol.suite import load_suite

# Hand-written; the STS task repeats sentence 0 three times, the NLI task uses only these.
SENTENCES = [
    "아침마다 공원에서 산책을 한다.",
    "매일 아침 공원을 걷는다.",
    "오늘은 비가 많이 내린다.",
    "밖에 폭우가 쏟아지고 있다.",
    "그는 새 자전거를 샀다.",
    "그가 자전거를 한 대 구입했다.",
    "도서관은 월요일에 문을 닫는다.",
    "도서관은 월요일마다 휴관한다.",
    "시험이 다음 주로 미뤄졌다.",
    "커피를 너무 많이 마시면 잠이 안 온다.",
]
STS_PAIRS = [
    (0, 1, 4.5), (2, 3, 4.0), (4, 5, 4.6), (6, 7, 4.8), (0, 2, 0.5),
    (1, 4, 0.8), (8, 9, 0.2), (3, 6, 0.4), (0, 9, 1.0),
]  # fmt: skip
NLI_PAIRS = [
    (0, 1, 1), (2, 3, 1), (4, 5, 1), (6, 7, 1), (8, 2, 0), (9, 4, 0), (1, 6, 0), (5, 3, 0),
]  # fmt: skip

SUITE = """
name = "shared"
scheme = "ko-leaderboard-v1"

[[tasks]]
column = "shared-sts"
task = "SharedSTS"
type = "STS"
data = "data"
split = "test"
category = "STS"

[[tasks]]
column = "shared-pairs"
task = "SharedPairs"
type = "PairClassification"
data = "data"
split = "test"
category = "NLI"
"""

# Logs every text it is handed (worker, text) to encoded.log; each row depends on its text
# alone, so the values cannot depend on how the texts were batched.
COUNTING_ENCODER = """
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest

LOG = Path(__file__).with_name("encoded.log")


class CountingEncoder:
    def encode(self, texts):
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with LOG.open("a", encoding="utf-8") as log:
            log.write("".join(json.dumps([worker, t], ensure_ascii=False) + "\\n" for t in texts))
        out = np.zeros((len(texts), 64), dtype="float32")
        for i, text in enumerate(texts):
            for gram in (text[j : j + 2] for j in range(max(1, len(text) - 1))):
                out[i, zlib.crc32(gram.encode()) % 64] += 1.0
        return out + 1e-3


@pytest.fixture(scope="session")
def koembed_encoder():
    return CountingEncoder()
"""


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )


@pytest.fixture
def shared_suite(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    _jsonl(
        data / "SharedSTS" / "default" / "test" / "pairs.jsonl",
        [
            {"sentence1": SENTENCES[a], "sentence2": SENTENCES[b], "score": s}
            for a, b, s in STS_PAIRS
        ],
    )
    _jsonl(
        data / "SharedPairs" / "default" / "test" / "pairs.jsonl",
        [
            {"sentence1": SENTENCES[a], "sentence2": SENTENCES[b], "label": y}
            for a, b, y in NLI_PAIRS
        ],
    )
    (tmp_path / "shared.toml").write_text(SUITE, encoding="utf-8")
    (tmp_path / "conftest.py").write_text(COUNTING_ENCODER, encoding="utf-8")
    return tmp_path


def _run(run_pytest: Any, cwd: Path, name: str, *extra: str) -> tuple[dict[str, Any], list, str]:
    log = cwd / "encoded.log"
    log.unlink(missing_ok=True)
    result = run_pytest(
        cwd, "--koembed-model=counting", "--koembed-suite=shared.toml",
        f"--koembed-json={name}.json", *extra,
    )  # fmt: skip
    assert result.ret == 0, result.stdout
    record = json.loads((cwd / f"{name}.json").read_text(encoding="utf-8"))
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return record, [tuple(json.loads(line)) for line in lines], result.stdout


def _values(record: dict[str, Any]) -> dict[str, Any]:
    return {t["column"]: (t["value"], t["scores"]) for t in record["tasks"]}


def test_each_text_is_encoded_once_and_values_do_not_change(
    run_pytest: Any, shared_suite: Path
) -> None:
    record, encoded, out = _run(run_pytest, shared_suite, "reuse")
    assert Counter(text for _, text in encoded) == Counter(SENTENCES)  # each exactly once
    texts = {t["column"]: t["texts"] for t in record["tasks"]}
    # STS: 18 texts, sentence 0 three times; the NLI task only meets sentences seen before
    assert texts["shared-sts"] == {"total": 18, "distinct": 10, "encoded": 10, "from_cache": 8}
    assert texts["shared-pairs"] == {"total": 16, "distinct": 10, "encoded": 0, "from_cache": 16}
    assert [t["texts_encoded"] for t in record["tasks"]] == [10, 0]
    assert "texts: 10 encoded of 34 (71% reused)" in out

    plain, encoded_plain, out_plain = _run(run_pytest, shared_suite, "plain", "--koembed-no-reuse")
    assert len(encoded_plain) == 34
    assert {t["column"]: t["texts"]["encoded"] for t in plain["tasks"]} == {
        "shared-sts": 18,
        "shared-pairs": 16,
    }
    assert "texts: 34 encoded of 34 (0% reused)" in out_plain
    assert _values(plain) == _values(record)


def test_under_xdist_each_worker_encodes_a_text_at_most_once(
    run_pytest: Any, shared_suite: Path
) -> None:
    serial, _, _ = _run(run_pytest, shared_suite, "serial")
    record, encoded, _ = _run(run_pytest, shared_suite, "xdist", "-n", "2")
    per_worker = Counter(encoded)
    assert per_worker and max(per_worker.values()) == 1
    assert {text for _, text in encoded} == set(SENTENCES)
    workers = {t["worker"] for t in record["tasks"]}
    assert workers <= {"gw0", "gw1"} and len(workers) >= 1
    assert sum(t["texts"]["encoded"] for t in record["tasks"]) == len(encoded)
    assert _values(record) == _values(serial)


# ---------------------------------------------------------------------------------------------
# the store's keys: everything that changes a vector within a session


class Recording:
    """Records each call's (method, prompt, texts); rows from the text and prompt alone."""

    def __init__(self, *, nan_for: str | None = None) -> None:
        self.calls: list[tuple[str, str | None, list[str]]] = []
        self.nan_for = nan_for

    def _rows(self, name: str, texts: list[str], prompt: str | None) -> np.ndarray:
        self.calls.append((name, prompt, list(texts)))
        rows = [[len(t) + 1.0, len(prompt or "") + 1.0, 1.0 + (name == "q")] for t in texts]
        out = np.asarray(rows, dtype=np.float32)
        if self.nan_for in texts:
            out[texts.index(self.nan_for)] = np.nan
        return out

    def encode(self, texts: list[str], prompt: str | None = None) -> np.ndarray:
        return self._rows("encode", texts, prompt)

    def encode_query(self, texts: list[str], prompt: str | None = None) -> np.ndarray:
        return self._rows("q", texts, prompt)


SPEC = load_suite("sample").task("sample-retrieval")


def _adapter(encoder: Any, store: Any, prompt_of: dict[str, str | None], **kw: Any) -> Any:
    return make_adapter(
        encoder, SPEC, lambda spec, role: prompt_of[role], model_name="m", revision=None,
        store=store, **kw,
    )  # fmt: skip


def _encode(adapter: Any, texts: list[str], role: str) -> np.ndarray:
    from mteb.types import PromptType

    kind = {"query": PromptType.query, "document": PromptType.document}.get(role)
    return adapter.encode(
        [{"text": texts}], task_metadata=None, hf_split="test", hf_subset="x", prompt_type=kind
    )


def test_a_changed_prompt_or_method_is_encoded_again() -> None:
    encoder, store = Recording(), MemoryStore()
    texts = ["가나", "다라마", "가나"]
    first = _adapter(encoder, store, {"query": "질의: ", "document": None, "symmetric": None})
    out = _encode(first, texts, "document")
    assert np.array_equal(out, encoder.encode(texts))  # one row per text, in order
    encoder.calls.clear()
    _encode(first, texts, "document")  # met before: nothing encoded
    _encode(first, texts, "query")  # encode_query, with a prompt: encoded
    second = _adapter(encoder, store, {"query": "검색: ", "document": None, "symmetric": None})
    _encode(second, texts, "query")  # another prompt: encoded again
    _encode(second, texts, "symmetric")  # plain encode, no prompt: met before
    assert encoder.calls == [
        ("q", "질의: ", ["가나", "다라마"]),
        ("q", "검색: ", ["가나", "다라마"]),
    ]
    assert (second.texts_total, second.texts_encoded, second.texts_from_store) == (6, 2, 4)


def test_the_encoders_output_is_still_checked() -> None:
    adapter = _adapter(Recording(nan_for="다라마"), MemoryStore(), {"document": None})
    with pytest.raises(KoembedError, match="NaN or inf values in 1 of 2 embeddings"):
        _encode(adapter, ["가나", "다라마", "가나"], "document")


def test_a_full_store_keeps_no_more_rows_and_gives_the_same_embeddings() -> None:
    encoder = Recording()
    store = MemoryStore(max_bytes=2 * 3 * 4)  # room for two 3-dim float32 rows
    adapter = _adapter(encoder, store, {"document": None})
    texts = ["가", "나나", "다다다", "가"]
    assert np.array_equal(_encode(adapter, texts, "document"), encoder.encode(texts))
    assert len(store) == 2 and store.full and store.nbytes == 24
    encoder.calls.clear()
    assert np.array_equal(_encode(adapter, texts, "document"), encoder.encode(texts))
    assert encoder.calls[0] == ("encode", None, ["다다다"])  # the one not kept, encoded again


def test_progress_total_shrinks_to_the_texts_encoded() -> None:
    shown: list[str] = []
    progress = TaskProgress("t", shown.append, interval=0.0)
    progress.begin(5)
    adapter = _adapter(Recording(), MemoryStore(), {"document": None}, progress=progress,
                       reused=progress.reused)  # fmt: skip
    _encode(adapter, ["가", "나", "가"], "document")
    _encode(adapter, ["나", "다"], "document")
    assert (progress.done, progress.total) == (3, 3)
    assert shown[-1].startswith("t: 3 texts encoded in ")


def test_a_dimension_change_after_stored_rows_is_one_line() -> None:
    class Wider(Recording):
        def encode(self, texts: list[str], prompt: str | None = None) -> np.ndarray:
            return np.ones((len(texts), 4), dtype=np.float32)

    store = MemoryStore()
    _encode(_adapter(Recording(), store, {"document": None}), ["가"], "document")
    with pytest.raises(KoembedError, match="another dimension than earlier in this run"):
        _encode(_adapter(Wider(), store, {"document": None}), ["가", "나"], "document")
