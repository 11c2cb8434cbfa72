"""The plain types of a suite: its categories, its tasks (:class:`TaskSpec`) and :class:`Suite`.

Kept apart from loading (``protocol.suite``) so that value rules, mteb benchmark suites and scoring
can name these types without importing the TOML reader, which imports them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pytest_koembed.errors import KoembedError

CATEGORIES = ("STS", "NLI", "Clustering", "Retrieval", "Classification", "Reranking")

# The value rule a category uses on the leaderboard (docs/protocol.md, "Version 1: tasks and the
# value taken from each").
DEFAULT_VALUE_RULE = {
    "STS": "sts-mean8",
    "NLI": "cosine_ap",
    "Clustering": "v_measure",
    "Retrieval": "ndcg-5-10",
    "Classification": "main_score",
    "Reranking": "main_score",
}

# Custom local task types and the mteb task type each one becomes.
CUSTOM_TYPES = {
    "STS": "STS",
    "PairClassification": "PairClassification",
    "Clustering": "Clustering",
    "Retrieval": "Retrieval",
    "Classification": "Classification",
    "Reranking": "Reranking",
}


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark task of a suite: one pytest item, one leaderboard column."""

    column: str  # leaderboard column, also the pytest item name
    task: str  # mteb task name (or the custom task's name)
    split: str
    subset: str  # hf_subset; "default" when the dataset has none
    category: str  # one of CATEGORIES
    value_rule: str  # see scoring.task_value
    custom_type: str | None = None  # None for mteb tasks, else a key of CUSTOM_TYPES
    data_dir: Path | None = None  # custom tasks: root of the JSONL layout
    # Tasks of an mteb benchmark (``protocol.mteb_suites``): the benchmark's name. Such a
    # task is evaluated as mteb evaluates it in that benchmark: every split and subset the
    # benchmark keeps (``splits`` x ``subsets``), no de-duplication of pairs, and its value is
    # mteb's score of the task (the mean of main_score over those cells).
    benchmark: str | None = None
    splits: tuple[str, ...] = ()  # benchmark tasks: all the splits; ``split`` joins them by ","
    subsets: tuple[str, ...] = ()  # benchmark tasks: all the subsets; ``subset`` likewise
    # A development split of the task (suite key ``dev_split``), where one exists: what
    # ``--koembed-split=dev`` scores instead of ``split``, to select checkpoints on.
    dev_split: str | None = None

    @property
    def cells(self) -> tuple[tuple[str, str], ...]:
        """(subset, split) pairs the task is scored on: one, unless an mteb benchmark keeps more."""
        if self.benchmark is None or not (self.splits and self.subsets):
            return ((self.subset, self.split),)
        return tuple((subset, split) for split in self.splits for subset in self.subsets)

    @property
    def marker(self) -> str:
        """The pytest marker of the task's category (``-m retrieval``): lower case, letters,
        digits and ``_`` only (an mteb type such as ``VisualSTS(eng)`` is ``visualstseng``)."""
        return re.sub(r"[^0-9a-z_]", "", self.category.lower())

    @property
    def is_custom(self) -> bool:
        return self.custom_type is not None


@dataclass(frozen=True)
class Suite:
    name: str
    scheme: str  # weighting scheme, a key of scoring.SCHEMES
    tasks: tuple[TaskSpec, ...]
    path: Path
    description: str = ""

    def task(self, column: str) -> TaskSpec:
        for spec in self.tasks:
            if spec.column == column:
                return spec
        raise KoembedError(f"suite {self.name!r} has no task {column!r}")


SPLITS = ("test", "dev")
"""``--koembed-split``: ``test`` (the suite's own splits, the leaderboard's) or ``dev``."""


def dev_suite(suite: Suite) -> Suite:
    """The suite on its development splits (``--koembed-split=dev``): each task that names a
    ``dev_split`` scored on it; tasks without one are left out (the weighted average needs the
    scheme's categories, so a suite names dev splits for those). One line when none has one."""
    from dataclasses import replace

    tasks = tuple(replace(t, split=t.dev_split) for t in suite.tasks if t.dev_split)
    if not tasks:
        raise KoembedError(
            f"--koembed-split=dev: suite {suite.name!r} names no development split (dev_split "
            "in a [[tasks]] entry); run it on its test splits (--koembed-split=test) or add "
            "dev_split to a suite file of your own"
        )
    return replace(suite, tasks=tasks)
