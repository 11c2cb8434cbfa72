"""Embeddings kept across runs: a content-addressed store on disk (``--koembed-cache DIR``).

It sits behind the in-run :class:`~pytest_koembed.models.store.MemoryStore` (a
:class:`LayeredStore`: memory first, then disk) and adds what a key needs across runs: the
*model key*, a sha256 over everything about the encoder that changes a vector (the model's
fingerprint, revision, loader, dtype, device type, pooling, normalisation, maximum length, EOS
handling and the versions of torch / transformers / sentence-transformers; see
:func:`model_fields`). Within a model key a row is found by the sha256 of its
:class:`~pytest_koembed.models.store.StoreKey` (method, exact prompt, exact text). Texts are
not stored, only their hashes.

Layout::

    DIR/CACHEDIR.TAG
    DIR/koembed-embeddings-v1/<model key>/model.json      what the key was made of, and names
    DIR/koembed-embeddings-v1/<model key>/<id>.shard      immutable, one per write (<= 32 MiB)

A shard is written to a ``.tmp-*`` file beside it and renamed into place (``os.replace``), so a
reader never sees part of one and a writer killed with ``kill -9`` leaves only a temp file,
which readers ignore. Shards are never changed after the rename; nothing is locked, so any
number of processes (xdist workers, concurrent runs) may read and write one cache. Two
processes that meet the same text at once both write it; a reader takes the first it finds.

A shard: ``MAGIC``, the header's length (8 bytes, little-endian), the header's sha256, the
header (JSON: model key, dim, rows, the key hashes, one sha256 per row over key hash + row
bytes), then the rows (float32, little-endian). The header is checked when a shard is first
seen and every row's checksum when it is read; a shard that fails either is reported once
(``warn``), removed, and its texts are encoded again. A cache that cannot be written (full
disk, read-only directory) is reported once and the run goes on without storing; one that
cannot be read is reported once and not used. Nothing here fails a run.

Why not mteb's ``CachedEmbeddingWrapper``: it keys a cache directory by task name and prompt
*type* (not the prompt's text, the model's weights, dtype or maximum length), and its numpy
backend grows one shared memory-mapped file and an ``index.json`` in place: two writers
overwrite each other's rows and a killed writer can leave an index pointing at rows never
written, with no checksum to notice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from pytest_koembed.errors import KoembedError
from pytest_koembed.models.store import MemoryStore, StoreKey
from pytest_koembed.records import atomic_write

FORMAT_DIR = "koembed-embeddings-v1"
MAGIC = b"KOEMBED-SHARD-1\n"
SHARD_BYTES = 32 << 20  # rows per shard file are capped at this many bytes
# Bump when pytest-koembed's own encoding (tokenising, pooling, prompts) changes vectors.
ENCODING_VERSION = 1
CUSTOM_FINGERPRINT = "koembed_fingerprint"  # what a custom encoder declares to be cached
_PREFIX = struct.Struct("<Q32s")  # header length, header sha256
_ROW_DTYPE = np.dtype("<f4")
_COMMIT = re.compile(r"@[0-9a-f]{40}$")
_VECTOR_PACKAGES = ("torch", "transformers", "sentence-transformers")
_CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This directory is a pytest-koembed embedding cache (koembed cache info / clear).\n"
)

Warn = Callable[[str], None]


class EmbeddingCacheWarning(UserWarning):
    """The embedding cache could not be used as asked (the run goes on without it)."""


# ----------------------------------------------------------------------------------------------
# Keys


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _VECTOR_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def model_fields(
    encoder: Any, info: dict[str, Any], memo: Path | None = None
) -> dict[str, Any] | None:
    """What the model key is made of, or None when ``encoder`` cannot be cached.

    ``info`` is the run record's encoder info (``plugin._encoder_info``). An encoder built by
    ``--koembed-model`` (it carries an ``info`` with a ``fingerprint``) is keyed by its
    fingerprint and every setting that changes its vectors. Any other encoder (a
    ``koembed_encoder`` fixture override) is cached only when it declares a non-empty string
    attribute ``koembed_fingerprint``, which must change whenever its vectors would; the
    settings it shows (dtype, device, pooling, max length) are added to the key.
    """
    declared = getattr(encoder, CUSTOM_FINGERPRINT, None)
    own_info = getattr(encoder, "info", None)
    versions = _versions()
    if isinstance(declared, str) and declared.strip():
        return {
            "kind": "custom",
            "fingerprint": declared,
            "class": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
            "dtype": info.get("dtype"),
            "device": _device_type(info.get("device")),
            "pooling": info.get("pooling"),
            "max_length": info.get("max_length"),
            "encoding_version": ENCODING_VERSION,
            "versions": versions,
        }
    if own_info is None or not info.get("fingerprint"):
        return None
    fingerprint = str(info["fingerprint"])
    if fingerprint.startswith("hub:") and not _COMMIT.search(fingerprint) and info.get("path"):
        # a Hub snapshot not named by its commit: "@main" moves, so hash the files instead
        from pytest_koembed.models.fingerprint import _content_hash

        fingerprint = _content_hash(Path(info["path"]), memo)
    return {
        "kind": "model",
        "fingerprint": fingerprint,
        "revision": info.get("revision"),
        "loader": info.get("loader"),
        "dtype": info.get("dtype"),
        # cpu and cuda round differently; two GPUs of one kind are taken to agree
        "device": _device_type(info.get("device")),
        "pooling": info.get("pooling"),
        "normalize": info.get("normalize"),
        "max_length": info.get("max_length"),
        "append_eos": info.get("append_eos"),
        "eos_token": info.get("eos_token"),
        "padding_side": info.get("padding_side"),
        "trust_remote_code": info.get("trust_remote_code"),
        "encoding_version": ENCODING_VERSION,
        "versions": versions,
    }


def _device_type(device: Any) -> str | None:
    return str(device).split(":")[0] if device else None


def model_key(fields: dict[str, Any]) -> str:
    """The directory name of a model's embeddings: sha256 of its fields (canonical JSON)."""
    text = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def key_digest(key: StoreKey) -> bytes:
    """sha256 of (method, exact prompt, exact text): a row's address within a model key."""
    text = json.dumps([key.method, key.prompt, key.text], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).digest()


def _row_digest(digest: bytes, row: bytes) -> bytes:
    return hashlib.sha256(digest + row).digest()


# ----------------------------------------------------------------------------------------------
# Shards


@dataclass
class _Shard:
    path: Path
    dim: int
    rows: int
    offset: int  # where the rows start
    keys: list[bytes]
    digests: list[bytes]


class _Corrupt(Exception):
    """A shard that fails its checks: the reason."""


def _read_header(path: Path, key: str | None) -> _Shard:
    """A shard's checked header (``key``: the model key it must belong to); raises _Corrupt,
    or OSError when it cannot be read."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        start = f.read(len(MAGIC) + _PREFIX.size)
        if len(start) < len(MAGIC) + _PREFIX.size or not start.startswith(MAGIC):
            raise _Corrupt("not a shard or truncated header")
        length, checksum = _PREFIX.unpack(start[len(MAGIC) :])
        if length > size:
            raise _Corrupt("truncated header")
        raw = f.read(length)
    if len(raw) != length or hashlib.sha256(raw).digest() != checksum:
        raise _Corrupt("header checksum mismatch")
    try:
        header = json.loads(raw)
        dim, rows = int(header["dim"]), int(header["rows"])
        keys = [bytes.fromhex(k) for k in header["keys"]]
        digests = [bytes.fromhex(d) for d in header["digests"]]
        owner = header["model_key"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _Corrupt(f"unreadable header ({type(exc).__name__})") from None
    if key is not None and owner != key:
        raise _Corrupt("belongs to another model key")
    if len(keys) != rows or len(digests) != rows or dim <= 0:
        raise _Corrupt("inconsistent header")
    offset = len(MAGIC) + _PREFIX.size + length
    if size != offset + rows * dim * _ROW_DTYPE.itemsize:
        raise _Corrupt(f"truncated or padded ({size} bytes, expected "
                       f"{offset + rows * dim * _ROW_DTYPE.itemsize})")  # fmt: skip
    return _Shard(path, dim, rows, offset, keys, digests)


def _shard_bytes(key: str, digests: Sequence[bytes], rows: np.ndarray) -> tuple[bytes, _Shard]:
    """A shard file's bytes, and its header as read back (path left empty)."""
    data = np.ascontiguousarray(rows, dtype=_ROW_DTYPE)
    row_bytes = data.shape[1] * _ROW_DTYPE.itemsize
    payload = data.tobytes()
    row_digests = [
        _row_digest(d, payload[i * row_bytes : (i + 1) * row_bytes]) for i, d in enumerate(digests)
    ]
    header = json.dumps(
        {
            "model_key": key,
            "dim": int(data.shape[1]),
            "rows": int(data.shape[0]),
            "keys": [d.hex() for d in digests],
            "digests": [d.hex() for d in row_digests],
        },
        separators=(",", ":"),
    ).encode("utf-8")
    prefix = MAGIC + _PREFIX.pack(len(header), hashlib.sha256(header).digest())
    shard = _Shard(
        Path(), int(data.shape[1]), int(data.shape[0]), len(prefix) + len(header),
        list(digests), row_digests,
    )  # fmt: skip
    return prefix + header + payload, shard


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


class DiskStore:
    """One model key's rows in a cache directory (see the module doc)."""

    def __init__(
        self,
        root: Path,
        fields: dict[str, Any],
        *,
        names: dict[str, Any] | None = None,
        warn: Warn | None = None,
    ) -> None:
        self.root = root
        self.fields = fields
        self.key = model_key(fields)
        self.dir = root / FORMAT_DIR / self.key
        self.names = dict(names or {})  # model name etc., for ``koembed cache info``
        self._warn = warn or (lambda message: None)
        self.reads = 0  # rows read from disk (and checked)
        self.writes = 0  # rows written
        self.writable = True
        self.readable = True
        self._shards: dict[str, _Shard] = {}
        self._index: dict[bytes, str] = {}  # key digest -> shard name
        self._seen: set[str] = set()

    def _scan(self) -> None:
        """Read the headers of shards not seen before (written meanwhile by anyone)."""
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return
        except OSError as exc:
            self.readable = False
            self._warn(f"embedding cache {self.root}: cannot be read ({_reason(exc)}); not used")
            return
        for name in names:
            if name in self._seen or name.startswith(".") or not name.endswith(".shard"):
                continue
            self._seen.add(name)
            try:
                shard = _read_header(self.dir / name, self.key)
            except FileNotFoundError:  # cleared meanwhile
                continue
            except _Corrupt as exc:
                self._discard(self.dir / name, str(exc))
                continue
            except OSError as exc:
                self._discard(self.dir / name, f"unreadable ({_reason(exc)})", remove=False)
                continue
            self._shards[name] = shard
            for digest in shard.keys:
                self._index.setdefault(digest, name)

    def _discard(self, path: Path, why: str, *, remove: bool = True) -> None:
        """Report a bad shard once, forget it and (best effort) remove it."""
        self._warn(f"embedding cache: {path}: {why}; ignored, its texts are encoded again")
        self._shards.pop(path.name, None)
        self._index = {d: n for d, n in self._index.items() if n != path.name}
        if remove:
            with contextlib.suppress(OSError):
                path.unlink()

    def get_many(self, keys: Sequence[StoreKey]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = [None] * len(keys)
        if not self.readable or not keys:
            return out
        digests = [key_digest(key) for key in keys]
        if any(d not in self._index for d in digests):
            self._scan()
        wanted: dict[str, dict[bytes, list[int]]] = {}
        for i, digest in enumerate(digests):
            name = self._index.get(digest)
            if name is not None:
                wanted.setdefault(name, {}).setdefault(digest, []).append(i)
        for name, positions in wanted.items():
            rows = self._read_rows(name, list(positions))
            for digest, row in rows.items():
                for i in positions[digest]:
                    out[i] = row
        return out

    def _read_rows(self, name: str, digests: list[bytes]) -> dict[bytes, np.ndarray]:
        """The checked rows of ``digests`` in shard ``name``; a bad shard gives none."""
        shard = self._shards[name]
        try:
            with shard.path.open("rb") as f:
                f.seek(shard.offset)
                data = f.read()
        except FileNotFoundError:  # cleared meanwhile: encoded again, no warning
            self._shards.pop(name, None)
            self._index = {d: n for d, n in self._index.items() if n != name}
            return {}
        except OSError as exc:
            self._discard(shard.path, f"unreadable ({_reason(exc)})", remove=False)
            return {}
        row_bytes = shard.dim * _ROW_DTYPE.itemsize
        if len(data) != shard.rows * row_bytes:
            self._discard(shard.path, "truncated")
            return {}
        where = {digest: i for i, digest in enumerate(shard.keys)}
        rows: dict[bytes, np.ndarray] = {}
        bad = 0
        for digest in digests:
            i = where[digest]
            chunk = data[i * row_bytes : (i + 1) * row_bytes]
            if _row_digest(digest, chunk) != shard.digests[i]:
                bad += 1
                continue
            row = np.frombuffer(chunk, dtype=_ROW_DTYPE).astype(np.float32)
            row.setflags(write=False)
            rows[digest] = row
        if bad:
            self._discard(shard.path, f"{bad} row(s) fail their checksum")
            return {}  # rows of a damaged file are not trusted, even those that check
        self.reads += len(rows)
        return rows

    def put_many(self, keys: Sequence[StoreKey], rows: np.ndarray) -> None:
        if not self.writable or not len(keys):
            return
        matrix = np.ascontiguousarray(rows, dtype=_ROW_DTYPE)
        chosen: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            digest = key_digest(key)
            if digest not in self._index and digest not in chosen:
                chosen[digest] = i
        if not chosen:
            return
        digests = list(chosen)
        matrix = matrix[list(chosen.values())]
        per_shard = max(1, SHARD_BYTES // max(1, matrix.shape[1] * _ROW_DTYPE.itemsize))
        for start in range(0, len(digests), per_shard):
            part = digests[start : start + per_shard]
            if not self._write_shard(part, matrix[start : start + per_shard]):
                return

    def _write_shard(self, digests: list[bytes], rows: np.ndarray) -> bool:
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.shard"
        tmp = self.dir / f".tmp-{name}"
        content, shard = _shard_bytes(self.key, digests, rows)
        try:
            self._prepare_dir()
            with tmp.open("xb") as f:
                f.write(content)
            os.replace(tmp, self.dir / name)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            self.writable = False
            self._warn(
                f"embedding cache {self.root}: cannot write ({_reason(exc)}); the run goes on "
                "without storing new embeddings"
            )
            return False
        shard.path = self.dir / name
        self._seen.add(name)
        self._shards[name] = shard
        for digest in digests:
            self._index.setdefault(digest, name)
        self.writes += len(digests)
        return True

    def _prepare_dir(self) -> None:
        """The model's directory, its model.json and the cache's CACHEDIR.TAG."""
        if (self.dir / "model.json").is_file():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tag = self.root / "CACHEDIR.TAG"
        if not tag.exists():
            atomic_write(tag, lambda p: p.write_text(_CACHEDIR_TAG, encoding="utf-8"))
        meta = {"model_key": self.key, "names": self.names, "fields": self.fields}
        text = json.dumps(meta, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        atomic_write(self.dir / "model.json", lambda p: p.write_text(text, encoding="utf-8"))


class LayeredStore:
    """The in-run memory store first, then the disk cache; what disk gives is kept in memory."""

    def __init__(self, memory: MemoryStore, disk: DiskStore) -> None:
        self.memory = memory
        self.disk = disk

    @property
    def disk_reads(self) -> int:
        """Rows read from the persistent cache so far (each distinct row once per store)."""
        return self.disk.reads

    def get_many(self, keys: Sequence[StoreKey]) -> list[np.ndarray | None]:
        rows = self.memory.get_many(keys)
        missing = list(dict.fromkeys(k for k, r in zip(keys, rows, strict=True) if r is None))
        if not missing:
            return rows
        found = {
            key: row
            for key, row in zip(missing, self.disk.get_many(missing), strict=True)
            if row is not None
        }
        if found:
            self.memory.put_many(list(found), np.stack(list(found.values())))
        return [
            row if row is not None else found.get(key) for key, row in zip(keys, rows, strict=True)
        ]

    def put_many(self, keys: Sequence[StoreKey], rows: np.ndarray) -> None:
        self.memory.put_many(keys, rows)
        self.disk.put_many(keys, rows)


def open_store(
    cache_dir: Path,
    encoder: Any,
    *,
    info: dict[str, Any] | None = None,
    warn: Warn | None = None,
    memory: MemoryStore | None = None,
) -> LayeredStore | None:
    """The layered store (memory, then ``cache_dir``) for ``encoder``; None when the encoder
    cannot be cached (:func:`model_fields`). For scripts and benchmarks too::

        store = open_store(Path("cache"), encoder)
        evaluate_task(spec, encoder, store=store)

    ``info`` is the encoder's info as the run record has it (default: ``encoder.info``).
    """
    if info is None:
        own = getattr(encoder, "info", None)
        info = own.to_dict() if hasattr(own, "to_dict") else dict(own or {})
    from pytest_koembed.models.fingerprint import file_hashes_dir

    fields = model_fields(encoder, info, file_hashes_dir(cache_dir))
    if fields is None:
        return None
    names = {k: info.get(k) for k in ("name", "row_name", "path", "fingerprint") if info.get(k)}
    disk = DiskStore(cache_dir, fields, names=names, warn=warn)
    return LayeredStore(memory if memory is not None else MemoryStore(), disk)


# ----------------------------------------------------------------------------------------------
# koembed cache info / clear


@dataclass
class CachedModel:
    """One model key's directory in a cache, as ``koembed cache info`` shows it."""

    key: str
    path: Path
    names: dict[str, Any]
    fields: dict[str, Any]
    entries: int
    nbytes: int
    shards: int
    bad_shards: int
    temp_files: int

    @property
    def name(self) -> str:
        return str(self.names.get("row_name") or self.names.get("name") or "?")

    def matches(self, model: str) -> bool:
        """``--model M``: the name, the row name, the path, the fingerprint or the key (or a
        prefix of 8+ characters of it); a local directory also by its resolved path."""
        wanted = {model}
        path = Path(model).expanduser()
        if path.exists():
            wanted.add(str(path.resolve()))
        candidates = {
            str(v)
            for v in (
                self.names.get("name"),
                self.names.get("row_name"),
                self.names.get("path"),
                self.fields.get("fingerprint"),
            )
            if v
        }
        if wanted & candidates:
            return True
        return len(model) >= 8 and self.key.startswith(model)


def _model_dirs(root: Path) -> Iterator[Path]:
    base = root / FORMAT_DIR
    if not base.is_dir():
        return
    for path in sorted(base.iterdir()):
        if path.is_dir():
            yield path


def scan_cache(root: Path) -> list[CachedModel]:
    """Every model key in the cache ``root`` with its size (shard headers are checked)."""
    if not root.is_dir():
        raise KoembedError(f"embedding cache {root}: no such directory")
    models = []
    for path in _model_dirs(root):
        try:
            meta = json.loads((path / "model.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        keys: set[bytes] = set()
        nbytes = shards = bad = temps = 0
        for entry in sorted(path.iterdir()):
            try:
                nbytes += entry.stat().st_size
            except OSError:
                continue
            if entry.name.startswith(".tmp-"):
                temps += 1
            elif entry.suffix == ".shard":
                try:
                    keys.update(_read_header(entry, path.name).keys)
                    shards += 1
                except (_Corrupt, OSError):
                    bad += 1
        models.append(
            CachedModel(
                key=path.name,
                path=path,
                names=meta.get("names") or {},
                fields=meta.get("fields") or {},
                entries=len(keys),
                nbytes=nbytes,
                shards=shards,
                bad_shards=bad,
                temp_files=temps,
            )
        )
    return models


def select_models(models: list[CachedModel], model: str | None, root: Path) -> list[CachedModel]:
    if model is None:
        return models
    chosen = [m for m in models if m.matches(model)]
    if not chosen:
        known = ", ".join(sorted({m.name for m in models})) or "none"
        raise KoembedError(
            f"embedding cache {root}: no embeddings of model {model!r} (cached models: {known})"
        )
    return chosen


def clear_models(models: list[CachedModel], root: Path | None = None) -> None:
    """Remove these model keys' directories (a run using them meanwhile encodes again), and
    with ``root`` what the cache remembers of model files and loads (``models.resolved``): a
    memo only, so the next run of each model loads it and hashes its files once more."""
    for model in models:
        shutil.rmtree(model.path, ignore_errors=False)
    if root is not None:
        from pytest_koembed.models.fingerprint import MEMO_DIR

        shutil.rmtree(root / MEMO_DIR, ignore_errors=True)


def _ini_cache_dir(start: Path) -> Path | None:
    """``koembed_cache`` of the pytest ini file pytest would use from ``start`` (the first of
    pytest.ini, .pytest.ini, pyproject.toml, tox.ini, setup.cfg with a pytest section, walking
    up), relative to that file; None when it names none."""
    import configparser

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    for folder in (start, *start.parents):
        for name, section in (
            ("pytest.ini", "pytest"),
            (".pytest.ini", "pytest"),
            ("pyproject.toml", None),
            ("tox.ini", "pytest"),
            ("setup.cfg", "tool:pytest"),
        ):
            path = folder / name
            if not path.is_file():
                continue
            value: Any = None
            try:
                if section is None:
                    with path.open("rb") as f:
                        options = tomllib.load(f).get("tool", {}).get("pytest", {})
                    if "ini_options" not in options:
                        continue
                    value = options["ini_options"].get("koembed_cache")
                else:
                    parser = configparser.ConfigParser(interpolation=None)
                    parser.read(path, encoding="utf-8")
                    if not parser.has_section(section):
                        if name == "pytest.ini":  # pytest uses it even without the section
                            return None
                        continue
                    value = parser.get(section, "koembed_cache", fallback=None)
            except (OSError, ValueError, configparser.Error):
                continue
            return (folder / str(value)).expanduser().resolve() if value else None
    return None


def _size(nbytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:,} {unit}" if unit == "B" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024  # type: ignore[assignment]
    return f"{nbytes} B"  # pragma: no cover
