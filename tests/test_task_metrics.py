"""Issue 17, section 4: the numbers of a task are of its own score.

Every interval, ``delta``, ``delta_ci``, ``p_value`` and average is of the score the task's value
is: a ``main_score`` task's own main score (``mrr_at_5``, ``ndcg_at_1``, ``map_at_1000``,
``cosine_spearman``, ``max_ap``), with mteb's rounding; and resamples in which a value is
undefined follow one rule everywhere, with no traceback.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pytest_koembed.cli import main
from pytest_koembed.evaluation.per_example import load_examples, pair_examples
from pytest_koembed.protocol.scoring import round_half_up, task_value
from pytest_koembed.stats import bootstrap, permutation, rules

pytestmark = pytest.mark.usefixtures("offline")

SAMPLE = Path(__file__).resolve().parents[1] / "suites" / "sample-data"

# mteb tasks whose main score is not nDCG@10 (their metadata, as mteb ships it)
RETRIEVAL_TASKS = {
    "GermanQuAD-Retrieval": ("KoembedSampleRetrieval", "Retrieval", "mrr_at_5"),
    "HunSum2AbstractiveRetrieval": ("KoembedSampleRetrieval", "Retrieval", "ndcg_at_1"),
    "AskUbuntuDupQuestions": ("KoembedSampleReranking", "Reranking", "map_at_1000"),
}


def _retrieval_suite(root: Path) -> Path:
    data = root / "data"
    entries = []
    for task, (sample, category, _) in RETRIEVAL_TASKS.items():
        shutil.copytree(SAMPLE / sample, data / task)
        entries.append(
            f'[[tasks]]\ncolumn = "{task}"\ntask = "{task}"\nsplit = "test"\n'
            f'subset = "default"\ncategory = "{category}"\nvalue = "main_score"\n'
        )
    path = root / "own-scores.toml"
    path.write_text(
        'name = "own-scores"\nscheme = "ko-leaderboard-v1"\n\n' + "\n".join(entries),
        encoding="utf-8",
    )
    return path


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _plain_mteb(task_name: str, sample: str, model_dir: Path) -> dict[str, float]:
    """Plain mteb: the real task object with the sample files injected, a raw model."""
    import mteb
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer

    folder = SAMPLE / sample / "default" / "test"
    corpus, queries = _jsonl(folder / "corpus.jsonl"), _jsonl(folder / "queries.jsonl")
    relevant: dict[str, dict[str, int]] = {}
    for row in _jsonl(folder / "qrels.jsonl"):
        relevant.setdefault(row["query_id"], {})[row["doc_id"]] = int(row["score"])
    candidates = None
    if (folder / "candidates.jsonl").is_file():
        candidates = {r["query_id"]: r["doc_ids"] for r in _jsonl(folder / "candidates.jsonl")}
    task = mteb.get_task(task_name)
    task.dataset = {
        "default": {
            "test": {
                "corpus": Dataset.from_dict(
                    {
                        "id": [d["id"] for d in corpus],
                        "title": [d.get("title", "") for d in corpus],
                        "text": [d["text"] for d in corpus],
                    }
                ),
                "queries": Dataset.from_dict(
                    {"id": [q["id"] for q in queries], "text": [q["text"] for q in queries]}
                ),
                "relevant_docs": relevant,
                "top_ranked": candidates,
            }
        }
    }
    task.data_loaded = True
    model = SentenceTransformer(str(model_dir), device="cpu")
    result = mteb.evaluate(model, task, cache=None, show_progress_bar=False).task_results[0]
    return result.scores["test"][0]


def test_retrieval_statistics_are_of_the_tasks_own_main_score(
    run_pytest, minilm_dir: Path, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    """mteb tasks valued by mrr_at_5, ndcg_at_1 and map_at_1000: the value is plain mteb's main
    score, the frame gives it back exactly, and the interval, delta and delta_ci are of it (before
    issue 17 they were nDCG@10's)."""
    suite = _retrieval_suite(tmp_path)
    common = [f"--koembed-suite={suite}", f"--koembed-data-dir={tmp_path / 'data'}"]
    for name, model in (("base", minilm_dir), ("new", tiny_bert_dir)):
        result = run_pytest(
            tmp_path, f"--koembed-model={model}", *common, f"--koembed-json={name}.json"
        )
        assert result.ret == 0, result.stdout
    record = json.loads((tmp_path / "base.json").read_text(encoding="utf-8"))
    frames = load_examples(tmp_path / "base.json")
    tasks = {t["column"]: t for t in record["tasks"]}
    for column, (sample, _, key) in RETRIEVAL_TASKS.items():
        task, frame = tasks[column], frames[column]
        assert task["main_score"] == key
        plain = _plain_mteb(column, sample, minilm_dir)
        assert plain["main_score"] == plain[key]
        assert task["value"] == pytest.approx(100 * plain[key], abs=1e-9)
        rule = rules.task_rule("main_score", key)
        assert rule == key
        assert bootstrap.frame_value(frame, rule) == task["value"]  # exactly, mteb's rounding too
        low, high = bootstrap.task_interval(frame, rule, stream=column)
        assert (task["ci"]["low"], task["ci"]["high"]) == (low, high)
        assert low <= task["value"] <= high
        # not nDCG@10's numbers, which the statistics used to resample
        assert (low, high) != bootstrap.task_interval(frame, "ndcg_at_10", stream=column)
        with pytest.raises(Exception, match="main score key is not known"):
            bootstrap.frame_value(frame, "main_score")  # never a silent substitute

    status = main(
        ["compare", str(tmp_path / "base.json"), str(tmp_path / "new.json"), "--json",
         str(tmp_path / "cmp.json")]
    )  # fmt: skip
    assert status in (0, 1)
    comparison = json.loads((tmp_path / "cmp.json").read_text(encoding="utf-8"))
    new = {t["column"]: t for t in json.loads((tmp_path / "new.json").read_text("utf-8"))["tasks"]}
    new_frames = load_examples(tmp_path / "new.json")
    for row in comparison["tasks"]:
        column = row["column"]
        main_key = RETRIEVAL_TASKS[column][2]
        assert row["p_value"] is not None, row
        # the paired delta is the records' difference, to the last bit
        assert row["delta"] == new[column]["value"] - tasks[column]["value"]
        b, n = pair_examples(frames[column], new_frames[column])
        test = permutation.paired_test(b, n, main_key, stream=column)
        assert (row["delta_ci"]["low"], row["delta_ci"]["high"]) == (
            test.delta_ci.low,
            test.delta_ci.high,
        )


def test_mteb_retrieval_accuracy_is_recall_at_1() -> None:
    """mteb's retrieval 'accuracy' (multiple-choice tasks) is its recall@1: the frame's column."""
    frame = pd.DataFrame(
        {"key": ["a", "b", "c"], "query_id": ["1", "2", "3"], "recall_at_1": [1.0, 0.0, 1.0]}
    )
    assert bootstrap.frame_value(frame, "accuracy") == 100 * round(2 / 3, 5)
    from pytest_koembed.evaluation.per_example import recompute_value

    assert recompute_value(frame, "main_score", "accuracy") == 100 * round(2 / 3, 5)


def test_an_old_sidecar_without_the_main_score_column_is_refused_in_one_line() -> None:
    frame = pd.DataFrame({"key": ["a", "b"], "query_id": ["1", "2"], "ndcg_at_10": [0.5, 0.7]})
    with pytest.raises(Exception, match=r"needs the per-query column\(s\) mrr_at_5") as err:
        bootstrap.task_interval(frame, rules.task_rule("main_score", "mrr_at_5"))
    assert "\n" not in str(err.value)


def test_paired_retrieval_values_keep_mtebs_rounding_at_a_boundary() -> None:
    """Query means just below a 5-decimal boundary: mteb rounds 0.1234499999 to 0.12345, which
    the table shows as 12.35; the unrounded mean shows as 12.34."""
    values = [0.12345, 0.1234499998, 0.12345, 0.1234499998]
    base = pd.DataFrame(
        {"key": list("abcd"), "query_id": list("1234"), "ndcg_at_10": values, "mrr_at_10": values}
    )
    new = base.assign(ndcg_at_10=[0.2, 0.3, 0.2, 0.3])
    recorded = task_value("ndcg_at_10", {"ndcg_at_10": round(sum(values) / 4, 5)})
    assert round_half_up(recorded, 2) == 12.35
    assert bootstrap.frame_value(base, "ndcg_at_10") == recorded
    test = permutation.paired_test(base, new, "ndcg_at_10", n_resamples=50, n_permutations=50)
    assert test.base == recorded and round_half_up(test.base, 2) == 12.35
    assert test.delta == 25.0 - recorded
    # MRR: mteb does not round its mean
    assert bootstrap.frame_value(base, "mrr_at_10") == 100 * (sum(values) / 4)


def test_sts_and_pairs_valued_by_main_score_get_intervals_and_keep_the_averages() -> None:
    """A sample-suite run whose STS and NLI tasks are valued by their main score: every task and
    average keeps its interval (before issue 17 one such task removed them all)."""
    from pytest_koembed.protocol.suite import load_suite
    from pytest_koembed.stats.intervals import average_fields, task_ci

    suite = load_suite("sample")
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 26, 80) / 5.0
    sts = pd.DataFrame(
        {"gold": gold, **{c: gold + rng.normal(0, 1.0, 80) for c in rules.STS_SCORE_COLUMNS}}
    )
    labels = (rng.random(80) < 0.5).astype(np.int64)
    pairs = pd.DataFrame(
        {"label": labels, **{c: labels + rng.normal(0, 1, 80) for c in rules.PAIR_SCORE_COLUMNS}}
    )
    retrieval = pd.DataFrame(
        {"ndcg_at_5": rng.uniform(size=30), "ndcg_at_10": rng.uniform(size=30)}
    )
    clustering = pd.DataFrame({"v_measure": rng.uniform(0.3, 0.5, 10)})
    tasks = {
        "sample-sts": ("main_score", sts, "cosine_spearman"),
        "sample-pairs": ("main_score", pairs, "max_ap"),
        "sample-clustering": ("v_measure", clustering),
        "sample-retrieval": ("ndcg-5-10", retrieval),
    }
    for column, main_key in (("sample-sts", "cosine_spearman"), ("sample-pairs", "max_ap")):
        ci = task_ci(tasks[column][1], "main_score", column, main_score=main_key)
        assert ci is not None
        assert (ci["low"], ci["high"]) == bootstrap.task_interval(
            tasks[column][1], main_key, stream=column
        )
    fields = average_fields(suite, suite.scheme, tasks, 50.0, "m")
    assert fields["weighted_average_ci"] is not None
    for category in ("STS", "NLI", "Clustering", "Retrieval"):
        assert fields["category_average_ci"][category] is not None, category
    assert "note" not in fields["intervals"]


ENCODER = (Path(__file__).parent / "test_paired_gate.py").read_text(encoding="utf-8")
ENCODER = textwrap.dedent(ENCODER.split('ENCODER = textwrap.dedent(\n    """')[1].split('"""')[0])

# A PairClassification task with one positive pair in 30: most resamples have no AP.
LOPSIDED_SUITE = """
name = "lopsided"
scheme = "ko-leaderboard-v1"

[[tasks]]
column = "tiny-pairs"
task = "TinyPairs"
type = "PairClassification"
data = "tiny"
split = "test"
category = "NLI"
"""


def test_compare_and_the_gate_never_crash_on_undefined_resamples(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """One positive in 30 pairs: about a third of the resamples have no positive pair. The
    paired interval is refused with the count, the run and ``koembed compare`` go on (before
    issue 17 compare died on ``ValueError: cannot round nan``, exit 1)."""
    pytester.makeconftest(ENCODER)
    rows = [
        {"sentence1": f"문장 {i} 하나", "sentence2": f"문장 {i * 7 % 30} 둘", "label": int(i == 0)}
        for i in range(30)
    ]
    folder = pytester.path / "tiny" / "TinyPairs" / "default" / "test"
    folder.mkdir(parents=True)
    (folder / "pairs.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    (pytester.path / "lopsided.toml").write_text(LOPSIDED_SUITE, encoding="utf-8")
    args = ["--koembed-model=hashy", "--koembed-suite=lopsided.toml"]
    base = pytester.runpytest(*args, "--koembed-save-baseline=base.json")
    assert base.ret == 0, base.stdout.str()
    monkeypatch.setenv("KOEMBED_TEST_NOISE", "3")
    run = pytester.runpytest(*args, "--koembed-baseline=base.json", "--koembed-json=new.json")
    assert run.ret in (0, 1), run.stdout.str()
    assert "Traceback" not in run.stdout.str()
    run.stdout.fnmatch_lines(["intervals: *tiny-pairs: no interval: the task value is undefined*"])
    task = json.loads((pytester.path / "new.json").read_text("utf-8"))["tasks"][0]
    assert task["p_value"] is not None and task["delta_ci"] is None and task["ci"] is None
    assert "more than the 25 (one tail's share)" in task["ci_note"]
    assert "delta_ci: no interval: the delta is undefined in " in task["ci_note"]

    monkeypatch.chdir(pytester.path)
    status = main(["compare", "base.json", "new.json"])
    out = capsys.readouterr().out
    assert status in (0, 1), out
    assert "tiny-pairs: delta_ci: no interval: the delta is undefined in " in out
    assert "of 1000 resamples, more than the 25 (one tail's share)" in out


def test_sts_and_pairs_of_mteb_kor_v2_are_resampled_and_paired(pytester: pytest.Pytester) -> None:
    """mteb-kor-v2's KorSTS (cosine_spearman) and KorNLI (max_ap), on the sample suite's rows:
    each gets its interval and its paired test (before issue 17: neither)."""
    pytester.makeconftest(ENCODER)
    data = pytester.path / "data"
    for task, sample in (
        ("KorSTS", "KoembedSampleSTS"),
        ("KorNLI", "KoembedSamplePairClassification"),
    ):
        shutil.copytree(SAMPLE / sample, data / task)
    args = ["--koembed-model=hashy", "--koembed-suite=mteb-kor-v2", f"--koembed-data-dir={data}",
            "-k", "KorSTS or KorNLI"]  # fmt: skip
    assert pytester.runpytest(*args, "--koembed-save-baseline=base.json").ret == 0
    result = pytester.runpytest(*args, "--koembed-baseline=base.json", "--koembed-json=new.json")
    assert result.ret == 0, result.stdout.str()
    record = json.loads((pytester.path / "new.json").read_text("utf-8"))
    frames = load_examples(pytester.path / "new.json")
    for task in record["tasks"]:
        column, key = task["column"], task["main_score"]
        assert key == {"KorSTS": "cosine_spearman", "KorNLI": "max_ap"}[column]
        assert bootstrap.frame_value(frames[column], key) == pytest.approx(task["value"], abs=1e-9)
        assert task["ci"] is not None, task
        assert (task["ci"]["low"], task["ci"]["high"]) == bootstrap.task_interval(
            frames[column], key, stream=column
        )
        assert task["p_value"] == 1.0 and task["delta"] == 0.0, task  # the same model again
        assert task["not_paired"] is None
