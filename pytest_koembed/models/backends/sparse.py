"""The sparse backend: a sentence-transformers ``SparseEncoder`` (SPLADE, inference-free SPLADE).

Each batch comes back as a CPU float32 sparse COO tensor, through the model's query or document
route; the vocabulary size is read from an output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pytest_koembed.models.dtypes import _dtype_kwargs
from pytest_koembed.models.encoders import EncoderInfo, EncoderOptions
from pytest_koembed.models.model_files import _read_json


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
