"""Live progress of long tasks: the counting, the line, and where it shows (only on a terminal)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pytest_koembed.evaluation.adapter import make_adapter
from pytest_koembed.evaluation.progress import (
    StatusLine,
    TaskProgress,
    display_width,
    fit,
    format_duration,
    format_progress,
)
from pytest_koembed.evaluation.run import evaluate_task, expected_texts
from pytest_koembed.models.encoders import EncoderOptions, LoadedEncoder
from pytest_koembed.models.loading import load_encoder
from pytest_koembed.protocol.suite import load_suite

pytestmark = pytest.mark.usefixtures("offline")
SAMPLE = load_suite("sample")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------------------------------
# the line


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 7.4, 61, 754, 3723, -3)] == [
        "0:00",
        "0:07",
        "1:01",
        "12:34",
        "1:02:03",
        "0:00",
    ]


def test_format_progress() -> None:
    assert format_progress("Kor-STS", 0, 5504, 0.0) == "Kor-STS: encoding 5,504 texts"
    assert format_progress("Kor-STS", 1234, 5504, 5.0) == (
        "Kor-STS: 1,234/5,504 texts (22%), 247 texts/s, 0:17 left"
    )
    assert format_progress("X", 3, 100, 2.0) == "X: 3/100 texts (3%), 1.5 texts/s, 1:05 left"
    assert format_progress("Kor-STS", 5504, 5504, 22.0) == (
        "Kor-STS: 5,504 texts encoded in 0:22 (250 texts/s), scoring"
    )
    # an estimate that fell short never reads more than 100%
    assert format_progress("X", 12, 10, 1.0) == "X: 12 texts encoded in 0:01 (12 texts/s), scoring"


def test_task_progress_counts_and_throttles() -> None:
    clock, shown = FakeClock(), []
    progress = TaskProgress("sample-sts", shown.append, clock=clock, interval=0.5)
    assert progress.text() == "sample-sts: reading data"
    progress.reading_data()
    progress.begin(100)
    assert shown == ["sample-sts: reading data", "sample-sts: encoding 100 texts"]
    clock.now += 1.0
    progress(10)  # the first batch is always shown
    clock.now += 0.1
    progress(10)  # 0.1 s later: not shown
    clock.now += 0.5
    progress(10)
    assert progress.done == 30
    assert shown[2:] == [
        "sample-sts: 10/100 texts (10%), 10 texts/s, 0:09 left",
        "sample-sts: 30/100 texts (30%), 19 texts/s, 0:04 left",
    ]
    clock.now += 0.01
    progress(70)  # the last batch is always shown
    assert shown[-1] == "sample-sts: 100 texts encoded in 0:02 (62 texts/s), scoring"


def test_status_line_writes_after_the_cursor_and_erases_itself() -> None:
    written: list[str] = []
    room = [80]
    status = StatusLine(written.append, lambda: room[0])
    status.clear()
    assert written == []  # nothing shown, nothing to erase
    status.show("Kor-STS: encoding 5,504 texts")
    assert written == ["\x1b7\x1b[K Kor-STS: encoding 5,504 texts\x1b8"]  # save, erase, restore
    room[0] = 10  # the line is nearly full: the status goes rather than wraps
    status.show("Kor-STS: 1/5,504 texts")
    assert written[-1] == "\x1b[K" and not status.shown
    status.clear()
    assert len(written) == 2


def test_fit_never_exceeds_the_room() -> None:
    text = "clustering_klue_mrc_context_domain: 1,234/5,504 texts (22%), 245 texts/s, 0:17 left"
    assert fit(text, 200) == text
    assert fit(text, 30) == text[:27] + "..."
    korean = fit("한국어 과제: 1/10 texts (10%), 0.5 texts/s, 0:18 left", 30)
    assert korean.endswith("...") and display_width(korean) <= 30 < len(korean) * 2
    assert fit(text, 10) == ""


# ---------------------------------------------------------------------------------------------
# counting: per batch for a LoadedEncoder, per call otherwise; embeddings unchanged


@pytest.fixture(scope="module")
def tiny(tiny_bert_dir: Path) -> LoadedEncoder:
    return load_encoder(EncoderOptions(model=str(tiny_bert_dir), device="cpu", batch_size=4))


TEXTS = [f"문장 {i}번은 길이가 {'아주 ' * (i % 5)}다릅니다." for i in range(11)]


def test_loaded_encoder_reports_every_batch_and_embeds_the_same(tiny: LoadedEncoder) -> None:
    batches: list[int] = []
    with_progress = tiny.encode(TEXTS, progress=batches.append)
    assert batches == [4, 4, 3]
    assert np.array_equal(with_progress, tiny.encode(TEXTS))


def test_a_batch_retried_after_out_of_memory_is_counted_once(
    tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    enc = load_encoder(EncoderOptions(model=str(tiny_bert_dir), device="cpu", batch_size=8))
    want = enc.encode(TEXTS)
    model = enc.backend.model
    forward = model.forward

    def oom_over_four(*args, **kwargs):
        if kwargs["input_ids"].shape[0] > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", oom_over_four)
    batches: list[int] = []
    got = enc.encode(TEXTS, progress=batches.append)
    assert batches == [4, 4, 3] and enc.info.oom_retries == 1
    assert np.allclose(got, want, atol=1e-5)


class PlainEncoder:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return np.stack([np.arange(1, 9, dtype=np.float32) + len(t) for t in texts])


def _encode(adapter, texts: list[str]) -> np.ndarray:
    return adapter.encode([{"text": texts}], task_metadata=None, hf_split="test", hf_subset="x")


def test_adapter_counts_per_call_for_other_encoders() -> None:
    counted: list[int] = []
    encoder = PlainEncoder()
    spec = SAMPLE.task("sample-sts")
    adapter = make_adapter(
        encoder, spec, lambda s, r: None, model_name="m", revision=None, progress=counted.append
    )
    _encode(adapter, TEXTS)
    _encode(adapter, TEXTS[:3])
    assert counted == [11, 3] and encoder.calls == [11, 3]  # the encoder's calls are unchanged
    assert adapter.texts_encoded == 14


def test_adapter_hands_the_callback_to_a_loaded_encoder(tiny: LoadedEncoder) -> None:
    counted: list[int] = []
    spec = SAMPLE.task("sample-sts")
    adapter = make_adapter(
        tiny, spec, lambda s, r: None, model_name="m", revision=None, progress=counted.append
    )
    assert np.array_equal(_encode(adapter, TEXTS), tiny.encode(TEXTS))
    assert counted == [4, 4, 3]


@pytest.mark.parametrize("column", ["sample-sts", "sample-clustering", "sample-retrieval"])
def test_a_task_counts_all_its_texts_and_scores_the_same(tiny: LoadedEncoder, column: str) -> None:
    spec = SAMPLE.task(column)
    shown: list[str] = []
    progress = TaskProgress(column, shown.append, interval=0.0)
    with_progress = evaluate_task(spec, tiny, progress=progress, batch_size=4)
    without = evaluate_task(spec, tiny, batch_size=4)
    assert with_progress.scores == without.scores and with_progress.value == without.value
    # the total known before encoding is what mteb asks for; texts served again from the
    # embedding store (encode once) leave it, so it ends as what the encoder was handed
    expected = expected_texts(with_progress.sizes)
    assert with_progress.texts["total"] == expected
    assert progress.total == progress.done == with_progress.texts["distinct"]
    assert with_progress.texts_encoded == progress.done == without.texts_encoded
    assert shown[:2] == [f"{column}: reading data", f"{column}: encoding {expected:,} texts"]
    assert shown[-1].startswith(f"{column}: {progress.total:,} texts encoded in ")


# ---------------------------------------------------------------------------------------------
# where it shows: never in captured or piped output, on a terminal only


def test_no_progress_when_output_is_not_a_terminal(
    pytester: pytest.Pytester, tiny_bert_dir: Path
) -> None:
    result = pytester.runpytest(
        f"--koembed-model={tiny_bert_dir}", "--koembed-suite=sample", "-k", "sts or pairs",
        "--koembed-json=run.json", "-v",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    out = result.stdout.str()
    assert "\x1b" not in out and "texts/s" not in out and "texts encoded" not in out
    result.stdout.fnmatch_lines(
        ["koembed::STS::sample-sts PASSED*", "koembed::NLI::sample-pairs PASSED*"]
    )
    record = json.loads((pytester.path / "run.json").read_text(encoding="utf-8"))
    assert [t["texts"]["total"] for t in record["tasks"]] == [
        expected_texts(t["sizes"]) for t in record["tasks"]
    ]
    assert all(t["texts_encoded"] == t["texts"]["encoded"] for t in record["tasks"])
    assert all(t["worker"] is None for t in record["tasks"])


def _in_a_terminal(cwd: Path, *args: str) -> str:
    """Run pytest under a pseudo-terminal (util-linux ``script``); what the terminal got."""
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="150", TERM="xterm"
    )
    for key in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS", "NO_COLOR"):
        env.pop(key, None)
    command = shlex.join([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args])
    typescript = cwd / "typescript"
    subprocess.run(
        ["script", "-qec", command, str(typescript)],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=600,
        check=False,
    )
    return typescript.read_text(encoding="utf-8", errors="replace")


needs_script = pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux script")


@needs_script
def test_progress_on_a_terminal(tmp_path: Path, tiny_bert_dir: Path) -> None:
    screen = _in_a_terminal(
        tmp_path, f"--koembed-model={tiny_bert_dir}", "--koembed-suite=sample", "-k", "sts",
        "--koembed-batch-size=16", "-v",
    )  # fmt: skip
    assert "1 passed" in screen, screen
    # 164 texts, 157 distinct (encoded once) in batches of 16: the status after the item's id,
    # each saved/erased/restored
    assert "koembed::STS::sample-sts \x1b7\x1b[K sample-sts: reading data\x1b8" in screen
    assert "\x1b7\x1b[K sample-sts: encoding 164 texts\x1b8" in screen
    assert re.search(r"\x1b7\x1b\[K sample-sts: 16/1[56]\d texts \(10%\), ", screen), screen
    assert " sample-sts: 157 texts encoded in " in screen
    # erased before the outcome is written where it would have been
    after = screen.rsplit("\x1b8", 1)[1]
    assert after.startswith("\x1b[K") and "PASSED" in after.split("\n", 1)[0]


@needs_script
@pytest.mark.parametrize("flag", ["-q", "--color=no"])
def test_quiet_on_a_terminal_with_q_or_without_markup(
    tmp_path: Path, tiny_bert_dir: Path, flag: str
) -> None:
    screen = _in_a_terminal(
        tmp_path, f"--koembed-model={tiny_bert_dir}", "--koembed-suite=sample", "-k", "sts", flag
    )
    assert "1 passed" in screen, screen
    assert "\x1b7" not in screen and "texts/s" not in screen


def test_under_xdist_the_summary_names_the_worker_of_each_task(
    run_pytest, tmp_path: Path, tiny_bert_dir: Path
) -> None:
    pytest.importorskip("xdist")
    result = run_pytest(
        tmp_path, f"--koembed-model={tiny_bert_dir}", "--koembed-suite=sample", "-n", "2",
        "-k", "sts or pairs", f"--koembed-json={tmp_path / 'run.json'}",
    )  # fmt: skip
    assert result.ret == 0, result.stdout
    assert "\x1b" not in result.stdout and "texts/s" not in result.stdout
    record = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    workers = {t["column"]: t["worker"] for t in record["tasks"]}
    assert set(workers.values()) <= {"gw0", "gw1"} and None not in workers.values()
    result.fnmatch_lines(
        [
            "task * seconds  worker",
            f"sample-sts * {workers['sample-sts']}",
            f"sample-pairs * {workers['sample-pairs']}",
        ]
    )
