"""Model fingerprints: the key caches and baselines use for "the same model".

``hub:<id>@<commit>`` for a Hub model (the revision resolved through the local Hugging Face
cache, no network) or ``sha256:<hash>`` over a local directory's weights, configs and tokenizer
files (READMEs, hidden files and other runtimes' exports left out; hashes kept per process).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from pathlib import Path
from typing import Any

_SHA = re.compile(r"[0-9a-f]{40}")
MEMO_DIR = "koembed-models-v1"  # in the embedding cache: file hashes, resolved settings


def file_hashes_dir(cache_dir: Path) -> Path:
    """Where the embedding cache ``cache_dir`` remembers model files' hashes."""
    return cache_dir / MEMO_DIR / "file-hashes"


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


_HASH_CACHE: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}  # this process


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


def _content_hash(root: Path, memo: Path | None = None) -> str:
    """``sha256:<hash>`` over ``root``'s fingerprint files (their paths, sizes and contents).

    ``memo`` (a directory in the embedding cache) remembers each file's sha256 across runs by its
    path, size, mtime, ctime and inode, so a warm run of a 16 GB checkpoint reads no weights:
    rewriting a file changes its ctime (which no tool can set back), replacing it its inode.
    """
    files = _fingerprint_files(root)
    stats = tuple((f.relative_to(root).as_posix(), f.stat()) for f in files)
    key = (str(root), tuple((rel, st.st_size, st.st_mtime_ns) for rel, st in stats))
    cached = _HASH_CACHE.get(key)
    if cached is not None and memo is None:
        return cached
    remembered = _read_memo(memo, root) if memo is not None else {}
    seen: dict[str, list[Any]] = {}
    total = hashlib.sha256()
    for f, (rel, st) in zip(files, stats, strict=True):
        identity = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        entry = remembered.get(rel)
        if isinstance(entry, list) and entry[:4] == identity and isinstance(entry[4], str):
            hexdigest = entry[4]
        else:
            hexdigest = _file_sha256(f)
        seen[rel] = [*identity, hexdigest]
        total.update(f"{rel}\0{st.st_size}\0".encode())
        total.update(bytes.fromhex(hexdigest))
    result = f"sha256:{total.hexdigest()}"
    _HASH_CACHE[key] = result
    if memo is not None and seen != remembered:
        _write_memo(memo, root, seen)
    return result


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _memo_file(memo: Path, root: Path) -> Path:
    return memo / f"{hashlib.sha256(str(root).encode()).hexdigest()[:32]}.json"


def _read_memo(memo: Path, root: Path) -> dict[str, Any]:
    """The remembered hashes of ``root``'s files; {} when none (or unreadable: hash again)."""
    try:
        data = json.loads(_memo_file(memo, root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("root") != str(root):
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def _write_memo(memo: Path, root: Path, files: dict[str, list[Any]]) -> None:
    """Atomically (a reader sees the old memo or the new); a cache that cannot be written is
    the embedding store's to report, so a failure here only costs the next run a re-hash."""
    from pytest_koembed.records import atomic_write

    text = json.dumps({"root": str(root), "files": files}, sort_keys=True)
    with contextlib.suppress(OSError):
        atomic_write(_memo_file(memo, root), lambda tmp: tmp.write_text(text, encoding="utf-8"))


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
