"""pytest_koembed.data.layout: the JSONL layout, injection into mteb tasks, de-duplication, the Hub.

Plain pytest (no plugin). Every text below is hand-written for these tests. The encoder is a
cheap deterministic one (hashed character n-grams), so scores are reproducible and fast.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mteb
import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction

from pytest_koembed.data.dedup import dedupe_pairs, unique_pair_indices
from pytest_koembed.data.export import export_task
from pytest_koembed.data.layout import layout_dir, read_pairs, read_retrieval, read_texts
from pytest_koembed.data.prepare import prepare_task
from pytest_koembed.data.tasks import PreparedTask
from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol import scoring
from pytest_koembed.protocol.spec import TaskSpec

# ---------------------------------------------------------------------------------------------
# A cheap deterministic encoder
# ---------------------------------------------------------------------------------------------

DIM = 64


def _vector(text: str) -> np.ndarray:
    vec = np.zeros(DIM, dtype=np.float32)
    compact = "".join(text.split())
    grams = list(compact) + [compact[i : i + 2] for i in range(len(compact) - 1)]
    for gram in grams:
        h = zlib.crc32(gram.encode("utf-8"))
        vec[h % DIM] += 1.0 if (h >> 16) & 1 else -1.0
    vec[0] += 0.5  # never the zero vector
    return vec / np.linalg.norm(vec)


class HashEncoder(AbsEncoder):
    """Character uni/bi-grams hashed into 64 signed buckets, L2-normalised."""

    def __init__(self) -> None:
        self.mteb_model_meta = ModelMeta.create_empty(
            overwrites=dict(
                name="koembed-tests/hash-ngrams",
                revision="1",
                similarity_fn_name=ScoringFunction.COSINE,
                embed_dim=DIM,
                languages=["kor-Hang"],
                modalities=["text"],
            )
        )

    def encode(  # type: ignore[override]
        self,
        inputs: Any,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        return np.stack([_vector(text) for batch in inputs for text in batch["text"]])


@pytest.fixture(scope="module")
def encoder() -> HashEncoder:
    return HashEncoder()


def evaluate(encoder: HashEncoder, task: Any) -> dict[str, list[dict[str, Any]]]:
    result = mteb.evaluate(
        encoder,
        task,
        cache=None,
        show_progress_bar=False,
        encode_kwargs={"batch_size": 8},
    )
    assert len(result.task_results) == 1
    return result.task_results[0].scores


def only_entry(scores: dict[str, list[dict[str, Any]]], split: str, subset: str) -> dict[str, Any]:
    assert list(scores) == [split]
    assert len(scores[split]) == 1
    entry = scores[split][0]
    assert entry["hf_subset"] == subset
    return entry


def same_scores(a: Any, b: Any) -> bool:
    """Exact equality, NaN equal to NaN (nauc_* are NaN on tiny data)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_scores(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_scores(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


# ---------------------------------------------------------------------------------------------
# Hand-made Korean rows and the layout
# ---------------------------------------------------------------------------------------------

STS_ROWS = [
    ("오늘 날씨가 맑고 따뜻하다", "오늘은 햇살이 좋고 따뜻한 날이다", 4.2),
    ("고양이가 소파 위에서 잠을 잔다", "고양이 한 마리가 소파에서 자고 있다", 4.6),
    ("나는 아침에 커피를 마셨다", "기차가 역에 천천히 들어온다", 0.2),
    ("도서관은 저녁 아홉 시에 문을 닫는다", "도서관이 밤 아홉 시에 닫는다", 4.0),
    ("아이들이 공원에서 축구를 한다", "어른들이 회의실에서 회의를 한다", 1.0),
    ("새 휴대폰의 배터리가 오래 간다", "이 전화기는 충전 없이 오래 쓴다", 3.1),
    ("시장에서 사과를 세 개 샀다", "마트에서 배추 한 포기를 샀다", 1.8),
]

PAIR_ROWS = [
    ("그는 매일 아침 조깅을 한다", "그는 아침마다 달리기를 한다", 1),
    ("그녀는 서울에 산다", "그녀는 부산에 산다", 0),
    ("회의가 내일로 미뤄졌다", "회의 일정이 다음 날로 연기되었다", 1),
    ("가게는 일요일에 쉰다", "가게는 일요일에도 문을 연다", 0),
    ("강아지가 마당에서 뛰논다", "개 한 마리가 마당에서 놀고 있다", 1),
    ("버스가 정시에 도착했다", "버스가 한 시간 늦게 왔다", 0),
]

CLUSTER_ROWS = [
    ("축구 대표팀이 결승전에서 승리했다", "스포츠"),
    ("야구 경기가 비 때문에 취소되었다", "스포츠"),
    ("농구 선수가 새 기록을 세웠다", "스포츠"),
    ("마라톤 대회에 만 명이 참가했다", "스포츠"),
    ("주식 시장이 이틀 연속 하락했다", "경제"),
    ("중앙은행이 기준 금리를 동결했다", "경제"),
    ("수출 실적이 지난달보다 늘었다", "경제"),
    ("물가 상승률이 다시 높아졌다", "경제"),
    ("내일은 전국에 비가 내리겠다", "날씨"),
    ("주말에는 기온이 크게 떨어진다", "날씨"),
    ("남부 지방에 태풍이 접근하고 있다", "날씨"),
    ("오후부터 하늘이 맑아지겠다", "날씨"),
]

CORPUS = [
    ("d1", "김치", "김치는 배추를 소금에 절여 양념과 함께 발효시킨 음식이다."),
    ("d2", "", "한강은 서울을 가로질러 흐르는 큰 강이다."),
    ("d3", "지하철", "서울 지하철은 여러 노선이 도심과 외곽을 잇는다."),
    ("d4", "", "제주도는 화산 활동으로 만들어진 섬이다."),
    ("d5", "한글", "한글은 세종대왕이 만든 글자로 자음과 모음으로 이루어진다."),
    ("d6", "", "비빔밥은 밥 위에 나물과 고추장을 얹어 비벼 먹는다."),
]
QUERIES = [
    ("q1", "김치는 어떻게 만드나요?"),
    ("q2", "제주도는 어떻게 생겨났나?"),
    ("q3", "한글은 누가 만들었나?"),
    ("q4", "관련 문서가 없는 질문"),
]
QRELS = [("q1", "d1", 1), ("q2", "d4", 1), ("q3", "d5", 1), ("q1", "d6", 0)]


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def write_sts(directory: Path, rows: list[tuple[str, str, float]] = STS_ROWS) -> Path:
    return write_jsonl(
        directory / "pairs.jsonl",
        [{"sentence1": a, "sentence2": b, "score": s} for a, b, s in rows],
    )


def write_pairs(directory: Path, rows: list[tuple[str, str, int]] = PAIR_ROWS) -> Path:
    return write_jsonl(
        directory / "pairs.jsonl",
        [{"sentence1": a, "sentence2": b, "label": y} for a, b, y in rows],
    )


def write_texts(directory: Path, sets: int = 0) -> Path:
    rows: list[dict[str, Any]] = []
    for k in range(max(sets, 1)):
        for text, label in CLUSTER_ROWS:
            row: dict[str, Any] = {"text": text if k == 0 else f"{text} ({k})", "label": label}
            if sets:
                row["set"] = f"묶음{k}"
            rows.append(row)
    return write_jsonl(directory / "texts.jsonl", rows)


def write_retrieval(directory: Path) -> Path:
    write_jsonl(
        directory / "corpus.jsonl",
        [{"id": i, "title": t, "text": x} if t else {"id": i, "text": x} for i, t, x in CORPUS],
    )
    write_jsonl(directory / "queries.jsonl", [{"id": i, "text": x} for i, x in QUERIES])
    write_jsonl(
        directory / "qrels.jsonl",
        [{"query_id": q, "doc_id": d, "score": s} for q, d, s in QRELS],
    )
    return directory


def spec(
    task: str,
    split: str = "test",
    subset: str = "default",
    category: str = "STS",
    custom_type: str | None = None,
    data_dir: Path | None = None,
) -> TaskSpec:
    return TaskSpec(
        column=task,
        task=task,
        split=split,
        subset=subset,
        category=category,
        value_rule="main",
        custom_type=custom_type,
        data_dir=data_dir,
    )


# ---------------------------------------------------------------------------------------------
# De-duplication
# ---------------------------------------------------------------------------------------------


def test_dedupe_pairs_counts_a_b_and_b_a_once() -> None:
    (s1, s2, labels), dropped = dedupe_pairs(["A", "B", "A"], ["B", "A", "B"], [1, 0, 0])
    assert (s1, s2, labels, dropped) == (["A"], ["B"], [1], 2)


def test_dedupe_pairs_keeps_first_occurrence_and_order() -> None:
    s1 = ["x", "y", "z", "b", "y"]
    s2 = ["y", "x", "z", "a", "z"]
    assert unique_pair_indices(s1, s2) == [0, 2, 3, 4]
    (k1, k2, v), dropped = dedupe_pairs(s1, s2, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert (k1, k2, v, dropped) == (["x", "z", "b", "y"], ["y", "z", "a", "z"], [1, 3, 4, 5], 1)


def test_local_pairs_are_deduplicated(tmp_path: Path) -> None:
    rows = [*PAIR_ROWS, (PAIR_ROWS[0][1], PAIR_ROWS[0][0], 0), PAIR_ROWS[1]]
    write_pairs(layout_dir(tmp_path, "Pairs", "default", "test"), rows)
    prepared = prepare_task(
        spec("Pairs", category="NLI", custom_type="PairClassification", data_dir=tmp_path), None
    )
    assert (prepared.n_examples, prepared.duplicates_dropped) == (len(PAIR_ROWS), 2)
    assert prepared.sizes == {"pairs": len(PAIR_ROWS)}
    split = prepared.task.dataset["test"]
    assert len(split) == 1  # one row of lists
    assert split[0]["labels"] == [y for _, _, y in PAIR_ROWS]


def _fake_load(monkeypatch: pytest.MonkeyPatch, task_name: str, build: Any) -> None:
    """Make ``load_data`` of an mteb task class produce ``build(self)`` without the Hub."""
    cls = type(mteb.get_task(task_name))

    def load_data(self: Any, num_proc: int | None = None, **kwargs: Any) -> None:
        self.dataset = build(self)
        self.data_loaded = True

    monkeypatch.setattr(cls, "load_data", load_data)


DUP_PAIRS = [("A 문장", "B 문장", 1), ("B 문장", "A 문장", 0), ("A 문장", "B 문장", 1)]


def test_hub_pairs_one_row_of_lists_are_deduplicated(
    monkeypatch: pytest.MonkeyPatch, encoder: HashEncoder
) -> None:
    # KLUE-NLI's dataset_transform leaves {split: [ {column: list} ]}
    rows = [*DUP_PAIRS, ("C 문장", "D 문장", 0)]
    _fake_load(
        monkeypatch,
        "KLUE-NLI",
        lambda self: {
            "validation": [
                {
                    "sentence1": [a for a, _, _ in rows],
                    "sentence2": [b for _, b, _ in rows],
                    "labels": [y for _, _, y in rows],
                }
            ]
        },
    )
    prepared = prepare_task(spec("KLUE-NLI", "validation", category="NLI"), None)
    assert (prepared.n_examples, prepared.duplicates_dropped) == (2, 2)
    assert prepared.source.startswith("hub:klue/klue@")
    split = prepared.task.dataset["validation"]
    assert split[0] == {
        "sentence1": ["A 문장", "C 문장"],
        "sentence2": ["B 문장", "D 문장"],
        "labels": [1, 0],
    }
    entry = only_entry(evaluate(encoder, prepared.task), "validation", "default")
    assert "cosine_ap" in entry


def test_hub_pairs_flat_rows_are_deduplicated(
    monkeypatch: pytest.MonkeyPatch, encoder: HashEncoder
) -> None:
    # PawsX: flat rows per subset, both test and validation on the Hub
    def flat(rows: list[tuple[str, str, int]]) -> Dataset:
        return Dataset.from_dict(
            {
                "sentence1": [a for a, _, _ in rows],
                "sentence2": [b for _, b, _ in rows],
                "labels": [y for _, _, y in rows],
            }
        )

    _fake_load(
        monkeypatch,
        "PawsXPairClassification",
        lambda self: {
            s: DatasetDict({"test": flat(DUP_PAIRS), "validation": flat(PAIR_ROWS)})
            for s in self.hf_subsets
        },
    )
    prepared = prepare_task(spec("PawsXPairClassification", subset="ko", category="NLI"), None)
    # one pair left: still read as one pair, not misread as a one-row-of-lists dataset
    assert (prepared.n_examples, prepared.duplicates_dropped) == (1, 2)
    assert list(prepared.task.dataset) == ["ko"]
    assert list(prepared.task.dataset["ko"]) == ["test"]
    assert prepared.task.dataset["ko"]["test"][0]["sentence1"] == ["A 문장"]


def test_hub_retrieval_v1_shape_is_converted(
    monkeypatch: pytest.MonkeyPatch, encoder: HashEncoder
) -> None:
    # PublicHealthQA's own load_data fills the v1 attributes corpus / queries / relevant_docs
    cls = type(mteb.get_task("PublicHealthQA"))

    def load_data(self: Any, num_proc: int | None = None, **kwargs: Any) -> None:
        lang = self.hf_subsets[0]
        self.corpus = {lang: {"test": {i: {"text": x} for i, _, x in CORPUS}}}
        self.queries = {lang: {"test": dict(QUERIES[:3])}}
        self.relevant_docs = {lang: {"test": {"q1": {"d1": 1}, "q2": {"d4": 1}, "q3": {}}}}
        self.data_loaded = True

    monkeypatch.setattr(cls, "load_data", load_data)
    prepared = prepare_task(spec("PublicHealthQA", subset="korean", category="Retrieval"), None)
    assert prepared.sizes == {"queries": 2, "documents": len(CORPUS), "qrels": 2}
    assert prepared.source == "hub:xhluca/publichealth-qa@main"
    assert not hasattr(prepared.task, "queries")
    entry = only_entry(evaluate(encoder, prepared.task), "test", "korean")
    assert "ndcg_at_10" in entry


def test_hub_sts_restricted_to_split_and_deduplicated(monkeypatch: pytest.MonkeyPatch) -> None:
    def flat(rows: list[tuple[str, str, float]]) -> Dataset:
        return Dataset.from_dict(
            {
                "sentence1": [a for a, _, _ in rows],
                "sentence2": [b for _, b, _ in rows],
                "score": [s for _, _, s in rows],
            }
        )

    test_rows = [*STS_ROWS, (STS_ROWS[0][1], STS_ROWS[0][0], 1.0)]
    _fake_load(
        monkeypatch,
        "KorSTS",
        lambda self: DatasetDict({"train": flat(STS_ROWS[:3]), "test": flat(test_rows)}),
    )
    prepared = prepare_task(spec("KorSTS"), None)
    assert list(prepared.task.dataset) == ["test"]
    assert (prepared.n_examples, prepared.duplicates_dropped) == (len(STS_ROWS), 1)
    assert prepared.task.dataset["test"]["score"] == [s for _, _, s in STS_ROWS]


# ---------------------------------------------------------------------------------------------
# Malformed input: one line, names the file (and line)
# ---------------------------------------------------------------------------------------------

GOOD_PAIR = {"sentence1": "가", "sentence2": "나", "score": 1.0}
GOOD_LABEL = {"sentence1": "가", "sentence2": "나", "label": 1}


def _raw(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _j(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


# (custom type, file name, lines of that file, expected text, expected line or None)
MALFORMED: list[tuple[str, str, list[str], str, int | None]] = [
    ("STS", "pairs.jsonl", [_j(GOOD_PAIR), "{not json"], "not valid JSON", 2),
    ("STS", "pairs.jsonl", [_j({"sentence1": "가", "sentence2": "나"})], "missing key 'score'", 1),
    ("STS", "pairs.jsonl", ["", _j({**GOOD_PAIR, "score": "3.5"})], "must be a number", 2),
    ("STS", "pairs.jsonl", [_j({**GOOD_PAIR, "sentence1": 3})], "must be a string", 1),
    ("STS", "pairs.jsonl", ['{"sentence1": "가", "sentence2": "나", "score": NaN}'], "finite", 1),
    ("STS", "pairs.jsonl", [_j({**GOOD_PAIR, "score": 1e400})], "finite", 1),
    ("STS", "pairs.jsonl", [_j({**GOOD_PAIR, "sentence2": "   "})], "'sentence2' is empty", 1),
    ("STS", "pairs.jsonl", [_j([1, 2, 3])], "expected a JSON object", 1),
    ("STS", "pairs.jsonl", ["", "  "], "is empty", None),
    ("STS", "pairs.jsonl", [_j(GOOD_PAIR), _j({**GOOD_PAIR, "sentence1": "다"})], "every score",
     None),
    ("STS", "pairs.jsonl", [_j(GOOD_PAIR), _j({**GOOD_PAIR, "score": 2})], "at least 2", None),
    ("PairClassification", "pairs.jsonl", [_j({**GOOD_LABEL, "label": 2})], "0 or 1", 1),
    ("PairClassification", "pairs.jsonl", [_j({**GOOD_LABEL, "label": True})], "0 or 1", 1),
    ("PairClassification", "pairs.jsonl", [_j(GOOD_LABEL), _j({**GOOD_LABEL, "label": "0"})],
     "0 or 1", 2),
    ("PairClassification", "pairs.jsonl", [_j({"sentence1": "가", "sentence2": "나"})],
     "missing key 'label'", 1),
    ("PairClassification", "pairs.jsonl", [_j(GOOD_LABEL), _j({**GOOD_LABEL, "sentence2": "다"})],
     "needs both 0 and 1", None),
    ("Clustering", "texts.jsonl", [_j({"text": "가", "label": "x"}), _j({"text": "나"})],
     "missing key 'label'", 2),
    ("Clustering", "texts.jsonl", [_j({"text": "가", "label": ["x"]})], "must be a string", 1),
    ("Clustering", "texts.jsonl",
     [_j({"text": "가", "label": "x"}), _j({"text": "나", "label": "x"})], "single label", None),
    ("Clustering", "texts.jsonl",
     [_j({"text": "가", "label": "x", "set": "a"}), _j({"text": "나", "label": "y", "set": "a"}),
      _j({"text": "다", "label": "x", "set": "b"}), _j({"text": "라", "label": "x", "set": "b"})],
     "clustering set 'b' has the single label", None),
    ("Clustering", "texts.jsonl",
     [_j({"text": "가", "label": "x", "set": "a"}), _j({"text": "나", "label": "y"})],
     "on every row or on none", 2),
]  # fmt: skip


@pytest.mark.parametrize(
    ("custom_type", "name", "lines", "expected", "line"),
    MALFORMED,
    ids=[f"{c}-{e}" for c, _, _, e, _ in MALFORMED],
)
def test_malformed_layout_gives_one_line_error(
    tmp_path: Path,
    custom_type: str,
    name: str,
    lines: list[str],
    expected: str,
    line: int | None,
) -> None:
    directory = layout_dir(tmp_path, "Bad", "default", "test")
    path = directory / name
    _raw(path, lines)
    with pytest.raises(KoembedError) as info:
        prepare_task(spec("Bad", custom_type=custom_type, data_dir=tmp_path), None)
    message = str(info.value)
    assert "\n" not in message
    assert expected in message
    assert str(path) in message
    if line is not None:
        assert f"{path}:{line}:" in message


@pytest.mark.parametrize("custom_type", ["STS", "PairClassification", "Clustering", "Retrieval"])
def test_missing_file_names_the_path_and_layout(tmp_path: Path, custom_type: str) -> None:
    directory = layout_dir(tmp_path, "Missing", "default", "test")
    with pytest.raises(KoembedError) as info:
        prepare_task(spec("Missing", custom_type=custom_type, data_dir=tmp_path), None)
    message = str(info.value)
    expected_file = {"Retrieval": "corpus.jsonl", "Clustering": "texts.jsonl"}.get(
        custom_type, "pairs.jsonl"
    )
    assert "\n" not in message
    assert f"missing file {directory / expected_file}" in message
    assert f"the {custom_type} layout" in message


def test_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = layout_dir(tmp_path, "Bad", "default", "test") / "pairs.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(_j(GOOD_PAIR).encode() + b"\n" + b'{"sentence1": "\xff"}\n')
    with pytest.raises(KoembedError, match=r"pairs\.jsonl:2: not UTF-8"):
        read_pairs(path.parent, "STS")


RETRIEVAL_CASES: list[tuple[str, Any, str, int | None]] = [
    ("qrels.jsonl", {"query_id": "q9", "doc_id": "d1", "score": 1}, "query_id 'q9' is not in", 5),
    ("qrels.jsonl", {"query_id": "q1", "doc_id": "d9", "score": 1}, "doc_id 'd9' is not in", 5),
    ("qrels.jsonl", {"query_id": "q1", "doc_id": "d1", "score": 1}, "duplicate qrel", 5),
    ("qrels.jsonl", {"query_id": "q2", "doc_id": "d1", "score": 0.5}, "integer", 5),
    ("qrels.jsonl", {"query_id": "q2", "doc_id": "d1"}, "missing key 'score'", 5),
    ("corpus.jsonl", {"id": "d2", "text": "다시 나온 문서"}, "duplicate id 'd2'", 7),
    ("corpus.jsonl", {"id": "d7", "text": "제목", "title": 5}, "'title' must be a string", 7),
    ("queries.jsonl", {"id": "q1", "text": "다시 나온 질문"}, "duplicate id 'q1'", 5),
    ("queries.jsonl", {"id": None, "text": "번호 없는 질문"}, "'id' must be a string", 5),
]


@pytest.mark.parametrize(
    ("name", "extra", "expected", "line"), RETRIEVAL_CASES, ids=[c[2] for c in RETRIEVAL_CASES]
)
def test_malformed_retrieval_gives_one_line_error(
    tmp_path: Path, name: str, extra: dict[str, Any], expected: str, line: int | None
) -> None:
    directory = write_retrieval(layout_dir(tmp_path, "Ret", "default", "test"))
    path = directory / name
    with path.open("a", encoding="utf-8") as f:
        f.write(_j(extra) + "\n")
    with pytest.raises(KoembedError) as info:
        prepare_task(spec("Ret", custom_type="Retrieval", data_dir=tmp_path), None)
    message = str(info.value)
    assert "\n" not in message
    assert expected in message
    assert f"{path}:{line}:" in message


def test_local_copy_of_mteb_task_checks_its_scale(tmp_path: Path) -> None:
    directory = layout_dir(tmp_path, "KorSTS", "default", "test")
    write_sts(directory, [*STS_ROWS, ("가", "나", 7.0)])
    with pytest.raises(KoembedError) as info:
        prepare_task(spec("KorSTS"), tmp_path)
    assert f"{directory / 'pairs.jsonl'}:{len(STS_ROWS) + 1}: score 7 is outside" in str(info.value)


def test_local_copy_missing_names_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(KoembedError) as info:
        prepare_task(spec("STS17", subset="ko-ko"), tmp_path)
    assert f"missing file {tmp_path / 'STS17' / 'ko-ko' / 'test' / 'pairs.jsonl'}" in str(
        info.value
    )


def test_data_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(KoembedError, match="does not exist"):
        prepare_task(spec("KorSTS"), tmp_path / "nowhere")


def test_fast_clustering_rejects_sets(tmp_path: Path) -> None:
    write_texts(layout_dir(tmp_path, "SIB200ClusteringS2S", "kor_Hang", "test"), sets=2)
    with pytest.raises(KoembedError, match="remove the 'set' key"):
        prepare_task(
            spec("SIB200ClusteringS2S", subset="kor_Hang", category="Clustering"), tmp_path
        )


# ---------------------------------------------------------------------------------------------
# Task lookup
# ---------------------------------------------------------------------------------------------


def test_unknown_task_suggests_close_names() -> None:
    with pytest.raises(KoembedError, match=r"unknown mteb task 'KorSTSS' \(did you mean 'KorSTS'"):
        prepare_task(spec("KorSTSS"), None)


def test_unknown_split_names_valid_ones() -> None:
    with pytest.raises(KoembedError, match=r"no evaluation split 'dev'; valid: test, validation"):
        prepare_task(spec("PawsXPairClassification", "dev", "ko", "NLI"), None)


def test_unknown_subset_names_valid_ones() -> None:
    with pytest.raises(KoembedError) as info:
        prepare_task(spec("STS17", subset="kr-kr"), None)
    message = str(info.value)
    assert "no subset 'kr-kr'" in message and "ko-ko" in message and "\n" not in message
    with pytest.raises(KoembedError, match="has no subsets"):
        prepare_task(spec("KorSTS", subset="ko"), None)


def test_unsupported_task_type() -> None:
    with pytest.raises(KoembedError, match="of type BitextMining"):
        prepare_task(spec("BornholmBitextMining"), None)


# ---------------------------------------------------------------------------------------------
# Injection into the real mteb tasks: shapes and scores
# ---------------------------------------------------------------------------------------------

STS_KEYS = set(scoring.STS_KEYS)
PC_KEYS = {"cosine_ap", "max_ap", "cosine_f1", "similarity_accuracy"}
RETRIEVAL_KEYS = {"ndcg_at_5", "ndcg_at_10", "map_at_10", "recall_at_10", "mrr_at_10"}

REAL_TASKS = [
    ("KorSTS", "test", "default", write_sts, STS_KEYS),
    ("STS17", "test", "ko-ko", write_sts, STS_KEYS),
    ("KLUE-NLI", "validation", "default", write_pairs, PC_KEYS),
    ("PawsXPairClassification", "test", "ko", write_pairs, PC_KEYS),
    ("KlueYnatMrcCategoryClustering", "test", "default", write_texts, {"v_measure"}),
    ("SIB200ClusteringS2S", "test", "kor_Hang", write_texts, {"v_measure", "ami"}),
    ("Ko-StrategyQA", "dev", "default", write_retrieval, RETRIEVAL_KEYS),
    ("XPQARetrieval", "test", "kor-kor", write_retrieval, RETRIEVAL_KEYS),
]


@pytest.mark.parametrize(
    ("task", "split", "subset", "write", "keys"), REAL_TASKS, ids=[t[0] for t in REAL_TASKS]
)
def test_local_copy_of_real_task_is_scored_by_mteb(
    tmp_path: Path,
    encoder: HashEncoder,
    task: str,
    split: str,
    subset: str,
    write: Any,
    keys: set[str],
) -> None:
    directory = layout_dir(tmp_path, task, subset, split)
    write(directory)
    prepared = prepare_task(spec(task, split, subset), tmp_path)
    assert isinstance(prepared, PreparedTask)
    assert prepared.task.metadata.name == task
    assert prepared.task.data_loaded
    assert list(prepared.task.eval_splits) == [split]
    assert prepared.task.hf_subsets == [subset]
    assert prepared.source == f"local:{directory.resolve()}"
    assert prepared.duplicates_dropped == 0

    dataset = prepared.task.dataset
    multilingual = prepared.task.metadata.is_multilingual
    is_retrieval = "Retrieval" in task or task == "Ko-StrategyQA"
    if is_retrieval or multilingual:
        assert list(dataset) == [subset]
        dataset = dataset[subset]
    assert list(dataset) == [split]
    data = dataset[split]

    if write is write_sts:
        assert data.column_names == ["sentence1", "sentence2", "score"]
        assert prepared.sizes == {"pairs": len(STS_ROWS)}
    elif write is write_pairs:
        assert len(data) == 1 and data[0]["labels"] == [y for _, _, y in PAIR_ROWS]
        assert prepared.sizes == {"pairs": len(PAIR_ROWS)}
    elif task == "SIB200ClusteringS2S":
        assert data.column_names == ["sentences", "labels"] and len(data) == len(CLUSTER_ROWS)
        assert prepared.sizes == {"texts": len(CLUSTER_ROWS), "sets": 1}
    elif write is write_texts:
        assert len(data) == 1 and len(data[0]["sentences"]) == len(CLUSTER_ROWS)
        assert prepared.sizes == {"texts": len(CLUSTER_ROWS), "sets": 1}
    else:
        assert set(data) == {"corpus", "queries", "relevant_docs", "top_ranked"}
        assert data["queries"]["id"] == ["q1", "q2", "q3"]  # q4 has no qrel
        assert prepared.sizes == {"queries": 3, "documents": len(CORPUS), "qrels": len(QRELS)}

    entry = only_entry(evaluate(encoder, prepared.task), split, subset)
    assert keys <= set(entry)
    assert all(math.isfinite(entry[k]) for k in keys)


def test_legacy_clustering_sets_become_rows(tmp_path: Path, encoder: HashEncoder) -> None:
    write_texts(layout_dir(tmp_path, "KlueMrcDomainClustering", "default", "test"), sets=3)
    prepared = prepare_task(spec("KlueMrcDomainClustering", category="Clustering"), tmp_path)
    data = prepared.task.dataset["test"]
    assert len(data) == 3
    assert prepared.sizes == {"texts": 3 * len(CLUSTER_ROWS), "sets": 3}
    entry = only_entry(evaluate(encoder, prepared.task), "test", "default")
    assert len(entry["v_measures"]) == 3


def test_korsts_local_copy_scores_exactly_as_mteb(tmp_path: Path, encoder: HashEncoder) -> None:
    write_sts(layout_dir(tmp_path, "KorSTS", "default", "test"))
    local = evaluate(encoder, prepare_task(spec("KorSTS"), tmp_path).task)

    by_hand = mteb.get_task("KorSTS")
    by_hand.dataset = DatasetDict(
        {
            "test": Dataset.from_dict(
                {
                    "sentence1": [a for a, _, _ in STS_ROWS],
                    "sentence2": [b for _, b, _ in STS_ROWS],
                    "score": [s for _, _, s in STS_ROWS],
                }
            )
        }
    )
    by_hand.data_loaded = True
    assert same_scores(local, evaluate(encoder, by_hand))


def test_retrieval_local_copy_scores_exactly_as_mteb(tmp_path: Path, encoder: HashEncoder) -> None:
    write_retrieval(layout_dir(tmp_path, "XPQARetrieval", "kor-kor", "test"))
    local = evaluate(encoder, prepare_task(spec("XPQARetrieval", subset="kor-kor"), tmp_path).task)

    by_hand = mteb.get_task("XPQARetrieval", hf_subsets=["kor-kor"], eval_splits=["test"])
    relevant: dict[str, dict[str, int]] = {}
    for q, d, s in QRELS:
        relevant.setdefault(q, {})[d] = s
    by_hand.dataset = {
        "kor-kor": {
            "test": {
                "corpus": Dataset.from_dict(
                    {
                        "id": [i for i, _, _ in CORPUS],
                        "title": [t for _, t, _ in CORPUS],
                        "text": [x for _, _, x in CORPUS],
                    }
                ),
                "queries": Dataset.from_dict(
                    {"id": [i for i, _ in QUERIES], "text": [x for _, x in QUERIES]}
                ),
                "relevant_docs": relevant,
                "top_ranked": None,
            }
        }
    }
    by_hand.data_loaded = True
    assert same_scores(local, evaluate(encoder, by_hand))


def test_sib200_string_labels_score_as_class_labels(tmp_path: Path, encoder: HashEncoder) -> None:
    write_texts(layout_dir(tmp_path, "SIB200ClusteringS2S", "kor_Hang", "test"))
    task_spec = spec("SIB200ClusteringS2S", subset="kor_Hang", category="Clustering")
    local = evaluate(encoder, prepare_task(task_spec, tmp_path).task)

    by_hand = mteb.get_task("SIB200ClusteringS2S", hf_subsets=["kor_Hang"])
    split = Dataset.from_dict(
        {"labels": [y for _, y in CLUSTER_ROWS], "sentences": [t for t, _ in CLUSTER_ROWS]}
    )
    by_hand.dataset = {"kor_Hang": DatasetDict({"test": split}).class_encode_column("labels")}
    by_hand.data_loaded = True
    assert same_scores(local, evaluate(encoder, by_hand))


# ---------------------------------------------------------------------------------------------
# Custom local tasks
# ---------------------------------------------------------------------------------------------

CUSTOM = [
    ("STS", "STS", write_sts, {"cosine_spearman", *STS_KEYS}, "cosine_spearman"),
    ("PairClassification", "NLI", write_pairs, {"cosine_ap", "max_ap"}, "max_ap"),
    ("Clustering", "Clustering", write_texts, {"v_measure"}, "v_measure"),
    ("Retrieval", "Retrieval", write_retrieval, {"ndcg_at_10", "ndcg_at_5"}, "ndcg_at_10"),
]


@pytest.mark.parametrize(
    ("custom_type", "category", "write", "keys", "main"), CUSTOM, ids=[c[0] for c in CUSTOM]
)
@pytest.mark.parametrize("subset", ["default", "ko"])
def test_custom_task_runs_through_mteb(
    tmp_path: Path,
    encoder: HashEncoder,
    custom_type: str,
    category: str,
    write: Any,
    keys: set[str],
    main: str,
    subset: str,
) -> None:
    name = f"KoembedTest{custom_type}"
    write(layout_dir(tmp_path, name, subset, "test"))
    task_spec = spec(name, "test", subset, category, custom_type=custom_type, data_dir=tmp_path)
    prepared = prepare_task(task_spec, None)
    metadata = prepared.task.metadata
    assert (metadata.name, metadata.type, metadata.main_score) == (name, custom_type, main)
    assert metadata.eval_splits == ["test"]
    assert "local custom" in metadata.description.lower()
    entry = only_entry(evaluate(encoder, prepared.task), "test", subset)
    assert keys <= set(entry)
    assert entry["main_score"] == entry[main]
    if custom_type == "Clustering":
        assert prepared.sizes == {"texts": len(CLUSTER_ROWS), "sets": 1}  # every text clustered


def test_custom_clustering_with_sets_is_legacy(tmp_path: Path, encoder: HashEncoder) -> None:
    write_texts(layout_dir(tmp_path, "Sets", "default", "test"), sets=2)
    prepared = prepare_task(
        spec("Sets", category="Clustering", custom_type="Clustering", data_dir=tmp_path), None
    )
    assert prepared.sizes == {"texts": 2 * len(CLUSTER_ROWS), "sets": 2}
    entry = only_entry(evaluate(encoder, prepared.task), "test", "default")
    assert len(entry["v_measures"]) == 2


def test_custom_sts_on_another_scale(tmp_path: Path, encoder: HashEncoder) -> None:
    """Correlations ignore the scale: the same pairs scored 0-100 give the 0-5 numbers."""
    write_sts(layout_dir(tmp_path, "Narrow", "default", "test"))  # 0..5
    write_sts(
        layout_dir(tmp_path, "Wide", "default", "test"),
        [(a, b, s * 20.0) for a, b, s in STS_ROWS],  # 0..100
    )
    entries = {}
    for name in ("Narrow", "Wide"):
        prepared = prepare_task(spec(name, custom_type="STS", data_dir=tmp_path), None)
        entries[name] = only_entry(evaluate(encoder, prepared.task), "test", "default")
    for key in scoring.STS_KEYS:
        assert math.isfinite(entries["Narrow"][key]), key
        assert entries["Wide"][key] == pytest.approx(entries["Narrow"][key], abs=1e-12), key


# ---------------------------------------------------------------------------------------------
# The Hub unreachable; exporting the layout
# ---------------------------------------------------------------------------------------------


def test_hub_unreachable_points_to_data_dir(empty_hf_cache: Path) -> None:
    with pytest.raises(KoembedError) as info:
        prepare_task(spec("KorSTS"), None)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot download dkoterwa/kor-sts for KorSTS from the Hugging Face")
    assert "--koembed-data-dir DIR" in message
    assert "DIR/KorSTS/default/test/" in message


@pytest.mark.parametrize("write", [write_sts, write_pairs, write_texts, write_retrieval])
def test_export_round_trips(tmp_path: Path, write: Any) -> None:
    kind = {
        write_sts: "STS",
        write_pairs: "PairClassification",
        write_texts: "Clustering",
        write_retrieval: "Retrieval",
    }[write]
    source = tmp_path / "in"
    write(layout_dir(source, "Round", "default", "test"))
    task_spec = spec("Round", custom_type=kind, data_dir=source)
    prepared = prepare_task(task_spec, None)
    out = export_task(task_spec, prepared, tmp_path / "out")
    assert out == layout_dir(tmp_path / "out", "Round", "default", "test")
    if kind in ("STS", "PairClassification"):
        a, b = read_pairs(source / "Round/default/test", kind), read_pairs(out, kind)
        assert (a.sentence1, a.sentence2, a.values) == (b.sentence1, b.sentence2, b.values)
    elif kind == "Clustering":
        a2, b2 = read_texts(source / "Round/default/test"), read_texts(out)
        assert (a2.texts, a2.labels, a2.sets) == (b2.texts, b2.labels, b2.sets)
    else:
        a3, b3 = read_retrieval(source / "Round/default/test"), read_retrieval(out)
        assert (a3.corpus_ids, a3.corpus_titles, a3.corpus_texts) == (
            b3.corpus_ids,
            b3.corpus_titles,
            b3.corpus_texts,
        )
        assert (a3.query_ids, a3.relevant_docs) == (b3.query_ids, b3.relevant_docs)


def test_export_hub_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels = ClassLabel(names=sorted({y for _, y in CLUSTER_ROWS}))
    split = Dataset.from_dict(
        {
            "labels": [labels.str2int(y) for _, y in CLUSTER_ROWS],
            "sentences": [t for t, _ in CLUSTER_ROWS],
        }
    ).cast_column("labels", labels)
    _fake_load(
        monkeypatch,
        "SIB200ClusteringS2S",
        lambda self: {s: DatasetDict({"test": split}) for s in self.hf_subsets},
    )
    task_spec = spec("SIB200ClusteringS2S", subset="kor_Hang", category="Clustering")
    prepared = prepare_task(task_spec, None)
    assert prepared.source.startswith("hub:mteb/sib200@")
    out = export_task(task_spec, prepared, tmp_path)
    rows = read_texts(out)
    assert list(zip(rows.texts, rows.labels, strict=True)) == CLUSTER_ROWS
