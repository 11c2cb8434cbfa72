"""The custom-encoder protocol: what an object returned by a ``koembed_encoder`` fixture must offer.

Only :meth:`Encoder.encode` is required. Retrieval tasks use ``encode_query`` / ``encode_document``
when the object has them, and a ``prompt=`` keyword is passed when ``encode`` accepts one (the
suite's per-model instructions). An ``encode`` that returns ``NaN``, the wrong number of rows or
rows of varying width is refused in one line naming the task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Encoder(Protocol):
    """Any object with ``encode(texts) -> array of shape (len(texts), dim)``."""

    def encode(self, texts: Sequence[str], /, **kwargs: Any) -> Any:
        """Embed ``texts`` (a numpy array, a torch tensor or a list of float lists)."""
        ...
