"""The clustering phase runs with its thread pools capped, the encoder with all of them, and the
cap changes no value (``evaluation.threads``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import threadpoolctl
from koembed_test_encoders import HASHING_CLASS

from pytest_koembed.evaluation.run import evaluate_task
from pytest_koembed.evaluation.threads import CLUSTERING_THREADS
from pytest_koembed.protocol.suite import load_suite

# Every pool at 2 threads before the run (also on a 1-core machine), so that a cap shows; the
# encoder and scikit-learn's k-means write down what the pools had while they ran.
RECORDING_CONFTEST = (
    HASHING_CLASS
    + """
import json
import os

import mteb
import torch  # noqa: F401  (its OpenMP runtime loaded before the limit below)
import sklearn.cluster
import threadpoolctl

threadpoolctl.threadpool_limits(2)  # for the whole process: it is a subprocess
LOG = os.environ["KOEMBED_THREADS_LOG"]


def _write(where):
    counts = {lib["filepath"]: lib["num_threads"] for lib in threadpoolctl.threadpool_info()}
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps({"where": where, "threads": counts}) + "\\n")


_evaluate = mteb.evaluate


def _recording_evaluate(model, tasks, *args, **kwargs):
    _write("evaluate " + tasks.metadata.type)
    return _evaluate(model, tasks, *args, **kwargs)


mteb.evaluate = _recording_evaluate


_fit = sklearn.cluster.MiniBatchKMeans.fit


def _recording_fit(self, *args, **kwargs):
    _write("k-means")
    return _fit(self, *args, **kwargs)


sklearn.cluster.MiniBatchKMeans.fit = _recording_fit


class Recording(Hashing):
    def encode(self, texts):
        _write("encode")
        return super().encode(texts)


@pytest.fixture(scope="session")
def koembed_encoder():
    return Recording()
"""
)


def _log(path: Path) -> dict[str, list[dict[str, int]]]:
    seen: dict[str, list[dict[str, int]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        seen.setdefault(entry["where"], []).append(entry["threads"])
    return seen


def test_kmeans_runs_capped_and_the_encoder_with_every_thread(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = pytester.path / "threads.jsonl"
    monkeypatch.setenv("KOEMBED_THREADS_LOG", str(log))
    pytester.makeconftest(RECORDING_CONFTEST)
    result = pytester.runpytest_subprocess(
        "--koembed-model=recording",
        "--koembed-suite=sample",
        "-k",
        "sample-clustering or sample-sts",
    )
    result.assert_outcomes(passed=2)
    seen = _log(log)
    assert set(seen) == {"evaluate STS", "evaluate Clustering", "encode", "k-means"}, seen
    # OpenMP among the pools (scikit-learn's k-means and torch use it)
    assert any("omp" in path for path in seen["k-means"][0]), seen
    capped = [*seen["evaluate Clustering"], *seen["k-means"]]
    assert all(set(counts.values()) == {CLUSTERING_THREADS} for counts in capped), capped
    # the encoder (also the clustering task's) and the other tasks keep every thread
    full = [*seen["evaluate STS"], *seen["encode"]]
    assert all(set(counts.values()) == {2} for counts in full), full
    assert len(seen["encode"]) >= 2, seen  # the STS task's call(s) and the clustering task's


class _Fixed:
    """Embeddings of the clustering task's texts computed once, so both runs cluster the very
    same vectors."""

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder
        self._rows: dict[str, Any] = {}

    def encode(self, texts: list[str]) -> Any:
        import numpy as np

        missing = [t for t in dict.fromkeys(texts) if t not in self._rows]
        if missing:
            self._rows.update(zip(missing, self._encoder.encode(missing), strict=True))
        return np.stack([self._rows[t] for t in texts])


def test_the_cap_changes_no_value_of_the_sample_clustering_task(
    minilm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real MiniLM's embeddings, clustered with the cap and without it (every pool at 2
    threads): identical values, and the k-means really ran at both counts."""
    import sklearn.cluster
    from sentence_transformers import SentenceTransformer

    seen: list[set[int]] = []
    fit = sklearn.cluster.MiniBatchKMeans.fit

    def recording_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append({lib["num_threads"] for lib in threadpoolctl.threadpool_info()})
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(sklearn.cluster.MiniBatchKMeans, "fit", recording_fit)
    spec = next(s for s in load_suite("sample").tasks if s.category == "Clustering")
    encoder = _Fixed(SentenceTransformer(str(minilm_dir), device="cpu"))
    with threadpoolctl.threadpool_limits(2):
        capped = evaluate_task(spec, encoder, clustering_threads=1)
        capped_seen, seen[:] = list(seen), []
        uncapped = evaluate_task(spec, encoder, clustering_threads=None)
    assert capped_seen and all(counts == {1} for counts in capped_seen), capped_seen
    assert seen and all(counts == {2} for counts in seen), seen
    assert capped.value == uncapped.value
    assert capped.scores == uncapped.scores
    per_run = capped.mteb_result["scores"][spec.split][0]["v_measures"]
    assert per_run == uncapped.mteb_result["scores"][spec.split][0]["v_measures"]
