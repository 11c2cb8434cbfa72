"""Reading a model directory's own files: ``modules.json``, ``config.json`` and what they say.

One-line errors for unreadable JSON; where config.json lives in an old sentence-transformers
layout; whether the architecture is a decoder LLM, the checkpoint's dtype, whether loading
would run the model's own code, and whether the directory is a sentence-transformers
``SparseEncoder``. JSON only: no torch, no transformers model is built here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError

# config_sentence_transformers.json model types (ColBERT: PyLate's older name for multi-vector)
_ST_MODEL_TYPES = frozenset(
    {"SentenceTransformer", "SparseEncoder", "CrossEncoder", "MultiVectorEncoder", "ColBERT"}
)


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
