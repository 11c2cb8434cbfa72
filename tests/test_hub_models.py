"""``--koembed-model=<Hub id>`` end to end, from the Hub test server (tests/hubserver.py).

Every plugin run is a ``python -m pytest`` subprocess with a clean environment (``hub_env``: its
own ``HF_HOME``, ``HF_ENDPOINT`` the server, the socket guard), through the real
huggingface_hub / sentence-transformers / transformers code. The served repositories:

- ``koembed-models/minilm``: the shipped all-MiniLM-L6-v2 at ``main``, and at ``v2`` with CLS
  pooling and a maximum length of 128 (other scores);
- ``BAAI/bge-m3``: the same files under a ko-leaderboard-v1 row's id (the ``auto`` baseline);
- ``koembed-models/splade``: the tiny SPLADE of conftest's ``splade_dir``;
- ``koembed-models/gated`` and ``koembed-models/private``, opened by the token ``hf_right``.

The runs are shared through module-scoped fixtures (each one ~10-20 s); the error cases fail
while the Hub id is resolved, before any task runs (~2 s each).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PytestRun, hub_env

from pytest_koembed.cli import main as koembed
from pytest_koembed.models.naming import local_model_name

MODEL = "koembed-models/minilm"
ROW_ID = "BAAI/bge-m3"  # a ko-leaderboard-v1 row (Kor-STS 80.98 in baselines/ko-leaderboard-v1.csv)
SPARSE = "koembed-models/splade"
SAMPLE = ["--koembed-suite=sample"]
QUICK_TASKS = ("sample-sts", "sample-pairs", "sample-classification")
V2_TASKS = [*SAMPLE, "-k", " or ".join(QUICK_TASKS)]  # the v2 runs: the three quick tasks
DROP_AT = 20_000_000  # of model.safetensors' 90 MB: past huggingface_hub's first chunk


@dataclass
class Served:
    url: str
    main: str  # commit shas
    v2: str
    v2_dir: Path


@pytest.fixture(scope="module")
def served(
    hub_server: Any, minilm_dir: Path, splade_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Served:
    v2 = tmp_path_factory.mktemp("minilm-v2") / "model"  # a generic name: named from its card
    for src in minilm_dir.rglob("*"):
        if src.is_file():
            dest = v2 / src.relative_to(minilm_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(src)
    for rel, change in (
        (
            "1_Pooling/config.json",
            {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True},
        ),
        ("sentence_bert_config.json", {"max_seq_length": 128}),
    ):
        data = json.loads((minilm_dir / rel).read_text(encoding="utf-8")) | change
        (v2 / rel).unlink()
        (v2 / rel).write_text(json.dumps(data, indent=2), encoding="utf-8")
    repo = hub_server.add_repo(MODEL, {"main": minilm_dir, "v2": v2})
    hub_server.add_repo(ROW_ID, {"main": minilm_dir})
    hub_server.add_repo(SPARSE, {"main": splade_dir})
    small = tmp_path_factory.mktemp("small-model")
    (small / "config.json").write_bytes((minilm_dir / "config.json").read_bytes())
    hub_server.add_repo("koembed-models/gated", {"main": small}, gated=True, token="hf_right")
    hub_server.add_repo("koembed-models/private", {"main": small}, private=True, token="hf_right")
    return Served(hub_server.url, repo.refs["main"].sha, repo.refs["v2"].sha, v2)


def hub_pytest(
    served: Served, home: Path, *args: str, env: dict[str, str | None] | None = None
) -> PytestRun:
    """``python -m pytest ARGS`` in ``home`` against the server (``hub_env``), as users run it;
    ``env`` adds variables (None removes one)."""
    environ = hub_env(served.url, home)
    for name, value in (env or {}).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]
    proc = subprocess.run(
        [*command, *args], cwd=home, env=environ, capture_output=True, text=True, timeout=600
    )
    return PytestRun(proc.returncode, proc.stdout + proc.stderr)


@dataclass
class Run:
    result: PytestRun
    record: dict[str, Any]
    home: Path

    @property
    def values(self) -> dict[str, float]:
        return {t["column"]: t["value"] for t in self.record["tasks"]}


def _run(run: Callable[..., PytestRun], home: Path, *args: str, **kw: Any) -> Run:
    result = run(home, *args, "--koembed-json=run.json", **kw)
    assert result.ret == 0, result.stdout[-4000:]
    return Run(result, json.loads((home / "run.json").read_text(encoding="utf-8")), home)


def _local(run_pytest: Callable[..., PytestRun], tmp: pytest.TempPathFactory, *args: str) -> Run:
    return _run(run_pytest, tmp.mktemp("local-run"), *args)


def _hub(served: Served, tmp: pytest.TempPathFactory, *args: str, **kw: Any) -> Run:
    return _run(
        lambda home, *a, **k: hub_pytest(served, home, *a, **k), tmp.mktemp("hub"), *args, **kw
    )


# --- the shared runs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_main(run_pytest: Any, minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _local(run_pytest, tmp_path_factory, f"--koembed-model={minilm_dir}", *SAMPLE)


@pytest.fixture(scope="module")
def local_v2(run_pytest: Any, served: Served, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _local(run_pytest, tmp_path_factory, f"--koembed-model={served.v2_dir}", *V2_TASKS)


@dataclass
class Dropped:
    failed: PytestRun
    cache_after: list[str]  # the files of the model's cache after the dropped download
    rerun: Run


@pytest.fixture(scope="module")
def dropped_then_main(
    served: Served, hub_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Dropped:
    """The weights' download breaks off at every try; then, the drop off, the same run again
    in the same HF_HOME (the run without --koembed-revision the other tests read)."""
    home = tmp_path_factory.mktemp("hub-main")
    hub_server.drop_after(MODEL, "model.safetensors", DROP_AT, times=None)
    try:
        failed = hub_pytest(served, home, f"--koembed-model={MODEL}", *SAMPLE)
    finally:
        hub_server.clear_drops()
    cache = home / "hf-home" / "hub"
    after = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file())
    rerun = _run(
        lambda h, *a: hub_pytest(served, h, *a),
        home,
        f"--koembed-model={MODEL}",
        *SAMPLE,
        "--koembed-model-index=card.yaml",
    )
    return Dropped(failed, after, rerun)


@pytest.fixture(scope="module")
def hub_v2_branch(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _hub(
        served, tmp_path_factory, f"--koembed-model={MODEL}", "--koembed-revision=v2", *V2_TASKS
    )


@pytest.fixture(scope="module")
def hub_v2_sha(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _hub(
        served,
        tmp_path_factory,
        f"--koembed-model={MODEL}",
        f"--koembed-revision={served.v2}",
        *V2_TASKS,
    )


# --- revisions -----------------------------------------------------------------------------


def _usage_line(result: PytestRun) -> str:
    """The one line of a usage error (exit status 4), with no traceback and no task run."""
    assert result.ret == 4, result.stdout[-4000:]
    assert "Traceback" not in result.stdout and "passed" not in result.stdout, result.stdout
    errors = [line for line in result.lines if line.startswith("ERROR")]
    assert len(errors) == 1, result.stdout[-4000:]
    return errors[0]


@pytest.mark.slow
def test_a_hub_id_without_a_revision_is_main_with_the_local_values(
    dropped_then_main: Dropped, local_main: Run, served: Served
) -> None:
    hub = dropped_then_main.rerun
    model = hub.record["model"]
    assert (model["name"], model["row_name"], model["name_source"]) == (MODEL, MODEL, "hub")
    assert model["revision"] == served.main
    assert model["fingerprint"] == f"hub:{MODEL}@{served.main}"
    assert model["pooling"] == "mean" and model["max_length"] == 256
    assert len(hub.values) == 6 and hub.values == local_main.values


@pytest.mark.slow
def test_a_revision_by_branch_or_by_sha_runs_that_revision(
    hub_v2_branch: Run, hub_v2_sha: Run, local_v2: Run, local_main: Run, served: Served
) -> None:
    for run in (hub_v2_branch, hub_v2_sha):
        model = run.record["model"]
        assert model["revision"] == served.v2, model  # the branch resolved to its commit
        assert model["fingerprint"] == f"hub:{MODEL}@{served.v2}"
        assert (model["pooling"], model["max_length"]) == ("cls", 128)  # v2's own files
        assert model["row_name"] == MODEL
        assert list(run.values) == list(QUICK_TASKS) and run.values == local_v2.values
    assert served.v2 != served.main
    differing = [c for c in local_v2.values if local_v2.values[c] != local_main.values[c]]
    assert len(differing) == 3, differing  # the two revisions score differently


# --- naming --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_hub_id_is_named_by_its_id_a_local_copy_by_its_card(
    dropped_then_main: Dropped, local_main: Run, local_v2: Run, served: Served
) -> None:
    hub = dropped_then_main.rerun
    hub.result.fnmatch_lines(
        [
            f"model: {MODEL} (loader sentence-transformers, pooling mean, dtype fp32, *)",
            "no baseline: --koembed-baseline auto: suite 'sample' has no shipped leaderboard; *",
        ]
    )
    assert "name from" not in next(line for line in hub.result.lines if line.startswith("model:"))
    # the model card the run writes names the repository part, as published cards do
    card = yaml.safe_load((hub.home / "card.yaml").read_text(encoding="utf-8"))
    assert card["model-index"][0]["name"] == "minilm"
    # the same files as a local directory named "model": the card's title names them
    for local in (local_main, local_v2):
        assert local.record["model"]["row_name"] == "all-MiniLM-L6-v2"
        assert local.record["model"]["name_source"] == "model card"
        local.result.fnmatch_lines(["model: all-MiniLM-L6-v2 (*; name from its model card)"])
    # the snapshot the Hub run downloaded, passed as a directory, reads as its repo id
    snapshot = hub.home / "hf-home" / "hub" / "models--koembed-models--minilm" / "snapshots"
    assert local_model_name(snapshot / served.main) == (MODEL, "hub cache")


def test_a_local_directory_named_by_its_metadata_after_a_hub_id(
    minilm_dir: Path, tmp_path: Path
) -> None:
    """What a checkpoint directory with a generic name is called when its config.json's
    ``_name_or_path`` or its card's model-index names a Hub id."""
    by_config = tmp_path / "a" / "model"
    by_config.mkdir(parents=True)
    config = json.loads((minilm_dir / "config.json").read_text(encoding="utf-8"))
    (by_config / "config.json").write_text(json.dumps(config | {"_name_or_path": ROW_ID}), "utf-8")
    assert local_model_name(by_config) == (ROW_ID, "config.json _name_or_path")
    by_card = tmp_path / "b" / "model"
    by_card.mkdir(parents=True)
    (by_card / "config.json").write_text(json.dumps(config), "utf-8")
    (by_card / "README.md").write_text(f"---\nmodel-index:\n- name: {ROW_ID}\n---\n", "utf-8")
    assert local_model_name(by_card) == (ROW_ID, "model card")  # the card wins over the config
    # the card the plugin writes names only the repository part: the org is not in it
    (by_card / "README.md").write_text("---\nmodel-index:\n- name: bge-m3\n---\n", "utf-8")
    assert local_model_name(by_card) == ("bge-m3", "model card")


# --- the auto baseline of a Hub id ---------------------------------------------------------------


@pytest.fixture(scope="module")
def kor_sts_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local layout of ko-leaderboard-v1's Kor-STS (the data never comes from the Hub here)."""
    source = tmp_path_factory.mktemp("kor-sts-rows") / "KorSTS" / "default" / "test"
    source.mkdir(parents=True)
    pairs = [
        ("오늘 아침 기온이 영하로 떨어졌다.", "아침 기온이 영하까지 내려갔다.", 4.5),
        ("중앙은행이 기준금리를 동결했다.", "기준금리가 그대로 유지되었다.", 4.0),
        ("대표팀이 결승전에서 승리를 거뒀다.", "잠이 부족하면 면역력이 떨어진다.", 0.2),
        ("수출 실적이 석 달 연속 증가했다.", "수출이 세 달째 늘었다.", 4.2),
        ("하루 30분 걷기는 심장 건강에 좋다.", "주식 시장이 큰 폭으로 하락했다.", 0.0),
        ("고양이가 소파 위에서 잠을 잔다.", "소파에서 고양이가 자고 있다.", 4.8),
        ("내일은 전국에 비가 내리겠습니다.", "이 영화는 정말 재미있었어요.", 0.4),
        ("그 선수는 부상으로 시즌을 마감했다.", "부상 때문에 그 선수의 시즌이 끝났다.", 4.6),
    ]
    rows = [{"sentence1": a, "sentence2": b, "score": s} for a, b, s in pairs]
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (source / "pairs.jsonl").write_text(lines, encoding="utf-8")
    mirror = tmp_path_factory.mktemp("kor-sts-mirror")
    command = ["mirror", str(mirror), "--task", "Kor-STS", "--from", str(source.parents[2])]
    assert koembed(command) == 0
    return mirror


def _kor_sts(served: Served, home: Path, model: str, mirror: Path) -> PytestRun:
    suite = ["--koembed-suite=ko-leaderboard-v1", f"--koembed-data-dir={mirror}", "-k", "Kor-STS"]
    return hub_pytest(served, home, f"--koembed-model={model}", *suite)


@pytest.mark.slow
def test_auto_finds_the_leaderboard_row_of_a_hub_id(
    served: Served, kor_sts_mirror: Path, tmp_path: Path
) -> None:
    result = _kor_sts(served, tmp_path, ROW_ID, kor_sts_mirror)
    assert "no baseline" not in result.stdout, result.stdout[-3000:]
    result.fnmatch_lines(
        [
            "task *category*value*baseline*delta*verdict*",
            "Kor-STS *STS * 80.98 *",  # the published row's Kor-STS value is the baseline
            f"model: {ROW_ID} (*",
        ]
    )
    assert "ko-leaderboard-v1 row 'BAAI/bge-m3'" in result.stdout, result.stdout[-3000:]


@pytest.mark.slow
def test_auto_for_a_hub_id_not_on_the_leaderboard_is_one_line(
    served: Served, kor_sts_mirror: Path, tmp_path: Path
) -> None:
    result = _kor_sts(served, tmp_path, MODEL, kor_sts_mirror)
    assert result.ret == 0, result.stdout[-3000:]
    lines = [line for line in result.lines if "--koembed-baseline auto" in line]
    assert lines == [
        f"no baseline: --koembed-baseline auto: no row {MODEL!r} in ko-leaderboard-v1; tasks "
        "pass unchecked (compare with --koembed-baseline PATH or leaderboard:ROW)"
    ]


# --- a sparse model ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sparse_hub_model_scores_as_its_local_directory(
    served: Served, run_pytest: Any, splade_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    task = ["--koembed-suite=sample", "-k", "sample-retrieval"]
    hub = _hub(served, tmp_path_factory, f"--koembed-model={SPARSE}", *task)
    local = _local(run_pytest, tmp_path_factory, f"--koembed-model={splade_dir}", *task)
    model = hub.record["model"]
    assert (model["loader"], model["encoder_type"]) == ("sentence-transformers-sparse", "sparse")
    assert model["fingerprint"] == f"hub:{SPARSE}@{model['revision']}"
    assert list(hub.values) == ["sample-retrieval"] and hub.values == local.values
    sparsity = [t["sparsity"] for t in (hub.record["tasks"][0], local.record["tasks"][0])]
    assert sparsity[0] == sparsity[1]


def test_a_sparse_hub_model_with_model_type_dense_is_one_line(
    served: Served, tmp_path: Path
) -> None:
    result = hub_pytest(
        served, tmp_path, f"--koembed-model={SPARSE}", "--koembed-model-type=dense", *SAMPLE
    )
    assert _usage_line(result).startswith(
        f"ERROR: --koembed-model-type dense: {SPARSE!r} is a sentence-transformers SparseEncoder"
    )


# --- the one-line errors -------------------------------------------------------------------

ERRORS = {
    "unknown repo": (
        ["--koembed-model=koembed-models/nope"],
        {},
        "ERROR: --koembed-model 'koembed-models/nope': no such model on the Hub, or a private one "
        "the token in use cannot read (RepositoryNotFoundError); check the id, or log in *",
    ),
    "unknown revision": (
        [f"--koembed-model={MODEL}", "--koembed-revision=no-such-branch"],
        {},
        f"ERROR: --koembed-model {MODEL!r}: revision 'no-such-branch' does not exist on the Hub; "
        "pass one of its branches, tags or commit shas to --koembed-revision, or drop *",
    ),
    "gated, no token": (
        ["--koembed-model=koembed-models/gated"],
        {},
        "ERROR: --koembed-model 'koembed-models/gated' is a gated model and no token was sent "
        "(401); accept its conditions on http://127.0.0.1:*/koembed-models/gated, then log in *",
    ),
    "gated, a wrong token": (
        ["--koembed-model=koembed-models/gated"],
        {"HF_TOKEN": "hf_wrong", "HF_HUB_DISABLE_IMPLICIT_TOKEN": None},
        "ERROR: --koembed-model 'koembed-models/gated' is a gated model and the Hub refused the "
        "token in use (403); accept its conditions on http://127.0.0.1:*/koembed-models/gated *",
    ),
    "private": (
        ["--koembed-model=koembed-models/private"],
        {},
        "ERROR: --koembed-model 'koembed-models/private': no such model on the Hub, or a private "
        "one the token in use cannot read *",
    ),
    "offline, empty cache": (
        [f"--koembed-model={MODEL}"],
        {"HF_HUB_OFFLINE": "1"},
        f"ERROR: --koembed-model {MODEL!r}: HF_HUB_OFFLINE is set and the model is not in the "
        "local Hugging Face cache (*); run once with the Hub reachable (HF_HUB_OFFLINE unset) *",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_a_hub_model_that_cannot_be_had_is_one_line(
    case: str, served: Served, hub_server: Any, tmp_path: Path
) -> None:
    args, env, pattern = ERRORS[case]
    before = len(hub_server.requests("GET", "/model.safetensors"))
    result = hub_pytest(served, tmp_path, *args, *SAMPLE, env=env)
    line = _usage_line(result)
    pytest.LineMatcher([line]).fnmatch_lines([pattern])
    assert len(hub_server.requests("GET", "/model.safetensors")) == before  # nothing downloaded


def test_the_right_token_opens_the_gated_and_private_repos(served: Served, tmp_path: Path) -> None:
    """What the plugin resolves a Hub id with sends the user's token (HF_TOKEN): the one that
    opens the repositories gets their files, the refusals above are the Hub's."""
    code = """
import json
from pytest_koembed.models.loading import locate_model
found = [locate_model(r, None) for r in ("koembed-models/gated", "koembed-models/private")]
print(json.dumps([[loc.revision, sorted(p.name for p in loc.path.iterdir())] for loc in found]))
"""
    environ = hub_env(served.url, tmp_path) | {"HF_TOKEN": "hf_right"}
    environ.pop("HF_HUB_DISABLE_IMPLICIT_TOKEN")
    proc = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [files for _, files in found] == [["config.json"], ["config.json"]]
    assert all(len(sha) == 40 for sha, _ in found)


@pytest.mark.slow
def test_a_dropped_download_is_one_line_and_a_rerun_recovers(
    dropped_then_main: Dropped, local_main: Run, minilm_dir: Path
) -> None:
    line = _usage_line(dropped_then_main.failed)
    pytest.LineMatcher([line]).fnmatch_lines(
        [
            f"ERROR: --koembed-model {MODEL!r}: downloading the model from the Hub failed "
            "(RemoteProtocolError: *); run again to finish the download *"
        ]
    )
    weights = hashlib.sha256((minilm_dir / "model.safetensors").read_bytes()).hexdigest()
    kept = dropped_then_main.cache_after
    assert not [f for f in kept if f.endswith(("/model.safetensors", ".incomplete", weights))]
    assert any(f.endswith("/tokenizer.json") for f in kept), kept  # the complete files stay
    assert dropped_then_main.rerun.values == local_main.values
