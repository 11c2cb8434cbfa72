"""The prompt role (query, document, symmetric) of mteb's prompt types, shared by the dense and
sparse adapters."""

from __future__ import annotations

from typing import Any


def prompt_role(prompt_type: Any) -> str:
    """The prompt plan's role (query, document or symmetric) of mteb's ``prompt_type``."""
    from mteb.types import PromptType

    if prompt_type == PromptType.query:
        return "query"
    if prompt_type == PromptType.document:
        return "document"
    return "symmetric"
