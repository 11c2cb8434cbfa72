"""What one task's evaluation produced, and the run record that collects them.

These are plain data: they travel from xdist workers to the controller as JSON-able dicts
(``TaskScore.to_dict`` / ``from_dict``) and are written to ``--koembed-json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TaskScore:
    """The outcome of one task of a suite (one pytest item)."""

    column: str
    task: str
    split: str
    subset: str
    category: str
    value_rule: str
    status: str = "ok"  # "ok" or "error"
    value: float | None = None  # leaderboard value x100, unrounded
    shown: float | None = None  # value rounded half-up to 2 decimals (what tables show)
    # all raw mteb scores, 0-1 scale; None where mteb gave NaN
    scores: dict[str, float | None] = field(default_factory=dict)
    main_score: str | None = None  # mteb's main score key for the task
    n_examples: int = 0  # pairs / texts / queries scored, after de-duplication
    sizes: dict[str, int] = field(default_factory=dict)  # e.g. {"queries": 20, "documents": 60}
    duplicates_dropped: int = 0
    seconds: float = 0.0
    prompts: dict[str, str | None] = field(default_factory=dict)  # role -> exact prompt used
    source: str = ""  # where the rows came from (local path or Hub dataset@revision)
    error: str | None = None  # one-line reason when status == "error"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskScore:
        return cls(**data)
