"""What loading a model resolved, remembered in the embedding cache so a warm run loads none.

The embedding cache's model key (``cache.model_fields``) is made of settings that are only known
once a model is loaded: the pooling its modules declare, whether it normalises, its maximum
length, the padding side and EOS token of its tokenizer, its dimension and prompts. Loading a
0.5-8 B model to learn them costs more than the rest of a warm run. So the first (cold) run
writes what loading resolved under a *load key*: a sha256 over everything that decides it
before any weight is read (the files' content hash, the loader, the requested pooling, maximum
length, EOS handling, dtype and device type, the versions of torch / transformers /
sentence-transformers and of pytest-koembed). A later run with the same load key takes the
resolved settings from the file, so its model key is the one a loaded model gives, by
construction, and the model loads only when a text misses the cache (then the freshly resolved
settings are checked against the remembered ones: a mismatch stops the run rather than mixing
vectors of two encoders under one key).

Layout (beside the embeddings, ignored by ``koembed cache info``)::

    DIR/koembed-models-v1/resolved/<load key>.json   the settings a load resolved
    DIR/koembed-models-v1/file-hashes/<path key>.json  each model file's sha256 (fingerprint.py)

Both are written atomically; nothing is locked; a missing or unreadable file means "load".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

from pytest_koembed.models.encoders import EncoderInfo, EncoderOptions
from pytest_koembed.models.fingerprint import MEMO_DIR

# What _load fills in: the settings the weights' own files decide (see the backends).
RESOLVED_FIELDS = (
    "pooling",
    "normalize",
    "max_length",
    "dimension",
    "similarity",
    "model_prompts",
    "default_prompt_name",
    "padding_side",
    "eos_token",
    "append_eos",
)


def load_key(
    info: EncoderInfo, options: EncoderOptions, pooling: str | None, fingerprint: str
) -> str:
    """sha256 over what decides a load's resolved settings, known before the weights load
    (``fingerprint``: the files' content hash, or a Hub snapshot's commit)."""
    from pytest_koembed._version import __version__
    from pytest_koembed.models.cache import ENCODING_VERSION, _versions

    fields = {
        "fingerprint": fingerprint,
        "revision": info.revision,
        "loader": info.loader,
        "dtype": info.dtype,
        "device": info.device.split(":")[0],
        "pooling": pooling,
        "max_length": options.max_length,
        "append_eos": options.append_eos,
        "trust_remote_code": options.trust_remote_code,
        "encoding_version": ENCODING_VERSION,
        "versions": {**_versions(), "pytest-koembed": __version__},
    }
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _resolved_file(cache_dir: Path, key: str) -> Path:
    return cache_dir / MEMO_DIR / "resolved" / f"{key}.json"


def read_resolved(cache_dir: Path, key: str) -> dict[str, Any] | None:
    """The settings a load with ``key`` resolved, or None (never loaded, or unreadable)."""
    try:
        data = json.loads(_resolved_file(cache_dir, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("load_key") != key:
        return None
    fields = data.get("resolved")
    if not isinstance(fields, dict) or set(fields) != set(RESOLVED_FIELDS):
        return None
    return fields


def remember_resolved(cache_dir: Path, key: str, info: EncoderInfo) -> None:
    """Write what loading resolved (a cache that cannot be written costs the next run a load)."""
    from pytest_koembed.records import atomic_write

    data = {"load_key": key, "model": info.name, "resolved": resolved_of(info)}
    text = json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False)
    with contextlib.suppress(OSError):
        atomic_write(
            _resolved_file(cache_dir, key), lambda tmp: tmp.write_text(text, encoding="utf-8")
        )


def resolved_of(info: EncoderInfo) -> dict[str, Any]:
    return {name: getattr(info, name) for name in RESOLVED_FIELDS}


def apply_resolved(info: EncoderInfo, fields: dict[str, Any]) -> None:
    for name in RESOLVED_FIELDS:
        setattr(info, name, fields[name])


def differences(remembered: dict[str, Any], loaded: EncoderInfo) -> list[str]:
    """``name: remembered -> loaded`` for each setting a fresh load resolved differently."""
    fresh = resolved_of(loaded)
    return [
        f"{name}: {remembered[name]!r} -> {fresh[name]!r}"
        for name in RESOLVED_FIELDS
        if remembered[name] != fresh[name]
    ]
