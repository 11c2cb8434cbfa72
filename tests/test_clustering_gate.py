"""The clustering gate: tested on each document's leave-one-out nearest-centroid correctness.

mteb's v-measure of a one-set (KLUE-like) task is one k-means fit: its frame had one row, so its
paired test had p = 1 whatever the model did. The frame now carries one row per document with the
gated statistic; mteb's rows still give the reported value exactly.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pytest_koembed.errors import KoembedError
from pytest_koembed.evaluation.per_example import (
    centroid_correct,
    clustering_frame,
    pair_examples,
    recompute_value,
)
from pytest_koembed.stats import bootstrap, multiplicity, permutation, rules

KORSTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "korsts" / "sts-test.tsv"


def _set(n_per_class: int = 40, k: int = 4, dim: int = 16) -> tuple[list[str], list[str], Any]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(k, dim))
    labels = [f"c{i % k}" for i in range(n_per_class * k)]
    truth = np.array([centres[i % k] for i in range(n_per_class * k)])
    texts = [f"문서 {i}" for i in range(len(labels))]
    return texts, labels, truth


def _model(truth: np.ndarray, noise: float, seed: int) -> np.ndarray:
    return truth + np.random.default_rng(seed).normal(0.0, noise, truth.shape)


def _one_set(texts: list[str], labels: list[str], x: np.ndarray, v: float) -> pd.DataFrame:
    return clustering_frame([(texts, labels, 0, 0, v)], [(texts, labels, 0, x)])


def test_centroid_correct_is_the_leave_one_out_nearest_centroid() -> None:
    _, labels, truth = _set(6, 3, 5)
    x = _model(truth, 1.5, 1)
    y = np.array(labels)
    expected = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        dist = {c: ((x[i] - x[keep & (y == c)].mean(0)) ** 2).sum() for c in set(labels)}
        own = dist.pop(y[i])
        expected.append(float(own < min(dist.values())))
    assert centroid_correct(x, labels).tolist() == expected
    assert 0 < sum(expected) < len(expected)  # the test sees both outcomes
    alone = centroid_correct(np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0]]), ["a", "a", "b"])
    assert alone.tolist() == [1.0, 1.0, 0.0]  # "b" has no other member: 0.0


def test_a_clearly_worse_one_set_model_fails_and_an_equivalent_one_does_not() -> None:
    texts, labels, truth = _set()
    base = _one_set(texts, labels, _model(truth, 1.6, 1), 40.0)
    worse = _one_set(texts, labels, _model(truth, 3.2, 2), 10.0)
    same = _one_set(texts, labels, _model(truth, 1.6, 3), 41.0)
    drop = permutation.paired_test(*pair_examples(base, worse), "v_measure", stream="c")
    assert drop.statistic == rules.CLUSTERING_STATISTIC
    assert drop.n == len(texts)  # documents, not the one v-measure row
    assert drop.delta < -10 and drop.p_value < 0.01
    assert multiplicity.gate_run({"c": drop})["c"].verdict == "regressed"
    assert drop.to_dict()["gated_on"] == "leave-one-out centroid accuracy"
    even = permutation.paired_test(*pair_examples(base, same), "v_measure", stream="c")
    assert even.p_value >= 0.05 and abs(even.delta) < 5
    assert multiplicity.gate_run({"c": even})["c"].verdict == "within noise"


def test_the_reported_value_is_still_mtebs_v_measure() -> None:
    texts, labels, truth = _set()
    units = [(texts, labels, 0, run, v) for run, v in enumerate([0.25, 0.5, 0.75])]
    frame = clustering_frame(units, [(texts, labels, 0, _model(truth, 1.0, 1))])
    assert recompute_value(frame, "v_measure") == pytest.approx(50.0, abs=1e-12)
    assert bootstrap.frame_value(frame, "v_measure") == pytest.approx(50.0, abs=1e-12)
    low, high = bootstrap.task_interval(frame, "v_measure")  # mteb's runs: their spread
    assert 25.0 <= low < high <= 75.0


def test_a_one_set_task_says_it_has_no_interval() -> None:
    texts, labels, truth = _set()
    frame = _one_set(texts, labels, _model(truth, 1.0, 1), 30.0)
    with pytest.raises(KoembedError, match=r"one clustering set: .* no interval"):
        bootstrap.task_interval(frame, "v_measure")


def test_a_baseline_without_document_rows_is_refused_in_one_line() -> None:
    texts, labels, truth = _set()
    new = _one_set(texts, labels, _model(truth, 1.0, 1), 30.0)
    old = new[new["v_measure"].notna()].drop(columns="centroid_correct")
    with pytest.raises(KoembedError, match="predate the per-document rows") as info:
        permutation.paired_test(old, old, "v_measure")
    assert "\n" not in str(info.value)


ENCODER = textwrap.dedent(
    """
    import os

    import numpy as np
    import pytest
    from sentence_transformers import SentenceTransformer


    class Noisy:
        def __init__(self, path, noise):
            self.model, self.noise = SentenceTransformer(path, device="cpu"), noise

        def encode(self, texts):
            out = self.model.encode(list(texts), batch_size=32)
            if self.noise:  # a damaged model: the real vectors drowned in seeded noise
                rng = np.random.default_rng(len(texts))
                out = out + rng.normal(0.0, self.noise, out.shape).astype(out.dtype)
            return out


    @pytest.fixture(scope="session")
    def koembed_encoder():
        return Noisy({path!r}, float(os.environ.get("KOEMBED_TEST_NOISE") or 0))
    """
)

SUITE = """
name = "one-set"
description = "one KLUE-like clustering set"
scheme = "ko-leaderboard-v1"

[[tasks]]
column = "one-set-clustering"
task = "KoembedOneSet"
type = "Clustering"
data = "data"
split = "test"
category = "Clustering"
"""


def test_a_one_set_clustering_task_through_the_plugin(
    run_pytest, tmp_path: Path, minilm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-set task (mteb's legacy clustering, as KLUE's: 400 KorSTS sentences labelled by
    their source): the real model, its baseline, the
    same model again (within noise) and the model drowned in noise four times its vectors' norm
    (regressed)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    split = tmp_path / "data" / "KoembedOneSet" / "default" / "test"
    split.mkdir(parents=True)
    if not KORSTS.is_file():
        pytest.skip(f"{KORSTS} is absent (the shared real data; always present in CI)")
    import csv

    table = pd.read_csv(KORSTS, sep="\t", quoting=csv.QUOTE_NONE).drop_duplicates("sentence1")
    with (split / "texts.jsonl").open("w", encoding="utf-8") as f:
        for text, label in zip(table["sentence1"][:400], table["filename"][:400], strict=True):
            row = {"text": str(text), "label": str(label), "set": "전체"}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (tmp_path / "suite.toml").write_text(SUITE, encoding="utf-8")
    (tmp_path / "conftest.py").write_text(ENCODER.format(path=str(minilm_dir)), encoding="utf-8")
    args = ["--koembed-model=noisy", "--koembed-suite=suite.toml"]
    saved = run_pytest(tmp_path, *args, "--koembed-save-baseline=base.json")
    assert saved.ret == 0, saved.stdout
    again = run_pytest(tmp_path, *args, "--koembed-baseline=base.json", "--koembed-json=same.json")
    assert again.ret == 0, again.stdout
    task = json.loads((tmp_path / "same.json").read_text(encoding="utf-8"))["tasks"][0]
    assert task["verdict"] == "within noise" and task["p_value"] == 1.0
    assert task["gated_on"] == "leave-one-out centroid accuracy"
    monkeypatch.setenv("KOEMBED_TEST_NOISE", "0.2")
    cut = run_pytest(tmp_path, *args, "--koembed-baseline=base.json", "--koembed-json=cut.json")
    assert cut.ret == 1, cut.stdout
    task = json.loads((tmp_path / "cut.json").read_text(encoding="utf-8"))["tasks"][0]
    assert task["verdict"] == "regressed", task
    assert task["p_value"] < 0.01 and task["delta"] < -10
    line = "  one-set-clustering: gated on leave-one-out centroid accuracy per document (delta -"
    assert line in cut.stdout and "v_measure reported" in cut.stdout, cut.stdout
