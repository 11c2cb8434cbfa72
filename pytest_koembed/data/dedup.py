"""Pair de-duplication, as the leaderboard states it: a repeated (sentence1, sentence2) pair
is scored once, the first occurrence kept. Used for STS and pair-classification rows, whether
they come from the local layout, the Hub or a mirror.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

__all__ = [
    "dedupe_pairs",
    "unique_pair_indices",
]


def unique_pair_indices(sentence1: Sequence[Any], sentence2: Sequence[Any]) -> list[int]:
    """Indices of the pairs to keep: the first occurrence of each pair, (A, B) equal to (B, A)."""
    if len(sentence1) != len(sentence2):
        raise ValueError(f"pair columns differ in length: {len(sentence1)} != {len(sentence2)}")
    seen: set[tuple[Any, Any]] = set()
    kept: list[int] = []
    for i, (a, b) in enumerate(zip(sentence1, sentence2, strict=True)):
        key = (a, b) if (str(a), str(b)) <= (str(b), str(a)) else (b, a)
        if key in seen:
            continue
        seen.add(key)
        kept.append(i)
    return kept


def dedupe_pairs(
    sentence1: Sequence[Any], sentence2: Sequence[Any], *others: Sequence[Any]
) -> tuple[tuple[list[Any], ...], int]:
    """Drop repeated pairs, (A, B) and (B, A) alike, keeping the first occurrence.

    Returns the kept columns, in the order given (``sentence1, sentence2, *others``), and the
    number of pairs dropped.
    """
    for other in others:
        if len(other) != len(sentence1):
            raise ValueError(f"column lengths differ: {len(other)} != {len(sentence1)}")
    kept = unique_pair_indices(sentence1, sentence2)
    columns = tuple([column[i] for i in kept] for column in (sentence1, sentence2, *others))
    return columns, len(sentence1) - len(kept)
