"""Load an embedding model the way the Korean leaderboard does, on CPU or GPU.

The leaderboard's numbers depend on how a model is loaded, pooled, prompted and cast
(``docs/protocol.md``, "Rules the leaderboard states"). ``load_encoder`` follows those rules:

* **Loader.** sentence-transformers when the model ships a sentence-transformers config
  (``modules.json``): its own modules decide pooling and normalisation, and prompts go through
  ``SentenceTransformer.encode(..., prompt=...)`` so that prompt-aware pooling works. Otherwise
  transformers ``AutoModel`` with the pooling the model declares (a sentence-transformers
  ``*Pooling/config.json`` or a ``pooling`` / ``pooling_mode`` / ``pooler_type`` key in
  ``config.json``), falling back to mean pooling for encoders and last-token pooling with left
  padding for decoder LLMs (Qwen2/Qwen3, Llama, Mistral, Gemma, ...). ``--koembed-pooling``
  overrides either way. On the transformers path the prompt is prepended to the text and the
  embeddings are L2-normalised, as the model cards of such models do.
* **Sparse models.** A sentence-transformers ``SparseEncoder`` (SPLADE, inference-free SPLADE),
  known by its ``config_sentence_transformers.json`` model type or its ``sparse_encoder`` modules
  (``--koembed-model-type`` overrides), loads as a :class:`LoadedSparseEncoder`, whose vectors
  are sparse tensors (``sparse.py`` scores them through mteb's ``SparseEncoderWrapper``).
* **EOS for last-token pooling.** Decoder embedders pool the hidden state of a final
  end-of-sequence token. Qwen3-Embedding's tokenizer appends ``<|endoftext|>`` itself (its
  post-processor), e5-mistral and NV-Embed add the EOS by hand. On the transformers path with
  last-token pooling we therefore check whether the tokenizer already ends every input with the
  EOS token; if it does not, we truncate to ``max_length - 1`` tokens and append it ourselves.
  The EOS is ``<|endoftext|>`` for Qwen-family models (what Qwen3-Embedding and gte-Qwen2 pool
  on), else the tokenizer's ``eos_token``. ``EncoderOptions.append_eos`` forces it on or off.
  The sentence-transformers path is left exactly as the model's authors configured it.
* **dtype.** ``auto`` follows the leaderboard: LLM-based models in half precision on a GPU
  (the precision the leaderboard row used when the shipped profile names it, else the
  checkpoint's half dtype, else bf16 where the GPU supports it and fp16 otherwise), fp32
  everywhere else. The row name carries ``-fp16`` / ``-bf16`` when not fp32.
* **Batches.** Texts are sorted by length and encoded in batches; on an out-of-memory error
  the batch size halves (down to 1) and the failed batch is retried. ``info.batch_size`` says
  the size last used.

Nothing here imports torch at module import time: ``pin_worker_gpu`` must run before CUDA
initialises in an xdist worker.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pytest_koembed.errors import KoembedError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("pytest_koembed.models.encoders")

DTYPES = ("auto", "fp32", "fp16", "bf16")
MODEL_TYPES = ("auto", "dense", "sparse")
SPARSE_LOADER = "sentence-transformers-sparse"
# config_sentence_transformers.json model types (ColBERT: PyLate's older name for multi-vector)
_ST_MODEL_TYPES = frozenset(
    {"SentenceTransformer", "SparseEncoder", "CrossEncoder", "MultiVectorEncoder", "ColBERT"}
)
POOLINGS = ("mean", "cls", "last-token", "max")
_POOLING_ALIASES = {
    "mean": "mean",
    "avg": "mean",
    "average": "mean",
    "mean_tokens": "mean",
    "cls": "cls",
    "cls_token": "cls",
    "cls_before_pooler": "cls",
    "first": "cls",
    "last-token": "last-token",
    "last_token": "last-token",
    "lasttoken": "last-token",
    "last": "last-token",
    "eos": "last-token",
    "max": "max",
    "max_tokens": "max",
}
# Our pooling names <-> sentence-transformers' Pooling modes.
_ST_POOLING = {"mean": "mean", "cls": "cls", "last-token": "lasttoken", "max": "max"}
_FROM_ST_POOLING = {v: k for k, v in _ST_POOLING.items()}

# Decoder-only (causal LM) architectures: last-token pooling with left padding, and "LLM-based"
# for --koembed-dtype auto.
DECODER_MODEL_TYPES = frozenset(
    {
        "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "llama", "mistral", "mixtral", "gemma",
        "gemma2", "gemma3", "gemma3_text", "phi", "phi3", "gpt2", "gpt_neox", "gptj", "falcon",
        "olmo", "olmo2", "exaone", "starcoder2", "stablelm", "internlm2", "cohere", "granite",
        "bloom", "opt", "mpt", "deepseek_v2", "deepseek_v3", "smollm3", "ministral",
    }
)  # fmt: skip

# The Qwen3-Embedding card's max_length; no leaderboard text is longer.
DEFAULT_MAX_LENGTH_CAP = 8192
_SUFFIXES = {"fp16": "-fp16", "bf16": "-bf16", "fp32": ""}
_OUTER_CUDA_ENV = "KOEMBED_OUTER_CUDA_VISIBLE_DEVICES"
_UNSET = "<unset>"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?")
_SHA = re.compile(r"[0-9a-f]{40}")
# Files a Hub download never needs: other runtimes' copies of the weights.
_HUB_IGNORE = [
    "*.onnx", "*.onnx_data", "onnx/*", "openvino/*", "*.msgpack", "*.h5", "tf_model*",
    "flax_model*", "rust_model*", "*.ot", "*.gguf", "coreml/*", "*.mlmodel", "*.tflite",
]  # fmt: skip


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
    def embed(self, texts: list[str], prompt: str | None) -> np.ndarray: ...


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

        backend: _SparseEncoderBackend = self._backend  # type: ignore[assignment]
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


# ----------------------------------------------------------------------------------------------
# GPU pinning for pytest-xdist workers


def pin_worker_gpu(
    worker_id: str | None,
    environ: MutableMapping[str, str],
    *,
    gpu_count: int | None = None,
) -> str | None:
    """Give xdist worker ``gwN`` its own GPU by setting ``CUDA_VISIBLE_DEVICES``.

    Worker i gets the i-th visible GPU (wrapping around when there are more workers than GPUs),
    where "visible" honours an outer ``CUDA_VISIBLE_DEVICES`` (kept in
    ``KOEMBED_OUTER_CUDA_VISIBLE_DEVICES`` so that a second call does not compound). Returns
    the value set, or None when nothing was set (not a worker, no GPU). Imports no torch: call
    it before anything initialises CUDA. ``gpu_count`` overrides the GPU count (tests).
    """
    index = _worker_index(worker_id)
    if index is None:
        return None
    if _OUTER_CUDA_ENV in environ:
        outer: str | None = environ[_OUTER_CUDA_ENV]
        if outer == _UNSET:
            outer = None
    else:
        outer = environ.get("CUDA_VISIBLE_DEVICES")
        environ[_OUTER_CUDA_ENV] = _UNSET if outer is None else outer
    if outer is not None:
        devices = _parse_visible_devices(outer)
    else:
        count = _count_gpus() if gpu_count is None else gpu_count
        devices = [str(i) for i in range(count)]
    if not devices:
        return None
    chosen = devices[index % len(devices)]
    torch_mod = sys.modules.get("torch")
    cuda = getattr(torch_mod, "cuda", None) if torch_mod is not None else None
    if cuda is not None and getattr(cuda, "is_initialized", lambda: False)():
        warnings.warn(
            f"pytest-koembed: CUDA was initialised before worker {worker_id} could be pinned to "
            f"GPU {chosen}; CUDA_VISIBLE_DEVICES has no effect in this process",
            RuntimeWarning,
            stacklevel=2,
        )
    environ["CUDA_VISIBLE_DEVICES"] = chosen
    return chosen


def _worker_index(worker_id: str | None) -> int | None:
    if not worker_id:
        return None
    match = re.fullmatch(r"gw(\d+)", worker_id.strip())
    return int(match.group(1)) if match else None


def _parse_visible_devices(value: str) -> list[str]:
    """CUDA's own reading: comma-separated ids, cut at the first invalid (negative) one."""
    devices: list[str] = []
    for raw in value.split(","):
        item = raw.strip()
        if not item or item.startswith("-"):
            break
        devices.append(item)
    return devices


def _count_gpus() -> int:
    """NVIDIA GPUs on this machine, found without touching CUDA in this process."""
    proc = Path("/proc/driver/nvidia/gpus")
    try:
        if proc.is_dir():
            count = sum(1 for _ in proc.iterdir())
            if count:
                return count
    except OSError:
        pass
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


# ----------------------------------------------------------------------------------------------
# Fingerprints


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


# ----------------------------------------------------------------------------------------------
# Loading


def load_encoder(options: EncoderOptions) -> LoadedEncoder:
    """Build the encoder ``options`` describe, or raise a one-line ``KoembedError``."""
    options = replace(
        options,
        dtype=options.dtype or "auto",
        device=options.device or "auto",
        batch_size=32 if options.batch_size is None else options.batch_size,
    )
    if options.dtype not in DTYPES:
        raise KoembedError(f"--koembed-dtype {options.dtype!r} is not one of {', '.join(DTYPES)}")
    pooling = _normalise_pooling(options.pooling) if options.pooling else None
    if options.batch_size < 1:
        raise KoembedError(f"--koembed-batch-size must be at least 1, got {options.batch_size}")
    if options.max_length is not None and options.max_length < 2:
        raise KoembedError(f"--koembed-max-length must be at least 2, got {options.max_length}")
    requested_type = options.model_type or "auto"
    if requested_type not in MODEL_TYPES:
        raise KoembedError(
            f"--koembed-model-type {requested_type!r} is not one of {', '.join(MODEL_TYPES)}"
        )

    hub_failures: list[str] = []  # a failed Hub metadata call (see _hub_snapshot)
    path, display, revision, fingerprint = _locate(options.model, options.revision, hub_failures)
    name_source = "hub" if revision is not None else local_model_name(path)[1]
    devices: list[str] = []
    if options.devices:
        from pytest_koembed.models.devices import resolve_devices

        devices = resolve_devices(options.devices)
    # The pytest process encodes the small calls: by default on the pool's first device.
    device = resolve_device(devices[0] if devices and options.device == "auto" else options.device)
    has_st = (path / "modules.json").is_file()
    if devices and not has_st:
        raise KoembedError(devices_need_sentence_transformers(options.model))
    st_modules = _read_modules(path) if has_st else []
    config = _read_json(_transformer_dir(path, st_modules) / "config.json")
    model_type = str(config.get("model_type") or "") or None
    is_decoder = _is_decoder(config)
    _check_remote_code(options, path, config, st_modules)
    sparse = _sparse_wanted(options.model, path, requested_type, st_modules, config)
    if sparse and pooling is not None:
        raise KoembedError(
            f"--koembed-pooling {pooling}: {options.model!r} is a sparse (SPLADE) model, whose "
            "pooling is its own SpladePooling module; drop --koembed-pooling"
        )

    from pytest_koembed.protocol.instructions import leaderboard_dtype

    hint = leaderboard_dtype(display)
    dtype = resolve_dtype(
        options.dtype,
        device_type=device.split(":")[0],
        llm=is_decoder or hint in ("fp16", "bf16"),
        bf16_supported=_bf16_supported(device),
        leaderboard=hint,
        checkpoint=_checkpoint_dtype(config),
    )
    check_dtype_supported(dtype, device)
    if fingerprint is None:
        fingerprint = _content_hash(path)

    info = EncoderInfo(
        name=options.model,
        row_name=_row_name(display, dtype),
        revision=revision,
        loader=SPARSE_LOADER if sparse else "sentence-transformers" if has_st else "transformers",
        pooling="",
        normalize=False,
        dtype=dtype,
        device=device,
        max_length=None,
        batch_size=options.batch_size,
        fingerprint=fingerprint,
        path=str(path),
        model_type=model_type,
        is_decoder=is_decoder,
        trust_remote_code=options.trust_remote_code,
        requested_dtype=options.dtype,
        hub_metadata_error=hub_failures[0] if hub_failures else None,
        name_source=name_source,
        encoder_type="sparse" if sparse else "dense",
    )
    if devices:
        from pytest_koembed.models.devices import DEFAULT_MIN_TEXTS

        info.devices = ",".join(devices)
        info.devices_min_texts = options.devices_min_texts or DEFAULT_MIN_TEXTS
    backend: _Backend
    with _quiet_loading():
        try:
            if sparse:
                return LoadedSparseEncoder(info, _load_sparse_encoder(path, options, info))
            if has_st:
                backend = _load_sentence_transformer(path, options, info, pooling)
            else:
                backend = _load_transformers(path, options, info, pooling, config)
        except KoembedError:
            raise
        except Exception as exc:
            raise _load_error(exc, options, info) from exc
    return LoadedEncoder(info, backend, devices=devices, devices_min_texts=info.devices_min_texts)


def devices_need_sentence_transformers(model: str) -> str:
    """Why ``--koembed-devices`` cannot encode ``model``: it has no sentence-transformers files."""
    return (
        f"--koembed-devices: model {model!r} has no sentence-transformers modules.json and loads "
        "with transformers, which has no multi-process pool here; drop --koembed-devices (xdist "
        "-n gives each worker its own GPU) or save the model with sentence-transformers"
    )


def _normalise_pooling(value: str) -> str:
    key = value.strip().lower()
    if key not in _POOLING_ALIASES:
        raise KoembedError(f"--koembed-pooling {value!r} is not one of {', '.join(POOLINGS)}")
    return _POOLING_ALIASES[key]


def _locate(
    model: str, revision: str | None, hub_failures: list[str] | None = None
) -> tuple[Path, str, str | None, str | None]:
    """(local directory, display name, commit, Hub fingerprint) of ``model``; None for local.

    A failed Hub metadata call is appended to ``hub_failures`` (see :func:`_hub_snapshot`).
    """
    if not model or not model.strip():
        raise KoembedError("--koembed-model is empty; pass a Hub id or a local model directory")
    path = Path(model).expanduser()
    if path.exists():
        path = path.resolve()
        _check_model_dir(path, model)
        return path, local_model_name(path)[0], None, None  # hashed once the cheap checks pass
    looks_like_path = (
        model.startswith((".", "/", "~", "\\")) or "\\" in model or not _HUB_ID.fullmatch(model)
    )
    if looks_like_path:
        raise KoembedError(
            f"--koembed-model {model!r}: no such directory (pass a local model directory or a "
            "Hub id such as nlpai-lab/KURE-v1)"
        )
    snapshot = _hub_snapshot(model, revision, hub_failures)
    commit = snapshot.name if _SHA.fullmatch(snapshot.name) else (revision or "main")
    _check_model_dir(snapshot, model)
    return snapshot, model, commit, f"hub:{model}@{commit}"


_NOT_A_MODEL = (
    "expected a sentence-transformers model directory (modules.json) or a transformers model "
    "directory (config.json)"
)


def _check_model_dir(path: Path, model: str) -> None:
    if not path.is_dir():
        raise KoembedError(
            f"--koembed-model {model!r} is a file, not a model directory; {_NOT_A_MODEL}"
        )
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise KoembedError(
            f"--koembed-model {model!r}: {path} has neither modules.json nor config.json; "
            f"{_NOT_A_MODEL}"
        )


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


def _hub_errors() -> Any:
    try:
        from huggingface_hub import errors
    except ImportError:  # pragma: no cover - huggingface_hub < 0.23
        from huggingface_hub import utils as errors
    return errors


class HubFallbackWarning(UserWarning):
    """The Hub's metadata call failed and a cached snapshot of the model was used instead."""


def _hub_snapshot(model: str, revision: str | None, hub_failures: list[str] | None = None) -> Path:
    """Download (or find in the local cache) a Hub model; return its snapshot directory.

    When the Hub is online but its metadata call fails (a server error, a rate limit, a network
    error), the local cache is used: one :class:`HubFallbackWarning` line says so, and the
    reason is appended to ``hub_failures`` for the run record's model block.
    """
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.constants import HF_HUB_OFFLINE

    errors = _hub_errors()
    unreachable = (
        f"--koembed-model {model!r} is not a local directory, the Hugging Face Hub is "
        f"unreachable and the model is not in the local cache ({_hub_cache_dir()}); pass a "
        f"local model directory instead, or download it first where the Hub is reachable "
        f"(hf download {model})"
    )
    offline = bool(HF_HUB_OFFLINE)
    ignore = list(_HUB_IGNORE)
    failure: str | None = None
    if not offline:
        try:
            info = HfApi().model_info(model, revision=revision)
            names = [s.rfilename for s in info.siblings or []]
            ignore += _redundant_bins(names)
        except (errors.RepositoryNotFoundError, errors.GatedRepoError) as exc:
            raise KoembedError(
                f"--koembed-model {model!r}: no such model on the Hub, or it is gated "
                f"({type(exc).__name__}); check the id, or log in (hf auth login)"
            ) from None
        except errors.RevisionNotFoundError:
            raise KoembedError(
                f"--koembed-model {model!r}: revision {revision!r} does not exist on the Hub"
            ) from None
        except Exception as exc:
            offline = True  # unreachable: fall back to the local cache, and say so below
            failure = _one_line(f"{type(exc).__name__}: {exc}".rstrip(": "), 200)
    try:
        folder = snapshot_download(
            model, revision=revision, ignore_patterns=ignore, local_files_only=offline
        )
    except (errors.RepositoryNotFoundError, errors.GatedRepoError):
        raise KoembedError(
            f"--koembed-model {model!r}: no such model on the Hub, or it is gated; check the id, "
            "or log in (hf auth login)"
        ) from None
    except errors.RevisionNotFoundError:
        raise KoembedError(
            f"--koembed-model {model!r}: revision {revision!r} does not exist on the Hub"
        ) from None
    except Exception as exc:
        if isinstance(exc, KoembedError):
            raise
        if failure is not None:
            unreachable += f"; the Hub's metadata call failed: {failure}"
        raise KoembedError(unreachable) from None
    snapshot = Path(str(folder))
    if failure is not None:
        if hub_failures is not None:
            hub_failures.append(failure)
        warnings.warn(
            HubFallbackWarning(
                f"--koembed-model {model!r}: the Hub's metadata call failed ({failure}); using "
                f"the cached snapshot {snapshot.name}, which may not be the newest revision"
            ),
            stacklevel=2,
        )
    return snapshot


def _redundant_bins(names: Sequence[str]) -> list[str]:
    """``*.bin`` / ``*.pt`` weights that sit next to safetensors weights: skip downloading them."""
    dirs_with_safetensors = {os.path.dirname(n) for n in names if n.endswith(".safetensors")}
    return [
        n
        for n in names
        if n.endswith((".bin", ".pt", ".pth"))
        and os.path.dirname(n) in dirs_with_safetensors
        and "model" in os.path.basename(n)
    ]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise KoembedError(f"{path} is not valid JSON: {exc}") from None
    return data if isinstance(data, dict) else {}


def _read_modules(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads((path / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KoembedError(f"{path / 'modules.json'} is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise KoembedError(f"{path / 'modules.json'} should be a list of modules")
    return [m for m in data if isinstance(m, dict)]


def _transformer_dir(path: Path, modules: list[dict[str, Any]]) -> Path:
    """Where config.json lives: the root, or the Transformer module's folder (old ST layout)."""
    for module in modules:
        if str(module.get("type", "")).endswith("Transformer"):
            sub = path / str(module.get("path", ""))
            if (sub / "config.json").is_file():
                return sub
    return path


def _is_decoder(config: Mapping[str, Any]) -> bool:
    model_type = str(config.get("model_type") or "").lower()
    if model_type in DECODER_MODEL_TYPES:
        return True
    text_config = config.get("text_config")
    if (
        isinstance(text_config, dict)
        and str(text_config.get("model_type", "")) in DECODER_MODEL_TYPES
    ):
        return True
    archs = config.get("architectures") or []
    return any(str(a).endswith("ForCausalLM") for a in archs)


def _checkpoint_dtype(config: Mapping[str, Any]) -> str | None:
    raw = config.get("torch_dtype") or config.get("dtype")
    return {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}.get(str(raw))


def _check_remote_code(
    options: EncoderOptions,
    path: Path,
    config: Mapping[str, Any],
    modules: list[dict[str, Any]],
) -> None:
    if options.trust_remote_code:
        return
    needs = _needs_remote_code(config, modules)
    if needs:
        raise KoembedError(
            f"model {options.model!r} runs its own code ({needs}); pass "
            "--koembed-trust-remote-code if you trust it"
        )


def _needs_remote_code(config: Mapping[str, Any], modules: list[dict[str, Any]]) -> str | None:
    for module in modules:
        kind = str(module.get("type", ""))
        if kind and not kind.startswith("sentence_transformers."):
            return f"sentence-transformers module {kind}"
    if config.get("auto_map"):
        model_type = str(config.get("model_type") or "")
        try:
            from transformers import CONFIG_MAPPING

            known = model_type in CONFIG_MAPPING
        except Exception:  # pragma: no cover - transformers broken
            known = False
        if not known:
            return f"config.json auto_map, model type {model_type or '?'!r}"
    return None


def _load_error(exc: BaseException, options: EncoderOptions, info: EncoderInfo) -> KoembedError:
    message = str(exc)
    if "trust_remote_code" in message:
        return KoembedError(
            f"model {options.model!r} runs its own code; pass --koembed-trust-remote-code if you "
            "trust it"
        )
    if _is_oom(exc):
        return KoembedError(
            f"model {options.model!r} does not fit in {info.device} memory as {info.dtype}; "
            "try a half-precision --koembed-dtype or another --koembed-device"
        )
    return KoembedError(
        f"could not load {options.model!r} with {info.loader}: {type(exc).__name__}: "
        f"{_one_line(message)}"
    )


def _one_line(text: str, limit: int = 300) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return "(no message)"


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """No weight-loading progress bars in a pytest run."""
    try:
        from transformers.utils import logging as hf_logging
    except Exception:  # pragma: no cover
        yield
        return
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


# ----------------------------------------------------------------------------------------------
# Device and dtype


def resolve_device(requested: str) -> str:
    """``auto`` -> cuda / mps / cpu; checks that an explicit device exists."""
    import torch

    value = (requested or "auto").strip().lower()
    if value == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        if _mps_available():
            return "mps"
        return "cpu"
    if value == "cpu":
        return "cpu"
    if value == "mps":
        if not _mps_available():
            raise KoembedError(
                "--koembed-device mps: the MPS backend is not available on this machine; use "
                "--koembed-device cpu or auto"
            )
        return "mps"
    match = re.fullmatch(r"cuda(?::(\d+))?", value)
    if match is None:
        raise KoembedError(
            f"--koembed-device {requested!r} is not one of auto, cpu, cuda, cuda:N, mps"
        )
    if not torch.cuda.is_available():
        build = torch.version.cuda
        why = f"torch {torch.__version__} is a CPU-only build" if build is None else "no GPU found"
        raise KoembedError(
            f"--koembed-device {requested}: CUDA is not available ({why}); use "
            "--koembed-device cpu or auto"
        )
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        extra = f", CUDA_VISIBLE_DEVICES={visible}" if visible is not None else ""
        raise KoembedError(
            f"--koembed-device {requested}: only {count} GPU(s) visible{extra}; under "
            "pytest-xdist each worker sees one GPU, so use --koembed-device cuda"
        )
    return f"cuda:{index}"


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _bf16_supported(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # pragma: no cover - older torch
            return bool(torch.cuda.is_bf16_supported())
    return True


def resolve_dtype(
    requested: str,
    *,
    device_type: str,
    llm: bool,
    bf16_supported: bool = True,
    leaderboard: str | None = None,
    checkpoint: str | None = None,
) -> str:
    """The dtype to run in. ``auto``: half precision for LLM-based models on a GPU, else fp32.

    The half dtype is the one the leaderboard row used (``leaderboard``), else the checkpoint's
    own half dtype, else bf16; bf16 falls back to fp16 on a GPU without bf16.
    """
    if requested != "auto":
        return requested
    if not llm or device_type not in ("cuda", "mps"):
        return "fp32"
    for choice in (leaderboard, checkpoint):
        if choice in ("fp16", "bf16"):
            want = choice
            break
    else:
        want = "bf16"
    if device_type == "mps" and want == "bf16":
        want = "fp16"
    if want == "bf16" and not bf16_supported:
        want = "fp16"
    return want


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def check_dtype_supported(dtype: str, device: str) -> None:
    """One-line KoembedError when ``device`` cannot run ``dtype``."""
    if dtype == "fp32":
        return
    import torch

    if device.startswith("cuda") and dtype == "bf16" and not _bf16_supported(device):
        name = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        raise KoembedError(
            f"--koembed-dtype bf16: {name} (compute capability {major}.{minor}) has no bf16 "
            "support; use --koembed-dtype fp16 or fp32"
        )
    try:
        dt = torch_dtype(dtype)
        x = torch.ones(4, 8, dtype=dt, device=device)
        w = torch.ones(8, 8, dtype=dt, device=device)
        y = torch.nn.functional.layer_norm(x @ w, (8,))
        torch.softmax(y, dim=-1).float().sum().item()
    except Exception as exc:
        raise KoembedError(
            f"--koembed-dtype {dtype} does not run on {device} ({type(exc).__name__}: "
            f"{_one_line(str(exc), 120)}); use --koembed-dtype fp32"
        ) from None


def _row_name(display: str, dtype: str) -> str:
    suffix = _SUFFIXES[dtype]
    if not suffix or display.lower().endswith(suffix):
        return display
    return display + suffix


def _dtype_kwargs(dtype: str) -> dict[str, Any]:
    """``dtype=`` for transformers >= 4.56, ``torch_dtype=`` before."""
    import transformers

    major, minor = (int(p) for p in re.findall(r"\d+", transformers.__version__)[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    return {key: torch_dtype(dtype)}


def _is_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None:
        oom = getattr(torch, "OutOfMemoryError", None) or getattr(
            torch.cuda, "OutOfMemoryError", None
        )
        if oom is not None and isinstance(exc, oom):
            return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "CUDA out of memory" in text or "MPS backend out of memory" in text
    )


def _free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and _mps_available():
        mps.empty_cache()


# ----------------------------------------------------------------------------------------------
# sentence-transformers path


class _SentenceTransformerBackend:
    def __init__(self, model: Any) -> None:
        self.model = model

    def embed(self, texts: list[str], prompt: str | None) -> np.ndarray:
        # prompt="" (not None) so that a model's default_prompt_name is never applied behind the
        # run record's back: the prompt plan decides every prompt.
        return self.model.encode(
            texts,
            prompt=prompt or "",
            batch_size=len(texts),
            convert_to_numpy=True,
            show_progress_bar=False,
            normalize_embeddings=False,
        )

    def start_pool(self, devices: list[str], home_device: str) -> dict[str, Any]:
        """sentence-transformers' pool, one process per device; the model stays on
        ``home_device`` for the calls this process encodes itself."""
        from pytest_koembed.models.devices import PoolProcessSetup, cpu_threads

        model = self.model
        model._koembed_pool_setup = PoolProcessSetup(cpu_threads(devices))
        try:
            # Moves the model to the CPU and into shared memory; every process gets a copy.
            return model.start_multi_process_pool(target_devices=list(devices))
        finally:
            del model._koembed_pool_setup  # pickled into the processes by now
            model.to(home_device)

    def embed_on_pool(
        self, pool: dict[str, Any], texts: list[str], prompt: str | None, batch_size: int
    ) -> np.ndarray:
        """``texts`` in batches of ``batch_size``, each batch encoded whole by one process, as
        :meth:`embed` encodes it: the same rows as in this process."""
        return self.model.encode(
            texts,
            prompt=prompt or "",
            batch_size=batch_size,
            chunk_size=batch_size,
            pool=pool,
            convert_to_numpy=True,
            show_progress_bar=False,
            normalize_embeddings=False,
        )

    def stop_pool(self, pool: dict[str, Any]) -> None:
        self.model.stop_multi_process_pool(pool)


def _load_sentence_transformer(
    path: Path, options: EncoderOptions, info: EncoderInfo, pooling: str | None
) -> _SentenceTransformerBackend:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        str(path),
        device=info.device,
        trust_remote_code=options.trust_remote_code,
        model_kwargs=_dtype_kwargs(info.dtype),
    )
    model.eval()
    pooling_module = None
    for name, module in model.named_children():
        kind = type(module).__name__
        if kind == "Pooling":
            pooling_module = (name, module)
        elif kind == "Normalize":
            info.normalize = True
    if pooling is not None:
        if pooling_module is None:
            raise KoembedError(
                f"--koembed-pooling {pooling}: model {options.model!r} has no "
                "sentence-transformers Pooling module to override"
            )
        from sentence_transformers.models import Pooling

        name, old = pooling_module
        new = Pooling(
            old.embedding_dimension,
            pooling_mode=_ST_POOLING[pooling],
            include_prompt=getattr(old, "include_prompt", True),
        )
        model._modules[name] = new
        pooling_module = (name, new)
    if pooling_module is not None:
        mode = pooling_module[1].pooling_mode
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
        info.pooling = "+".join(_FROM_ST_POOLING.get(m, m) for m in modes)
    else:
        info.pooling = "model-defined"
    if options.max_length is not None:
        model.max_seq_length = options.max_length
    info.max_length = model.max_seq_length
    dimension = getattr(model, "get_embedding_dimension", None) or getattr(
        model, "get_sentence_embedding_dimension", None
    )
    info.dimension = dimension() if dimension is not None else None
    info.similarity = str(getattr(model, "similarity_fn_name", None) or "cosine")
    st_config = _read_json(path / "config_sentence_transformers.json")
    prompts = st_config.get("prompts") or {}
    info.model_prompts = {str(k): str(v) for k, v in prompts.items() if isinstance(v, str)}
    default = st_config.get("default_prompt_name")
    info.default_prompt_name = str(default) if default else None
    first = model[0] if len(model) else None
    tokenizer = getattr(first, "tokenizer", None)
    info.padding_side = getattr(tokenizer, "padding_side", None)
    if info.pooling == "last-token" and tokenizer is not None:
        info.eos_token = _appended_eos(tokenizer)
    return _SentenceTransformerBackend(model)


# ----------------------------------------------------------------------------------------------
# sentence-transformers SparseEncoder path (SPLADE, inference-free SPLADE)


def declares_sparse_encoder(path: Path, modules: Sequence[Mapping[str, Any]]) -> bool:
    """The model directory is a sentence-transformers ``SparseEncoder``, by its own files.

    ``config_sentence_transformers.json`` says ``"model_type": "SparseEncoder"`` (what
    sentence-transformers >= 5 writes when it saves one), or a module of ``modules.json`` lives
    in ``sentence_transformers.sparse_encoder`` (MLMTransformer, SpladePooling,
    SparseStaticEmbedding, ...): mteb's own rule for files that lack the model type.
    """
    model_type = _read_json(path / "config_sentence_transformers.json").get("model_type")
    if model_type in _ST_MODEL_TYPES:
        return model_type == "SparseEncoder"
    return any("sparse_encoder" in str(m.get("type", "")) for m in modules)


def _sparse_wanted(
    model: str,
    path: Path,
    requested: str,
    modules: Sequence[Mapping[str, Any]],
    config: Mapping[str, Any],
) -> bool:
    """Whether to load ``path`` as a SparseEncoder, after ``--koembed-model-type``; a one-line
    KoembedError when the option contradicts what the model's files say."""
    declared = (path / "modules.json").is_file() and declares_sparse_encoder(path, modules)
    if requested == "auto":
        return declared
    if requested == "dense":
        if declared:
            raise KoembedError(
                f"--koembed-model-type dense: {model!r} is a sentence-transformers SparseEncoder "
                "(SPLADE: vocabulary-sized vectors scored by dot product), not a dense model; "
                "drop --koembed-model-type or pass sparse"
            )
        return False
    if declared:
        return True
    archs = [str(a) for a in config.get("architectures") or []]
    if not (path / "modules.json").is_file() and any(a.endswith("ForMaskedLM") for a in archs):
        # A bare masked-LM checkpoint: sentence-transformers wraps it as MLMTransformer +
        # SpladePooling (max), which is how SPLADE checkpoints without its files are used.
        return True
    what = (
        "a dense sentence-transformers model (modules.json has no SparseEncoder module and "
        "config_sentence_transformers.json no model_type SparseEncoder)"
        if (path / "modules.json").is_file()
        else f"a {', '.join(archs) or 'transformers'} checkpoint, not a masked-LM (SPLADE) one"
    )
    raise KoembedError(
        f"--koembed-model-type sparse: {model!r} is {what}; drop --koembed-model-type or pass dense"
    )


def check_model_type(model: str, model_type: str) -> None:
    """A one-line KoembedError when ``model_type`` (dense | sparse) contradicts the files of the
    local model directory ``model``; reads JSON only. Anything else is checked at load time."""
    if model_type == "auto":
        return
    path = Path(model).expanduser()
    if not path.is_dir():
        return
    modules = _read_modules(path) if (path / "modules.json").is_file() else []
    config = _read_json(_transformer_dir(path, modules) / "config.json")
    _sparse_wanted(model, path, model_type, modules, config)


class _SparseEncoderBackend:
    def __init__(self, model: Any) -> None:
        self.model = model

    def embed(self, texts: list[str], prompt: str | None) -> np.ndarray:  # pragma: no cover
        raise TypeError("a sparse encoder's embeddings are sparse tensors: use embed_sparse")

    def embed_sparse(self, texts: list[str], prompt: str | None, method: str) -> Any:
        """One batch as a CPU float32 sparse COO tensor. ``method`` is ``encode_query`` /
        ``encode_document`` / ``encode``: the first two pick the model's query / document route."""
        # prompt="" (not None) so that the model's own query / document prompts are never
        # applied behind the run record's back: the prompt plan decides every prompt.
        out = getattr(self.model, method)(
            texts,
            prompt=prompt or "",
            batch_size=len(texts),
            show_progress_bar=False,
            convert_to_tensor=True,
            convert_to_sparse_tensor=True,
        )
        return out.to("cpu").float().coalesce()


def _load_sparse_encoder(
    path: Path, options: EncoderOptions, info: EncoderInfo
) -> _SparseEncoderBackend:
    from sentence_transformers.sparse_encoder import SparseEncoder

    model = SparseEncoder(
        str(path),
        device=info.device,
        trust_remote_code=options.trust_remote_code,
        model_kwargs=_dtype_kwargs(info.dtype),
    )
    model.eval()
    kinds: list[str] = []
    for module in model.modules():
        kind = type(module).__name__
        if kind == "SpladePooling":
            name = f"splade-{getattr(module, 'pooling_strategy', 'max')}"
        elif kind == "SparseStaticEmbedding":
            name = "static"  # inference-free SPLADE: queries are a lookup of token weights
        else:
            continue
        if name not in kinds:
            kinds.append(name)
    info.pooling = "+".join(kinds) or "model-defined"
    info.normalize = False
    if options.max_length is not None:
        model.max_seq_length = options.max_length
    info.max_length = model.max_seq_length
    backend = _SparseEncoderBackend(model)
    # The vocabulary size, from an output: a freshly loaded SpladePooling does not know it yet
    # and sentence-transformers 6.2 then reports the transformer's hidden size.
    info.dimension = int(backend.embed_sparse(["a"], None, "encode_document").shape[1])
    info.similarity = str(model.similarity_fn_name or "dot")
    st_config = _read_json(path / "config_sentence_transformers.json")
    prompts = st_config.get("prompts") or {}
    info.model_prompts = {str(k): str(v) for k, v in prompts.items() if isinstance(v, str)}
    default = st_config.get("default_prompt_name")
    info.default_prompt_name = str(default) if default else None
    tokenizer = getattr(model, "tokenizer", None)
    info.padding_side = getattr(tokenizer, "padding_side", None)
    return backend


# ----------------------------------------------------------------------------------------------
# transformers path


class _TransformersBackend:
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        device: str,
        pooling: str,
        normalize: bool,
        max_length: int,
        append_eos_id: int | None,
        input_names: tuple[str, ...],
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length
        self.append_eos_id = append_eos_id
        self.input_names = input_names

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask as the model sees them (padded on the tokenizer's side)."""
        import torch

        tok = self.tokenizer
        if self.append_eos_id is None:
            batch = tok(
                texts,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            return {k: batch[k] for k in self.input_names if k in batch}
        encoded = tok(texts, padding=False, truncation=True, max_length=self.max_length - 1)
        rows = [[*ids, self.append_eos_id] for ids in encoded["input_ids"]]
        width = max(len(r) for r in rows)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.append_eos_id
        ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        left = tok.padding_side == "left"
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if left else slice(0, len(row))
            ids[i, span] = torch.tensor(row, dtype=torch.long)
            mask[i, span] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def embed(self, texts: list[str], prompt: str | None) -> np.ndarray:
        import torch

        if prompt:
            texts = [prompt + text for text in texts]
        batch = {k: v.to(self.device) for k, v in self.tokenize(texts).items()}
        with torch.inference_mode():
            out = self.model(**batch)
            hidden = getattr(out, "last_hidden_state", None)
            if hidden is None:
                hidden = out[0]
            if self.pooling in ("cls", "last-token"):  # pick rows first, then cast
                emb = pool(hidden, batch["attention_mask"], self.pooling).float()
            else:
                emb = pool(hidden.float(), batch["attention_mask"], self.pooling)
            if self.normalize:
                emb = torch.nn.functional.normalize(emb, p=2, dim=-1)
        return emb.cpu().numpy()


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token states ``(batch, seq, dim)`` with ``mask`` ``(batch, seq)``."""
    import torch

    m = mask.to(hidden.dtype).unsqueeze(-1)
    if pooling == "mean":
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    if pooling == "last-token":
        # The last real token of each row: works for left padding (always the last column)
        # and right padding alike.
        seq = mask.shape[1]
        last = seq - 1 - mask.flip(dims=[1]).long().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling {pooling!r}")


def _declared_pooling(path: Path, config: Mapping[str, Any]) -> str | None:
    """Pooling a plain transformers checkpoint declares, if any."""
    for sub in sorted(path.glob("*Pooling*/config.json")):
        data = _read_json(sub)
        mode = data.get("pooling_mode")
        if isinstance(mode, list):
            mode = mode[0] if mode else None
        if isinstance(mode, str) and mode in _FROM_ST_POOLING:
            return _FROM_ST_POOLING[mode]
        for key, st_mode in (
            ("pooling_mode_cls_token", "cls"),
            ("pooling_mode_lasttoken", "lasttoken"),
            ("pooling_mode_max_tokens", "max"),
            ("pooling_mode_mean_tokens", "mean"),
        ):
            if data.get(key):
                return _FROM_ST_POOLING[st_mode]
    for key in ("pooling", "pooling_mode", "pooler_type", "pooling_method"):
        value = config.get(key)
        if isinstance(value, str) and value.strip().lower() in _POOLING_ALIASES:
            return _POOLING_ALIASES[value.strip().lower()]
    return None


def _appended_eos(tokenizer: Any) -> str | None:
    """The special token the tokenizer itself puts at the end of every input, if any."""
    try:
        ids = tokenizer("a")["input_ids"]
    except Exception:
        return None
    if not ids:
        return None
    last = ids[-1]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    if last in special:
        return str(tokenizer.convert_ids_to_tokens(last))
    return None


def _pooling_eos(tokenizer: Any, model_type: str | None) -> tuple[int | None, str | None]:
    """The EOS a last-token pooled model pools on: (id, token)."""
    if model_type and model_type.startswith("qwen"):
        tid = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            return tid, "<|endoftext|>"
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id), str(tokenizer.eos_token)
    return None, None


def _load_transformers(
    path: Path,
    options: EncoderOptions,
    info: EncoderInfo,
    pooling: str | None,
    config: Mapping[str, Any],
) -> _TransformersBackend:
    import inspect

    from transformers import AutoModel, AutoTokenizer

    trust = options.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust)
    model = AutoModel.from_pretrained(
        str(path), trust_remote_code=trust, **_dtype_kwargs(info.dtype)
    )
    model.eval()
    model.to(info.device)

    declared = _declared_pooling(path, config)
    chosen = pooling or declared or ("last-token" if info.is_decoder else "mean")
    info.pooling = chosen
    info.normalize = True

    if chosen == "last-token":
        tokenizer.padding_side = "left"
    elif chosen == "cls":
        tokenizer.padding_side = "right"
    info.padding_side = tokenizer.padding_side

    append_id: int | None = None
    if chosen == "last-token":
        eos_id, eos_token = _pooling_eos(tokenizer, info.model_type)
        already = _appended_eos(tokenizer)
        want = options.append_eos
        if want is None:
            want = eos_id is not None and already is None
        if want and eos_id is not None and already != eos_token:
            append_id = eos_id
            info.append_eos = True
            info.eos_token = eos_token
        else:
            info.eos_token = already
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise KoembedError(
                f"model {options.model!r}: its tokenizer has no pad, eos or unk token to pad with"
            )
        tokenizer.pad_token = fallback

    limits = []
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    pos_max = config.get("max_position_embeddings")
    if isinstance(pos_max, int) and pos_max > 0:
        limits.append(pos_max)
    max_length = min(limits) if limits else 512
    max_length = min(max_length, DEFAULT_MAX_LENGTH_CAP)
    if options.max_length is not None:
        max_length = options.max_length
    info.max_length = max_length
    info.dimension = _hidden_size(model, config)

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        params = {}  # type: ignore[assignment]
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in params:
        names.append("token_type_ids")
    return _TransformersBackend(
        model,
        tokenizer,
        device=info.device,
        pooling=chosen,
        normalize=info.normalize,
        max_length=max_length,
        append_eos_id=append_id,
        input_names=tuple(names),
    )


def _hidden_size(model: Any, config: Mapping[str, Any]) -> int | None:
    cfg = getattr(model, "config", None)
    for source in (cfg, config):
        if source is None:
            continue
        value = (
            source.get("hidden_size")
            if isinstance(source, Mapping)
            else getattr(source, "hidden_size", None)
        )
        if isinstance(value, int):
            return value
    return None
