"""Sparse (SPLADE) encoders: evaluated through mteb's ``SparseEncoderWrapper``, sparsity counted.

A sparse encoder (``encoders.LoadedSparseEncoder``, or a sentence-transformers ``SparseEncoder``
returned by a ``koembed_encoder`` override) gives vocabulary-sized vectors, scored by the model's
own similarity (dot product for SPLADE). :func:`make_sparse_adapter` is mteb's own
``SparseEncoderWrapper`` with the plugin's prompt plan, text counts and checks: its ``similarity``
is the model's, retrieval keeps the vectors sparse, and every other task type gets them densified
(mteb's own rule, ``_is_sparse_compatible_task``). The run's embedding store (encode once) is
bypassed: it keeps dense float32 rows, and a 30,000-250,000-dimension row per text would not fit.

Per task, the adapter counts the active (non-zero) dimensions of every text it encoded
(:class:`SparsityCounts`): the run record's ``sparsity`` field, which users of sparse models watch.

This module imports mteb and torch only inside the functions that need them.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.models.store import StoreKey
from pytest_koembed.protocol.spec import TaskSpec

if TYPE_CHECKING:
    import torch

SPARSE = "sparse"
DENSE = "dense"


def _is_st_sparse_encoder(encoder: Any) -> bool:
    """A sentence-transformers ``SparseEncoder`` (or a subclass), without importing it."""
    return any(
        cls.__name__ == "SparseEncoder" and cls.__module__.startswith("sentence_transformers")
        for cls in type(encoder).__mro__
    )


def is_sparse_encoder(encoder: Any) -> bool:
    """Whether ``encoder`` gives sparse vectors: a ``LoadedSparseEncoder`` (its info says
    ``encoder_type: sparse``) or a sentence-transformers ``SparseEncoder``."""
    info = getattr(encoder, "info", None)
    if getattr(info, "encoder_type", None) == SPARSE:
        return True
    return _is_st_sparse_encoder(encoder)


def declared_info(encoder: Any) -> dict[str, Any]:
    """What the run record says of a raw ``SparseEncoder`` a ``koembed_encoder`` override
    returns (``plugin._encoder_info``); ``{}`` for any other object."""
    if not _is_st_sparse_encoder(encoder):
        return {}
    return {
        "encoder_type": SPARSE,
        "similarity": str(getattr(encoder, "similarity_fn_name", None) or "dot"),
    }


@dataclass
class SparsityCounts:
    """Active (non-zero) dimensions of the texts a task encoded, per role."""

    vocab_size: int | None = None
    texts: dict[str, int] = field(default_factory=dict)  # role -> texts encoded
    active: dict[str, int] = field(default_factory=dict)  # role -> active dimensions, summed
    empty: int = 0  # texts with no active dimension at all

    def add(self, role: str, matrix: torch.Tensor) -> None:
        """Count the rows of a coalesced sparse COO ``matrix`` (one row per text)."""
        import torch

        n = int(matrix.shape[0])
        rows = matrix.indices()[0][matrix.values() != 0]
        per_row = torch.bincount(rows, minlength=n)
        self.vocab_size = int(matrix.shape[1])
        self.texts[role] = self.texts.get(role, 0) + n
        self.active[role] = self.active.get(role, 0) + int(per_row.sum())
        self.empty += int((per_row == 0).sum())

    def to_dict(self) -> dict[str, Any] | None:
        """``{"mean_active_dims", "vocab_size", "texts", "empty_texts", "by_role": {role:
        {"texts", "mean_active_dims"}}}``; None when nothing was encoded."""
        total = sum(self.texts.values())
        if not total:
            return None
        return {
            "mean_active_dims": sum(self.active.values()) / total,
            "vocab_size": self.vocab_size,
            "texts": total,
            "empty_texts": self.empty,
            "by_role": {
                role: {"texts": n, "mean_active_dims": self.active[role] / n}
                for role, n in self.texts.items()
            },
        }


def checked_sparse(output: Any, n_texts: int, where: str) -> torch.Tensor:
    """The encoder output as a coalesced CPU float32 sparse COO matrix, or a one-line error."""
    import numpy as np
    import torch

    if (
        isinstance(output, (list, tuple))
        and output
        and all(isinstance(o, torch.Tensor) for o in output)
    ):
        output = torch.stack([o.to("cpu") for o in output])  # convert_to_tensor=False
    if isinstance(output, np.ndarray):
        output = torch.from_numpy(output)
    if not isinstance(output, torch.Tensor):
        raise KoembedError(
            f"{where}: a sparse encoder returned {type(output).__name__}; expected a torch "
            f"(sparse) tensor of shape ({n_texts}, vocabulary size)"
        )
    if output.dim() != 2 or output.shape[0] != n_texts:
        raise KoembedError(
            f"{where}: a sparse encoder returned shape {tuple(output.shape)}; expected "
            f"({n_texts}, vocabulary size), one row per text"
        )
    matrix = output.to("cpu").float()
    matrix = (matrix if matrix.is_sparse else matrix.to_sparse()).coalesce()
    bad = ~torch.isfinite(matrix.values())
    if bool(bad.any()):
        rows = int(matrix.indices()[0][bad].unique().numel())
        raise KoembedError(
            f"{where}: encoder returned NaN or inf values in {rows} of {n_texts} embeddings "
            "(check the dtype: fp16 overflows are a common cause; try --koembed-dtype fp32)"
        )
    return matrix


def similarity_name(encoder: Any) -> str:
    """The sparse encoder's own similarity (``dot`` for SPLADE)."""
    info = getattr(encoder, "info", None)
    name = getattr(info, "similarity", None) or getattr(encoder, "similarity_fn_name", None)
    return str(name or "dot")


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

    It has the attributes ``evaluation.evaluate_task`` reads from ``make_adapter``'s adapter
    (``used_prompts``, ``texts_encoded``, ``texts_total``, ``texts_from_store`` (always 0),
    ``distinct_keys``, ``encode_seconds``) and ``sparsity`` (:class:`SparsityCounts` as a dict).
    """
    from mteb.models.model_meta import ModelMeta, ScoringFunction
    from mteb.models.sentence_transformer_wrapper import (
        SparseEncoderWrapper,
        _is_sparse_compatible_task,
        _postprocess_sparse_embeddings,
    )

    from pytest_koembed.evaluation.roles import prompt_role

    loaded = callable(getattr(encoder, "_sparse", None))  # a LoadedSparseEncoder

    class _SparseAdapter(SparseEncoderWrapper):  # type: ignore[misc]
        def __init__(self) -> None:
            # Not SparseEncoderWrapper.__init__: it builds the model meta and prompts from a raw
            # SparseEncoder; here they come from the run (name, revision, prompt plan).
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
            prompt = prompts(spec, role)
            self.used_prompts[role] = prompt
            name, method = self._method(role)
            self.distinct_keys.update(StoreKey(name, prompt, text) for text in texts)
            kwargs: dict[str, Any] = {} if prompt is None else {"prompt": prompt}
            if loaded:
                kwargs.update(progress=progress, batch_size=batch_size)
            else:  # a raw SparseEncoder: as mteb's SparseEncoderWrapper calls it
                kwargs.update(
                    batch_size=batch_size or 32,
                    show_progress_bar=False,
                    convert_to_sparse_tensor=True,
                )
            started = time.perf_counter()
            out = method(texts, **kwargs)
            self.encode_seconds += time.perf_counter() - started
            self.texts_encoded += len(texts)
            if progress is not None and not loaded:
                progress(len(texts))
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
            where = f"{spec.column} ({role} texts)"
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

    return _SparseAdapter()
