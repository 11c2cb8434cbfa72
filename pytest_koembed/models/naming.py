"""Row names: what a model is called in the summary, the rows and the run record.

A Hub id is its own name. A local directory is named as its user knows it: a Hub cache
snapshot by its repo id, a telling directory name as it is, a generic one (``model``, ``final``,
a hash) from its model card or config.json's ``_name_or_path``, a numbered save together with
its run directory. ``_row_name`` adds the ``-fp16`` / ``-bf16`` suffix of the leaderboard rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.models.model_files import _read_json, _read_modules, _transformer_dir

_SUFFIXES = {"fp16": "-fp16", "bf16": "-bf16", "fp32": ""}


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?")


# Directory names that say nothing about which model is inside (compared case-insensitively).
_GENERIC_DIR_NAMES = frozenset(
    {
        "model", "models", "final", "final_model", "final-model", "best", "best_model",
        "best-model", "output", "outputs", "out", "latest", "last", "ckpt", "ckpts", "checkpoint",
        "checkpoints", "weights", "saved_model", "saved", "export", "exported", "hf",
        "huggingface", "transformers", "sentence-transformers", "sentence_transformers",
        "pretrained", "trained", "current", "default", "main", "snapshot", "snapshots",
        "artifacts", "artifact", "result", "results", "run", "runs", "tmp", "temp", "merged",
        "encoder", "embedder", "embedding", "embeddings", "hub", "files", "data", "pytorch",
    }
)  # fmt: skip


# A training run's numbered save (``checkpoint-5000``): named together with the run directory.
_NUMBERED_SAVE = re.compile(r"(checkpoint|ckpt|step|steps|epoch|global_step|iter)[-_]?\d+", re.I)


_HEXISH = re.compile(r"[0-9a-f]{7,64}")


# Model-card headings that are templates, not names.
_TEMPLATE_HEADING = re.compile(r"model card for model id|\{\{|^sentencetransformer\b", re.I)


def _generic_name(name: str) -> bool:
    return (
        not name.strip(" ._-")
        or name.lower() in _GENERIC_DIR_NAMES
        or bool(_HEXISH.fullmatch(name.lower()))
        or name.lower().startswith("tmp")  # mkdtemp
    )


def _hub_snapshot_repo(path: Path) -> str | None:
    parts = path.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3][len("models--") :].replace("--", "/")
    return None


def _name_from_parts(parts: Sequence[str]) -> str | None:
    """A recognisable name from a path's components, or None when they are all generic.

    A telling last component is the name (``.../kure-ft-lr2e-5``); a generic or numbered one
    goes with the nearest telling directory above it (``kure-ft/checkpoint-5000``,
    ``kure-ft/final``), the tail of the path its user typed.
    """
    names = [p for p in parts if p not in ("", "/", "\\", ".", "..")]
    if not names:
        return None
    last = names[-1]
    if not _generic_name(last) and not _NUMBERED_SAVE.fullmatch(last):
        return last
    run = next((p for p in reversed(names[:-1]) if not _generic_name(p)), None)
    return f"{run}/{last}" if run else None


def local_model_name(path: Path) -> tuple[str, str]:
    """(name, where the name came from) of a local model directory, as its user knows it.

    A Hub cache snapshot reads as its repo id. A directory whose own name says something keeps
    it (``kure-ft-lr2e-5``; a numbered save reads ``kure-ft/checkpoint-5000``). A generic one
    (``model``, ``final``, ``output``, a hash) is named from the model's own metadata: its model
    card (front matter ``model_name`` / ``model-index`` name, else the title), else config.json's
    ``_name_or_path``; else after the nearest directory above it with a telling name.
    """
    repo = _hub_snapshot_repo(path)
    if repo is not None:
        return repo, "hub cache"
    if not _generic_name(path.name) and not _NUMBERED_SAVE.fullmatch(path.name):
        return path.name, "directory"
    if not _NUMBERED_SAVE.fullmatch(path.name):
        card = _model_card_name(path / "README.md")
        if card is not None:
            return card, "model card"
        origin = _name_or_path(path)
        if origin is not None:
            return origin, "config.json _name_or_path"
    above = _name_from_parts(path.parts)
    if above is not None:
        return above, "directory"
    return path.name or str(path), "directory"


def _model_card_name(readme: Path) -> str | None:
    """The model's name in its model card: front matter ``model_name`` or ``model-index[0].name``,
    else the card's title (its first ``# `` heading, outside code, before any other heading)."""
    try:
        text = readme.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    body = text
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end != -1:
            body = text[end + 4 :]
            try:
                import yaml

                meta = yaml.safe_load(text[3:end])
            except Exception:
                meta = None
            if isinstance(meta, dict):
                index = meta.get("model-index")
                first = index[0] if isinstance(index, list) and index else {}
                for value in (
                    meta.get("model_name"),
                    first.get("name") if isinstance(first, dict) else None,
                ):
                    name = _clean_card_name(value)
                    if name is not None:
                        return name
    fenced = False
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if fenced or not stripped.startswith("#"):
            continue
        if not stripped.startswith("# "):
            return None  # a subheading first: the card has no title
        return _clean_card_name(stripped[2:])
    return None


def _clean_card_name(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    name = re.sub(r"^model card for\s+", "", value.strip(), flags=re.I)
    name = name.strip(" `*_\"'")
    if not name or len(name) > 100 or _TEMPLATE_HEADING.search(value) or _generic_name(name):
        return None
    return name


def _name_or_path(path: Path) -> str | None:
    """config.json ``_name_or_path``: a Hub id as it is, a path by its telling components."""
    config_dir = path
    if (path / "modules.json").is_file():
        with suppress(KoembedError):
            config_dir = _transformer_dir(path, _read_modules(path))
    try:
        config = _read_json(config_dir / "config.json")
    except KoembedError:
        return None
    value = config.get("_name_or_path")
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    as_path = Path(value).expanduser()
    if value.startswith((".", "/", "~", "\\")) or "\\" in value or not _HUB_ID.fullmatch(value):
        if as_path.is_absolute() and as_path.resolve() == path.resolve():
            return None
        return _name_from_parts(re.split(r"[/\\]+", value))
    if any(_generic_name(part) for part in value.split("/")):  # "output/model": a relative path
        return _name_from_parts(value.split("/"))
    return value


def _row_name(display: str, dtype: str) -> str:
    suffix = _SUFFIXES[dtype]
    if not suffix or display.lower().endswith(suffix):
        return display
    return display + suffix
