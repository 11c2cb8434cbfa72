"""Every report a run asks for (rows, model-index, model card, mteb results folder, chart), written
in one call; kept apart from ``publish`` (what each report contains) so that the chart, which
reads publish's tables, is imported only here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.spec import Suite
from pytest_koembed.reports.publish import (
    atomic_write_text,
    merge_model_card,
    model_index_yaml,
    ok_tasks,
    record_rows,
    write_results_dir,
)

# ---------------------------------------------------------------------------------------------
# What the plugin calls
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportOptions:
    """The report options of one run (``None``: not asked for). ``row`` may be ``"-"``."""

    row: str | None = None
    model_index: Path | None = None
    model_card: Path | None = None
    results_dir: Path | None = None
    plot: Path | None = None

    def wanted(self) -> bool:
        return any(
            v is not None
            for v in (self.row, self.model_index, self.model_card, self.results_dir, self.plot)
        )

    def check(self) -> None:
        """Fail early (before a long run) on what cannot work; one-line :class:`KoembedError`."""
        if self.model_card is not None and not self.model_card.is_file():
            raise KoembedError(
                f"--koembed-model-card {self.model_card}: no such file (to start a new card, "
                "write the model-index with --koembed-model-index)"
            )
        if self.plot is not None:
            from pytest_koembed.reports.plot import check_matplotlib

            check_matplotlib()


@dataclass
class ReportOutcome:
    """What :func:`write_reports` did: lines for the terminal summary, and the rows text when
    they go to the terminal (``--koembed-row -``)."""

    lines: list[str]
    rows_text: str | None = None
    failed: bool = False


def write_reports(record: Mapping[str, Any], suite: Suite, options: ReportOptions) -> ReportOutcome:
    """Write every report ``options`` asks for; one failing report does not stop the others."""
    outcome = ReportOutcome(lines=[])
    if not ok_tasks(record):
        outcome.lines.append("no task was scored: no reports written")
        return outcome

    def attempt(option: str, target: Any, action: Any) -> None:
        try:
            message = action()
        except (KoembedError, OSError) as exc:
            reason = " ".join(str(exc).split())
            outcome.lines.append(f"{option} {target}: not written: {reason}")
            outcome.failed = True
        else:
            if message:
                outcome.lines.append(message)

    if options.row is not None:

        def rows() -> str | None:
            text = record_rows(record, suite)
            if options.row == "-":
                outcome.rows_text = text
                return None
            atomic_write_text(Path(str(options.row)), text)
            return f"leaderboard rows written to {options.row}"

        attempt("--koembed-row", options.row, rows)
    if options.model_index is not None:
        path = options.model_index

        def index() -> str:
            atomic_write_text(path, model_index_yaml(record))
            return f"model-index written to {path}"

        attempt("--koembed-model-index", path, index)
    if options.model_card is not None:
        card = options.model_card

        def merge() -> str:
            with card.open(encoding="utf-8", newline="") as f:
                text = f.read()
            merged, notes = merge_model_card(text, record)
            atomic_write_text(card, merged)
            return "; ".join([f"model-index merged into {card}", *notes])

        attempt("--koembed-model-card", card, merge)
    if options.results_dir is not None:
        directory = options.results_dir

        def results() -> str:
            written = write_results_dir(record, directory)
            return f"{len(written)} mteb result files written to {written[0].parent}"

        attempt("--koembed-results-dir", directory, results)
    if options.plot is not None:
        plot_path = options.plot

        def chart() -> str:
            from pytest_koembed.reports.plot import plot_run

            plot_run(record, suite, plot_path)
            return f"chart written to {plot_path}"

        attempt("--koembed-plot", plot_path, chart)
    return outcome
