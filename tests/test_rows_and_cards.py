"""``--koembed-row``, ``--koembed-model-index`` and ``--koembed-model-card``.

Golden files (``tests/data/``): ``sample_rows.md`` and ``sample_model_index.yaml`` come from a
plugin run of the sample suite with a deterministic encoder (see ``koembed_sample_reports``);
model-index values are compared rounded to 6 decimals. ``v1_rows.md`` and ``v2_rows.md`` are the
rows of a hand-made run record ranked among the published leaderboards. Regenerate them with
``KOEMBED_UPDATE_GOLDEN=1 pytest tests/test_rows_and_cards.py`` and review the diff.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from koembed_sample_reports import CARD, MODEL, SampleReports, sample_reports

from pytest_koembed.cli import main
from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.leaderboards import load_leaderboard
from pytest_koembed.protocol.scoring import round_half_up
from pytest_koembed.protocol.suite import load_suite
from pytest_koembed.reports.outputs import ReportOptions, write_reports
from pytest_koembed.reports.publish import (
    merge_model_card,
    model_index,
    model_index_yaml,
    record_rows,
    task_metrics,
)

pytestmark = pytest.mark.usefixtures("offline")

DATA = Path(__file__).parent / "data"
UPDATE = os.environ.get("KOEMBED_UPDATE_GOLDEN") == "1"


def golden(name: str, text: str) -> str:
    path = DATA / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    return path.read_text(encoding="utf-8")


def normalise_values(text: str) -> str:
    """Model-index values rounded to 6 decimals (float noise across BLAS builds)."""
    return re.sub(
        r"(value: )(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)", lambda m: f"{m[1]}{float(m[2]):.6f}", text
    )


@pytest.fixture(scope="module")
def sample(run_pytest: Any) -> SampleReports:
    reports = sample_reports(run_pytest)
    assert reports.ret == 0, reports.stdout
    return reports


# ---------------------------------------------------------------------------------------------
# A plugin run
# ---------------------------------------------------------------------------------------------


def test_sample_run_reports_every_file(sample: SampleReports) -> None:
    for line in (
        f"leaderboard rows written to {sample.rows}",
        f"model-index written to {sample.model_index}",
        f"model-index merged into {sample.card}",
        "chart written to ",
        "6 mteb result files written to ",
    ):
        assert line in sample.stdout, sample.stdout


def test_rows_golden(sample: SampleReports) -> None:
    text = sample.rows.read_text(encoding="utf-8")
    assert text == golden("sample_rows.md", text)
    assert f"| {MODEL} |" in text


def test_rows_are_the_lines_of_the_full_leaderboard(
    sample: SampleReports, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every printed line is a line of ``koembed leaderboard --add RUN.json``: same widths."""
    assert main(["leaderboard", "--add", str(sample.workdir / "record.json")]) == 0
    full = capsys.readouterr().out.splitlines()
    for line in sample.rows.read_text(encoding="utf-8").splitlines():
        assert not line or line in full


def test_model_index_golden(sample: SampleReports) -> None:
    text = sample.model_index.read_text(encoding="utf-8")
    assert normalise_values(text) == golden("sample_model_index.yaml", normalise_values(text))


def test_model_index_round_trips_and_has_the_seed_shape(sample: SampleReports) -> None:
    data = yaml.safe_load(sample.model_index.read_text(encoding="utf-8"))
    assert data == model_index(sample.record)
    (entry,) = data["model-index"]
    assert entry["name"] == "hash-ngrams"
    assert len(entry["results"]) == 6
    by_task = {r["dataset"]["name"]: r for r in entry["results"]}
    sts = by_task["MTEB KoembedSampleSTS"]
    assert list(sts) == ["task", "dataset", "metrics"]
    assert sts["task"] == {"type": "STS"}
    assert list(sts["dataset"]) == ["type", "name", "config", "split", "revision"]
    assert sts["dataset"] == {
        "type": "local/KoembedSampleSTS",
        "name": "MTEB KoembedSampleSTS",
        "config": "default",
        "split": "test",
        "revision": "local",
    }
    task = next(t for t in sample.record["tasks"] if t["column"] == "sample-sts")
    metrics = {m["type"]: m["value"] for m in sts["metrics"]}
    assert sts["metrics"][0]["type"] == "koembed_value"
    assert metrics["koembed_value"] == pytest.approx(task["value"])
    assert metrics["main_score"] == pytest.approx(100 * task["scores"]["main_score"])
    assert metrics["euclidean_spearman"] == pytest.approx(
        100 * task["scores"]["euclidean_spearman"]
    )
    types = [r["task"]["type"] for r in entry["results"]]
    assert types == [
        "STS", "PairClassification", "Clustering", "Retrieval", "Classification", "Reranking"
    ]  # fmt: skip


def test_model_card_merge_keeps_the_rest_byte_for_byte(sample: SampleReports) -> None:
    merged = sample.card.read_bytes().decode("utf-8")
    head = CARD[: CARD.index("model-index:")]
    tail = CARD[CARD.index("language:") :]
    assert merged.startswith(head)
    assert merged.endswith(tail)  # the rest of the front matter and the whole body
    front = merged[len("---\r\n") : merged.index("\r\n---\r\n")]
    assert "\n" not in front.replace("\r\n", "")  # CRLF kept
    data = yaml.safe_load(front)
    assert data["license"] == "mit" and data["language"] == ["ko"]
    (entry,) = data["model-index"]
    types = [r["task"]["type"] for r in entry["results"]]
    # the card's own entry of another task first, then the run's six
    assert types == [
        "Classification", "STS", "PairClassification", "Clustering", "Retrieval",
        "Classification", "Reranking",
    ]  # fmt: skip
    assert entry["results"][0]["metrics"] == [{"type": "accuracy", "value": 91.9}]


# ---------------------------------------------------------------------------------------------
# Rows of the published leaderboards (no model run)
# ---------------------------------------------------------------------------------------------


def _record(suite_name: str, values: dict[str, float], row_name: str) -> dict[str, Any]:
    suite = load_suite(suite_name)
    tasks = []
    for spec in suite.tasks:
        value = values[spec.column]
        tasks.append(
            {
                "column": spec.column,
                "task": spec.task,
                "split": spec.split,
                "subset": spec.subset,
                "category": spec.category,
                "value_rule": spec.value_rule,
                "status": "ok",
                "value": value,
                "shown": round_half_up(value, 2),
                "scores": {},
            }
        )
    return {
        "model": {"name": row_name, "row_name": row_name},
        "suite": {"name": suite_name},
        "scheme": suite.scheme,
        "tasks": tasks,
    }


def test_v1_rows_rank_among_the_published_models() -> None:
    suite = load_suite("ko-leaderboard-v1")
    published = load_leaderboard("ko-leaderboard-v1").rows["nlpai-lab/KURE-v1"]
    values = {c: v + 0.5 for c, v in published.items()}  # every task half a point better
    text = record_rows(_record("ko-leaderboard-v1", values, "my-org/KURE-v1-ft-bf16"), suite)
    assert text == golden("v1_rows.md", text)
    headings = [line for line in text.splitlines() if line.startswith("# ")]
    assert headings == ["# 종합 순위", "# STS", "# NLI", "# Clustering", "# Retrieval"]
    overall = text.splitlines()[3]
    assert overall.startswith("| my-org/KURE-v1-ft-bf16 ")
    assert overall.endswith(" |    8 |")  # 63.19: below dragonkue 63.54, above KURE-v1 62.74


def test_v2_rows_join_the_dense_table_only() -> None:
    suite = load_suite("ko-leaderboard-v2")
    dense = load_leaderboard("ko-leaderboard-v2-dense")
    first = next(iter(dense.rows.values()))
    text = record_rows(_record("ko-leaderboard-v2", dict(first), "my-org/dense-1"), suite)
    assert text == golden("v2_rows.md", text)
    assert text.count("# ") == 1 and "Dense" in text.splitlines()[0]
    assert "|:--" in text  # v2's pandas layout


def test_task_metrics_lists_value_main_score_and_rule_keys() -> None:
    task = {
        "value_rule": "ndcg-5-10",
        "value": 80.5,
        "main_score": "ndcg_at_10",
        "scores": {"main_score": 0.81, "ndcg_at_10": 0.81, "ndcg_at_5": 0.8, "map_at_10": 0.7,
                   "nauc_map_at_1_max": None},
    }  # fmt: skip
    metrics = task_metrics(task)
    assert [m["type"] for m in metrics] == [
        "koembed_value",
        "main_score",
        "ndcg_at_5",
        "ndcg_at_10",
    ]
    assert metrics[0]["value"] == 80.5
    assert metrics[2]["value"] == pytest.approx(80.0)


# ---------------------------------------------------------------------------------------------
# Card merging edge cases
# ---------------------------------------------------------------------------------------------

RECORD: dict[str, Any] = {
    "model": {"name": "org/model", "row_name": "org/model", "fingerprint": "hub:org/model@abc"},
    "tasks": [
        {
            "column": "Kor-STS",
            "task": "KorSTS",
            "split": "test",
            "subset": "default",
            "category": "STS",
            "value_rule": "cosine_spearman",
            "status": "ok",
            "value": 81.0,
            "scores": {"main_score": 0.81, "cosine_spearman": 0.81},
            "main_score": "cosine_spearman",
            "task_type": "STS",
            "dataset_path": "dkoterwa/kor-sts",
            "dataset_revision": "016f35b",
        }
    ],
}


def test_card_without_front_matter_gets_one() -> None:
    body = "# org/model\n\nSome text.\n"
    merged, notes = merge_model_card(body, RECORD)
    assert notes == []
    assert merged.endswith("---\n" + body)
    front = merged[4 : merged.index("\n---\n")]
    assert yaml.safe_load(front) == model_index(RECORD)
    assert yaml.safe_load(model_index_yaml(RECORD)) == model_index(RECORD)


def test_card_merge_replaces_the_same_dataset_and_keeps_others() -> None:
    first, _ = merge_model_card("---\nlicense: mit\n---\nbody\n", RECORD)
    again = copy.deepcopy(RECORD)
    again["tasks"][0]["value"] = 82.0
    second, _ = merge_model_card(first, again)
    data = yaml.safe_load(second.split("---\n")[1])
    (entry,) = data["model-index"]
    assert entry["name"] == "model"
    (result,) = entry["results"]  # replaced, not appended
    assert result["metrics"][0]["value"] == 82.0
    assert second.startswith("---\nlicense: mit\nmodel-index:\n")
    assert second.endswith("---\nbody\n")


def test_flow_style_front_matter_is_reserialised_with_a_note() -> None:
    card = "---\n{license: mit, tags: [a, b]}\n---\nbody\n"
    merged, notes = merge_model_card(card, RECORD)
    assert notes and "re-serialised" in notes[0]
    data = yaml.safe_load(merged.split("---\n")[1])
    assert data["license"] == "mit" and data["tags"] == ["a", "b"]
    assert "model-index" in data
    assert merged.endswith("---\nbody\n")


@pytest.mark.parametrize(
    ("card", "message"),
    [
        ("---\nlicense: [mit\n---\nbody\n", "not valid YAML"),
        ("---\n- a\n- b\n---\nbody\n", "not a YAML mapping"),
        ("---\nlicense: mit\n", "no closing '---'"),
    ],
)
def test_bad_front_matter_is_one_line(card: str, message: str) -> None:
    with pytest.raises(KoembedError, match=message) as info:
        merge_model_card(card, RECORD)
    assert "\n" not in str(info.value)


def test_missing_model_card_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--koembed-model=x", "--koembed-model-card=nope/README.md")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--koembed-model-card *nope/README.md: no such file*"])


def test_report_options_wanted() -> None:
    assert not ReportOptions().wanted()
    assert ReportOptions(row="-").wanted()


def test_one_failing_report_does_not_stop_the_others(tmp_path: Path) -> None:
    suite = load_suite("ko-leaderboard-v1")
    published = load_leaderboard("ko-leaderboard-v1").rows["nlpai-lab/KURE-v1"]
    record = _record("ko-leaderboard-v1", dict(published), "org/model")
    options = ReportOptions(
        row="-", model_index=tmp_path / "mi.yaml", results_dir=tmp_path / "results"
    )
    outcome = write_reports(record, suite, options)
    assert outcome.failed
    assert outcome.rows_text is not None and outcome.rows_text.startswith("# 종합 순위\n")
    assert (tmp_path / "mi.yaml").is_file()
    assert outcome.lines == [
        f"model-index written to {tmp_path / 'mi.yaml'}",
        f"--koembed-results-dir {tmp_path / 'results'}: not written: the run record holds no "
        "mteb results (no task was scored)",
    ]


def test_a_rerun_of_a_published_model_replaces_its_row() -> None:
    suite = load_suite("ko-leaderboard-v1")
    published = load_leaderboard("ko-leaderboard-v1").rows["nlpai-lab/KURE-v1"]
    values = {c: v - 0.5 for c, v in published.items()}
    text = record_rows(_record("ko-leaderboard-v1", values, "nlpai-lab/KURE-v1"), suite)
    overall = text.splitlines()[3]
    assert overall.startswith("| nlpai-lab/KURE-v1 ") and "(run)" not in text
    # 62.3 and rank 8: its published 62.74 row is replaced, kanana-nano's 62.08 stays below
    assert overall.endswith(" |             62.3 |    8 |")
