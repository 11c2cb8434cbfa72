"""``koembed history DIR|RECORD...``: the checkpoints of a training run, with their intervals,
the paired steps between them, the best checkpoint and its tie group (``run.history`` reads
the runs, ``gate.history`` compares them, ``reports.history_text`` / ``history_plot`` show
them). Exit status 0, 4 on bad input (one line)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pytest_koembed.cli.flags import add_local, add_setting
from pytest_koembed.errors import KoembedError
from pytest_koembed.options import EXIT_OK, Option

TASKS = Option("tasks", "one column per task instead of per category", kind="flag")
MARKDOWN = Option(
    "markdown", "print the table as GitHub Markdown (a pull-request comment)", kind="flag"
)
JSON = Option("json", "write the table as JSON (the same numbers) to PATH", metavar="PATH")
PLOT = Option(
    "plot",
    "draw the trend chart to PATH.png: a panel per column, intervals as bands, the best marked",
    metavar="PATH.png",
)
SUITE = Option("suite", "show the runs of this suite (a history may hold several)", metavar="NAME")
ADD = Option(
    "add",
    "first add this complete run record (and its sidecar; a koembed merge output too) to the "
    "history DIR, the first source; repeatable",
    metavar="RECORD",
    kind="append",
)


def _add(args: argparse.Namespace) -> None:
    from pytest_koembed.run.history import DEFAULT_KEEP_EXAMPLES, add_record_file

    target = Path(args.sources[0]).expanduser()
    if target.exists() and not target.is_dir():
        raise KoembedError(f"--add: {target} is not a history directory; name the DIR first")
    keep = args.koembed_history_keep_examples or DEFAULT_KEEP_EXAMPLES
    for record in args.add:
        added = add_record_file(target, Path(record).expanduser(), keep)
        sys.stderr.write(f"koembed history: added {record} as {added.path.name}\n")


def _cmd_history(args: argparse.Namespace) -> int:
    from pytest_koembed.gate.compare import GateSettings, check_confidence, check_min_effect
    from pytest_koembed.reports.history_text import history_json, render_markdown, render_text
    from pytest_koembed.run.history import history_tables

    settings = GateSettings(
        check_confidence(args.koembed_confidence, "--confidence"),
        check_min_effect(args.koembed_min_effect, "--min-effect"),
    )
    if args.add:
        _add(args)
    tables = history_tables(args.sources, settings, tasks=args.tasks, suite=args.suite)
    render = render_markdown if args.markdown else render_text
    sys.stdout.write("\n".join(render(table) for table in tables))
    if args.json:
        from pytest_koembed.records import write_json

        data: dict[str, Any] = {"tables": [history_json(t) for t in tables]}
        write_json(data, Path(args.json))
    if args.plot:
        from pytest_koembed.reports.history_plot import plot_history

        plot_history(tables[0], args.plot)
    return EXIT_OK


def register_history(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "history",
        help="the checkpoints of a history (--koembed-history DIR) or of run records, compared",
        description=(
            "A table of checkpoints (rows, by step then time) by category averages and the "
            "weighted average (--tasks: by task), each with its interval; each checkpoint's "
            "paired delta against the previous one and the best so far (the gate's one-sided "
            "rule, Holm over the tasks), and the best checkpoint with its tie group (a one-sided "
            "paired test of the weighted average, Holm over the checkpoints). Runs of different "
            "suites, schemes, data sources or interval levels are refused (exit status 4)."
        ),
    )
    p.add_argument("sources", nargs="+", metavar="DIR|RECORD", help="history dirs or run records")
    add_local(p, TASKS)
    add_local(p, MARKDOWN)
    add_local(p, JSON)
    add_local(p, PLOT)
    add_local(p, SUITE)
    add_local(p, ADD)
    add_setting(p, "history-keep-examples", note="applies with --add")
    add_setting(p, "confidence", note="here of the paired tests and the tie group")
    add_setting(p, "min-effect")
    p.set_defaults(func=_cmd_history)
