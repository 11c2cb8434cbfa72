"""Names a user recognises: local models named from their own metadata, tasks selectable by
their mteb names, and a custom encoder's summary line without unknown fields."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_koembed.gate.verdicts import make_policy
from pytest_koembed.models.encoders import EncoderOptions
from pytest_koembed.models.loading import load_encoder
from pytest_koembed.models.naming import local_model_name
from pytest_koembed.protocol.suite import load_suite
from pytest_koembed.reports.summary import model_line

pytestmark = pytest.mark.usefixtures("offline")


def _model_dir(path: Path, *, readme: str | None = None, config: dict | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config or {"model_type": "bert"}))
    if readme is not None:
        (path / "README.md").write_text(readme, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# local model names


def test_a_telling_directory_name_is_kept(tmp_path: Path) -> None:
    path = _model_dir(tmp_path / "kure-ft-lr2e-5", readme="# something-else\n")
    assert local_model_name(path) == ("kure-ft-lr2e-5", "directory")


def test_a_generic_directory_is_named_by_its_model_card_title(tmp_path: Path) -> None:
    card = (
        "---\nlanguage: ko\ntags:\n- sentence-transformers\n---\n\n"
        "```python\n# not a title: a comment in code\n```\n"
        "# my-korean-embedder\n\nText.\n## Usage\n"
    )
    path = _model_dir(tmp_path / "model", readme=card)
    assert local_model_name(path) == ("my-korean-embedder", "model card")


def test_the_card_front_matter_wins_over_its_title(tmp_path: Path) -> None:
    card = "---\nmodel-index:\n- name: acme/embedder-v2\n  results: []\n---\n# Embedder\n"
    path = _model_dir(tmp_path / "final", readme=card)
    assert local_model_name(path) == ("acme/embedder-v2", "model card")
    card = "---\nmodel_name: embedder-v3\n---\n# Embedder\n"
    assert local_model_name(_model_dir(tmp_path / "x" / "model", readme=card))[0] == "embedder-v3"


@pytest.mark.parametrize(
    "title",
    [
        "# Model Card for Model ID",  # the Hub's template
        "# SentenceTransformer based on BAAI/bge-m3",  # sentence-transformers' generated card
        "# {{ model_id | default('Model ID', true) }}",
        "# model",
    ],
)
def test_template_titles_are_not_names(tmp_path: Path, title: str) -> None:
    path = _model_dir(tmp_path / "my-run" / "output", readme=f"{title}\n")
    assert local_model_name(path) == ("my-run/output", "directory")


def test_name_or_path_when_the_card_says_nothing(tmp_path: Path) -> None:
    config = {"model_type": "bert", "_name_or_path": "nlpai-lab/KURE-v1"}
    path = _model_dir(tmp_path / "model", config=config)
    assert local_model_name(path) == ("nlpai-lab/KURE-v1", "config.json _name_or_path")
    # an absolute path saved by an older transformers: its telling components
    config["_name_or_path"] = "/home/me/runs/kure-ft/checkpoint-500"
    assert local_model_name(_model_dir(tmp_path / "a" / "model", config=config))[0] == (
        "kure-ft/checkpoint-500"
    )
    config["_name_or_path"] = "output/model"  # relative and generic: not a Hub id
    assert local_model_name(_model_dir(tmp_path / "b" / "model", config=config)) == (
        "b/model",
        "directory",
    )


def test_numbered_saves_and_generic_dirs_go_with_their_run(tmp_path: Path) -> None:
    config = {"model_type": "bert", "_name_or_path": "nlpai-lab/KURE-v1"}  # the base model
    save = _model_dir(tmp_path / "kure-ft" / "checkpoint-5000", config=config)
    assert local_model_name(save) == ("kure-ft/checkpoint-5000", "directory")
    bare = _model_dir(tmp_path / "my-run" / "outputs" / "0123456789abcdef")
    assert local_model_name(bare) == ("my-run/0123456789abcdef", "directory")


def test_a_hub_cache_snapshot_reads_as_its_repo_id(tmp_path: Path) -> None:
    snapshot = tmp_path / "models--nlpai-lab--KURE-v1" / "snapshots" / ("a" * 40)
    _model_dir(snapshot, readme="# KURE\n")
    assert local_model_name(snapshot) == ("nlpai-lab/KURE-v1", "hub cache")


def test_the_shipped_minilm_is_named_as_its_card_says(minilm_dir: Path) -> None:
    assert minilm_dir.name == "model"
    enc = load_encoder(EncoderOptions(model=str(minilm_dir), device="cpu"))
    assert (enc.info.row_name, enc.info.name_source) == ("all-MiniLM-L6-v2", "model card")
    bf16 = load_encoder(EncoderOptions(model=str(minilm_dir), device="cpu", dtype="bf16"))
    assert bf16.info.row_name == "all-MiniLM-L6-v2-bf16"  # the dtype suffix rule still holds


def test_a_card_named_like_a_leaderboard_row_still_finds_it(tmp_path: Path) -> None:
    """--koembed-baseline auto matches on the row name, however the name was found."""
    card = "---\nmodel-index:\n- name: nlpai-lab/KURE-v1\n---\n"
    name, _ = local_model_name(_model_dir(tmp_path / "model", readme=card))
    suite = load_suite("ko-leaderboard-v1")
    policy = make_policy(suite, baseline="auto", tolerance=[], fail_under=[], strict=False)
    assert policy.resolve(name).baseline is not None
    assert policy.resolve("model").baseline is None


# ---------------------------------------------------------------------------------------------
# -k by mteb task name and dataset id


@pytest.mark.parametrize("keyword", ["KorSTS", "Kor-STS", "korsts", "dkoterwa/kor-sts"])
def test_k_selects_by_mteb_task_name_column_and_dataset(
    pytester: pytest.Pytester, keyword: str
) -> None:
    result = pytester.runpytest(
        "--koembed-model=m", "--koembed-suite=ko-leaderboard-v1", "--collect-only", "-q",
        "-k", keyword,
    )  # fmt: skip
    ids = [line for line in result.outlines if line.startswith("koembed::")]
    assert ids == ["koembed::STS::Kor-STS"]


def test_k_selects_custom_tasks_by_their_task_name(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "--koembed-model=m", "--koembed-suite=sample", "--co", "-q", "-k", "KoembedSampleSTS"
    )
    ids = [line for line in result.outlines if line.startswith("koembed::")]
    assert ids == ["koembed::STS::sample-sts"]


# ---------------------------------------------------------------------------------------------
# the summary's model line


def test_model_line_leaves_out_what_is_not_known() -> None:
    line = model_line({"name": "m", "row_name": "m", "loader": "custom (x.Y)"})
    assert line == "model: m (loader custom (x.Y))"
    assert "?" not in model_line({"name": "m", "pooling": None, "device": "?"})
    loaded = {
        "row_name": "all-MiniLM-L6-v2",
        "name_source": "model card",
        "loader": "sentence-transformers",
        "pooling": "mean",
        "dtype": "fp32",
        "device": "cpu",
        "max_length": 256,
        "batch_size": 32,
        "dimension": 384,  # not shown for the built-in loaders, as before
    }
    assert model_line(loaded) == (
        "model: all-MiniLM-L6-v2 (loader sentence-transformers, pooling mean, dtype fp32, "
        "device cpu, max length 256, batch size 32; name from its model card)"
    )


CUSTOM_CONFTEST = """
import numpy as np
import pytest


class Bare:
    max_seq_length = 128
    device = "cpu"

    def encode(self, texts):
        rng = np.random.default_rng(0)
        return np.stack([rng.normal(size=8) + len(t) for t in texts])


class Declared(Bare):
    info = {"name": "declared", "loader": "custom (my.Model)", "pooling": "cls",
            "dimension": 8, "dtype": None}


@pytest.fixture(scope="session")
def koembed_encoder():
    import os
    return Declared() if os.environ.get("DECLARED") else Bare()
"""


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        (False, "model: m (loader custom (conftest.Bare), device cpu, max length 128)"),
        (True, "model: declared (loader custom (my.Model), pooling cls, dimension 8)"),
    ],
)
def test_custom_encoder_summary_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, declared: bool, expected: str
) -> None:
    if declared:
        monkeypatch.setenv("DECLARED", "1")
    pytester.makeconftest(CUSTOM_CONFTEST)
    result = pytester.runpytest("--koembed-model=m", "--koembed-suite=sample", "-k", "sts")
    assert result.ret == 0, result.stdout.str()
    lines = [line for line in result.outlines if line.startswith("model: ")]
    assert lines == [expected]


def test_example_custom_encoder_line(run_pytest, tmp_path: Path) -> None:
    repo = tmp_path / "custom_encoder"
    shutil.copytree(Path(__file__).resolve().parent.parent / "examples" / "custom_encoder", repo)
    result = run_pytest(
        repo, "--koembed-model=toy-char-ngram", "--koembed-suite=sample", "-k", "sts"
    )
    assert result.ret == 0, result.stdout
    result.fnmatch_lines(
        [
            "model: toy-char-ngram (loader custom (toy_encoder.ToyNgramEncoder), pooling sum of "
            "hashed character n-grams, dtype fp32, device cpu, normalize True, dimension 256)"
        ]
    )
