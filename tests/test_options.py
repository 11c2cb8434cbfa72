"""Bad options and output paths are one usage error before anything runs (exit status 4); an
output that still cannot be written at the end is one summary line and a non-zero exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from koembed_test_encoders import HASHING_CLASS

pytestmark = pytest.mark.usefixtures("offline")

SAMPLE = ["--koembed-model=m", "--koembed-suite=sample"]


def _usage_error(result: pytest.RunResult, pattern: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    errors = [line for line in result.errlines if line.strip()]
    assert len(errors) == 1, errors  # one line, no traceback, nothing per item
    pytest.LineMatcher(errors).fnmatch_lines([pattern])
    assert "collected" not in result.stdout.str()


@pytest.mark.parametrize(
    ("option", "target", "pattern"),
    [
        ("--koembed-json", "a-dir", "ERROR: --koembed-json */a-dir: is a directory; give a file*"),
        ("--koembed-save-baseline", "a-dir", "ERROR: --koembed-save-baseline */a-dir: is a dir*"),
        ("--koembed-model-index", "a-dir", "ERROR: --koembed-model-index */a-dir: is a dir*"),
        ("--koembed-row", "a-file/rows.md", "ERROR: --koembed-row */a-file/rows.md: */a-file is "
         "not a directory"),
        ("--koembed-plot", "/proc/x.png", "ERROR: --koembed-plot /proc/x.png: cannot write in "
         "/proc (*); choose another path"),
        ("--koembed-results-dir", "a-file", "ERROR: --koembed-results-dir */a-file: exists and is "
         "not a directory"),
        ("--koembed-json", "a-file/deeper/run.json", "ERROR: --koembed-json *: */a-file is not a "
         "directory"),
    ],
)  # fmt: skip
def test_unwritable_output_is_a_usage_error(
    pytester: pytest.Pytester, option: str, target: str, pattern: str
) -> None:
    (pytester.path / "a-dir").mkdir()
    (pytester.path / "a-file").write_text("x", encoding="utf-8")
    result = pytester.runpytest(*SAMPLE, f"{option}={target}")
    _usage_error(result, pattern)


def test_model_card_in_an_unwritable_place_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*SAMPLE, "--koembed-model-card=/proc/version")
    _usage_error(result, "ERROR: --koembed-model-card /proc/version: cannot write in /proc*")


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--koembed-batch-size=0"], "*--koembed-batch-size: must be a positive * got 0*"),
        (["--koembed-batch-size=-8"], "*--koembed-batch-size: must be a positive whole number*"),
        (["--koembed-max-length=-3"], "*--koembed-max-length: must be a positive whole number*"),
        (["--koembed-max-length=0"], "*--koembed-max-length: must be a positive whole number*"),
        (["--koembed-device=tpu9"], "ERROR: --koembed-device 'tpu9' is not one of auto, cpu, "
         "cuda, cuda:N, mps"),
        (["--koembed-pooling=foo"], "ERROR: --koembed-pooling 'foo' is not one of *"),
        (["--koembed-instructions=nope.toml"], "ERROR: instructions file nope.toml does not "
         "exist*"),
        (["--koembed-instructions=bad.toml"], "ERROR: instructions file bad.toml is not valid "
         "TOML*"),
        (["--koembed-instructions=wrong.toml"], "ERROR: instructions file wrong.toml*"),
    ],
)  # fmt: skip
def test_bad_option_is_one_usage_error(
    pytester: pytest.Pytester, args: list[str], pattern: str
) -> None:
    (pytester.path / "bad.toml").write_text("this is [not toml\n", encoding="utf-8")
    (pytester.path / "wrong.toml").write_text("format = 99\n", encoding="utf-8")
    result = pytester.runpytest(*SAMPLE, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    errors = [line for line in result.errlines if line.strip()]
    pytest.LineMatcher(errors).fnmatch_lines([pattern])
    assert not any("Traceback" in line for line in errors)


def test_cuda_on_a_cpu_only_torch_is_a_usage_error(pytester: pytest.Pytester) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")  # the check is for machines without it
    result = pytester.runpytest(*SAMPLE, "--koembed-device=cuda")
    _usage_error(result, "ERROR: --koembed-device cuda: CUDA is not available (*); use *cpu*")


# An encoder that, once the run is under way, puts a file where two output directories go:
# the writes at the end fail though the paths were fine when the run started.
SABOTAGING_ENCODER = (
    HASHING_CLASS
    + """
from pathlib import Path


@pytest.fixture(scope="session")
def koembed_encoder():
    for name in ("gone-json", "gone-index"):
        Path(name).write_text("now a file", encoding="utf-8")
    return Hashing()
"""
)


def test_output_failing_at_the_end_is_a_line_and_exit_status_1(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(SABOTAGING_ENCODER)
    result = pytester.runpytest(
        *SAMPLE,
        "-k",
        "sts",
        "--koembed-json=gone-json/run.json",
        "--koembed-model-index=gone-index/index.yaml",
        "--koembed-results-dir=results",
        "--koembed-save-baseline=baseline.json",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "--koembed-json */gone-json/run.json: not written: *",
            "--koembed-model-index */gone-index/index.yaml: not written: *",
        ]
    )
    # the other outputs were still written
    assert list((pytester.path / "results").rglob("KoembedSampleSTS.json"))
    saved = json.loads((pytester.path / "baseline.json").read_text(encoding="utf-8"))
    assert [t["column"] for t in saved["tasks"]] == ["sample-sts"]
    assert "INTERNALERROR" not in result.stdout.str()


def test_unwritable_json_directory_is_never_an_internal_error(pytester: pytest.Pytester) -> None:
    """The run record is rewritten after every task: a failing write must not stop the run."""
    pytester.makeconftest(SABOTAGING_ENCODER)
    result = pytester.runpytest(*SAMPLE, "-k", "sts or pairs", "--koembed-json=gone-json/r.json")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "INTERNALERROR" not in result.stdout.str()


def test_valid_outputs_pass_the_checks(pytester: pytest.Pytester, tmp_path: Path) -> None:
    result = pytester.runpytest(
        *SAMPLE,
        "--collect-only",
        f"--koembed-json={tmp_path}/new/dir/run.json",
        f"--koembed-results-dir={tmp_path}/results",
        "--koembed-row=-",
        "--koembed-batch-size=1",
        "--koembed-device=cpu",
        "--koembed-pooling=cls",
    )
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    assert not (tmp_path / "new").exists()  # checking creates nothing
