"""One plugin run of the sample suite with every report option, shared by the report tests.

The run uses a deterministic encoder (character n-grams hashed into 64 dimensions) through the
documented override of the ``koembed_encoder`` fixture, so its numbers are the same on every
machine and the golden files can hold them. It runs once per test process (the first test that
asks for it pays ~20-40 s); the report tests only read its outputs.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENCODER_CONFTEST = '''
import zlib

import numpy as np
import pytest


class HashEncoder:
    """Character uni/bi-grams hashed into 64 signed buckets, L2-normalised: deterministic."""

    def encode(self, texts):
        out = np.zeros((len(texts), 64), dtype="float32")
        for i, text in enumerate(texts):
            compact = "".join(text.split())
            grams = list(compact) + [compact[j : j + 2] for j in range(len(compact) - 1)]
            for gram in grams:
                h = zlib.crc32(gram.encode("utf-8"))
                out[i, h % 64] += 1.0 if (h >> 16) & 1 else -1.0
            out[i, 0] += 0.5
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def koembed_encoder():
    return HashEncoder()
'''

MODEL = "koembed-tests/hash-ngrams"

# A card with front matter the merge must keep: other keys, a comment, a model-index entry of
# another task, CRLF line endings, and a body.
CARD = (
    "---\r\n"
    "license: mit\r\n"
    "# keep this comment\r\n"
    "tags:\r\n"
    "- mteb\r\n"
    "- sentence-transformers\r\n"
    "model-index:\r\n"
    "- name: hash-ngrams\r\n"
    "  results:\r\n"
    "  - task:\r\n"
    "      type: Classification\r\n"
    "    dataset:\r\n"
    "      type: mteb/amazon_polarity\r\n"
    "      name: MTEB AmazonPolarityClassification\r\n"
    "      config: default\r\n"
    "      split: test\r\n"
    "    metrics:\r\n"
    "    - type: accuracy\r\n"
    "      value: 91.9\r\n"
    "language:\r\n"
    "- ko\r\n"
    "---\r\n"
    "\r\n"
    "# hash-ngrams\r\n"
    "\r\n"
    "A test model. ---\r\n"
    "---\r\n"
    "Text after a rule.\r\n"
)


@dataclass(frozen=True)
class SampleReports:
    workdir: Path
    ret: int
    stdout: str
    record: dict[str, Any]
    rows: Path
    model_index: Path
    card: Path
    results_dir: Path
    plot: Path


_CACHE: dict[str, SampleReports] = {}


def sample_reports(run_pytest: Callable[..., Any]) -> SampleReports:
    """Run (once per process) ``pytest --koembed-suite=sample`` with every report option."""
    if "run" in _CACHE:
        return _CACHE["run"]
    workdir = Path(tempfile.mkdtemp(prefix="koembed-reports-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    (workdir / "conftest.py").write_text(ENCODER_CONFTEST, encoding="utf-8")
    card = workdir / "README.md"
    card.write_bytes(CARD.encode("utf-8"))
    result = run_pytest(
        workdir,
        f"--koembed-model={MODEL}",
        "--koembed-suite=sample",
        "--koembed-json=record.json",
        "--koembed-row=rows.md",
        "--koembed-model-index=model-index.yaml",
        "--koembed-model-card=README.md",
        "--koembed-results-dir=mteb-results",
        "--koembed-plot=chart.png",
    )
    record_path = workdir / "record.json"
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    reports = SampleReports(
        workdir=workdir,
        ret=result.ret,
        stdout=result.stdout,
        record=record,
        rows=workdir / "rows.md",
        model_index=workdir / "model-index.yaml",
        card=card,
        results_dir=workdir / "mteb-results",
        plot=workdir / "chart.png",
    )
    _CACHE["run"] = reports
    return reports
