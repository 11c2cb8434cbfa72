"""A subcommand's flags from the option table: ``--NAME`` for the plugin's ``--koembed-NAME``.

:func:`add_setting` adds one setting of :data:`pytest_koembed.options.OPTIONS` to a subcommand's
parser with the table's help, type and default; :func:`add_local` one flag that only the
subcommand has, declared with the same :class:`~pytest_koembed.options.Option` (so that it has
help and a type too). A spelling a subcommand took before issue 19 (``koembed gate
--koembed-confidence``, ``koembed merge --koembed-suite``) stays as a hidden alias that prints
one deprecation line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pytest_koembed.options import BY_NAME, Option

_WARNED = "_koembed_deprecated_warned"


def _deprecated_action(parser: argparse.ArgumentParser, action: str, new: str) -> type:
    """The parser's ``action`` class, writing one line on stderr the first time it is used."""
    base = parser._registry_get("action", action, action)  # the class behind "store" etc.

    class Deprecated(base):  # type: ignore[misc, valid-type]
        def __call__(
            self,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: Any,
            option_string: str | None = None,
        ) -> None:
            warned: set[str] = namespace.__dict__.setdefault(_WARNED, set())
            if option_string not in warned:
                warned.add(str(option_string))
                sys.stderr.write(
                    f"{parser.prog}: {option_string} is deprecated; write {new} (the same "
                    "setting)\n"
                )
            super().__call__(parser, namespace, values, option_string)

    return Deprecated


def _refusing_empty(flag: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` whose value type refuses an empty value (``--baseline=`` from an unset
    variable), which would otherwise read as the option left out (the pytest side:
    ``invocation.empty_value``)."""
    if kwargs.get("action") not in ("store", "append"):
        return kwargs
    convert = kwargs.get("type") or str

    def non_empty(value: str) -> Any:
        if not value.strip():
            raise argparse.ArgumentTypeError(
                f"{flag}= is empty: give it a value, or leave the option out (an unset shell "
                "variable?)"
            )
        return convert(value)

    non_empty.__name__ = getattr(convert, "__name__", "value")  # argparse names it in errors
    return dict(kwargs, type=non_empty)


def add_setting(
    parser: argparse.ArgumentParser,
    name: str,
    *,
    note: str | None = None,
    deprecated: Sequence[str] = (),
) -> Option:
    """Add the table's setting ``name`` as ``--NAME`` (dest ``koembed_NAME``). ``note`` is a
    sentence appended to the table's help for this subcommand; ``deprecated`` are old
    spellings kept as hidden aliases."""
    option = BY_NAME[name]
    kwargs = _refusing_empty(option.cli_flag, option.argparse_kwargs(cli=True))
    if note:
        kwargs["help"] = f"{kwargs['help']}; {note}"
    parser.add_argument(option.cli_flag, **kwargs)
    for old in deprecated:
        alias = dict(kwargs, help=argparse.SUPPRESS)
        alias["action"] = _deprecated_action(parser, kwargs["action"], option.cli_flag)
        parser.add_argument(old, **alias)
    return option


def add_local(
    parser: argparse.ArgumentParser,
    option: Option,
    *short: str,
    dest: str | None = None,
    required: bool = False,
) -> None:
    """Add a flag only this subcommand has: ``--NAME`` (and ``short`` spellings), dest
    ``NAME`` with dashes as underscores unless ``dest`` says otherwise."""
    kwargs = _refusing_empty(option.cli_flag, option.argparse_kwargs(cli=True))
    kwargs["dest"] = dest or option.name.replace("-", "_")
    if required:
        kwargs["required"] = True
    parser.add_argument(*short, option.cli_flag, **kwargs)
