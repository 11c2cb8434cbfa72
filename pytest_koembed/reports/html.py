"""The koembed section of a pytest-html report (``--html``): HTML strings from a run record.

What the page gets, built here from the finished run record (the same one ``--koembed-json``
writes) and the ``koembed summary`` lines the terminal prints:

- :func:`banner_html`: the run's own verdict, first and large. A regression that only the end of
  the run finds (Holm over the tasks, a ``--koembed-fail-under`` average gate, an output that
  could not be written) fails the run while every item row says "passed"; the banner says FAILED
  and why (:func:`run_verdict`).
- :func:`section_html`: the averages (the weighted average and each category, with intervals),
  the verdicts (per task: value, interval, baseline, delta, p, verdict), the run's chart as an
  inline PNG (``data:`` URI, so ``--self-contained-html`` needs nothing else), the history chart
  when there is one (:func:`history_chart_html`, the hook point for ``--koembed-history``), and
  the terminal summary's full text.

Every text goes through :func:`html.escape`; every number through ``reports.text``. Plain module:
no pytest (the hooks are ``plugin.html_report``'s).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.gate.gates import GateResult
from pytest_koembed.gate.verdicts import REGRESSED
from pytest_koembed.protocol.spec import CATEGORIES, Suite
from pytest_koembed.reports import text

PASSED, FAILED, INCOMPLETE = "passed", "FAILED", "INCOMPLETE"
SECTION_ID = "koembed"
BANNER_ID = "koembed-verdict"

_COLOURS = {  # (background, text and border)
    PASSED: ("#e8f5e9", "#2e7d32"),
    FAILED: ("#fdecea", "#c62828"),
    INCOMPLETE: ("#fff8e1", "#e65100"),
}
_STYLE = (
    "<style>"
    "#koembed table{border:1px solid #ccc;margin:4px 0 12px}"
    "#koembed th,#koembed td{border:1px solid #ddd;padding:3px 8px;text-align:left}"
    "#koembed td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "#koembed tr.regressed td{color:#c62828;font-weight:bold}"
    "#koembed pre{white-space:pre;overflow-x:auto;font-size:12px}"
    "#koembed pre .red{color:#c62828}"
    "#koembed img{max-width:100%;height:auto;border:1px solid #eee}"
    "</style>"
)


@dataclass(frozen=True)
class RunVerdict:
    """The run's own verdict: ``passed``, ``FAILED`` or ``INCOMPLETE``, with the reasons.

    ``end_only``: it failed although no task item failed (every row of pytest's table says
    passed), from what only the end of the run decides."""

    status: str
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    end_only: bool = False


def run_verdict(record: Mapping[str, Any], failures: Iterable[str] = ()) -> RunVerdict:
    """What the koembed gate decided for the run ``record``; ``failures``: what else failed it
    at the end (an output that could not be written), one line each."""
    tasks = list(record.get("tasks") or [])
    paired = (record.get("baseline") or {}).get("paired") or {}
    holm_only = set(paired.get("holm_only") or []) if isinstance(paired, Mapping) else set()
    gates = [GateResult(**g) for g in record.get("gates") or []]
    notes = [g.line() for g in gates if g.status == "not checked"]
    block = record.get("baseline") or {}
    notes += [f"no baseline: {note}" for note in block.get("notes") or []]  # passed unchecked
    if block.get("no_cell"):
        notes.append("no baseline cell (passed unchecked): " + ", ".join(block["no_cell"]))
    if not record.get("complete"):
        why = record.get("interrupted") or "not every selected task reported"
        return RunVerdict(INCOMPLETE, (f"the run did not finish: {why}",), tuple(notes))
    item_failures = [f"{t['column']}: {t.get('error')}" for t in tasks if t["status"] != "ok"]
    end_failures = []
    for task in tasks:
        if task.get("verdict") != REGRESSED:
            continue
        said = task.get("verdict_note") or f"{task['column']} regressed"
        if task["column"] in holm_only:
            end_failures.append(f"{said} (found by Holm over the run's tasks; its item passed)")
        else:
            item_failures.append(said)
    end_failures += [g.line() for g in gates if g.failed]
    end_failures += list(failures)
    reasons = tuple(item_failures + end_failures)
    if not reasons:
        return RunVerdict(PASSED, (), tuple(notes))
    return RunVerdict(FAILED, reasons, tuple(notes), end_only=not item_failures)


def banner_html(verdict: RunVerdict) -> str:
    """The verdict as a coloured box: ``koembed gate: FAILED`` and one line per reason."""
    background, colour = _COLOURS[verdict.status]
    head = f"koembed gate: {verdict.status}"
    if verdict.end_only:
        head += " at the end of the run, although every task item passed (exit status 1)"
    lines = [*verdict.reasons, *verdict.notes]
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return (
        f'<div id="{BANNER_ID}" class="koembed-{verdict.status.lower()}" '
        f'data-status="{verdict.status}" style="background:{background};color:{colour};'
        f'border:2px solid {colour};padding:8px 12px;margin:8px 0;font-size:15px">'
        f'<strong style="font-size:18px">{html.escape(head)}</strong>'
        + (f'<ul style="margin:4px 0 0">{items}</ul>' if items else "")
        + "</div>"
    )


def _table(table_id: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table of texts (escaped here); cells that start with a digit, sign or ``±`` are
    right-aligned numbers; a row whose last cell says REGRESSED stands out."""

    def cell(value: str) -> str:
        numeric = value[:1] in "+-±[0123456789" and value not in ("", "-")
        return ('<td class="num">' if numeric else "<td>") + html.escape(value) + "</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        css = ' class="regressed"' if str(row[-1]).startswith(REGRESSED.upper()) else ""
        body.append(f"<tr{css}>" + "".join(cell(str(v)) for v in row) + "</tr>")
    rows_html = "".join(body)
    return (
        f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>'
    )


def _interval(ci: Any) -> str:
    if not isinstance(ci, Mapping) or ci.get("low") is None or ci.get("high") is None:
        return ""
    return text.interval(float(ci["low"]), float(ci["high"]))


def averages_table(record: Mapping[str, Any]) -> str:
    """The weighted average and each category average, with its interval (the leaderboard's
    summary of the run)."""
    weighted = record.get("weighted_average")
    formula = str(record.get("scheme_description") or "").split(":")[0]
    scheme = f"scheme {record.get('scheme')}: {formula}"
    note = record.get("weighted_average_note")
    rows = [
        (
            "weighted average",
            text.value(weighted),
            _interval(record.get("weighted_average_ci")),
            scheme + (f"; {note}" if note else ""),
        )
    ]
    averages = record.get("category_averages") or {}
    cis = record.get("category_average_ci") or {}
    for category in [*CATEGORIES, *(c for c in averages if c not in CATEGORIES)]:
        shown = text.category(record, category)
        if shown is not None:
            rows.append((category, shown[len(category) + 1 :], _interval(cis.get(category)), ""))
    return _table("koembed-averages", ("average", "value", "interval", "note"), rows)


def _delta(task: Mapping[str, Any]) -> str:
    delta, ci = task.get("delta"), task.get("delta_ci")
    if delta is None:
        return ""
    if task.get("p_value") is not None:
        return text.delta_interval(delta, (ci["low"], ci["high"]) if ci else None)
    return text.signed(delta)


def verdicts_table(record: Mapping[str, Any]) -> str:
    """One row per task: value, interval, baseline, delta (paired: with its interval), p
    (Holm), verdict; an errored task says ERROR, a task not run NOT RUN."""
    rows = []
    for task in record.get("tasks") or []:
        ok = task["status"] == "ok"
        baseline = task.get("baseline")
        rows.append(
            (
                task["column"],
                task["category"],
                text.value(task.get("shown")) if ok else "ERROR",
                _interval(task.get("ci")) if ok else "",
                "-" if baseline is None else text.value(baseline),
                _delta(task),
                text.p(task.get("p_adjusted", task.get("p_value"))),
                text.verdict_cell(task) or ("" if ok else "error"),
            )
        )
    rows += [(column, "", "NOT RUN", "", "", "", "", "") for column in record.get("not_run") or []]
    header = ("task", "category", "value", "interval", "baseline", text.DELTA_HEADER)
    return _table("koembed-verdicts", (*header, text.P_HEADER, "verdict"), rows)


def value_cell(score: Mapping[str, Any] | None) -> str:
    """The ``koembed value`` cell of a task's row in pytest-html's table (empty for other rows):
    the value and its interval, as the terminal shows them, or ERROR."""
    if not score:
        return '<td class="col-koembed-value"></td>'
    if score.get("status") != "ok":
        shown = "ERROR"
    else:
        value = score.get("value")
        ci = score.get("ci") if isinstance(value, (int, float)) else None
        spread = text.value_interval(float(value), ci) if ci and value is not None else ""
        shown = f"{text.value(score.get('shown'))} {spread}".strip()
    return f'<td class="col-koembed-value">{html.escape(shown)}</td>'


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...``: an image inside the page itself."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def chart_html(
    png: bytes | None,
    note: str | None = None,
    *,
    element_id: str = "koembed-chart",
    alt: str = "koembed chart of the run",
) -> str:
    """A chart, inline; without one, ``note`` says why (``matplotlib is not installed``)."""
    if png is None:
        return f'<p id="{element_id}-note">{html.escape(note or "no chart")}</p>'
    return f'<img id="{element_id}" alt="{html.escape(alt)}" src="{png_data_uri(png)}"/>'


def history_chart_html(png_path: Path | str | None) -> str:
    """The ``--koembed-history`` chart (a PNG file), inline; a str is why there is none (shown);
    ``""`` without a history (``plugin.html_report.history_chart`` draws it)."""
    if png_path is None:
        return ""
    element_id = "koembed-history-chart"
    if isinstance(png_path, str):
        return "<h3>History</h3>" + chart_html(None, png_path, element_id=element_id)
    try:
        png = Path(png_path).read_bytes()
    except OSError as exc:
        note = f"history chart {png_path}: not read: {exc}"
        image = chart_html(None, note, element_id=element_id)
    else:
        image = chart_html(png, element_id=element_id, alt="koembed history chart")
    return "<h3>History</h3>" + image


def summary_text_html(lines: Iterable[tuple[str, bool]]) -> str:
    """The terminal's ``koembed summary`` lines (text, red) as preformatted text."""
    body = "\n".join(
        f'<span class="red">{html.escape(t)}</span>' if red else html.escape(t) for t, red in lines
    )
    return (
        '<details id="koembed-summary-text"><summary>the koembed summary as the terminal '
        f"prints it</summary><pre>{body}</pre></details>"
    )


def section_html(
    record: Mapping[str, Any],
    lines: Sequence[tuple[str, bool]],
    *,
    chart: bytes | None = None,
    chart_note: str | None = None,
    history_png: Path | str | None = None,
) -> str:
    """The koembed section below pytest-html's summary: averages, verdicts, charts, text."""
    suite = record.get("suite") or {}
    model = record.get("model") or {}
    head = f"koembed: suite {suite.get('name')}, model {model.get('row_name') or model.get('name')}"
    parts = [
        _STYLE,
        f'<div id="{SECTION_ID}">',
        f"<h2>{html.escape(head)}</h2>",
        "<h3>Averages</h3>",
        averages_table(record),
        "<h3>Verdicts</h3>",
        verdicts_table(record),
        "<h3>Chart</h3>",
        chart_html(chart, chart_note),
        history_chart_html(history_png),
        summary_text_html(lines),
        "</div>",
    ]
    return "".join(parts)


def run_chart(record: Mapping[str, Any], suite: Suite) -> tuple[bytes | None, str | None]:
    """The run's chart as PNG bytes (``plot.chart_png``), or None and why not."""
    import importlib.util

    if not record.get("complete"):
        return None, "no chart: the run did not finish"
    if importlib.util.find_spec("matplotlib") is None:
        return None, "no chart: matplotlib is not installed (pip install 'pytest-koembed[plot]')"
    from pytest_koembed.reports.plot import chart_png

    try:
        return chart_png(record, suite), None
    except (KoembedError, OSError, ValueError) as exc:
        return None, f"no chart: {' '.join(str(exc).split())}"
