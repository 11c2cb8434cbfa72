"""The sentence-transformers backend: a model that ships ``modules.json``.

Its own modules decide pooling and normalisation (``--koembed-pooling`` swaps the Pooling
module), prompts go through ``SentenceTransformer.encode(..., prompt=...)``, and
``--koembed-devices`` uses sentence-transformers' multi-process pool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pytest_koembed.errors import KoembedError
from pytest_koembed.models.dtypes import _dtype_kwargs
from pytest_koembed.models.encoders import EncoderInfo, EncoderOptions
from pytest_koembed.models.model_files import _read_json
from pytest_koembed.models.pooling import _FROM_ST_POOLING, _ST_POOLING, _appended_eos


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
