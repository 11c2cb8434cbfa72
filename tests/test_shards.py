"""``--koembed-shard K/N``: a deterministic, disjoint, covering and cost-balanced split of the
selected tasks, applied after -k / -m, recorded in the run record."""

from __future__ import annotations

import json

import pytest
from koembed_test_encoders import HASHING_ENCODER

from pytest_koembed.protocol.suite import load_suite
from pytest_koembed.run.shards import (
    TEXT_OVERHEAD,
    assign,
    estimate_costs,
    parse_shard,
    shard_columns,
)

pytestmark = pytest.mark.usefixtures("offline")


def test_longest_first_to_the_least_loaded_shard() -> None:
    # by position this would be [a, b] / [c, d]; by cost the two big tasks go apart
    costs = {"a": 10, "b": 9, "c": 1, "d": 1}
    assert assign(costs, 2) == [["a", "d"], ["b", "c"]]
    assert assign(costs, 1) == [["a", "b", "c", "d"]]
    assert assign(costs, 5) == [["a"], ["b"], ["c"], ["d"], []]


@pytest.mark.parametrize("suite_name", ["ko-leaderboard-v1", "sample"])
def test_every_split_is_deterministic_disjoint_and_covering(suite_name: str) -> None:
    specs = list(load_suite(suite_name).tasks)
    columns = [s.column for s in specs]
    for count in range(1, 6):
        parts = [
            shard_columns(specs, parse_shard(f"{k}/{count}"), None)[0] for k in range(1, count + 1)
        ]
        again = [
            shard_columns(specs, parse_shard(f"{k}/{count}"), None)[0] for k in range(1, count + 1)
        ]
        assert parts == again
        flat = [c for part in parts for c in part]
        assert sorted(flat) == sorted(columns)  # covering, and disjoint (no repeats)
        for part in parts:  # each shard keeps suite order
            assert part == [c for c in columns if c in part]


def test_costs_come_from_mteb_metadata_and_local_files() -> None:
    leaderboard = estimate_costs(load_suite("ko-leaderboard-v1").tasks, None)
    korsts = leaderboard["Kor-STS"]
    assert korsts.source == "mteb metadata"
    # mteb's descriptive_stats of KorSTS test: 1,376 pairs, 80,577 characters
    assert (korsts.texts, korsts.characters) == (1376, 80577)
    assert korsts.estimate == 80577 + TEXT_OVERHEAD * 1376
    sample = estimate_costs(load_suite("sample").tasks, None)
    assert {c.source for c in sample.values()} == {"local files"}
    # the retrieval corpus and the STS pairs are read from the suite's own JSONL files
    assert sample["sample-sts"].texts == 2 * 82


def test_a_balanced_split_of_the_leaderboard() -> None:
    """Four shards of the 15 v1 tasks: no shard carries more than the largest task plus an even
    share, which a split by position does not achieve."""
    specs = load_suite("ko-leaderboard-v1").tasks
    costs = {c: cost.estimate for c, cost in estimate_costs(specs, None).items()}
    loads = [sum(costs[c] for c in part) for part in assign(costs, 4)]
    assert max(loads) <= max(costs.values()) + sum(costs.values()) / 4
    columns = list(costs)
    by_position = [sum(costs[c] for c in columns[i::4]) for i in range(4)]
    assert max(loads) <= max(by_position)


@pytest.mark.parametrize("text", ["3/2", "0/2", "2", "a/b", "1/0"])
def test_a_bad_shard_is_one_usage_error_line(pytester: pytest.Pytester, text: str) -> None:
    pytester.makeconftest(HASHING_ENCODER)
    result = pytester.runpytest(
        "--koembed-model=hashing", "--koembed-suite=sample", f"--koembed-shard={text}"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if "--koembed-shard" in line]
    assert len(errors) == 1 and "K/N" in errors[0], result.stderr.str()


def test_a_shard_takes_its_part_of_the_k_selection(pytester: pytest.Pytester) -> None:
    """-k deselects clustering; shard 2/2 runs its part of the tasks left."""
    pytester.makeconftest(HASHING_ENCODER)
    specs = [s for s in load_suite("sample").tasks if s.column != "sample-clustering"]
    mine, _ = shard_columns(specs, parse_shard("2/2"), None)
    record_path = pytester.path / "shard.json"
    result = pytester.runpytest(
        "--koembed-model=hashing",
        "--koembed-suite=sample",
        "--koembed-shard=2/2",
        "--koembed-baseline=none",
        "--koembed-fail-under=weighted=0",
        f"--koembed-json={record_path}",
        "-k",
        "not clustering",
    )
    assert result.ret == 0, result.stdout.str()
    record = json.loads(record_path.read_text(encoding="utf-8"))
    assert [t["column"] for t in record["tasks"]] == mine
    assert record["shard"]["index"] == 2 and record["shard"]["count"] == 2
    assert record["shard"]["tasks"] == mine
    assert record["shard"]["selected"] == [s.column for s in specs]
    names = ", ".join(mine)
    result.stdout.fnmatch_lines(
        [
            f"koembed: shard 2/2: tasks {names} ({len(mine)} of {len(specs)} selected tasks)",
            f"shard 2/2: tasks {names} ({len(mine)} of {len(specs)} selected tasks)",
            # a shard holds part of the run: its gates wait for the merged record
            "gate weighted >= 0.00: NOT CHECKED, shard 2/2 holds part of the run: gate the merged "
            "record (koembed gate)",
        ]
    )


def test_an_empty_shard_passes(pytester: pytest.Pytester) -> None:
    """More shards than selected tasks: a shard with none exits 0 (not pytest's 5), and its
    record says so, for the matrix job that drew it."""
    pytester.makeconftest(HASHING_ENCODER)
    record_path = pytester.path / "shard.json"
    result = pytester.runpytest(
        "--koembed-model=hashing",
        "--koembed-suite=sample",
        "--koembed-shard=2/2",
        f"--koembed-json={record_path}",
        "-k",
        "sample-pairs",
    )
    assert result.ret == 0, result.stdout.str()
    record = json.loads(record_path.read_text(encoding="utf-8"))
    assert record["complete"] is True and record["tasks"] == []
    assert record["shard"]["tasks"] == [] and record["shard"]["selected"] == ["sample-pairs"]
    result.stdout.fnmatch_lines(["shard 2/2: tasks none (0 of 1 selected tasks)"])
