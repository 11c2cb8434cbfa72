"""The default data path, exercised: task data through mteb from the Hub-protocol test server.

For each shipped suite, its fixture tasks (tests/hubdata.py: one of each task type, in the layout
of the real Hub dataset, served at the revision mteb pins) run through the real
``huggingface_hub`` / ``datasets`` / mteb code in a clean subprocess (``hub_env``), and the same
rows, written independently in the local layout, run offline with ``--koembed-data-dir``: every
task's value and raw scores are equal. Then ``koembed mirror`` from the server and a run offline
from the mirror, and the data side's one-line errors (offline with an empty cache, a download
dropped halfway, the rerun that recovers).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import hub_env
from hubdata import FIXTURE_TASKS, HubDataset, build_hub_datasets, build_local_layout, selection
from hubdata import serve as serve_datasets

SUITES = list(FIXTURE_TASKS)
# What must agree between a Hub run and a local run of the same rows (not where they came from,
# nor how long they took).
COMPARED = ("status", "value", "scores", "n_examples", "sizes", "duplicates_dropped")


@dataclass
class Run:
    ret: int
    output: str
    record: dict[str, Any] | None

    def tasks(self) -> dict[str, dict[str, Any]]:
        assert self.record is not None, self.output[-4000:]
        return {t["column"]: t for t in self.record["tasks"]}

    def compared(self) -> dict[str, dict[str, Any]]:
        return {c: {k: t[k] for k in COMPARED} for c, t in self.tasks().items()}


def koembed_run(
    endpoint: str,
    home: Path,
    args: list[str],
    *,
    offline: bool = False,
    module: str = "pytest",
    timeout: float = 300,
) -> Run:
    """``python -m pytest ARGS`` (or ``-m pytest_koembed.cli``) in ``home``, with the clean Hub
    environment of ``hub_env`` (its own ``HF_HOME`` under ``home``, the socket guard);
    ``offline``: ``HF_HUB_OFFLINE=1`` as well."""
    home.mkdir(parents=True, exist_ok=True)
    env = hub_env(endpoint, home)
    if offline:
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    command = [sys.executable, "-m", module]
    if module == "pytest":
        command += ["-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:xdist"]
    proc = subprocess.run(
        [*command, *args],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    record_path = home / "run.json"
    record = json.loads(record_path.read_text("utf-8")) if record_path.is_file() else None
    return Run(proc.returncode, proc.stdout + proc.stderr, record)


def plugin_args(suite: str, model: Path, *extra: str, k: str | None = None) -> list[str]:
    return [
        f"--koembed-suite={suite}",
        f"--koembed-model={model}",
        "--koembed-json=run.json",
        "-k",
        k or selection(suite),
        *extra,
    ]


@dataclass
class Served:
    datasets: list[HubDataset]
    local: Path  # the same rows in the local layout

    def directory(self, repo_id: str) -> Path:
        return next(d.directory for d in self.datasets if d.repo_id == repo_id)


@pytest.fixture(scope="module")
def served(hub_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Served:
    datasets = build_hub_datasets(tmp_path_factory.mktemp("hub-datasets"))
    serve_datasets(hub_server, datasets)
    local = build_local_layout(tmp_path_factory.mktemp("local-layout"))
    return Served(datasets, local)


class Runs:
    """Each suite's fixture tasks, run once when first asked for: data from the server (one
    ``HF_HOME`` per suite), or the same selection from the local layout, offline. Lazy, so that
    an xdist worker given one of this module's tests runs only what that test needs."""

    def __init__(self, served: Served, endpoint: str, model: Path, root: Path) -> None:
        self.served, self.endpoint, self.model, self.root = served, endpoint, model, root
        self._done: dict[tuple[str, str], Run] = {}

    def hub(self, suite: str) -> Run:
        return self._run("hub", suite)

    def local(self, suite: str) -> Run:
        return self._run("local", suite)

    def _run(self, where: str, suite: str) -> Run:
        if (where, suite) not in self._done:
            extra = [f"--koembed-data-dir={self.served.local}"] if where == "local" else []
            self._done[where, suite] = koembed_run(
                self.endpoint,
                self.root / where / suite,
                plugin_args(suite, self.model, *extra),
                offline=where == "local",
            )
        return self._done[where, suite]


@pytest.fixture(scope="module")
def runs(
    served: Served, hub_server: Any, minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Runs:
    return Runs(served, hub_server.url, minilm_dir, tmp_path_factory.mktemp("runs"))


@pytest.mark.slow
@pytest.mark.parametrize("suite", SUITES)
def test_each_suite_from_the_hub_equals_the_local_layout(
    suite: str, runs: Runs, hub_server: Any
) -> None:
    hub, local = runs.hub(suite), runs.local(suite)
    assert hub.ret == 0, hub.output[-6000:]
    assert local.ret == 0, local.output[-6000:]
    assert sorted(hub.tasks()) == sorted(FIXTURE_TASKS[suite])
    assert hub.compared() == local.compared()
    for column, task in hub.tasks().items():
        assert task["source"] == f"hub:{task['dataset_path']}@{task['dataset_revision']}"
        pinned = f"/datasets/{task['dataset_path']}/resolve/{task['dataset_revision']}/"
        assert hub_server.requests("GET", pinned), f"{column}: no GET under {pinned}"
        assert local.tasks()[column]["source"].startswith("local:")


# --- koembed mirror from the server, then offline from the mirror ---------------------------------

MIRRORED = ("mteb-kor-v2",)  # all task types; a leaderboard mirror: test_offline_leaderboard


@pytest.fixture(scope="module")
def mirrors(
    served: Served, hub_server: Any, minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Run, Path, Run]]:
    """Per suite: ``koembed mirror`` from the server, the mirror, a fresh offline run from it."""
    root = tmp_path_factory.mktemp("mirrors")
    out = {}
    for suite in MIRRORED:
        mirror = root / suite / "mirror"
        tasks = [a for column in FIXTURE_TASKS[suite] for a in ("--task", column)]
        made = koembed_run(
            hub_server.url,
            root / suite / "hub",
            ["mirror", str(mirror), "--suite", suite, *tasks],
            module="pytest_koembed.cli",
        )
        data = f"--koembed-data-dir={mirror}"
        run = koembed_run(
            hub_server.url,
            root / suite / "offline",
            plugin_args(suite, minilm_dir, data),
            offline=True,
        )
        out[suite] = (made, mirror, run)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("suite", MIRRORED)
def test_a_mirror_of_the_server_runs_offline_with_the_same_values(
    suite: str, mirrors: dict[str, tuple[Run, Path, Run]], runs: Runs
) -> None:
    made, mirror, run = mirrors[suite]
    assert made.ret == 0, made.output[-4000:]
    assert "KLUE-TC [default/validation]: 12 examples -> " in made.output, made.output
    assert run.ret == 0, run.output[-6000:]
    assert run.compared() == runs.hub(suite).compared()
    metas = sorted(mirror.glob("*/*/*/koembed-mirror.json"))
    # every split folder says where its rows came from: the repo id at the revision mteb pins
    assert len(metas) == len(FIXTURE_TASKS[suite]), metas
    for path in metas:
        meta = json.loads(path.read_text("utf-8"))
        task = run.tasks()[_column(suite, meta["task"])]
        assert meta["source"] == f"hub:{task['dataset_path']}@{task['dataset_revision']}"
        assert (meta["subset"], meta["split"]) == (path.parts[-3], path.parts[-2])


def _column(suite: str, task: str) -> str:
    from pytest_koembed.protocol.suite import load_suite

    return next(t.column for t in load_suite(suite).tasks if t.task == task)


# --- the data side's one-line errors --------------------------------------------------------------


def test_the_hub_clients_network_errors_are_download_errors() -> None:
    """huggingface_hub 2.x downloads with httpx2, whose errors are no OSError: a connection that
    drops halfway (its RemoteProtocolError) is a download error, with the download's advice."""
    import importlib

    from huggingface_hub.errors import Response

    from pytest_koembed.data.hub import _hub_errors

    client = importlib.import_module(Response.__module__.split(".")[0])
    assert issubclass(client.RemoteProtocolError, _hub_errors())


@pytest.mark.slow
def test_offline_with_an_empty_cache_is_one_line_naming_the_fix(
    served: Served, hub_server: Any, minilm_dir: Path, tmp_path: Path
) -> None:
    before = len(hub_server.requests())
    run = koembed_run(
        hub_server.url,
        tmp_path,
        plugin_args("ko-leaderboard-v1", minilm_dir, k="KLUE-STS"),
        offline=True,
    )
    assert len(hub_server.requests()) == before  # offline: the server is never asked
    assert run.ret == 1, run.output[-4000:]
    (task,) = run.tasks().values()
    assert task["status"] == "error"
    error = task["error"]
    assert "\n" not in error and "Traceback" not in run.output
    assert error.startswith("cannot download klue/klue for KLUE-STS from the Hugging Face Hub")
    assert "run with --koembed-data-dir DIR" in error
    assert "DIR/KLUE-STS/default/validation/" in error
    assert f"E   {error}" in run.output or error in run.output


DROPPED = "sts/validation-00000-of-00001.parquet"


@pytest.mark.slow
def test_a_dataset_download_dropped_halfway_then_a_rerun_recovers(
    served: Served,
    hub_server: Any,
    minilm_dir: Path,
    tmp_path: Path,
    runs: Runs,
) -> None:
    args = plugin_args("ko-leaderboard-v1", minilm_dir, k="KLUE-STS")
    size = (served.directory("klue/klue") / DROPPED).stat().st_size
    hub_server.drop_after("klue/klue", DROPPED, size // 2, times=None, kind="dataset")
    try:
        failed = koembed_run(hub_server.url, tmp_path, args)
    finally:
        hub_server.clear_drops()
    assert failed.ret == 1, failed.output[-4000:]
    (task,) = failed.tasks().values()
    assert task["status"] == "error" and "\n" not in task["error"], task["error"]
    assert task["error"].startswith("cannot download klue/klue for KLUE-STS"), task["error"]
    # nothing half-written is kept where the next run would take it for the file
    repo = tmp_path / "hf-home" / "hub" / "datasets--klue--klue"
    etag = hub_server.state.repos["dataset", "klue/klue"].refs["main"].files[DROPPED].etag
    assert (repo / "blobs").is_dir()  # the files before it were downloaded and kept
    assert not (repo / "blobs" / etag).exists()
    assert not list(repo.glob(f"snapshots/*/{DROPPED}"))
    assert not list((tmp_path / "hf-home" / "datasets").rglob("*.arrow"))  # nothing prepared
    rerun = koembed_run(hub_server.url, tmp_path, args)  # the same HF_HOME
    assert rerun.ret == 0, rerun.output[-4000:]
    expected = runs.local("ko-leaderboard-v1").compared()["KLUE-STS"]
    assert rerun.compared() == {"KLUE-STS": expected}
