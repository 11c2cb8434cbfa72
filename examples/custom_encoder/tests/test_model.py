"""The repo's own unit tests: they run as before, with or without the plugin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from toy_encoder import ToyNgramEncoder


def test_encode_shapes_and_norms() -> None:
    model = ToyNgramEncoder(dim=64, buckets=1024)
    emb = model.encode(["고양이가 잔다", "강아지가 뛴다", ""])
    assert emb.shape == (3, 64) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_similar_texts_are_closer() -> None:
    model = ToyNgramEncoder()
    a, b, c = model.encode(["오늘 날씨가 맑다", "오늘은 날씨가 맑습니다", "주식 시장이 하락했다"])
    assert float(a @ b) > float(a @ c)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = ToyNgramEncoder(dim=32, buckets=512, seed=3)
    model.save(tmp_path / "ckpt")
    again = ToyNgramEncoder.load(tmp_path / "ckpt")
    texts = ["한국어 문장", "another one"]
    assert np.array_equal(model.encode(texts), again.encode(texts))
