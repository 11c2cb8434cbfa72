"""The leaderboard protocol as pure functions: task values, rounding, averages, weighting, rank.

Everything here follows ``docs/protocol.md`` and was checked against every number the leaderboard
publishes (v1: 20 models, the overall table and the 4 category tables; v2: the dense and the
sparse retrieval tables). The rules, in the order they are applied:

1. **Task value** (:func:`task_value`): a task's raw mteb scores (0-1 scale) are turned into one
   number by the task's *value rule* and multiplied by 100. It is kept unrounded in run records.
2. **Shown value**: the task value rounded half-up to 2 decimals (:func:`round_half_up`), which is
   what the tables print and what every average is computed from.
3. **Category average** (:func:`category_average`): the exact mean of the category's shown values,
   rounded to 2 decimals *half to even*. The only exact tie in the published data shows why:
   FronyAI/frony-embed-medium-arctic-ko-v2.5 has Retrieval values averaging exactly 77.865 and the
   leaderboard prints 77.86 (half-up would give 77.87). Python's ``round`` / pandas ``.round(2)``,
   which the leaderboard most likely used, give 77.86 too; computing the mean exactly in decimal
   and rounding half to even gives the same answer without depending on float noise.
4. **Weighted average** (a :class:`Scheme`): computed from the *rounded* category averages, exactly,
   then rounded to 2 decimals half to even. Using unrounded category averages instead misses 3 of
   the 20 published rows (Qwen3-Embedding-4B 63.88 vs 63.87, gte-Qwen2-7B 66.02 vs 66.03,
   bge-multilingual-gemma2 61.52 vs 61.53). For ``ko-leaderboard-v1`` the weighted value
   ``(3R + 3C + S + N) / 9`` of 2-decimal inputs can never be an exact tie, so half-up and half-even
   agree there.
5. **Rank** (:func:`rank`): by the rounded number the table shows, descending, "competition"
   ranking: equal numbers share a rank and the next rank is skipped (two 83.26 are both 10, the
   next is 12).

The ``mteb`` scheme is the exception, because it follows mteb's leaderboard instead: there every
mean (over the tasks of a task type, over all tasks, over the task-type means) is taken of the
unrounded task scores, and only the number shown is rounded, by Python's ``round(x, 2)`` of the
x100 value (``mteb/leaderboard/table.py``, ``_format_scores``). See :func:`mteb_mean` and
:func:`mteb_averages`.

This module imports neither pytest nor torch nor mteb.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction
from typing import NamedTuple

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.spec import CATEGORIES

# ---------------------------------------------------------------------------------------------
# Per-task value
# ---------------------------------------------------------------------------------------------

STS_KEYS: tuple[str, ...] = (
    "pearson",
    "spearman",
    "cosine_pearson",
    "cosine_spearman",
    "manhattan_pearson",
    "manhattan_spearman",
    "euclidean_pearson",
    "euclidean_spearman",
)
"""The 8 mteb STS score keys whose plain mean is an STS task's leaderboard value."""

NDCG_KEYS: tuple[str, ...] = ("ndcg_at_5", "ndcg_at_10")
"""The 2 mteb retrieval score keys whose mean is a retrieval task's leaderboard value."""

VALUE_RULES: dict[str, str] = {
    "sts-mean8": "mean of the 8 STS keys " + ", ".join(STS_KEYS),
    "ndcg-5-10": "(ndcg_at_5 + ndcg_at_10) / 2",
    "main_score": "the score under mteb's key 'main_score'",
}
"""The named value rules and what each one reads. Any other plain identifier (``cosine_ap``,
``v_measure``, ``max_ap``, ...) is a rule too: the raw score under that key."""

_NAMED_RULES: dict[str, tuple[str, ...]] = {
    "sts-mean8": STS_KEYS,
    "ndcg-5-10": NDCG_KEYS,
}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_value_rule(rule: str, where: str) -> None:
    """Raise a one-line :class:`KoembedError` naming ``where`` if ``rule`` is not a value rule.

    Valid rules: ``"sts-mean8"``, ``"ndcg-5-10"``, ``"main_score"`` and any plain identifier (a raw
    mteb score key such as ``"cosine_ap"``).
    """
    if not isinstance(rule, str) or not (rule in _NAMED_RULES or _IDENTIFIER.match(rule)):
        raise KoembedError(
            f"{where}: unknown value rule {rule!r}; use sts-mean8, ndcg-5-10, main_score or a raw "
            "mteb score key such as cosine_ap or v_measure"
        )


def rule_keys(rule: str) -> tuple[str, ...]:
    """The raw score keys a value rule reads (their plain mean, x100, is the task value)."""
    check_value_rule(rule, "value rule")
    return _NAMED_RULES.get(rule, (rule,))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def task_value(rule: str, scores: Mapping[str, float]) -> float:
    """A task's leaderboard value: the rule applied to raw mteb scores (0-1 scale), x100, unrounded.

    ``sts-mean8`` is the mean of :data:`STS_KEYS`, ``ndcg-5-10`` the mean of ``ndcg_at_5`` and
    ``ndcg_at_10``, any other rule the single score under that key (``main_score`` included).
    Raises a one-line :class:`KoembedError` naming the rule and the key(s) when a key is missing,
    not a number, or not finite.
    """
    keys = rule_keys(rule)
    missing = [k for k in keys if k not in scores]
    if missing:
        have = ", ".join(sorted(scores)) or "none"
        raise KoembedError(
            f"value rule {rule!r} needs score key(s) {', '.join(missing)}, missing from the "
            f"task's scores (keys present: {have})"
        )
    bad = [k for k in keys if not _is_number(scores[k]) or not math.isfinite(scores[k])]
    if bad:
        shown = ", ".join(f"{k}={scores[k]!r}" for k in bad)
        raise KoembedError(f"value rule {rule!r}: score key(s) not a finite number: {shown}")
    return math.fsum(float(scores[k]) for k in keys) / len(keys) * 100.0


# ---------------------------------------------------------------------------------------------
# Rounding
# ---------------------------------------------------------------------------------------------


def _quantize(x: float | Decimal, ndigits: int, mode: str) -> float:
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError(f"cannot round {x!r}")
    d = x if isinstance(x, Decimal) else Decimal(repr(x))
    return float(d.quantize(Decimal(1).scaleb(-ndigits), rounding=mode))


def round_half_up(x: float, ndigits: int = 2) -> float:
    """Round half away from zero at ``ndigits`` decimals, on the number as Python prints it.

    Works on ``repr(x)`` so that float noise does not decide ties: ``round_half_up(83.375)`` is
    83.38 and ``round_half_up(0.125)`` is 0.13 (``round`` gives 0.12). Raises ``ValueError`` for
    NaN and infinities. This is how a task value becomes the shown value.
    """
    return _quantize(x, ndigits, ROUND_HALF_UP)


def round_half_even(x: float, ndigits: int = 2) -> float:
    """Round half to even at ``ndigits`` decimals, on the number as Python prints it.

    ``round_half_even(77.865)`` is 77.86, ``round_half_even(77.875)`` is 77.88. This is how
    averages are rounded (see the module docstring for the published row that needs it).
    """
    return _quantize(x, ndigits, ROUND_HALF_EVEN)


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def _round_exact(value: Decimal) -> float:
    return _quantize(value, 2, ROUND_HALF_EVEN)


def shown_value(value: float) -> float:
    """What a table prints for a task value: rounded half-up to 2 decimals."""
    return round_half_up(value, 2)


def category_average(values: Sequence[float | None]) -> float | None:
    """The average of one category: exact mean of the shown (2-dp) task values, rounded half-even.

    ``values`` are task values, rounded or not (already-rounded baseline values pass through
    unchanged). Returns None when there are no values or any is None (an errored/missing task).
    """
    if not values or any(v is None for v in values):
        return None
    with localcontext() as ctx:
        ctx.prec = 50
        total = sum((_dec(shown_value(v)) for v in values if v is not None), Decimal(0))
        return _round_exact(total / len(values))


# ---------------------------------------------------------------------------------------------
# Weighting schemes
# ---------------------------------------------------------------------------------------------

SchemeFunction = Callable[[Mapping[str, float | None], Sequence[float | None]], float | None]


@dataclass(frozen=True)
class Scheme:
    """A way to combine one model's results into its single weighted number.

    ``compute(category_averages, task_values)`` gets the rounded category averages (category ->
    value, None when incomplete) and all task values of the suite (None for an errored task) and
    returns the weighted average rounded to 2 decimals, or None when something it needs is missing
    or incomplete. ``needs`` lists the categories it needs (empty: it uses task values only).
    """

    name: str
    description: str
    compute: SchemeFunction
    needs: tuple[str, ...] = ()
    # How a category's average is taken from its task values (None for a missing one):
    # the leaderboard's (shown values, half-even) unless the scheme says otherwise.
    category_mean: Callable[[Sequence[float | None]], float | None] | None = None

    def average(self, values: Sequence[float | None]) -> float | None:
        """One category's average under this scheme."""
        return (self.category_mean or category_average)(values)

    def __call__(
        self, category_averages: Mapping[str, float | None], task_values: Sequence[float | None]
    ) -> float | None:
        return self.compute(category_averages, task_values)


def _category_weights(weights: Mapping[str, Fraction]) -> SchemeFunction:
    """A scheme function: sum of weight x rounded category average, exact, rounded half-even."""

    def compute(
        category_averages: Mapping[str, float | None], task_values: Sequence[float | None]
    ) -> float | None:
        total = Fraction(0)
        for cat, weight in weights.items():
            avg = category_averages.get(cat)
            if avg is None:
                return None
            total += Fraction(_dec(avg)) * weight
        with localcontext() as ctx:
            ctx.prec = 50
            return _round_exact(Decimal(total.numerator) / Decimal(total.denominator))

    return compute


def _task_mean(
    category_averages: Mapping[str, float | None], task_values: Sequence[float | None]
) -> float | None:
    return category_average(task_values)


def _exact_mean(values: Sequence[float | None]) -> float | None:
    """The unrounded mean, None when there are no values or any is None."""
    if not values or any(v is None for v in values):
        return None
    return math.fsum(float(v) for v in values if v is not None) / len(values)


def mteb_mean(values: Sequence[float | None]) -> float | None:
    """The mean as mteb's leaderboard shows it: of the unrounded values, then ``round(x, 2)``.

    ``values`` are task values (x100). mteb averages the 0-1 scores and shows
    ``round(mean * 100, 2)``; the mean of the x100 values is the same number to float precision.
    None when there are no values or any is None (mteb's ``skipna=False``: a missing task leaves
    the mean empty).
    """
    mean = _exact_mean(values)
    return None if mean is None else round(mean, 2)


def _mteb_task_mean(
    category_averages: Mapping[str, float | None], task_values: Sequence[float | None]
) -> float | None:
    return mteb_mean(task_values)


MEAN_TASK = "Mean (Task)"
MEAN_TASK_TYPE = "Mean (TaskType)"


def mteb_averages(rows: Sequence[tuple[str, float | None]]) -> dict[str, object]:
    """mteb's aggregation of one model's tasks, as its leaderboard shows a benchmark.

    ``rows``: (mteb task type, task value x100 or None) per task of the benchmark. Returns
    ``{"Mean (Task)": mean over tasks, "Mean (TaskType)": mean of the per-type means,
    "task_types": {type: mean over its tasks}}`` with every mean taken of unrounded values and
    rounded as :func:`mteb_mean` does (the order of ``task_types`` is the order the types first
    appear, as in mteb's summary table). A missing task value makes every one of them None, as
    in mteb (``_compute_mean_task``, ``_compute_mean_task_type``, ``_task_types_or_nulls`` in
    ``mteb/benchmarks/_benchmark_metrics.py``).
    """
    values = [v for _, v in rows]
    by_type: dict[str, list[float | None]] = {}
    for task_type, value in rows:
        by_type.setdefault(task_type, []).append(value)
    if not rows or any(v is None for v in values):
        return {
            MEAN_TASK: None,
            MEAN_TASK_TYPE: None,
            "task_types": {t: None for t in by_type},
        }
    type_means = {t: _exact_mean(vs) for t, vs in by_type.items()}
    return {
        MEAN_TASK: mteb_mean(values),
        MEAN_TASK_TYPE: mteb_mean(list(type_means.values())),
        "task_types": {t: None if m is None else round(m, 2) for t, m in type_means.items()},
    }


_V1_WEIGHTS = {
    "STS": Fraction(1, 9),
    "NLI": Fraction(1, 9),
    "Clustering": Fraction(1, 3),
    "Retrieval": Fraction(1, 3),
}
_V1_DOCUMENTED_WEIGHTS = {
    "STS": Fraction(1, 6),
    "NLI": Fraction(1, 6),
    "Clustering": Fraction(1, 3),
    "Retrieval": Fraction(1, 3),
}

SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme(
            name="ko-leaderboard-v1",
            description="R/3 + C/3 + (S+N)/9: what the v1 leaderboard's published numbers follow",
            compute=_category_weights(_V1_WEIGHTS),
            needs=tuple(_V1_WEIGHTS),
        ),
        Scheme(
            name="ko-leaderboard-v1-documented",
            description="R/3 + C/3 + (S+N)/6: the weights the v1 leaderboard's text states",
            compute=_category_weights(_V1_DOCUMENTED_WEIGHTS),
            needs=tuple(_V1_WEIGHTS),
        ),
        Scheme(
            name="task-mean",
            description="plain mean of all task values (leaderboard v2's Retrieval_Average)",
            compute=_task_mean,
        ),
        Scheme(
            name="mteb",
            description=(
                "Mean (Task): mteb's leaderboard aggregation, the mean over tasks of the unrounded "
                "task scores (also Mean (TaskType), the mean of the per-task-type means), "
                "rounded to 2 decimals only when shown"
            ),
            compute=_mteb_task_mean,
            category_mean=mteb_mean,
        ),
    )
}
"""The weighting schemes a suite (``scheme = ...``) or the ``koembed`` CLI can name."""


def get_scheme(scheme: str | Scheme) -> Scheme:
    """A scheme by name (or the scheme itself); a one-line :class:`KoembedError` if unknown."""
    if isinstance(scheme, Scheme):
        return scheme
    try:
        return SCHEMES[scheme]
    except KeyError:
        raise KoembedError(
            f"unknown weighting scheme {scheme!r}; choose one of {', '.join(SCHEMES)}"
        ) from None


# ---------------------------------------------------------------------------------------------
# Summary of one model's results
# ---------------------------------------------------------------------------------------------


class TaskRow(NamedTuple):
    """One task of one model, as the summary needs it (a plain 3-tuple works too).

    ``value`` is the task value x100 (unrounded from a run, or the 2-dp published number from a
    baseline); None when the task errored or has no value.
    """

    column: str
    category: str
    value: float | None


@dataclass(frozen=True)
class Summary:
    """One model's averages under one scheme (what :func:`summarize` returns).

    - ``shown``: column -> the task value as the table prints it (rounded half-up), None if missing.
    - ``category_averages``: category -> average, in the order STS, NLI, Clustering, Retrieval
      (then any other category in first-seen order), only categories that have tasks; None when
      the category is incomplete (one of its tasks has no value).
    - ``incomplete``: the categories whose average is None.
    - ``absent``: categories the scheme needs that have no task at all in the rows.
    - ``missing_columns``: the task columns with no value (errored or not run).
    - ``weighted``: the scheme's weighted average, None when ``incomplete`` or ``absent`` holds a
      category the scheme needs (or, for task-mean, any task has no value).
    """

    scheme: str
    shown: dict[str, float | None]
    category_averages: dict[str, float | None]
    weighted: float | None
    incomplete: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    missing_columns: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """True when every task has a value and the weighted average could be computed."""
        return not self.incomplete and not self.absent and self.weighted is not None


def _ordered_categories(categories: Iterable[str]) -> list[str]:
    seen = list(dict.fromkeys(categories))
    return [c for c in CATEGORIES if c in seen] + [c for c in seen if c not in CATEGORIES]


def summarize(
    rows: Sequence[TaskRow | tuple[str, str, float | None]], scheme: str | Scheme
) -> Summary:
    """Category averages and the weighted average of one model's task rows under ``scheme``.

    ``rows`` holds one :class:`TaskRow` (or ``(column, category, value)`` tuple) per task of the
    suite; a task that errored or did not run has ``value=None``. Raises a one-line
    :class:`KoembedError` for an unknown scheme or a column that appears twice.
    """
    sch = get_scheme(scheme)
    tasks = [TaskRow(*r) for r in rows]
    seen: set[str] = set()
    for row in tasks:
        if row.column in seen:
            raise KoembedError(f"task column {row.column!r} appears twice in one model's results")
        seen.add(row.column)
    shown = {r.column: None if r.value is None else shown_value(r.value) for r in tasks}
    averages: dict[str, float | None] = {}
    for cat in _ordered_categories(r.category for r in tasks):
        averages[cat] = sch.average([r.value for r in tasks if r.category == cat])
    incomplete = tuple(cat for cat, avg in averages.items() if avg is None)
    absent = tuple(cat for cat in sch.needs if cat not in averages)
    weighted = sch(averages, [r.value for r in tasks]) if tasks else None
    return Summary(
        scheme=sch.name,
        shown=shown,
        category_averages=averages,
        weighted=weighted,
        incomplete=incomplete,
        absent=absent,
        missing_columns=tuple(r.column for r in tasks if r.value is None),
    )


# ---------------------------------------------------------------------------------------------
# Rank and display
# ---------------------------------------------------------------------------------------------


def rank(values: Mapping[str, float]) -> dict[str, int]:
    """Competition ranking, highest first: equal values share a rank, the next rank is skipped.

    Pass the rounded numbers the table shows, so that equal shown numbers share a rank
    (``{"a": 83.26, "b": 83.26, "c": 82.24}`` -> a: 1, b: 1, c: 3). The result keeps the input's
    key order.
    """
    ordered = sorted(values.values(), reverse=True)
    first: dict[float, int] = {}
    for i, v in enumerate(ordered, start=1):
        first.setdefault(v, i)
    return {k: first[v] for k, v in values.items()}


def format_value(x: float | None) -> str:
    """How the leaderboard tables print a number: 2 decimals, trailing zeros dropped.

    ``89.2`` -> ``"89.2"``, ``78.0`` -> ``"78"``, ``61.60`` -> ``"61.6"``, ``83.375`` -> ``"83.38"``
    (rounded half-up first). None (no value: an errored or missing task, an incomplete average)
    prints as ``"-"``.
    """
    if x is None:
        return "-"
    text = repr(round_half_up(x, 2) + 0.0)  # + 0.0 turns -0.0 into 0.0
    return text[:-2] if text.endswith(".0") else text


def fixed_text(x: float, ndigits: int = 2) -> str:
    """The rule every shown number follows: ``x`` rounded half up at ``ndigits`` decimals
    (:func:`round_half_up`), all of them printed (``76.125`` -> ``76.13``, ``2.5`` -> ``2.50``).

    ``reports.text`` builds every named format on it; the gate's own messages (made on the
    worker, below ``reports`` in the layers) use it directly.
    """
    return f"{round_half_up(x, ndigits) + 0.0:.{ndigits}f}"  # + 0.0: no "-0.00"


def signed_text(x: float) -> str:
    """A delta: ``+1.20``, ``-4.58`` (:func:`fixed_text`'s rule); ``n/a`` for an undefined
    number."""
    if not math.isfinite(x):  # never a traceback: an undefined number is shown as such
        return "n/a"
    rounded = round_half_up(x, 2)
    return ("+" if rounded >= 0 else "-") + f"{abs(rounded):.2f}"


def delta_interval_text(x: float | None, ci: tuple[float, float] | None) -> str:
    """A delta with its interval: ``-0.42 [-1.10, +0.31]`` (``""`` without a delta)."""
    if x is None:
        return ""
    text = signed_text(x)
    return text + (f" [{signed_text(ci[0])}, {signed_text(ci[1])}]" if ci is not None else "")


def points_text(x: float) -> str:
    """A setting in points as the user gave it (a tolerance, a threshold): 2 decimals, more when
    it has more (``1.00``, ``0.125``)."""
    text = f"{x:.2f}"
    return text if float(text) == x else repr(float(x))
