"""Pooling: the names ``--koembed-pooling`` takes, the pooling a checkpoint declares, and the
pooling itself on the transformers path (mean, cls, last-token, max), with the end-of-sequence
token that last-token pooled decoder embedders pool on.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.models.model_files import _read_json

if TYPE_CHECKING:
    import torch


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


def _normalise_pooling(value: str) -> str:
    key = value.strip().lower()
    if key not in _POOLING_ALIASES:
        raise KoembedError(f"--koembed-pooling {value!r} is not one of {', '.join(POOLINGS)}")
    return _POOLING_ALIASES[key]


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
