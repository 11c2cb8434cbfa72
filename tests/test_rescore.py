"""``koembed rescore DIR``: leaderboard rows from mteb result files written by hand.

Two models, one per shape mteb has written:

- ``results/nlpai-lab__KURE-v1/<revision>/``: mteb >= 1.11 / 2.x files (``task_name``, ``scores``
  as ``{split: [{hf_subset, main_score, ...}]}``, flat ``cosine_*`` keys, ``model_meta.json``),
  scored so that every task value is KURE-v1's published one.
- ``results/acme__legacy-model/``: mteb < 1.11 files (``mteb_dataset_name``, splits at the top
  level holding the scores or one dict per subset, ``evaluation_time`` inside the split, scores
  grouped as ``cos_sim`` / ``manhattan`` / ``max``, no ``pearson`` / ``spearman`` for STS),
  scored as BAAI/bge-m3's published row.

Each file also holds decoy entries (other subsets, other splits: STS17 ``en-en``, PawsX
``validation``, Ko-StrategyQA ``test``, Belebele ``eng_Latn-kor_Hang``...) at 0.1, so a wrong
choice of split or ``hf_subset`` shows in the numbers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pytest_koembed.cli import main
from pytest_koembed.protocol.leaderboards import load_leaderboard
from pytest_koembed.protocol.spec import TaskSpec
from pytest_koembed.protocol.suite import load_suite
from pytest_koembed.reports.rescore import NOT_DEDUPLICATED_MARK as MARK

SUITE = load_suite("ko-leaderboard-v1")
BOARD = load_leaderboard("ko-leaderboard-v1")
KURE = BOARD.rows["nlpai-lab/KURE-v1"]
BGE = BOARD.rows["BAAI/bge-m3"]
DECOY = 0.1
STS8 = ["pearson", "spearman", "cosine_pearson", "cosine_spearman", "manhattan_pearson",
        "manhattan_spearman", "euclidean_pearson", "euclidean_spearman"]  # fmt: skip

# Other subsets / splits each task's file holds besides the one the protocol reads.
DECOYS: dict[str, list[tuple[str, str]]] = {
    "STS17": [("test", "en-en"), ("test", "ko-en")],
    "PawsXPairClassification": [("validation", "ko"), ("test", "en")],
    "SIB200ClusteringS2S": [("test", "eng_Latn")],
    "Ko-StrategyQA": [("test", "default")],
    "PublicHealthQA": [("test", "english")],
    "XPQARetrieval": [("test", "eng-kor")],
    "BelebeleRetrieval": [("test", "eng_Latn-kor_Hang")],
    "WebFAQRetrieval": [("test", "eng")],
}


def new_scores(spec: TaskSpec, x: float) -> dict[str, Any]:
    """mteb 2.x metric keys giving the leaderboard value ``x`` (0-1 scale)."""
    if spec.category == "STS":
        return {**dict.fromkeys(STS8, x), "main_score": x}
    if spec.category == "NLI":
        return {"cosine_ap": x, "max_ap": min(1.0, x + 0.2), "cosine_accuracy": 0.5,
                "main_score": min(1.0, x + 0.2)}  # fmt: skip
    if spec.category == "Clustering":
        return {"v_measure": x, "v_measure_std": 0.01, "main_score": x}
    return {"ndcg_at_5": x, "ndcg_at_10": x, "map_at_10": x - 0.05, "main_score": x}


def legacy_scores(spec: TaskSpec, x: float) -> dict[str, Any]:
    """mteb < 1.11 keys: grouped by similarity, no pearson/spearman of the model's own."""
    if spec.category == "STS":
        pair = {"pearson": x, "spearman": x}
        return {"cos_sim": pair, "manhattan": dict(pair), "euclidean": dict(pair)}
    if spec.category == "NLI":
        return {"cos_sim": {"accuracy": 0.5, "ap": x}, "max": {"ap": min(1.0, x + 0.2)}}
    if spec.category == "Clustering":
        return {"v_measure": x, "v_measure_std": 0.01}
    return {"ndcg_at_5": x, "ndcg_at_10": x, "map_at_10": x - 0.05}


def new_file(spec: TaskSpec, value: float) -> dict[str, Any]:
    entries: dict[str, list[dict[str, Any]]] = {}
    for split, subset, x in [(spec.split, spec.subset, value / 100)] + [
        (s, sub, DECOY) for s, sub in DECOYS.get(spec.task, [])
    ]:
        entry = {**new_scores(spec, x), "hf_subset": subset, "languages": ["kor-Hang"]}
        entries.setdefault(split, []).append(entry)
    return {
        "dataset_revision": "0123456789abcdef",
        "task_name": spec.task,
        "mteb_version": "2.26.24",
        "scores": entries,
        "evaluation_time": 12.5,
        "kg_co2_emissions": None,
        "date": 1760000000.0,
    }


def legacy_file(spec: TaskSpec, value: float) -> dict[str, Any]:
    data: dict[str, Any] = {
        "dataset_revision": "0123456789abcdef",
        "mteb_dataset_name": spec.task,
        "mteb_version": "1.1.1",
    }
    wanted = [(spec.split, spec.subset, value / 100)]
    decoys = [(s, sub, DECOY) for s, sub in DECOYS.get(spec.task, [])]
    with_subsets = spec.subset != "default" or spec.task in DECOYS
    for split, subset, x in wanted + decoys:
        body = data.setdefault(split, {"evaluation_time": 3.5})
        if with_subsets and subset != "default":
            body[subset] = legacy_scores(spec, x)
        else:  # a dataset without subsets: the split holds the scores itself
            body.update(legacy_scores(spec, x))
    return data


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    kure = root / "nlpai-lab__KURE-v1" / "d14c8a9423946e268a0c9952fecf3a7aabd73bd9"
    legacy = root / "acme__legacy-model"
    kure.mkdir(parents=True)
    legacy.mkdir(parents=True)
    (kure / "model_meta.json").write_text(
        json.dumps({"name": "nlpai-lab/KURE-v1", "revision": kure.name}), encoding="utf-8"
    )
    for spec in SUITE.tasks:
        (kure / f"{spec.task}.json").write_text(json.dumps(new_file(spec, KURE[spec.column])))
        (legacy / f"{spec.task}.json").write_text(json.dumps(legacy_file(spec, BGE[spec.column])))
    return root


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def cells(line: str, marks: bool = False) -> list[str]:
    """A table line's cells; without ``marks`` the not-de-duplicated mark is stripped."""
    out = [c.strip() for c in line.strip().strip("|").split("|")]
    return out if marks else [c.removesuffix(MARK) for c in out]


def published_line(name: str, table: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    code, out, _ = run(["leaderboard", "--table", table], capsys)
    assert code == 0
    return next(cells(line) for line in out.splitlines() if line.startswith(f"| {name} "))


def row(out: str, heading: str, name: str, marks: bool = False) -> list[str]:
    block = out.split(f"# {heading}\n", 1)[1].split("\n\n", 1)[0]
    return next(cells(line, marks) for line in block.splitlines() if line.startswith(f"| {name} "))


def test_both_shapes_reproduce_the_published_rows(
    results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["rescore", str(results)], capsys)
    assert code == 0, err
    for table in ("overall", "STS", "NLI", "Clustering", "Retrieval"):
        heading = "종합 순위" if table == "overall" else table
        kure = published_line("nlpai-lab/KURE-v1", table, capsys)
        bge = published_line("BAAI/bge-m3", table, capsys)
        # values; ranks below (in the category tables the legacy row can shift KURE's rank)
        assert row(out, heading, "nlpai-lab/KURE-v1")[1:-1] == kure[1:-1], table
        assert row(out, heading, "acme/legacy-model")[1:-1] == bge[1:-1], table
    # the KURE run replaces the published KURE row; the legacy one ties with BAAI/bge-m3
    assert row(out, "종합 순위", "nlpai-lab/KURE-v1")[-2:] == ["62.74", "8"]
    assert row(out, "종합 순위", "acme/legacy-model")[-2:] == ["61.06", "14"]
    assert out.count("| nlpai-lab/KURE-v1 ") == 5  # one row per table, not two
    # the one liberty taken with old files is said, per task
    assert "Kor-STS: Kor-STS.json has no 'pearson'" not in err
    assert "KorSTS.json has no 'pearson'" in err and "cosine_pearson used" in err
    assert "missing" not in err


def test_one_shape_file_written_out_literally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shapes as files: a 2.x PawsX file (test + validation) and a < 1.11 STS17 file."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "PawsXPairClassification.json").write_text(
        """{
  "dataset_revision": "8a04d940a42cd40658986fdd8e3da561533a3646",
  "task_name": "PawsXPairClassification",
  "mteb_version": "2.1.0",
  "scores": {
    "test": [
      {"cosine_ap": 0.5192, "max_ap": 0.7701, "main_score": 0.7701, "hf_subset": "ko",
       "languages": ["kor-Hang"]},
      {"cosine_ap": 0.61, "max_ap": 0.8, "main_score": 0.8, "hf_subset": "en",
       "languages": ["eng-Latn"]}
    ],
    "validation": [
      {"cosine_ap": 0.99, "max_ap": 0.99, "main_score": 0.99, "hf_subset": "ko",
       "languages": ["kor-Hang"]}
    ]
  },
  "evaluation_time": 40.1,
  "kg_co2_emissions": null
}""",
        encoding="utf-8",
    )
    (folder / "STS17.json").write_text(
        """{
  "dataset_revision": "af5e6fb845001ecf41f4c1e033ce921939a2a68d",
  "mteb_dataset_name": "STS17",
  "mteb_version": "1.1.2.dev0",
  "test": {
    "en-en": {"cos_sim": {"pearson": 0.9, "spearman": 0.9},
              "euclidean": {"pearson": 0.9, "spearman": 0.9},
              "manhattan": {"pearson": 0.9, "spearman": 0.9}},
    "ko-ko": {"cos_sim": {"pearson": 0.8, "spearman": 0.82},
              "euclidean": {"pearson": 0.79, "spearman": 0.81},
              "manhattan": {"pearson": 0.78, "spearman": 0.8}},
    "evaluation_time": 2.31
  }
}""",
        encoding="utf-8",
    )
    code, out, err = run(["rescore", str(folder), "--table", "NLI", "--name", "me/m"], capsys)
    assert code == 0, err
    assert row(out, "NLI", "me/m")[3] == "51.92"  # test / ko cosine_ap, not max_ap
    code, out, err = run(["rescore", str(folder), "--table", "STS", "--name", "me/m"], capsys)
    # (0.8 + 0.82) * 2 [cos_sim used for pearson/spearman] + 0.79 + 0.81 + 0.78 + 0.8, / 8
    assert row(out, "STS", "me/m")[3] == "80.25"
    assert "13 of 15 tasks missing" in err


def test_missing_tasks_are_listed_and_not_averaged(
    results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.rmtree(results / "acme__legacy-model")
    kure = next((results / "nlpai-lab__KURE-v1").iterdir())
    (kure / "SIB200ClusteringS2S.json").unlink()
    data = json.loads((kure / "Ko-StrategyQA.json").read_text())
    del data["scores"]["dev"]  # only the test split left
    (kure / "Ko-StrategyQA.json").write_text(json.dumps(data))
    code, out, err = run(["rescore", str(results), "--table", "overall"], capsys)
    assert code == 0
    assert row(out, "종합 순위", "nlpai-lab/KURE-v1")[1:] == [
        "83.37", "64.79", "-", "-", "-", "-"
    ]  # fmt: skip
    assert "2 of 15 tasks missing" in err
    assert "sib200 (no result file for task SIB200ClusteringS2S)" in err
    assert "Ko-StrategyQA (Ko-StrategyQA.json has no scores for split 'dev'" in err
    assert "--allow-partial" in err

    code, out, err = run(["rescore", str(results), "--allow-partial"], capsys)
    assert code == 0
    overall = out.split("\n\n")[0].splitlines()
    assert "sib200" not in out and "Ko-StrategyQA" not in out
    line = cells(overall[3])
    assert line[0] == "nlpai-lab/KURE-v1"
    assert line[-2] != "-" and line[-1] != "-"
    assert "averages over the 13 of 15 tasks" in err


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: root / "nope", "is not a directory"),
        (lambda root: root, "no mteb result files"),
        (lambda root: _write(root / "a" / "x.json", "{not json"), "is not valid JSON"),
        (lambda root: _write(root / "a" / "x.json", '{"hello": 1}'), "is not an mteb result"),
        (
            lambda root: _write(
                root / "a" / "Foo.json", json.dumps({"task_name": "Foo", "scores": {}})
            ),
            "no result under",
        ),
        (
            lambda root: _write_twice(root / "a", json.dumps(new_file(SUITE.tasks[0], 80.0))),
            "two result files for task 'KLUE-STS'",
        ),
    ],
)
def test_errors_are_one_line_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: Any, message: str
) -> None:
    target = setup(tmp_path)
    directory = target if target.is_dir() or not target.exists() else tmp_path
    code, out, err = run(["rescore", str(directory)], capsys)
    assert code == 4
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("koembed: error: ")
    assert message in err


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _write_twice(folder: Path, text: str) -> Path:
    _write(folder / "KLUE-STS.json", text)
    return _write(folder / "KLUE-STS (copy).json", text)


def test_name_needs_a_single_model(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["rescore", str(results), "--name", "x"], capsys)
    assert code == 4 and "--name names one model" in err


# ---------------------------------------------------------------------------------------------
# Pair de-duplication: mteb's own files are marked, pytest-koembed's are not
# ---------------------------------------------------------------------------------------------

PAIR_COLUMNS = [t.column for t in SUITE.tasks if t.category in ("STS", "NLI")]


def test_pair_values_from_mteb_files_are_marked(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "rescore.json"
    code, out, err = run(["rescore", str(results), "--json", str(report)], capsys)
    assert code == 0, err
    for name in ("nlpai-lab/KURE-v1", "acme/legacy-model"):
        sts = row(out, "STS", name, marks=True)
        assert [c.endswith(MARK) for c in sts[1:]] == [True] * 4 + [False]  # 3 tasks, avg; rank
        nli = row(out, "NLI", name, marks=True)
        assert [c.endswith(MARK) for c in nli[1:]] == [True] * 4 + [False]
        for table in ("Clustering", "Retrieval"):
            assert MARK not in "".join(row(out, table, name, marks=True)), table
        overall = row(out, "종합 순위", name, marks=True)  # S, N, C, R averages, weighted, rank
        assert [c.endswith(MARK) for c in overall[1:]] == [True, True, False, False, True, False]
        assert f"{name} ({results}" in err
    assert out.count(MARK) == 2 * (4 + 4 + 3) + 1  # the cells, and the footnote
    footnote = out.rstrip("\n").splitlines()[-1]
    assert footnote.startswith(f"{MARK} from an mteb result file made without the leaderboard's")
    assert "without the leaderboard's pair de-duplication (marked †)" in err
    assert "KLUE-STS, Kor-STS, STS17, KLUE-NLI, Kor-NLI, PawsX-PairClassification from mteb" in err

    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["suite"] == "ko-leaderboard-v1"
    by_name = {m["name"]: m for m in data["models"]}
    kure = {t["column"]: t for t in by_name["nlpai-lab/KURE-v1"]["tasks"]}
    assert [c for c, t in kure.items() if t["pairs_deduplicated"] is False] == PAIR_COLUMNS
    assert all(kure[c]["pairs_deduplicated"] is None for c in kure if c not in PAIR_COLUMNS)
    assert kure["Kor-STS"]["value"] == pytest.approx(KURE["Kor-STS"])
    assert kure["Kor-STS"]["file"].endswith("KorSTS.json")
    assert kure["Kor-STS"]["missing"] is None


def test_koembed_jsonl_lifts_the_mark_per_task(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A provenance line per task (what --koembed-results-dir writes) lifts that task's mark."""
    kure = next((results / "nlpai-lab__KURE-v1").iterdir())
    lines = [
        {"task_name": spec.task, "column": spec.column, "duplicates_dropped": 3}
        for spec in SUITE.tasks
        if spec.category == "STS"
    ]
    (kure / "koembed.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in lines) + "not json\n", encoding="utf-8"
    )
    report = tmp_path / "rescore.json"
    code, out, err = run(["rescore", str(results), "--json", str(report)], capsys)
    assert code == 0, err
    assert MARK not in "".join(row(out, "STS", "nlpai-lab/KURE-v1", marks=True))
    assert row(out, "NLI", "nlpai-lab/KURE-v1", marks=True)[1].endswith(MARK)
    assert row(out, "STS", "acme/legacy-model", marks=True)[1].endswith(MARK)
    models = {m["name"]: m for m in json.loads(report.read_text("utf-8"))["models"]}
    tasks = {t["column"]: t["pairs_deduplicated"] for t in models["nlpai-lab/KURE-v1"]["tasks"]}
    assert tasks["Kor-STS"] is True and tasks["Kor-NLI"] is False and tasks["sib200"] is None


CHAR_ENCODER = """
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


def test_results_of_a_koembed_run_are_not_marked(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end: --koembed-results-dir, then rescore; without koembed.jsonl the marks return."""
    pytester.makeconftest(CHAR_ENCODER)
    results = pytester.path / "out"
    run_record = pytester.path / "run.json"
    outcome = pytester.runpytest(
        "--koembed-model=acme/char-bigrams",
        "--koembed-suite=sample",
        f"--koembed-results-dir={results}",
        f"--koembed-json={run_record}",
    )
    outcome.assert_outcomes(passed=6)
    values = {t["column"]: t["value"] for t in json.loads(run_record.read_text("utf-8"))["tasks"]}
    report = pytester.path / "rescore.json"
    code, out, err = run(
        ["rescore", str(results), "--suite", "sample", "--json", str(report)], capsys
    )
    assert code == 0, err
    assert MARK not in out and "de-duplication" not in err
    tasks = {t["column"]: t for t in json.loads(report.read_text("utf-8"))["models"][0]["tasks"]}
    assert tasks["sample-sts"]["pairs_deduplicated"] is True
    assert tasks["sample-pairs"]["pairs_deduplicated"] is True
    assert tasks["sample-clustering"]["pairs_deduplicated"] is None
    for column, value in values.items():  # mteb's files round to 6 decimals (x100: 4)
        assert tasks[column]["value"] == pytest.approx(value, abs=1e-3), column

    (next(results.glob("results/*/*")) / "koembed.jsonl").unlink()
    code, out, err = run(["rescore", str(results), "--suite", "sample"], capsys)
    assert code == 0, err
    assert "sample-sts, sample-pairs from mteb result files made without" in err
    assert out.count(MARK) > 1
