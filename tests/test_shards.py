"""``--koembed-shard K/N``: a deterministic, disjoint, covering and cost-balanced split of the
selected tasks, applied after -k / -m, recorded in the run record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from koembed_test_encoders import HASHING_ENCODER

from pytest_koembed.protocol.suite import load_suite
from pytest_koembed.run.shards import (
    CLASSIFIER_RUN,
    KMEANS_RUN,
    TASK_OVERHEAD,
    TEXT_OVERHEAD,
    assign,
    estimate_costs,
    parse_shard,
    read_cost_record,
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
    assert korsts.estimate == 80577 + TEXT_OVERHEAD * 1376 + TASK_OVERHEAD
    sample = estimate_costs(load_suite("sample").tasks, None)
    assert {c.source for c in sample.values()} == {"local files"}
    # the retrieval corpus and the STS pairs are read from the suite's own JSONL files
    assert sample["sample-sts"].texts == 2 * 82


def test_a_balanced_split_of_the_leaderboard() -> None:
    """Four shards of the 15 v1 tasks: no shard carries more than the largest task plus an even
    share, which a split by position does not achieve."""
    specs = load_suite("ko-leaderboard-v1").tasks
    costs: dict[str, float] = {c: x.estimate for c, x in estimate_costs(specs, None).items()}
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


# --- the plan and its costs (issue 20, part 3) ---------------------------------------------------


def _record(path: Path, seconds: dict[str, float], suite: str = "sample") -> Path:
    """A run record as --koembed-json writes it, reduced to what a cost source needs."""
    tasks = [{"column": c, "status": "ok", "seconds": s} for c, s in seconds.items()]
    path.write_text(json.dumps({"suite": {"name": suite}, "tasks": tasks}), encoding="utf-8")
    return path


SAMPLE = [s.column for s in load_suite("sample").tasks]


def test_the_estimate_counts_each_types_own_evaluation() -> None:
    """Clustering's k-means runs and classification's classifiers are part of the estimate, so
    the sample suite's clustering task (78 short texts) outweighs its retrieval task (107 texts,
    long passages), which encoding alone ranks first."""
    costs = estimate_costs(load_suite("sample").tasks, None)
    clustering, retrieval = costs["sample-clustering"], costs["sample-retrieval"]
    assert clustering.evaluation == KMEANS_RUN * 10  # mteb's n_clusters bootstrap runs
    assert costs["sample-classification"].evaluation == CLASSIFIER_RUN * 10
    assert costs["sample-sts"].evaluation == 0
    encoding = {c: cost.characters + TEXT_OVERHEAD * cost.texts for c, cost in costs.items()}
    assert encoding["sample-retrieval"] > encoding["sample-clustering"]
    assert clustering.estimate > retrieval.estimate


def test_measured_seconds_decide_the_split_the_same_for_every_k(tmp_path: Path) -> None:
    """A record where sample-sts took 50 s puts it alone in a shard; every K computes the same
    plan; a task the record lacks costs its estimate scaled to the record's seconds."""
    specs = list(load_suite("sample").tasks)
    seconds = dict.fromkeys(SAMPLE, 1.0) | {"sample-sts": 50.0}
    del seconds["sample-reranking"]
    measured = read_cost_record(str(_record(tmp_path / "run.json", seconds)), "sample")
    blocks = [shard_columns(specs, parse_shard(f"{k}/2"), None, measured)[1] for k in (1, 2)]
    assert [b["tasks"] for b in blocks] == [
        ["sample-sts"],
        [c for c in SAMPLE if c != "sample-sts"],
    ]
    estimated = shard_columns(specs, parse_shard("1/2"), None)[1]["tasks"]
    assert estimated != blocks[0]["tasks"]  # the estimate splits otherwise
    plans = [b["plan"] for b in blocks]
    assert plans[0]["cost"] == plans[1]["cost"] and plans[0]["loads"] == plans[1]["loads"]
    plan = plans[0]
    assert plan["from"] == "measured" and plan["unit"] == "seconds"
    assert plan["measured"] == [c for c in SAMPLE if c != "sample-reranking"]
    units = {c: cost.estimate for c, cost in estimate_costs(specs, None).items()}
    scale = sum(seconds.values()) / sum(units[c] for c in seconds)
    assert plan["cost"]["sample-reranking"] == round(units["sample-reranking"] * scale, 3)
    assert plan["loads"][0] == 50.0
    total = sum(plan["loads"])
    assert plans[0]["share"] == pytest.approx(50 / total)
    assert plan["imbalance"] == pytest.approx(50 / (total / 2))


def _shard_args(*extra: str) -> list[str]:
    return ["--koembed-model=hashing", "--koembed-suite=sample", "--koembed-baseline=none", *extra]


def test_the_plan_is_printed_and_recorded(pytester: pytest.Pytester) -> None:
    """The header and the summary say the shard's share and the split's imbalance; the record's
    shard block holds the plan."""
    pytester.makeconftest(HASHING_ENCODER)
    _record(pytester.path / "costs.json", dict.fromkeys(SAMPLE, 2.0) | {"sample-sts": 9})
    record_path = pytester.path / "shard.json"
    result = pytester.runpytest(
        *_shard_args("--koembed-shard=1/2", "--koembed-shard-costs=costs.json"),
        f"--koembed-json={record_path}",
    )
    assert result.ret == 0, result.stdout.str()
    block = json.loads(record_path.read_text(encoding="utf-8"))["shard"]
    # LPT: the 9 s task first, then the five 2 s tasks to the lighter shard: 9 against 10
    assert block["tasks"] == ["sample-sts"]
    plan = block["plan"]
    assert plan["record"] == "costs.json" and plan["loads"] == [9.0, 10.0]
    assert plan["cost"] == dict.fromkeys(SAMPLE, 2.0) | {"sample-sts": 9.0}
    assert plan["share"] == pytest.approx(9 / 19) and plan["imbalance"] == pytest.approx(20 / 19)
    line = (
        "shard 1/2 plan: 47% of the cost, 9.0 s of 19.0 s (measured seconds of costs.json for 6 "
        "of 6 tasks; split imbalance max/mean 1.05)"
    )
    result.stdout.fnmatch_lines([f"koembed: {line}", "*koembed summary*", line])
    estimated = pytester.runpytest(*_shard_args("--koembed-shard=2/2", "--collect-only"))
    assert estimated.ret == 0, estimated.stdout.str()
    estimated.stdout.re_match_lines(
        [
            r"koembed: shard 2/2 plan: \d+% of the estimated cost \(estimated from the tasks' "
            r"sizes; split imbalance max/mean \d\.\d\d\)"
        ]
    )


def _one_usage_line(result: pytest.RunResult) -> str:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    lines = [line for line in result.stderr.lines if "--koembed-shard-costs" in line]
    assert len(lines) == 1, result.stderr.str()
    return lines[0]


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "costs.json: no such file; give the --koembed-json record of an earlier run"),
        ("directory", "costs.json: cannot read it ("),
        ("{not json", "costs.json: not JSON (Expecting property name"),
        ('{"tasks": "x"}', "costs.json: not a run record (expected a JSON object with 'suite'"),
        (
            '{"suite": {"name": "ko-leaderboard-v1"}, "tasks": []}',
            "costs.json: a record of suite 'ko-leaderboard-v1', not of this run's suite 'sample'; "
            "give a record of a --koembed-suite=sample run",
        ),
        (
            '{"suite": {"name": "sample"}, "tasks": [{"column": "sample-sts", "seconds": 0}]}',
            "costs.json: no task with measured seconds (no task of status ok with 'seconds' > 0)",
        ),
    ],
)
def test_a_cost_record_that_cannot_serve_is_one_usage_error_line(
    pytester: pytest.Pytester, content: str | None, said: str
) -> None:
    pytester.makeconftest(HASHING_ENCODER)
    if content == "directory":
        (pytester.path / "costs.json").mkdir()
    elif content is not None:
        (pytester.path / "costs.json").write_text(content, encoding="utf-8")
    result = pytester.runpytest(
        *_shard_args("--koembed-shard=1/2", "--koembed-shard-costs=costs.json", "--collect-only")
    )
    assert said in _one_usage_line(result)


def test_shard_costs_without_a_shard_is_one_usage_error_line(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HASHING_ENCODER)
    _record(pytester.path / "costs.json", dict.fromkeys(SAMPLE, 1.0))
    result = pytester.runpytest(*_shard_args("--koembed-shard-costs=costs.json", "--collect-only"))
    line = _one_usage_line(result)
    assert "--koembed-shard-costs needs --koembed-shard K/N" in line
    assert "add --koembed-shard=K/N or leave --koembed-shard-costs out" in line


def test_the_ini_names_the_record_relative_to_itself(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ini koembed_shard_costs resolves against the ini file's directory, and is a default for
    sharded runs only: an unsharded run does not read it."""
    pytester.makeconftest(HASHING_ENCODER)
    (pytester.path / "ci").mkdir()
    _record(pytester.path / "ci" / "costs.json", dict.fromkeys(SAMPLE, 1.0) | {"sample-sts": 9})
    pytester.makeini("[pytest]\nkoembed_shard_costs = ci/costs.json\n")
    (pytester.path / "sub").mkdir()
    monkeypatch.chdir(pytester.path / "sub")
    result = pytester.runpytest(*_shard_args("--koembed-shard=2/2", "--collect-only"))
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines([f"*measured seconds of {pytester.path / 'ci/costs.json'} for 6*"])
    unsharded = pytester.runpytest(*_shard_args("--collect-only"))
    assert unsharded.ret == 0, unsharded.stdout.str() + unsharded.stderr.str()


def test_a_merged_record_keeps_the_seconds_and_serves_as_costs(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two shards' records merged by koembed merge keep every task's seconds; the merged
    record is a cost source for the next split."""
    from pytest_koembed.cli import main

    pytester.makeconftest(HASHING_ENCODER)
    paths = []
    for k in (1, 2):
        path = pytester.path / f"shard-{k}.json"
        args = _shard_args(f"--koembed-shard={k}/2", f"--koembed-json={path}")
        result = pytester.runpytest(*args)
        assert result.ret == 0, result.stdout.str()
        paths.append(path)
    merged = pytester.path / "merged.json"
    assert main(["merge", *map(str, paths), "-o", str(merged)]) == 0, capsys.readouterr()
    shards = {
        t["column"]: t["seconds"]
        for p in paths
        for t in json.loads(p.read_text(encoding="utf-8"))["tasks"]
    }
    record = json.loads(merged.read_text(encoding="utf-8"))
    assert {t["column"]: t["seconds"] for t in record["tasks"]} == shards
    assert all(s > 0 for s in shards.values())
    result = pytester.runpytest(
        *_shard_args("--koembed-shard=1/2", f"--koembed-shard-costs={merged}", "--collect-only")
    )
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines([f"*measured seconds of {merged} for 6 of 6 tasks*"])
