"""What a paired test can resolve and detect: its swap resolution (R_max), its smallest
attainable p, whether a task can fail at the run's level at all, and the minimum detectable
effect (normal approximation, one-sided, at the task's Holm step).

Pure Python and the standard library's :class:`statistics.NormalDist`; known before any verdict.
"""

from __future__ import annotations

import math
from decimal import Decimal

from pytest_koembed.errors import KoembedError
from pytest_koembed.stats.bootstrap import DEFAULT_LEVEL, check_level
from pytest_koembed.stats.kernels import DEFAULT_PERMUTATIONS, EXACT_MAX_UNITS

DEFAULT_MIN_EFFECT = 0.5
"""Points: the smallest change the paired gate calls a regression or an improvement."""

FLOOR_FACTOR = 10
"""The swaps a test may draw give a floor 1 / (R + 1) of at most alpha / (FLOOR_FACTOR x m)."""

MDE_POWER = 0.8
"""The power at which :func:`minimum_detectable_effect` is stated."""


def swap_resolution(family_size: int, alpha: float) -> int:
    """R_max: the most random swaps a paired test draws in a run of ``family_size`` tested
    tasks at level ``alpha``: the smallest R with ``1 / (R + 1) <= alpha / (10 m)``, at least
    :data:`DEFAULT_PERMUTATIONS`."""
    if not 0.0 < alpha < 1.0:
        raise KoembedError(f"significance level must be between 0 and 1, got {alpha!r}")
    need = Decimal(FLOOR_FACTOR * max(int(family_size), 1)) / Decimal(repr(float(alpha)))
    return max(DEFAULT_PERMUTATIONS, int(need.to_integral_value(rounding="ROUND_CEILING")) - 1)


def smallest_p(n: int, max_swaps: int) -> float:
    """The smallest one-sided p-value the paired test can give on ``n`` units: 2^-n by exact
    enumeration (n <= :data:`EXACT_MAX_UNITS`), else 1 / (R_max + 1)."""
    if n <= EXACT_MAX_UNITS:
        return 2.0 ** -max(int(n), 0)
    return 1.0 / (max_swaps + 1)


def cannot_fail_note(
    n: int, family_size: int, alpha: float, max_swaps: int | None = None
) -> str | None:
    """Why a task's test can never reach the run's level, or None when it can: its smallest
    attainable p times its first Holm factor (m) is at least alpha. Known before any verdict,
    from the number of units alone."""
    m = max(int(family_size), 1)
    swaps = swap_resolution(m, alpha) if max_swaps is None else max_swaps
    floor = smallest_p(n, swaps)
    if floor * m < alpha:
        return None
    unit = "unit" if n == 1 else "units"
    how = f"1/2^{n}" if n <= EXACT_MAX_UNITS else f"1/{swaps + 1}"
    return (
        f"cannot fail at this level: {n} {unit} give p >= {how} = {floor:.3g}, x {m} "
        f"task{'s' if m != 1 else ''} = {floor * m:.3g} >= {alpha:g}"
    )


def minimum_detectable_effect(
    swap_sd: float,
    delta_sd: float,
    step_alpha: float,
    floor: float,
    min_effect: float = DEFAULT_MIN_EFFECT,
    power: float = MDE_POWER,
) -> float | None:
    """Points: the drop caught with probability ``power`` by a one-sided test at
    ``step_alpha`` (the task's Holm step), None when the test cannot reach that level.

    Normal approximation: the test rejects when the delta falls below ``-z(1-a) * swap_sd``
    (``swap_sd``: the spread of the swapped deltas, the null distribution); under a true drop
    ``D`` the delta spreads as the paired bootstrap says (``delta_sd``), so the power is
    ``P(N(-D, delta_sd) < -z(1-a) swap_sd)``, ``D = z(1-a) swap_sd + z(power) delta_sd``.
    Never below ``min_effect`` (a smaller drop is never called a regression).
    """
    from statistics import NormalDist

    if floor >= step_alpha or not math.isfinite(swap_sd):
        return None
    spread = delta_sd if math.isfinite(delta_sd) and delta_sd > 0 else swap_sd
    z = NormalDist()
    drop = z.inv_cdf(1.0 - step_alpha) * swap_sd + z.inv_cdf(power) * spread
    return max(float(min_effect), float(drop))


def significance_level(confidence: float = DEFAULT_LEVEL) -> float:
    """alpha = 1 - confidence, computed in decimal: 1 - 0.95 is 0.05, not 0.050000000000000044
    (which would let p = 0.05 pass as significant)."""
    check_level(confidence)
    return float(Decimal(1) - Decimal(repr(float(confidence))))
