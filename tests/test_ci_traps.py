"""Issue 18: no green CI job that measured nothing. Each trap a new user walked into, as a user
runs pytest (in this process, with the hashing encoder of ``koembed_test_encoders``)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from koembed_test_encoders import HASHING_CLASS, HASHING_ENCODER

from pytest_koembed.cli import main

pytestmark = pytest.mark.usefixtures("offline")

SAMPLE = ["--koembed-model=hashing", "--koembed-suite=sample"]
FAST = ["-k", "sts or pairs"]  # two of the sample suite's tasks: seconds


def _pytest(cwd: Path, *args: str, addopts: str | None = None) -> tuple[int, str]:
    """pytest with the plugin, in this process, from ``cwd`` (stdout and stderr together)."""
    from threadpoolctl import threadpool_limits

    out = io.StringIO()
    argv = ["-p", "no:cacheprovider", "--import-mode=importlib", *args]
    with (
        pytest.MonkeyPatch.context() as mp,
        redirect_stdout(out),
        redirect_stderr(out),
        threadpool_limits(1),
    ):
        mp.chdir(cwd)
        mp.delenv("PYTEST_ADDOPTS", raising=False)
        if addopts is not None:
            mp.setenv("PYTEST_ADDOPTS", addopts)
        ret = pytest.main(argv)
    return int(ret), out.getvalue()


def _koembed(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        ret = main(list(argv))
    return ret, out.getvalue()


def _repo(root: Path, conftest: str = HASHING_ENCODER, ini: str = "") -> Path:
    """A repository with three unit tests, the encoder override and an optional ini."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "conftest.py").write_text(conftest, encoding="utf-8")
    (root / "test_unit.py").write_text(
        "def test_a():\n    pass\n\ndef test_b():\n    pass\n\ndef test_c():\n    pass\n",
        encoding="utf-8",
    )
    if ini:
        (root / "pytest.ini").write_text(ini, encoding="utf-8")
    return root


def _error_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("ERROR: ")]


# --- 1. an empty model, or koembed options without one -----------------------------------------


def test_an_empty_model_is_a_usage_error_not_a_green_unit_test_run(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    ret, out = _pytest(repo, "--koembed-model=", "--koembed-fail-under=weighted=60")
    assert ret == pytest.ExitCode.USAGE_ERROR, out
    assert _error_lines(out) == [
        "ERROR: --koembed-model is empty (an unset variable?): give a model directory or Hub id; "
        "without a model nothing would be benchmarked"
    ]
    assert "passed" not in out


@pytest.mark.parametrize(
    ("option", "addopts"),
    [
        ("--koembed-baseline=", None),  # would read as "no baseline": every task unchecked
        ("--koembed-shard-costs=", None),  # would split by the estimate, quietly
        ("--koembed-json= ", None),
        (None, "--koembed-cache="),
    ],
)
def test_an_empty_option_value_is_a_usage_error_not_an_option_left_out(
    tmp_path: Path, option: str | None, addopts: str | None
) -> None:
    repo = _repo(tmp_path / "repo")
    args = ["--koembed-model=hashing", "--koembed-suite=sample", "--koembed-shard=1/2"]
    ret, out = _pytest(repo, *args, *([option] if option else []), addopts=addopts)
    assert ret == pytest.ExitCode.USAGE_ERROR, out
    name = (option or addopts or "").split("=")[0]
    where = "in PYTEST_ADDOPTS" if addopts else "on the command line"
    assert _error_lines(out) == [
        f"ERROR: {name}= is empty ({where}): give it a value, or leave the option out "
        "(an unset shell variable?)"
    ]


def test_koembed_options_without_a_model_are_a_usage_error(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    ret, out = _pytest(repo, "--koembed-suite=sample", "--koembed-json=run.json")
    assert ret == pytest.ExitCode.USAGE_ERROR, out
    assert _error_lines(out) == [
        "ERROR: --koembed-suite, --koembed-json given without --koembed-model: nothing would be "
        "benchmarked; give --koembed-model=MODEL (a model directory or Hub id)"
    ]
    ret, out = _pytest(repo, addopts="--koembed-fail-under=weighted=60")  # from the environment
    assert ret == pytest.ExitCode.USAGE_ERROR, out
    assert "--koembed-fail-under given without --koembed-model" in out


def test_koembed_options_in_the_ini_addopts_leave_a_unit_test_run_alone(tmp_path: Path) -> None:
    ini = "[pytest]\naddopts = --koembed-suite=sample --koembed-fail-under=weighted=60\n"
    repo = _repo(tmp_path / "repo", ini=ini)
    ret, out = _pytest(repo)
    assert ret == 0, out
    assert "3 passed" in out


# --- 2. a space-separated path option ----------------------------------------------------------


def test_a_space_separated_value_is_refused_naming_the_option(tmp_path: Path) -> None:
    ini = "[pytest]\nkoembed_suite = sample\n"
    repo = _repo(tmp_path / "repo", ini=ini)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    baseline = elsewhere / "base.json"
    baseline.write_text('{"suite": {"name": "sample"}, "tasks": []}', encoding="utf-8")
    ret, out = _pytest(repo, "--koembed-model=hashing", "--koembed-baseline", str(baseline))
    assert ret == pytest.ExitCode.USAGE_ERROR, out
    assert _error_lines(out) == [
        f"ERROR: --koembed-baseline {baseline} (on the command line): write "
        f"--koembed-baseline={baseline}; pytest takes a value after a space for a test path "
        "before plugins load, which can move the rootdir and drop the repository's ini "
        "settings and conftest.py"
    ]
    ret, out = _pytest(repo, "--koembed-model=hashing", addopts=f"--koembed-json {baseline}")
    assert ret == pytest.ExitCode.USAGE_ERROR, out
    assert f"ERROR: --koembed-json {baseline} (in PYTEST_ADDOPTS): write --koembed-json=" in out


# --- 3. the rule depends on a file that is easy to lose ----------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A baseline saved by a run (the record and its sidecar)."""
    repo = _repo(tmp_path_factory.mktemp("saved") / "repo")
    ret, out = _pytest(repo, *SAMPLE, *FAST, "--koembed-save-baseline=base.json")
    assert ret == 0, out
    return {"repo": repo, "out": out}


def test_saving_a_baseline_names_both_files_and_says_to_commit_both(saved: dict[str, Any]) -> None:
    repo: Path = saved["repo"]
    assert (
        f"baseline written to {repo / 'base.json'} (2 task values), with its per-example results "
        f"{repo / 'base.examples.parquet'}: commit both files (the paired rule needs the second)"
    ) in saved["out"]


def test_a_missing_or_changed_sidecar_is_a_usage_error_unless_the_rule_is_chosen(
    saved: dict[str, Any], tmp_path: Path
) -> None:
    repo = _repo(tmp_path / "repo")
    shutil.copy(saved["repo"] / "base.json", repo / "base.json")
    args = [*SAMPLE, *FAST, "--koembed-baseline=base.json"]
    ret, out = _pytest(repo, *args)
    assert ret == pytest.ExitCode.USAGE_ERROR, out
    assert _error_lines(out) == [
        f"ERROR: baseline file {repo / 'base.json'} names its per-example results "
        f"{repo / 'base.examples.parquet'}, which is missing: without it the paired rule cannot "
        "run; restore it (commit the baseline and its sidecar together), or choose the rule: "
        "--koembed-rule=tolerance"
    ]
    (repo / "base.examples.parquet").write_bytes(b"not the saved file")
    ret, out = _pytest(repo, *args)
    assert ret == pytest.ExitCode.USAGE_ERROR, out
    assert "do not match baseline file" in out and "--koembed-rule=tolerance" in out
    ret, out = _pytest(repo, *args, "--koembed-rule=paired")
    assert ret == pytest.ExitCode.USAGE_ERROR, out
    # chosen explicitly (command line, or ini koembed_rule): the tolerance rule, exit 0
    ret, out = _pytest(repo, *args, "--koembed-rule=tolerance", "--koembed-json=run.json")
    assert ret == 0, out
    record = json.loads((repo / "run.json").read_text(encoding="utf-8"))
    assert record["baseline"]["rule"] == "tolerance"
    assert {t["verdict"] for t in record["tasks"]} == {"pass"}


def test_the_paired_rule_fails_a_task_it_cannot_pair(saved: dict[str, Any], tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    record = json.loads((saved["repo"] / "base.json").read_text(encoding="utf-8"))
    shutil.copy(saved["repo"] / "base.examples.parquet", repo / "base.examples.parquet")
    del record["examples"]["tasks"]["sample-pairs"]  # the sidecar "holds" only sample-sts
    (repo / "base.json").write_text(json.dumps(record), encoding="utf-8")
    ret, out = _pytest(
        repo, *SAMPLE, *FAST, "--koembed-baseline=base.json", "--koembed-rule=paired"
    )
    assert ret == 1, out
    assert (
        "sample-pairs: not paired: the baseline's per-example results have no frame for it "
        "(--koembed-rule=paired: no tolerance fall-back)"
    ) in out


# --- 4. options that do nothing say so -----------------------------------------------------------


def test_an_option_without_effect_says_so_once(saved: dict[str, Any]) -> None:
    repo: Path = saved["repo"]
    args = [*SAMPLE, *FAST, "--koembed-baseline=base.json"]
    ret, out = _pytest(repo, *args, "--koembed-tolerance=0.5")
    assert ret == 0, out
    notes = [line for line in out.splitlines() if "has no effect" in line]
    assert notes == [
        "note: --koembed-tolerance=0.5 has no effect on this run: every judged task was paired "
        "with the baseline's per-example results (the tolerance rule judges only tasks without "
        "them; --koembed-rule=tolerance, all)"
    ]
    ret, out = _pytest(repo, *args, "--koembed-rule=tolerance", "--koembed-min-effect=1")
    assert ret == 0, out
    notes = [line for line in out.splitlines() if "has no effect" in line]
    assert notes == [
        "note: --koembed-min-effect=1.0 has no effect on this run: --koembed-rule=tolerance runs "
        "no paired test"
    ]
    ret, out = _pytest(repo, *SAMPLE, "-k", "sample-sts", "--koembed-devices-min-texts=5")
    assert ret == 0, out
    assert [line for line in out.splitlines() if "has no effect" in line] == [
        "note: --koembed-devices-min-texts=5 has no effect on this run: it applies with "
        "--koembed-devices only"
    ]


# --- 5. shards carry their gates ----------------------------------------------------------------


def test_shards_carry_the_ini_gates_to_koembed_gate(tmp_path: Path) -> None:
    ini = "[pytest]\nkoembed_suite = sample\nkoembed_fail_under = weighted=99\n"
    repo = _repo(tmp_path / "repo", ini=ini)
    paths = []
    for k in (1, 2):
        path = repo / f"shard-{k}.json"
        ret, out = _pytest(repo, "--koembed-model=hashing", f"--koembed-shard={k}/2",
                           f"--koembed-json={path}")  # fmt: skip
        assert ret == 0, out
        paths.append(str(path))
    assert json.loads(Path(paths[0]).read_text())["gate_settings"] == {
        "fail_under": ["weighted=99"]
    }
    merged = repo / "merged.json"
    ret, out = _koembed("merge", *paths, "-o", str(merged))
    assert ret == 0, out
    ret, out = _koembed("gate", str(merged), "--koembed-baseline=none")
    assert ret == 1, out  # the ini gate, which koembed gate reads from the record
    assert "gate options from the run record (its shards'): --koembed-fail-under=weighted=99" in out
    assert "gate weighted >= 99.00: FAILED" in out
    ret, out = _koembed("gate", str(merged), "--koembed-baseline=none",
                        "--koembed-fail-under=weighted=1")  # fmt: skip
    assert ret == 0, out  # the command line over the record
    assert "gate weighted >= 1.00: PASSED" in out
    # shards whose gates differ are refused
    other = json.loads(Path(paths[1]).read_text())
    other["gate_settings"] = {"fail_under": ["weighted=50"]}
    Path(paths[1]).write_text(json.dumps(other), encoding="utf-8")
    ret, out = _koembed("merge", *paths, "-o", str(merged))
    assert ret == 4, out
    assert "are of different gate options (--koembed-fail-under=weighted=99 vs " in out


# --- 6. koembed merge refuses shards of other encoding settings ---------------------------------

MAX_LENGTH_ENCODER = (
    HASHING_CLASS
    + """

@pytest.fixture(scope="session")
def koembed_encoder(request):
    encoder = Hashing()
    encoder.max_length = request.config.getoption("koembed_max_length") or 256
    encoder.device = request.config.getoption("koembed_device")
    return encoder
"""
)


def test_merge_refuses_shards_of_other_max_lengths_and_warns_on_devices(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo", conftest=MAX_LENGTH_ENCODER)
    runs = {}
    shards = (("a", 1, "256"), ("b", 2, "16"), ("c", 2, "256"))
    for name, k, length in shards:
        extra = f"--koembed-max-length={length}"
        path = repo / f"{name}.json"
        ret, out = _pytest(repo, *SAMPLE, f"--koembed-shard={k}/2", extra, f"--koembed-json={path}")
        assert ret == 0, out
        runs[name] = path
    ret, out = _koembed("merge", str(runs["a"]), str(runs["b"]), "-o", str(repo / "m.json"))
    assert ret == 4, out
    assert (
        f"koembed: error: {runs['a']} and {runs['b']} are of different max lengths (256 vs 16); "
        "the embeddings differ, so the merged averages would be of no run: run every shard with "
        "the same --koembed-max-length"
    ) in out
    other = json.loads(runs["c"].read_text())
    other["model"]["device"] = "cuda:0"
    runs["c"].write_text(json.dumps(other), encoding="utf-8")
    ret, out = _koembed("merge", str(runs["a"]), str(runs["c"]), "-o", str(repo / "m.json"))
    assert ret == 0, out
    assert "koembed merge: warning: the shards ran on different device types" in out


# --- 7. the record names what it was judged against ---------------------------------------------


def test_the_record_names_the_baseline_file_its_sha256_and_git_commit(
    saved: dict[str, Any], tmp_path: Path
) -> None:
    git = shutil.which("git")
    assert git is not None, "git is needed"
    repo = _repo(tmp_path / "repo")
    for name in ("base.json", "base.examples.parquet"):
        shutil.copy(saved["repo"] / name, repo / name)

    def run_git(*args: str) -> str:
        env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}  # fmt: skip
        done = subprocess.run([git, "-C", str(repo), *args], capture_output=True, text=True,
                              env=env, check=True)  # fmt: skip
        return done.stdout.strip()

    run_git("init", "-q")
    run_git("add", "base.json", "base.examples.parquet")
    run_git("commit", "-qm", "baseline")
    head = run_git("rev-parse", "HEAD")
    ret, out = _pytest(repo, *SAMPLE, *FAST, "--koembed-baseline=base.json",
                       "--koembed-json=run.json")  # fmt: skip
    assert ret == 0, out
    against = json.loads((repo / "run.json").read_text())["baseline"]["judged_against"]
    import hashlib

    assert against["path"] == str(repo / "base.json")
    assert against["sha256"] == hashlib.sha256((repo / "base.json").read_bytes()).hexdigest()
    assert against["git_commit"] == head
    assert f"judged against {repo / 'base.json'} (sha256 {against['sha256'][:12]}..." in out
    assert f"git commit {head[:12]})" in out


# --- 8. names and docs that agree -----------------------------------------------------------------


def test_model_index_names_the_model_as_the_summary_and_pooling_works_as_documented(
    run_pytest, tmp_path: Path, minilm_dir: Path
) -> None:
    """A local directory ``.../model`` whose card names it all-MiniLM-L6-v2; --koembed-pooling
    on a sentence-transformers model changes its Pooling module, as the help says."""
    import yaml

    result = run_pytest(
        tmp_path,
        f"--koembed-model={minilm_dir}",
        "--koembed-suite=sample",
        "-k",
        "sample-sts",
        "--koembed-pooling=max",
        "--koembed-model-index=mi.yaml",
        "--koembed-json=run.json",
    )
    assert result.ret == 0, result.stdout
    record = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    assert minilm_dir.name == "model" and record["model"]["row_name"] == "all-MiniLM-L6-v2"
    assert "model: all-MiniLM-L6-v2 (loader sentence-transformers, pooling max" in result.stdout
    (entry,) = yaml.safe_load((tmp_path / "mi.yaml").read_text(encoding="utf-8"))["model-index"]
    assert entry["name"] == "all-MiniLM-L6-v2"


def test_pooling_help_and_readme_list_what_the_option_accepts(run_pytest, tmp_path: Path) -> None:
    from pytest_koembed.models.pooling import POOLINGS

    help_text = " ".join(run_pytest(tmp_path, "--help").stdout.split())
    listed = "|".join(POOLINGS[:2] + POOLINGS[3:] + POOLINGS[2:3])  # mean|cls|max|last-token
    assert f"--koembed-pooling={listed}" in help_text
    assert "sentence-transformers model's Pooling module" in help_text
    readme = (Path(__file__).resolve().parent.parent / "docs" / "options.md").read_text(
        encoding="utf-8"
    )
    row = next(line for line in readme.splitlines() if line.startswith("| `--koembed-pooling"))
    assert all(name in row for name in POOLINGS) and "sentence-transformers" in row


def test_chart_keeps_a_negative_average_delta_neutral_without_a_regression_and_says_clipped(
    saved: dict[str, Any], tmp_path: Path
) -> None:
    from pytest_koembed.protocol.suite import load_suite
    from pytest_koembed.reports.plot import build_figure, chart_data

    repo = _repo(tmp_path / "repo")
    record = json.loads((saved["repo"] / "base.json").read_text(encoding="utf-8"))
    for task in record["tasks"]:  # the same run, its baseline cells 0.3 above: within noise
        task["shown"] = round(task["shown"] + 0.3, 2)
        task["value"] = task["shown"]
    (repo / "base.json").write_text(json.dumps(record), encoding="utf-8")
    shutil.copy(saved["repo"] / "base.examples.parquet", repo / "base.examples.parquet")
    ret, out = _pytest(repo, *SAMPLE, *FAST, "--koembed-baseline=base.json",
                       "--koembed-json=run.json", "--koembed-plot=chart.png")  # fmt: skip
    assert ret == 0, out
    run = json.loads((repo / "run.json").read_text(encoding="utf-8"))
    assert {t["verdict"] for t in run["tasks"]} == {"within noise"}
    sts = next(t for t in run["tasks"] if t["column"] == "sample-sts")
    assert sts["ci"]["low"] < 0  # the hashing encoder's STS interval runs below the axis
    suite = load_suite("sample")
    fig = build_figure(run, suite)
    texts = [(t.get_text(), t.get_color()) for ax in fig.axes for t in ax.texts]
    averages = {r.label for r in chart_data(run, suite).averages if r.value is not None}
    said = [(text, color) for text, color in texts if "\u2212" in text]
    assert len(said) == 4, texts  # two tasks, two averages
    for text, color in said:  # a negative delta: red only for a regression
        assert color != "#b00020", (text, color)
    assert {"STS average", "NLI average"} <= averages
    clipped = [t for t, _ in texts if "interval clipped" in t]  # the task row and its average
    assert len(clipped) == 2 and all(t.startswith(f"{sts['shown']:.2f}") for t in clipped)
    assert any(f"interval clipped at 0 (low {sts['ci']['low']:.2f})" in t for t in clipped)
