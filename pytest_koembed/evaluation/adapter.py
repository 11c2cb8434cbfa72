"""The mteb adapter of a dense encoder: :class:`EncoderAdapter`, built by :func:`make_adapter`.

Any encoder object works: a ``LoadedEncoder`` (``models.encoders``), a user's own class with
``encode(list[str])``, or a ``SentenceTransformer``. The adapter gives it mteb's ``AbsEncoder``
interface for one task, applies the prompt chosen for the task and role, serves repeated texts
from the run's embedding store (encode once), counts what it encoded, and checks every batch of
embeddings (:func:`check_embeddings`) before mteb scores it. This module imports mteb at import
time: ``evaluation.run`` imports it only when a task is evaluated.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction

from pytest_koembed.errors import KoembedError
from pytest_koembed.evaluation.roles import prompt_role
from pytest_koembed.evaluation.threads import full_threads
from pytest_koembed.models.store import EmbeddingStore, StoreKey
from pytest_koembed.protocol.spec import TaskSpec

# Resolves the exact prompt for a task and a role ("query", "document" or "symmetric").
PromptResolver = Callable[[TaskSpec, str], "str | None"]
# Told how many texts the encoder has just finished (see evaluation.progress.TaskProgress).
ProgressCallback = Callable[[int], None]


def _declares_parameter(func: Callable[..., Any], name: str) -> bool:
    """``func`` has a parameter called ``name`` (not merely ``**kwargs``, which a
    SentenceTransformer would forward to its modules)."""
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def _accepts_keyword(func: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def check_embeddings(array: Any, n_texts: int, where: str) -> np.ndarray:
    """Return the encoder output as a float32 matrix, or raise a one-line KoembedError."""
    if hasattr(array, "detach"):  # torch tensor, possibly bf16 on a GPU
        array = array.detach().float().cpu().numpy()
    try:
        matrix = np.asarray(array, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise KoembedError(f"{where}: encoder output is not a numeric array ({exc})") from None
    if matrix.ndim != 2:
        raise KoembedError(
            f"{where}: encoder returned an array of shape {matrix.shape}; expected "
            f"({n_texts}, dim), one row per text"
        )
    if matrix.shape[0] != n_texts:
        raise KoembedError(f"{where}: encoder returned {matrix.shape[0]} rows for {n_texts} texts")
    bad = ~np.isfinite(matrix)
    if bad.any():
        rows = int(bad.any(axis=1).sum())
        raise KoembedError(
            f"{where}: encoder returned NaN or inf values in {rows} of {n_texts} embeddings "
            "(check the dtype: fp16 overflows are a common cause; try --koembed-dtype fp32)"
        )
    zero = ~matrix.any(axis=1)
    if zero.any():
        raise KoembedError(
            f"{where}: encoder returned {int(zero.sum())} all-zero embeddings of {n_texts}; "
            "cosine similarity is undefined for them"
        )
    return matrix


class EncoderAdapter(AbsEncoder):
    """Any encoder in mteb's ``AbsEncoder`` interface, for one task (see :func:`make_adapter`)."""

    def __init__(
        self,
        encoder: Any,
        spec: TaskSpec,
        prompts: PromptResolver,
        *,
        model_name: str,
        revision: str | None,
        similarity: str = "cosine",
        progress: ProgressCallback | None = None,
        store: EmbeddingStore | None = None,
        reused: ProgressCallback | None = None,
    ) -> None:
        self._spec = spec
        self._prompts = prompts
        self._progress = progress
        self._store = store
        self._reused = reused
        self.model = encoder
        self.used_prompts: dict[str, str | None] = {}
        self.dimension: int | None = None
        self.texts_encoded = 0
        self.encode_seconds = 0.0
        self.texts_total = 0  # texts mteb asked embeddings for
        self.texts_from_store = 0  # of them, served by the store
        # of the distinct rows served, those read from the persistent cache (None: no
        # persistent cache behind the store; ``embedding_cache.LayeredStore``)
        self.texts_from_disk: int | None = 0 if hasattr(self._store, "disk_reads") else None
        self.distinct_keys: set[StoreKey] = set()
        self.mteb_model_meta = ModelMeta.create_empty(
            overwrites={
                "name": model_name,
                "revision": revision or "no_revision_available",
                "similarity_fn_name": ScoringFunction.from_str(similarity),
                "languages": ["kor-Hang"],
                "modalities": ["text"],
            }
        )

    def _method(self, role: str) -> tuple[str, Callable[..., Any]]:
        """The encoder method for a role: ``encode_query`` / ``encode_document`` if it has
        them, else ``encode``; with its name (part of a store key)."""
        if role == "query" and callable(getattr(self.model, "encode_query", None)):
            return "encode_query", self.model.encode_query
        if role == "document" and callable(getattr(self.model, "encode_document", None)):
            return "encode_document", self.model.encode_document
        return "encode", self.model.encode

    def _call(self, texts: list[str], role: str) -> Any:
        prompt = self._prompts(self._spec, role)
        self.used_prompts[role] = prompt
        _, method = self._method(role)
        started = time.perf_counter()
        by_batch = self._progress is not None and _declares_parameter(method, "progress")
        extra: dict[str, Any] = {"progress": self._progress} if by_batch else {}
        with full_threads():  # every core, also inside a clustering task's thread cap
            if prompt is None:
                out = method(texts, **extra)
            elif _accepts_keyword(method, "prompt"):
                out = method(texts, prompt=prompt, **extra)
            else:
                # The encoder takes no prompt argument: prepend it, as sentence-transformers does.
                out = method([prompt + text for text in texts], **extra)
        self.encode_seconds += time.perf_counter() - started
        self.texts_encoded += len(texts)
        if self._progress is not None and not by_batch:
            self._progress(len(texts))
        return out

    def _encoded(self, texts: list[str], role: str, where: str) -> np.ndarray:
        """The encoder's checked float32 embeddings of ``texts``, one row per text."""
        try:
            raw = self._call(texts, role)
        except KoembedError:
            raise
        except Exception as exc:  # a user's encoder: name it, keep it to one line
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise KoembedError(
                f"{where}: the encoder raised {type(exc).__name__}: {message}"
            ) from exc
        return check_embeddings(raw, len(texts), where)

    def _through_store(self, texts: list[str], role: str, where: str) -> np.ndarray:
        """Encode only the distinct texts the store lacks; the rest come from the store.

        The result has one row per input text, in input order, as without the store."""
        assert self._store is not None
        name, _ = self._method(role)
        prompt = self._prompts(self._spec, role)
        keys = [StoreKey(name, prompt, text) for text in texts]
        self.distinct_keys.update(keys)
        rows: dict[StoreKey, np.ndarray] = {}
        disk_before = getattr(self._store, "disk_reads", 0)
        for key, row in zip(keys, self._store.get_many(keys), strict=True):
            if row is not None:
                rows[key] = row
        if self.texts_from_disk is not None:
            self.texts_from_disk += getattr(self._store, "disk_reads", 0) - disk_before
        missing = list(dict.fromkeys(key for key in keys if key not in rows))
        self.used_prompts[role] = prompt  # also when every text came from the store
        served = len(texts) - len(missing)
        self.texts_from_store += served
        if served and self._reused is not None:  # before encoding: the total is right meanwhile
            self._reused(served)
        if missing:
            encoded = self._encoded([key.text for key in missing], role, where)
            self._store.put_many(missing, encoded)
            rows.update(zip(missing, encoded, strict=True))
        try:
            return np.stack([rows[key] for key in keys])
        except ValueError:  # rows of an earlier task and of this call differ in length
            raise KoembedError(
                f"{where}: encoder returned embeddings of another dimension than earlier "
                "in this run; dimensions must not change"
            ) from None

    def encode(
        self,
        inputs: Iterable[dict[str, Any]],
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        role = prompt_role(prompt_type)
        texts = [text for batch in inputs for text in batch["text"]]
        where = f"{self._spec.column} ({role} texts)"
        self.texts_total += len(texts)
        if self._store is None or not texts:
            name, _ = self._method(role)
            prompt = self._prompts(self._spec, role)
            self.distinct_keys.update(StoreKey(name, prompt, text) for text in texts)
            matrix = self._encoded(texts, role, where)
        else:
            matrix = self._through_store(texts, role, where)
        if self.dimension is None:
            self.dimension = matrix.shape[1]
        elif matrix.shape[1] != self.dimension:
            raise KoembedError(
                f"{where}: encoder returned {matrix.shape[1]}-dim embeddings after "
                f"{self.dimension}-dim ones in the same task; dimensions must not change"
            )
        return matrix


def make_adapter(
    encoder: Any,
    spec: TaskSpec,
    prompts: PromptResolver,
    *,
    model_name: str,
    revision: str | None,
    similarity: str = "cosine",
    progress: ProgressCallback | None = None,
    store: EmbeddingStore | None = None,
    reused: ProgressCallback | None = None,
) -> Any:
    """Wrap any encoder in mteb's ``AbsEncoder`` interface for one task.

    The adapter records the exact prompt used per role (``used_prompts``) for the run record,
    and counts the texts encoded (``texts_encoded``, ``encode_seconds``). ``progress`` is told
    of every finished batch when the encoder's ``encode`` takes a ``progress`` callback (a
    ``LoadedEncoder`` does), else of every finished call: the encoder's batching, and so its
    embeddings, are never changed for it.

    With a ``store`` (``embedding_store``), each distinct (method, prompt, text) missing from it
    is encoded once, stored, and every other text is served from it (``texts_from_store``);
    ``reused`` is told how many texts of each call were served, so a progress total can shrink
    to the texts actually encoded. The encoder's own output is checked before it is stored.
    A store with a persistent cache behind it (``disk_reads``, ``embedding_cache.LayeredStore``)
    also counts the distinct rows read from disk (``texts_from_disk``).
    """
    return EncoderAdapter(
        encoder,
        spec,
        prompts,
        model_name=model_name,
        revision=revision,
        similarity=similarity,
        progress=progress,
        store=store,
        reused=reused,
    )
