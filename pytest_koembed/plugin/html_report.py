"""pytest-html glue: the koembed section of ``--html`` reports (the content is ``reports.html``'s).

Registered by ``pytest_configure`` only when pytest-html is installed and ``--html`` is given,
on the controller (xdist workers write no page). Order: pytest-html writes the page in its own
``pytest_sessionfinish`` (``trylast``), after the controller's plain one has applied Holm and the
gates, so the page has the run's final verdict; ``KoembedController.finished`` is checked here,
and a page written before it says so rather than showing a verdict that was not reached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_koembed.plugin.controller import KoembedController

PLUGIN_NAME = "koembed-html"


def wanted(config: pytest.Config) -> bool:
    """pytest-html is installed (``-p no:html`` not given) and ``--html`` asks for a page."""
    return bool(config.getoption("htmlpath", None)) and config.pluginmanager.hasplugin("html")


def history_chart(controller: KoembedController) -> Path | str | None:
    """With ``--koembed-history DIR``: the history chart of DIR (this run's split, this run
    included once it was added), drawn to a temporary PNG for ``reports.html.history_chart_html``;
    a reason (str) when it cannot be drawn; None without a history."""
    import tempfile

    from pytest_koembed.errors import KoembedError
    from pytest_koembed.gate.compare import GateSettings
    from pytest_koembed.reports.history_plot import plot_history
    from pytest_koembed.run.history import history_tables

    state = controller.state
    if state.history_dir is None:
        return None
    try:
        tables = history_tables([str(state.history_dir)], GateSettings(), suite=state.suite.name)
        table = next((t for t in tables if t.split == state.split), None)
        if table is None:
            return f"no run of the {state.split} split in the history {state.history_dir}"
        out = Path(tempfile.mkdtemp(prefix="koembed-html-")) / "history.png"
        return plot_history(table, out)
    except (KoembedError, ImportError) as exc:
        return f"history chart not drawn: {exc}"


class KoembedHtmlReport:
    """pytest-html's hooks (``pytest_html.hooks``): the verdict banner and the koembed section in
    the summary, and a ``koembed value`` column in the results table."""

    def __init__(self, controller: KoembedController) -> None:
        self.controller = controller

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str], session: pytest.Session
    ) -> None:
        from pytest_koembed.reports import html

        controller = self.controller
        if controller.config.option.collectonly:
            return
        if not controller.finished:  # see the module docstring
            verdict = html.RunVerdict(
                html.INCOMPLETE,
                ("this page was written before the koembed end of the run judged it: see the "
                 "terminal's koembed summary for the run's verdict",),
            )  # fmt: skip
            prefix.insert(0, html.banner_html(verdict))
            return
        state = controller.state
        record = controller.record(complete=state.complete)
        lines, _ = controller.summary()
        failures = [line.text for line in lines if line.red]
        prefix.insert(0, html.banner_html(html.run_verdict(record, failures)))
        chart, note = html.run_chart(record, state.suite)
        postfix.append(
            html.section_html(
                record,
                [(line.text, line.red) for line in lines],
                chart=chart,
                chart_note=note,
                history_png=history_chart(controller),
            )
        )

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        cells.insert(2, "<th>koembed value</th>")

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_row(self, report: Any, cells: list[str]) -> None:
        from pytest_koembed.reports import html

        cells.insert(2, html.value_cell(getattr(report, "koembed_score", None)))
