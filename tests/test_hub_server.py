"""The Hub test server's contract, through the real client code (huggingface_hub, datasets).

Each client call runs in a subprocess with a clean environment (``run_hub``: its own
``HF_HOME``, ``HF_ENDPOINT`` the server, the socket guard). The server and its routes are in
tests/hubserver.py; the last test runs the plugin on a model served from it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import PytestRun

MODEL = "koembed-test/minilm"
PINNED_SHA = "0f0e0d0c0b0a09080706050403020100ffeeddcc"  # unknown to the server: answered anyway
KO_ROWS = [
    {"sentence1": "오늘 날씨가 맑다.", "sentence2": "하늘이 맑고 화창하다.", "score": 4.2},
    {"sentence1": "고양이가 잠을 잔다.", "sentence2": "주식 시장이 하락했다.", "score": 0.0},
    {"sentence1": "검색 질의에 답한다.", "sentence2": "질문에 맞는 문서를 찾는다.", "score": 3.1},
]
Run = Callable[..., Any]


@dataclass
class Served:
    main: str  # commit shas
    v2: str
    v2_dir: Path


def _read_json_line(proc: Any) -> Any:
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def served(hub_server: Any, minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Served:
    """MiniLM at ``main``, ``v2`` with another model card; gated, private, pinned, dataset."""
    v2 = tmp_path_factory.mktemp("minilm-v2")
    for src in minilm_dir.rglob("*"):
        if src.is_file():
            dest = v2 / src.relative_to(minilm_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(src)
    (v2 / "README.md").unlink()
    card = (minilm_dir / "README.md").read_text(encoding="utf-8")
    (v2 / "README.md").write_text(card + "\n\nRevision 2 of the test repository.\n", "utf-8")
    repo = hub_server.add_repo(MODEL, {"main": minilm_dir, "v2": v2})
    for name in ("drop-once", "drop-always"):  # drop switches stay off the shared repository
        hub_server.add_repo(f"koembed-test/minilm-{name}", {"main": minilm_dir})
    small = tmp_path_factory.mktemp("small-model")
    shutil.copy(minilm_dir / "config.json", small / "config.json")
    hub_server.add_repo("koembed-test/gated", {"main": small}, gated=True, token="hf_right")
    hub_server.add_repo("koembed-test/private", {"main": small}, private=True, token="hf_right")
    hub_server.add_repo("koembed-test/pinned", {"main": small}, any_sha="main")
    odd = hub_server.add_repo("koembed-test/inconsistent", {"main": small})
    odd.file_commit = "1" * 40  # its files claim another commit than its API
    data = tmp_path_factory.mktemp("ko-sts-dataset")
    (data / "data").mkdir()
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in KO_ROWS)
    (data / "data" / "test.jsonl").write_text(lines, encoding="utf-8")
    (data / "README.md").write_text("---\nlanguage: ko\n---\n# Korean STS rows\n", "utf-8")
    hub_server.add_repo("koembed-test/ko-sts", {"main": data}, kind="dataset")
    return Served(repo.refs["main"].sha, repo.refs["v2"].sha, v2)


def test_the_guard_refuses_an_outside_address(run_hub: Run, hub_server: Any) -> None:
    code = f"""
import json, socket
out = {{"guard": getattr(socket, "koembed_guard", False)}}
try:
    socket.create_connection(("10.255.255.1", 80), timeout=3)
    out["outside"] = "connected"
except OSError as exc:
    out["outside"] = str(exc)
socket.create_connection(("127.0.0.1", {hub_server.port}), timeout=3).close()
print(json.dumps(out))
"""
    out = _read_json_line(run_hub(code))
    assert out["guard"] is True
    assert out["outside"].startswith("koembed socket guard: connection refused"), out


def test_snapshot_and_file_downloads_at_two_revisions(
    run_hub: Run, served: Served, minilm_dir: Path
) -> None:
    code = f"""
import json, socket
from pathlib import Path
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
assert socket.koembed_guard
main = Path(snapshot_download({MODEL!r}))
v2 = Path(snapshot_download({MODEL!r}, revision="v2"))
card_main = Path(hf_hub_download({MODEL!r}, "README.md"))
card_v2 = Path(hf_hub_download({MODEL!r}, "README.md", revision="v2"))
pinned = Path(hf_hub_download("koembed-test/pinned", "config.json", revision={PINNED_SHA!r}))
info, info_v2 = HfApi().model_info({MODEL!r}), HfApi().model_info({MODEL!r}, revision="v2")
print(json.dumps({{
    "main": main.name, "v2": v2.name, "card_main": card_main.parent.name,
    "card_v2": card_v2.parent.name, "pinned": pinned.parent.name,
    "files": sorted(p.relative_to(main).as_posix() for p in main.rglob("*") if p.is_file()),
    "v2_card": (v2 / "README.md").read_text(), "main_card": (main / "README.md").read_text(),
    "weights": (v2 / "model.safetensors").read_bytes() == (main / "model.safetensors").read_bytes(),
    "info": [info.sha, info_v2.sha], "siblings": sorted(s.rfilename for s in info.siblings),
}}))
"""
    out = _read_json_line(run_hub(code))
    local = sorted(
        p.relative_to(minilm_dir).as_posix() for p in minilm_dir.rglob("*") if p.is_file()
    )
    assert out["main"] == out["card_main"] == served.main
    assert out["v2"] == out["card_v2"] == served.v2 != served.main
    assert out["pinned"] == PINNED_SHA
    assert out["files"] == out["siblings"] == local
    assert out["main_card"] == (minilm_dir / "README.md").read_text(encoding="utf-8")
    assert out["v2_card"] == (served.v2_dir / "README.md").read_text(encoding="utf-8")
    assert out["weights"] is True
    assert out["info"] == [served.main, served.v2]


def _http(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        return urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as exc:
        return exc


def test_the_raw_routes(hub_server: Any, served: Served, minilm_dir: Path) -> None:
    """HEAD headers, Range answers, tree and paths-info, as the clients read them."""
    weights = (minilm_dir / "model.safetensors").read_bytes()
    base = f"{hub_server.url}/{MODEL}/resolve"
    head = _http(f"{base}/main/model.safetensors", "HEAD")
    assert head.status == 200 and head.headers["X-Repo-Commit"] == served.main
    assert head.headers["ETag"] == f'"{hashlib.sha256(weights).hexdigest()}"'
    assert int(head.headers["Content-Length"]) == len(weights)
    config = (minilm_dir / "config.json").read_bytes()
    git_sha1 = hashlib.sha1(b"blob %d\0" % len(config) + config).hexdigest()
    assert _http(f"{base}/v2/config.json", "HEAD").headers["ETag"] == f'"{git_sha1}"'
    part = _http(f"{base}/{served.v2}/model.safetensors", headers={"Range": "bytes=10-19"})
    assert part.status == 206 and part.read() == weights[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(weights)}"
    assert part.headers["X-Repo-Commit"] == served.v2
    past = _http(f"{base}/main/config.json", headers={"Range": f"bytes={len(config)}-"})
    assert past.status == 416
    tree = json.load(_http(f"{hub_server.url}/api/models/{MODEL}/tree/main?recursive=true"))
    assert any(e["type"] == "directory" and e["path"] == "1_Pooling" for e in tree)
    assert {e["path"] for e in tree if e["type"] == "file"} >= {"1_Pooling/config.json"}
    top = json.load(_http(f"{hub_server.url}/api/models/{MODEL}/tree/main"))
    assert "1_Pooling/config.json" not in {e["path"] for e in top}


def test_paths_info_through_the_client(run_hub: Run, served: Served) -> None:
    code = f"""
import json
from huggingface_hub import HfApi
api = HfApi()
info = api.get_paths_info({MODEL!r}, ["config.json", "1_Pooling", "nope.txt"], revision="v2")
tree = api.list_repo_tree({MODEL!r}, path_in_repo="1_Pooling", revision={served.main!r})
print(json.dumps({{
    "info": [(type(e).__name__, e.path) for e in info],
    "lfs": [e.lfs is not None for e in api.get_paths_info({MODEL!r}, ["model.safetensors"])],
    "tree": [e.path for e in tree],
}}))
"""
    out = _read_json_line(run_hub(code))
    assert out["info"] == [["RepoFile", "config.json"], ["RepoFolder", "1_Pooling"]]
    assert out["lfs"] == [True]
    assert out["tree"] == ["1_Pooling/config.json"]


def test_the_hub_errors_raise_the_clients_own_exceptions(run_hub: Run, served: Served) -> None:
    code = f"""
import json
from huggingface_hub import HfApi, hf_hub_download
def attempt(call):
    try:
        call()
        return "ok"
    except Exception as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return f"{{type(exc).__name__}} {{status}}"
api = HfApi()
print(json.dumps({{
    "no repo": attempt(lambda: api.model_info("koembed-test/nope")),
    "no repo file": attempt(lambda: hf_hub_download("koembed-test/nope", "config.json")),
    "gated info": attempt(lambda: api.model_info("koembed-test/gated")),
    "gated": attempt(lambda: hf_hub_download("koembed-test/gated", "config.json")),
    "gated wrong token": attempt(
        lambda: hf_hub_download("koembed-test/gated", "config.json", token="hf_wrong")),
    "gated token": attempt(
        lambda: hf_hub_download("koembed-test/gated", "config.json", token="hf_right")),
    "private": attempt(lambda: api.model_info("koembed-test/private")),
    "private token": attempt(lambda: api.model_info("koembed-test/private", token="hf_right")),
    "revision": attempt(lambda: api.model_info({MODEL!r}, revision="no-such-branch")),
    "revision file": attempt(lambda: hf_hub_download({MODEL!r}, "config.json", revision="nope")),
    "entry": attempt(lambda: hf_hub_download({MODEL!r}, "no-such-file.txt")),
}}))
"""
    assert _read_json_line(run_hub(code)) == {
        "no repo": "RepositoryNotFoundError 401",
        "no repo file": "RepositoryNotFoundError 401",
        "gated info": "ok",
        "gated": "GatedRepoError 401",
        "gated wrong token": "GatedRepoError 403",
        "gated token": "ok",
        "private": "RepositoryNotFoundError 401",
        "private token": "ok",
        "revision": "RevisionNotFoundError 404",
        "revision file": "RevisionNotFoundError 404",
        "entry": "RemoteEntryNotFoundError 404",
    }


def test_an_inconsistent_commit_is_one_line_naming_it(run_hub: Run, served: Served) -> None:
    """Found by this server: the snapshot directory is missing, once reported as 'a file'."""
    code = """
from pytest_koembed.errors import KoembedError
from pytest_koembed.models.loading import _locate
try:
    print(_locate("koembed-test/inconsistent", None))
except KoembedError as exc:
    print(exc)
"""
    proc = run_hub(code)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("--koembed-model 'koembed-test/inconsistent': the Hub download left no")
    assert "X-Repo-Commit may disagree" in line


DROP_AT = 20_000_000  # of model.safetensors' 90 MB
DOWNLOAD_WEIGHTS = """
import hashlib, json
from pathlib import Path
from huggingface_hub import hf_hub_download
try:
    path = Path(hf_hub_download({repo!r}, "model.safetensors"))
    print(json.dumps({{"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}}))
except Exception as exc:
    print(json.dumps({{"error": type(exc).__name__}}))
"""


def test_a_dropped_download_resumes_with_range(
    run_hub: Run, hub_server: Any, served: Served, minilm_dir: Path
) -> None:
    repo = "koembed-test/minilm-drop-once"
    # past huggingface_hub's first 10 MiB chunk: what it wrote before the drop is kept
    hub_server.drop_after(repo, "model.safetensors", DROP_AT, times=1)
    out = _read_json_line(run_hub(DOWNLOAD_WEIGHTS.format(repo=repo), timeout=120))
    weights = hashlib.sha256((minilm_dir / "model.safetensors").read_bytes()).hexdigest()
    assert out == {"sha256": weights}
    assert _resumed_at(hub_server, repo) == [_resumed_at(hub_server, repo)[0]]


def _resumed_at(hub_server: Any, repo: str) -> list[int]:
    """The offsets that GETs of ``repo``'s weights resumed at (``Range: bytes=N-``)."""
    ranges = [r["range"] for r in hub_server.requests("GET", f"/{repo}/resolve/")]
    offsets = [int(r.removeprefix("bytes=").rstrip("-")) for r in ranges if r]
    assert all(0 < n <= DROP_AT for n in offsets), ranges
    assert offsets, f"no GET resumed with a Range header: {ranges}"
    return offsets


def test_a_download_that_keeps_dropping_leaves_no_file_and_a_rerun_recovers(
    run_hub: Run, hub_server: Any, served: Served, minilm_dir: Path, tmp_path: Path
) -> None:
    repo = "koembed-test/minilm-drop-always"
    hub_server.drop_after(repo, "model.safetensors", DROP_AT, times=None)
    try:
        failed = _read_json_line(run_hub(DOWNLOAD_WEIGHTS.format(repo=repo), timeout=120))
    finally:
        hub_server.clear_drops()
    assert failed == {"error": "RemoteProtocolError"}  # httpx: the body ended early
    cache = tmp_path / "hf-home" / "hub" / "models--koembed-test--minilm-drop-always"
    weights = (minilm_dir / "model.safetensors").read_bytes()
    digest = hashlib.sha256(weights).hexdigest()
    assert not list(cache.glob("snapshots/*/model.safetensors"))
    assert not (cache / "blobs" / digest).exists()
    assert _read_json_line(run_hub(DOWNLOAD_WEIGHTS.format(repo=repo))) == {"sha256": digest}


def test_load_dataset_through_the_server(run_hub: Run, hub_server: Any, served: Served) -> None:
    code = """
import json
import datasets
rows = datasets.load_dataset("koembed-test/ko-sts", split="test")
print(json.dumps({"rows": rows.to_list(), "splits": list(datasets.get_dataset_split_names(
    "koembed-test/ko-sts"))}, ensure_ascii=False))
"""
    out = _read_json_line(run_hub(code, timeout=300))
    assert out == {"rows": KO_ROWS, "splits": ["test"]}
    fetched = hub_server.requests("GET", "/datasets/koembed-test/ko-sts/resolve/")
    assert any(r["path"].endswith("/data/test.jsonl") for r in fetched), fetched


def _values(record_path: Path) -> dict[str, float]:
    record = json.loads(record_path.read_text(encoding="utf-8"))
    return {t["column"]: t["value"] for t in record["tasks"]}


@pytest.mark.slow
def test_the_plugin_runs_a_hub_model_from_the_server(
    run_hub: Run,
    served: Served,
    minilm_dir: Path,
    tmp_path: Path,
    run_pytest: Callable[..., PytestRun],
) -> None:
    common = ["-p", "no:cacheprovider", "-p", "no:randomly", "--koembed-suite=sample"]
    args = [sys.executable, "-m", "pytest", *common, f"--koembed-model={MODEL}"]
    hub = run_hub(args=[*args, "--koembed-json=hub.json"], timeout=600)
    assert hub.returncode == 0, hub.stdout[-4000:] + hub.stderr[-2000:]
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    local = run_pytest(
        local_dir, *common[2:], f"--koembed-model={minilm_dir}", "--koembed-json=l.json"
    )
    assert local.ret == 0, local.stdout[-4000:]
    record = json.loads((tmp_path / "hub.json").read_text(encoding="utf-8"))
    assert record["model"]["name"] == MODEL
    assert record["model"]["revision"] == served.main
    assert record["model"]["fingerprint"] == f"hub:{MODEL}@{served.main}"
    values = _values(tmp_path / "hub.json")
    assert len(values) == 6 and values == _values(local_dir / "l.json")
