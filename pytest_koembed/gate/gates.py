"""Aggregate gates (``--koembed-fail-under``): ``weighted=60`` and ``<category>=75``, judged on
the controller after all items.

A gate passes only on the complete average it names: an errored or not-run task makes it
"incomplete" and it fails; a partly deselected category (or, for ``weighted``, any deselected
task) fails too, since the average would be over part of what the threshold means. A gate whose
tasks were all deselected on purpose (``-k`` / ``-m``) is "not checked" and does not fail the run.

This module imports neither pytest nor torch nor mteb.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.gate.baselines import (
    WEIGHTED_GATE,
    _category,
    _dec,
    _items,
    _number,
)
from pytest_koembed.protocol.scoring import (
    fixed_text,
    points_text,
)
from pytest_koembed.protocol.spec import CATEGORIES, Suite

# ---------------------------------------------------------------------------------------------
# Aggregate gates
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    name: str  # "weighted" or a category
    threshold: float

    @property
    def label(self) -> str:
        return "weighted average" if self.name == WEIGHTED_GATE else f"{self.name} average"


def parse_gates(specs: Iterable[str], suite: Suite) -> tuple[Gate, ...]:
    """``["weighted=60,retrieval=75"]`` -> gates (a later item for the same name wins)."""
    categories = {t.category for t in suite.tasks}
    gates: dict[str, Gate] = {}
    for item in _items(specs):
        where = f"--koembed-fail-under {item!r}"
        key, sep, value = item.rpartition("=")
        if not sep or not key:
            raise KoembedError(f"{where}: expected NAME=POINTS, e.g. weighted=60 or retrieval=75")
        threshold = _number(value, where)
        if threshold > 100:
            raise KoembedError(f"{where}: {value!r} is above 100 points")
        if key.casefold() in (WEIGHTED_GATE, "weighted_average"):
            name = WEIGHTED_GATE
        else:
            category = _category(key, suite)
            if category is None or category not in categories:
                own = dict.fromkeys(t.category for t in suite.tasks)
                have = ", ".join(
                    [c for c in CATEGORIES if c in own] + [c for c in own if c not in CATEGORIES]
                )
                raise KoembedError(
                    f"{where}: {key!r} is not 'weighted' nor a category of suite "
                    f"{suite.name!r} ({have})"
                )
            name = category
        gates[name] = Gate(name, threshold)
    return tuple(gates.values())


@dataclass(frozen=True)
class GateResult:
    name: str
    threshold: float
    status: str  # "passed" | "failed" | "not checked"
    value: float | None = None
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        label = WEIGHTED_GATE if self.name == WEIGHTED_GATE else self.name
        head = f"gate {label} >= {points_text(self.threshold)}: {self.status.upper()}"
        return f"{head}, {self.reason}" if self.reason else head


def _missing(record: Mapping[str, Any], columns: Sequence[str]) -> list[str]:
    """Of ``columns`` (selected ones), those that errored or did not run."""
    tasks = {t["column"]: t for t in record.get("tasks", [])}
    out = []
    for column in columns:
        task = tasks.get(column)
        if task is None:
            out.append(f"{column} not run")
        elif task.get("status") != "ok" or task.get("shown") is None:
            out.append(f"{column} errored")
    return out


def unchecked_gates(gates: Sequence[Gate], reason: str) -> list[GateResult]:
    """Every gate as "not checked" (a run that did not finish), with ``reason``."""
    return [GateResult(gate.name, gate.threshold, "not checked", None, reason) for gate in gates]


def evaluate_gates(
    gates: Sequence[Gate], record: Mapping[str, Any], suite: Suite
) -> list[GateResult]:
    """Check each gate on a finished run record (see the module docstring for the rules)."""
    deselected = set(record.get("deselected", []))
    averages = record.get("category_averages", {})
    results = []
    for gate in gates:
        columns = [
            t.column for t in suite.tasks if gate.name == WEIGHTED_GATE or t.category == gate.name
        ]
        selected = [c for c in columns if c not in deselected]
        value = (
            record.get("weighted_average")
            if gate.name == WEIGHTED_GATE
            else averages.get(gate.name)
        )
        what = "task" if gate.name == WEIGHTED_GATE else f"{gate.name} task"
        if not selected:
            results.append(
                GateResult(
                    gate.name, gate.threshold, "not checked", None, f"no {what} selected (-k/-m)"
                )
            )
            continue
        missing = _missing(record, selected)
        if missing:
            reason = f"incomplete ({', '.join(missing)}): never passes on partial data"
            results.append(GateResult(gate.name, gate.threshold, "failed", None, reason))
            continue
        if len(selected) < len(columns):
            reason = (
                f"only {len(selected)} of {len(columns)} {what}s selected (-k/-m); the "
                f"{gate.label} needs them all"
            )
            results.append(GateResult(gate.name, gate.threshold, "failed", None, reason))
            continue
        if value is None:
            reason = f"no {gate.label} could be computed"
            results.append(GateResult(gate.name, gate.threshold, "failed", None, reason))
            continue
        short = _dec(gate.threshold) - _dec(value)
        if short > 0:
            reason = (
                f"{gate.label} {fixed_text(value)} is {points_text(float(short))} short of "
                f"{fixed_text(gate.threshold)}"
            )
            results.append(GateResult(gate.name, gate.threshold, "failed", value, reason))
        else:
            reason = f"{gate.label} {fixed_text(value)}"
            results.append(GateResult(gate.name, gate.threshold, "passed", value, reason))
    return results
