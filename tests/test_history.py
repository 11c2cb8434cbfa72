"""Checkpoint histories (issue 22), from real runs of the sample suite with the shipped
all-MiniLM-L6-v2: stand-in checkpoints at several max lengths, an unchanged repeat written at
the same time as its original, and dev-split runs; then ``koembed history`` over them.

The runs (one module fixture, ~90 s): step-1000 (max length 3, from a ``checkpoint-1000``
folder with a trainer_state.json) and step-4000 (max length 8, ``--koembed-checkpoint``) at
once; step-2000 (max length 16, ``checkpoint-2000``) twice at once; step-3000 (max length 64)
with the dev runs of step-1000 and step-2000. Max length 16 is the best on the sample suite,
3 clearly worse (the short-text truncation costs STS and clustering).
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from pytest_koembed.cli import main
from pytest_koembed.gate.compare import GateSettings
from pytest_koembed.run import checkpoints
from pytest_koembed.run.history import (
    history_tables,
    plot_history_dir,
    prune_examples,
    read_history,
    why_not_added,
)

pytestmark = pytest.mark.usefixtures("offline")

SAMPLE = "--koembed-suite=sample"


def _run_at_once(run_pytest: Any, cwd: Path, *arg_lists: list[str]) -> list[Any]:
    """Several pytest runs at the same time (threads each waiting on a subprocess)."""
    results: list[Any] = [None] * len(arg_lists)

    def go(i: int) -> None:
        results[i] = run_pytest(cwd, *arg_lists[i])

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(arg_lists))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.fixture(scope="module")
def history(
    tmp_path_factory: pytest.TempPathFactory, run_pytest: Any, minilm_dir: Path, minilm_checkpoint
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("history")
    store = root / "H"
    train = root / "train"
    ck1000 = minilm_checkpoint(train, "checkpoint-1000", global_step=1000)
    ck2000 = minilm_checkpoint(train, "checkpoint-2000", global_step=2000)
    base = [SAMPLE, f"--koembed-history={store}"]
    first = _run_at_once(
        run_pytest,
        root,
        [f"--koembed-model={ck1000}", *base, "--koembed-max-length=3"],
        [f"--koembed-model={minilm_dir}", *base, "--koembed-max-length=8",
         "--koembed-checkpoint=step-4000"],
    )  # fmt: skip
    pair = _run_at_once(
        run_pytest,
        root,
        [f"--koembed-model={ck2000}", *base, "--koembed-max-length=16"],
        [f"--koembed-model={ck2000}", *base, "--koembed-max-length=16"],
    )
    last = _run_at_once(
        run_pytest,
        root,
        [f"--koembed-model={minilm_dir}", *base, "--koembed-max-length=64",
         "--koembed-checkpoint=step-3000"],
        [f"--koembed-model={ck1000}", *base, "--koembed-max-length=3", "--koembed-split=dev"],
        [f"--koembed-model={ck2000}", *base, "--koembed-max-length=16", "--koembed-split=dev"],
    )  # fmt: skip
    runs = [*first, *pair, *last]
    for run in runs:
        assert run.ret == 0, run.stdout[-3000:]
    return {"root": root, "store": store, "runs": runs}


def _tables(store: Path, **kwargs: Any) -> list[Any]:
    return history_tables([str(store)], GateSettings(), **kwargs)


@pytest.fixture(scope="module")
def tables(history) -> list[Any]:
    """The dev and test tables of the history, built once."""
    return _tables(history["store"])


@pytest.fixture(scope="module")
def shown(history, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``koembed history DIR`` as text, and as Markdown with --json and --plot, run once each."""
    out = tmp_path_factory.mktemp("shown")
    text = _main_out(["history", str(history["store"])])
    markdown = _main_out(
        ["history", str(history["store"]), "--markdown", f"--json={out / 'h.json'}",
         f"--plot={out / 'c.png'}"]
    )  # fmt: skip
    return {"text": text, "markdown": markdown, "json": out / "h.json", "png": out / "c.png"}


def _main_out(argv: list[str]) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(argv) == 0
    return buffer.getvalue()


def test_each_complete_run_is_one_pair_and_two_jobs_writing_at_once_lose_nothing(history) -> None:
    """Planted bug it fails on: a run's file keyed by its checkpoint alone (run_name without
    time and random part): the two step-2000 runs written at once leave one file."""
    store: Path = history["store"]
    records = sorted(p.name for p in store.glob("*.json"))
    sidecars = sorted(p.name for p in store.glob("*.examples.parquet"))
    assert len(records) == 7, records
    assert [r.replace(".json", ".examples.parquet") for r in records] == sidecars
    assert not [p.name for p in store.iterdir() if p.name.startswith(".")]  # no temp file left
    runs = read_history(store)
    names = sorted(str(e.checkpoint["name"]) for e in runs if e.kind["split"] == "test")
    assert names == ["checkpoint-1000", "checkpoint-2000", "checkpoint-2000", "step-3000",
                     "step-4000"]  # fmt: skip
    for entry in runs:  # each record and its sidecar whole: the checksum matches
        assert entry.frames() is not None, entry.frames_note
    for run in history["runs"]:
        run.fnmatch_lines([f"history: run of * added as {store}/*.json"])


def test_checkpoint_identity_from_the_path_the_trainer_state_or_the_option(history) -> None:
    """Planted bug it fails on: the step pattern without the ``_`` separator (``step_5000``
    has no step) or the trainer state not read (step-1000's epoch is missing)."""
    blocks = {str(e.checkpoint["name"]): e.checkpoint for e in read_history(history["store"])}
    assert blocks["checkpoint-1000"] == {
        "name": "checkpoint-1000", "step": 1000, "epoch": 0.5, "from": "trainer_state.json"
    }  # fmt: skip
    assert blocks["step-3000"]["step"] == 3000
    assert blocks["step-3000"]["from"] == "--koembed-checkpoint"
    for name, step, epoch in [
        ("checkpoint-5000", 5000, None),
        ("step_5000", 5000, None),
        ("step-5000", 5000, None),
        ("global_step200", 200, None),
        ("epoch-3", None, 3.0),
        ("run-epoch_2-step_800", 800, 2.0),
        ("5000", 5000, None),
        ("final", None, None),
    ]:
        assert checkpoints.parse_name(name) == (step, epoch), name
    block = checkpoints.identify("/runs/exp1/checkpoint-700/")
    assert (block["name"], block["step"], block["from"]) == ("checkpoint-700", 700, "model path")
    assert checkpoints.identify("org/model")["step"] is None


def test_the_table_is_ordered_by_step_with_intervals_and_paired_steps(tables, shown) -> None:
    """Planted bug it fails on: rows ordered by time alone (step-4000 ran first, so it would
    come before step-2000), or the repeat compared with anything but its original."""
    out = shown["text"]
    test_part = out[out.index("split test") :]
    rows = [line.split()[0] for line in test_part.splitlines()[2:7]]
    assert rows == ["checkpoint-1000", "checkpoint-2000", "checkpoint-2000", "step-3000",
                    "step-4000"]  # fmt: skip
    table = tables[1]
    repeat = table.rows[2]
    assert repeat.run.label == "checkpoint-2000 (run 2)"
    assert repeat.vs_previous.weighted["delta"] == 0.0
    assert repeat.vs_previous.regressed == [] and repeat.vs_previous.improved == []
    step2000 = table.rows[1]
    assert step2000.vs_previous.against == "checkpoint-1000"
    assert step2000.vs_previous.weighted["delta"] > 0
    assert table.rows[3].vs_best_so_far.against == "checkpoint-2000"  # the best so far
    line = next(x for x in test_part.splitlines() if x.startswith("checkpoint-2000 (run 2)"))
    assert "+0.00 [+0.00, +0.00]" in line and "±" in line


def test_best_checkpoint_and_tie_group_never_a_false_winner(tables, shown) -> None:
    """Planted bug it fails on: the tie test on the p for a gain instead of a drop
    (step-1000 joins the tie group), or a winner crowned while the tie group holds the repeat."""
    table = tables[1]
    assert table.rows[table.best].run.label == "checkpoint-2000"
    group = [r.run.label for r in table.tie_group]
    assert "checkpoint-2000 (run 2)" in group
    assert "checkpoint-1000" not in group  # max length 3 is told apart from the best
    assert table.rows[0].vs_best["verdict"] == "worse"
    assert table.rows[2].vs_best["p_value"] == 1.0  # the unchanged repeat
    assert table.winner is None
    out = shown["text"]
    assert "observed best: checkpoint-2000 (weighted 21.88); no single best: 4 checkpoints" in out
    assert "is a post-selection" in out


def test_json_and_markdown_carry_the_same_numbers(history, shown) -> None:
    """Planted bug it fails on: JSON values taken from another row than the text's, or the
    Markdown without the tie group in bold."""
    md = shown["markdown"]
    data = json.loads(shown["json"].read_text(encoding="utf-8"))
    dev, test = data["tables"]
    assert (dev["split"], test["split"]) == ("dev", "test")
    assert test["best"] == "checkpoint-2000" and test["winner"] is None
    assert "checkpoint-2000 (run 2)" in test["tie_group"]
    records = {e.path.name: e.record for e in read_history(history["store"])}
    for row in test["rows"]:
        record = records[Path(row["record"]).name]
        assert row["values"]["weighted"]["value"] == record["weighted_average"]
        assert row["values"]["weighted"]["ci"] == record["weighted_average_ci"]
    assert "| **checkpoint-2000 (run 2)** |" in md
    assert "| checkpoint-1000 |" in md  # not in the tie group: not bold
    assert "### koembed history: suite sample" in md


def test_the_trend_chart(history, tables, shown, tmp_path: Path) -> None:
    """Planted bug it fails on: the best checkpoint's marker or a panel's band not drawn."""
    from pytest_koembed.reports.history_plot import BAND_GID, BEST_GID, build_history_figure

    path = plot_history_dir(history["store"], tmp_path / "trend.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = tables[1]
    fig = build_history_figure(table)
    gids = [a.get_gid() for ax in fig.axes for a in ax.get_children()]
    assert gids.count(BAND_GID) == len(table.columns)  # 6 categories and the weighted average
    assert gids.count(BEST_GID) == len(table.columns)
    assert shown["png"].stat().st_size > 10_000


def test_retention_keeps_the_last_runs_and_the_best(history, tmp_path: Path) -> None:
    """Planted bug it fails on: the best run's sidecar pruned with the old ones (or the
    records deleted with them)."""
    copy = tmp_path / "H"
    shutil.copytree(history["store"], copy)
    deleted = {p.name for p in prune_examples(copy, keep=1)}
    runs = read_history(copy)
    assert len(runs) == 7  # the records stay
    test_runs = sorted((e for e in runs if e.kind["split"] == "test"), key=lambda e: e.started)
    with_sidecar = [e for e in test_runs if e.frames() is not None]
    best = max(test_runs, key=lambda e: e.record["weighted_average"])
    assert best in with_sidecar and test_runs[-1] in with_sidecar  # the best, the newest
    assert len(with_sidecar) == 2
    pruned = {e.path.stem + ".examples.parquet" for e in test_runs if e not in with_sidecar}
    assert pruned <= deleted and len(pruned) == 3
    table = _tables(copy)[1]
    untested = [r for r in table.rows if r.run.frames is None]
    assert untested and all(r.in_tie_group for r in untested)  # cannot be told apart: kept in


def test_an_incomplete_run_is_not_added(history, run_pytest, minilm_dir: Path) -> None:
    """Planted bug it fails on: why_not_added without the selection check (a -k run added)."""
    store: Path = history["store"]
    before = sorted(store.iterdir())
    partial = run_pytest(
        history["root"], f"--koembed-model={minilm_dir}", SAMPLE, f"--koembed-history={store}",
        "-k", "reranking",
    )  # fmt: skip
    assert partial.ret == 0, partial.stdout[-2000:]
    partial.fnmatch_lines(
        [f"history: not added to {store}: only 1 of 6 tasks of the suite ran (-k / --deselect*"]
    )
    assert sorted(store.iterdir()) == before
    record = read_history(store)[0].record
    assert why_not_added(record) is None
    assert "not complete" in str(why_not_added({**record, "complete": False}))
    assert "koembed merge" in str(why_not_added({**record, "shard": {"index": 1, "count": 2}}))
    failed = {**record, "task_counts": {**record["task_counts"], "failed": 1}}
    assert why_not_added(failed) == "1 task(s) failed"


def _variant(source: Path, folder: Path, name: str, change: Any) -> Path:
    record = json.loads(source.read_text(encoding="utf-8"))
    change(record)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(source.with_name(source.stem + ".examples.parquet"), folder)
    record["examples"]["file"] = source.stem + ".examples.parquet"
    (folder / name).write_text(json.dumps(record), encoding="utf-8")
    return folder / name


def _hub_source(record: dict[str, Any]) -> None:
    for task in record["tasks"]:
        task["dataset_path"], task["source"] = "org/data", "hub:org/data@abc"


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("scheme", lambda r: r.update(scheme="ko-leaderboard-v2")),
        ("interval level", lambda r: r["intervals"].update(level=0.9)),
        ("data source", _hub_source),
        ("suites", lambda r: r["suite"].update(name="other")),
    ],
)
def test_runs_that_do_not_compare_are_refused_in_one_line(
    history, tmp_path: Path, capsys, what: str, change: Any
) -> None:
    """Planted bug it fails on: refuse_mixed without the check of that field (the table
    would mix numbers that do not compare)."""
    source = sorted(history["store"].glob("*step-3000*.json"))[0]
    odd = _variant(source, tmp_path, "odd.json", change)
    assert main(["history", str(source), str(odd)]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and what in err[0], err
    if what == "suites":  # kept apart on request
        assert main(["history", str(source), str(odd), "--suite", "sample"]) == 0
        assert "1 run(s) of other suites left out" in capsys.readouterr().out


def test_many_checkpoints_on_test_splits_say_so_and_dev_selects(
    history, tables, shown, capsys
) -> None:
    """Planted bug it fails on: the overfitting line shown for 3 runs or never, or the dev
    table's choice not carried to the test table (the selection made on test)."""
    dev, test = tables
    assert dev.split == "dev" and [r.run.record["tasks"][0]["split"] for r in dev.rows] == [
        "dev",
        "dev",
    ]
    assert len(dev.rows[0].run.record["tasks"]) == 4  # the four tasks with a dev split
    chosen = dev.rows[dev.best].run.checkpoint["name"]
    assert test.selected_on_dev is not None and test.selected_on_dev.startswith(chosen)
    out = shown["text"]
    assert f"selected on the dev split: {test.selected_on_dev}; reported on test" in out
    records = sorted(history["store"].glob("*.json"))
    three = [p for p in records if json.loads(p.read_text())["split"] == "test"][:3]
    assert main(["history", *map(str, three)]) == 0  # 3 test runs
    small = capsys.readouterr().out
    assert "overfits to the benchmark" not in small
    from dataclasses import replace

    from pytest_koembed.reports.history_text import render_text

    alone = replace(test, selected_on_dev=None)  # test runs only: selected on test
    assert "selecting the best of 5 checkpoints on them overfits" in render_text(alone)


def test_dev_split_refused_where_the_suite_names_none(run_pytest, tmp_path: Path, minilm_dir):
    """Planted bug it fails on: dev_suite keeping the tasks without a dev split."""
    from pytest_koembed.protocol.spec import dev_suite
    from pytest_koembed.protocol.suite import load_suite

    sample = dev_suite(load_suite("sample"))
    assert [(t.column, t.split) for t in sample.tasks] == [
        ("sample-sts", "dev"), ("sample-pairs", "dev"), ("sample-clustering", "dev"),
        ("sample-retrieval", "dev"),
    ]  # fmt: skip
    run = run_pytest(
        tmp_path, f"--koembed-model={minilm_dir}", "--koembed-suite=ko-leaderboard-v1",
        "--koembed-split=dev",
    )  # fmt: skip
    assert run.ret == 4
    run.fnmatch_lines(["*--koembed-split=dev: suite 'ko-leaderboard-v1' names no development*"])
    bad = run_pytest(
        tmp_path, f"--koembed-model={minilm_dir}", SAMPLE, "--koembed-history-keep-examples=0"
    )
    assert bad.ret == 4
    bad.fnmatch_lines(["*--koembed-history-keep-examples*positive whole number*"])
