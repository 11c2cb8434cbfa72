"""Conftest sources for pytester runs that need a fast, deterministic encoder instead of a model.

``HASHING_ENCODER`` is a whole conftest (the class and the ``koembed_encoder`` fixture); tests
that need more in their conftest build on ``HASHING_CLASS``.
"""

HASHING_CLASS = """
import zlib

import numpy as np
import pytest


class Hashing:
    '''Hashed character bigrams: deterministic, batch-independent, no model to load.'''

    def encode(self, texts):
        out = np.zeros((len(texts), 64), dtype="float32")
        for i, text in enumerate(texts):
            for gram in (text[j : j + 2] for j in range(max(1, len(text) - 1))):
                out[i, zlib.crc32(gram.encode()) % 64] += 1.0
        return out + 1e-3
"""

HASHING_ENCODER = (
    HASHING_CLASS
    + """

@pytest.fixture(scope="session")
def koembed_encoder():
    return Hashing()
"""
)
