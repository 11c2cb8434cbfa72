"""The scoring protocol against every number the leaderboard publishes, plus unit tests.

The expected numbers below are copied verbatim from the published tables (leaderboard v1: the
overall table and the 4 category tables; v2: the dense and sparse tables). The per-task inputs are
read from ``baselines/``; nothing here needs the seed files, torch or a network.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.leaderboards import (
    find_row,
    leaderboards_for_suite,
    load_leaderboard,
    shipped_leaderboards,
    suite_of,
)
from pytest_koembed.protocol.scoring import (
    SCHEMES,
    STS_KEYS,
    VALUE_RULES,
    Summary,
    TaskRow,
    category_average,
    check_value_rule,
    format_value,
    rank,
    round_half_even,
    round_half_up,
    rule_keys,
    summarize,
    task_value,
)
from pytest_koembed.protocol.suite import load_suite

# ---------------------------------------------------------------------------------------------
# Published numbers (copied from the leaderboard's tables)
# ---------------------------------------------------------------------------------------------

# (row, STS_Average, NLI_Average, Clustering_Average, Retrieval_Average, Weighted_Average, Rank)
OVERALL_V1 = [
    ("Qwen/Qwen3-Embedding-8B-bf16", 89.36, 77.71, 65.79, 78.73, 66.74, 1),
    ("Alibaba-NLP/gte-Qwen2-7B-instruct-fp16", 85.55, 79.48, 67.34, 75.73, 66.03, 2),
    ("intfloat/multilingual-e5-large-instruct", 82.24, 65.69, 70.4, 73.4, 64.37, 3),
    ("telepix/PIXIE-Rune-Preview", 82.04, 60.54, 65.03, 79.81, 64.12, 4),
    ("telepix/PIXIE-Spell-Preview-1.7B-fp16", 78.11, 58.75, 66.42, 79.61, 63.88, 5),
    ("Qwen/Qwen3-Embedding-4B-bf16", 89.2, 76.4, 58.74, 77.68, 63.87, 6),
    ("dragonkue/snowflake-arctic-embed-l-v2.0-ko", 81.9, 60.21, 63.82, 79.44, 63.54, 7),
    ("nlpai-lab/KURE-v1", 83.37, 64.79, 61.6, 77.24, 62.74, 8),
    ("kakaocorp/kanana-nano-2.1b-embedding-fp16", 83.26, 66.86, 59.68, 76.51, 62.08, 9),
    (
        "McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp-supervised-bf16",
        79.97,
        67.21,
        65.2,
        71.88,
        62.05,
        10,
    ),
    ("BAAI/bge-multilingual-gemma2-fp16", 83.78, 76.44, 58.76, 72.41, 61.53, 11),
    ("nlpai-lab/KoE5", 81.36, 60.27, 60.39, 76.68, 61.43, 12),
    ("Qwen/Qwen3-Embedding-0.6B-bf16", 84.68, 69.58, 58.59, 73.3, 61.1, 13),
    ("BAAI/bge-m3", 83.46, 65.32, 58.27, 75.32, 61.06, 14),
    ("Snowflake/snowflake-arctic-embed-l-v2.0", 76.89, 58.95, 58.94, 77.21, 60.48, 15),
    ("dragonkue/BGE-m3-ko", 84.1, 62.01, 55.47, 77.04, 60.4, 16),
    ("FronyAI/frony-embed-medium-arctic-ko-v2.5", 83.26, 60.47, 53.45, 77.86, 59.74, 17),
    ("facebook/drama-1b-fp16", 80.76, 61.09, 51.1, 77.29, 58.56, 18),
    ("FronyAI/frony-embed-medium-ko-v2", 80.23, 61.14, 53.75, 74.02, 58.3, 19),
    ("upskyy/bge-m3-korean", 84.67, 70.82, 42.74, 69.98, 54.85, 20),
]
# (row, STS_Average, Rank), in published order
STS_V1 = [
    ("Qwen/Qwen3-Embedding-8B-bf16", 89.36, 1),
    ("Qwen/Qwen3-Embedding-4B-bf16", 89.2, 2),
    ("Alibaba-NLP/gte-Qwen2-7B-instruct-fp16", 85.55, 3),
    ("Qwen/Qwen3-Embedding-0.6B-bf16", 84.68, 4),
    ("upskyy/bge-m3-korean", 84.67, 5),
    ("dragonkue/BGE-m3-ko", 84.1, 6),
    ("BAAI/bge-multilingual-gemma2-fp16", 83.78, 7),
    ("BAAI/bge-m3", 83.46, 8),
    ("nlpai-lab/KURE-v1", 83.37, 9),
    ("FronyAI/frony-embed-medium-arctic-ko-v2.5", 83.26, 10),
    ("kakaocorp/kanana-nano-2.1b-embedding-fp16", 83.26, 10),
    ("intfloat/multilingual-e5-large-instruct", 82.24, 12),
    ("telepix/PIXIE-Rune-Preview", 82.04, 13),
    ("dragonkue/snowflake-arctic-embed-l-v2.0-ko", 81.9, 14),
    ("nlpai-lab/KoE5", 81.36, 15),
    ("facebook/drama-1b-fp16", 80.76, 16),
    ("FronyAI/frony-embed-medium-ko-v2", 80.23, 17),
    ("McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp-supervised-bf16", 79.97, 18),
    ("telepix/PIXIE-Spell-Preview-1.7B-fp16", 78.11, 19),
    ("Snowflake/snowflake-arctic-embed-l-v2.0", 76.89, 20),
]
# (row, NLI_Average, Rank), in published order
NLI_V1 = [
    ("Alibaba-NLP/gte-Qwen2-7B-instruct-fp16", 79.48, 1),
    ("Qwen/Qwen3-Embedding-8B-bf16", 77.71, 2),
    ("BAAI/bge-multilingual-gemma2-fp16", 76.44, 3),
    ("Qwen/Qwen3-Embedding-4B-bf16", 76.4, 4),
    ("upskyy/bge-m3-korean", 70.82, 5),
    ("Qwen/Qwen3-Embedding-0.6B-bf16", 69.58, 6),
    ("McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp-supervised-bf16", 67.21, 7),
    ("kakaocorp/kanana-nano-2.1b-embedding-fp16", 66.86, 8),
    ("intfloat/multilingual-e5-large-instruct", 65.69, 9),
    ("BAAI/bge-m3", 65.32, 10),
    ("nlpai-lab/KURE-v1", 64.79, 11),
    ("dragonkue/BGE-m3-ko", 62.01, 12),
    ("FronyAI/frony-embed-medium-ko-v2", 61.14, 13),
    ("facebook/drama-1b-fp16", 61.09, 14),
    ("telepix/PIXIE-Rune-Preview", 60.54, 15),
    ("FronyAI/frony-embed-medium-arctic-ko-v2.5", 60.47, 16),
    ("nlpai-lab/KoE5", 60.27, 17),
    ("dragonkue/snowflake-arctic-embed-l-v2.0-ko", 60.21, 18),
    ("Snowflake/snowflake-arctic-embed-l-v2.0", 58.95, 19),
    ("telepix/PIXIE-Spell-Preview-1.7B-fp16", 58.75, 20),
]
# (row, Clustering_Average, Rank), in published order
CLUSTERING_V1 = [
    ("intfloat/multilingual-e5-large-instruct", 70.4, 1),
    ("Alibaba-NLP/gte-Qwen2-7B-instruct-fp16", 67.34, 2),
    ("telepix/PIXIE-Spell-Preview-1.7B-fp16", 66.42, 3),
    ("Qwen/Qwen3-Embedding-8B-bf16", 65.79, 4),
    ("McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp-supervised-bf16", 65.2, 5),
    ("telepix/PIXIE-Rune-Preview", 65.03, 6),
    ("dragonkue/snowflake-arctic-embed-l-v2.0-ko", 63.82, 7),
    ("nlpai-lab/KURE-v1", 61.6, 8),
    ("nlpai-lab/KoE5", 60.39, 9),
    ("kakaocorp/kanana-nano-2.1b-embedding-fp16", 59.68, 10),
    ("Snowflake/snowflake-arctic-embed-l-v2.0", 58.94, 11),
    ("BAAI/bge-multilingual-gemma2-fp16", 58.76, 12),
    ("Qwen/Qwen3-Embedding-4B-bf16", 58.74, 13),
    ("Qwen/Qwen3-Embedding-0.6B-bf16", 58.59, 14),
    ("BAAI/bge-m3", 58.27, 15),
    ("dragonkue/BGE-m3-ko", 55.47, 16),
    ("FronyAI/frony-embed-medium-ko-v2", 53.75, 17),
    ("FronyAI/frony-embed-medium-arctic-ko-v2.5", 53.45, 18),
    ("facebook/drama-1b-fp16", 51.1, 19),
    ("upskyy/bge-m3-korean", 42.74, 20),
]
# (row, Retrieval_Average, Rank), in published order
RETRIEVAL_V1 = [
    ("telepix/PIXIE-Rune-Preview", 79.81, 1),
    ("telepix/PIXIE-Spell-Preview-1.7B-fp16", 79.61, 2),
    ("dragonkue/snowflake-arctic-embed-l-v2.0-ko", 79.44, 3),
    ("Qwen/Qwen3-Embedding-8B-bf16", 78.73, 4),
    ("FronyAI/frony-embed-medium-arctic-ko-v2.5", 77.86, 5),
    ("Qwen/Qwen3-Embedding-4B-bf16", 77.68, 6),
    ("facebook/drama-1b-fp16", 77.29, 7),
    ("nlpai-lab/KURE-v1", 77.24, 8),
    ("Snowflake/snowflake-arctic-embed-l-v2.0", 77.21, 9),
    ("dragonkue/BGE-m3-ko", 77.04, 10),
    ("nlpai-lab/KoE5", 76.68, 11),
    ("kakaocorp/kanana-nano-2.1b-embedding-fp16", 76.51, 12),
    ("Alibaba-NLP/gte-Qwen2-7B-instruct-fp16", 75.73, 13),
    ("BAAI/bge-m3", 75.32, 14),
    ("FronyAI/frony-embed-medium-ko-v2", 74.02, 15),
    ("intfloat/multilingual-e5-large-instruct", 73.4, 16),
    ("Qwen/Qwen3-Embedding-0.6B-bf16", 73.3, 17),
    ("BAAI/bge-multilingual-gemma2-fp16", 72.41, 18),
    ("McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp-supervised-bf16", 71.88, 19),
    ("upskyy/bge-m3-korean", 69.98, 20),
]
# (row, Retrieval_Average, Rank), in published order
DENSE_V2 = [
    ("perplexity-ai/pplx-embed-v1-4b", 82.79, 1),
    ("dragonkue/snowflake-arctic-embed-l-v2.0-ko", 82.14, 2),
    ("telepix/PIXIE-Rune-v1.0", 81.57, 3),
    ("Qwen/Qwen3-Embedding-4B", 81.37, 4),
    ("nlpai-lab/KURE-v1", 80.76, 5),
    ("jinaai/jina-embeddings-v5-text-small", 80.29, 6),
    ("Snowflake/snowflake-arctic-embed-l-v2.0", 80.0, 7),
    ("BAAI/bge-m3", 79.3, 8),
    ("google/embeddinggemma-300m", 78.19, 9),
    ("microsoft/harrier-oss-v1-0.6b", 77.49, 10),
    ("intfloat/multilingual-e5-large-instruct", 77.27, 11),
    ("Qwen/Qwen3-Embedding-0.6B", 75.88, 12),
]
# (row, Sparse_Retrieval_Average, Rank), in published order
SPARSE_V2 = [
    ("telepix/PIXIE-Splade-v1.5", 78.19, 1),
    ("yjoonjang/splade-ko-v1", 77.0, 2),
    ("yjoonjang/inference-free-splade-ko-v1", 76.75, 3),
    ("telepix/PIXIE-Splade-Preview", 74.79, 4),
    ("telepix/PIXIE-Splade-v1.0", 70.4, 5),
]

CATEGORY_TABLES_V1 = {
    "STS": STS_V1,
    "NLI": NLI_V1,
    "Clustering": CLUSTERING_V1,
    "Retrieval": RETRIEVAL_V1,
}

STALE_ROWS_V1 = (
    "BAAI/bge-m3",
    "dragonkue/BGE-m3-ko",
    "upskyy/bge-m3-korean",
    "nlpai-lab/KoE5",
    "McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp-supervised-bf16",
)
STALE_COLUMNS_V1 = (
    "KLUE-STS",
    "Kor-STS",
    "STS17",
    "KLUE-NLI",
    "Kor-NLI",
    "PawsX-PairClassification",
    "sib200",
)


def _summary(suite_name: str, values: dict[str, float], scheme: str | None = None) -> Summary:
    suite = load_suite(suite_name)
    rows = [TaskRow(t.column, t.category, values.get(t.column)) for t in suite.tasks]
    return summarize(rows, scheme or suite.scheme)


@pytest.fixture(scope="module")
def v1_summaries() -> dict[str, Summary]:
    lb = load_leaderboard("ko-leaderboard-v1")
    return {name: _summary("ko-leaderboard-v1", values) for name, values in lb.rows.items()}


# ---------------------------------------------------------------------------------------------
# The baseline files
# ---------------------------------------------------------------------------------------------


def test_shipped_baselines_belong_to_their_suites() -> None:
    assert set(shipped_leaderboards()) >= {
        "ko-leaderboard-v1",
        "ko-leaderboard-v2-dense",
        "ko-leaderboard-v2-sparse",
    }
    assert leaderboards_for_suite("ko-leaderboard-v2") == [
        "ko-leaderboard-v2-dense",
        "ko-leaderboard-v2-sparse",
    ]
    for name in ("ko-leaderboard-v1", "ko-leaderboard-v2-dense", "ko-leaderboard-v2-sparse"):
        lb = load_leaderboard(name)
        assert lb.suite == suite_of(name)
        suite = load_suite(lb.suite)
        # every task column of the suite, in suite order, every cell published
        assert lb.columns == tuple(t.column for t in suite.tasks)
        for row, values in lb.rows.items():
            assert set(values) == set(lb.columns), row


def test_v1_baseline_has_the_20_published_rows() -> None:
    lb = load_leaderboard("ko-leaderboard-v1")
    assert len(lb) == 20
    assert set(lb.rows) == {row[0] for row in OVERALL_V1}
    for _, table in CATEGORY_TABLES_V1.items():
        assert set(lb.rows) == {row[0] for row in table}


def test_v1_stale_cells_are_marked_per_cell() -> None:
    lb = load_leaderboard("ko-leaderboard-v1")
    assert set(lb.stale) == {(r, c) for r in STALE_ROWS_V1 for c in STALE_COLUMNS_V1}
    row = find_row(lb, "dragonkue/BGE-m3-ko")
    assert row is not None
    assert row.is_stale("Kor-NLI") and row.values["Kor-NLI"] == 68.71
    assert not row.is_stale("clustering_klue_mrc_ynat_title")
    assert "2024-11-28" in row.stale["sib200"]
    kure = find_row(lb, "nlpai-lab/KURE-v1")
    assert kure is not None and kure.stale == {}


def test_find_row() -> None:
    lb = load_leaderboard("ko-leaderboard-v1")
    exact = find_row(lb, "Qwen/Qwen3-Embedding-8B-bf16")
    assert exact is not None and exact.values["KLUE-STS"] == 88.74
    folded = find_row(lb, "qwen/qwen3-embedding-8b-BF16")
    assert folded is not None and folded.name == "Qwen/Qwen3-Embedding-8B-bf16"
    assert find_row(lb, "Qwen/Qwen3-Embedding-8B") is None  # the dtype suffix is part of the name
    assert find_row(lb, "no/such-model") is None


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("name,KLUE-STS\na,1\n", "line 1: the header must be"),
        ("model,KLUE-STS,Kor-STS\na,1,2\nb,1\n", "line 3: expected 3 cells, got 2"),
        ("model,KLUE-STS\na,8x.1\n", "line 2, column 'KLUE-STS': '8x.1' is not a number"),
        ("model,KLUE-STS\na,nan\n", "line 2, column 'KLUE-STS': 'nan' is not a finite number"),
        ("model,KLUE-STS\na,1\na,2\n", "line 3: row 'a' appears twice"),
        ("model,KLUE-STS,KLUE-STS\na,1,2\n", "repeated column"),
    ],
)
def test_malformed_baseline_is_one_line_error(tmp_path, text, message) -> None:
    path = _write(tmp_path / "mine.csv", text)
    with pytest.raises(KoembedError) as info:
        load_leaderboard(str(path))
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_stale_file_is_one_line_error(tmp_path) -> None:
    path = _write(tmp_path / "mine.csv", "model,KLUE-STS\na,1\n")
    _write(tmp_path / "mine.stale.csv", "row,column,reason\na,KLUE-STS,old\nb,KLUE-STS,old\n")
    with pytest.raises(KoembedError, match=r"mine\.stale\.csv line 3: no row 'b'"):
        load_leaderboard(str(path))
    _write(tmp_path / "mine.stale.csv", "row,column,reason\na,Kor-STS,old\n")
    with pytest.raises(KoembedError, match=r"line 2: no column 'Kor-STS'"):
        load_leaderboard(str(path))
    _write(tmp_path / "mine.stale.csv", "row,column,reason\na,KLUE-STS,old\n")
    lb = load_leaderboard(str(path))
    assert lb.stale == {("a", "KLUE-STS"): "old"} and lb.suite is None and lb.name == "mine"


def test_empty_cell_means_not_published(tmp_path) -> None:
    lb = load_leaderboard(str(_write(tmp_path / "x.csv", "model,KLUE-STS,Kor-STS\na,,80\n")))
    assert lb.rows == {"a": {"Kor-STS": 80.0}}


def test_missing_baseline_is_one_line_error(tmp_path) -> None:
    with pytest.raises(KoembedError, match=r"unknown baseline leaderboard 'nope'.*shipped: "):
        load_leaderboard("nope")
    with pytest.raises(KoembedError, match="does not exist"):
        load_leaderboard(str(tmp_path / "missing.csv"))


# ---------------------------------------------------------------------------------------------
# Every published v1 number, recomputed from the per-task values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("published", OVERALL_V1, ids=[row[0] for row in OVERALL_V1])
def test_v1_overall_row(v1_summaries, published) -> None:
    name, sts, nli, clustering, retrieval, weighted, _rank = published
    summary = v1_summaries[name]
    assert summary.category_averages == {
        "STS": sts,
        "NLI": nli,
        "Clustering": clustering,
        "Retrieval": retrieval,
    }
    assert summary.weighted == weighted
    assert summary.complete and summary.scheme == "ko-leaderboard-v1"


def test_v1_overall_ranks(v1_summaries) -> None:
    ranks = rank({name: v1_summaries[name].weighted for name, *_ in OVERALL_V1})
    assert ranks == {row[0]: row[-1] for row in OVERALL_V1}


@pytest.mark.parametrize("category", list(CATEGORY_TABLES_V1))
def test_v1_category_table(v1_summaries, category) -> None:
    table = CATEGORY_TABLES_V1[category]
    got = {name: v1_summaries[name].category_averages[category] for name, _, _ in table}
    assert got == {name: avg for name, avg, _ in table}
    assert rank(got) == {name: r for name, _, r in table}


def test_v1_sts_tie_shares_rank_10_and_skips_11(v1_summaries) -> None:
    ranks = rank({n: s.category_averages["STS"] for n, s in v1_summaries.items()})
    assert ranks["FronyAI/frony-embed-medium-arctic-ko-v2.5"] == 10
    assert ranks["kakaocorp/kanana-nano-2.1b-embedding-fp16"] == 10
    assert 11 not in ranks.values()
    assert ranks["intfloat/multilingual-e5-large-instruct"] == 12


def test_v1_rounding_evidence() -> None:
    """Why averages round half-even and weighting uses the rounded category averages."""
    lb = load_leaderboard("ko-leaderboard-v1")
    suite = load_suite("ko-leaderboard-v1")
    frony = lb.rows["FronyAI/frony-embed-medium-arctic-ko-v2.5"]
    retrieval = [frony[t.column] for t in suite.tasks if t.category == "Retrieval"]
    assert math.isclose(sum(retrieval) / 6, 77.865)  # an exact tie in decimal
    assert round_half_up(77.865) == 77.87  # half-up does not give the published number
    assert category_average(retrieval) == 77.86  # the published number
    # weighting the unrounded category averages misses the published value of 3 rows
    misses = []
    for name, values in lb.rows.items():
        means = {
            cat: sum(values[t.column] for t in suite.tasks if t.category == cat)
            / sum(1 for t in suite.tasks if t.category == cat)
            for cat in CATEGORY_TABLES_V1
        }
        unrounded = round_half_up(
            means["Retrieval"] / 3 + means["Clustering"] / 3 + (means["STS"] + means["NLI"]) / 9
        )
        published = next(row[5] for row in OVERALL_V1 if row[0] == name)
        if unrounded != published:
            misses.append(name)
    assert sorted(misses) == [
        "Alibaba-NLP/gte-Qwen2-7B-instruct-fp16",
        "BAAI/bge-multilingual-gemma2-fp16",
        "Qwen/Qwen3-Embedding-4B-bf16",
    ]


def test_v1_documented_scheme() -> None:
    # KURE-v1: 77.24/3 + 61.6/3 + (83.37 + 64.79)/6 = 70.9733...
    kure = load_leaderboard("ko-leaderboard-v1").rows["nlpai-lab/KURE-v1"]
    summary = _summary("ko-leaderboard-v1", kure, "ko-leaderboard-v1-documented")
    assert summary.weighted == 70.97
    assert summary.category_averages["STS"] == 83.37


# ---------------------------------------------------------------------------------------------
# v2: dense and sparse retrieval tables
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leaderboard", "published"),
    [("ko-leaderboard-v2-dense", DENSE_V2), ("ko-leaderboard-v2-sparse", SPARSE_V2)],
)
def test_v2_averages_and_ranks(leaderboard, published) -> None:
    lb = load_leaderboard(leaderboard)
    assert list(lb.rows) == [row[0] for row in published]
    got = {}
    for name, values in lb.rows.items():
        summary = _summary("ko-leaderboard-v2", values)
        assert summary.scheme == "task-mean"
        assert summary.category_averages["Retrieval"] == summary.weighted
        got[name] = summary.weighted
    assert got == {name: avg for name, avg, _ in published}
    assert rank(got) == {name: r for name, _, r in published}


# ---------------------------------------------------------------------------------------------
# Unit tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "ndigits", "expected"),
    [
        (83.375, 2, 83.38),
        (0.125, 2, 0.13),  # round() gives 0.12
        (2.675, 2, 2.68),  # the float is 2.67499999..., round() gives 2.67
        (1.005, 2, 1.01),
        (-1.005, 2, -1.01),  # half away from zero
        (77.865, 2, 77.87),
        (89.2, 2, 89.2),
        (78.0, 2, 78.0),
        (83.37499, 2, 83.37),
        (2.5, 0, 3.0),
        (0.0, 2, 0.0),
        (62.745, 1, 62.7),
    ],
)
def test_round_half_up(x, ndigits, expected) -> None:
    assert round_half_up(x, ndigits) == expected


def test_round_half_even() -> None:
    assert round_half_even(77.865) == 77.86
    assert round_half_even(77.875) == 77.88
    assert round_half_even(77.8651) == 77.87
    assert round_half_even(2.5, 0) == 2.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_round_rejects_non_finite(bad) -> None:
    with pytest.raises(ValueError):
        round_half_up(bad)


def test_value_rules() -> None:
    assert set(VALUE_RULES) == {"sts-mean8", "ndcg-5-10", "main_score"}
    assert len(STS_KEYS) == 8
    assert rule_keys("sts-mean8") == STS_KEYS
    assert rule_keys("ndcg-5-10") == ("ndcg_at_5", "ndcg_at_10")
    assert rule_keys("cosine_ap") == ("cosine_ap",)
    for rule in ("sts-mean8", "ndcg-5-10", "main_score", "cosine_ap", "v_measure", "max_ap"):
        check_value_rule(rule, "here")


@pytest.mark.parametrize("rule", ["sts-mean6", "cosine ap", "", "ndcg@10", "1abc"])
def test_unknown_value_rule(rule) -> None:
    with pytest.raises(KoembedError) as info:
        check_value_rule(rule, "suite x, task 'KLUE-STS'")
    message = str(info.value)
    assert message.startswith("suite x, task 'KLUE-STS': unknown value rule")
    assert "\n" not in message


def test_task_value_sts_mean8() -> None:
    scores = {key: 0.80 + 0.01 * i for i, key in enumerate(STS_KEYS)}
    scores["main_score"] = 0.5  # other keys are ignored
    scores["hf_subset"] = "ko-ko"  # type: ignore[assignment]
    assert math.isclose(task_value("sts-mean8", scores), 83.5)


def test_task_value_other_rules() -> None:
    assert math.isclose(task_value("ndcg-5-10", {"ndcg_at_5": 0.78, "ndcg_at_10": 0.80}), 79.0)
    assert math.isclose(task_value("cosine_ap", {"cosine_ap": 0.6734, "max_ap": 0.7}), 67.34)
    assert math.isclose(task_value("main_score", {"main_score": 0.3921}), 39.21)
    # unrounded: the shown value is rounded later
    assert task_value("v_measure", {"v_measure": 0.123456}) == pytest.approx(12.3456)


def test_task_value_missing_key_names_key_and_rule() -> None:
    scores = {key: 0.8 for key in STS_KEYS if key != "manhattan_spearman"}
    with pytest.raises(KoembedError) as info:
        task_value("sts-mean8", scores)
    message = str(info.value)
    assert "'sts-mean8'" in message and "manhattan_spearman" in message
    assert "\n" not in message
    with pytest.raises(KoembedError, match="ndcg_at_5, ndcg_at_10"):
        task_value("ndcg-5-10", {"ndcg_at_1": 0.5})


@pytest.mark.parametrize("bad", [math.nan, math.inf, "0.5", None, True])
def test_task_value_rejects_non_numbers(bad) -> None:
    with pytest.raises(KoembedError, match=r"'cosine_ap'.*not a finite number"):
        task_value("cosine_ap", {"cosine_ap": bad})


def test_rank_competition_ties() -> None:
    values = {f"m{i}": 95.0 - i for i in range(9)}  # 95 .. 87: ranks 1..9
    values.update({"a": 83.26, "b": 83.26, "c": 82.24, "d": 82.24, "e": 80.0})
    ranks = rank(values)
    assert ranks["m8"] == 9
    assert ranks["a"] == ranks["b"] == 10
    assert ranks["c"] == ranks["d"] == 12
    assert ranks["e"] == 14
    assert list(ranks) == list(values)
    assert rank({}) == {}


def test_incomplete_category_is_none() -> None:
    rows = [
        TaskRow("s1", "STS", 80.0),
        TaskRow("s2", "STS", None),  # errored
        TaskRow("n1", "NLI", 60.0),
        TaskRow("c1", "Clustering", 50.0),
        TaskRow("r1", "Retrieval", 70.0),
    ]
    summary = summarize(rows, "ko-leaderboard-v1")
    assert summary.category_averages == {
        "STS": None,
        "NLI": 60.0,
        "Clustering": 50.0,
        "Retrieval": 70.0,
    }
    assert summary.incomplete == ("STS",)
    assert summary.missing_columns == ("s2",)
    assert summary.weighted is None and not summary.complete
    # the task-mean scheme needs every task too
    assert summarize(rows, "task-mean").weighted is None


def test_absent_category_is_reported() -> None:
    rows = [("s1", "STS", 80.0), ("r1", "Retrieval", 70.0)]  # plain tuples work too
    summary = summarize(rows, "ko-leaderboard-v1")
    assert summary.absent == ("NLI", "Clustering")
    assert summary.incomplete == ()
    assert summary.weighted is None
    assert summarize(rows, "task-mean").weighted == 75.0


def test_summary_rounds_run_values() -> None:
    rows = [
        TaskRow("s1", "STS", 83.375),  # shown 83.38
        TaskRow("s2", "STS", 80.0049),  # shown 80.0
        TaskRow("n1", "NLI", 64.794),
        TaskRow("c1", "Clustering", 61.6),
        TaskRow("r1", "Retrieval", 77.2449),
    ]
    summary = summarize(rows, "ko-leaderboard-v1")
    assert summary.shown == {"s1": 83.38, "s2": 80.0, "n1": 64.79, "c1": 61.6, "r1": 77.24}
    assert summary.category_averages["STS"] == 81.69  # (83.38 + 80.00) / 2
    assert summary.weighted == round_half_even(77.24 / 3 + 61.6 / 3 + (81.69 + 64.79) / 9)


def test_summarize_errors() -> None:
    with pytest.raises(KoembedError, match="unknown weighting scheme 'nope'"):
        summarize([TaskRow("a", "STS", 1.0)], "nope")
    with pytest.raises(KoembedError, match="'a' appears twice"):
        summarize([TaskRow("a", "STS", 1.0), TaskRow("a", "STS", 2.0)], "task-mean")
    assert summarize([], "task-mean").weighted is None


def test_schemes() -> None:
    assert {"ko-leaderboard-v1", "ko-leaderboard-v1-documented", "task-mean"} <= set(SCHEMES)
    for name, scheme in SCHEMES.items():
        assert scheme.name == name
        assert scheme.description and "\n" not in scheme.description
    averages = {"STS": 83.37, "NLI": 64.79, "Clustering": 61.6, "Retrieval": 77.24}
    assert SCHEMES["ko-leaderboard-v1"](averages, []) == 62.74
    assert SCHEMES["ko-leaderboard-v1-documented"](averages, []) == 70.97
    assert SCHEMES["ko-leaderboard-v1"]({**averages, "NLI": None}, []) is None
    assert SCHEMES["task-mean"]({}, [80.0, 81.0, 79.5]) == 80.17


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (89.2, "89.2"),
        (78.0, "78"),
        (61.60, "61.6"),
        (83.26, "83.26"),
        (83.375, "83.38"),
        (87.4812, "87.48"),
        (100.0, "100"),
        (0.0, "0"),
        (-0.001, "0"),
        (5.05, "5.05"),
        (None, "-"),
    ],
)
def test_format_value(x, expected) -> None:
    assert format_value(x) == expected
