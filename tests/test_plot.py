"""``--koembed-plot``: a valid PNG of sensible size, and the numbers behind it."""

from __future__ import annotations

import statistics
import struct
from pathlib import Path
from typing import Any

import pytest
from koembed_sample_reports import SampleReports, sample_reports

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.leaderboards import load_leaderboard
from pytest_koembed.protocol.scoring import round_half_up
from pytest_koembed.protocol.suite import load_suite
from pytest_koembed.reports.plot import chart_data, check_matplotlib, plot_run

pytestmark = pytest.mark.usefixtures("offline")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, "not a PNG file"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_sensible_png(path: Path) -> None:
    width, height = png_size(path)
    assert 1000 <= width <= 2500, width
    assert 400 <= height <= 2000, height
    assert 20_000 < path.stat().st_size < 1_000_000


def test_plugin_chart_is_a_sensible_png(run_pytest: Any) -> None:
    reports: SampleReports = sample_reports(run_pytest)
    assert reports.ret == 0, reports.stdout
    assert_sensible_png(reports.plot)


def _v1_record() -> dict[str, Any]:
    """KURE-v1's published values, one point lower, compared with the published row."""
    suite = load_suite("ko-leaderboard-v1")
    published = load_leaderboard("ko-leaderboard-v1").rows["nlpai-lab/KURE-v1"]
    tasks = []
    for spec in suite.tasks:
        value = published[spec.column] - 1.0
        tasks.append(
            {
                "column": spec.column,
                "task": spec.task,
                "category": spec.category,
                "status": "ok",
                "value": value,
                "shown": round_half_up(value, 2),
                "baseline": published[spec.column],
                "baseline_source": "ko-leaderboard-v1 row 'nlpai-lab/KURE-v1'",
                "verdict": "pass",
            }
        )
    tasks[-1]["status"], tasks[-1]["value"] = "error", None  # one task failed
    return {
        "model": {"name": "nlpai-lab/KURE-v1", "row_name": "nlpai-lab/KURE-v1"},
        "suite": {"name": suite.name},
        "scheme": suite.scheme,
        "tasks": tasks,
        "baseline": {"option": "auto", "sources": ["ko-leaderboard-v1 row 'nlpai-lab/KURE-v1'"]},
    }


def test_chart_numbers_against_baseline_and_leaderboard() -> None:
    suite = load_suite("ko-leaderboard-v1")
    data = chart_data(_v1_record(), suite)
    board = load_leaderboard("ko-leaderboard-v1")
    column = [values["KLUE-STS"] for values in board.rows.values()]
    klue = data.tasks[0]
    assert klue.label == "KLUE-STS"
    assert klue.best == max(column) and klue.median == statistics.median(column)
    assert klue.best_name == "Alibaba-NLP/gte-Qwen2-7B-instruct-fp16"
    assert klue.baseline == board.rows["nlpai-lab/KURE-v1"]["KLUE-STS"]
    assert klue.value == pytest.approx(klue.baseline - 1.0)
    labels = [r.label for r in data.averages]
    assert labels[0] == "Weighted average" and labels[1:] == [
        "STS average", "NLI average", "Clustering average", "Retrieval average"
    ]  # fmt: skip
    weighted = data.averages[0]
    assert weighted.value is None  # a task failed: no weighted average
    assert weighted.baseline == 62.74 and weighted.best == 66.74
    assert data.tasks[-1].value is None
    assert data.baseline_label == "baseline: ko-leaderboard-v1 row 'nlpai-lab/KURE-v1'"
    assert data.leaderboard == "ko-leaderboard-v1"
    assert "14 of 15 tasks scored" in data.subtitle


def test_chart_without_baseline_or_leaderboard(tmp_path: Path) -> None:
    suite = load_suite("sample")
    record = {
        "model": {"row_name": "m"},
        "scheme": "ko-leaderboard-v1",
        "tasks": [
            {"column": t.column, "category": t.category, "status": "ok", "value": 50.0 + i}
            for i, t in enumerate(suite.tasks)
        ],
    }
    data = chart_data(record, suite)
    assert data.leaderboard is None and data.baseline_label is None
    assert all(r.best is None and r.baseline is None for r in data.tasks)
    assert "no published leaderboard" in data.notes[0]
    path = plot_run(record, suite, tmp_path / "sub" / "chart.png")
    width, height = png_size(path)
    assert width >= 1000 and height >= 400


def test_v1_chart_is_a_sensible_png(tmp_path: Path) -> None:
    path = plot_run(_v1_record(), load_suite("ko-leaderboard-v1"), tmp_path / "chart.png")
    assert_sensible_png(path)


def test_missing_matplotlib_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name)
    )
    with pytest.raises(KoembedError, match=r"needs matplotlib.*pytest-koembed\[plot\]") as info:
        check_matplotlib()
    assert "\n" not in str(info.value)


def _ci_artists(fig: Any) -> list[list[Any]]:
    """Per axes (averages, tasks): the artists drawing the run's intervals."""
    from pytest_koembed.reports.plot import CI_GID

    return [[a for a in [*ax.collections, *ax.lines] if a.get_gid() == CI_GID] for ax in fig.axes]


def test_chart_draws_the_runs_intervals_as_error_bars() -> None:
    """Every task and every complete average with an interval gets its error bar, at its bounds;
    a failed task and the averages it leaves incomplete get none."""
    from pytest_koembed.reports.plot import build_figure

    suite = load_suite("ko-leaderboard-v1")
    record = _v1_record()
    for task in record["tasks"]:
        if task["status"] == "ok":
            task["ci"] = {"level": 0.9, "low": task["value"] - 1.5, "high": task["value"] + 2.0}
    record["category_average_ci"] = {
        "STS": {"level": 0.9, "low": 70.0, "high": 90.0},
        "Retrieval": None,  # incomplete: the failed task is a retrieval task
    }
    record["weighted_average_ci"] = None
    data = chart_data(record, suite)
    assert data.ci_level == 0.9
    klue = data.tasks[0]
    assert (klue.ci_low, klue.ci_high) == (klue.value - 1.5, klue.value + 2.0)
    assert data.tasks[-1].ci_low is None  # failed
    assert [(r.ci_low, r.ci_high) for r in data.averages[:2]] == [(None, None), (70.0, 90.0)]

    averages, tasks = _ci_artists(build_figure(record, suite))
    bars = [a for a in tasks if a.__class__.__name__ == "LineCollection"]
    assert len(bars) == 14  # 15 tasks, one failed
    segments = [seg for bar in bars for seg in bar.get_segments()]
    assert sorted((s[0][0], s[1][0]) for s in segments) == sorted(
        (r.ci_low, r.ci_high) for r in data.tasks if r.ci_low is not None
    )
    assert len([a for a in averages if a.__class__.__name__ == "LineCollection"]) == 1  # STS
    labels = [t.get_text() for t in build_figure(record, suite).legends[0].get_texts()]
    assert "90% interval" in labels


def test_chart_without_intervals_draws_no_error_bars() -> None:
    from pytest_koembed.reports.plot import build_figure

    fig = build_figure(_v1_record(), load_suite("ko-leaderboard-v1"))
    assert _ci_artists(fig) == [[], []]
    assert not any("interval" in t.get_text() for t in fig.legends[0].get_texts())
