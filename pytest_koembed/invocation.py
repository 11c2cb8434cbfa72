"""Checks of how the plugin's options were written, before anything runs (issue 18).

Two traps a CI job walks into without anything saying so:

- **An empty or missing model.** ``--koembed-model=$CKPT`` with ``$CKPT`` unset gives
  ``--koembed-model=``; without a model the plugin does nothing, and pytest runs the repository's
  unit tests and exits 0. So an empty ``--koembed-model``, and ``--koembed-*`` options on the
  command line or in ``PYTEST_ADDOPTS`` without any model, are a usage error. Options in an ini
  file's ``addopts`` are left alone: a plain unit-test run of the repository must keep working.
- **A space-separated value.** pytest decides its rootdir (and so which ini file and which
  ``conftest.py`` it loads) before it loads any plugin, from the arguments that do not start with
  ``-`` and name an existing path. ``--koembed-baseline /abs/base.json`` hands it
  ``/abs/base.json``: the rootdir moves, the repository's ini settings and its ``koembed_encoder``
  override are dropped. The plugin cannot undo that; it refuses every ``--koembed-*`` option whose
  value is written after a space (whether the value happens to exist as a file changes from one
  run to the next, so the rule does not depend on it) and says to write ``=``.

Plain module: no pytest.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence

PREFIX = "--koembed-"
MODEL_OPTION = "--koembed-model"


def addopts_args(value: str | None) -> list[str]:
    """The arguments of a ``PYTEST_ADDOPTS`` value (as pytest splits it)."""
    if not value:
        return []
    try:
        return shlex.split(value)
    except ValueError:  # unbalanced quotes: pytest itself reports it
        return value.split()


def _sources(args: Sequence[str], env_args: Sequence[str]) -> Iterable[tuple[str, Sequence[str]]]:
    yield "in PYTEST_ADDOPTS", env_args
    yield "on the command line", args


def space_separated(
    args: Sequence[str], env_args: Sequence[str], takes_value: Iterable[str]
) -> str | None:
    """The one-line refusal of the first ``--koembed-X VALUE`` (a value option written with a
    space, not ``=``) in ``PYTEST_ADDOPTS`` or the command line, None when there is none."""
    options = set(takes_value)
    for where, argv in _sources(args, env_args):
        for i, arg in enumerate(argv):
            if arg == "--":
                break
            if arg in options and i + 1 < len(argv):
                value = argv[i + 1]
                shown = shlex.quote(value)
                return (
                    f"{arg} {shown} ({where}): write {arg}={shown}; pytest takes a value "
                    "after a space for a test path before plugins load, which can move the "
                    "rootdir and drop the repository's ini settings and conftest.py"
                )
    return None


def empty_value(
    args: Sequence[str], env_args: Sequence[str], takes_value: Iterable[str]
) -> str | None:
    """The one-line refusal of the first ``--koembed-X=`` with nothing after the ``=`` (an
    unset variable in ``--koembed-baseline=$BASELINE``), which would otherwise read as "not
    given" and quietly drop a baseline, a cache or a record; None when there is none.
    ``--koembed-model`` has its own refusal (:func:`model_problem`)."""
    options = set(takes_value) - {f"{PREFIX}model"}
    for where, argv in _sources(args, env_args):
        for arg in argv:
            if arg == "--":
                break
            name, equals, value = arg.partition("=")
            if equals and name in options and not value.strip():
                return (
                    f"{name}= is empty ({where}): give it a value, or leave the option out "
                    "(an unset shell variable?)"
                )
    return None


def given_options(args: Sequence[str], env_args: Sequence[str]) -> list[str]:
    """The ``--koembed-*`` option names on the command line and in ``PYTEST_ADDOPTS``."""
    names: list[str] = []
    for _, argv in _sources(args, env_args):
        for arg in argv:
            if arg == "--":
                break
            if arg.startswith(PREFIX):
                name = arg.split("=", 1)[0]
                if name not in names:
                    names.append(name)
    return names


def model_problem(model: str | None, args: Sequence[str], env_args: Sequence[str]) -> str | None:
    """The one-line usage error of an empty ``--koembed-model``, or of ``--koembed-*`` options
    given (command line, ``PYTEST_ADDOPTS``) without any model; None when all is well.

    ``model`` is the option's value as parsed (command line, ``PYTEST_ADDOPTS`` or an ini
    ``addopts``): None when no model was given anywhere."""
    if model is not None and not model.strip():
        return (
            f"{MODEL_OPTION} is empty (an unset variable?): give a model directory or Hub id; "
            "without a model nothing would be benchmarked"
        )
    if model is not None:
        return None
    others = [n for n in given_options(args, env_args) if n != MODEL_OPTION]
    if not others:
        return None
    shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    return (
        f"{shown} given without {MODEL_OPTION}: nothing would be benchmarked; give "
        f"{MODEL_OPTION}=MODEL (a model directory or Hub id)"
    )


def no_effect_notes(
    model: str, *, revision: str | None, devices: str | None, devices_min_texts: int | None
) -> list[str]:
    """One line per loading option that has no effect on this run (the baseline options have
    theirs in ``verdicts.BaselinePolicy.no_effect``)."""
    from pathlib import Path

    notes = []
    if devices_min_texts is not None and not devices:
        notes.append(
            f"note: --koembed-devices-min-texts={devices_min_texts} has no effect on this run: "
            "it applies with --koembed-devices only"
        )
    if revision and Path(model).expanduser().is_dir():
        notes.append(
            f"note: --koembed-revision={revision} has no effect on this run: {model} is a local "
            "directory (a revision names a Hub model's commit)"
        )
    return notes
