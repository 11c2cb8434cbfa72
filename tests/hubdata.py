"""Hub dataset repositories for the tests, and the same rows in the plugin's local layout.

For one task of each task type of each shipped suite, a dataset repository in the layout that
mteb's loaders and task metadata expect of the real Hub dataset (its id, configs declared in the
README's ``configs:`` with ``data_files``, splits, parquet or JSON Lines files, column names and
feature types), to be served by tests/hubserver.py at the revision mteb pins. The rows are small
and hand-written here. The layouts are rebuilt from mteb 2.x's loaders (``AbsTask.load_data``,
``RetrievalDatasetLoader``, each task's ``dataset_transform``), since the Hub cannot be read from
the test machines: they show "a layout mteb accepts", not that the real repositories look so.

The local layout (``--koembed-data-dir``, ``data/layout.py``) is written from the same rows by a
separate writer, not by mirroring the repositories, so that a run from each is a real comparison:
where mteb transforms the Hub rows (KLUE-NLI drops its neutral pairs and maps the labels, KLUE-STS
reads its score from a nested ``labels`` struct, SIB200 joins three splits into ``test``, KLUE-TC
maps ClassLabel ids to names) the local writer writes the result that the docs' layout asks for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The fixture tasks of each shipped suite (leaderboard columns), one of each task type.
FIXTURE_TASKS: dict[str, list[str]] = {
    "ko-leaderboard-v1": [
        "KLUE-STS",
        "KLUE-NLI",
        "sib200",
        "clustering_klue_mrc_context_domain",
        "Ko-StrategyQA",
    ],
    "ko-leaderboard-v2": ["MIRACLRetrievalHardNegative"],
    "mteb-kor-v2": [
        "KLUE-TC",
        "SIB200ClusteringS2S",
        "KlueMrcDomainClustering",
        "KLUE-NLI",
        "MIRACLReranking",
        "Ko-StrategyQA",
        "KLUE-STS",
    ],
}


def selection(suite: str) -> str:
    """The ``-k`` expression that selects a suite's fixture tasks (and no other task)."""
    return " or ".join(FIXTURE_TASKS[suite])


# --- the rows ------------------------------------------------------------------------------------

# Four topics of eight sentences: (SIB200 category, KLUE-YNAT label, texts).
TOPICS: list[tuple[str, str, list[str]]] = [
    (
        "sports",
        "스포츠",
        [
            "국가대표 축구팀이 어젯밤 평가전에서 두 골 차로 이겼다.",
            "프로야구 개막전에 관중 이만 명이 몰렸다.",
            "그 마라톤 선수는 개인 최고 기록을 다시 세웠다.",
            "농구 리그 결승전은 연장 끝에 홈팀의 승리로 끝났다.",
            "수영 대표 선발전에서 고등학생이 일 위를 차지했다.",
            "배구 감독은 다음 시즌 주전 세터를 바꾸겠다고 밝혔다.",
            "올림픽 양궁 단체전에서 우리 선수들이 금메달을 땄다.",
            "부상에서 돌아온 공격수가 복귀전에서 결승골을 넣었다.",
        ],
    ),
    (
        "science/technology",
        "IT과학",
        [
            "새 스마트폰은 배터리가 이틀 동안 유지된다고 한다.",
            "연구진이 상온에서 작동하는 새로운 반도체 소재를 개발했다.",
            "인공지능 번역기가 회의 내용을 실시간으로 옮겨 준다.",
            "우주 망원경이 먼 은하의 사진을 처음으로 보내왔다.",
            "이번 운영체제 업데이트는 보안 취약점을 여러 개 고쳤다.",
            "전기차 배터리의 충전 시간이 절반으로 줄었다.",
            "과학자들은 유전자 편집으로 병에 강한 벼를 만들었다.",
            "데이터 센터의 전력 사용량을 줄이는 냉각 기술이 공개됐다.",
        ],
    ),
    (
        "health",
        "생활문화",
        [
            "하루 삼십 분 걷기는 혈압을 낮추는 데 도움이 된다.",
            "잠을 충분히 자지 못하면 면역력이 떨어지기 쉽다.",
            "물을 자주 마시면 피로가 덜하다는 연구가 나왔다.",
            "독감 예방 접종은 가을에 맞는 것이 좋다.",
            "짠 음식을 줄이면 심장 질환 위험이 낮아진다.",
            "스트레칭은 오래 앉아 일하는 사람의 허리 통증을 덜어 준다.",
            "채소와 과일을 골고루 먹는 식단이 건강에 이롭다.",
            "감기에 걸렸을 때는 따뜻한 물을 마시고 푹 쉬어야 한다.",
        ],
    ),
    (
        "politics",
        "정치",
        [
            "국회는 내년도 예산안을 밤늦게 통과시켰다.",
            "대통령은 이웃 나라 정상과 만나 무역 협력을 논의했다.",
            "여당과 야당이 선거법 개정을 두고 맞섰다.",
            "지방 선거의 투표율이 지난번보다 높게 나타났다.",
            "정부는 청년 주거 지원 정책을 새로 발표했다.",
            "외교부 장관이 유엔 총회에서 연설했다.",
            "새 법안은 국회 상임위원회에서 보류됐다.",
            "시장 후보들이 텔레비전 토론에서 교통 공약을 놓고 논쟁했다.",
        ],
    ),
]

STS_PAIRS: list[tuple[str, str, float]] = [
    ("국가대표 축구팀이 평가전에서 이겼다.", "축구 대표팀이 친선 경기에서 승리했다.", 4.6),
    ("새 스마트폰의 배터리는 오래간다.", "신형 휴대전화는 배터리 수명이 길다.", 4.2),
    ("하루 삼십 분 걷기는 건강에 좋다.", "매일 조금씩 걸으면 몸에 이롭다.", 3.8),
    ("국회가 예산안을 통과시켰다.", "국회에서 내년 예산이 처리됐다.", 4.4),
    ("고양이가 창가에서 낮잠을 잔다.", "강아지가 공원에서 뛰어논다.", 1.0),
    ("오늘은 비가 많이 내린다.", "오늘 하늘이 맑고 화창하다.", 0.6),
    ("도서관은 월요일에 문을 닫는다.", "월요일에는 도서관이 휴관한다.", 4.8),
    ("그는 아침마다 커피를 마신다.", "그는 저녁에 차를 즐겨 마신다.", 2.2),
    ("기차가 예정보다 늦게 도착했다.", "열차 도착이 지연되었다.", 4.0),
    ("이 식당은 김치찌개가 맛있다.", "주식 시장이 크게 하락했다.", 0.0),
    ("아이들이 운동장에서 축구를 한다.", "학생들이 학교 운동장에서 공을 찬다.", 3.6),
    ("회의는 오후 세 시에 시작한다.", "회의 시작 시간이 바뀌었다.", 2.0),
]
STS_TRAIN: list[tuple[str, str, float]] = [  # klue/klue sts has a train split; mteb ignores it
    ("바다에 파도가 높다.", "해변에 높은 파도가 친다.", 4.1),
    ("그녀는 소설을 쓴다.", "버스가 정류장에 섰다.", 0.2),
]

# KLUE-NLI rows: (premise, hypothesis, label) with klue's ids 0 entailment, 1 neutral,
# 2 contradiction; mteb keeps 0 and 2 and scores them as 1 and 0.
NLI_ROWS: list[tuple[str, str, int]] = [
    ("민수는 아침 일찍 버스를 타고 회사에 갔다.", "민수는 회사에 갔다.", 0),
    ("민수는 아침 일찍 버스를 타고 회사에 갔다.", "민수는 회사에 지각했다.", 1),
    ("민수는 아침 일찍 버스를 타고 회사에 갔다.", "민수는 하루 종일 집에 있었다.", 2),
    ("공원에 벚꽃이 활짝 피었다.", "공원에 꽃이 피어 있다.", 0),
    ("공원에 벚꽃이 활짝 피었다.", "공원에 사람이 많다.", 1),
    ("공원에 벚꽃이 활짝 피었다.", "공원의 나무는 모두 앙상하다.", 2),
    ("그 식당은 일요일마다 문을 닫는다.", "일요일에는 그 식당에서 밥을 먹을 수 없다.", 0),
    ("그 식당은 일요일마다 문을 닫는다.", "그 식당은 인기가 많다.", 1),
    ("그 식당은 일요일마다 문을 닫는다.", "그 식당은 일요일에도 영업한다.", 2),
    ("지수는 피아노 대회에서 일 등을 했다.", "지수는 대회에서 상을 받았다.", 0),
    ("지수는 피아노 대회에서 일 등을 했다.", "지수는 어릴 때부터 피아노를 배웠다.", 1),
    ("지수는 피아노 대회에서 일 등을 했다.", "지수는 대회에 나가지 않았다.", 2),
]
NLI_NAMES = ["entailment", "neutral", "contradiction"]
YNAT_NAMES = ["IT과학", "경제", "사회", "생활문화", "세계", "스포츠", "정치"]

DOCS: list[tuple[str, str, str]] = [  # (id, title, text)
    ("d1", "한라산", "한라산은 제주도 한가운데에 있는 산으로 남한에서 가장 높다."),
    ("d2", "세종대왕", "세종대왕은 집현전 학자들과 함께 훈민정음을 만들었다."),
    ("d3", "김치", "김치는 배추와 무를 소금에 절여 양념과 함께 발효시킨 음식이다."),
    ("d4", "한강", "한강은 서울을 가로질러 서해로 흘러가는 큰 강이다."),
    ("d5", "태권도", "태권도는 발차기 기술이 많은 한국의 전통 무예이다."),
    ("d6", "경복궁", "경복궁은 조선 시대에 지어진 궁궐로 서울 종로에 있다."),
    ("d7", "고래", "고래는 바다에 살지만 새끼를 낳아 젖을 먹이는 포유류이다."),
    ("d8", "단풍", "가을이 되면 나뭇잎의 엽록소가 줄어 잎이 붉고 노랗게 물든다."),
]
QUERIES: list[tuple[str, str]] = [
    ("q1", "남한에서 제일 높은 산은 어디에 있나요?"),
    ("q2", "한글을 만든 왕은 누구인가?"),
    ("q3", "김치는 어떻게 만드나요?"),
    ("q4", "서울에 있는 강과 궁궐을 알려 주세요."),
    ("q5", "고래는 물고기인가요?"),
    ("q6", "가을에 잎 색깔이 바뀌는 이유는?"),
    ("q7", "한국의 전통 음식 가운데 하나는?"),  # no qrels: dropped by mteb and by the layout
]
QRELS: list[tuple[str, str, int]] = [
    ("q1", "d1", 1),
    ("q2", "d2", 1),
    ("q3", "d3", 1),
    ("q4", "d4", 1),
    ("q4", "d6", 1),
    ("q5", "d7", 1),
    ("q6", "d8", 1),
]
CANDIDATES: dict[str, list[str]] = {  # MIRACLReranking's top_ranked
    "q1": ["d4", "d1", "d6", "d5"],
    "q2": ["d2", "d6", "d3", "d8"],
    "q3": ["d5", "d7", "d3", "d2"],
    "q4": ["d1", "d6", "d4", "d7"],
    "q5": ["d7", "d8", "d1", "d3"],
    "q6": ["d3", "d8", "d2", "d4"],
}


def _topic_rows() -> list[tuple[str, str, str, int]]:
    """(SIB200 category, YNAT label, text, index within its topic), topics interleaved."""
    return [(category, ynat, texts[i], i) for i in range(8) for category, ynat, texts in TOPICS]


def _sib200_splits() -> dict[str, list[tuple[str, str]]]:
    """(category, text) per split of mteb/sib200 kor_Hang: mteb joins all three into test."""
    rows = _topic_rows()
    return {
        "train": [(c, t) for c, _, t, i in rows if i < 4],
        "validation": [(c, t) for c, _, t, i in rows if i in (4, 5)],
        "test": [(c, t) for c, _, t, i in rows if i >= 6],
    }


def _klue_mrc_sets() -> list[tuple[list[str], list[str]]]:
    """Two clustering sets (texts, labels) of KlueMrcDomainClustering, each over all topics."""
    rows = _topic_rows()
    return [
        ([t for _, _, t, i in rows if i % 2 == n], [y for _, y, _, i in rows if i % 2 == n])
        for n in (0, 1)
    ]


def _ynat_splits() -> dict[str, list[tuple[str, str]]]:
    """(text, label name) of klue/klue ynat: train the first five of a topic, validation three."""
    rows = _topic_rows()
    return {
        "train": [(t, y) for _, y, t, i in rows if i < 5],
        "validation": [(t, y) for _, y, t, i in rows if i >= 5],
    }


# --- the Hub repositories ------------------------------------------------------------------------


@dataclass(frozen=True)
class HubDataset:
    """One dataset repository: its id, the revision mteb pins, where its files are."""

    repo_id: str
    revision: str
    directory: Path


def _pinned(task: str) -> tuple[str, str]:
    import mteb

    dataset = mteb.get_task(task).metadata.dataset
    return dataset["path"], dataset["revision"]


def _readme(directory: Path, configs: dict[str, dict[str, str]]) -> None:
    """README.md whose YAML front matter declares each config's split files."""
    lines = ["---", "language:", "- ko", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        for split, path in splits.items():
            lines += [f"  - split: {split}", f"    path: {path}"]
    lines += ["---", "", "Hand-written Korean test rows for pytest-koembed (tests/hubdata.py).", ""]
    (directory / "README.md").write_text("\n".join(lines), encoding="utf-8")


def _parquet(path: Path, columns: dict[str, list[Any]], features: Any = None) -> None:
    from datasets import Dataset

    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(columns, features=features).to_parquet(str(path))


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")


def _klue(directory: Path) -> None:
    """klue/klue: configs sts, nli, ynat (parquet per split, ClassLabel features kept)."""
    _klue_sts(directory)
    _klue_nli_ynat(directory)
    _readme(
        directory,
        {
            "sts": {s: f"sts/{s}-00000-of-00001.parquet" for s in ("train", "validation")},
            "nli": {"validation": "nli/validation-00000-of-00001.parquet"},
            "ynat": {s: f"ynat/{s}-00000-of-00001.parquet" for s in ("train", "validation")},
        },
    )


def _klue_sts(directory: Path) -> None:
    from datasets import ClassLabel, Features, Value

    sts_features = Features(
        {
            "guid": Value("string"),
            "source": Value("string"),
            "sentence1": Value("string"),
            "sentence2": Value("string"),
            "labels": {
                "label": Value("float64"),
                "real-label": Value("float64"),
                "binary-label": ClassLabel(names=["negative", "positive"]),
            },
        }
    )
    for split, pairs in (("train", STS_TRAIN), ("validation", STS_PAIRS)):
        _parquet(
            directory / "sts" / f"{split}-00000-of-00001.parquet",
            {
                "guid": [f"klue-sts-{split}_{i}" for i in range(len(pairs))],
                "source": ["airbnb-rtt"] * len(pairs),
                "sentence1": [a for a, _, _ in pairs],
                "sentence2": [b for _, b, _ in pairs],
                "labels": [
                    {"label": s, "real-label": s, "binary-label": int(s >= 3.0)}
                    for _, _, s in pairs
                ],
            },
            sts_features,
        )


def _klue_nli_ynat(directory: Path) -> None:
    from datasets import ClassLabel, Features, Value

    nli_features = Features(
        {
            "guid": Value("string"),
            "source": Value("string"),
            "premise": Value("string"),
            "hypothesis": Value("string"),
            "label": ClassLabel(names=NLI_NAMES),
        }
    )
    _parquet(
        directory / "nli" / "validation-00000-of-00001.parquet",
        {
            "guid": [f"klue-nli-v1_dev_{i:05d}" for i in range(len(NLI_ROWS))],
            "source": ["wikinews"] * len(NLI_ROWS),
            "premise": [p for p, _, _ in NLI_ROWS],
            "hypothesis": [h for _, h, _ in NLI_ROWS],
            "label": [y for _, _, y in NLI_ROWS],
        },
        nli_features,
    )
    ynat_features = Features(
        {
            "guid": Value("string"),
            "title": Value("string"),
            "label": ClassLabel(names=YNAT_NAMES),
            "url": Value("string"),
            "date": Value("string"),
        }
    )
    for split, rows in _ynat_splits().items():
        _parquet(
            directory / "ynat" / f"{split}-00000-of-00001.parquet",
            {
                "guid": [f"ynat-v1_{split}_{i:05d}" for i in range(len(rows))],
                "title": [t for t, _ in rows],
                "label": [YNAT_NAMES.index(y) for _, y in rows],
                "url": [f"https://news.example/{split}/{i}" for i in range(len(rows))],
                "date": ["2016.06.30. 오전 10:36"] * len(rows),
            },
            ynat_features,
        )


def _sib200(directory: Path) -> None:
    """mteb/sib200: config kor_Hang, splits train/validation/test, columns index_id, category,
    text."""
    index = 0
    for split, rows in _sib200_splits().items():
        _parquet(
            directory / "kor_Hang" / f"{split}.parquet",
            {
                "index_id": list(range(index, index + len(rows))),
                "category": [c for c, _ in rows],
                "text": [t for _, t in rows],
            },
        )
        index += len(rows)
    splits = ("train", "validation", "test")
    _readme(directory, {"kor_Hang": {s: f"kor_Hang/{s}.parquet" for s in splits}})


def _klue_mrc_domain(directory: Path) -> None:
    """mteb/KlueMrcDomainClustering: one row per clustering set, ``sentences`` and ``labels``."""
    sets = _klue_mrc_sets()
    _parquet(
        directory / "data" / "test-00000-of-00001.parquet",
        {"sentences": [t for t, _ in sets], "labels": [y for _, y in sets]},
    )
    _readme(directory, {"default": {"test": "data/test-00000-of-00001.parquet"}})


def _ko_strategyqa(directory: Path) -> None:
    """taeminlee/Ko-StrategyQA, BEIR style in JSON Lines: configs corpus, queries and the
    default (qrels) one, ``_id`` ids."""
    _jsonl(directory / "corpus.jsonl", [{"_id": i, "title": t, "text": x} for i, t, x in DOCS])
    _jsonl(directory / "queries.jsonl", [{"_id": i, "text": x} for i, x in QUERIES])
    _jsonl(
        directory / "qrels" / "dev.jsonl",
        [{"query-id": q, "corpus-id": d, "score": s} for q, d, s in QRELS],
    )
    _readme(
        directory,
        {
            "corpus": {"corpus": "corpus.jsonl"},
            "queries": {"queries": "queries.jsonl"},
            "default": {"dev": "qrels/dev.jsonl"},
        },
    )


def _miracl(directory: Path, *, top_ranked: bool) -> None:
    """mteb's MIRACL repositories (mteb 2.x format): configs ``ko-corpus``, ``ko-queries``,
    ``ko-qrels`` (and ``ko-top_ranked`` for reranking), split dev, ``id`` ids."""
    tables: dict[str, dict[str, list[Any]]] = {
        "ko-corpus": {
            "id": [i for i, _, _ in DOCS],
            "title": [t for _, t, _ in DOCS],
            "text": [x for _, _, x in DOCS],
        },
        "ko-queries": {"id": [i for i, _ in QUERIES], "text": [x for _, x in QUERIES]},
        "ko-qrels": {
            "query-id": [q for q, _, _ in QRELS],
            "corpus-id": [d for _, d, _ in QRELS],
            "score": [s for _, _, s in QRELS],
        },
    }
    if top_ranked:
        tables["ko-top_ranked"] = {
            "query-id": list(CANDIDATES),
            "corpus-ids": list(CANDIDATES.values()),
        }
    for config, columns in tables.items():
        _parquet(directory / config / "dev-00000-of-00001.parquet", columns)
    _readme(directory, {c: {"dev": f"{c}/dev-00000-of-00001.parquet"} for c in tables})


# mteb task -> the writer of its repository (tasks sharing a repository share a writer)
_WRITERS: dict[str, Callable[[Path], None]] = {
    "KLUE-STS": _klue,
    "SIB200ClusteringS2S": _sib200,
    "KlueMrcDomainClustering": _klue_mrc_domain,
    "Ko-StrategyQA": _ko_strategyqa,
    "MIRACLRetrievalHardNegatives": lambda d: _miracl(d, top_ranked=False),
    "MIRACLReranking": lambda d: _miracl(d, top_ranked=True),
}


def build_hub_datasets(root: Path) -> list[HubDataset]:
    """Write every fixture repository under ``root``; each at the revision mteb pins for it."""
    out = []
    for task, write in _WRITERS.items():
        repo_id, revision = _pinned(task)
        directory = root / repo_id.replace("/", "--")
        directory.mkdir(parents=True)
        write(directory)
        out.append(HubDataset(repo_id, revision, directory))
    return out


def serve(hub_server: Any, datasets: list[HubDataset]) -> None:
    """Serve each repository at ``main`` and at any commit sha (so mteb's pinned one resolves
    to it, ``X-Repo-Commit`` the sha asked for)."""
    for dataset in datasets:
        hub_server.add_repo(
            dataset.repo_id, {"main": dataset.directory}, kind="dataset", any_sha="main"
        )


# --- the same rows in the local layout ------------------------------------------------------------


def _pairs(path: Path, rows: list[dict[str, Any]]) -> None:
    _jsonl(path / "pairs.jsonl", rows)


def _retrieval_layout(path: Path, *, candidates: bool) -> None:
    _jsonl(path / "corpus.jsonl", [{"id": i, "title": t, "text": x} for i, t, x in DOCS])
    _jsonl(path / "queries.jsonl", [{"id": i, "text": x} for i, x in QUERIES])
    _jsonl(
        path / "qrels.jsonl",
        [{"query_id": q, "doc_id": d, "score": s} for q, d, s in QRELS],
    )
    if candidates:
        _jsonl(
            path / "candidates.jsonl",
            [{"query_id": q, "doc_ids": ids} for q, ids in CANDIDATES.items()],
        )


def build_local_layout(root: Path) -> Path:
    """The fixture tasks' rows in ``ROOT/<task>/<subset>/<split>/`` (docs/suites.md)."""
    _pairs(
        root / "KLUE-STS" / "default" / "validation",
        [{"sentence1": a, "sentence2": b, "score": s} for a, b, s in STS_PAIRS],
    )
    _pairs(
        root / "KLUE-NLI" / "default" / "validation",
        [
            {"sentence1": p, "sentence2": h, "label": 1 if y == 0 else 0}
            for p, h, y in NLI_ROWS
            if y != 1
        ],
    )
    _jsonl(
        root / "SIB200ClusteringS2S" / "kor_Hang" / "test" / "texts.jsonl",
        [
            {"text": t, "label": c}
            for split in ("train", "validation", "test")
            for c, t in _sib200_splits()[split]
        ],
    )
    _jsonl(
        root / "KlueMrcDomainClustering" / "default" / "test" / "texts.jsonl",
        [
            {"text": t, "label": y, "set": str(n)}
            for n, (texts, labels) in enumerate(_klue_mrc_sets())
            for t, y in zip(texts, labels, strict=True)
        ],
    )
    ynat = _ynat_splits()
    tc = root / "KLUE-TC" / "default" / "validation"
    _jsonl(tc / "train.jsonl", [{"text": t, "label": y} for t, y in ynat["train"]])
    _jsonl(tc / "test.jsonl", [{"text": t, "label": y} for t, y in ynat["validation"]])
    _retrieval_layout(root / "Ko-StrategyQA" / "default" / "dev", candidates=False)
    _retrieval_layout(root / "MIRACLRetrievalHardNegatives" / "ko" / "dev", candidates=False)
    _retrieval_layout(root / "MIRACLReranking" / "ko" / "dev", candidates=True)
    return root
