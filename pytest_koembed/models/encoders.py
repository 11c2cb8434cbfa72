"""The loaded encoder: what ``load_encoder`` returns, and the ``_Backend`` protocol it drives.

:class:`EncoderOptions` is what the user asked for (the ``--koembed-*`` options),
:class:`EncoderInfo` how the encoder was built (the run record's model block).
:class:`LoadedEncoder` sorts texts by length, cuts them into batches, halves the batch size on an
out-of-memory error, and hands a large call to a pool of processes under ``--koembed-devices``;
the model itself sits behind a backend (``models.backends``: sentence-transformers, transformers,
sparse), which only has to embed one batch (:class:`_Backend`). :class:`LoadedSparseEncoder`
does the same for SPLADE models, whose vectors are sparse tensors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from pytest_koembed.errors import KoembedError
from pytest_koembed.models.dtypes import _free_memory, _is_oom

log = logging.getLogger("pytest_koembed.models.encoders")


@dataclass(frozen=True)
class EncoderOptions:
    """What the user asked for (the ``--koembed-*`` options)."""

    model: str  # Hub id or local directory
    revision: str | None = None  # Hub models only
    dtype: str = "auto"  # auto | fp32 | fp16 | bf16
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    pooling: str | None = None  # None: what the model declares; else one of POOLINGS
    batch_size: int = 32
    max_length: int | None = None  # None: the model's own limit (capped at 8192)
    trust_remote_code: bool = False
    append_eos: bool | None = None  # last-token pooling: None = automatic (see module doc)
    model_type: str = "auto"  # auto | dense | sparse (--koembed-model-type)
    devices: str | None = None  # --koembed-devices: a pool of processes for large calls
    devices_min_texts: int | None = None  # calls of fewer texts stay in this process


@dataclass
class EncoderInfo:
    """How the encoder was built: goes into the run record and the summary."""

    name: str  # what --koembed-model named (Hub id or path)
    row_name: str  # leaderboard row name: Hub id (or local_model_name) + -fp16/-bf16
    revision: str | None  # commit of a Hub model, None for a local directory
    loader: str  # "sentence-transformers" | "sentence-transformers-sparse" | "transformers"
    pooling: str  # mean | cls | last-token | max (or a sentence-transformers mode)
    normalize: bool  # embeddings are L2-normalised
    dtype: str  # fp32 | fp16 | bf16 (what the weights run in)
    device: str  # cpu | cuda:0 | mps ...
    max_length: int | None  # tokens per text, prompt included
    batch_size: int  # last batch size used (after any out-of-memory back-off)
    fingerprint: str  # hub:<id>@<commit> or sha256:<hash of the local directory>
    model_prompts: dict[str, str] = field(default_factory=dict)  # the model's own ST prompts
    default_prompt_name: str | None = None  # the model's ST default prompt (not applied implicitly)
    path: str = ""  # local directory the weights were read from
    model_type: str | None = None  # config.json model_type
    is_decoder: bool = False  # decoder-only LLM
    dimension: int | None = None
    similarity: str = "cosine"
    padding_side: str | None = None
    append_eos: bool = False  # we append the EOS token ourselves (transformers path)
    eos_token: str | None = None  # the token every input ends with, when last-token pooled
    trust_remote_code: bool = False
    requested_dtype: str = "auto"
    oom_retries: int = 0
    # Why the Hub's metadata call failed when a cached snapshot was used instead (None: it did
    # not fail, or the run was offline on purpose). The snapshot may not be the newest revision.
    hub_metadata_error: str | None = None
    # where row_name came from: hub | hub cache | directory | model card | _name_or_path
    name_source: str = "directory"
    # dense | sparse: what the run is compared with on a leaderboard that ranks them apart
    encoder_type: str = "dense"
    # --koembed-devices: the pool's devices ("cuda:0,cuda:1"), for calls of devices_min_texts
    # texts or more; None without a pool
    devices: str | None = None
    devices_min_texts: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Backend(Protocol):
    """What a loader hands :class:`LoadedEncoder`: one batch in, one float array out."""

    def embed(self, texts: list[str], prompt: str | None) -> np.ndarray: ...


class _SparseBackend(_Backend, Protocol):
    """A sparse (SPLADE) backend: one batch in, one sparse tensor out (``backends.sparse``)."""

    model: Any

    def embed_sparse(self, texts: list[str], prompt: str | None, method: str) -> Any: ...


class LazyBackend:
    """A backend that loads its model at the first call that needs it (``models.resolved``): a
    warm run whose every text is in the embedding cache never loads the weights. ``check`` runs
    once on the freshly loaded backend (it compares what the load resolved with what was
    remembered)."""

    def __init__(self, load: Callable[[], _Backend], check: Callable[[], None]) -> None:
        self._load = load
        self._check = check
        self._backend: _Backend | None = None
        self._failed: str | None = None

    @property
    def loaded(self) -> bool:
        return self._backend is not None

    def real(self) -> _Backend:
        if self._failed is not None:
            raise KoembedError(self._failed)
        if self._backend is None:
            started = time.perf_counter()
            self._backend = self._load()
            log.info(
                "loaded the model at its first uncached text in %.1f s",
                time.perf_counter() - started,
            )
            try:
                self._check()
            except KoembedError as exc:  # every later call fails too: no vectors under a wrong key
                self._failed = str(exc)
                raise
        return self._backend

    def embed(self, texts: list[str], prompt: str | None) -> np.ndarray:
        return self.real().embed(texts, prompt)

    def __getattr__(self, name: str) -> Any:  # embed_sparse, model, start_pool, ...
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.real(), name)


# A call on the pool goes in slices of this many batches per device: progress is told after each
# slice, and the processes wait for one another only at a slice's end.
_POOL_BATCHES_PER_DEVICE = 8


class LoadedEncoder:
    """A loaded model: ``encode(texts, prompt=..., batch_size=...) -> float32 (n, dim)``.

    With ``devices`` (``--koembed-devices``), a call of ``devices_min_texts`` texts or more is
    encoded by a pool of processes, one per device (``models.devices``), started at the
    first such call; :meth:`close` stops it.
    """

    def __init__(
        self,
        info: EncoderInfo,
        backend: _Backend,
        *,
        devices: Sequence[str] = (),
        devices_min_texts: int | None = None,
    ) -> None:
        from pytest_koembed.models.devices import DEFAULT_MIN_TEXTS

        self.info = info
        self._backend = backend
        self._ceiling: int | None = None  # batch-size ceiling after an out-of-memory error
        self.devices = list(devices)
        self.devices_min_texts = devices_min_texts or DEFAULT_MIN_TEXTS
        self._pool: Any = None
        self.pool_texts = 0  # texts the pool has encoded (the log says so after each call)

    @property
    def name(self) -> str:
        return self.info.row_name

    @property
    def backend(self) -> _Backend:
        return self._backend

    @property
    def model_loaded(self) -> bool:
        """Whether the weights are loaded (False on a warm run that found every text cached)."""
        backend = self._backend
        return backend.loaded if isinstance(backend, LazyBackend) else True

    def __repr__(self) -> str:
        i = self.info
        return (
            f"LoadedEncoder({i.row_name!r}, loader={i.loader}, pooling={i.pooling}, "
            f"dtype={i.dtype}, device={i.device})"
        )

    def encode(
        self,
        texts: Sequence[str],
        *,
        prompt: str | None = None,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` (``prompt`` prepended, or handed to sentence-transformers).

        ``progress(n)`` is called after each finished batch of n texts (not for a batch that ran
        out of memory and is retried).
        """
        items = _checked_texts(texts)
        n = len(items)
        if n == 0:
            return np.zeros((0, self.info.dimension or 0), dtype=np.float32)
        parts, order = self._in_batches(
            items,
            lambda batch: self._backend.embed(batch, prompt),
            batch_size,
            progress,
            pool_embed=lambda batch, size: self._embed_on_pool(batch, prompt, size),
        )
        stacked = np.concatenate(
            [np.asarray(emb, dtype=np.float32).reshape(size, -1) for size, emb in parts], axis=0
        )
        out = np.empty_like(stacked)
        out[np.asarray(order)] = stacked
        return out

    def _in_batches(
        self,
        items: list[str],
        embed: Callable[[list[str]], Any],
        batch_size: int | None,
        progress: Callable[[int], None] | None,
        pool_embed: Callable[[list[str], int], Any] | None = None,
    ) -> tuple[list[tuple[int, Any]], list[int]]:
        """``embed`` over ``items`` sorted by length, in batches; halves the batch size on an
        out-of-memory error. Returns ``[(batch length, output)]`` and the sorted order. With
        ``--koembed-devices`` a large call goes to ``pool_embed(texts, batch size)`` instead
        (dense encoders only: a sparse encoder passes none)."""
        n = len(items)
        size = max(1, int(batch_size or self.info.batch_size))
        if self._ceiling is not None:
            size = min(size, self._ceiling)
        order = sorted(range(n), key=lambda i: -len(items[i]))
        # On the pool, the same batches go to its processes a slice at a time (see devices.py).
        on_pool = pool_embed is not None and bool(self.devices) and n >= self.devices_min_texts
        if on_pool:
            self._start_pool()
        per_step = len(self.devices) * _POOL_BATCHES_PER_DEVICE if on_pool else 1
        where = ",".join(self.devices) if on_pool else self.info.device
        started = time.perf_counter()
        parts: list[tuple[int, Any]] = []
        start = 0
        while start < n:
            batch = [items[i] for i in order[start : start + size * per_step]]
            try:
                if on_pool:
                    assert pool_embed is not None
                    emb = pool_embed(batch, size)
                else:
                    emb = embed(batch)
                failed = False
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                failed = True
            if failed:
                # Outside the except block, so the traceback's tensors can be freed.
                _free_memory()
                if size == 1:
                    raise KoembedError(
                        f"out of memory on {where} even at batch size 1 "
                        f"(max length {self.info.max_length}); lower --koembed-max-length or "
                        "use a half-precision --koembed-dtype"
                    ) from None
                size = max(1, size // 2)
                self._ceiling = size
                self.info.oom_retries += 1
                log.warning("out of memory on %s: retrying with batch size %d", where, size)
                continue
            parts.append((len(batch), emb))
            start += len(batch)
            if progress is not None:
                progress(len(batch))
        if on_pool:
            self.pool_texts += n
            log.info("encoded %d texts on %s in %.1f s", n, where, time.perf_counter() - started)
        self.info.batch_size = size
        return parts, order

    def _start_pool(self) -> None:
        if self._pool is not None:
            return
        start_pool = getattr(self._backend, "start_pool", None)
        if start_pool is None:  # load_encoder refuses this; a hand-built encoder may not
            raise KoembedError(
                f"--koembed-devices: the {self.info.loader} loader has no multi-process pool"
            )
        started = time.perf_counter()
        self._pool = start_pool(self.devices, self.info.device)
        log.info(
            "started %d encode processes on %s (pids %s) in %.1f s",
            len(self.devices),
            ",".join(self.devices),
            " ".join(str(process.pid) for process in self._pool["processes"]),
            time.perf_counter() - started,
        )

    def _embed_on_pool(self, texts: list[str], prompt: str | None, size: int) -> np.ndarray:
        try:
            return self._backend.embed_on_pool(  # type: ignore[attr-defined]
                self._pool, texts, prompt, size
            )
        except Exception as exc:
            if _is_oom(exc):
                raise
            dead = [p for p in self._pool["processes"] if not p.is_alive()]
            if not dead:
                raise
            codes = ", ".join(f"pid {p.pid} exit code {p.exitcode}" for p in dead)
            self.close()  # the next large call starts a new pool
        raise KoembedError(
            f"--koembed-devices {','.join(self.devices)}: {len(dead)} encode process(es) died "
            f"({codes}); out of host memory? try fewer devices or --koembed-devices-min-texts"
        )

    def close(self) -> None:
        """Stop the pool of ``--koembed-devices`` processes, if one was started (idempotent)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            self._backend.stop_pool(pool)  # type: ignore[attr-defined]
            log.info("stopped %d encode processes on %s", len(self.devices), ",".join(self.devices))


def _checked_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode() takes a list of texts, not a single string")
    items = list(texts)
    for text in items:
        if not isinstance(text, str):
            raise TypeError(f"encode() takes strings, got {type(text).__name__}")
    return items


class LoadedSparseEncoder(LoadedEncoder):
    """A loaded sentence-transformers ``SparseEncoder`` (SPLADE, inference-free SPLADE).

    ``encode`` / ``encode_query`` / ``encode_document`` return a CPU float32 sparse COO tensor
    ``(n, vocabulary size)``, one row per text, never densified here; the query and document
    methods route through the model's query / document modules (inference-free SPLADE encodes
    queries with a static lookup table). ``similarity`` is the model's own (dot product).
    """

    def encode(
        self,
        texts: Sequence[str],
        *,
        prompt: str | None = None,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Any:
        return self._sparse(texts, "encode", prompt, batch_size, progress)

    def encode_query(
        self,
        texts: Sequence[str],
        *,
        prompt: str | None = None,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Any:
        return self._sparse(texts, "encode_query", prompt, batch_size, progress)

    def encode_document(
        self,
        texts: Sequence[str],
        *,
        prompt: str | None = None,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Any:
        return self._sparse(texts, "encode_document", prompt, batch_size, progress)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> Any:
        return self._backend.model.similarity(embeddings1, embeddings2)  # type: ignore[attr-defined]

    def _sparse(
        self,
        texts: Sequence[str],
        method: str,
        prompt: str | None,
        batch_size: int | None,
        progress: Callable[[int], None] | None,
    ) -> Any:
        import torch

        backend: _SparseBackend = self._backend  # type: ignore[assignment]
        items = _checked_texts(texts)
        width = self.info.dimension or 0
        if not items:
            return torch.sparse_coo_tensor(
                torch.zeros((2, 0), dtype=torch.long), torch.zeros(0), (0, width)
            )
        parts, order = self._in_batches(
            items,
            lambda batch: backend.embed_sparse(batch, prompt, method),
            batch_size,
            progress,
        )
        stacked = torch.cat([emb for _, emb in parts], dim=0)
        # Row i of ``stacked`` is text order[i]: put each back where it came from.
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
        return stacked.index_select(0, inverse).coalesce()
