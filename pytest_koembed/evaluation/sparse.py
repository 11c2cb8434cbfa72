"""Sparse (SPLADE) encoders: evaluated through mteb's ``SparseEncoderWrapper``, sparsity counted.

A sparse encoder (``encoders.LoadedSparseEncoder``, or a sentence-transformers ``SparseEncoder``
returned by a ``koembed_encoder`` override) gives vocabulary-sized vectors, scored by the model's
own similarity (dot product for SPLADE). ``sparse_adapter.make_sparse_adapter`` is mteb's own
``SparseEncoderWrapper`` with the plugin's prompt plan, text counts and checks: its ``similarity``
is the model's, retrieval keeps the vectors sparse, and every other task type gets them densified
(mteb's own rule, ``_is_sparse_compatible_task``). The run's embedding store (encode once) is
bypassed: it keeps dense float32 rows, and a 30,000-250,000-dimension row per text would not fit.

Per task, the adapter counts the active (non-zero) dimensions of every text it encoded
(:class:`SparsityCounts`): the run record's ``sparsity`` field, which users of sparse models watch.

This module imports mteb and torch only inside the functions that need them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_koembed.errors import KoembedError

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
