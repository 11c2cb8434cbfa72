"""Encode once: embeddings kept for the rest of a run, so a text met again is not re-encoded.

Within one pytest run (one per xdist worker) the adapter of ``evaluation.make_adapter`` asks an
:class:`EmbeddingStore` for every text mteb hands it and encodes only the distinct texts the store
lacks. A key holds everything that can change a vector within one session: the encoder method
used (``encode`` / ``encode_query`` / ``encode_document``), the exact prompt text (or None) and
the exact text. The encoder itself is not in the key: a store belongs to one encoder object
(``plugin`` makes a new store when the encoder object changes). The persistent cross-run
store (``embedding_cache``, ``--koembed-cache``) plugs in behind the same two methods, with
the model's fingerprint and settings added to its key.

Memory: rows are float32; :class:`MemoryStore` stops storing new rows once it holds
``max_bytes`` (1 GiB by default, about 260,000 texts of 1,024 dimensions); texts not stored
are simply encoded again when they recur. Nothing is evicted, so what is stored never depends
on the order of later lookups.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np

DEFAULT_MAX_BYTES = 1 << 30


class StoreKey(NamedTuple):
    """What a stored row is the embedding of (for one encoder object)."""

    method: str  # "encode", "encode_query" or "encode_document"
    prompt: str | None  # the exact prompt text, None without one
    text: str


class EmbeddingStore(Protocol):
    """Where the adapter looks rows up and puts the rows it encoded."""

    def get_many(self, keys: Sequence[StoreKey]) -> list[np.ndarray | None]:
        """One float32 row per key, None where the store has none."""
        ...

    def put_many(self, keys: Sequence[StoreKey], rows: np.ndarray) -> None:
        """Keep ``rows[i]`` (float32) as the embedding of ``keys[i]`` (may keep none)."""
        ...


class MemoryStore:
    """The in-run store: a dict of float32 rows, bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.full = False  # a row was refused for lack of room
        self._rows: dict[StoreKey, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def get_many(self, keys: Sequence[StoreKey]) -> list[np.ndarray | None]:
        return [self._rows.get(key) for key in keys]

    def put_many(self, keys: Sequence[StoreKey], rows: np.ndarray) -> None:
        for key, row in zip(keys, rows, strict=True):
            if key in self._rows:
                continue
            stored = np.array(row, dtype=np.float32, copy=True)  # never a view of mteb's matrix
            stored.setflags(write=False)
            if self.nbytes + stored.nbytes > self.max_bytes:
                self.full = True
                continue
            self._rows[key] = stored
            self.nbytes += stored.nbytes
