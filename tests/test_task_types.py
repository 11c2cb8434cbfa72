"""Classification and Reranking: custom local tasks, local copies of mteb tasks, mirror, summary.

The sample suite's two tasks of these types are scored with the shipped MiniLM and compared with
plain ``mteb.evaluate`` on real mteb tasks (KLUE-TC, MIRACLReranking) holding the same rows, read
here from the files without the plugin.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from koembed_test_encoders import HASHING_ENCODER

from pytest_koembed.cli import main as koembed
from pytest_koembed.data.prepare import prepare_task
from pytest_koembed.errors import KoembedError
from pytest_koembed.evaluation.per_example import recompute_value
from pytest_koembed.evaluation.run import evaluate_task
from pytest_koembed.protocol.spec import CATEGORIES
from pytest_koembed.protocol.suite import load_suite
from pytest_koembed.resources import suites_dir

pytestmark = pytest.mark.usefixtures("offline")

SAMPLE_DATA = suites_dir() / "sample-data"


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _write(path: Path, rows: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            (row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n"
            for row in rows
        ),
        encoding="utf-8",
    )


class Hashing:
    """Hashed character bigrams: deterministic, no model to load."""

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 64), dtype="float32")
        for i, text in enumerate(texts):
            for gram in (text[j : j + 2] for j in range(max(1, len(text) - 1))):
                out[i, zlib.crc32(gram.encode()) % 64] += 1.0
        return out + 1e-3


# ---------------------------------------------------------------------------------------------
# The sample suite's two tasks with the shipped MiniLM equal plain mteb
# ---------------------------------------------------------------------------------------------


def _klue_tc_with_sample_rows() -> Any:
    """mteb's own KLUE-TC task holding the sample classification rows (train and test)."""
    import mteb
    from datasets import Dataset, DatasetDict

    folder = SAMPLE_DATA / "KoembedSampleClassification" / "default" / "test"
    splits = {}
    for name, split in (("train.jsonl", "train"), ("test.jsonl", "validation")):
        rows = _rows(folder / name)
        splits[split] = Dataset.from_dict(
            {"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]}
        )
    task = mteb.get_task("KLUE-TC")
    task.dataset = DatasetDict(splits)
    task.data_loaded = True
    return task


def _miracl_with_sample_rows() -> Any:
    """mteb's own MIRACLReranking (ko) holding the sample reranking rows."""
    import mteb
    from datasets import Dataset

    folder = SAMPLE_DATA / "KoembedSampleReranking" / "default" / "test"
    corpus, queries = _rows(folder / "corpus.jsonl"), _rows(folder / "queries.jsonl")
    relevant: dict[str, dict[str, int]] = {}
    for row in _rows(folder / "qrels.jsonl"):
        relevant.setdefault(row["query_id"], {})[row["doc_id"]] = row["score"]
    task = mteb.get_task("MIRACLReranking", hf_subsets=["ko"], eval_splits=["dev"])
    task.dataset = {
        "ko": {
            "dev": {
                "corpus": Dataset.from_dict(
                    {
                        "id": [r["id"] for r in corpus],
                        "title": [""] * len(corpus),
                        "text": [r["text"] for r in corpus],
                    }
                ),
                "queries": Dataset.from_dict(
                    {"id": [r["id"] for r in queries], "text": [r["text"] for r in queries]}
                ),
                "relevant_docs": relevant,
                "top_ranked": {
                    r["query_id"]: r["doc_ids"] for r in _rows(folder / "candidates.jsonl")
                },
            }
        }
    }
    task.data_loaded = True
    return task


def test_sample_classification_and_reranking_equal_plain_mteb(
    run_pytest: Any, tmp_path: Path, minilm_dir: Path
) -> None:
    import mteb
    from sentence_transformers import SentenceTransformer

    record_path = tmp_path / "run.json"
    result = run_pytest(
        tmp_path,
        f"--koembed-model={minilm_dir}",
        "--koembed-suite=sample",
        "-m",
        "classification or reranking",
        f"--koembed-json={record_path}",
    )
    assert result.ret == 0, result.stdout
    tasks = {t["column"]: t for t in json.loads(record_path.read_text("utf-8"))["tasks"]}
    assert set(tasks) == {"sample-classification", "sample-reranking"}

    model = SentenceTransformer(str(minilm_dir))
    plain = {}
    for column, task in (
        ("sample-classification", _klue_tc_with_sample_rows()),
        ("sample-reranking", _miracl_with_sample_rows()),
    ):
        out = mteb.evaluate(
            model, task, cache=None, overwrite_strategy="always", show_progress_bar=False
        )
        plain[column] = out.task_results[0].scores[task.metadata.eval_splits[0]][0]

    classification, reranking = tasks["sample-classification"], tasks["sample-reranking"]
    # mteb's main scores: accuracy over 10 logistic regressions; nDCG@10 over the candidates
    assert classification["main_score"] == "accuracy"
    assert classification["value"] == pytest.approx(
        100 * plain["sample-classification"]["accuracy"]
    )
    assert reranking["main_score"] == "ndcg_at_10"
    assert reranking["value"] == pytest.approx(100 * plain["sample-reranking"]["ndcg_at_10"])
    assert reranking["scores"]["map_at_10"] == pytest.approx(plain["sample-reranking"]["map_at_10"])
    assert classification["sizes"] == {"texts": 24, "train": 30, "train_encoded": 30, "labels": 3}
    assert reranking["sizes"] == {"queries": 8, "documents": 40, "qrels": 16, "candidates": 40}
    # per-example results recompute the value, so both have intervals
    for task in (classification, reranking):
        assert task["ci"]["low"] <= task["value"] <= task["ci"]["high"], task["column"]
    result.fnmatch_lines(
        [
            "suite sample: 2 of 6 tasks scored, 4 deselected",
            "sample-classification*Classification*.?? ±*",
            "sample-reranking*Reranking*.?? ±*",
            "category averages: STS n/a (0 of 1 tasks) | * | Classification *.?? ±* | "
            "Reranking *.?? ±*",
        ]
    )


# ---------------------------------------------------------------------------------------------
# The summary with six categories
# ---------------------------------------------------------------------------------------------


def test_summary_shows_six_categories(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HASHING_ENCODER)
    record_path = pytester.path / "run.json"
    result = pytester.runpytest(
        "--koembed-model=hashing", "--koembed-suite=sample", f"--koembed-json={record_path}"
    )
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(
        [
            "suite sample: 6 of 6 tasks scored",
            "sample-classification*Classification*",
            "sample-reranking*Reranking*",
            "category averages: STS * | NLI * | Clustering * | Retrieval * | Classification * "
            "| Reranking *",
            "weighted average * (scheme ko-leaderboard-v1: R/3 + C/3 + (S+N)/9); "
            "Classification, Reranking not weighted by this scheme",
        ]
    )
    record = json.loads(record_path.read_text("utf-8"))
    assert list(record["category_averages"]) == list(CATEGORIES)
    averages = record["category_averages"]
    # the v1 weighted average is the leaderboard's formula over its four categories only
    expected = (
        averages["Retrieval"] / 3
        + averages["Clustering"] / 3
        + (averages["STS"] + averages["NLI"]) / 9
    )
    assert record["weighted_average"] == pytest.approx(expected, abs=0.005)
    for task in record["tasks"]:
        assert task["ci"] is not None, task["column"]


# ---------------------------------------------------------------------------------------------
# Bad rows: one line each
# ---------------------------------------------------------------------------------------------


def _classification_suite(tmp_path: Path, train: list[Any], test: list[Any]) -> Any:
    folder = tmp_path / "data" / "MyTopics" / "default" / "test"
    _write(folder / "train.jsonl", train)
    _write(folder / "test.jsonl", test)
    suite = tmp_path / "suite.toml"
    suite.write_text(
        '[[tasks]]\ntask = "MyTopics"\ntype = "Classification"\ndata = "data"\n'
        'category = "Classification"\n',
        encoding="utf-8",
    )
    return load_suite(str(suite)).tasks[0]


GOOD_TRAIN = [{"text": f"문장 {i}", "label": "가" if i % 2 else "나"} for i in range(6)]
GOOD_TEST = [{"text": "시험 문장", "label": "가"}, {"text": "두 번째", "label": "나"}]


@pytest.mark.parametrize(
    ("train", "test", "message"),
    [
        (GOOD_TRAIN, [{"text": "시험", "label": "다"}], "label '다' (row 1) has no example in"),
        (GOOD_TRAIN, [{"text": "시험"}], "missing key 'label'"),
        (GOOD_TRAIN, [{"text": "", "label": "가"}], "'text' is empty"),
        (GOOD_TRAIN, [{"text": "시험", "label": 1.5}], "'label' must be a string or an integer"),
        (
            [*GOOD_TRAIN, {"text": "숫자", "label": 3}],
            GOOD_TEST,
            "'label' is an integer but line 1 has a string label",
        ),
        ([{"text": "하나", "label": "가"}], GOOD_TEST, "a classifier needs at least 2 labels"),
        (GOOD_TRAIN, ["{not json"], "test.jsonl:1: not valid JSON"),
    ],
)
def test_bad_classification_rows_are_one_line(
    tmp_path: Path, train: list[Any], test: list[Any], message: str
) -> None:
    spec = _classification_suite(tmp_path, train, test)
    with pytest.raises(KoembedError) as info:
        prepare_task(spec, None)
    text = str(info.value)
    assert message in text and "\n" not in text


def _reranking_spec(tmp_path: Path, candidates: list[Any]) -> Any:
    folder = tmp_path / "data" / "MyRerank" / "default" / "test"
    _write(folder / "corpus.jsonl", [{"id": f"d{i}", "text": f"문서 {i}"} for i in range(4)])
    _write(folder / "queries.jsonl", [{"id": "q1", "text": "질문"}, {"id": "q2", "text": "다른"}])
    _write(
        folder / "qrels.jsonl",
        [
            {"query_id": "q1", "doc_id": "d0", "score": 1},
            {"query_id": "q2", "doc_id": "d2", "score": 1},
        ],
    )
    if candidates is not None:
        _write(folder / "candidates.jsonl", candidates)
    suite = tmp_path / "suite.toml"
    suite.write_text(
        '[[tasks]]\ntask = "MyRerank"\ntype = "Reranking"\ndata = "data"\ncategory = "Reranking"\n',
        encoding="utf-8",
    )
    return load_suite(str(suite)).tasks[0]


Q2 = {"query_id": "q2", "doc_ids": ["d2", "d3"]}


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        (None, "missing file"),
        ([{"query_id": "q1", "doc_ids": ["d0", "d9"]}, Q2], "doc_id 'd9' is not in corpus.jsonl"),
        ([{"query_id": "q1", "doc_ids": []}, Q2], "'doc_ids' must be a non-empty array"),
        ([{"query_id": "q1", "doc_ids": "d0"}, Q2], "'doc_ids' must be a non-empty array"),
        ([{"query_id": "q1", "doc_ids": ["d0", "d0"]}, Q2], "doc_id 'd0' is listed twice"),
        ([{"query_id": "q7", "doc_ids": ["d0"]}, Q2], "query_id 'q7' is not in queries.jsonl"),
        ([Q2], "query 'q1' has qrels but no candidates"),
        ([Q2, Q2], "duplicate query_id 'q2'"),
    ],
)
def test_bad_reranking_rows_are_one_line(
    tmp_path: Path, candidates: list[Any] | None, message: str
) -> None:
    spec = _reranking_spec(tmp_path, candidates)
    with pytest.raises(KoembedError) as info:
        prepare_task(spec, None)
    text = str(info.value)
    assert message in text and "\n" not in text
    if candidates is None:
        assert "candidates.jsonl" in text and "Reranking layout" in text


def test_a_bad_row_fails_its_item_with_one_line(pytester: pytest.Pytester) -> None:
    folder = pytester.path / "data" / "MyTopics" / "default" / "test"
    _write(folder / "train.jsonl", GOOD_TRAIN)
    _write(folder / "test.jsonl", [{"text": "시험", "label": "다"}])
    (pytester.path / "suite.toml").write_text(
        '[[tasks]]\ntask = "MyTopics"\ntype = "Classification"\ndata = "data"\n'
        'category = "Classification"\n',
        encoding="utf-8",
    )
    pytester.makeconftest(HASHING_ENCODER)
    result = pytester.runpytest("--koembed-model=hashing", "--koembed-suite=suite.toml")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test.jsonl: label '다' (row 1) has no example in train.jsonl*"])
    assert "Traceback" not in result.stdout.str()


# ---------------------------------------------------------------------------------------------
# koembed mirror: real mteb tasks of both types, written and read back
# ---------------------------------------------------------------------------------------------

TOPIC_TRAIN = [
    ("내일은 전국에 비가 오겠습니다.", "날씨"),
    ("주말에는 맑고 따뜻하겠습니다.", "날씨"),
    ("밤사이 기온이 크게 떨어집니다.", "날씨"),
    ("대표팀이 결승에 진출했다.", "스포츠"),
    ("그 선수는 시즌 20호 골을 넣었다.", "스포츠"),
    ("야구 경기가 비로 취소되었다.", "스포츠"),
]
TOPIC_TEST = [
    ("오후에 소나기가 내리겠습니다.", "날씨"),
    ("축구 대표팀이 역전승을 거뒀다.", "스포츠"),
    ("바람이 강하게 불겠습니다.", "날씨"),
]
RERANK_DOCS = {
    "a": "여권은 구청 민원실에서 재발급받을 수 있다.",
    "b": "여권 사진은 흰 배경이어야 한다.",
    "c": "김치는 서늘한 곳에 두어야 덜 시어진다.",
    "e": "김치찌개에는 잘 익은 김치가 어울린다.",
}
RERANK_QUERIES = {"1": "여권을 잃어버리면 어디서 다시 만드나요?", "2": "김치를 오래 두는 법은?"}


def _fake_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """KLUE-TC and MIRACLReranking load the rows above, in mteb's shapes, without the Hub."""
    import mteb
    from datasets import Dataset, DatasetDict

    def klue_tc(self: Any) -> Any:
        def split(rows: list[tuple[str, str]]) -> Any:
            return Dataset.from_dict(
                {
                    "text": [t for t, _ in rows],
                    "label": [y for _, y in rows],
                    "guid": ["x"] * len(rows),
                }
            )

        return DatasetDict({"train": split(TOPIC_TRAIN), "validation": split(TOPIC_TEST)})

    def miracl(self: Any) -> Any:
        corpus = Dataset.from_dict(
            {"id": list(RERANK_DOCS), "title": [""] * 4, "text": list(RERANK_DOCS.values())}
        )
        queries = Dataset.from_dict(
            {"id": list(RERANK_QUERIES), "text": list(RERANK_QUERIES.values())}
        )
        return {
            "ko": {
                "dev": {
                    "corpus": corpus,
                    "queries": queries,
                    "relevant_docs": {"1": {"a": 1}, "2": {"c": 1}},
                    "top_ranked": {"1": ["b", "a", "c"], "2": ["e", "c", "a"]},
                }
            }
        }

    for name, build in (("KLUE-TC", klue_tc), ("MIRACLReranking", miracl)):

        def load_data(self: Any, num_proc: Any = None, _b: Any = build, **kwargs: Any) -> None:
            self.dataset = _b(self)
            self.data_loaded = True

        monkeypatch.setattr(type(mteb.get_task(name)), "load_data", load_data)


def test_mirror_writes_classification_and_reranking_and_reads_them_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_hub(monkeypatch)
    suite_path = tmp_path / "mteb-two.toml"
    suite_path.write_text(
        '[[tasks]]\ntask = "KLUE-TC"\nsplit = "validation"\ncategory = "Classification"\n\n'
        '[[tasks]]\ntask = "MIRACLReranking"\nsplit = "dev"\nsubset = "ko"\n'
        'category = "Reranking"\n',
        encoding="utf-8",
    )
    mirror = tmp_path / "mirror"
    assert koembed(["mirror", str(mirror), "--suite", str(suite_path)]) == 0
    out = capsys.readouterr().out
    assert "KLUE-TC: 3 examples -> " in out and "MIRACLReranking: 2 examples -> " in out

    tc = mirror / "KLUE-TC" / "default" / "validation"
    assert _rows(tc / "train.jsonl") == [{"text": t, "label": y} for t, y in TOPIC_TRAIN]
    assert _rows(tc / "test.jsonl") == [{"text": t, "label": y} for t, y in TOPIC_TEST]
    rr = mirror / "MIRACLReranking" / "ko" / "dev"
    assert _rows(rr / "candidates.jsonl") == [
        {"query_id": "1", "doc_ids": ["b", "a", "c"]},
        {"query_id": "2", "doc_ids": ["e", "c", "a"]},
    ]
    assert {r["id"] for r in _rows(rr / "corpus.jsonl")} == set(RERANK_DOCS)
    meta = json.loads((rr / "koembed-mirror.json").read_text("utf-8"))
    assert meta["sizes"] == {"queries": 2, "documents": 4, "qrels": 2, "candidates": 6}

    # the (fake) Hub and the mirror give the very same scores and per-example results
    encoder = Hashing()
    for spec in load_suite(str(suite_path)).tasks:
        from_hub = evaluate_task(spec, encoder)
        from_mirror = evaluate_task(spec, encoder, data_dir=mirror)
        assert from_mirror.source.startswith("local:") and from_hub.source.startswith("hub:")
        assert from_mirror.scores == from_hub.scores, spec.column
        assert from_mirror.sizes == from_hub.sizes, spec.column
        assert from_mirror.examples is not None and from_hub.examples is not None
        assert from_mirror.examples.equals(from_hub.examples)
        assert recompute_value(from_mirror.examples, "main_score", from_mirror.main_score) == (
            pytest.approx(from_mirror.value)
        )


def test_classification_valued_by_f1_keeps_no_examples(tmp_path: Path) -> None:
    """macro F1 is not a mean over texts: no per-example results, so no interval (said so)."""
    spec = _classification_suite(tmp_path, GOOD_TRAIN, GOOD_TEST)
    from dataclasses import replace

    score = evaluate_task(replace(spec, value_rule="f1"), Hashing())
    assert score.value == pytest.approx(100 * score.scores["f1"])
    assert score.examples is None
    assert "only accuracy has per-example results" in (score.examples_error or "")
