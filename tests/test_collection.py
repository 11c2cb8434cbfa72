"""Collection: the plugin stays out of the way without --koembed-model, and ids are selectable."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("offline")


def test_without_model_the_plugin_is_invisible(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_own="def test_own():\n    assert True\n")
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1)
    out = result.stdout.str().replace("koembed-0.1.0", "")  # the "plugins:" header line
    out = out.replace("'koembed': '0.1.0'", "")  # pytest-metadata's (pytest-html's) -v header
    assert "koembed" not in out


def test_one_item_per_task_of_the_default_suite(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--koembed-model=some/model", "--collect-only", "-q")
    lines = [line for line in result.outlines if line.startswith("koembed::")]
    assert lines == [
        "koembed::STS::KLUE-STS",
        "koembed::STS::Kor-STS",
        "koembed::STS::STS17",
        "koembed::NLI::KLUE-NLI",
        "koembed::NLI::Kor-NLI",
        "koembed::NLI::PawsX-PairClassification",
        "koembed::Clustering::sib200",
        "koembed::Clustering::clustering_klue_mrc_context_domain",
        "koembed::Clustering::clustering_klue_mrc_ynat_title",
        "koembed::Retrieval::Ko-StrategyQA",
        "koembed::Retrieval::AutoRAGRetrieval",
        "koembed::Retrieval::PublicHealthQA",
        "koembed::Retrieval::XPQARetrieval",
        "koembed::Retrieval::facebook/belebele",
        "koembed::Retrieval::webfaq-retrieval",
    ]


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (["-k", "Ko-StrategyQA"], ["koembed::Retrieval::Ko-StrategyQA"]),
        (["-m", "koembed and nli"], ["KLUE-NLI", "Kor-NLI", "PawsX-PairClassification"]),
        (["-k", "retrieval and not belebele"], 5),
        (["-m", "retrieval"], 6),
    ],
)
def test_selection_by_keyword_and_marker(
    pytester: pytest.Pytester, selection: list[str], expected: list[str] | int
) -> None:
    pytester.makepyfile(test_own="def test_own():\n    assert True\n")
    result = pytester.runpytest("--koembed-model=m", "--collect-only", "-q", *selection)
    ids = [line for line in result.outlines if line.startswith("koembed::")]
    if isinstance(expected, int):
        assert len(ids) == expected
    else:
        assert [i.rsplit("::", 1)[-1] for i in ids] == [e.rsplit("::", 1)[-1] for e in expected]
    assert "test_own.py::test_own" not in result.stdout.str()


def test_shipped_suites_by_name(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--koembed-model=m", "--koembed-suite=ko-leaderboard-v2", "--co")
    result.stdout.fnmatch_lines(["*<KoembedItem MIRACLRetrievalHardNegative>*"])
    assert result.stdout.str().count("<KoembedItem ") == 7


def test_unknown_suite_is_one_line(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--koembed-model=m", "--koembed-suite=nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: unknown suite 'nope'; shipped suites are *"])
    assert "Traceback" not in result.stderr.str()


def test_malformed_suite_file_is_one_line(pytester: pytest.Pytester) -> None:
    suite = pytester.makefile(
        ".toml", mysuite='name = "x"\n[[tasks]]\ntask = "KorSTS"\ncategory = "Fun"\n'
    )
    result = pytester.runpytest("--koembed-model=m", f"--koembed-suite={suite}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: suite *mysuite.toml, task 'KorSTS': category 'Fun' is*"])


def test_collection_is_identical_on_xdist_workers(pytester: pytest.Pytester) -> None:
    # xdist aborts with "Different tests were collected" if workers disagree.
    result = pytester.runpytest_subprocess(
        "--koembed-model=m", "-n", "2", "--collect-only", "-q", "-p", "no:cacheprovider"
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert "Different tests were collected" not in result.stdout.str()


def test_collect_only_writes_nothing(pytester: pytest.Pytester) -> None:
    """With --koembed-json in addopts, listing the tests must not destroy the last results."""
    record = pytester.path / "run.json"
    record.write_text('{"last": "results"}\n', encoding="utf-8")
    journal = pytester.path / ".pytest_cache" / "koembed" / "last-run.json"
    journal.parent.mkdir(parents=True)
    journal.write_text('{"last": "journal"}\n', encoding="utf-8")
    pytester.makeini(f"[pytest]\naddopts = --koembed-json={record}\n")
    result = pytester.runpytest("--koembed-model=m", "--koembed-suite=sample", "--collect-only")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*6 tests collected*"])
    assert record.read_text(encoding="utf-8") == '{"last": "results"}\n'
    assert journal.read_text(encoding="utf-8") == '{"last": "journal"}\n'
    assert "koembed summary" not in result.stdout.str()
