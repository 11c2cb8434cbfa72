"""mteb benchmarks as suites: ``mteb-kor-v2``, ``--koembed-suite mteb:<name>``, the mteb scheme."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pytest_koembed.protocol.averages import average_fields, count_tasks
from pytest_koembed.protocol.mteb_suites import task_score
from pytest_koembed.protocol.scoring import mteb_averages, summarize, task_value
from pytest_koembed.protocol.suite import load_suite

pytestmark = pytest.mark.usefixtures("offline")


def _ids(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if line.startswith("koembed::")]


def test_mteb_kor_v2_collects_the_benchmark_offline(pytester: pytest.Pytester) -> None:
    import mteb

    benchmark = mteb.get_benchmark("MTEB(kor, v2)")
    result = pytester.runpytest(
        "--koembed-model=X", "--koembed-suite=mteb-kor-v2", "--collect-only", "-q"
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    ids = _ids(result)
    assert len(ids) == 20
    # one item per task of mteb's benchmark object, in its order, filed by category
    category = {"PairClassification": "NLI"}
    assert [i.split("::", 1)[1] for i in ids] == [
        f"{category.get(t.metadata.type, t.metadata.type)}::{t.metadata.name}"
        for t in benchmark.tasks
    ]
    assert "koembed::Classification::KLUE-TC" in ids
    assert "koembed::Reranking::MIRACLReranking" in ids
    result.stdout.fnmatch_lines(["*20 tests collected*"])


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        ("reranking", ["MIRACLReranking"]),
        ("classification", ["KLUE-TC"]),
        ("nli", ["KLUE-NLI", "KorNLI", "PawsXPairClassification"]),
        ("retrieval", 9),
    ],
)
def test_category_markers_select_tasks(
    pytester: pytest.Pytester, marker: str, expected: list[str] | int
) -> None:
    result = pytester.runpytest(
        "--koembed-model=X",
        "--koembed-suite=mteb-kor-v2",
        "--collect-only",
        "-q",
        "--strict-markers",
        "-m",
        marker,
    )
    names = [i.rsplit("::", 1)[-1] for i in _ids(result)]
    assert (len(names) if isinstance(expected, int) else names) == expected


def test_splits_and_subsets_come_from_the_benchmark() -> None:
    suite = load_suite("mteb-kor-v2")
    assert suite.scheme == "mteb"
    miracl = suite.task("MIRACLRetrieval")  # multilingual in mteb; the benchmark keeps ko
    assert (miracl.subsets, miracl.splits) == (("ko",), ("dev",))
    paws = suite.task("PawsXPairClassification")
    assert paws.cells == (("ko", "test"), ("ko", "validation"))
    belebele = suite.task("BelebeleRetrieval")
    assert len(belebele.cells) == 3
    assert {t.value_rule for t in suite.tasks} == {"main_score"}


def test_any_mteb_benchmark_and_its_other_task_types(pytester: pytest.Pytester) -> None:
    # MTEB(fra, v1) has a Summarization task: a category (and marker) of its own
    result = pytester.runpytest(
        "--koembed-model=X",
        "--koembed-suite=mteb:MTEB(fra, v1)",
        "--koembed-fail-under=summarization=30,weighted=50",  # its categories name gates
        "--koembed-tolerance=Summarization=2",
        "--collect-only",
        "-q",
        "--strict-markers",
        "-m",
        "summarization",
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert _ids(result) == ["koembed::Summarization::SummEvalFr"]
    result.stdout.fnmatch_lines(["*1/25 tests collected (24 deselected)*"])


def test_unknown_benchmark_is_one_line(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--koembed-model=X", "--koembed-suite=mteb:MTEB(korean)")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.strip()]
    assert len(errors) == 1, errors
    assert errors[0].startswith("ERROR: unknown mteb benchmark 'MTEB(korean)'; close names: ")
    assert "'MTEB(kor, v2)'" in errors[0]


def test_mteb_scheme_by_hand() -> None:
    """Means of unrounded values, rounded once (mteb); the leaderboards round values first."""
    rows = [("a", "Retrieval", 10.0049), ("b", "Retrieval", 10.0149), ("c", "STS", 80.0)]
    mteb_way = summarize(rows, "mteb")
    # Retrieval: (10.0049 + 10.0149) / 2 = 10.0099; tasks: 100.0198 / 3 = 33.3399...
    assert mteb_way.category_averages == {"STS": 80.0, "Retrieval": 10.01}
    assert mteb_way.weighted == 33.34
    # the Korean leaderboards' rule: shown values 10.0 and 10.01, mean 10.005, half-even 10.0
    assert summarize(rows, "task-mean").category_averages["Retrieval"] == 10.0
    block = mteb_averages([("Retrieval", 10.0049), ("Retrieval", 10.0149), ("STS", 80.0)])
    # Mean (TaskType): (10.0099 + 80.0) / 2 = 45.00495 -> 45.0
    assert block == {
        "Mean (Task)": 33.34,
        "Mean (TaskType)": 45.0,
        "task_types": {"Retrieval": 10.01, "STS": 80.0},
    }
    missing = mteb_averages([("Retrieval", 10.0), ("STS", None)])
    assert missing["Mean (Task)"] is None and missing["task_types"] == {
        "Retrieval": None,
        "STS": None,
    }


def _fabricated_results() -> tuple[list, dict[str, float]]:
    """mteb TaskResults with made-up main scores (6 decimals, as mteb's files keep them) for
    every cell of every MTEB(kor, v2) task, plus a subset the benchmark drops; and each task's
    value as the plugin computes it from them."""
    import mteb
    from mteb.results import TaskResult

    draw = random.Random(12)
    results, values = [], {}
    for task in mteb.get_benchmark("MTEB(kor, v2)").tasks:
        subsets = list(task.hf_subsets)
        if task.metadata.name == "MIRACLRetrieval":
            subsets.append("en")  # scored by mteb, not part of the Korean benchmark
        scores = {
            split: {s: {"main_score": round(draw.uniform(0.2, 0.95), 6)} for s in subsets}
            for split in task.eval_splits
        }
        result = TaskResult.from_task_results(task, scores, evaluation_time=1.0)
        results.append(result)
        values[task.metadata.name] = task_value("main_score", task_score(result, task))
    return results, values


def test_mteb_scheme_equals_mtebs_own_aggregation() -> None:
    """The record's averages of fabricated scores equal mteb's Benchmark.get_score of the same
    results, shown as its leaderboard shows them."""
    import mteb
    from mteb.results import BenchmarkResults, ModelResult

    benchmark = mteb.get_benchmark("MTEB(kor, v2)")
    suite = load_suite("mteb-kor-v2")
    results, values = _fabricated_results()
    own = benchmark.get_score(
        BenchmarkResults(
            model_results=[ModelResult(model_name="m", model_revision="r", task_results=results)]
        )
    )["m"]
    counts = count_tasks(suite, dict.fromkeys(values, "ok"), values)
    fields = average_fields(suite, "mteb", values, counts)
    shown = fields["mteb_averages"]

    def leaderboard(score: float) -> float:  # mteb/leaderboard/table.py _format_scores
        return round(score * 100, 2)

    assert shown["Mean (Task)"] == leaderboard(own["Mean(Task)"])
    assert shown["Mean (TaskType)"] == leaderboard(own["Mean(TaskType)"])
    types = ["Classification", "Clustering", "PairClassification", "Reranking", "Retrieval", "STS"]
    assert shown["task_types"] == {t: leaderboard(own[t]) for t in types}
    assert fields["weighted_average"] == shown["Mean (Task)"]
    assert fields["category_averages"]["NLI"] == shown["task_types"]["PairClassification"]
    # a multi-cell task's value is the mean over the cells the benchmark keeps
    paws = next(r for r in results if r.task_name == "PawsXPairClassification")
    cells = [e["main_score"] for split in paws.scores.values() for e in split]
    assert values["PawsXPairClassification"] == pytest.approx(100 * sum(cells) / 2, abs=1e-12)


def test_rescore_reads_mteb_result_files_as_the_benchmark_scores_them(tmp_path: Path) -> None:
    """``koembed rescore DIR --suite mteb-kor-v2`` on mteb's own result files (written by
    ``TaskResult.to_disk``): the same task values as from the run, over the benchmark's cells."""
    from pytest_koembed.reports.rescore import collect_results, score_model

    results, values = _fabricated_results()
    folder = tmp_path / "results" / "acme__model" / "rev"
    folder.mkdir(parents=True)
    for result in results:
        result.to_disk(folder / f"{result.task_name}.json")
    (models,) = collect_results(tmp_path / "results")
    scored = score_model(models, load_suite("mteb-kor-v2"))
    assert scored.values == pytest.approx(values, abs=1e-9)


# Hand-written pairs: the last KorSTS row repeats the third (mteb keeps both).
STS_ROWS = [
    ("아이들이 공원에서 공을 차며 놀고 있다.", "공원에서 아이들이 축구를 하고 있다.", 4.2),
    ("남자가 부엌에서 양파를 썰고 있다.", "한 남자가 양파를 자르고 있다.", 4.6),
    ("여자가 피아노를 연주하고 있다.", "남자가 기타를 치고 있다.", 1.4),
    ("비행기가 활주로에서 이륙하고 있다.", "비행기 한 대가 하늘로 떠오르고 있다.", 4.0),
    ("고양이가 창가에서 햇볕을 쬐고 있다.", "개가 마당에서 뼈다귀를 씹고 있다.", 0.8),
    ("여자가 피아노를 연주하고 있다.", "남자가 기타를 치고 있다.", 1.4),
]
PAIRS_TEST = [
    ("남자가 자전거를 타고 출근하고 있다.", "한 사람이 자전거를 타고 있다.", 1),
    ("아이가 케이크의 촛불을 끄고 있다.", "생일 파티가 열리고 있다.", 1),
    ("학생들이 교실에서 시험을 보고 있다.", "학생들이 운동장에서 축구를 하고 있다.", 0),
    ("노인이 공원 벤치에 앉아 신문을 읽는다.", "노인이 침대에서 자고 있다.", 0),
]
PAIRS_VALIDATION = [
    ("개가 공을 물고 달려오고 있다.", "동물이 움직이고 있다.", 1),
    ("가게 문이 굳게 닫혀 있다.", "가게가 손님으로 붐비고 있다.", 0),
    ("두 사람이 악수를 하고 있다.", "두 사람이 서로 인사를 나누고 있다.", 1),
    ("기차가 역을 막 떠났다.", "기차가 아직 역에 도착하지 않았다.", 0),
]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")


def _pairs(rows: list[tuple[str, str, int]]) -> list[dict]:
    return [{"sentence1": a, "sentence2": b, "label": label} for a, b, label in rows]


def _plain_mteb_pawsx(minilm_dir: Path) -> dict[str, list[float]]:
    """Plain mteb: the benchmark's own PawsX task (ko, test and validation) on the same rows."""
    import copy

    import mteb
    from datasets import Dataset, DatasetDict
    from sentence_transformers import SentenceTransformer

    def one_row(rows: list[tuple[str, str, int]]) -> Dataset:
        columns = list(zip(*rows, strict=True))
        return Dataset.from_dict(
            {"sentence1": [list(columns[0])], "sentence2": [list(columns[1])], "labels": [
                list(columns[2])
            ]}
        )  # fmt: skip

    benchmark = mteb.get_benchmark("MTEB(kor, v2)")
    task = copy.deepcopy(next(t for t in benchmark.tasks if t.metadata.name.startswith("PawsX")))
    task.dataset = {
        "ko": DatasetDict({"test": one_row(PAIRS_TEST), "validation": one_row(PAIRS_VALIDATION)})
    }
    task.data_loaded = True
    model = SentenceTransformer(str(minilm_dir), device="cpu")
    result = mteb.evaluate(model, task, cache=None, show_progress_bar=False).task_results[0]
    return {split: [e["main_score"] for e in entries] for split, entries in result.scores.items()}


def test_benchmark_tasks_run_on_local_copies_as_mteb_scores_them(
    pytester: pytest.Pytester, minilm_dir: Path
) -> None:
    data = pytester.path / "data"
    sts = [{"sentence1": a, "sentence2": b, "score": s} for a, b, s in STS_ROWS]
    _write_jsonl(data / "KorSTS" / "default" / "test" / "pairs.jsonl", sts)
    paws = data / "PawsXPairClassification" / "ko"
    _write_jsonl(paws / "test" / "pairs.jsonl", _pairs(PAIRS_TEST))
    _write_jsonl(paws / "validation" / "pairs.jsonl", _pairs(PAIRS_VALIDATION))
    record_path = pytester.path / "run.json"
    result = pytester.runpytest(
        f"--koembed-model={minilm_dir}",
        "--koembed-suite=mteb-kor-v2",
        f"--koembed-data-dir={data}",
        f"--koembed-json={record_path}",
        "-k",
        "KorSTS or PawsX",
    )
    result.assert_outcomes(passed=2, deselected=18)
    record = json.loads(record_path.read_text(encoding="utf-8"))
    tasks = {t["column"]: t for t in record["tasks"]}
    korsts = tasks["KorSTS"]
    assert (korsts["n_examples"], korsts["duplicates_dropped"]) == (6, 0)  # no de-duplication
    assert korsts["value"] == pytest.approx(100 * korsts["scores"]["cosine_spearman"], abs=1e-12)
    pawsx = tasks["PawsXPairClassification"]
    assert (pawsx["split"], pawsx["subset"], pawsx["n_examples"]) == ("test,validation", "ko", 8)
    expected = _plain_mteb_pawsx(minilm_dir)
    cells = expected["test"] + expected["validation"]
    assert pawsx["value"] == pytest.approx(100 * sum(cells) / 2, abs=1e-6)
    assert record["scheme"] == "mteb"
    assert record["mteb_averages"]["Mean (Task)"] is None  # 2 of 20 tasks: mteb shows none
    result.stdout.fnmatch_lines(
        [
            "weighted average n/a (scheme mteb: Mean (Task)); not computed*",
            "mteb: Mean (Task) n/a | Mean (TaskType) n/a | Classification n/a | *",
        ]
    )


# Fabricated "Hub" data for KLUE-TC (topic classification: train and validation) and
# MIRACLReranking (queries with candidate documents): hand-written Korean, three topics.
TOPIC_TEXTS = {
    0: [
        "정부가 내년 예산안을 국회에 제출했다.",
        "여야가 선거법 개정안을 두고 맞섰다.",
        "대통령이 새 장관을 임명했다.",
        "국회가 본회의에서 법안을 통과시켰다.",
        "총리가 국정 현안을 설명했다.",
        "야당이 정부 정책을 비판했다.",
    ],
    1: [
        "주가가 이틀 연속 크게 올랐다.",
        "중앙은행이 기준금리를 동결했다.",
        "수출 실적이 작년보다 늘었다.",
        "환율이 급등해 수입 물가가 올랐다.",
        "반도체 기업의 영업이익이 늘었다.",
        "부동산 거래량이 크게 줄었다.",
    ],
    2: [
        "대표팀이 결승전에서 역전승을 거뒀다.",
        "그 투수는 완봉승을 기록했다.",
        "마라톤 대회에 만 명이 참가했다.",
        "축구 리그 개막전이 매진되었다.",
        "수영 선수가 세계 신기록을 세웠다.",
        "농구 팀이 연장전 끝에 패했다.",
    ],
}
RERANK_QUERIES = {"q1": "기준금리는 어떻게 되었나?", "q2": "결승전 결과는?"}
RERANK_DOCS = {f"d{topic}{i}": text for topic, texts in TOPIC_TEXTS.items() for i, text in
               enumerate(texts)}  # fmt: skip
RERANK_RELEVANT = {"q1": {"d11": 1}, "q2": {"d20": 1, "d25": 1}}
RERANK_CANDIDATES = {"q1": ["d10", "d11", "d12", "d01", "d20"], "q2": ["d20", "d21", "d25", "d13"]}

FAKE_HUB = """
from datasets import Dataset, DatasetDict

from pytest_koembed.protocol import mteb_suites

TOPIC_TEXTS = {topics!r}
QUERIES = {queries!r}
DOCS = {docs!r}
RELEVANT = {relevant!r}
CANDIDATES = {candidates!r}


def hub_data(name):
    if name == "KLUE-TC":
        def rows(part):
            pairs = [(t, label) for label, texts in TOPIC_TEXTS.items() for t in part(texts)]
            texts, labels = zip(*pairs)
            return Dataset.from_dict({{"text": list(texts), "label": list(labels)}})
        return DatasetDict({{"train": rows(lambda t: t[:4]), "validation": rows(lambda t: t[4:])}})
    return {{"ko": {{"dev": {{
        "corpus": Dataset.from_dict({{"id": list(DOCS), "title": [""] * len(DOCS),
                                     "text": list(DOCS.values())}}),
        "queries": Dataset.from_dict({{"id": list(QUERIES), "text": list(QUERIES.values())}}),
        "relevant_docs": RELEVANT,
        "top_ranked": CANDIDATES,
    }}}}}}


_real = mteb_suites.benchmark_task


def from_fake_hub(spec):
    task = _real(spec)

    def load_data(**kwargs):
        task.dataset = hub_data(spec.task)
        task.data_loaded = True

    task.load_data = load_data
    return task


def pytest_configure(config):
    mteb_suites.benchmark_task = from_fake_hub


def pytest_unconfigure(config):
    mteb_suites.benchmark_task = _real
"""


def _plain_mteb_scores(minilm_dir: Path, conftest_source: str) -> dict[str, float]:
    """Plain mteb on the same data: the benchmark's own task objects, a raw model."""
    import copy

    import mteb
    from sentence_transformers import SentenceTransformer

    namespace: dict = {}
    exec(compile(conftest_source, "fake_hub", "exec"), namespace)  # its hub_data()
    model = SentenceTransformer(str(minilm_dir), device="cpu")
    scores = {}
    for task in mteb.get_benchmark("MTEB(kor, v2)").tasks:
        if task.metadata.name in ("KLUE-TC", "MIRACLReranking"):
            task = copy.deepcopy(task)
            task.dataset = namespace["hub_data"](task.metadata.name)
            task.data_loaded = True
            result = mteb.evaluate(model, task, cache=None, show_progress_bar=False)
            scores[task.metadata.name] = result.task_results[0].get_score()
    return scores


def test_classification_and_reranking_of_the_benchmark_score_as_mteb(
    pytester: pytest.Pytester, minilm_dir: Path
) -> None:
    source = FAKE_HUB.format(
        topics=TOPIC_TEXTS,
        queries=RERANK_QUERIES,
        docs=RERANK_DOCS,
        relevant=RERANK_RELEVANT,
        candidates=RERANK_CANDIDATES,
    )
    pytester.makeconftest(source)
    record_path = pytester.path / "run.json"
    result = pytester.runpytest(
        f"--koembed-model={minilm_dir}",
        "--koembed-suite=mteb-kor-v2",
        f"--koembed-json={record_path}",
        "--koembed-with-tests",  # the conftest above is loaded; there are no test files
        "-m",
        "classification or reranking",
    )
    result.assert_outcomes(passed=2, deselected=18)
    tasks = {t["column"]: t for t in json.loads(record_path.read_text("utf-8"))["tasks"]}
    expected = _plain_mteb_scores(minilm_dir, source)
    assert tasks["KLUE-TC"]["task_type"] == "Classification"
    assert tasks["KLUE-TC"]["value"] == pytest.approx(100 * expected["KLUE-TC"], abs=1e-6)
    reranking = tasks["MIRACLReranking"]
    assert reranking["category"] == "Reranking" and reranking["main_score"] == "ndcg_at_10"
    assert reranking["value"] == pytest.approx(100 * expected["MIRACLReranking"], abs=1e-6)
    assert reranking["sizes"] == {"queries": 2, "documents": 18, "qrels": 3, "candidates": 9}
    assert reranking["source"].startswith("hub:")


def test_mirror_writes_every_cell_as_mteb_has_it(pytester: pytest.Pytester) -> None:
    from pytest_koembed.data.mirror import mirror_suite

    data = pytester.path / "data"
    sts = [{"sentence1": a, "sentence2": b, "score": s} for a, b, s in STS_ROWS]
    _write_jsonl(data / "KorSTS" / "default" / "test" / "pairs.jsonl", sts)
    paws = data / "PawsXPairClassification" / "ko"
    _write_jsonl(paws / "test" / "pairs.jsonl", _pairs(PAIRS_TEST))
    _write_jsonl(paws / "validation" / "pairs.jsonl", _pairs(PAIRS_VALIDATION))
    out = pytester.path / "mirror"
    written = mirror_suite(
        "mteb-kor-v2", out, source=data, columns=["KorSTS", "PawsXPairClassification"]
    )
    assert [(column, n, dropped) for column, _, n, dropped in written] == [
        ("KorSTS [default/test]", 6, 0),  # the repeated pair is kept, as mteb keeps it
        ("PawsXPairClassification [ko/test]", 4, 0),
        ("PawsXPairClassification [ko/validation]", 4, 0),
    ]
    mirrored = out / "PawsXPairClassification" / "ko" / "validation" / "pairs.jsonl"
    assert [json.loads(line) for line in mirrored.read_text("utf-8").splitlines()] == _pairs(
        PAIRS_VALIDATION
    )
