"""The house rules of docs/architecture.md that a reader can check: module and function sizes, and a
public API that imports without the heavy libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_koembed"
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_package_has_modules_to_check() -> None:
    assert len(_modules()) > 30


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_over_800_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_over_80_lines(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.relative_to(PACKAGE)}: {', '.join(long)}"


def test_the_public_api_imports_without_torch_or_mteb() -> None:
    code = (
        "import sys, pytest_koembed as k\n"
        "heavy = [m for m in ('torch', 'mteb', 'sentence_transformers', 'transformers', 'pandas')"
        " if m in sys.modules]\n"
        "missing = [n for n in k.__all__ if not hasattr(k, n)]\n"
        "print(heavy, missing)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []"


def test_a_class_with_encode_is_an_encoder() -> None:
    from pytest_koembed import Encoder

    class Mine:
        def encode(self, texts, **kwargs):
            return [[0.0] for _ in texts]

    assert isinstance(Mine(), Encoder)
    assert not isinstance(object(), Encoder)
