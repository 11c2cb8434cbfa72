"""``koembed compare`` as text: the task table, the averages, the legend, Markdown and the chart
of the deltas (the comparison itself is ``gate.compare``'s; every number goes through
:mod:`reports.text`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pytest_koembed.errors import KoembedError
from pytest_koembed.gate.compare import (
    Comparison,
    TaskComparison,
)
from pytest_koembed.reports import text


def _verdict_cell(t: TaskComparison) -> str:
    return text.verdict_cell(
        {"verdict": t.verdict, "cannot_fail": t.cannot_fail, "p_value": t.p_value}
    )


def comparison_table(comparison: Comparison) -> pd.DataFrame:
    columns = ["task", "base", "new", text.DELTA_HEADER, text.P_HEADER, "MDE", "verdict"]
    rows = [
        {
            "task": t.column,
            "base": text.value(t.base),
            "new": text.value(t.new),
            text.DELTA_HEADER: text.delta_interval(t.delta, t.delta_ci),
            text.P_HEADER: text.p(t.p_adjusted),
            "MDE": text.mde(t.mde, t.cannot_fail) if t.p_value is not None else "",
            "verdict": _verdict_cell(t),
        }
        for t in comparison.tasks
    ]
    return pd.DataFrame(rows, columns=columns)


def _paired_gate(comparison: Comparison) -> str:
    settings = comparison.settings
    return text.paired_gate(settings.confidence, settings.min_effect, len(comparison.paired))


def cannot_fail_lines(tasks: Sequence[TaskComparison]) -> list[str]:
    return [f"  {t.column}: {t.cannot_fail}" for t in tasks if t.cannot_fail]


def _average_text(name: str, avg: Mapping[str, Any]) -> str:
    b, n, ci = avg.get("base"), avg.get("new"), avg.get("delta_ci")
    if b is None or n is None:
        return f"{name} n/a"
    interval = (ci["low"], ci["high"]) if ci else None
    return f"{name} {text.value(b)} -> {text.value(n)} ({text.delta_interval(n - b, interval)})"


def _average_lines(comparison: Comparison) -> list[str]:
    avg = comparison.averages
    cats = [_average_text(c, a) for c, a in avg.get("categories", {}).items()]
    weighted = avg.get("weighted_average", {})
    lines = ["category averages (paired tasks): " + " | ".join(cats)] if cats else []
    overall = _average_text("weighted average", weighted)
    if weighted.get("base") is None:
        overall += " (needs every task of the suite paired)"
    return [*lines, overall]


def render_text(comparison: Comparison) -> str:
    table = comparison_table(comparison)
    cells = table.astype(str)
    widths = {c: max([len(c), *cells[c].str.len()]) for c in cells.columns}
    left = ("task", "verdict", text.DELTA_HEADER)

    def line(values: Mapping[str, str]) -> str:
        return "  ".join(
            values[c].ljust(widths[c]) if c in left else values[c].rjust(widths[c])
            for c in cells.columns
        ).rstrip()

    lines = [line({c: c for c in cells.columns})]
    lines += [line(r) for r in cells.to_dict(orient="records")]
    lines += [f"  {note}" for note in comparison.notes]
    lines += _average_lines(comparison)
    lines.append(
        f"paired gate: {_paired_gate(comparison)}; "
        f"p is Holm-adjusted, intervals are {text.level(comparison.settings.confidence)} paired "
        "bootstrap"
    )
    lines.append(text.legend(comparison.settings.confidence))
    lines += cannot_fail_lines(comparison.tasks)
    lines.append(f"verdict: {comparison.verdict}")
    return "\n".join(lines) + "\n"


def render_markdown(comparison: Comparison) -> str:
    table = comparison_table(comparison)
    head = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join(["---", "---:", "---:", "---", "---:", "---:", "---"]) + "|"
    rows = []
    for r in table.to_dict(orient="records"):
        cells = [str(v).replace("|", "\\|") for v in r.values()]
        if r["verdict"] == "REGRESSED":
            cells[-1] = f"**{cells[-1]}**"
        rows.append("| " + " | ".join(cells) + " |")
    status = "❌" if comparison.regressed else "✅"
    lines = [
        f"### koembed compare: {status} {comparison.verdict}",
        "",
        head,
        rule,
        *rows,
        "",
        *[f"{line}  " for line in _average_lines(comparison)],
        "",
        f"Paired gate: {_paired_gate(comparison)}. "
        f"`p` is Holm-adjusted; intervals are {text.level(comparison.settings.confidence)} paired "
        "bootstrap intervals of new - base.",
        "",
        text.legend(comparison.settings.confidence) + ".",
    ]
    lines += [f"- {line.strip()}" for line in cannot_fail_lines(comparison.tasks)]
    lines += [f"- {note}" for note in comparison.notes]
    return "\n".join(lines) + "\n"


def plot_comparison(comparison: Comparison, path: str | Path) -> Path:
    """Per-task deltas with their paired intervals (error bars), a zero line, regressions red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = comparison.paired
    if not tasks:
        raise KoembedError("--plot: no task was paired, nothing to draw")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(tasks) + 1.5))
    ys = list(range(len(tasks)))[::-1]
    for y, t in zip(ys, tasks, strict=True):
        assert t.delta is not None and t.delta_ci is not None
        color = {"regressed": "tab:red", "improved": "tab:green"}.get(t.verdict, "tab:gray")
        ax.errorbar(
            t.delta,
            y,
            xerr=[[t.delta - t.delta_ci[0]], [t.delta_ci[1] - t.delta]],
            fmt="o",
            color=color,
            capsize=3,
        )
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(ys, [t.column for t in tasks])
    ax.set_xlabel(
        f"new - base (points), {text.level(comparison.settings.confidence)} paired interval"
    )
    ax.set_title(
        f"koembed compare: {Path(comparison.new_path).name} vs {Path(comparison.base_path).name}"
    )
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return target
