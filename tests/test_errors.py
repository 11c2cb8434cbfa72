"""Bad input gives one clear line on the failing item, never a traceback or a silent score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("offline")


def _failure_lines(result: pytest.RunResult) -> str:
    out = result.stdout.str()
    assert "Traceback" not in out, out
    return out


def _write_korsts(root: Path, rows: list[str]) -> Path:
    split_dir = root / "KorSTS" / "default" / "test"
    split_dir.mkdir(parents=True)
    (split_dir / "pairs.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return split_dir / "pairs.jsonl"


def test_missing_data_file_names_the_expected_path(
    pytester: pytest.Pytester, minilm_dir: Path
) -> None:
    data = pytester.mkdir("mirror")
    result = pytester.runpytest(
        f"--koembed-model={minilm_dir}", f"--koembed-data-dir={data}", "-k", "Kor-STS"
    )
    result.assert_outcomes(failed=1)
    out = _failure_lines(result)
    assert str(data / "KorSTS" / "default" / "test" / "pairs.jsonl") in out
    # missing data is an error, never a skip
    assert "skipped" not in out


def test_malformed_row_names_file_and_line(pytester: pytest.Pytester, minilm_dir: Path) -> None:
    data = pytester.mkdir("mirror")
    good = json.dumps({"sentence1": "비가 온다.", "sentence2": "비가 내린다.", "score": 4.5})
    path = _write_korsts(data, [good, good.replace('"score": 4.5', '"score": "high"')])
    result = pytester.runpytest(
        f"--koembed-model={minilm_dir}", f"--koembed-data-dir={data}", "-k", "Kor-STS"
    )
    result.assert_outcomes(failed=1)
    out = _failure_lines(result)
    assert f"{path}:2" in out


def test_model_path_that_is_not_a_model(pytester: pytest.Pytester) -> None:
    not_a_model = pytester.mkdir("checkpoint")
    (not_a_model / "notes.txt").write_text("hello", encoding="utf-8")
    result = pytester.runpytest(
        f"--koembed-model={not_a_model}", "--koembed-suite=sample", "-k", "sample-sts"
    )
    result.assert_outcomes(errors=1)
    out = _failure_lines(result)
    assert str(not_a_model) in out
    result.stdout.fnmatch_lines(["*sample-sts: --koembed-model *config.json*"])


def test_nan_embeddings_fail_the_task(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import numpy as np
        import pytest

        class Broken:
            def encode(self, texts):
                out = np.ones((len(texts), 8), dtype="float32")
                out[0, 0] = np.nan
                return out

        @pytest.fixture(scope="session")
        def koembed_encoder():
            return Broken()
        """
    )
    result = pytester.runpytest("--koembed-model=broken", "--koembed-suite=sample", "-k", "sts")
    result.assert_outcomes(failed=1)
    _failure_lines(result)
    result.stdout.fnmatch_lines(["*sample-sts (symmetric texts): encoder returned NaN or inf*"])
    result.stdout.fnmatch_lines(["sample-sts*ERROR*"])


def test_wrong_row_count_fails_the_task(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import numpy as np
        import pytest

        class Short:
            def encode(self, texts):
                return np.ones((max(len(texts) - 1, 0), 4), dtype="float32")

        @pytest.fixture(scope="session")
        def koembed_encoder():
            return Short()
        """
    )
    result = pytester.runpytest("--koembed-model=short", "--koembed-suite=sample", "-k", "pairs")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*encoder returned * rows for * texts*"])


def test_hub_unreachable_points_to_the_data_dir(
    pytester: pytest.Pytester, minilm_dir: Path, empty_hf_cache: Path
) -> None:
    result = pytester.runpytest(f"--koembed-model={minilm_dir}", "-k", "Kor-STS")
    result.assert_outcomes(failed=1)
    _failure_lines(result)
    result.stdout.fnmatch_lines(["*Hub*--koembed-data-dir*"])


def test_missing_data_dir_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--koembed-model=m", "--koembed-data-dir=does-not-exist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --koembed-data-dir does-not-exist: no such directory*"])
