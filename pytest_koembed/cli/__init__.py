"""The ``koembed`` console script.

Subcommands (``koembed SUBCOMMAND --help``; ``koembed options`` lists every flag):

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
- ``options``: the options reference (``--markdown`` for docs/options.md).

One vocabulary: a setting of the plugin, ``--koembed-NAME``, is ``--NAME`` on a subcommand, with
the same help, type and default, both from the option table ``pytest_koembed.options.OPTIONS``
(``cli.flags``). One exit status for bad input, pytest's usage error (4): a usage error and a
:class:`KoembedError` raised by a subcommand are one line on stderr.

To add a subcommand, write a ``register_NAME(subparsers)`` function in ``cli.commands`` that adds
its parser and sets ``func`` (a callable taking the parsed namespace and returning the exit
status), and append it to ``commands.SUBCOMMANDS``.

This package imports neither pytest nor torch nor mteb.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from pytest_koembed._version import __version__
from pytest_koembed.cli.commands import SUBCOMMANDS
from pytest_koembed.errors import KoembedError
from pytest_koembed.options import EXIT_OK, EXIT_USAGE

PROG = "koembed"
USAGE_ERROR = EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit status 4)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``koembed`` argument parser with every subcommand of ``commands.SUBCOMMANDS``."""
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
    """Run ``koembed``; returns the exit status (0 ok, 4 bad input, with one line on stderr)."""
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
        return EXIT_OK


def parser_choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands registered on ``parser``, by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


__all__ = ["PROG", "USAGE_ERROR", "build_parser", "main", "parser_choices"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
