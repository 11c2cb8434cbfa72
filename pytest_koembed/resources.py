"""Where the shipped suites and baselines live.

In a wheel they are copied into the package (``pytest_koembed/suites``); in a source checkout or an
editable install they sit at the top of the repository, next to the package.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    inside = _PACKAGE / name
    if inside.is_dir():
        return inside
    return _PACKAGE.parent / name


def suites_dir() -> Path:
    return _shipped("suites")


def baselines_dir() -> Path:
    return _shipped("baselines")
