"""--koembed-data-dir: a local copy of a real mteb task scores as mteb scores the same rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("offline")

# Hand-written pairs (0-5 scale, as KorSTS); the last two repeat earlier pairs, once reversed.
KORSTS_ROWS = [
    ("아이들이 공원에서 공을 차며 놀고 있다.", "공원에서 아이들이 축구를 하고 있다.", 4.2),
    ("남자가 부엌에서 양파를 썰고 있다.", "한 남자가 양파를 자르고 있다.", 4.6),
    ("여자가 피아노를 연주하고 있다.", "남자가 기타를 치고 있다.", 1.4),
    ("비행기가 활주로에서 이륙하고 있다.", "비행기 한 대가 하늘로 떠오르고 있다.", 4.0),
    ("고양이가 창가에서 햇볕을 쬐고 있다.", "개가 마당에서 뼈다귀를 씹고 있다.", 0.8),
    ("시장이 새 도서관 건립 계획을 발표했다.", "새 도서관을 짓겠다는 계획이 공개되었다.", 3.8),
    ("두 사람이 산길을 따라 걷고 있다.", "사람들이 바닷가에서 수영을 하고 있다.", 1.0),
    ("학생이 시험공부를 하고 있다.", "한 학생이 책상에서 공부 중이다.", 3.9),
    ("버스가 정류장에 멈춰 섰다.", "기차가 터널을 지나가고 있다.", 0.6),
    ("요리사가 팬에 달걀을 굽고 있다.", "누군가 달걀 프라이를 만들고 있다.", 4.3),
    ("아기가 침대에서 곤히 자고 있다.", "아기가 큰 소리로 울고 있다.", 1.8),
    ("주가가 이틀 연속 크게 올랐다.", "주식 시장이 이틀째 강세를 보였다.", 3.6),
    ("남자가 양파를 자르고 있다.", "남자가 부엌에서 양파를 썰고 있다.", 4.6),  # new pair
    ("한 남자가 양파를 자르고 있다.", "남자가 부엌에서 양파를 썰고 있다.", 4.6),  # (B, A) repeat
    ("여자가 피아노를 연주하고 있다.", "남자가 기타를 치고 있다.", 1.4),  # (A, B) repeat
]


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    split_dir = tmp_path / "mirror" / "KorSTS" / "default" / "test"
    split_dir.mkdir(parents=True)
    lines = [
        json.dumps({"sentence1": a, "sentence2": b, "score": s}, ensure_ascii=False)
        for a, b, s in KORSTS_ROWS
    ]
    (split_dir / "pairs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path / "mirror"


def _mteb_on_the_same_rows(minilm_dir: Path) -> dict[str, float]:
    """Plain mteb: the real KorSTS task with the de-duplicated rows injected, a raw model."""
    import mteb
    from datasets import Dataset, DatasetDict
    from sentence_transformers import SentenceTransformer

    kept = KORSTS_ROWS[:13]  # what de-duplication keeps
    task = mteb.get_task("KorSTS")
    task.dataset = DatasetDict(
        {
            "test": Dataset.from_dict(
                {
                    "sentence1": [a for a, _, _ in kept],
                    "sentence2": [b for _, b, _ in kept],
                    "score": [s for _, _, s in kept],
                }
            )
        }
    )
    task.data_loaded = True
    model = SentenceTransformer(str(minilm_dir), device="cpu")
    result = mteb.evaluate(model, task, cache=None, show_progress_bar=False)
    return result.task_results[0].scores["test"][0]


def test_local_korsts_scores_as_mteb(
    pytester: pytest.Pytester, minilm_dir: Path, mirror: Path
) -> None:
    record_path = pytester.path / "run.json"
    result = pytester.runpytest(
        f"--koembed-model={minilm_dir}",
        f"--koembed-data-dir={mirror}",
        f"--koembed-json={record_path}",
        "-k",
        "Kor-STS",
    )
    result.assert_outcomes(passed=1)
    task = json.loads(record_path.read_text(encoding="utf-8"))["tasks"][0]
    assert task["task"] == "KorSTS"
    assert task["duplicates_dropped"] == 2
    assert task["n_examples"] == 13
    assert task["source"].startswith("local:")
    expected = _mteb_on_the_same_rows(minilm_dir)
    keys = [
        "pearson", "spearman", "cosine_pearson", "cosine_spearman", "manhattan_pearson",
        "manhattan_spearman", "euclidean_pearson", "euclidean_spearman",
    ]  # fmt: skip
    for key in keys:
        # same model, same rows, same evaluator; only batching differs (float noise)
        assert task["scores"][key] == pytest.approx(expected[key], abs=1e-6), key
    assert task["value"] == pytest.approx(100 * sum(expected[k] for k in keys) / 8, abs=1e-4)
    result.stdout.fnmatch_lines(["Kor-STS*STS*13*2*"])


def _plain_mteb(minilm_dir: Path, task_name: str, split: str, columns: dict) -> dict:
    """Plain mteb: the real task with ``columns`` injected as its ``split``, a raw model."""
    import mteb
    from datasets import Dataset, DatasetDict
    from sentence_transformers import SentenceTransformer

    task = mteb.get_task(task_name)
    task.dataset = DatasetDict({split: Dataset.from_dict(columns)})
    task.data_loaded = True
    model = SentenceTransformer(str(minilm_dir), device="cpu")
    result = mteb.evaluate(model, task, cache=None, show_progress_bar=False)
    return result.task_results[0].scores[split][0]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")


# Hand-written NLI-style pairs (1: the second follows from the first); the last repeats the
# second pair reversed, so de-duplication keeps the first 12.
NLI_ROWS = [
    ("남자가 자전거를 타고 출근하고 있다.", "한 사람이 자전거를 타고 있다.", 1),
    ("아이가 케이크의 촛불을 끄고 있다.", "생일 파티가 열리고 있다.", 1),
    ("여자가 우산을 쓰고 걷고 있다.", "밖에 비가 오고 있다.", 1),
    ("학생들이 교실에서 시험을 보고 있다.", "학생들이 운동장에서 축구를 하고 있다.", 0),
    ("요리사가 생선을 손질하고 있다.", "누군가 음식을 준비하고 있다.", 1),
    ("노인이 공원 벤치에 앉아 신문을 읽는다.", "노인이 침대에서 자고 있다.", 0),
    ("개가 공을 물고 달려오고 있다.", "동물이 움직이고 있다.", 1),
    ("가게 문이 굳게 닫혀 있다.", "가게가 손님으로 붐비고 있다.", 0),
    ("두 사람이 악수를 하고 있다.", "두 사람이 서로 인사를 나누고 있다.", 1),
    ("기차가 역을 막 떠났다.", "기차가 아직 역에 도착하지 않았다.", 0),
    ("아이들이 눈사람을 만들고 있다.", "날씨가 무척 덥다.", 0),
    ("의사가 환자의 맥박을 재고 있다.", "병원에서 진료가 이루어지고 있다.", 1),
    ("생일 파티가 열리고 있다.", "아이가 케이크의 촛불을 끄고 있다.", 1),  # (B, A) repeat
]


def test_local_klue_nli_scores_as_mteb(pytester: pytest.Pytester, minilm_dir: Path) -> None:
    data = pytester.path / "data"
    _write_jsonl(
        data / "KLUE-NLI" / "default" / "validation" / "pairs.jsonl",
        [{"sentence1": a, "sentence2": b, "label": y} for a, b, y in NLI_ROWS],
    )
    record_path = pytester.path / "run.json"
    result = pytester.runpytest(
        f"--koembed-model={minilm_dir}",
        f"--koembed-data-dir={data}",
        f"--koembed-json={record_path}",
        "-k",
        "KLUE-NLI",
    )
    result.assert_outcomes(passed=1)
    task = json.loads(record_path.read_text(encoding="utf-8"))["tasks"][0]
    assert (task["task"], task["n_examples"], task["duplicates_dropped"]) == ("KLUE-NLI", 12, 1)
    kept = NLI_ROWS[:12]
    # flat rows here; the plugin injects one row of lists: mteb must read both the same
    expected = _plain_mteb(
        minilm_dir,
        "KLUE-NLI",
        "validation",
        {
            "sentence1": [a for a, _, _ in kept],
            "sentence2": [b for _, b, _ in kept],
            "labels": [y for _, _, y in kept],
        },
    )
    keys = [k for k, v in expected.items() if isinstance(v, float)]
    assert {"cosine_ap", "max_ap", "cosine_f1", "manhattan_ap", "dot_ap"} <= set(keys)
    for key in keys:
        assert task["scores"][key] == pytest.approx(expected[key], abs=1e-6), key
    assert task["value"] == pytest.approx(100 * expected["cosine_ap"], abs=1e-4)


# Two hand-written clustering sets, as KLUE's MRC clustering tasks have: headlines by topic.
CLUSTER_SETS = {
    "0": [
        ("코스피가 외국인 매수에 힘입어 상승 마감했다.", "경제"),
        ("원달러 환율이 석 달 만에 최저치를 기록했다.", "경제"),
        ("수출 증가로 무역수지가 흑자로 돌아섰다.", "경제"),
        ("프로야구 개막전에 만원 관중이 몰렸다.", "스포츠"),
        ("축구 대표팀이 평가전에서 역전승을 거뒀다.", "스포츠"),
        ("여자 배구팀이 챔피언결정전에 진출했다.", "스포츠"),
        ("내일 중부지방에 많은 눈이 내리겠다.", "날씨"),
        ("주말 내내 맑고 포근한 날씨가 이어진다.", "날씨"),
        ("남부지방에 호우주의보가 내려졌다.", "날씨"),
    ],
    "1": [
        ("새 스마트폰에 접이식 화면이 탑재됐다.", "기술"),
        ("인공지능 번역기의 정확도가 크게 높아졌다.", "기술"),
        ("전기차 배터리 충전 시간이 절반으로 줄었다.", "기술"),
        ("국립박물관이 조선 시대 회화 특별전을 연다.", "문화"),
        ("인기 뮤지컬이 10주년 기념 공연을 시작했다.", "문화"),
        ("올해 독립영화제에 역대 최다 작품이 출품됐다.", "문화"),
    ],
}


def test_local_clustering_sets_score_as_mteb(pytester: pytest.Pytester, minilm_dir: Path) -> None:
    data = pytester.path / "data"
    _write_jsonl(
        data / "KlueMrcDomainClustering" / "default" / "test" / "texts.jsonl",
        [
            {"text": text, "label": label, "set": name}
            for name, rows in CLUSTER_SETS.items()
            for text, label in rows
        ],
    )
    record_path = pytester.path / "run.json"
    result = pytester.runpytest(
        f"--koembed-model={minilm_dir}",
        f"--koembed-data-dir={data}",
        f"--koembed-json={record_path}",
        "-k",
        "clustering_klue_mrc_context_domain",
    )
    result.assert_outcomes(passed=1)
    task = json.loads(record_path.read_text(encoding="utf-8"))["tasks"][0]
    assert task["task"] == "KlueMrcDomainClustering"
    assert task["sizes"] == {"texts": 15, "sets": 2}
    # mteb's legacy clustering: one row per set, lists of texts and labels
    expected = _plain_mteb(
        minilm_dir,
        "KlueMrcDomainClustering",
        "test",
        {
            "sentences": [[t for t, _ in rows] for rows in CLUSTER_SETS.values()],
            "labels": [[y for _, y in rows] for rows in CLUSTER_SETS.values()],
        },
    )
    assert len(expected["v_measures"]) == 2  # one v-measure per set, as the plugin's
    assert task["scores"]["v_measure"] == pytest.approx(expected["v_measure"], abs=1e-6)
    assert task["value"] == pytest.approx(100 * expected["v_measure"], abs=1e-4)
