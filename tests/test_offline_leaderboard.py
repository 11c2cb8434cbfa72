"""The real leaderboard suites run air-gapped: every task from a local mirror, end to end.

A small hand-written Korean copy of every task of ko-leaderboard-v1 and -v2 is validated and
normalised by ``koembed mirror --from``, then each suite runs with ``--koembed-data-dir``: each
real mteb task (its own evaluator) scores local rows, and the summary, averages and leaderboard
row come out as for a Hub run.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import pytest

from pytest_koembed.cli import main as koembed
from pytest_koembed.protocol.suite import load_suite

TOPICS = {
    "날씨": [
        "내일은 전국에 비가 내리겠습니다.",
        "주말 동안 비 소식이 이어진다고 합니다.",
        "오늘 아침 기온이 영하로 떨어졌다.",
        "갑작스러운 한파에 출근길이 꽁꽁 얼었다.",
    ],
    "경제": [
        "중앙은행이 기준금리를 동결했다.",
        "금리 인상 여부에 시장의 관심이 쏠렸다.",
        "수출 실적이 석 달 연속 증가했다.",
        "반도체 수출이 늘면서 무역수지가 개선됐다.",
    ],
    "스포츠": [
        "대표팀이 결승전에서 승리를 거뒀다.",
        "축구 대표팀이 우승컵을 들어 올렸다.",
        "그 선수는 부상으로 시즌을 마감했다.",
        "무릎을 다친 투수가 남은 경기에 나오지 못한다.",
    ],
    "건강": [
        "하루 30분 걷기는 심장 건강에 좋다.",
        "꾸준한 산책이 혈압을 낮춰 준다고 한다.",
        "잠이 부족하면 면역력이 떨어진다.",
        "수면 시간이 짧으면 감기에 잘 걸린다.",
    ],
}
QUERIES = {
    "날씨": "이번 주 날씨는 어떤가요?",
    "경제": "금리와 수출 소식을 알려 주세요.",
    "스포츠": "대표팀 경기 결과가 궁금해요.",
    "건강": "건강을 지키는 생활 습관은?",
}


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n"
    path.write_text(text, encoding="utf-8")


def _pairs() -> list[tuple[str, str, bool]]:
    """Same-topic pairs (related) and cross-topic pairs (unrelated), no repeats."""
    texts = [(topic, t) for topic, ts in TOPICS.items() for t in ts]
    pairs = [(a, b, ta == tb) for (ta, a), (tb, b) in combinations(texts, 2)]
    related = [p for p in pairs if p[2]][:8]
    unrelated = [p for p in pairs if not p[2]][::12][:8]
    return related + unrelated


def _layout(root: Path, task_type: str, task: str, subset: str, split: str) -> None:
    where = root / task / subset / split
    if task_type == "STS":
        _write(
            where / "pairs.jsonl",
            [
                {"sentence1": a, "sentence2": b, "score": 4.0 if same else 1.0 + i % 3 * 0.5}
                for i, (a, b, same) in enumerate(_pairs())
            ],
        )
    elif task_type == "PairClassification":
        _write(
            where / "pairs.jsonl",
            [{"sentence1": a, "sentence2": b, "label": int(same)} for a, b, same in _pairs()],
        )
    elif task_type == "Clustering":
        _write(
            where / "texts.jsonl",
            [{"text": t, "label": topic} for topic, ts in TOPICS.items() for t in ts],
        )
    else:
        corpus, qrels, queries = [], [], []
        for n, (topic, texts) in enumerate(TOPICS.items()):
            queries.append({"id": f"q{n}", "text": QUERIES[topic]})
            for m, text in enumerate(texts):
                corpus.append({"id": f"d{n}{m}", "title": topic, "text": text})
                qrels.append({"query_id": f"q{n}", "doc_id": f"d{n}{m}", "score": 1})
        _write(where / "corpus.jsonl", corpus)
        _write(where / "queries.jsonl", queries)
        _write(where / "qrels.jsonl", qrels)


TASK_TYPES = {"STS": "STS", "NLI": "PairClassification", "Clustering": "Clustering"}

HASH_ENCODER = """
import zlib

import numpy as np
import pytest


class CharBigrams:
    def encode(self, texts):
        out = np.zeros((len(texts), 256), dtype="float32")
        for i, text in enumerate(texts):
            for j in range(max(1, len(text) - 1)):
                out[i, zlib.crc32(text[j : j + 2].encode()) % 256] += 1.0
        return out + 1e-3


@pytest.fixture(scope="session")
def koembed_encoder():
    return CharBigrams()
"""


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("handmade")
    for suite_name in ("ko-leaderboard-v1", "ko-leaderboard-v2"):
        for spec in load_suite(suite_name).tasks:
            task_type = TASK_TYPES.get(spec.category, "Retrieval")
            _layout(source, task_type, spec.task, spec.subset, spec.split)
    target = tmp_path_factory.mktemp("mirror")
    for suite_name in ("ko-leaderboard-v1", "ko-leaderboard-v2"):
        code = koembed(["mirror", str(target), "--suite", suite_name, "--from", str(source)])
        assert code == 0
    return target


@pytest.mark.parametrize(
    ("suite_name", "tasks"), [("ko-leaderboard-v1", 15), ("ko-leaderboard-v2", 7)]
)
def test_leaderboard_suite_runs_from_a_local_mirror(
    run_pytest, tmp_path: Path, mirror: Path, suite_name: str, tasks: int
) -> None:
    (tmp_path / "conftest.py").write_text(HASH_ENCODER, encoding="utf-8")
    record_path = tmp_path / "run.json"
    result = run_pytest(
        tmp_path,
        "--koembed-model=char-bigrams",
        f"--koembed-suite={suite_name}",
        f"--koembed-data-dir={mirror}",
        f"--koembed-json={record_path}",
        "--koembed-row=-",
    )
    assert result.ret == 0, result.stdout
    assert f"{tasks} passed" in result.stdout
    record = json.loads(record_path.read_text(encoding="utf-8"))
    assert [t["status"] for t in record["tasks"]] == ["ok"] * tasks
    assert all(t["source"].startswith("local:") for t in record["tasks"])
    assert record["weighted_average"] is not None
    # the run's row, ranked among the published models, in the leaderboard's layout
    result.fnmatch_lines(["*koembed leaderboard rows*", "| char-bigrams *|*"])


def test_mirror_without_the_hub_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, empty_hf_cache: Path
) -> None:
    code = koembed(["mirror", str(tmp_path), "--task", "Kor-STS"])
    assert code == 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "Hub" in err and "--from SRC" in err and "--koembed-data-dir" not in err


# Hand-written KorSTS / KLUE-NLI "Hub" rows with repeats: 2 for KorSTS ((A, B) and (B, A)),
# 1 for KLUE-NLI.
HUB_STS = [
    ("오늘 아침 기온이 영하로 떨어졌다.", "아침 기온이 영하까지 내려갔다.", 4.5),
    ("중앙은행이 기준금리를 동결했다.", "기준금리가 그대로 유지되었다.", 4.0),
    ("대표팀이 결승전에서 승리를 거뒀다.", "잠이 부족하면 면역력이 떨어진다.", 0.2),
    ("아침 기온이 영하까지 내려갔다.", "오늘 아침 기온이 영하로 떨어졌다.", 4.5),
    ("수출 실적이 석 달 연속 증가했다.", "수출이 세 달째 늘었다.", 4.2),
    ("중앙은행이 기준금리를 동결했다.", "기준금리가 그대로 유지되었다.", 4.0),
]
HUB_NLI = [
    ("하루 30분 걷기는 심장 건강에 좋다.", "걷기는 심장에 이롭다.", 1),
    ("그 선수는 부상으로 시즌을 마감했다.", "그 선수는 다음 경기에 출전한다.", 0),
    ("하루 30분 걷기는 심장 건강에 좋다.", "걷기는 심장에 이롭다.", 1),
    ("축구 대표팀이 우승컵을 들어 올렸다.", "대표팀이 우승했다.", 1),
    ("내일은 전국에 비가 내리겠습니다.", "내일은 맑겠습니다.", 0),
]


def _fake_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """KorSTS and KLUE-NLI load the rows above, in the shapes mteb gives, without the Hub."""
    import mteb
    from datasets import Dataset, DatasetDict

    def sts(self: object) -> DatasetDict:
        columns = {"sentence1": [], "sentence2": [], "score": []}
        for a, b, s in HUB_STS:
            for key, value in zip(columns, (a, b, s), strict=True):
                columns[key].append(value)
        return DatasetDict({"test": Dataset.from_dict(columns)})

    def nli(self: object) -> dict[str, list[dict[str, list]]]:
        return {
            "validation": [
                {
                    "sentence1": [a for a, _, _ in HUB_NLI],
                    "sentence2": [b for _, b, _ in HUB_NLI],
                    "labels": [y for _, _, y in HUB_NLI],
                }
            ]
        }

    for name, build in (("KorSTS", sts), ("KLUE-NLI", nli)):

        def load_data(self: object, num_proc: object = None, _b=build, **kwargs: object) -> None:
            self.dataset = _b(self)  # type: ignore[attr-defined]
            self.data_loaded = True  # type: ignore[attr-defined]

        monkeypatch.setattr(type(mteb.get_task(name)), "load_data", load_data)


def test_a_run_from_a_mirror_reports_the_pairs_the_mirror_dropped(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_hub(monkeypatch)
    mirror = pytester.path / "mirror"
    code = koembed(["mirror", str(mirror), "--task", "Kor-STS", "--task", "KLUE-NLI"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Kor-STS: 4 examples (2 repeated pairs dropped) -> " in out
    assert "KLUE-NLI: 4 examples (1 repeated pairs dropped) -> " in out
    # the rows are written de-duplicated; the count is kept next to them
    sts_dir = mirror / "KorSTS" / "default" / "test"
    assert len((sts_dir / "pairs.jsonl").read_text(encoding="utf-8").splitlines()) == 4
    meta = json.loads((sts_dir / "koembed-mirror.json").read_text(encoding="utf-8"))
    assert meta["duplicates_dropped"] == 2 and meta["sizes"] == {"pairs": 4}
    assert meta["source"].startswith("hub:")

    # a second mirror made from the first keeps the count
    again = pytester.path / "mirror2"
    assert koembed(["mirror", str(again), "--task", "Kor-STS", "--from", str(mirror)]) == 0
    capsys.readouterr()
    meta2 = json.loads(
        (again / "KorSTS" / "default" / "test" / "koembed-mirror.json").read_text("utf-8")
    )
    assert meta2["duplicates_dropped"] == 2 and meta2["source"].startswith("local:")

    pytester.makeconftest(HASH_ENCODER)
    record_path = pytester.path / "run.json"
    result = pytester.runpytest(
        "--koembed-model=char-bigrams",
        f"--koembed-data-dir={mirror}",
        f"--koembed-json={record_path}",
        "-k",
        "Kor-STS or KLUE-NLI",
    )
    result.assert_outcomes(passed=2)
    tasks = {t["column"]: t for t in json.loads(record_path.read_text("utf-8"))["tasks"]}
    assert (tasks["Kor-STS"]["n_examples"], tasks["Kor-STS"]["duplicates_dropped"]) == (4, 2)
    assert (tasks["KLUE-NLI"]["n_examples"], tasks["KLUE-NLI"]["duplicates_dropped"]) == (4, 1)
    result.stdout.fnmatch_lines(["Kor-STS *STS* 4 *2 *", "KLUE-NLI *NLI* 4 *1 *"])


def test_a_mirror_edited_since_is_one_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_hub(monkeypatch)
    mirror = pytester.path / "mirror"
    assert koembed(["mirror", str(mirror), "--task", "Kor-STS"]) == 0
    pairs = mirror / "KorSTS" / "default" / "test" / "pairs.jsonl"
    pairs.write_text("".join(pairs.read_text("utf-8").splitlines(keepends=True)[:3]), "utf-8")
    pytester.makeconftest(HASH_ENCODER)
    result = pytester.runpytest(
        "--koembed-model=char-bigrams", f"--koembed-data-dir={mirror}", "-k", "Kor-STS"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*koembed-mirror.json was written for 4 pairs but pairs.jsonl now holds 3; re-run*"]
    )
