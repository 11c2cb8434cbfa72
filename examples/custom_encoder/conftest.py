"""Benchmark this repo's own model with pytest-koembed.

Overriding the plugin's session fixture ``koembed_encoder`` in the rootdir ``conftest.py`` is
all it takes: any object with ``encode(list[str]) -> array`` works (``encode_query`` /
``encode_document`` are used for retrieval when present, a ``prompt=`` keyword when accepted).
"""

from __future__ import annotations

import os

import pytest
from toy_encoder import ToyNgramEncoder


@pytest.fixture(scope="session")
def koembed_encoder() -> ToyNgramEncoder:
    checkpoint = os.environ.get("TOY_CHECKPOINT")  # e.g. the directory your training run saved
    if checkpoint:
        return ToyNgramEncoder.load(checkpoint)
    # TOY_MAX_CHARS=8: the same model reading only each text's first 8 characters (a damage to
    # show the gate on)
    max_chars = os.environ.get("TOY_MAX_CHARS")
    return ToyNgramEncoder(seed=0, max_chars=int(max_chars) if max_chars else None)
