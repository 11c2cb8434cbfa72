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
