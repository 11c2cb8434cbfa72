"""Per-example results: every task's examples recompute mteb's value exactly, and travel to disk.

The sample suite's four tasks (one per kind) and a legacy clustering task with sets are scored
once with the real all-MiniLM-L6-v2; each kind's frame must give back mteb's value to 1e-9.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pytest_koembed.errors import KoembedError
from pytest_koembed.evaluation.per_example import (
    example_key,
    examples_path,
    load_examples,
    pair_examples,
    recompute_value,
    task_kind,
    write_run_files,
)
from pytest_koembed.protocol.spec import TaskSpec
from pytest_koembed.protocol.suite import load_suite
from pytest_koembed.records import TaskScore, write_json

pytestmark = pytest.mark.usefixtures("offline")

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "suites" / "sample-data"
EXACT = 1e-9  # x100 scale
HEX32 = re.compile(r"[0-9a-f]{32}\Z")


@pytest.fixture(scope="module")
def encoder(minilm_dir: Path) -> Any:
    from pytest_koembed.models.encoders import EncoderOptions
    from pytest_koembed.models.loading import load_encoder

    return load_encoder(EncoderOptions(model=str(minilm_dir), device="cpu"))


@pytest.fixture(scope="module")
def sample(encoder: Any) -> dict[str, TaskScore]:
    """The sample suite's tasks, scored by koembed's own evaluation (mteb.evaluate)."""
    from pytest_koembed.evaluation.run import evaluate_task

    suite = load_suite("sample")
    return {spec.column: evaluate_task(spec, encoder) for spec in suite.tasks}


def _checked(score: TaskScore) -> pd.DataFrame:
    assert score.status == "ok"
    assert score.examples_error is None
    frame = score.examples
    assert isinstance(frame, pd.DataFrame)
    assert all(HEX32.match(k) for k in frame["key"])
    assert score.value is not None
    again = recompute_value(frame, score.value_rule, score.main_score)
    assert abs(again - score.value) <= EXACT, (again, score.value)
    return frame


def test_sts_examples_recompute_the_8_correlations(sample: dict[str, TaskScore]) -> None:
    score = sample["sample-sts"]
    frame = _checked(score)
    assert list(frame.columns) == ["key", "gold", "similarity", "cosine", "manhattan", "euclidean"]
    assert len(frame) == score.n_examples == frame["key"].nunique()
    assert all(frame[c].dtype == np.float64 for c in frame.columns[1:])
    assert (frame["manhattan"] <= 0).all() and (frame["euclidean"] <= 0).all()  # negated
    rows = [json.loads(line) for line in _lines(SAMPLE_DATA / "KoembedSampleSTS")]
    assert sorted(frame["gold"]) == sorted(float(r["score"]) for r in rows)  # after no dedup
    for key in ("pearson", "spearman", "cosine_spearman", "manhattan_pearson",
                "euclidean_spearman"):  # fmt: skip
        assert recompute_value(frame, key) == pytest.approx(100 * score.scores[key], abs=EXACT)


def test_pair_examples_recompute_ap_and_mteb_threshold_metrics(
    sample: dict[str, TaskScore],
) -> None:
    score = sample["sample-pairs"]
    frame = _checked(score)
    assert score.value_rule == "cosine_ap"
    columns = ["key", "label", "similarity", "cosine", "manhattan", "euclidean", "dot"]
    assert list(frame.columns) == columns
    assert len(frame) == score.n_examples
    assert frame["label"].dtype == np.int64 and set(frame["label"]) == {0, 1}
    # oriented: higher = more similar, so the distance columns are negated distances
    assert (frame["manhattan"] <= 0).all() and (frame["euclidean"] <= 0).all()
    for key in ("max_ap", "euclidean_ap", "similarity_f1", "manhattan_accuracy", "dot_recall"):
        assert recompute_value(frame, key) == pytest.approx(100 * score.scores[key], abs=EXACT)
    main = recompute_value(frame, "main_score", score.main_score)
    assert main == pytest.approx(100 * score.scores[score.main_score], abs=EXACT)


def test_retrieval_examples_are_per_query_rankings(sample: dict[str, TaskScore]) -> None:
    score = sample["sample-retrieval"]
    frame = _checked(score)
    assert score.value_rule == "ndcg-5-10"
    assert len(frame) == score.n_examples == score.sizes["queries"]
    assert list(frame.columns[:2]) == ["key", "query_id"]
    for key in ("ndcg_at_10", "recall_at_10", "mrr_at_10", "map_at_100", "hit_rate_at_5"):
        assert key in frame.columns
        assert recompute_value(frame, key) == pytest.approx(100 * score.scores[key], abs=EXACT)
    depth = min(100, score.sizes["documents"])
    for ids, scores in zip(frame["top_ids"], frame["top_scores"], strict=True):
        assert len(ids) == len(scores) == depth
        assert list(scores) == sorted(scores, reverse=True)
    assert frame["relevant_ids"].map(len).sum() == score.sizes["qrels"]
    # mteb rounds the query means to 5 decimals: the unrounded mean is not its value
    unrounded = 50 * (frame["ndcg_at_5"].mean() + frame["ndcg_at_10"].mean())
    assert abs(unrounded - score.value) < 1e-3


def test_fast_clustering_examples_are_mtebs_bootstrap_runs(sample: dict[str, TaskScore]) -> None:
    score = sample["sample-clustering"]
    frame = _checked(score)
    columns = ["key", "v_measure", "level", "run", "n_texts", "centroid_correct"]
    assert list(frame.columns) == columns
    units = frame[frame["v_measure"].notna()]
    runs = score.mteb_result["scores"]["test"][0]["v_measures"]["Level 0"]  # type: ignore[index]
    assert units["v_measure"].tolist() == runs and len(runs) == 10
    assert units["run"].tolist() == list(range(10))
    assert units["key"].nunique() == 10
    assert units["centroid_correct"].isna().all()
    # one row per document mteb embedded, keyed by content: the gated statistic's units
    documents = frame[frame["v_measure"].isna()]
    assert len(documents) == score.n_examples and documents["key"].nunique() == len(documents)
    assert set(documents["centroid_correct"]) <= {0.0, 1.0}
    assert (documents["run"] == -1).all()


def test_classification_examples_are_the_predictions_of_mtebs_10_experiments(
    sample: dict[str, TaskScore], tmp_path: Path
) -> None:
    score = sample["sample-classification"]
    frame = _checked(score)
    assert list(frame.columns) == ["key", "true_label", "predicted", "accuracy"]
    assert len(frame) == 24 and set(frame["true_label"]) == {"날씨", "스포츠", "경제"}
    assert all(len(p) == 10 and set(p) <= {"날씨", "스포츠", "경제"} for p in frame["predicted"])
    # each text's fraction of experiments right; their mean is mteb's accuracy
    assert frame["accuracy"].mean() * 100 == pytest.approx(score.value, abs=1e-9)
    # through the sidecar and back: the predictions stay lists of label names
    record = {"tasks": [{"column": score.column, "status": "ok"}], "suite": {"name": "x"}}
    write_run_files(record, tmp_path / "run.json", {score.column: frame}, write_json)
    again = load_examples(tmp_path / "run.json")[score.column]
    assert again["predicted"].tolist() == frame["predicted"].tolist()
    assert recompute_value(again, "main_score", "accuracy") == recompute_value(
        frame, "main_score", "accuracy"
    )


def test_reranking_examples_rank_each_querys_candidates(sample: dict[str, TaskScore]) -> None:
    score = sample["sample-reranking"]
    frame = _checked(score)
    assert len(frame) == 8 and "ndcg_at_10" in frame.columns
    path = SAMPLE_DATA / "KoembedSampleReranking" / "default" / "test" / "candidates.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    candidates = {row["query_id"]: set(row["doc_ids"]) for row in rows}
    for query_id, top in zip(frame["query_id"], frame["top_ids"], strict=True):
        assert set(top) == candidates[query_id]  # only its 5 candidates are ranked


def test_legacy_clustering_gives_one_row_per_set(encoder: Any, tmp_path: Path) -> None:
    from pytest_koembed.evaluation.run import evaluate_task

    rows = [json.loads(line) for line in _lines(SAMPLE_DATA / "KoembedSampleClustering")]
    split = tmp_path / "SetClustering" / "default" / "test"
    split.mkdir(parents=True)
    with (split / "texts.jsonl").open("w", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            f.write(json.dumps({**row, "set": f"묶음{i % 3}"}, ensure_ascii=False) + "\n")
    spec = TaskSpec("set-clustering", "SetClustering", "test", "default", "Clustering",
                    "v_measure", custom_type="Clustering", data_dir=tmp_path)  # fmt: skip
    score = evaluate_task(spec, encoder)
    frame = _checked(score)
    units = frame[frame["v_measure"].notna()]
    assert len(units) == 3 == score.sizes["sets"]
    assert units["n_texts"].sum() == len(rows)
    assert units["run"].tolist() == [0, 0, 0]
    # every document of a set of more than one label has its row (its set's centroids)
    documents = frame[frame["v_measure"].isna()]
    assert 0 < len(documents) <= len(rows)
    assert set(documents["centroid_correct"]) <= {0.0, 1.0}


def test_keys_ignore_row_order_and_pair_order(
    encoder: Any, sample: dict[str, TaskScore], tmp_path: Path
) -> None:
    """The STS rows reversed and every other pair swapped: the same keys, the same scores."""
    from pytest_koembed.evaluation.run import evaluate_task

    source = SAMPLE_DATA / "KoembedSampleSTS" / "default" / "test" / "pairs.jsonl"
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line]
    shuffled = []
    for i, row in enumerate(reversed(rows)):
        if i % 2:
            row = {**row, "sentence1": row["sentence2"], "sentence2": row["sentence1"]}
        shuffled.append(row)
    target = tmp_path / "KoembedSampleSTS" / "default" / "test"
    target.mkdir(parents=True)
    (target / "pairs.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in shuffled), encoding="utf-8"
    )
    base = sample["sample-sts"]
    spec = dataclasses.replace(load_suite("sample").task("sample-sts"), data_dir=tmp_path)
    again = evaluate_task(spec, encoder)
    assert set(again.examples["key"]) == set(base.examples["key"])
    old, new = pair_examples(base.examples, again.examples, name="sample-sts")
    assert old["key"].tolist() == new["key"].tolist()
    assert old["gold"].tolist() == new["gold"].tolist()
    np.testing.assert_allclose(new["cosine"], old["cosine"], atol=1e-5)


def _lines(task_dir: Path) -> list[str]:
    path = next(task_dir.glob("*/test/*.jsonl"))  # the scored split (dev rows lie beside it)
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- pure functions ------------------------------------------------------------------------------


def _sts(golds: list[float], keys: list[str] | None = None) -> pd.DataFrame:
    keys = keys or [example_key("sts", "a", f"b{i}", g) for i, g in enumerate(golds)]
    sims = np.linspace(0.1, 0.9, len(golds))
    return pd.DataFrame({"key": keys, "gold": golds, "similarity": sims, "cosine": sims,
                         "manhattan": -sims, "euclidean": -sims})  # fmt: skip


def test_pairing_refuses_other_rows_with_the_count() -> None:
    base = _sts([1.0, 2.0, 3.0, 4.0])
    new = pd.concat([base.iloc[:3], _sts([5.0, 0.5], ["x" * 32, "y" * 32])], ignore_index=True)
    with pytest.raises(KoembedError) as info:
        pair_examples(base, new, name="Kor-STS")
    assert str(info.value) == (
        "baseline for Kor-STS was made on different rows: 3 of 5 examples match "
        "(the baseline has 4)"
    )


def test_pairing_aligns_reordered_rows_and_duplicate_keys() -> None:
    keys = ["c" * 32, "a" * 32, "a" * 32, "b" * 32]
    base = _sts([1.0, 2.0, 2.5, 3.0], keys)
    new = base.iloc[[3, 2, 0, 1]].reset_index(drop=True)
    old, fresh = pair_examples(base, new)
    # in the new run's order (mteb's sums follow it; issue 17), not sorted by key
    assert old["key"].tolist() == fresh["key"].tolist() == new["key"].tolist()
    # the two "a" rows pair in the order they appear in each run
    assert fresh["gold"].tolist() == [3.0, 2.5, 1.0, 2.0]
    assert old["gold"].tolist() == [3.0, 2.0, 1.0, 2.5]
    with pytest.raises(KoembedError, match=r"3 of 3 examples match \(the baseline has 4\)"):
        pair_examples(base, new.iloc[:3])


def test_task_kind_from_rules_and_types() -> None:
    assert task_kind("sts-mean8") == task_kind("STS") == "sts"
    assert task_kind("cosine_ap") == task_kind("max_ap") == task_kind("PairClassification")
    assert task_kind("ndcg-5-10") == task_kind("ndcg_at_10") == "retrieval"
    assert task_kind("v_measure") == "clustering"
    assert task_kind("main_score", "Retrieval") == "retrieval"
    with pytest.raises(KoembedError, match="cannot tell the task kind of 'main_score'"):
        task_kind("main_score")
    with pytest.raises(KoembedError, match="does not apply to sts"):
        recompute_value(_sts([1.0, 2.0, 3.0]), "cosine_ap")


def _record(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"tasks": tasks, "suite": {"name": "x"}}


def test_sidecar_round_trip_and_checksum(tmp_path: Path) -> None:
    frames = {"sts-a": _sts([1.0, 2.0, 3.0]), "sts-b": _sts([0.0, 4.0])}
    tasks = [{"column": "sts-a", "status": "ok"}, {"column": "sts-b", "status": "ok"},
             {"column": "broken", "status": "error"}]  # fmt: skip
    path = tmp_path / "run.json"
    write_run_files(_record(tasks), path, frames, write_json)
    record = json.loads(path.read_text(encoding="utf-8"))
    sidecar = tmp_path / "run.examples.parquet"
    assert examples_path(path) == sidecar
    assert record["examples"]["file"] == "run.examples.parquet"
    assert record["examples"]["tasks"] == {"sts-a": 3, "sts-b": 2}
    assert len(record["examples"]["sha256"]) == 64
    loaded = load_examples(path)
    assert list(loaded) == ["sts-a", "sts-b"]
    pd.testing.assert_frame_equal(loaded["sts-a"], frames["sts-a"], check_dtype=False)
    assert set(pd.read_parquet(sidecar)["column"]) == {"sts-a", "sts-b"}  # plain pandas reads it
    assert load_examples(record, base_dir=tmp_path).keys() == loaded.keys()

    sidecar.write_bytes(sidecar.read_bytes() + b"x")
    with pytest.raises(KoembedError, match=r"do not match run record .*run\.json .sha256"):
        load_examples(path)
    sidecar.unlink()
    with pytest.raises(KoembedError, match=r"names per-example results .* does not exist"):
        load_examples(path)
    with pytest.raises(KoembedError, match="holds no per-example results"):
        load_examples(_record(tasks))


def test_rewriting_a_baseline_keeps_the_frames_of_kept_tasks(tmp_path: Path) -> None:
    """--koembed-update-baseline keeps old cells of tasks this run did not score: and their
    examples, which only the old sidecar has."""
    path = tmp_path / "base.json"
    old_a = {"column": "a", "status": "ok", "value": 1.0}
    old_b = {"column": "b", "status": "ok", "value": 2.0}
    write_run_files(_record([old_a, old_b]), path, {"a": _sts([1.0, 2.0]), "b": _sts([3.0, 4.0])},
                    write_json)  # fmt: skip
    new_a = {"column": "a", "status": "ok", "value": 1.5}
    write_run_files(_record([new_a, old_b]), path, {"a": _sts([9.0, 8.0, 7.0])}, write_json)
    loaded = load_examples(path)
    assert loaded["a"]["gold"].tolist() == [9.0, 8.0, 7.0]
    assert loaded["b"]["gold"].tolist() == [3.0, 4.0]
    # a task whose record entry changed gets no stale frame from the old file
    write_run_files(_record([new_a, {**old_b, "value": 2.5}]), path, {}, write_json)
    assert json.loads(path.read_text(encoding="utf-8"))["examples"]["tasks"] == {"a": 3}


# --- through the plugin --------------------------------------------------------------------------


def test_plugin_writes_the_sidecar_with_the_record_and_the_baseline(
    run_pytest, minilm_dir: Path, tmp_path: Path
) -> None:
    """Under xdist: the frames travel from the workers to the controller, which writes them."""
    result = run_pytest(
        tmp_path,
        f"--koembed-model={minilm_dir}",
        "--koembed-suite=sample",
        "--koembed-json=out/run.json",
        "--koembed-save-baseline=base.json",
        "-n",
        "2",
    )
    assert result.ret == 0, result.stdout
    for name in ("out/run.json", "base.json"):
        path = tmp_path / name
        record = json.loads(path.read_text(encoding="utf-8"))
        assert (path.parent / record["examples"]["file"]).is_file()
        frames = load_examples(path)
        assert list(frames) == [t["column"] for t in record["tasks"]]
        for task in record["tasks"]:
            frame = frames[task["column"]]
            assert "examples" not in task and task["examples_error"] is None
            again = recompute_value(frame, task["value_rule"], task["main_score"])
            assert abs(again - task["value"]) <= EXACT, task["column"]
            if task["column"] != "sample-clustering":
                assert len(frame) == task["n_examples"]
    assert (tmp_path / "out" / "run.examples.parquet").is_file()
    assert (tmp_path / "base.examples.parquet").is_file()


def test_examples_that_do_not_give_mtebs_value_are_not_kept() -> None:
    """The safety net: a frame is kept only if it recomputes the value mteb gave."""
    from types import SimpleNamespace

    from pytest_koembed.evaluation.run import _checked_examples

    frame = _sts([1.0, 2.0, 3.0, 5.0])
    spec = load_suite("sample").task("sample-sts")
    value = recompute_value(frame, "sts-mean8")
    capture = SimpleNamespace(frame=frame, error=None)
    assert _checked_examples(capture, spec, value, None) == (frame, None)
    kept, why = _checked_examples(capture, spec, value + 0.01, None)
    assert kept is None and why is not None and "not kept" in why
    nothing = SimpleNamespace(frame=None, error="KeyError: 'cosine_scores'")
    assert _checked_examples(nothing, spec, value, None) == (
        None,
        "mteb gave no per-example scores (KeyError: 'cosine_scores')",
    )
    wrong_rule = dataclasses.replace(spec, value_rule="cosine_ap")
    kept, why = _checked_examples(capture, wrong_rule, value, None)
    assert kept is None
    assert why == "value rule 'cosine_ap' does not apply to sts per-example results"
