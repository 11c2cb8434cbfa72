"""Run-level error control and verdicts.

Pure numpy. Holm's step-down adjustment over the drops of a run's tasks (valid under any
dependence between tasks, uniformly more powerful than Bonferroni), improvements in a family of
their own that never fails, then :func:`paired_verdict`;
:func:`pytest_koembed.stats.power.minimum_detectable_effect` says what each task could have
caught.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.scoring import round_half_up
from pytest_koembed.stats.bootstrap import DEFAULT_LEVEL
from pytest_koembed.stats.permutation import PairedTest
from pytest_koembed.stats.power import (
    DEFAULT_MIN_EFFECT,
    cannot_fail_note,
    minimum_detectable_effect,
    significance_level,
)

VERDICTS: tuple[str, ...] = ("regressed", "improved", "within noise")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    Sorted ascending, the k-th smallest (k = 1..m) is multiplied by m - k + 1, made
    non-decreasing, capped at 1. Rejecting every adjusted p < alpha keeps the chance of any
    false rejection among the m tasks at most alpha, whatever the dependence between tasks.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return []
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise KoembedError(f"p-values must lie between 0 and 1, got {list(p_values)!r}")
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (m - np.arange(m))
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return [float(x) for x in adjusted]


def paired_verdict(
    delta: float,
    adjusted_p: float,
    confidence: float = DEFAULT_LEVEL,
    min_effect: float = DEFAULT_MIN_EFFECT,
    improvement_p: float | None = None,
) -> str:
    """``regressed``, ``improved`` or ``within noise`` for one task of a paired comparison.

    ``regressed`` when the Holm-adjusted one-sided p-value for a drop (``adjusted_p``) is below
    ``1 - confidence`` and the drop, as the table shows it (``delta`` rounded half-up to 2
    decimals), is at least ``min_effect`` points: ``delta <= -min_effect``. ``improved`` when
    the Holm-adjusted one-sided p for a gain (``improvement_p``, its own family, which never
    fails a run) is below ``1 - confidence`` and the gain is at least ``min_effect``; otherwise
    ``within noise``.
    """
    if min_effect < 0:
        raise KoembedError(f"minimum effect must be 0 points or more, got {min_effect!r}")
    shown = round_half_up(delta, 2)
    alpha = significance_level(confidence)
    if adjusted_p < alpha and shown <= -min_effect and shown < 0:
        return "regressed"
    if improvement_p is not None and improvement_p < alpha and shown >= min_effect and shown > 0:
        return "improved"
    return "within noise"


def holm_steps(p_values: Sequence[float], alpha: float) -> list[float]:
    """The level each p-value faces at its Holm step, in the input order.

    Sorted ascending, the k-th (k = 0..m-1) is tested at alpha / (m - k) when every smaller
    one was rejected; the first that is not rejected stops the procedure, so it and every later
    one face alpha / (m - R) with R the number rejected. (What a task's minimum detectable
    effect is computed at.)
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return []
    adjusted = np.asarray(holm(p_values))
    rejected = int(np.sum(adjusted < alpha))
    order = np.argsort(p, kind="stable")
    steps = np.empty(m)
    for k, i in enumerate(order):
        steps[i] = alpha / (m - min(k, rejected))
    return [float(x) for x in steps]


@dataclass(frozen=True)
class TaskVerdict:
    """One task's outcome in :func:`gate_run`: the drop family's p (``p_value``, Holm-adjusted
    ``adjusted_p``), the improvement family's (``p_improvement``, ``improvement_adjusted``),
    the verdict, the minimum detectable effect (points, None: cannot fail at this level) and,
    where the task cannot reach the run's level at all, why (``cannot_fail``)."""

    delta: float
    p_value: float
    adjusted_p: float
    verdict: str
    p_improvement: float = 1.0
    improvement_adjusted: float = 1.0
    mde: float | None = None
    cannot_fail: str | None = None


def gate_run(
    tests: Mapping[str, PairedTest],
    confidence: float = DEFAULT_LEVEL,
    min_effect: float = DEFAULT_MIN_EFFECT,
) -> dict[str, TaskVerdict]:
    """Holm-adjust the paired tasks of a run, drops and gains as two families, and give each
    task its verdict.

    The run fails when any verdict is ``regressed``: under "no difference" on every task, that
    happens with probability at most ``1 - confidence`` (each drop tested one-sided at the full
    level, Holm over the run's drops). Improvements are a family of their own and never fail.
    """
    columns = list(tests)
    alpha = significance_level(confidence)
    m = len(columns)
    drops = [tests[c].p_value for c in columns]
    adjusted = holm(drops)
    gains = holm([tests[c].p_improvement for c in columns])
    steps = holm_steps(drops, alpha)
    out = {}
    for c, adj, gain, step in zip(columns, adjusted, gains, steps, strict=True):
        t = tests[c]
        out[c] = TaskVerdict(
            delta=t.delta,
            p_value=t.p_value,
            adjusted_p=adj,
            verdict=paired_verdict(t.delta, adj, confidence, min_effect, gain),
            p_improvement=t.p_improvement,
            improvement_adjusted=gain,
            mde=minimum_detectable_effect(t.swap_sd, t.delta_sd, step, t.smallest_p, min_effect),
            cannot_fail=cannot_fail_note(t.n, m, alpha, t.max_swaps),
        )
    return out
