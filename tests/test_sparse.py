"""Sparse (SPLADE) models: loaded as sentence-transformers SparseEncoders, scored through mteb's
SparseEncoderWrapper, with their sparsity in the run record, and compared with the sparse table.

The model is a tiny random SPLADE built here: a 2-layer BERT masked LM on the packaged MiniLM's
WordPiece vocabulary (30,522 tokens), with SPLADE max pooling, saved by sentence-transformers.
Its output bias is pushed down so that its vectors are sparse (a few hundred active dimensions).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from pytest_koembed.errors import KoembedError

pytestmark = pytest.mark.usefixtures("offline")

TEXTS = [
    "한국어 문장 임베딩 모델을 평가합니다.",
    "검색 질의",
    "오늘 서울의 날씨는 맑고 따뜻합니다. 내일은 비가 온다고 합니다.",
    "고양이",
    "주식 시장이 큰 폭으로 하락했다.",
]


# --- loading ----------------------------------------------------------------------------------


def test_detected_from_the_model_files(splade_dir: Path, minilm_dir: Path, tmp_path: Path) -> None:
    from pytest_koembed.models.model_files import _read_modules, declares_sparse_encoder

    assert declares_sparse_encoder(splade_dir, _read_modules(splade_dir))
    assert not declares_sparse_encoder(minilm_dir, _read_modules(minilm_dir))
    # Without config_sentence_transformers.json: a sparse_encoder module in modules.json says it.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "modules.json").write_text((splade_dir / "modules.json").read_text())
    assert declares_sparse_encoder(bare, _read_modules(bare))
    (bare / "modules.json").write_text((minilm_dir / "modules.json").read_text())
    assert not declares_sparse_encoder(bare, _read_modules(bare))


def test_loaded_sparse_encoder_matches_sentence_transformers(splade_dir: Path) -> None:
    from sentence_transformers.sparse_encoder import SparseEncoder

    from pytest_koembed.models.encoders import EncoderOptions, LoadedSparseEncoder
    from pytest_koembed.models.loading import load_encoder

    encoder = load_encoder(EncoderOptions(model=str(splade_dir), batch_size=2))
    assert isinstance(encoder, LoadedSparseEncoder)
    info = encoder.info
    assert (info.loader, info.encoder_type, info.pooling) == (
        "sentence-transformers-sparse",
        "sparse",
        "splade-max",
    )
    assert (info.dimension, info.similarity, info.normalize) == (30522, "dot", False)
    reference = SparseEncoder(str(splade_dir), device="cpu")
    for method in ("encode_query", "encode_document", "encode"):
        # batches of 2 sorted by length, put back in input order
        ours = getattr(encoder, method)(TEXTS)
        theirs = getattr(reference, method)(TEXTS, prompt="")
        assert ours.is_sparse and ours.shape == (len(TEXTS), 30522)
        assert torch.allclose(ours.to_dense(), theirs.to_dense(), atol=1e-5)
        active = (ours.to_dense() != 0).sum(dim=1)
        assert bool(((active > 20) & (active < 3000)).all()), active


def test_model_type_that_contradicts_the_files_is_one_line(
    splade_dir: Path, minilm_dir: Path
) -> None:
    from pytest_koembed.models.loading import check_model_type

    with pytest.raises(KoembedError) as dense:
        check_model_type(str(splade_dir), "dense")
    assert str(dense.value) == (
        f"--koembed-model-type dense: {str(splade_dir)!r} is a sentence-transformers "
        "SparseEncoder (SPLADE: vocabulary-sized vectors scored by dot product), not a dense "
        "model; drop --koembed-model-type or pass sparse"
    )
    with pytest.raises(KoembedError) as sparse:
        check_model_type(str(minilm_dir), "sparse")
    assert str(sparse.value).startswith(
        f"--koembed-model-type sparse: {str(minilm_dir)!r} is a dense sentence-transformers "
        "model (modules.json has no SparseEncoder module"
    )
    for model, kind in ((splade_dir, "sparse"), (minilm_dir, "dense"), (splade_dir, "auto")):
        check_model_type(str(model), kind)  # agrees: nothing to say


def test_model_type_option_is_checked_before_the_run(
    run_pytest, splade_dir: Path, tmp_path: Path
) -> None:
    # in an empty directory: splade_dir's parent is the session's base temp, where other tests'
    # projects (conftest.py, ini files) may lie
    result = run_pytest(
        tmp_path,
        f"--koembed-model={splade_dir}",
        "--koembed-model-type=dense",
        "--koembed-suite=sample",
        "--collect-only",
    )
    assert result.ret == 4, result.stdout  # a usage error
    errors = [line for line in result.lines if line.startswith("ERROR:")]
    assert errors == [
        f"ERROR: --koembed-model-type dense: {str(splade_dir)!r} is a sentence-transformers "
        "SparseEncoder (SPLADE: vocabulary-sized vectors scored by dot product), not a dense "
        "model; drop --koembed-model-type or pass sparse"
    ]
    assert "Traceback" not in result.stdout


# --- a sparse run of the sample suite's retrieval task ----------------------------------------


@pytest.fixture(scope="module")
def sparse_run(
    run_pytest, splade_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Any, dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("sparse-run")
    record = workdir / "run.json"
    result = run_pytest(
        workdir,
        f"--koembed-model={splade_dir}",
        "--koembed-suite=sample",
        "-k",
        "sample-retrieval",
        f"--koembed-json={record}",
    )
    return result, json.loads(record.read_text(encoding="utf-8"))


def test_sparse_run_record_says_sparse_with_its_sparsity(sparse_run) -> None:
    result, record = sparse_run
    assert result.ret == 0, result.stdout
    model = record["model"]
    assert model["loader"] == "sentence-transformers-sparse"
    assert model["encoder_type"] == "sparse"
    assert (model["similarity"], model["dimension"]) == ("dot", 30522)
    [task] = record["tasks"]
    assert task["column"] == "sample-retrieval" and task["status"] == "ok"
    sparsity = task["sparsity"]
    queries, documents = task["sizes"]["queries"], task["sizes"]["documents"]
    assert sparsity["vocab_size"] == 30522
    assert sparsity["texts"] == queries + documents == task["texts"]["encoded"]
    assert task["texts"]["from_cache"] == 0  # the dense embedding store is not used
    by_role = sparsity["by_role"]
    assert (by_role["query"]["texts"], by_role["document"]["texts"]) == (queries, documents)
    assert 20 < by_role["query"]["mean_active_dims"] < by_role["document"]["mean_active_dims"]
    assert by_role["document"]["mean_active_dims"] < 3000
    mean = sparsity["mean_active_dims"]
    assert mean == pytest.approx(
        (
            by_role["query"]["mean_active_dims"] * queries
            + by_role["document"]["mean_active_dims"] * documents
        )
        / (queries + documents)
    )
    result.fnmatch_lines(
        [
            f"sparsity: mean active dims per text, of 30,522: sample-retrieval {mean:.1f} "
            f"(query {by_role['query']['mean_active_dims']:.1f}, document "
            f"{by_role['document']['mean_active_dims']:.1f})",
            "model: * (loader sentence-transformers-sparse, pooling splade-max, dtype fp32, *",
        ]
    )


def test_sparse_run_scores_equal_plain_mteb(sparse_run, splade_dir: Path) -> None:
    import mteb
    from mteb.models import SparseEncoderWrapper
    from sentence_transformers.sparse_encoder import SparseEncoder

    from pytest_koembed.data.prepare import prepare_task
    from pytest_koembed.protocol.suite import load_suite

    _, record = sparse_run
    [task] = record["tasks"]
    spec = load_suite("sample").task("sample-retrieval")
    wrapper = SparseEncoderWrapper(SparseEncoder(str(splade_dir), device="cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = mteb.evaluate(
            wrapper,
            prepare_task(spec, None).task,
            cache=None,
            overwrite_strategy="always",
            show_progress_bar=False,
            encode_kwargs={"batch_size": 32, "show_progress_bar": False},
        )
    [scores] = result.task_results[0].scores["test"]
    compared = [k for k, v in task["scores"].items() if v is not None]
    assert "ndcg_at_10" in compared and len(compared) > 20
    for key in compared:
        assert task["scores"][key] == pytest.approx(scores[key], abs=1e-12), key
    assert task["value"] == pytest.approx(50 * (scores["ndcg_at_5"] + scores["ndcg_at_10"]))


# --- which leaderboard table a sparse run is compared with ------------------------------------


def test_baseline_auto_looks_in_the_table_of_the_models_kind() -> None:
    from pytest_koembed.gate.verdicts import make_policy
    from pytest_koembed.protocol.suite import load_suite

    policy = make_policy(load_suite("ko-leaderboard-v2"), baseline="auto")
    sparse = policy.resolve("yjoonjang/splade-ko-v1", "sparse")
    assert sparse.baseline is not None
    assert sparse.baseline.source == "ko-leaderboard-v2-sparse row 'yjoonjang/splade-ko-v1'"
    # the same name run as a dense model is not compared with the sparse table
    dense = policy.resolve("yjoonjang/splade-ko-v1", "dense")
    assert dense.baseline is None
    assert dense.note is not None
    assert "no row 'yjoonjang/splade-ko-v1' in ko-leaderboard-v2-dense" in dense.note
    dense_row = "dragonkue/snowflake-arctic-embed-l-v2.0-ko"
    assert policy.resolve(dense_row, "dense").baseline is not None
    assert policy.resolve(dense_row, "sparse").baseline is None


def test_rank_of_a_sparse_run_is_among_the_sparse_models() -> None:
    from pytest_koembed.protocol.suite import load_suite
    from pytest_koembed.stats.intervals import rank_fields

    suite = load_suite("ko-leaderboard-v2")
    sparse = rank_fields(suite, suite.scheme, "my-splade", 99.0, None, encoder_type="sparse")
    dense = rank_fields(suite, suite.scheme, "my-dense", 99.0, None)
    assert sparse is not None and dense is not None
    assert (sparse["leaderboard"], sparse["rank"]) == ("ko-leaderboard-v2-sparse", 1)
    assert (dense["leaderboard"], dense["rank"]) == ("ko-leaderboard-v2-dense", 1)
    assert sparse["of"] < dense["of"]  # 5 + 1 sparse rows, 12 + 1 dense rows


def _v2_record(path: Path, row_name: str, model: dict[str, Any]) -> Path:
    from pytest_koembed.protocol.suite import load_suite

    suite = load_suite("ko-leaderboard-v2")
    tasks = [
        {"column": t.column, "status": "ok", "value": 99.0, "shown": 99.0} for t in suite.tasks
    ]
    record = {
        "model": {"name": row_name, "row_name": row_name, **model},
        "suite": {"name": suite.name},
        "scheme": suite.scheme,
        "tasks": tasks,
    }
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def test_leaderboard_add_puts_a_sparse_run_in_the_sparse_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_koembed.cli import main

    sparse = _v2_record(
        tmp_path / "sparse.json",
        "my-splade",
        {"loader": "sentence-transformers-sparse", "encoder_type": "sparse"},
    )
    dense = _v2_record(tmp_path / "dense.json", "my-dense", {"loader": "sentence-transformers"})
    assert main(["leaderboard", "--add", str(sparse), "--add", str(dense)]) == 0
    out = capsys.readouterr().out
    dense_table, sparse_table = out.split("# Sparse 임베딩 모델 IR 순위")
    assert dense_table.startswith("# Dense 임베딩 모델 IR 순위")
    assert "| my-dense " in dense_table and "my-splade" not in dense_table
    assert "| my-splade " in sparse_table and "my-dense" not in sparse_table
    [row] = [line for line in sparse_table.splitlines() if "my-splade" in line]
    assert row.endswith("|      1 |")  # 99 everywhere: first among the published sparse models


def test_row_of_a_sparse_run_is_ranked_in_the_sparse_table(tmp_path: Path) -> None:
    from pytest_koembed.protocol.suite import load_suite
    from pytest_koembed.records import read_run_record
    from pytest_koembed.reports.publish import record_rows

    path = _v2_record(tmp_path / "sparse.json", "my-splade", {"encoder_type": "sparse"})
    text = record_rows(read_run_record(path), load_suite("ko-leaderboard-v2"))
    assert text.startswith("# Sparse 임베딩 모델 IR 순위\n")
    assert "Dense" not in text and text.count("my-splade") == 1
