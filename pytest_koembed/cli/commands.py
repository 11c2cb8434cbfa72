"""The ``koembed`` subcommands: each ``register_NAME(subparsers)`` adds its parser (its settings
from the option table, ``cli.flags``) and a ``func`` that calls the plain functions of the logic
modules and returns the exit status (``options.EXIT_STATUSES``).

This module imports neither pytest nor torch nor mteb (the subcommands import what they need).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pytest_koembed.cli.flags import add_local, add_setting
from pytest_koembed.cli.history import register_history
from pytest_koembed.errors import KoembedError
from pytest_koembed.options import EXIT_FAILED, EXIT_OK, Option
from pytest_koembed.protocol.scoring import SCHEMES
from pytest_koembed.protocol.tables import TABLE_CHOICES

Subparsers = Any  # argparse's _SubParsersAction, which is private

DEFAULT_SUITE = "ko-leaderboard-v1"

# Flags that only one subcommand has, declared as data like the table's.
TABLE = Option("table", "which table to print (default: all)", choices=TABLE_CHOICES, default="all")
SCHEME = Option(
    "scheme",
    "weighting scheme for the overall table (default: the suite's)",
    choices=tuple(SCHEMES),
)
SUITE_RECORD = "the run's suite, when its file is not where the record says and it is not shipped"
GATE_SETTINGS = (
    "baseline",
    "tolerance",
    "fail-under",
    "strict",
    "confidence",
    "min-effect",
    "rule",
    "save-baseline",
    "update-baseline",
    "row",
    "model-index",
    "model-card",
    "results-dir",
    "plot",
    "json",
)
"""The plugin's settings that ``koembed gate`` takes (with ``--suite``)."""


# --- leaderboard ------------------------------------------------------------------------------


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from pytest_koembed.protocol.suite import load_suite
    from pytest_koembed.protocol.tables import entry_from_run, leaderboard_tables, render_tables
    from pytest_koembed.records import read_run_record, run_suite_name

    records = [(path, read_run_record(path)) for path in args.add]
    suite_name = args.koembed_suite
    if suite_name is None and args.baseline:
        from pytest_koembed.protocol.leaderboards import load_leaderboard

        suite_name = load_leaderboard(args.baseline).suite
    if suite_name is None and records:
        suite_name = run_suite_name(records[0][1])
    suite = load_suite(suite_name or DEFAULT_SUITE)
    runs = [
        entry_from_run(record, suite, source=f"run record {path!r}") for path, record in records
    ]
    tables = leaderboard_tables(
        suite, runs, baseline=args.baseline, table=args.table, scheme=args.scheme
    )
    sys.stdout.write(render_tables(tables))
    return EXIT_OK


def register_leaderboard(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "leaderboard",
        help="print the leaderboard tables (published baselines, plus runs with --add)",
        description=(
            "Print a suite's leaderboard tables, computed from the published per-task values "
            "shipped in baselines/ (averages, weighted average and rank are recomputed), in the "
            "leaderboard's own Markdown layout. --add puts runs in as extra ranked rows."
        ),
    )
    add_setting(p, "suite", note="here the default is the --add run's suite")
    add_local(p, TABLE)
    add_local(
        p,
        Option(
            "add",
            "a run record written by --koembed-json, ranked as an extra row (repeatable)",
            metavar="RUN.json",
            kind="append",
        ),
    )
    add_local(
        p,
        Option(
            "baseline",
            "only this baseline leaderboard (e.g. ko-leaderboard-v2-sparse, or a CSV path); "
            "default: every shipped baseline of the suite",
            metavar="NAME",
        ),
    )
    add_local(p, SCHEME)
    p.set_defaults(func=_cmd_leaderboard)


# --- rescore ----------------------------------------------------------------------------------


def _cmd_rescore(args: argparse.Namespace) -> int:
    import json

    from pytest_koembed.protocol.suite import load_suite
    from pytest_koembed.reports.rescore import rescore

    suite = load_suite(args.koembed_suite or DEFAULT_SUITE)
    result = rescore(
        Path(args.directory),
        suite,
        allow_partial=args.allow_partial,
        scheme=args.scheme,
        table=args.table,
        name=args.name,
    )
    if args.json:
        path = Path(args.json)
        try:
            path.write_text(
                json.dumps(result.to_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
            )
        except OSError as exc:
            raise KoembedError(
                f"--json {args.json}: cannot write ({exc.strerror or exc})"
            ) from None
    sys.stdout.write(result.text)
    sys.stdout.flush()
    for note in result.notes:
        sys.stderr.write(f"koembed rescore: {note}\n")
    return EXIT_OK


def register_rescore(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "rescore",
        help="leaderboard rows from mteb result files you already have (no GPU, no model)",
        description=(
            "Read the mteb result JSON files under DIR (mteb 1.x and 2.x shapes; one folder per "
            "model, e.g. results/<org__model>/<revision>/), score them by the suite's rules "
            "(split, hf_subset and value rule per task) and print each model's leaderboard rows, "
            "ranked among the published baselines. Missing tasks are listed on stderr."
        ),
    )
    p.add_argument(
        "directory", metavar="DIR", help="folder of mteb result files (searched recursively)"
    )
    add_setting(p, "suite")
    add_local(
        p,
        Option(
            "allow-partial",
            "with tasks missing, average over the tasks present (the published rows are "
            "re-averaged over the same tasks); by default incomplete averages show '-'",
            kind="flag",
        ),
    )
    add_local(p, TABLE)
    add_local(p, SCHEME)
    add_local(
        p,
        Option(
            "name",
            "row name when DIR holds one model (default: model_meta.json's name, else the "
            "folder name); add the dtype suffix here, e.g. Qwen/Qwen3-Embedding-8B-bf16",
            metavar="NAME",
        ),
    )
    add_local(
        p,
        Option(
            "json",
            "also write each model's task values, their result files and whether their pairs "
            "were de-duplicated as the leaderboard does, as JSON",
            metavar="PATH",
        ),
    )
    p.set_defaults(func=_cmd_rescore)


# --- mirror -----------------------------------------------------------------------------------


def _cmd_mirror(args: argparse.Namespace) -> int:
    from pytest_koembed.data.mirror import mirror_suite

    suite = args.koembed_suite or DEFAULT_SUITE
    source = Path(args.source).expanduser().resolve() if args.source else None
    if source is not None and not source.is_dir():
        raise KoembedError(f"--from {args.source}: no such directory")
    written = mirror_suite(suite, Path(args.dir), source=source, columns=args.task)
    if not written:
        raise KoembedError(f"suite {suite!r} has no mteb task to mirror")
    for column, path, n, dropped in written:
        dup = f" ({dropped} repeated pairs dropped)" if dropped else ""
        sys.stdout.write(f"{column}: {n} examples{dup} -> {path}\n")
    return EXIT_OK


def register_mirror(subparsers: Subparsers) -> None:
    from pytest_koembed.data import mirror

    p = subparsers.add_parser(
        "mirror",
        help="write a suite's task data to DIR in the local layout (for --koembed-data-dir)",
        description=mirror.__doc__.splitlines()[0] if mirror.__doc__ else None,
    )
    p.add_argument("dir", metavar="DIR", help="where to write DIR/<task>/<subset>/<split>/")
    add_setting(p, "suite")
    add_local(
        p,
        Option(
            "task",
            "only this task (its leaderboard column; repeatable)",
            metavar="COLUMN",
            kind="append",
        ),
    )
    add_local(
        p,
        Option("from", "read a local copy in the layout instead of the Hub", metavar="SRC"),
        dest="source",
    )
    p.set_defaults(func=_cmd_mirror)


# --- compare ----------------------------------------------------------------------------------


def _cmd_compare(args: argparse.Namespace) -> int:
    from pytest_koembed.gate.compare import (
        GateSettings,
        check_confidence,
        check_min_effect,
        compare_records,
        load_run,
    )
    from pytest_koembed.reports.compare_text import plot_comparison, render_markdown, render_text

    settings = GateSettings(
        check_confidence(args.koembed_confidence, "--confidence"),
        check_min_effect(args.koembed_min_effect, "--min-effect"),
    )
    base_record, base_frames = load_run(args.base)
    new_record, new_frames = load_run(args.new)
    comparison = compare_records(
        base_record,
        base_frames,
        new_record,
        new_frames,
        settings,
        base_path=args.base,
        new_path=args.new,
    )
    if args.plot:
        plot_comparison(comparison, args.plot)
    if args.json:
        from pytest_koembed.records import write_json

        write_json(comparison.to_dict(), Path(args.json))
    sys.stdout.write(render_markdown(comparison) if args.markdown else render_text(comparison))
    return EXIT_FAILED if comparison.regressed else EXIT_OK


def register_compare(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="compare two saved runs task by task (paired test, Holm), without a model",
        description=(
            "Compare two run records (--koembed-json / --koembed-save-baseline, each with its "
            ".examples.parquet sidecar) on the same examples: per task the delta with its paired "
            "bootstrap interval and a Holm-adjusted p-value, and the verdict. Exit status 1 on "
            "a significant regression, 0 otherwise, 4 on bad input."
        ),
    )
    p.add_argument("base", metavar="BASE.json", help="the baseline run record")
    p.add_argument("new", metavar="NEW.json", help="the run record to judge")
    add_setting(p, "confidence", note="here Holm is over the paired tasks of the two runs")
    add_setting(p, "min-effect")
    add_local(p, Option("markdown", "print a GitHub-flavoured table", kind="flag"))
    add_local(p, Option("plot", "draw the deltas to PATH", metavar="PATH.png"))
    add_local(p, Option("json", "write the comparison as JSON", metavar="PATH"))
    p.set_defaults(func=_cmd_compare)


# --- merge ------------------------------------------------------------------------------------


def _cmd_merge(args: argparse.Namespace) -> int:
    from pytest_koembed.evaluation.per_example import write_run_files
    from pytest_koembed.records import write_json
    from pytest_koembed.reports.summary import summary_lines
    from pytest_koembed.run.merge import merge_records

    out = Path(args.output).expanduser().resolve()
    if out in {Path(p).expanduser().resolve() for p in args.records}:
        raise KoembedError(f"-o {args.output} is one of the records to merge; write elsewhere")
    record, frames, suite, missing = merge_records(
        args.records, allow_missing=args.allow_missing, suite_option=args.koembed_suite
    )
    try:
        write_run_files(record, out, frames, write_json)
    except OSError as exc:
        raise KoembedError(f"-o {out}: not written: {' '.join(str(exc).split())}") from None
    for warning in record["merged"].get("warnings") or []:
        sys.stderr.write(f"koembed merge: {warning}\n")
    for line in summary_lines(record):
        sys.stdout.write(line + "\n")
    if missing:
        sys.stdout.write(f"missing (not run): {', '.join(missing)}\n")
    scored = len(record["tasks"])
    sys.stdout.write(
        f"merged {len(args.records)} run records ({scored} of {len(suite.tasks)} tasks of suite "
        f"{suite.name}) into {out}\n"
    )
    return EXIT_OK


def register_merge(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "merge",
        help="merge the run records of a run's shards (--koembed-shard) into one",
        description=(
            "Combine the run records of the shards of one run (--koembed-shard K/N, each written "
            "with --koembed-json, each with its .examples.parquet sidecar) into one run record "
            "and one sidecar: the values, averages and intervals of the same tasks run in one "
            "session. Refuses, in one line, records of different models, suites, schemes, data "
            "sources or package versions, a task recorded twice, a record that is not complete, "
            "and tasks of the selection that no record holds (unless --allow-missing). Exit "
            "status 0, or 4 with one line on stderr."
        ),
    )
    p.add_argument("records", nargs="+", metavar="RUN.json", help="the shards' run records")
    add_local(p, Option("output", "where to write", metavar="MERGED.json"), "-o", required=True)
    add_local(
        p,
        Option(
            "allow-missing",
            "merge although tasks of the selection are in no record: they are listed as not "
            "run, and the merged record is not complete (koembed gate refuses it)",
            kind="flag",
        ),
    )
    add_setting(p, "suite", note=SUITE_RECORD.replace("the record says", "the records say"),
                deprecated=["--koembed-suite"])  # fmt: skip
    p.set_defaults(func=_cmd_merge)


# --- gate -------------------------------------------------------------------------------------


def _section(title: str, width: int = 80) -> str:
    """A section header as pytest draws one: ``==== koembed summary ====``."""
    return f" {title} ".center(width, "=") + "\n"


def _cmd_gate(args: argparse.Namespace) -> int:
    from pytest_koembed.run.finish import GateOptions, gate_record

    values = {name: getattr(args, "koembed_" + name.replace("-", "_")) for name in GATE_SETTINGS}
    values["strict"] = bool(values["strict"])
    options = GateOptions(
        **{name.replace("-", "_"): value for name, value in values.items()},
        suite=args.koembed_suite,
    )
    status, lines, rows_text = gate_record(args.record, options)
    out = sys.stdout
    out.write(_section("koembed summary"))
    for line in lines:
        out.write(line.text + "\n")
    if rows_text:
        out.write(_section("koembed leaderboard rows"))
        out.write(rows_text)
    return status


def register_gate(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "gate",
        help="apply the gate and reports to a saved run record, without a model",
        description=(
            "Judge a run record (--koembed-json, or koembed merge's) as the pytest run would "
            "have, with the same settings (--NAME here for the plugin's --koembed-NAME): each "
            "task against --baseline (tolerance rule or paired test, then Holm over the run), "
            "the --fail-under gates, and the reports. Prints the same koembed summary. Exit "
            "status as pytest's: 0 passed, 1 a task failed or regressed, a gate failed or an "
            "output was not written, 5 no task in the record; 4 on bad input."
        ),
    )
    p.add_argument("record", metavar="RUN.json", help="a complete run record")
    for name in GATE_SETTINGS:
        note = "the judged run record (and its sidecar)" if name == "json" else None
        add_setting(p, name, note=note, deprecated=["--koembed-" + name])
    add_setting(p, "suite", note=SUITE_RECORD, deprecated=["--koembed-suite"])
    p.set_defaults(func=_cmd_gate)


# --- cache ------------------------------------------------------------------------------------


def _cache_root(args: argparse.Namespace) -> Path:
    from pytest_koembed.models.cache import _ini_cache_dir

    if args.koembed_cache:
        return Path(args.koembed_cache).expanduser().resolve()
    found = _ini_cache_dir(Path.cwd())
    if found is None:
        raise KoembedError(
            "which cache? give --cache DIR (the --koembed-cache of your runs); no pytest ini "
            "file here sets koembed_cache"
        )
    return found


def _cmd_cache_info(args: argparse.Namespace) -> int:
    from pytest_koembed.models.cache import _size, scan_cache, select_models

    root = _cache_root(args)
    models = select_models(scan_cache(root), args.model, root)
    entries = sum(m.entries for m in models)
    nbytes = sum(m.nbytes for m in models)
    out = [
        f"embedding cache {root}: {len(models)} model key(s), {entries:,} entries, {_size(nbytes)}"
    ]
    if models:
        rows = [("model", "key", "fingerprint", "dtype", "device", "max length", "entries", "size")]
        for m in models:
            rows.append(
                (
                    m.name,
                    m.key[:12],
                    str(m.fields.get("fingerprint") or "?")[:23],
                    str(m.fields.get("dtype") or "-"),
                    str(m.fields.get("device") or "-"),
                    str(m.fields.get("max_length") or "-"),
                    f"{m.entries:,}",
                    _size(m.nbytes),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        right = {6, 7}
        for r in rows:
            cells = [
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ]
            out.append("  ".join(cells).rstrip())
    for m in models:
        if m.bad_shards:
            out.append(f"{m.name} ({m.key[:12]}): {m.bad_shards} damaged shard(s), ignored by runs")
        if m.temp_files:
            out.append(
                f"{m.name} ({m.key[:12]}): {m.temp_files} temp file(s) of interrupted writes "
                "(koembed cache clear removes them)"
            )
    sys.stdout.write("\n".join(out) + "\n")
    return EXIT_OK


def _cmd_cache_clear(args: argparse.Namespace) -> int:
    from pytest_koembed.models.cache import _reason, _size, clear_models, scan_cache, select_models

    root = _cache_root(args)
    models = select_models(scan_cache(root), args.model, root)
    try:
        clear_models(models, root)
    except OSError as exc:
        raise KoembedError(f"embedding cache {root}: cannot clear ({_reason(exc)})") from None
    entries = sum(m.entries for m in models)
    nbytes = sum(m.nbytes for m in models)
    sys.stdout.write(
        f"embedding cache {root}: removed {len(models)} model key(s), {entries:,} entries, "
        f"{_size(nbytes)}\n"
    )
    return EXIT_OK


def register_cache(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "cache",
        help="show or clear the embedding cache (--koembed-cache)",
        description=(
            "Show the size of an embedding cache per model key (a model's fingerprint with the "
            "settings that change its vectors), or clear it."
        ),
    )
    actions = p.add_subparsers(dest="cache_command", metavar="ACTION", parser_class=type(p))
    actions.required = True
    for name, func, text in (
        ("info", _cmd_cache_info, "entries and bytes per model key"),
        ("clear", _cmd_cache_clear, "remove the cached embeddings (all, or one model's)"),
    ):
        a = actions.add_parser(name, help=text, description=text)
        add_setting(a, "cache", note="default here: koembed_cache of the pytest ini file here")
        add_local(
            a,
            Option(
                "model",
                "only this model: its name or path as given to --koembed-model, its row name, "
                "its fingerprint, or a key prefix (8+ characters)",
                metavar="M",
            ),
        )
        a.set_defaults(func=func)


# --- options ----------------------------------------------------------------------------------


def _cmd_options(args: argparse.Namespace) -> int:
    from pytest_koembed.cli import build_parser
    from pytest_koembed.cli.reference import options_markdown, options_text

    parser = build_parser()
    sys.stdout.write(options_markdown(parser) if args.markdown else options_text())
    return EXIT_OK


def register_options(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "options",
        help="list the plugin's options, every subcommand's flags and the exit statuses",
        description=(
            "Print the options reference, generated from the option table: every pytest option "
            "(--koembed-NAME) with its ini key, type, default and help, every koembed "
            "subcommand's flags, and the exit statuses."
        ),
    )
    add_local(p, Option("markdown", "print the whole reference as Markdown", kind="flag"))
    p.set_defaults(func=_cmd_options)


SUBCOMMANDS = [
    register_leaderboard,
    register_rescore,
    register_mirror,
    register_compare,
    register_merge,
    register_history,
    register_gate,
    register_cache,
    register_options,
]
"""Functions that each register one subcommand on the ``koembed`` parser."""
