"""The ``koembed`` console script.

Subcommands (``koembed SUBCOMMAND --help``):

- ``leaderboard``: print the leaderboard tables computed from the shipped baselines, optionally
  with runs (``--add RUN.json``) ranked among them.
- ``rescore``: leaderboard rows from a folder of mteb result files (mteb 1.x or 2.x), scored by
  the suite's rules (``pytest_koembed.reports.rescore``).
- ``mirror``: write a suite's task data in the local layout, for air-gapped runs
  (``pytest_koembed.data.mirror``).
- ``compare``: two saved runs task by task, paired test and Holm gate, without a model
  (``pytest_koembed.gate.compare``).
- ``merge``: the run records of a run's shards (``--koembed-shard K/N``) as one record
  (``pytest_koembed.run.merge``).
- ``gate``: the gate and reports of a pytest run, applied to a saved run record, without a model
  (``pytest_koembed.run.finish``).
- ``cache``: size per model key of an embedding cache (``--koembed-cache``), or clear it
  (``pytest_koembed.models.cache``).

To add a subcommand, write a ``_register_NAME(subparsers)`` function that adds its parser and sets
``func`` (a callable taking the parsed namespace and returning the exit status), and append it to
:data:`SUBCOMMANDS`. A :class:`KoembedError` raised by ``func`` is printed as one line on stderr
with exit status 2; so is any usage error.

This module imports neither pytest nor torch nor mteb.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from pytest_koembed._version import __version__
from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.scoring import SCHEMES
from pytest_koembed.protocol.suite import load_suite, shipped_suites
from pytest_koembed.protocol.tables import (
    TABLE_CHOICES,
    entry_from_run,
    leaderboard_tables,
    render_tables,
)
from pytest_koembed.records import read_run_record, run_suite_name

PROG = "koembed"
USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


Subparsers = Any  # argparse's _SubParsersAction, which is private


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    records = [(path, read_run_record(path)) for path in args.add]
    suite_name = args.suite
    if suite_name is None and args.baseline:
        from pytest_koembed.protocol.leaderboards import load_leaderboard

        suite_name = load_leaderboard(args.baseline).suite
    if suite_name is None and records:
        suite_name = run_suite_name(records[0][1])
    suite = load_suite(suite_name or "ko-leaderboard-v1")
    runs = [
        entry_from_run(record, suite, source=f"run record {path!r}") for path, record in records
    ]
    tables = leaderboard_tables(
        suite, runs, baseline=args.baseline, table=args.table, scheme=args.scheme
    )
    sys.stdout.write(render_tables(tables))
    return 0


def _register_leaderboard(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "leaderboard",
        help="print the leaderboard tables (published baselines, plus runs with --add)",
        description=(
            "Print a suite's leaderboard tables, computed from the published per-task values "
            "shipped in baselines/ (averages, weighted average and rank are recomputed), in the "
            "leaderboard's own Markdown layout. --add puts runs in as extra ranked rows."
        ),
    )
    p.add_argument(
        "--suite",
        default=None,
        help=(
            "suite name or TOML path (shipped: "
            f"{', '.join(shipped_suites())}); default: the --add run's suite, else "
            "ko-leaderboard-v1"
        ),
    )
    p.add_argument(
        "--table",
        default="all",
        choices=TABLE_CHOICES,
        help="which table to print (default: all)",
    )
    p.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="RUN.json",
        help="a run record written by --koembed-json, ranked as an extra row (repeatable)",
    )
    p.add_argument(
        "--baseline",
        default=None,
        metavar="NAME",
        help=(
            "only this baseline leaderboard (e.g. ko-leaderboard-v2-sparse, or a CSV path); "
            "default: every shipped baseline of the suite"
        ),
    )
    p.add_argument(
        "--scheme",
        default=None,
        choices=list(SCHEMES),
        help="weighting scheme for the overall table (default: the suite's)",
    )
    p.set_defaults(func=_cmd_leaderboard)


def _register_rescore(subparsers: Subparsers) -> None:
    from pytest_koembed.reports.rescore import register

    register(subparsers)


def _register_mirror(subparsers: Subparsers) -> None:
    from pytest_koembed.data.mirror import register

    register(subparsers)


def _register_compare(subparsers: Subparsers) -> None:
    from pytest_koembed.reports.compare_text import register

    register(subparsers)


def _register_merge(subparsers: Subparsers) -> None:
    from pytest_koembed.run.merge import register

    register(subparsers)


def _register_gate(subparsers: Subparsers) -> None:
    from pytest_koembed.run.finish import register

    register(subparsers)


def _register_cache(subparsers: Subparsers) -> None:
    from pytest_koembed.models.cache import register

    register(subparsers)


SUBCOMMANDS: list[Callable[[Subparsers], None]] = [
    _register_leaderboard,
    _register_rescore,
    _register_mirror,
    _register_compare,
    _register_merge,
    _register_gate,
    _register_cache,
]
"""Functions that each register one subcommand on the ``koembed`` parser."""


def build_parser() -> argparse.ArgumentParser:
    """The ``koembed`` argument parser with every subcommand of :data:`SUBCOMMANDS`."""
    parser = _Parser(
        prog=PROG,
        description="pytest-koembed: the Korean text-embedding leaderboard, from the command line",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", parser_class=_Parser)
    for register in SUBCOMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``koembed``; returns the exit status (0 ok, 2 bad input, with one line on stderr)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        func = getattr(args, "func", None)
        if func is None:
            parser.error("choose a subcommand: " + ", ".join(parser_choices(parser)))
    except SystemExit as exc:  # usage error (already printed), --help or --version
        return exc.code if isinstance(exc.code, int) else USAGE_ERROR
    try:
        return int(func(args))
    except KoembedError as exc:
        message = " ".join(str(exc).split())
        sys.stderr.write(f"{PROG}: error: {message}\n")
        return USAGE_ERROR
    except BrokenPipeError:  # e.g. `koembed leaderboard | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def parser_choices(parser: argparse.ArgumentParser) -> list[str]:
    """Names of the subcommands registered on ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
