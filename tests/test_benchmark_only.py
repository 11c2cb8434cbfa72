"""`pytest --koembed-model=X` runs the benchmark only; the repository's tests when asked for."""

from __future__ import annotations

import pytest
from koembed_test_encoders import HASHING_ENCODER

pytestmark = pytest.mark.usefixtures("offline")

# A repository test module that must not even be imported by a benchmark-only run.
OWN_TESTS = """
import os

if os.environ.get("KOEMBED_TEST_IMPORT_FAILS"):
    raise RuntimeError("the repository's test module was imported")


def test_own():
    assert True
"""


SAMPLE = ["--koembed-model=toy", "--koembed-suite=sample"]


def _ids(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if "::" in line]


def test_repository_tests_are_not_collected_nor_imported(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_own=OWN_TESTS)
    monkeypatch.setenv("KOEMBED_TEST_IMPORT_FAILS", "1")
    result = pytester.runpytest(*SAMPLE, "--collect-only", "-q")
    assert result.ret == 0, result.stdout.str()
    assert _ids(result) == [
        "koembed::STS::sample-sts",
        "koembed::NLI::sample-pairs",
        "koembed::Clustering::sample-clustering",
        "koembed::Retrieval::sample-retrieval",
        "koembed::Classification::sample-classification",
        "koembed::Reranking::sample-reranking",
    ]


def test_testpaths_are_not_collected_either(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntestpaths = tests tests/test_direct.py\n")
    pytester.mkpydir("tests")
    (pytester.path / "tests" / "test_own.py").write_text(OWN_TESTS, encoding="utf-8")
    (pytester.path / "tests" / "test_direct.py").write_text(OWN_TESTS, encoding="utf-8")
    result = pytester.runpytest(*SAMPLE, "--collect-only", "-q")
    assert [i.split("::")[0] for i in _ids(result)] == ["koembed"] * 6


def test_header_says_the_run_is_benchmark_only(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*SAMPLE, "--collect-only")
    result.stdout.fnmatch_lines(
        ["koembed: benchmark only (the repository's own tests run with --koembed-with-tests*"]
    )
    with_tests = pytester.runpytest(*SAMPLE, "--collect-only", "--koembed-with-tests")
    assert "koembed: benchmark only" not in with_tests.stdout.str()


def test_flag_adds_the_repository_tests(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HASHING_ENCODER)
    pytester.makepyfile(test_own=OWN_TESTS)
    result = pytester.runpytest(*SAMPLE, "--koembed-with-tests", "-v")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_own.py::test_own PASSED*"])
    result.assert_outcomes(passed=7)


def test_named_paths_add_the_repository_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_own=OWN_TESTS, test_other=OWN_TESTS)
    result = pytester.runpytest(*SAMPLE, "test_own.py", "--collect-only", "-q")
    ids = _ids(result)
    assert "test_own.py::test_own" in ids
    assert "test_other.py::test_own" not in ids  # only what was named
    assert len([i for i in ids if i.startswith("koembed::")]) == 6


def test_benchmark_only_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HASHING_ENCODER)
    pytester.makepyfile(test_own=OWN_TESTS)
    result = pytester.runpytest_subprocess(*SAMPLE, "-n", "2")
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=6)
    with_tests = pytester.runpytest_subprocess(*SAMPLE, "-n", "2", "--koembed-with-tests")
    with_tests.assert_outcomes(passed=7)
