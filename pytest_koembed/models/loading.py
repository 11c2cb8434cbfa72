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
  (``--koembed-model-type`` overrides), loads as a ``LoadedSparseEncoder``, whose vectors
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
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.models.backends.sentence_transformers import _load_sentence_transformer
from pytest_koembed.models.backends.sparse import _load_sparse_encoder
from pytest_koembed.models.backends.transformers import _load_transformers
from pytest_koembed.models.dtypes import (
    DTYPES,
    _bf16_supported,
    _is_oom,
    _one_line,
    check_dtype_supported,
    resolve_device,
    resolve_dtype,
)
from pytest_koembed.models.encoders import (
    EncoderInfo,
    EncoderOptions,
    LazyBackend,
    LoadedEncoder,
    LoadedSparseEncoder,
    _Backend,
)
from pytest_koembed.models.fingerprint import _SHA, _content_hash, file_hashes_dir
from pytest_koembed.models.hub import _hub_snapshot
from pytest_koembed.models.model_files import (
    _checkpoint_dtype,
    _is_decoder,
    _needs_remote_code,
    _read_json,
    _read_modules,
    _transformer_dir,
    declares_sparse_encoder,
)
from pytest_koembed.models.naming import _HUB_ID, _row_name, local_model_name
from pytest_koembed.models.pooling import _normalise_pooling
from pytest_koembed.models.resolved import (
    apply_resolved,
    differences,
    load_key,
    read_resolved,
    remember_resolved,
)

MODEL_TYPES = ("auto", "dense", "sparse")


SPARSE_LOADER = "sentence-transformers-sparse"


@dataclass(frozen=True)
class Location:
    """Where a model's files are (:func:`locate_model`): a local directory or a Hub snapshot."""

    path: Path
    display: str  # the name the model is shown by, before the dtype suffix
    revision: str | None  # the Hub commit; None for a local directory
    fingerprint: str | None  # ``hub:<id>@<commit>``; None for a local one (hashed later)
    hub_failures: tuple[str, ...] = ()  # a failed Hub metadata call (see _hub_snapshot)


def is_hub_id(model: str) -> bool:
    """Whether ``model`` names a Hub repository (not an existing path, shaped like an id)."""
    text = model.strip()
    if not text or Path(text).expanduser().exists():
        return False
    return not text.startswith((".", "/", "~", "\\")) and bool(_HUB_ID.fullmatch(text))


def locate_model(model: str, revision: str | None) -> Location:
    """The model's files: a local directory as it is, a Hub id downloaded (or found in the
    cache) at ``revision``; a one-line KoembedError when they cannot be had."""
    hub_failures: list[str] = []
    found = _locate(model, revision, hub_failures)
    return Location(*found, hub_failures=tuple(hub_failures))


def load_encoder(
    options: EncoderOptions, *, cache_dir: Path | None = None, location: Location | None = None
) -> LoadedEncoder:
    """Build the encoder ``options`` describe, or raise a one-line ``KoembedError``.

    With ``cache_dir`` (``--koembed-cache``) the files' hashes and what loading resolved are
    remembered there, and an encoder loaded before with the same files and settings comes back
    with its weights not yet loaded: they load at the first text the cache lacks
    (``models.resolved``). ``location``: the model's files, already located (the plugin
    resolves a Hub id before anything runs).
    """
    options, pooling, requested_type = _checked_options(options)
    if location is None:
        location = locate_model(options.model, options.revision)
    path, display, revision = location.path, location.display, location.revision
    fingerprint, hub_failures = location.fingerprint, location.hub_failures
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
    memo = file_hashes_dir(cache_dir) if cache_dir is not None else None
    if fingerprint is None:
        fingerprint = _content_hash(path, memo)

    info = _info(options, path, display, revision, dtype, device, fingerprint, has_st, sparse)
    info.model_type, info.is_decoder = model_type, is_decoder
    info.hub_metadata_error = hub_failures[0] if hub_failures else None
    info.name_source = name_source
    if devices:
        from pytest_koembed.models.devices import DEFAULT_MIN_TEXTS

        info.devices = ",".join(devices)
        info.devices_min_texts = options.devices_min_texts or DEFAULT_MIN_TEXTS
    if cache_dir is None:
        return _load(path, options, info, pooling, config, devices)
    return _load_remembered(path, options, info, pooling, config, devices, cache_dir)


def _load_remembered(
    path: Path,
    options: EncoderOptions,
    info: EncoderInfo,
    pooling: str | None,
    config: Mapping[str, Any],
    devices: list[str],
    cache_dir: Path,
) -> LoadedEncoder:
    """The encoder with what an earlier load of the same files and settings resolved, its
    weights loaded at the first uncached text; else load now and remember what was resolved."""
    fingerprint = info.fingerprint
    if fingerprint.startswith("hub:") and not _SHA.fullmatch(fingerprint.rsplit("@", 1)[-1]):
        fingerprint = _content_hash(path, file_hashes_dir(cache_dir))  # "@main" moves
    key = load_key(info, options, pooling, fingerprint)
    remembered = read_resolved(cache_dir, key)
    if remembered is None:
        encoder = _load(path, options, info, pooling, config, devices)
        remember_resolved(cache_dir, key, encoder.info)
        return encoder
    fresh = replace(info)  # what a load resolves now, checked against what was remembered
    apply_resolved(info, remembered)

    def load() -> _Backend:
        return _load(path, options, fresh, pooling, config, devices).backend

    def check() -> None:
        changed = differences(remembered, fresh)
        if changed:
            raise KoembedError(
                f"embedding cache {cache_dir}: model {options.model!r} loads with other "
                f"settings than the cache remembered ({'; '.join(changed)}); its cached "
                f"vectors may not be this model's: run `koembed cache clear --cache={cache_dir}`"
            )

    backend = LazyBackend(load, check)
    if info.loader == SPARSE_LOADER:
        return LoadedSparseEncoder(info, backend)
    return LoadedEncoder(info, backend, devices=devices, devices_min_texts=info.devices_min_texts)


def _checked_options(options: EncoderOptions) -> tuple[EncoderOptions, str | None, str]:
    """``options`` with their defaults filled in, the pooling normalised and the model type;
    a one-line KoembedError for a value out of range."""
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
    return options, pooling, requested_type


def _info(
    options: EncoderOptions,
    path: Path,
    display: str,
    revision: str | None,
    dtype: str,
    device: str,
    fingerprint: str,
    has_st: bool,
    sparse: bool,
) -> EncoderInfo:
    """The run record's model block as far as it is known before the weights load."""
    return EncoderInfo(
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
        trust_remote_code=options.trust_remote_code,
        requested_dtype=options.dtype,
        encoder_type="sparse" if sparse else "dense",
    )


def _load(
    path: Path,
    options: EncoderOptions,
    info: EncoderInfo,
    pooling: str | None,
    config: Mapping[str, Any],
    devices: list[str],
) -> LoadedEncoder:
    """Load the weights with the loader ``info`` names; a one-line KoembedError on failure."""
    backend: _Backend
    with _quiet_loading():
        try:
            if info.loader == SPARSE_LOADER:
                return LoadedSparseEncoder(info, _load_sparse_encoder(path, options, info))
            if info.loader == "sentence-transformers":
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
    if not path.exists():  # only a Hub snapshot: a local path was checked to exist
        raise KoembedError(
            f"--koembed-model {model!r}: the Hub download left no snapshot directory ({path}); "
            "the Hub's commit and its files' X-Repo-Commit may disagree: delete "
            f"{path.parent.parent} and retry"
        )
    if not path.is_dir():
        raise KoembedError(
            f"--koembed-model {model!r} is a file, not a model directory; {_NOT_A_MODEL}"
        )
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise KoembedError(
            f"--koembed-model {model!r}: {path} has neither modules.json nor config.json; "
            f"{_NOT_A_MODEL}"
        )


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


def check_model_type(model: str, model_type: str, path: Path | None = None) -> None:
    """A one-line KoembedError when ``model_type`` (dense | sparse) contradicts the files of the
    local model directory ``model`` (or ``path``, a Hub id's snapshot); reads JSON only.
    Anything else is checked at load time."""
    if model_type == "auto":
        return
    path = path or Path(model).expanduser()
    if not path.is_dir():
        return
    modules = _read_modules(path) if (path / "modules.json").is_file() else []
    config = _read_json(_transformer_dir(path, modules) / "config.json")
    _sparse_wanted(model, path, model_type, modules, config)
