"""The verdicts as the summary and ``koembed gate`` print them: the ``baseline:`` lines, the
paired gate's lines, the aggregate gates' lines. The verdicts themselves are data
(``gate.verdicts``); every number here goes through :mod:`reports.text`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_koembed.gate.baselines import AUTO_RULE
from pytest_koembed.gate.compare import GateSettings
from pytest_koembed.gate.gates import GateResult
from pytest_koembed.gate.verdicts import REGRESSED, WARNED
from pytest_koembed.reports import text

__all__ = ["baseline_lines", "gate_lines", "judged_against_line"]


def _settings(block: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]]) -> str:
    """`` (tolerance 1.00 points)``: the policy's settings after a ``baseline:`` source. Under
    ``--koembed-rule=auto`` with every judged task paired no task used the tolerance: it is left
    out (a ``strict`` stays)."""
    settings = str(block.get("settings", ""))
    judged = [t for t in tasks if t.get("verdict") and t.get("baseline") is not None]
    all_paired = bool(judged) and all(t.get("p_value") is not None for t in judged)
    if block.get("rule") == AUTO_RULE and settings.startswith("tolerance ") and all_paired:
        settings = "strict" if settings.endswith(", strict") else ""
    return f" ({settings})" if settings else ""


def _paired_lines(paired: Mapping[str, Any]) -> list[str]:
    """The paired gate: how it tests, which file, the legend, cannot-fail tasks, the weighted
    average's paired delta, the tasks gated on another statistic."""
    gate = GateSettings(paired["confidence"], paired["min_effect"])
    same = "yes" if paired.get("same_rows") else f"no, {len(paired['not_paired'])} not paired"
    how = text.paired_gate(gate.confidence, gate.min_effect, paired["tasks"])
    shard = paired.get("shard")
    if isinstance(shard, Mapping):  # --koembed-shard: Holm needs every shard's p-values
        how = (
            f"shard {shard['label']}: each item at Bonferroni over the run's "
            f"{shard['bonferroni_m']} paired tasks, {text.level(gate.confidence)} confidence, "
            f"min effect {text.fixed(gate.min_effect)} points; Holm over the run is koembed "
            "gate's, on the merged record"
        )
    lines = [f"paired gate: {how}; baseline {paired.get('file')} (same rows: {same})"]
    lines += [f"  {note}" for note in paired.get("not_paired", [])]
    lines.append(
        "  one-sided: drops are tested at the full level and fail the run, improvements are "
        "a family of their own that never fails; "
        + text.legend(gate.confidence).split("; ", 1)[0]
        + "; p: Holm-adjusted"
    )
    for column, why in (paired.get("cannot_fail") or {}).items():
        lines.append(f"  {column}: {why}")
    weighted = paired.get("weighted_average")
    if isinstance(weighted, Mapping) and weighted.get("delta") is not None:
        ci = weighted.get("delta_ci")
        interval = (ci["low"], ci["high"]) if isinstance(ci, Mapping) else None
        lines.append(
            f"weighted average, paired: {text.value(weighted['base'])} -> "
            f"{text.value(weighted['new'])}, delta "
            f"{text.delta_interval(weighted['delta'], interval)} (unadjusted "
            f"{text.level(gate.confidence)} paired bootstrap interval; not tested)"
        )
    lines += [f"  {note}" for note in paired.get("gated", [])]
    return lines


def _verdict_lines(record: Mapping[str, Any], paired: Any) -> list[str]:
    """The verdict counts, the regressions' messages, the regressions only Holm found."""
    lines = []
    counts: dict[str, int] = {}
    for task in record.get("tasks", []):
        verdict = task.get("verdict")
        if verdict:
            counts[verdict] = counts.get(verdict, 0) + 1
    if counts:
        lines.append("verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    for task in record.get("tasks", []):
        if task.get("verdict") in (REGRESSED, WARNED) and task.get("verdict_note"):
            lines.append(f"  {task['verdict_note']}")
    holm_only = paired.get("holm_only") if isinstance(paired, Mapping) else None
    if holm_only:
        lines.append(
            f"{len(holm_only)} regression(s) found by Holm over the run although the item "
            f"passed: {', '.join(holm_only)} (exit status 1)"
        )
    return lines


def baseline_lines(record: Mapping[str, Any]) -> list[str]:
    """What the run was compared with and what came of it (the summary's ``baseline:`` part)."""
    block = record.get("baseline")
    if not isinstance(block, Mapping):
        return []
    if block.get("option") == "none":
        return [str(note) for note in block.get("no_effect") or []]
    settings = _settings(block, record.get("tasks") or [])
    lines = [f"baseline: {s}{settings}" for s in block.get("sources", [])]
    against = judged_against_line(block.get("judged_against"))
    if against is not None:
        lines.append(against)
    lines += [f"no baseline: {n}" for n in block.get("notes", [])]
    paired = block.get("paired")
    if isinstance(paired, Mapping):
        lines += _paired_lines(paired)
    if block.get("no_cell"):
        lines.append("no baseline cell (passed unchecked): " + ", ".join(block["no_cell"]))
    lines += [str(note) for note in block.get("no_effect") or []]
    return lines + _verdict_lines(record, paired)


def judged_against_line(info: Any) -> str | None:
    """``judged against /ws/base.json (sha256 1a2b3c4d5e6f..., sidecar base.examples.parquet
    sha256 ..., git commit 0123abcd...)``: which file, exactly, the verdicts come from."""
    if not isinstance(info, Mapping) or not info.get("path"):
        return None
    parts = [f"sha256 {str(info.get('sha256'))[:12]}..."]
    sidecar = info.get("sidecar")
    if isinstance(sidecar, Mapping):
        parts.append(f"sidecar {sidecar.get('file')} sha256 {str(sidecar.get('sha256'))[:12]}...")
    commit = info.get("git_commit")
    parts.append(f"git commit {commit[:12]}" if commit else "not a committed file")
    return f"judged against {info['path']} ({', '.join(parts)})"


def gate_lines(record: Mapping[str, Any]) -> list[str]:
    """One line per ``--koembed-fail-under`` gate, and how many failed."""
    gates = [GateResult(**g) for g in record.get("gates") or []]
    lines = [g.line() for g in gates]
    failed = [g for g in gates if g.failed]
    if failed:
        lines.append(
            f"{len(failed)} of {len(gates)} gate(s) failed: "
            + ", ".join(g.name for g in failed)
            + " (exit status 1)"
        )
    return lines
