"""The mteb adapter of a sparse (SPLADE) encoder: :class:`SparseAdapter`, mteb's own
``SparseEncoderWrapper`` with the plugin's prompt plan, text counts and checks, built by
:func:`make_sparse_adapter`. The vectors, their checks and the sparsity counts are
``evaluation.sparse``'s. This module imports mteb at import time: ``evaluation.run`` imports it
only when a sparse encoder is evaluated.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.models.sentence_transformer_wrapper import (
    SparseEncoderWrapper,
    _is_sparse_compatible_task,
    _postprocess_sparse_embeddings,
)

from pytest_koembed.errors import KoembedError
from pytest_koembed.evaluation.roles import prompt_role
from pytest_koembed.evaluation.sparse import SparsityCounts, checked_sparse, similarity_name
from pytest_koembed.evaluation.threads import full_threads
from pytest_koembed.models.store import StoreKey
from pytest_koembed.protocol.spec import TaskSpec


class SparseAdapter(SparseEncoderWrapper):  # type: ignore[misc]
    """mteb's ``SparseEncoderWrapper`` around a sparse encoder, for one task (see
    :func:`make_sparse_adapter`)."""

    def __init__(
        self,
        encoder: Any,
        spec: TaskSpec,
        prompts: Callable[[TaskSpec, str], str | None],
        *,
        model_name: str,
        revision: str | None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        # Not SparseEncoderWrapper.__init__: it builds the model meta and prompts from a raw
        # SparseEncoder; here they come from the run (name, revision, prompt plan).
        self._spec = spec
        self._prompts = prompts
        self._progress = progress
        self._loaded = callable(getattr(encoder, "_sparse", None))  # a LoadedSparseEncoder
        self.model = encoder
        self.model_prompts = None
        self.used_prompts: dict[str, str | None] = {}
        self.texts_encoded = 0
        self.texts_total = 0
        self.texts_from_store = 0
        self.encode_seconds = 0.0
        self.distinct_keys: set[StoreKey] = set()
        self.counts = SparsityCounts()
        self.mteb_model_meta = ModelMeta.create_empty(
            overwrites={
                "name": model_name,
                "revision": revision or "no_revision_available",
                "similarity_fn_name": ScoringFunction.from_str(similarity_name(encoder)),
                "languages": ["kor-Hang"],
                "modalities": ["text"],
                "model_type": ["sparse"],
            }
        )

    @property
    def sparsity(self) -> dict[str, Any] | None:
        return self.counts.to_dict()

    def similarity(self, embeddings1: Any, embeddings2: Any) -> Any:
        # the model's own similarity (SparseEncoderWrapper's); torch's note that its sparse
        # CSR support is "beta" is not the user's concern, so it stays out of their summary
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return super().similarity(embeddings1, embeddings2)

    def _method(self, role: str) -> tuple[str, Callable[..., Any]]:
        # mteb's _select_encode_function: the query / document route in retrieval
        if role == "query":
            return "encode_query", self.model.encode_query
        if role == "document":
            return "encode_document", self.model.encode_document
        return "encode", self.model.encode

    def _call(self, texts: list[str], role: str, batch_size: int | None) -> Any:
        prompt = self._prompts(self._spec, role)
        self.used_prompts[role] = prompt
        name, method = self._method(role)
        self.distinct_keys.update(StoreKey(name, prompt, text) for text in texts)
        kwargs: dict[str, Any] = {} if prompt is None else {"prompt": prompt}
        if self._loaded:
            kwargs.update(progress=self._progress, batch_size=batch_size)
        else:  # a raw SparseEncoder: as mteb's SparseEncoderWrapper calls it
            kwargs.update(
                batch_size=batch_size or 32,
                show_progress_bar=False,
                convert_to_sparse_tensor=True,
            )
        started = time.perf_counter()
        with full_threads():  # every core, also inside a clustering task's thread cap
            out = method(texts, **kwargs)
        self.encode_seconds += time.perf_counter() - started
        self.texts_encoded += len(texts)
        if self._progress is not None and not self._loaded:
            self._progress(len(texts))
        return out

    def encode(
        self,
        inputs: Iterable[dict[str, Any]],
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> Any:
        role = prompt_role(prompt_type)
        texts = [text for batch in inputs for text in batch["text"]]
        where = f"{self._spec.column} ({role} texts)"
        self.texts_total += len(texts)
        try:
            raw = self._call(texts, role, kwargs.get("batch_size"))
        except KoembedError:
            raise
        except Exception as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise KoembedError(
                f"{where}: the encoder raised {type(exc).__name__}: {message}"
            ) from exc
        matrix = checked_sparse(raw, len(texts), where)
        self.counts.add(role, matrix)
        if _is_sparse_compatible_task(task_metadata):
            return matrix
        return _postprocess_sparse_embeddings(matrix)  # mteb densifies for other tasks


def make_sparse_adapter(
    encoder: Any,
    spec: TaskSpec,
    prompts: Callable[[TaskSpec, str], str | None],
    *,
    model_name: str,
    revision: str | None,
    progress: Callable[[int], None] | None = None,
) -> Any:
    """mteb's ``SparseEncoderWrapper`` around ``encoder`` for one task.

    It has the attributes ``evaluation.evaluate_task`` reads from ``adapter.make_adapter``'s adapter
    (``used_prompts``, ``texts_encoded``, ``texts_total``, ``texts_from_store`` (always 0),
    ``distinct_keys``, ``encode_seconds``) and ``sparsity`` (:class:`SparsityCounts` as a dict).
    """
    return SparseAdapter(
        encoder, spec, prompts, model_name=model_name, revision=revision, progress=progress
    )
