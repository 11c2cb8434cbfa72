"""Per-model instructions: which prompt each task and role gets.

The leaderboard prompts some models per category (STS / NLI / Clustering) and retrieval queries
as the model card says (``docs/protocol.md``, "Instructions"). A profiles
file carries those prompts: the shipped one is ``profiles/ko-leaderboard-v1.toml`` (its header
documents the format); ``--koembed-instructions PATH`` replaces it with a user's file in the same
format, and ``--koembed-no-instructions`` turns prompts off.

Resolution for one task (``TaskSpec``) and role:

* ``symmetric`` (STS, NLI, Clustering, Classification): the profile entry's ``tasks`` table
  (column, then mteb task name), then its category key (``STS`` / ``NLI`` / ``Clustering`` /
  ``Classification``).
* ``query`` / ``document`` (Retrieval, Reranking): with a user's file, its entry first
  (``tasks`` keys ``<column>-<role>`` / ``<task>-<role>``, then ``query`` / ``document``); then
  the model's own sentence-transformers prompts (``<task>-<role>``, then ``query``, or
  ``document`` / ``passage`` / ``corpus``); then the shipped profile's entry.

An empty prompt is no prompt (None). Nothing here imports torch or mteb.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.spec import TaskSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
SHIPPED_PROFILE = PROFILES_DIR / "ko-leaderboard-v1.toml"

ROLES = ("query", "document", "symmetric")
SYMMETRIC_KEYS = ("STS", "NLI", "Clustering", "Classification")
# Categories whose texts are queries and documents (each role has its own prompt).
ASYMMETRIC_CATEGORIES = ("Retrieval", "Reranking")
_ENTRY_KEYS = {"match", "dtype", "note", "tasks", "query", "document", *SYMMETRIC_KEYS}
_TOP_KEYS = {"format", "name", "description", "profile"}
_DTYPE_SUFFIX = re.compile(r"-(fp16|bf16|fp32)$", re.IGNORECASE)
_MODEL_DOCUMENT_KEYS = ("document", "passage", "corpus")


@dataclass(frozen=True)
class ProfileEntry:
    """One ``[[profile]]`` table: the models it matches and their prompts."""

    match: tuple[str, ...]
    prompts: Mapping[str, str] = field(default_factory=dict)  # STS/NLI/Clustering/query/document
    tasks: Mapping[str, str] = field(default_factory=dict)
    dtype: str | None = None
    note: str = ""
    index: int = 0  # position in the file, from 1

    @property
    def label(self) -> str:
        return f"#{self.index} ({', '.join(self.match)})"

    def lookup(self, keys: tuple[str, ...]) -> tuple[bool, str | None, str]:
        """(defined, prompt, key) for the first of ``keys`` this entry defines."""
        for key in keys:
            if key in self.tasks:
                return True, _clean(self.tasks[key]), f"tasks.{key}"
        return False, None, ""

    def lookup_own(self, key: str) -> tuple[bool, str | None]:
        if key in self.prompts:
            return True, _clean(self.prompts[key])
        return False, None


@dataclass(frozen=True)
class Profile:
    path: Path
    name: str
    entries: tuple[ProfileEntry, ...]

    def find(self, model_name: str) -> ProfileEntry | None:
        return match_entry(self.entries, model_name)


def _clean(prompt: str) -> str | None:
    text = prompt.replace("<br>", "\n")
    return text if text else None


def strip_dtype_suffix(name: str) -> str:
    """``Qwen/Qwen3-Embedding-8B-bf16`` -> ``Qwen/Qwen3-Embedding-8B``."""
    return _DTYPE_SUFFIX.sub("", name.strip().rstrip("/"))


def _matches(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name.lower(), strip_dtype_suffix(pattern).lower())


def match_entry(entries: tuple[ProfileEntry, ...], model_name: str) -> ProfileEntry | None:
    """The entry for ``model_name``: exact name, then first pattern, then by base name.

    The base-name pass (for a bare name, without ``org/``) lets a local directory named like the
    model (``./Qwen3-Embedding-0.6B``) find the Hub model's entry.
    """
    name = strip_dtype_suffix(model_name)
    lowered = name.lower()
    for entry in entries:
        if any(strip_dtype_suffix(p).lower() == lowered for p in entry.match):
            return entry
    for entry in entries:
        if any(_matches(p, name) for p in entry.match):
            return entry
    if "/" in name:
        return None
    for entry in entries:
        for pattern in entry.match:
            base = strip_dtype_suffix(pattern).rsplit("/", 1)[-1]
            if base.strip("*?") and _matches(base, name):
                return entry
    return None


def load_profile(path: Path) -> Profile:
    """Read and check a profiles file; a malformed one is a one-line KoembedError."""
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise KoembedError(
            f"instructions file {path} does not exist (see {SHIPPED_PROFILE.name} in the "
            "package for the format)"
        ) from None
    except IsADirectoryError:
        raise KoembedError(f"instructions file {path} is a directory, not a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise KoembedError(f"instructions file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise KoembedError(f"instructions file {path} cannot be read: {exc}") from None
    return parse_profile(raw, path)


def parse_profile(raw: Mapping[str, Any], path: Path) -> Profile:
    where = f"instructions file {path}"
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise KoembedError(
            f"{where}: unknown top-level key(s) {', '.join(sorted(unknown))}; expected "
            "format, name, description and [[profile]] tables"
        )
    fmt = raw.get("format", 1)
    if fmt != 1:
        raise KoembedError(f"{where}: format {fmt!r} is not supported (this plugin reads 1)")
    tables = raw.get("profile", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise KoembedError(f"{where}: 'profile' must be an array of tables ([[profile]])")
    entries = [_parse_entry(table, i, where) for i, table in enumerate(tables, start=1)]
    return Profile(path=path, name=str(raw.get("name", path.stem)), entries=tuple(entries))


def _parse_entry(table: Mapping[str, Any], index: int, where: str) -> ProfileEntry:
    here = f"{where}, [[profile]] #{index}"
    unknown = set(table) - _ENTRY_KEYS
    if unknown:
        raise KoembedError(
            f"{here}: unknown key(s) {', '.join(sorted(unknown))}; allowed: "
            f"{', '.join(sorted(_ENTRY_KEYS))}"
        )
    match = table.get("match")
    if isinstance(match, str):
        match = [match]
    if (
        not isinstance(match, list)
        or not match
        or not all(isinstance(m, str) and m.strip() for m in match)
    ):
        raise KoembedError(f"{here}: 'match' must be a model name or a non-empty list of names")
    prompts: dict[str, str] = {}
    for key in (*SYMMETRIC_KEYS, "query", "document"):
        if key in table:
            value = table[key]
            if not isinstance(value, str):
                raise KoembedError(f"{here}: {key!r} must be a string, got {value!r}")
            prompts[key] = value
    tasks = table.get("tasks", {})
    if not isinstance(tasks, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tasks.items()
    ):
        raise KoembedError(f"{here}: 'tasks' must be a table of task name = prompt strings")
    dtype = table.get("dtype")
    if dtype is not None and dtype not in ("fp16", "bf16", "fp32"):
        raise KoembedError(f"{here}: dtype {dtype!r} is not one of fp16, bf16, fp32")
    note = table.get("note", "")
    if not isinstance(note, str):
        raise KoembedError(f"{here}: 'note' must be a string")
    return ProfileEntry(
        match=tuple(m.strip() for m in match),
        prompts=prompts,
        tasks=dict(tasks),
        dtype=dtype,
        note=note,
        index=index,
    )


@lru_cache(maxsize=4)
def _cached_profile(path: str, mtime_ns: int) -> Profile:
    return load_profile(Path(path))


def shipped_profile() -> Profile:
    return _cached_profile(str(SHIPPED_PROFILE), SHIPPED_PROFILE.stat().st_mtime_ns)


def leaderboard_dtype(model_name: str) -> str | None:
    """The precision the leaderboard ran ``model_name`` in, from its row name or the profile."""
    suffix = _DTYPE_SUFFIX.search(model_name.strip())
    if suffix:
        return suffix.group(1).lower()
    try:
        entry = shipped_profile().find(model_name)
    except KoembedError:  # pragma: no cover - a broken shipped file is caught by the tests
        return None
    return entry.dtype if entry is not None else None


@dataclass(frozen=True)
class PromptPlan:
    """The prompt for every task and role of one run."""

    model_name: str
    disabled: bool = False
    entry: ProfileEntry | None = None  # from the profile in use (user's or shipped)
    user_profile: bool = False  # the profile is the user's --koembed-instructions file
    profile_path: Path | None = None
    model_prompts: Mapping[str, str] = field(default_factory=dict)

    def prompt_for(self, spec: TaskSpec, role: str) -> str | None:
        """The exact prompt for ``spec`` and ``role`` (query / document / symmetric)."""
        return self.resolve(spec, role)[0]

    def source_for(self, spec: TaskSpec, role: str) -> str:
        """Where ``prompt_for`` took its answer from (for the run record)."""
        return self.resolve(spec, role)[1]

    def resolve(self, spec: TaskSpec, role: str) -> tuple[str | None, str]:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if self.disabled:
            return None, "disabled (--koembed-no-instructions)"
        if spec.category not in ASYMMETRIC_CATEGORIES:
            return self._symmetric(spec)
        if role == "symmetric":
            raise ValueError(f"retrieval task {spec.column!r} has roles query and document")
        if self.user_profile:
            found, prompt, source = self._from_entry_retrieval(spec, role)
            if found:
                return prompt, source
        found, prompt, source = self._from_model(spec, role)
        if found:
            return prompt, source
        if not self.user_profile:
            found, prompt, source = self._from_entry_retrieval(spec, role)
            if found:
                return prompt, source
        return None, "none"

    def _where(self, key: str) -> str:
        assert self.entry is not None
        return f"profile {self.profile_path} {self.entry.label} {key}"

    def _symmetric(self, spec: TaskSpec) -> tuple[str | None, str]:
        if self.entry is None:
            return None, "none"
        found, prompt, key = self.entry.lookup((spec.column, spec.task))
        if found:
            return prompt, self._where(key)
        found, prompt = self.entry.lookup_own(spec.category)
        if found:
            return prompt, self._where(spec.category)
        return None, "none"

    def _from_entry_retrieval(self, spec: TaskSpec, role: str) -> tuple[bool, str | None, str]:
        if self.entry is None:
            return False, None, ""
        found, prompt, key = self.entry.lookup((f"{spec.column}-{role}", f"{spec.task}-{role}"))
        if found:
            return True, prompt, self._where(key)
        found, prompt = self.entry.lookup_own(role)
        if found:
            return True, prompt, self._where(role)
        return False, None, ""

    def _from_model(self, spec: TaskSpec, role: str) -> tuple[bool, str | None, str]:
        prompts = self.model_prompts
        if not any(prompts.get(k) for k in ("query", *_MODEL_DOCUMENT_KEYS)) and not any(
            k.endswith(("-query", "-document")) and v for k, v in prompts.items()
        ):
            return False, None, ""  # the model declares no retrieval prompts
        keys = (f"{spec.task}-{role}", role)
        if role == "document":
            keys = (f"{spec.task}-document", *_MODEL_DOCUMENT_KEYS)
        for key in keys:
            if key in prompts:
                return True, _clean(prompts[key]), f"model prompts[{key!r}]"
        return True, None, "model prompts (none for this role)"

    def describe(self) -> dict[str, Any]:
        """A summary for the run record."""
        return {
            "model": self.model_name,
            "disabled": self.disabled,
            "profile": str(self.profile_path) if self.profile_path else None,
            "user_profile": self.user_profile,
            "entry": list(self.entry.match) if self.entry else None,
            "model_prompts": dict(self.model_prompts),
        }


def build_prompt_plan(
    model_name: str,
    model_prompts: Mapping[str, str] | None,
    profile_path: Path | None,
    disabled: bool,
) -> PromptPlan:
    """The prompt plan for ``model_name`` (a row name or Hub id; ``-fp16``/``-bf16`` ignored).

    ``model_prompts``: the model's own sentence-transformers prompts. ``profile_path``: a user's
    profiles file (None: the shipped one). ``disabled``: no prompts at all. A user's file is
    read and checked even when ``disabled``, so a typo is reported either way.
    """
    prompts = {str(k): str(v) for k, v in (model_prompts or {}).items() if isinstance(v, str)}
    if profile_path is not None:
        profile = load_profile(Path(profile_path))
        user = True
    else:
        profile = shipped_profile()
        user = False
    if disabled:
        return PromptPlan(model_name=model_name, disabled=True, profile_path=profile.path)
    return PromptPlan(
        model_name=model_name,
        entry=profile.find(model_name),
        user_profile=user,
        profile_path=profile.path,
        model_prompts=prompts,
    )
