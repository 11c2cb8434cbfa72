"""Model fingerprints: the key caches and baselines use for "the same model".

``hub:<id>@<commit>`` for a Hub model (the revision resolved through the local Hugging Face
cache, no network) or ``sha256:<hash>`` over a local directory's weights, configs and tokenizer
files (READMEs, hidden files and other runtimes' exports left out; hashes kept per process).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_SHA = re.compile(r"[0-9a-f]{40}")


def model_fingerprint(model: str, revision: str | None) -> str:
    """A key for caches and baselines: ``hub:<id>@<commit>`` or ``sha256:<content hash>``.

    A local directory is hashed over its weights, configs and tokenizer files (not READMEs,
    hidden files or other runtimes' exports). A Hub id resolves its revision to a commit through
    the local Hugging Face cache when it can (no network); else the revision name is used.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return _content_hash(path.resolve())
    rev = revision or "main"
    commit = _cached_commit(model, rev)
    return f"hub:{model}@{commit or rev}"


_HASH_CACHE: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def _fingerprint_files(root: Path) -> list[Path]:
    files = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        parts = rel.parts
        if any(p.startswith(".") for p in parts) or parts[0] in {"onnx", "openvino", "coreml"}:
            continue
        if path.suffix.lower() in {".md", ".onnx", ".onnx_data", ".png", ".jpg"}:
            continue
        if path.is_file():
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _content_hash(root: Path) -> str:
    files = _fingerprint_files(root)
    stats = tuple(
        (f.relative_to(root).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files
    )
    key = (str(root), stats)
    cached = _HASH_CACHE.get(key)
    if cached is not None:
        return cached
    total = hashlib.sha256()
    for f, (rel, size, _) in zip(files, stats, strict=True):
        digest = hashlib.sha256()
        with f.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
        total.update(f"{rel}\0{size}\0".encode())
        total.update(digest.digest())
    result = f"sha256:{total.hexdigest()}"
    _HASH_CACHE[key] = result
    return result


def _hub_cache_dir() -> Path:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:  # pragma: no cover - very old huggingface_hub
        return Path("~/.cache/huggingface/hub").expanduser()
    return Path(HF_HUB_CACHE)


def _cached_commit(repo_id: str, revision: str) -> str | None:
    if _SHA.fullmatch(revision):
        return revision
    ref = _hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "refs" / revision
    try:
        text = ref.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text if _SHA.fullmatch(text) else None
