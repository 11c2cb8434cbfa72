"""One vocabulary, one exit status, one reference, one rule for ini paths (issue 19).

- every ``koembed`` subcommand takes the plugin's settings as ``--NAME`` (``--koembed-NAME``
  under pytest), from the option table; the spellings ``koembed gate`` and ``koembed merge``
  took before still work, with one deprecation line on stderr;
- bad input is exit status 4 (pytest's usage error) under pytest and in every subcommand;
- ``koembed options --markdown`` lists every option and ini key ``pytest --help`` shows;
- an ini path resolves against the ini file's directory, also when pytest runs in a subdirectory.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pytest_koembed.cli import build_parser, main
from pytest_koembed.options import EXIT_STATUSES, EXIT_USAGE, OPTIONS
from pytest_koembed.resources import suites_dir

pytestmark = pytest.mark.usefixtures("offline")

GATE_SETTINGS = [
    "baseline", "tolerance", "fail-under", "strict", "confidence", "min-effect", "rule",
    "save-baseline", "update-baseline", "row", "model-index", "model-card", "results-dir",
    "plot", "json", "suite",
]  # fmt: skip


def _value(name: str) -> str:
    return {"confidence": "0.9", "min-effect": "0.25", "tolerance": "2", "fail-under": "w=1"}.get(
        name, f"{name}-value"
    )


def _parse(argv: list[str]) -> dict[str, object]:
    args = vars(build_parser().parse_args(argv))
    args.pop("func", None)
    args.pop("_koembed_deprecated_warned", None)
    return args


# --- one vocabulary -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", GATE_SETTINGS)
def test_gate_takes_the_new_spelling_and_the_old_one_with_a_deprecation_line(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flag = not next(o for o in OPTIONS if o.name == name).takes_value
    new = [f"--{name}"] if flag else [f"--{name}={_value(name)}"]
    old = [f"--koembed-{name}"] if flag else [f"--koembed-{name}={_value(name)}"]
    parsed_new = _parse(["gate", "run.json", *new])
    assert capsys.readouterr().err == ""
    parsed_old = _parse(["gate", "run.json", *old])
    assert parsed_old == parsed_new
    dest = "koembed_" + name.replace("-", "_")
    assert parsed_new[dest] not in (None, False, [])  # the setting arrived
    err = capsys.readouterr().err
    assert (
        err == f"koembed gate: --koembed-{name} is deprecated; write --{name} (the same setting)\n"
    )


def test_a_repeated_old_spelling_warns_once(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(["gate", "r.json", "--koembed-tolerance=1", "--koembed-tolerance=STS=2"])
    assert args["koembed_tolerance"] == ["1", "STS=2"]
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_merge_takes_suite_and_its_old_spelling(capsys: pytest.CaptureFixture[str]) -> None:
    new = _parse(["merge", "a.json", "-o", "m.json", "--suite=sample"])
    assert capsys.readouterr().err == ""
    old = _parse(["merge", "a.json", "-o", "m.json", "--koembed-suite=sample"])
    assert new == old and new["koembed_suite"] == "sample"
    assert "--koembed-suite is deprecated; write --suite" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "dest", "value"),
    [
        (["compare", "a.json", "b.json", "--confidence=0.9"], "koembed_confidence", "0.9"),
        (["compare", "a.json", "b.json", "--min-effect=1"], "koembed_min_effect", "1"),
        (["leaderboard", "--suite=sample"], "koembed_suite", "sample"),
        (["rescore", "dir", "--suite=sample"], "koembed_suite", "sample"),
        (["mirror", "dir", "--suite=sample"], "koembed_suite", "sample"),
        (["cache", "info", "--cache=c"], "koembed_cache", "c"),
        (["cache", "clear", "--cache=c"], "koembed_cache", "c"),
    ],
)
def test_every_subcommand_spells_a_setting_as_the_table_does(
    argv: list[str], dest: str, value: str
) -> None:
    assert _parse(argv)[dest] == value


def test_a_setting_has_the_same_help_and_default_on_every_subcommand() -> None:
    parser = build_parser()
    subcommands = next(a for a in parser._actions if hasattr(a, "choices") and a.choices).choices
    by_dest = {o.dest: o for o in OPTIONS}
    seen = 0
    for sub in subcommands.values():
        nested = [a for a in sub._actions if hasattr(a, "choices") and isinstance(a.choices, dict)]
        for p in [*nested[0].choices.values()] if nested else [sub]:
            for action in p._actions:
                option = by_dest.get(action.dest)
                if option is None or action.help == "==SUPPRESS==":
                    continue
                seen += 1
                assert action.option_strings == [option.cli_flag]
                assert action.help.startswith(option.help)
                assert action.default == ([] if option.kind == "append" else action.default)
                assert action.metavar == option.metavar or option.choices
    assert seen >= len(GATE_SETTINGS) + 6


def test_every_flag_of_every_subcommand_has_help() -> None:
    parser = build_parser()
    subcommands = next(a for a in parser._actions if hasattr(a, "choices") and a.choices).choices
    for name, sub in subcommands.items():
        nested = [a for a in sub._actions if hasattr(a, "choices") and isinstance(a.choices, dict)]
        for p in [*nested[0].choices.values()] if nested else [sub]:
            for action in p._actions:
                assert action.help, f"koembed {name}: {action.option_strings or action.dest}"


# --- one exit status for bad input --------------------------------------------------------------


def test_the_exit_status_table_is_pytests() -> None:
    assert [s.code for s in EXIT_STATUSES] == [0, 1, 2, 3, 4, 5]
    assert [s.name for s in EXIT_STATUSES] == [pytest.ExitCode(s.code).name for s in EXIT_STATUSES]
    assert EXIT_USAGE == pytest.ExitCode.USAGE_ERROR


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["no-such-command"],
        ["leaderboard", "--bogus"],
        ["leaderboard", "--add=missing.json"],
        ["rescore"],
        ["rescore", "no-such-dir"],
        ["mirror", "out", "--from=no-such-dir"],
        ["compare", "missing.json", "other.json"],
        ["compare", "a.json", "b.json", "--confidence=2"],
        ["merge", "missing.json", "-o", "m.json"],
        ["merge", "a.json"],
        ["gate", "missing.json"],
        ["gate", "r.json", "--tolerance"],
        ["cache"],
        ["cache", "info", "--cache=no-such-cache", "--model=x"],
        ["options", "--bogus"],
    ],
)
def test_bad_input_is_exit_status_4_with_one_line_in_every_subcommand(
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 4
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("koembed") and "Traceback" not in err


def test_bad_input_is_exit_status_4_under_pytest(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--koembed-model=m", "--koembed-suite=sample", "--koembed-shard=x")
    assert result.ret == EXIT_USAGE == 4


# --- the reference --------------------------------------------------------------------------------


def test_the_reference_lists_every_option_and_ini_key_pytest_registers(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    result = pytester.runpytest("--help")
    assert result.ret == 0
    shown = result.stdout.str()
    flags = set(re.findall(r"(--koembed-[a-z-]+[a-z])", shown))
    ini_keys = set(re.findall(r"^\s+(koembed_[a-z_]+)", shown, re.M))
    assert len(flags) == len(OPTIONS) and ini_keys
    assert main(["options", "--markdown"]) == 0
    reference = capsys.readouterr().out
    for flag in flags:
        assert f"`{flag}`" in reference or f"`{flag}=" in reference, flag
    for key in ini_keys:
        assert f"`{key}`" in reference, key
    for status in EXIT_STATUSES:
        assert f"| {status.code} | `{status.name}` |" in reference
    for sub in ("leaderboard", "rescore", "mirror", "compare", "merge", "gate", "cache info"):
        assert f"### koembed {sub}\n" in reference
    assert "`--model-card=README.md`" in reference.split("### koembed gate\n")[1]


# --- ini paths ------------------------------------------------------------------------------------


def _project(root: Path, suite: str = "conf/mine.toml") -> None:
    """An ini file at the root naming a suite file and a data directory by relative paths."""
    suites = suites_dir()
    (root / "conf").mkdir()
    shutil.copy(suites / "sample.toml", root / "conf" / "mine.toml")
    shutil.copytree(suites / "sample-data", root / "conf" / "sample-data")
    (root / "data").mkdir()
    (root / "sub").mkdir()
    (root / "pytest.ini").write_text(
        f"[pytest]\nkoembed_suite = {suite}\nkoembed_data_dir = data\n", encoding="utf-8"
    )


@pytest.mark.parametrize("suite", ["conf/mine.toml", "sample"])  # the data dir alone, too
def test_ini_paths_resolve_against_the_ini_file_from_a_subdirectory(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, suite: str
) -> None:
    _project(pytester.path, suite)
    monkeypatch.chdir(pytester.path / "sub")
    result = pytester.runpytest("--koembed-model=m", "--collect-only", "-q")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["koembed::STS::sample-sts"])


def test_command_line_paths_stay_relative_to_the_current_directory(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _project(pytester.path)
    monkeypatch.chdir(pytester.path / "sub")
    ok = pytester.runpytest("--koembed-model=m", "--koembed-data-dir=../data", "--collect-only")
    assert ok.ret == 0, ok.stdout.str() + ok.stderr.str()
    bad = pytester.runpytest("--koembed-model=m", "--koembed-data-dir=data", "--collect-only")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "--koembed-data-dir data: no such directory" in bad.stderr.str()


def test_a_suite_name_in_the_ini_file_is_a_name(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    (pytester.path / "sub").mkdir()
    (pytester.path / "pytest.ini").write_text("[pytest]\nkoembed_suite = sample\n", "utf-8")
    monkeypatch.chdir(pytester.path / "sub")
    result = pytester.runpytest("--koembed-model=m", "--collect-only", "-q")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["koembed::STS::sample-sts"])


@pytest.mark.parametrize(
    "argv",
    [
        ["gate", "run.json", "--baseline="],  # would read as "auto": every task unchecked
        ["compare", "a.json", "b.json", "--confidence= "],
        ["cache", "info", "--cache="],
    ],
)
def test_an_empty_flag_value_is_bad_input_not_the_flag_left_out(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    flag = next(a for a in argv if "=" in a).split("=")[0]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{flag}= is empty: give it a value, or leave the option out" in err
    assert "Traceback" not in err
