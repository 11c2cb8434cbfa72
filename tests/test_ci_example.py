"""The GitHub Actions example (examples/github-actions/koembed-gate.yml) uses real options."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from pytest_koembed.cli import build_parser, main
from pytest_koembed.gate.gates import Gate
from pytest_koembed.gate.verdicts import make_policy
from pytest_koembed.protocol.suite import load_suite

WORKFLOW = Path(__file__).resolve().parent.parent / "examples/github-actions/koembed-gate.yml"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    import yaml  # a dependency of pytest-koembed: missing, this fails rather than skips

    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def _step(workflow: dict[str, Any], name: str) -> dict[str, Any]:
    (job,) = workflow["jobs"].values()
    return next(s for s in job["steps"] if s.get("name") == name)


def test_it_gates_pull_requests(workflow: dict[str, Any]) -> None:
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert "pull_request" in triggers


def test_its_pytest_command_parses_and_its_gate_is_valid(
    workflow: dict[str, Any], pytester: pytest.Pytester
) -> None:
    command = re.sub(r"\$\{\{[^}]*\}\}", "/ws", _step(workflow, "Retrieval gate")["run"])
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "pytest"]
    config = pytester.parseconfig(*argv[3:])  # unknown options would be a usage error here
    assert config.getoption("markexpr") == "retrieval"
    suite = load_suite(config.getoption("koembed_suite"))
    policy = make_policy(
        suite,
        baseline="none",
        tolerance=config.getoption("koembed_tolerance"),
        fail_under=config.getoption("koembed_fail_under"),
    )
    assert policy.gates == (Gate("Retrieval", 75.0),)
    assert policy.tolerances.for_task("Ko-StrategyQA", "Retrieval") == 0.5
    assert config.getoption("koembed_baseline") == "/ws/baseline/koembed-baseline.json"


def test_its_leaderboard_step_works_on_a_retrieval_only_run(
    workflow: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    suite = load_suite("ko-leaderboard-v1")
    record = {
        "model": {"name": "m", "row_name": "my-model"},
        "suite": {"name": suite.name},
        "tasks": [
            {"column": t.column, "status": "ok", "value": 80.0}
            for t in suite.tasks
            if t.category == "Retrieval"
        ],
    }
    (tmp_path / "koembed-run.json").write_text(json.dumps(record), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    line = _step(workflow, "Leaderboard row")["run"].strip()
    argv = shlex.split(line.split(">>")[0])
    assert argv[0] == "koembed"
    assert main(argv[1:]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\| my-model +\| +80 \|.*\| +80 \| +\d+ \|", out), out


COMPARE = WORKFLOW.with_name("koembed-compare.yml")


def test_the_compare_workflow_runs_the_documented_commands(pytester: pytest.Pytester) -> None:
    import yaml

    compare = yaml.safe_load(COMPARE.read_text(encoding="utf-8"))
    assert "pull_request" in compare.get("on", compare.get(True))
    assert compare["permissions"]["pull-requests"] == "write"
    bench = re.sub(
        r"\$\{\{[^}]*\}\}", "/ws", _step(compare, "Benchmark the pull request's model")["run"]
    )
    argv = shlex.split(bench)
    assert argv[:3] == ["python", "-m", "pytest"]
    config = pytester.parseconfig(*argv[3:])  # unknown options would be a usage error here
    assert config.getoption("koembed_json") == "/ws/koembed-new.json"
    assert config.getoption("koembed_baseline") == "none"
    lines = _step(compare, "Compare with the accepted model")["run"].splitlines()
    command = next(line for line in lines if line.startswith("koembed compare"))
    argv = shlex.split(command.split(">")[0])
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.base, args.new, args.markdown) == (
        "compare",
        "$RUNNER_TEMP/base/koembed-base.json",  # the target branch's, not the pull request's
        "koembed-new.json",
        True,
    )
    assert "comment.md" in command.split(">")[1]
    post = _step(compare, "Post the comparison on the pull request")["run"]
    assert shlex.split(post)[:3] == ["gh", "pr", "comment"] and "--body-file" in post
    assert _step(compare, "Fail on a significant regression")["if"] == (
        "steps.compare.outputs.status != '0'"
    )


# Issue 18: no pull request can lower its own baseline.
EXAMPLES = {
    "koembed-gate.yml": ("koembed-baseline", "Baseline from the target branch"),
    "koembed-compare.yml": ("koembed-base", "Accepted run from the target branch"),
    "koembed-sharded.yml": ("koembed-baseline", "Baseline from the target branch"),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_judges_against_the_target_branchs_baseline(name: str) -> None:
    import yaml

    stem, step_name = EXAMPLES[name]
    text = WORKFLOW.with_name(name).read_text(encoding="utf-8")
    workflow = yaml.safe_load(text)
    jobs = [job for job in workflow["jobs"].values() if any(
        s.get("name") == step_name for s in job["steps"])]  # fmt: skip
    (job,) = jobs
    checkout = next(
        s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout")
    )
    assert checkout["with"]["fetch-depth"] == 0  # the target branch is there to read from
    step = next(s for s in job["steps"] if s.get("name") == step_name)
    script = step["run"]
    base = step.get("env", {}).get("BASE") or job.get("env", {}).get("BASE")
    assert "github.base_ref" in base
    for suffix in (".json", ".examples.parquet"):  # the baseline and its sidecar, both
        assert f'git show "$BASE:{stem}{suffix}" > "$RUNNER_TEMP/' in script, script
    assert "git diff --quiet" in script and "::warning" in script  # a changed baseline: loudly
    # the judging command reads the copy, never the pull request's own file
    later = " ".join(str(s.get("run", "")) for s in job["steps"][job["steps"].index(step) + 1 :])
    uses = [later[max(0, m.start() - 40) : m.end()] for m in re.finditer(rf"{stem}\.json", later)]
    assert uses and all("runner.temp" in u or "RUNNER_TEMP" in u for u in uses), uses
