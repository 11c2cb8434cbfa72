"""False alarms and power of the paired gate, by simulation (numbers, not a timed test).

    OMP_NUM_THREADS=1 python benchmarks/gate_simulation.py [--trials 200] [--seed 0]

Models are simulated as embeddings: a task has fixed *base* embeddings (the "truth" a model
approximates), and a model's embeddings are the base plus its own Gaussian noise. Two models
with independent noise of the same size are *equivalent*: their expected scores are equal, and
any difference between them is noise. A *degraded* model gets extra noise, sized so that it
loses about 2 points on its task.

Per-example frames are computed here from the vectors, in the schema pytest_koembed.stats.rules
reads (STS: gold + similarity/cosine/manhattan/euclidean; pairs: label + 5 scores; retrieval:
per-query ndcg_at_5/ndcg_at_10 with one relevant document per query). The three clustering
tasks are real data: KorSTS texts labelled by their source file, the real small model's vectors
as the base (``benchmarks/clustering_sim.py``), mteb's own k-means and sampling (two one-set
legacy tasks of 850 / 900 texts, one 10-run fast task of 204 texts), and the product's frames
(mteb's v-measure rows plus one ``centroid_correct`` row per document, the statistic the gate
tests; the tolerance rule reads the v-measure). This is simulation code, not product code.

Prints, for ``--trials`` pairs of equivalent models over a 15-task suite of ko-leaderboard-v1
sizes: how often the run fails at confidence 0.90 / 0.95 / 0.99 by the new gate (one-sided,
resolution from the run, Holm over the 15 tasks), the new gate with the weighted average's test
in the family, and the old gate (two-sided p from a fixed 1,000 swaps, kept here as the
comparison), each with a Clopper-Pearson bound; the fixed 1-point tolerance; each task's MDE;
then the power against a 2-point degradation of one task (600-query retrieval, 1,000-pair AP,
1,000-pair STS, and each clustering task by about 2 v-measure points) and, unless
``--skip-every-task``, of every task at once by 1 and 2 points, new beside old on the same
simulated data. The old gate runs on the same statistic as the new one (for clustering: the
per-document accuracy; the gate before issue 17 read the v-measure rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import clustering_sim as cs

from pytest_koembed.protocol.scoring import shown_value
from pytest_koembed.stats import bootstrap, kernels, multiplicity, permutation, power, rules

DIM = 64
NOISE = 0.3  # norm of a model's noise relative to unit-norm base embeddings


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _noise(rng: np.random.Generator, shape: tuple[int, ...], size: float) -> np.ndarray:
    return rng.normal(0.0, size / math.sqrt(shape[-1]), shape)


@dataclass(frozen=True)
class Model:
    """A simulated model: base embeddings + noise of norm ``noise`` drawn from ``seed``; a
    degraded copy adds ``extra`` noise drawn from ``extra_seed`` on top of the same noise."""

    seed: tuple[int, ...]
    noise: float = 0.0
    extra: float = 0.0
    extra_seed: tuple[int, ...] = ()

    def embed(self, x: np.ndarray, tag: int) -> np.ndarray:
        """``x`` as this model sees it (``tag`` names the array, so draws never shift)."""
        out = x + _noise(np.random.default_rng([*self.seed, tag]), x.shape, self.noise)
        if self.extra:
            out += _noise(np.random.default_rng([*self.extra_seed, tag]), x.shape, self.extra)
        return out


def _pair_vectors(rng: np.random.Generator, cosines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Base embeddings of sentence pairs whose cosine is ``cosines``."""
    first = _unit(rng.normal(size=(len(cosines), DIM)))
    other = rng.normal(size=(len(cosines), DIM))
    other = _unit(other - (other * first).sum(1, keepdims=True) * first)
    c = cosines[:, None]
    return first, c * first + np.sqrt(1.0 - c * c) * other


def _pair_scores(first: np.ndarray, second: np.ndarray) -> dict[str, np.ndarray]:
    cosine = (_unit(first) * _unit(second)).sum(1)
    return {
        "similarity": cosine,
        "cosine": cosine,
        "manhattan": -np.abs(first - second).sum(1),
        "euclidean": -np.linalg.norm(first - second, axis=1),
        "dot": (first * second).sum(1),
    }


# ---------------------------------------------------------------------------------------------
# Tasks: fixed base data, and a function that gives a model's per-example frame
# ---------------------------------------------------------------------------------------------


@dataclass
class SimTask:
    """One simulated task: base data drawn once, ``frame(rng, noise)`` for one model's run."""

    column: str
    category: str
    rule: str
    size: int
    frame: Callable[[Model], pd.DataFrame]
    pilots: int = 6  # pilot runs per calibration step (see :func:`calibrate_degradation`)


def sts_task(column: str, n: int, rng: np.random.Generator) -> SimTask:
    gold = rng.integers(0, 26, n) / 5.0  # 0.0, 0.2, ..., 5.0: ties, as real gold scores have
    cosines = np.clip(0.1 + 0.16 * gold + rng.normal(0, 0.15, n), -0.95, 0.99)
    first, second = _pair_vectors(rng, cosines)

    def frame(model: Model) -> pd.DataFrame:
        a, b = model.embed(first, 0), model.embed(second, 1)
        scores = _pair_scores(a, b)
        return pd.DataFrame({"gold": gold, **{c: scores[c] for c in rules.STS_SCORE_COLUMNS}})

    return SimTask(column, "STS", "sts-mean8", n, frame)


def pair_task(column: str, n: int, rng: np.random.Generator) -> SimTask:
    labels = (rng.random(n) < 0.5).astype(np.int64)
    cosines = np.clip(0.45 + 0.25 * labels + rng.normal(0, 0.2, n), -0.95, 0.99)
    first, second = _pair_vectors(rng, cosines)

    def frame(model: Model) -> pd.DataFrame:
        a, b = model.embed(first, 0), model.embed(second, 1)
        return pd.DataFrame({"label": labels, **_pair_scores(a, b)})

    return SimTask(column, "NLI", "cosine_ap", n, frame)


def retrieval_task(column: str, queries: int, docs: int, rng: np.random.Generator) -> SimTask:
    corpus = _unit(rng.normal(size=(docs, DIM)))
    relevant = rng.choice(docs, size=queries, replace=queries > docs)
    # queries of varied difficulty: the relevant document plus noise of norm 0.8 to 2.8
    spread = rng.uniform(0.8, 2.8, (queries, 1))
    asked = _unit(corpus[relevant] + spread * _noise(rng, (queries, DIM), 1.0))

    def frame(model: Model) -> pd.DataFrame:
        d, q = _unit(model.embed(corpus, 0)), _unit(model.embed(asked, 1))
        scores = q @ d.T
        hit = scores[np.arange(queries), relevant]
        rank = 1 + (scores > hit[:, None]).sum(1)  # one relevant document: IDCG = 1
        gain = 1.0 / np.log2(rank + 1.0)
        return pd.DataFrame(
            {
                "ndcg_at_5": np.where(rank <= 5, gain, 0.0),
                "ndcg_at_10": np.where(rank <= 10, gain, 0.0),
            }
        )

    return SimTask(column, "Retrieval", "ndcg-5-10", queries, frame)


CLUSTERING_SETS = {  # suite column -> clustering_sim set (KorSTS texts by source file)
    "sib200": "sib-like-204",  # mteb's fast clustering: 10 runs of 16,384 draws
    "clustering_klue_mrc_context_domain": "klue-like-850",  # legacy: one MiniBatchKMeans fit
    "clustering_klue_mrc_ynat_title": "klue-like-900",
}


@functools.lru_cache(maxsize=1)
def _clustering_data() -> dict[str, tuple[list[str], list[str], np.ndarray]]:
    """clustering_sim's sets with the real small model's vectors (encoded once, cached in /tmp)."""
    return {name: (t, y, cs.embed(t)) for name, (t, y) in cs.korsts_sets().items()}


def clustering_task(column: str, name: str) -> SimTask:
    """A clustering task on ``clustering_sim``'s set ``name``: the base embeddings are the real
    small model's (unit norm), a model adds its own noise (:class:`Model`), and the frame is
    the product's (mteb's v-measure rows from mteb's own k-means and sampling, seed 42, plus
    one ``centroid_correct`` row per document). Frames are cached per model: a base model's
    frame is reused by the calibration's bisection steps and by both degradations."""
    texts, labels, base = _clustering_data()[name]
    fast = name.startswith("sib")

    @functools.lru_cache(maxsize=2048)
    def frame(model: Model) -> pd.DataFrame:
        x = model.embed(base.astype(np.float64), 0).astype(np.float32)
        v = cs.fast_v_measures(x, labels) if fast else [cs.legacy_v_measure(x, labels)]
        return cs.clustering_frame(texts, labels, x, v)

    # one k-means fit's v-measure is noisy (sd ~1.7 points between equivalent models) and a
    # one-set frame is cheap: more pilots per calibration step there
    return SimTask(column, "Clustering", "v_measure", len(texts), frame, 6 if fast else 24)


def clustering_tasks(rng: np.random.Generator | None = None) -> list[SimTask]:
    """The suite's three clustering tasks, on KorSTS texts with mteb's real sampling
    (``benchmarks/clustering_sim.py``): two one-set legacy tasks (850 and 900 texts, one
    k-means fit each) and one 10-run fast task (204 texts). ``rng`` is not used: the data are
    fixed real texts."""
    return [clustering_task(column, name) for column, name in CLUSTERING_SETS.items()]


def leaderboard_suite(seed: int = 0) -> list[SimTask]:
    """15 tasks with ko-leaderboard-v1's sizes (pairs, queries/corpus; ~ where not published)."""
    rng = np.random.default_rng(seed)
    return [
        sts_task("KLUE-STS", 519, rng),
        sts_task("Kor-STS", 1379, rng),
        sts_task("STS17", 2846, rng),
        pair_task("KLUE-NLI", 2000, rng),
        pair_task("Kor-NLI", 3340, rng),
        pair_task("PawsX-PairClassification", 2000, rng),
        *clustering_tasks(rng),
        retrieval_task("Ko-StrategyQA", 592, 9251, rng),
        retrieval_task("AutoRAGRetrieval", 114, 720, rng),
        retrieval_task("PublicHealthQA", 77, 77, rng),
        retrieval_task("XPQARetrieval", 1000, 2000, rng),
        retrieval_task("facebook/belebele", 900, 488, rng),
        retrieval_task("webfaq-retrieval", 1000, 1000, rng),
    ]


# ---------------------------------------------------------------------------------------------
# Gates: today's (issue 17) and the old one (two-sided p from a fixed 1,000 swaps), kept here
# as the comparison
# ---------------------------------------------------------------------------------------------

FINEST_ALPHA = 0.01
"""The new tests are drawn once per trial at the finest resolution any level below needs
(alpha 0.01, m = tasks + 1): a finer floor is valid at every coarser level."""

OLD_SWAPS = 1000


@dataclass
class TrialOutcome:
    """One pair of runs over a suite: per-task delta and p-values, and each gate's decision."""

    deltas: dict[str, float]
    p_values: dict[str, float]
    paired_fails: bool
    tolerance_fails: bool
    unadjusted_fails: bool
    regressed: tuple[str, ...]
    old_fails: bool = False
    old_regressed: tuple[str, ...] = ()
    weighted_fails: bool = False
    weighted_regressed: tuple[str, ...] = ()


def tolerance_regressed(base: float, new: float, tolerance: float = 1.0) -> bool:
    """The fixed-tolerance rule: shown(new) < shown(base) - tolerance, exact in decimals."""
    shown = lambda v: Decimal(repr(shown_value(v)))  # noqa: E731
    return shown(new) < shown(base) - Decimal(repr(tolerance))


DEGRADATIONS = ("perturbed", "independent")
"""How a degraded model is made: ``perturbed`` adds noise to the *baseline's own* embeddings
(the new checkpoint is the old one, damaged: quantised, badly merged, over-trained);
``independent`` is another model with larger independent noise (nothing shared but the task)."""


def run_models(
    column: str, trial_seed: int, extra: float = 0.0, how: str = "perturbed"
) -> tuple[Model, Model]:
    """The base and new model of one task in one trial; ``extra`` > 0 degrades the new one."""
    t = zlib.crc32(column.encode())
    base = Model((trial_seed, t, 0), NOISE)
    if not extra:
        return base, Model((trial_seed, t, 1), NOISE)
    if how == "perturbed":
        return base, Model(base.seed, NOISE, extra, (trial_seed, t, 2))
    return base, Model((trial_seed, t, 1), math.hypot(NOISE, extra))


def old_two_sided_p(
    base: pd.DataFrame, new: pd.DataFrame, rule: str, seed: int, stream: str
) -> float:
    """Today's gate before issue 17: two-sided p = (1 + #{|d*| >= |d|}) / 1001 from a fixed
    1,000 random swaps (the same swapped statistics)."""
    b, n = rules.gated_metric(base, rule), rules.gated_metric(new, rule)
    observed = float(kernels.swap_deltas(n, b, np.zeros((n.n, 1), dtype=bool))[0])
    swapped = kernels.swap_deltas(n, b, kernels.swap_masks(n.n, OLD_SWAPS, seed, stream))
    extreme = int(np.sum(np.abs(swapped) >= abs(observed) - 1e-9 * max(1.0, abs(observed))))
    return (1 + extreme) / (1 + OLD_SWAPS)


@dataclass
class Trial:
    """One trial's paired results: the new tests, the old p-values, the weighted test."""

    tests: dict[str, permutation.PairedTest]
    old_p: dict[str, float]
    weighted: permutation.WeightedTest | None = None
    # the task values (base, new) where the test is on another statistic (clustering: the
    # tests hold the per-document accuracy, the tolerance rule reads mteb's v-measure)
    values: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)


def trial_results(
    tasks: Sequence[SimTask],
    trial_seed: int,
    degraded: dict[str, float] | None = None,
    how: str = "perturbed",
    weighted: bool = False,
    old: bool = True,
) -> Trial:
    """Two runs over ``tasks``: base and new equivalent (independent noise of size NOISE), or,
    for a task in ``degraded``, new degraded by that much extra noise (``how``). Only p-values
    decide, so the bootstrap (which gives delta_ci) runs with 2 resamples here."""
    degraded = degraded or {}
    family = len(tasks) + 1
    tests, old_p, frames, values = {}, {}, [], {}
    for task in tasks:
        base, new = run_models(task.column, trial_seed, degraded.get(task.column, 0.0), how)
        fb, fn = task.frame(base), task.frame(new)
        tests[task.column] = permutation.paired_test(
            fb,
            fn,
            task.rule,
            n_resamples=2,
            seed=trial_seed,
            stream=task.column,
            family_size=family,
            alpha=FINEST_ALPHA,
        )
        if old:
            old_p[task.column] = old_two_sided_p(fb, fn, task.rule, trial_seed, task.column)
        if task.category == "Clustering":
            values[task.column] = (
                bootstrap.frame_value(fb, task.rule),
                bootstrap.frame_value(fn, task.rule),
            )
        frames.append((task.column, task.category, task.rule, fb, fn))
    test = None
    if weighted:
        test = permutation.weighted_paired_test(
            frames, "ko-leaderboard-v1", family_size=family, seed=trial_seed, alpha=FINEST_ALPHA
        )
    return Trial(tests, old_p, test, values)


def paired_results(
    tasks: Sequence[SimTask],
    trial_seed: int,
    degraded: dict[str, float] | None = None,
    how: str = "perturbed",
) -> dict[str, permutation.PairedTest]:
    """The new paired tests of one trial (see :func:`trial_results`)."""
    return trial_results(tasks, trial_seed, degraded, how, old=False).tests


def _holm_regressed(
    deltas: dict[str, float], ps: dict[str, float], alpha: float, min_effect: float
) -> tuple[str, ...]:
    columns = list(ps)
    adjusted = multiplicity.holm([ps[c] for c in columns])
    return tuple(
        c
        for c, adj in zip(columns, adjusted, strict=True)
        if adj < alpha and round(deltas[c], 2) <= -min_effect and round(deltas[c], 2) < 0
    )


def outcome_of(
    trial: Trial | dict[str, permutation.PairedTest],
    confidence: float = bootstrap.DEFAULT_LEVEL,
    min_effect: float = power.DEFAULT_MIN_EFFECT,
) -> TrialOutcome:
    """Each gate's decision on one trial's paired results: the new gate (one-sided, Holm over
    the tasks), the new gate with the weighted average's test in the family, the old gate
    (two-sided, fixed 1,000 swaps, Holm), the fixed tolerance, per-task tests without Holm."""
    if not isinstance(trial, Trial):
        trial = Trial(trial, {})
    tests = trial.tests
    alpha = power.significance_level(confidence)
    verdicts = multiplicity.gate_run(tests, confidence, min_effect)
    regressed = tuple(c for c, v in verdicts.items() if v.verdict == "regressed")
    deltas = {c: r.delta for c, r in tests.items()}
    unadjusted = any(
        multiplicity.paired_verdict(r.delta, r.p_value, confidence, min_effect) == "regressed"
        for r in tests.values()
    )
    old = _holm_regressed(deltas, trial.old_p, alpha, min_effect) if trial.old_p else ()
    with_weighted: tuple[str, ...] = ()
    if trial.weighted is not None:
        ps = {c: r.p_value for c, r in tests.items()} | {"weighted": trial.weighted.p_value}
        with_weighted = _holm_regressed(deltas | {"weighted": trial.weighted.delta}, ps, alpha, 0.0)
        # a task still needs the minimum effect; the weighted average needs only significance
        with_weighted = tuple(
            c for c in with_weighted if c == "weighted" or round(deltas[c], 2) <= -min_effect
        )
    return TrialOutcome(
        deltas=deltas,
        p_values={c: r.p_value for c, r in tests.items()},
        paired_fails=bool(regressed),
        tolerance_fails=any(
            tolerance_regressed(*trial.values.get(c, (r.base, r.new))) for c, r in tests.items()
        ),
        unadjusted_fails=unadjusted,
        regressed=regressed,
        old_fails=bool(old),
        old_regressed=old,
        weighted_fails=bool(with_weighted),
        weighted_regressed=with_weighted,
    )


def run_trial(tasks: Sequence[SimTask], trial_seed: int) -> TrialOutcome:
    """One pair of equivalent models over ``tasks``, judged by every gate."""
    return outcome_of(trial_results(tasks, trial_seed))


def binomial_upper(successes: int, trials: int, level: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a rate."""
    from scipy.stats import beta

    return 1.0 if successes == trials else float(beta.ppf(level, successes + 1, trials - successes))


def binomial_lower(successes: int, trials: int, level: float = 0.95) -> float:
    """One-sided Clopper-Pearson lower bound of a rate."""
    from scipy.stats import beta

    return 0.0 if successes == 0 else float(beta.ppf(1 - level, successes, trials - successes + 1))


def calibrate_degradation(
    task: SimTask,
    how: str,
    target: float = 2.0,
    pilots: int | None = None,
    seed: int = 12345,
    steps: int = 9,
) -> tuple[float, float]:
    """Extra noise that makes ``task`` lose about ``target`` points (bisection on ``pilots``
    pilot runs, by default the task's own number)."""
    low, high = 0.0, 2.0
    pilots = task.pilots if pilots is None else pilots

    def loss(extra: float) -> float:
        drops = []
        for p in range(pilots):
            base_model, new_model = run_models(task.column, seed + p, extra, how)
            base, new = task.frame(base_model), task.frame(new_model)
            drops.append(
                bootstrap.frame_value(base, task.rule) - bootstrap.frame_value(new, task.rule)
            )
        return float(np.mean(drops))

    for _ in range(steps):
        mid = (low + high) / 2
        if loss(mid) < target:
            low = mid
        else:
            high = mid
    extra = (low + high) / 2
    return extra, loss(extra)


def power_tasks(seed: int = 1) -> list[SimTask]:
    """The power targets: a 1,000-pair STS task, a 1,000-pair pair task, 600 queries/10,000 docs."""
    rng = np.random.default_rng(seed)
    return [
        sts_task("STS-1000", 1000, rng),
        pair_task("pairs-1000", 1000, rng),
        retrieval_task("retrieval-600", 600, 10000, rng),
    ]


LEVELS = (0.90, 0.95, 0.99)


def _rate(k: int, n: int, bound: str = "upper") -> str:
    b = binomial_upper(k, n) if bound == "upper" else binomial_lower(k, n)
    return f"{k:>3}/{n} = {k / n:6.1%} (95% {bound} bound {b:5.1%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--power-trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-every-task", action="store_true")
    parser.add_argument("--every-task-trials", type=int, default=50)
    parser.add_argument(
        "--only-every-task", action="store_true", help="only the every-task-degraded rows"
    )
    args = parser.parse_args()
    if args.only_every_task:
        for points in (1.0, 2.0):
            every_task_line(leaderboard_suite(args.seed), points, args.every_task_trials)
        return

    suite = leaderboard_suite(args.seed)
    print(
        f"suite: {len(suite)} tasks, noise {NOISE} per model; min effect "
        f"{power.DEFAULT_MIN_EFFECT}; new: one-sided, sequential swaps up to "
        f"{power.swap_resolution(len(suite) + 1, FINEST_ALPHA)}; old: two-sided, {OLD_SWAPS} swaps"
    )
    started = time.perf_counter()
    trials = [trial_results(suite, 1000 + i, weighted=True) for i in range(args.trials)]
    elapsed = time.perf_counter() - started
    n = len(trials)
    print(f"\n{n} pairs of equivalent models ({elapsed:.0f} s): runs failed")
    for level in LEVELS:
        outcomes = [outcome_of(t, confidence=level) for t in trials]
        for label, attr in (
            ("new gate (one-sided, Holm over 15)", "paired_fails"),
            ("new gate + weighted average (Holm over 16)", "weighted_fails"),
            ("old gate (two-sided, 1,000 swaps)", "old_fails"),
        ):
            k = sum(getattr(o, attr) for o in outcomes)
            print(f"  confidence {level:.2f}  {label:<44}{_rate(k, n)}")
    base = [outcome_of(t) for t in trials]
    for label, attr in (
        ("fixed 1-point tolerance", "tolerance_fails"),
        ("per-task one-sided tests at 5%, no Holm", "unadjusted_fails"),
    ):
        k = sum(getattr(o, attr) for o in base)
        print(f"  {label:<60}{_rate(k, n)}")
    swaps = [t.tests[c].n_permutations for t in trials for c in t.tests]
    print(f"  swaps drawn per task test: median {np.median(swaps):.0f}, max {max(swaps)}")

    print(f"\n{'task':<36}{'n':>6}{'sd(delta)':>10}{'drop>1':>8}{'p<0.05':>8}{'MDE':>7}")
    for task in suite:
        deltas = np.array([t.tests[task.column].delta for t in trials])
        ps = np.array([t.tests[task.column].p_value for t in trials])
        verdicts = [multiplicity.gate_run(t.tests)[task.column] for t in trials[:20]]
        mdes = [v.mde for v in verdicts if v.mde is not None]
        mde = f"{np.median(mdes):.2f}" if mdes else "none"
        print(
            f"{task.column:<36}{task.size:>6}{deltas.std():>10.2f}"
            f"{np.mean(deltas < -1.0):>8.1%}{np.mean(ps < 0.05):>8.1%}{mde:>7}"
        )

    print(
        f"\npower: one task degraded by ~2 points in a 15-task run (it replaces the suite's "
        f"first task of its category; the 14 others are the equivalent pairs above, trial by "
        f"trial); {args.power_trials} trials each"
    )
    for how in DEGRADATIONS:
        print(f" {how} degradation, target loss 2 points:")
        for target in power_tasks(args.seed + 1):
            power_line(target, how, 2.0, suite, trials, args.power_trials)
        for target in (t for t in suite if t.category == "Clustering"):
            power_line(target, how, 2.0, suite, trials, args.power_trials)
    if not args.skip_every_task:
        for points in (1.0, 2.0):
            every_task_line(suite, points, args.every_task_trials)


def power_line(
    target: SimTask,
    how: str,
    points: float,
    suite: Sequence[SimTask],
    trials: Sequence[Trial],
    count: int,
) -> None:
    """How often ``target``, degraded to lose ``points``, is flagged in a 15-task run, by the
    new gate and the old one on the same simulated data, at 0.95 and 0.99."""
    extra, _ = calibrate_degradation(target, how, points)
    replaced = next(
        (t for t in suite if t.column == target.column),
        next(t for t in suite if t.category == target.category),
    )
    hits = {key: 0 for key in ("new95", "old95", "new99", "old99", "new90", "old90")}
    drops, value_drops = [], []
    for i in range(count):
        one = trial_results([target], 5000 + i, {target.column: extra}, how)
        drops.append(-one.tests[target.column].delta)
        if target.column in one.values:
            value_drops.append(one.values[target.column][0] - one.values[target.column][1])
        other = trials[i % len(trials)]
        run = Trial(
            {target.column: one.tests[target.column]}
            | {c: r for c, r in other.tests.items() if c != replaced.column},
            {target.column: one.old_p[target.column]}
            | {c: p for c, p in other.old_p.items() if c != replaced.column},
        )
        for level, tag in ((0.95, "95"), (0.99, "99"), (0.90, "90")):
            outcome = outcome_of(run, confidence=level)
            hits["new" + tag] += target.column in outcome.regressed
            hits["old" + tag] += target.column in outcome.old_regressed
    gated = ""
    if value_drops:  # clustering: the calibrated loss is mteb's v-measure, the test's accuracy
        gated = (
            f" v-measure; tested per-document accuracy drop {np.mean(drops):.2f} "
            f"(sd {np.std(drops):.2f})"
        )
        drops = value_drops
    print(
        f"  {target.column:<14}({target.size:>5}) mean drop {np.mean(drops):.2f} "
        f"(sd {np.std(drops):.2f}){gated}: flagged at 0.95 new {hits['new95'] / count:.0%} "
        f"(95% lower bound {binomial_lower(hits['new95'], count):.0%}) vs old "
        f"{hits['old95'] / count:.0%}; at 0.99 new {hits['new99'] / count:.0%} vs old "
        f"{hits['old99'] / count:.0%}; at 0.90 new {hits['new90'] / count:.0%} vs old "
        f"{hits['old90'] / count:.0%}"
    )


def every_task_line(suite: Sequence[SimTask], points: float, count: int) -> None:
    """Every task of the suite degraded (perturbed) to lose about ``points``: how often the run
    fails by each gate, and how many tasks each flags."""
    degraded = {
        t.column: calibrate_degradation(t, "perturbed", points, pilots=3, steps=7)[0] for t in suite
    }
    outcomes = {0.95: [], 0.99: []}
    weighted_drops = []
    for i in range(count):
        trial = trial_results(suite, 9000 + i, degraded, weighted=True)
        assert trial.weighted is not None
        weighted_drops.append(-trial.weighted.delta)
        for level in outcomes:
            outcomes[level].append(outcome_of(trial, confidence=level))
    print(
        f"\nevery task degraded by ~{points:.0f} point(s) (perturbed; weighted average drop "
        f"{np.mean(weighted_drops):.2f}, sd {np.std(weighted_drops):.2f}), {count} trials:"
    )
    for level, rows in outcomes.items():
        for label, fails, flagged in (
            ("new gate", "paired_fails", "regressed"),
            ("new gate + weighted average", "weighted_fails", "weighted_regressed"),
            ("old gate", "old_fails", "old_regressed"),
        ):
            k = sum(getattr(o, fails) for o in rows)
            tasks = np.mean(
                [len([c for c in getattr(o, flagged) if c != "weighted"]) for o in rows]
            )
            weighted = sum("weighted" in getattr(o, flagged) for o in rows)
            extra = (
                f", weighted average flagged {weighted / count:.0%}"
                if fails == "weighted_fails"
                else ""
            )
            print(
                f"  confidence {level:.2f}  {label:<28} run failed {_rate(k, count, 'lower')}; "
                f"tasks flagged per run {tasks:.1f}{extra}"
            )


if __name__ == "__main__":
    main()
