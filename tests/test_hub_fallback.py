"""A failed Hub metadata call: the cached snapshot is used, a warning says so, the record too."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_koembed.models import fingerprint
from pytest_koembed.models.encoders import EncoderOptions
from pytest_koembed.models.hub import HubFallbackWarning
from pytest_koembed.models.loading import load_encoder

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def cached_tiny_bert(tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``acme/tiny-bert`` in a Hub cache of its own; the Hub 'online' but answering 503."""
    import importlib

    import huggingface_hub
    import huggingface_hub.constants
    from huggingface_hub.errors import HfHubHTTPError, Response

    http = importlib.import_module(Response.__module__.split(".")[0])  # the client hub uses

    cache = tmp_path / "hub-cache"
    repo = cache / "models--acme--tiny-bert"
    shutil.copytree(tiny_bert_dir, repo / "snapshots" / SHA)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(fingerprint, "_hub_cache_dir", lambda: cache)

    def unavailable(self: object, repo_id: str, **kwargs: object) -> None:
        request = http.Request("GET", f"https://huggingface.co/api/models/{repo_id}")
        response = Response(503, request=request)
        raise HfHubHTTPError("503 Server Error: Service Unavailable", response=response)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unavailable)
    return cache


def test_load_encoder_warns_once_and_records_the_failure(cached_tiny_bert: Path) -> None:
    with pytest.warns(HubFallbackWarning) as caught:
        enc = load_encoder(EncoderOptions(model="acme/tiny-bert", device="cpu"))
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "\n" not in message
    assert "the Hub's metadata call failed (HfHubHTTPError: 503 Server Error" in message
    assert f"using the cached snapshot {SHA}" in message
    assert enc.info.revision == SHA
    assert enc.info.hub_metadata_error.startswith("HfHubHTTPError: 503 Server Error")
    assert enc.info.to_dict()["hub_metadata_error"] == enc.info.hub_metadata_error


def test_offline_on_purpose_is_no_failure(
    cached_tiny_bert: Path, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    enc = load_encoder(EncoderOptions(model="acme/tiny-bert", device="cpu"))
    assert enc.info.hub_metadata_error is None
    assert not [w for w in recwarn if issubclass(w.category, HubFallbackWarning)]


def test_the_run_record_and_the_output_say_it(
    pytester: pytest.Pytester, cached_tiny_bert: Path
) -> None:
    record_path = pytester.path / "run.json"
    result = pytester.runpytest(
        "--koembed-model=acme/tiny-bert",
        "--koembed-suite=sample",
        "--koembed-device=cpu",
        f"--koembed-json={record_path}",
        "-k",
        "sample-sts",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*HubFallbackWarning: --koembed-model 'acme/tiny-bert': the Hub's metadata call failed*"]
    )
    model = json.loads(record_path.read_text(encoding="utf-8"))["model"]
    assert model["revision"] == SHA
    assert model["hub_metadata_error"].startswith("HfHubHTTPError: 503 Server Error")
