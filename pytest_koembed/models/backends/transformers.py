"""The transformers backend: ``AutoModel`` with the pooling the model declares.

Mean pooling for encoders and last-token pooling with left padding for decoder LLMs unless the
checkpoint or ``--koembed-pooling`` says otherwise; the prompt is prepended to the text, the
EOS token appended where the tokenizer does not, and the embeddings L2-normalised.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_koembed.errors import KoembedError
from pytest_koembed.models.dtypes import _dtype_kwargs
from pytest_koembed.models.encoders import EncoderInfo, EncoderOptions
from pytest_koembed.models.pooling import _appended_eos, _declared_pooling, _pooling_eos, pool

if TYPE_CHECKING:
    import torch


# The Qwen3-Embedding card's max_length; no leaderboard text is longer.
DEFAULT_MAX_LENGTH_CAP = 8192


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

    append_id = _eos_to_append(tokenizer, options, info) if chosen == "last-token" else None
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise KoembedError(
                f"model {options.model!r}: its tokenizer has no pad, eos or unk token to pad with"
            )
        tokenizer.pad_token = fallback

    max_length = _max_length(tokenizer, config, options)
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


def _eos_to_append(tokenizer: Any, options: EncoderOptions, info: EncoderInfo) -> int | None:
    """Last-token pooling: the EOS id to append to every input ourselves (None: the tokenizer
    already ends each input with it, or ``append_eos`` is off); ``info`` says which token."""
    append_id: int | None = None
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
    return append_id


def _max_length(tokenizer: Any, config: Mapping[str, Any], options: EncoderOptions) -> int:
    """Tokens per text: ``--koembed-max-length``, else the model's own limit (capped at 8192)."""
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
    return max_length


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
